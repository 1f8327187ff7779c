"""Tests of snemu, the ServiceNow emulator (tests/snemu/snemu.py).

Each test class names the promise it checks; together they are the emulator's specification next
to docs/snemu.md. Most tests run against an in-process Emulator on a free port, reset between tests
through the control API; TestProcess runs the command line as a subprocess (port file, SIGTERM,
state file across a restart). Standard library only: `python3 -m unittest -v test_snemu`.
"""

import base64
import concurrent.futures
import gzip
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import snemu  # noqa: E402

ADMIN = ("admin", "admin")
SYNC = ("sync", "syncpw")
USERS = ["admin:admin:System Administrator", "sync:syncpw:Sync User", "beth:bethpw:Beth Anglin"]
CLIENT = ("twinsync", "s3cret")


class Reply:
    """One HTTP reply: status, headers (case-insensitive), raw body and its JSON."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body

    @property
    def json(self):
        return json.loads(self.raw.decode("utf-8"))

    @property
    def result(self):
        return self.json["result"]


def send(base, method, path, params=None, body=None, auth=ADMIN, headers=None, form=None):
    """Send one request. params: dict or raw query string; body: JSON-encoded unless bytes; form:
    dict sent form-encoded; auth: (user, password), a "Bearer …" string, or None."""
    url = base + path
    if params:
        url += "?" + (params if isinstance(params, str) else urllib.parse.urlencode(params))
    data = None
    hdrs = {"Accept": "application/json"}
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if isinstance(auth, tuple):
        hdrs["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    elif isinstance(auth, str):
        hdrs["Authorization"] = auth
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def raw_request(base, method, path, body=b"", headers=None, auth=ADMIN):
    """One request through http.client with exactly these headers (none added but Authorization,
    Host and Content-Length): body is bytes, or an iterable of bytes sent chunked."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    hdrs = dict(headers or {})
    if auth:
        hdrs["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        chunked = not isinstance(body, bytes)
        conn.request(method, path, body=body if chunked or body else None, headers=hdrs, encode_chunked=chunked)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def parse_link(header):
    """rel -> (offset, limit) from a Link header, parsing <…> spans (URLs may contain commas)."""
    out = {}
    for url, rel in re.findall(r'<([^>]*)>;rel="(\w+)"', header or ""):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        out[rel] = (int(q["sysparm_offset"]), int(q["sysparm_limit"]))
    return out


class EmuTest(unittest.TestCase):
    """Base: one in-process emulator per class; faults, data and the log reset before each test."""

    options = {}

    @classmethod
    def setUpClass(cls):
        cls.emu = snemu.Emulator(instance="dev0001", users=USERS,
                                 oauth_clients=["%s:%s" % CLIENT, "robot:robotpw:sync"], **cls.options)
        cls.emu.start()
        cls.base = cls.emu.base_url

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.ctl("POST", "/__snemu/reset")
        self.ctl("DELETE", "/__snemu/data")
        self.ctl("DELETE", "/__snemu/log")
        self.ctl("POST", "/__snemu/clock", {"offset_seconds": 0})

    def call(self, method, path, params=None, body=None, **kw):
        return send(self.base, method, path, params, body, **kw)

    def ctl(self, method, path, body=None):
        """A control-API call; asserts 200 and returns the JSON."""
        r = send(self.base, method, path, body=body, auth=None)
        self.assertEqual(r.status, 200, r.raw)
        return r.json

    def create(self, auth=ADMIN, **fields):
        """POST an incident; asserts 201 and returns the result."""
        r = self.call("POST", "/api/now/table/incident", body=fields, auth=auth)
        self.assertEqual(r.status, 201, r.raw)
        return r.result

    def patch(self, sys_id, auth=ADMIN, **fields):
        return self.call("PATCH", "/api/now/table/incident/" + sys_id, body=fields, auth=auth)

    def list(self, table="incident", **params):
        """GET a collection; asserts 200 and returns the Reply."""
        r = self.call("GET", "/api/now/table/" + table, params)
        self.assertEqual(r.status, 200, r.raw)
        return r

    def assertError(self, reply, status, message, detail=None):
        self.assertEqual(reply.status, status, reply.raw)
        self.assertEqual(reply.headers["Content-Type"], "application/json;charset=UTF-8")
        body = reply.json
        self.assertEqual(body["status"], "failure")
        self.assertEqual(body["error"]["message"], message)
        if detail is not None:
            self.assertEqual(body["error"]["detail"], detail)


class TestCrud(EmuTest):
    """Table API CRUD, URL forms, status codes, Location and server-maintained fields."""

    def test_create_returns_201_location_and_full_record(self):
        r = self.call("POST", "/api/now/table/incident", body={"short_description": "printer", "urgency": "2",
                                                                 "impact": "2"})
        self.assertEqual(r.status, 201)
        self.assertEqual(r.headers["Content-Type"], "application/json;charset=UTF-8")
        rec = r.result
        self.assertRegex(rec["sys_id"], r"^[0-9a-f]{32}$")
        self.assertEqual(r.headers["Location"], self.base + "/api/now/v2/table/incident/" + rec["sys_id"])
        self.assertEqual(rec["number"], "INC0010001")
        self.assertEqual(rec["priority"], "3")
        self.assertEqual(rec["state"], "1")
        self.assertEqual(rec["incident_state"], "1")
        self.assertEqual(rec["active"], "true")
        self.assertEqual(rec["sys_mod_count"], "0")
        self.assertEqual(rec["sys_created_by"], "admin")
        self.assertEqual(rec["sys_updated_by"], "admin")
        self.assertRegex(rec["sys_created_on"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(rec["opened_at"], rec["sys_created_on"])
        self.assertEqual(rec["opened_by"]["value"], snemu.ADMIN_SYS_ID)
        self.assertEqual(rec["caller_id"], "")
        for field in ("description", "close_code", "close_notes", "correlation_id", "correlation_display",
                      "comments", "work_notes", "resolved_at", "closed_at"):
            self.assertEqual(rec[field], "", field)
        for value in rec.values():
            self.assertIsInstance(value, (str, dict))
        self.assertEqual(self.create()["number"], "INC0010002")

    def test_url_forms_and_get_by_sys_id(self):
        sid = self.create(short_description="a")["sys_id"]
        for prefix in ("/api/now/table/", "/api/now/v1/table/", "/api/now/v2/table/"):
            r = self.call("GET", prefix + "incident/" + sid)
            self.assertEqual(r.status, 200, prefix)
            self.assertEqual(r.result["short_description"], "a")
            self.assertEqual(self.call("GET", prefix + "incident").result[0]["sys_id"], sid)

    def test_patch_and_put_are_partial_updates(self):
        rec = self.create(short_description="a", description="d")
        r = self.patch(rec["sys_id"], urgency="1", impact="1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.result["priority"], "1")
        self.assertEqual(r.result["description"], "d")
        self.assertEqual(r.result["sys_mod_count"], "1")
        r = self.call("PUT", "/api/now/table/incident/" + rec["sys_id"], body={"short_description": "b"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.result["short_description"], "b")
        self.assertEqual(r.result["description"], "d")
        self.assertEqual(r.result["urgency"], "1")
        self.assertEqual(r.result["sys_mod_count"], "2")

    def test_delete_returns_204_then_404(self):
        sid = self.create()["sys_id"]
        r = self.call("DELETE", "/api/now/table/incident/" + sid)
        self.assertEqual(r.status, 204)
        self.assertEqual(r.raw, b"")
        self.assertError(self.call("GET", "/api/now/table/incident/" + sid), 404, "No Record found",
                         "Record doesn't exist or ACL restricts the record retrieval")
        self.assertError(self.call("DELETE", "/api/now/table/incident/" + sid), 404, "No Record found")
        self.assertError(self.patch(sid, short_description="x"), 404, "No Record found")

    def test_client_writes_to_server_fields_are_ignored(self):
        rec = self.create(sys_id="0" * 32, number="INC9", sys_created_on="2000-01-01 00:00:00",
                          sys_mod_count="99", sys_created_by="mallory", priority="1", active="false")
        self.assertNotEqual(rec["sys_id"], "0" * 32)
        self.assertEqual(rec["number"], "INC0010001")
        self.assertNotEqual(rec["sys_created_on"], "2000-01-01 00:00:00")
        self.assertEqual((rec["sys_mod_count"], rec["sys_created_by"]), ("0", "admin"))
        self.assertEqual((rec["priority"], rec["active"]), ("5", "true"))

    def test_priority_matrix(self):
        expected = {("1", "1"): "1", ("1", "2"): "2", ("1", "3"): "3", ("2", "1"): "2", ("2", "2"): "3",
                    ("2", "3"): "4", ("3", "1"): "3", ("3", "2"): "4", ("3", "3"): "5"}
        for (impact, urgency), prio in expected.items():
            self.assertEqual(self.create(impact=impact, urgency=urgency)["priority"], prio, (impact, urgency))
        sid = self.create()["sys_id"]
        self.assertEqual(self.patch(sid, urgency="1").result["priority"], "3")

    def test_active_follows_state_and_incident_state_mirrors_it(self):
        close = {"close_code": "Solution provided", "close_notes": "done"}
        for state, active in (("1", "true"), ("2", "true"), ("3", "true"), ("6", "true"), ("7", "false"),
                              ("8", "false")):
            rec = self.create(state=state, **close)
            self.assertEqual((rec["active"], rec["incident_state"]), (active, state), state)
        rec = self.create(state="7", **close)
        self.assertEqual(self.patch(rec["sys_id"], state="2").result["active"], "true")

    def test_values_are_coerced_to_strings(self):
        rec = self.create(impact=1, urgency=2, short_description=None, made_sla=False)
        self.assertEqual((rec["impact"], rec["urgency"], rec["priority"]), ("1", "2", "2"))
        self.assertEqual((rec["short_description"], rec["made_sla"]), ("", "false"))

    def test_empty_value_clears_a_field_but_not_a_choice(self):
        sid = self.create(short_description="a", urgency="1")["sys_id"]
        rec = self.patch(sid, short_description="", urgency="").result
        self.assertEqual((rec["short_description"], rec["urgency"]), ("", "1"))

    def test_unchanged_write_is_not_an_update(self):
        rec = self.create(short_description="a")
        again = self.patch(rec["sys_id"], short_description="a").result
        self.assertEqual(again["sys_mod_count"], "0")

    def test_array_body_processes_first_record_only(self):
        r = self.call("POST", "/api/now/table/incident", body=[{"short_description": "one"},
                                                                 {"short_description": "two"}])
        self.assertEqual(r.status, 201)
        self.assertEqual(len(self.list().result), 1)

    def test_reference_accepts_sys_id_or_user_name(self):
        beth = self.list("sys_user", sysparm_query="user_name=beth").result[0]["sys_id"]
        self.assertEqual(self.create(caller_id=beth)["caller_id"]["value"], beth)
        self.assertEqual(self.create(assigned_to="beth")["assigned_to"]["value"], beth)

    def test_sys_user_table(self):
        users = {u["user_name"]: u for u in self.list("sys_user").result}
        self.assertEqual(users["admin"]["sys_id"], snemu.ADMIN_SYS_ID)
        self.assertEqual(users["sync"]["name"], "Sync User")
        r = self.call("POST", "/api/now/table/sys_user", body={"user_name": "zoe", "name": "Zoe Z"})
        self.assertEqual(r.status, 201)
        sid = r.result["sys_id"]
        self.assertEqual(self.call("PATCH", "/api/now/table/sys_user/" + sid, body={"name": "Zoe Y"}).result["name"],
                         "Zoe Y")
        self.assertEqual(self.call("DELETE", "/api/now/table/sys_user/" + sid).status, 204)

    def test_head_and_no_response_body(self):
        r = self.call("HEAD", "/api/now/table/incident")
        self.assertEqual((r.status, r.raw), (200, b""))
        r = self.call("POST", "/api/now/table/incident", body={}, headers={"X-no-response-body": "true"})
        self.assertEqual((r.status, r.raw), (201, b""))
        self.assertIn("Location", r.headers)

    def test_method_override(self):
        sid = self.create()["sys_id"]
        r = self.call("POST", "/api/now/table/incident/" + sid, body={"short_description": "o"},
                      headers={"X-HTTP-Method-Override": "PATCH"})
        self.assertEqual((r.status, r.result["short_description"]), (200, "o"))


class TestJournal(EmuTest):
    """comments / work_notes: writes append entries; reads per display mode; sys_journal_field."""

    def test_journal_write_and_raw_read(self):
        rec = self.create(short_description="a", comments="first")
        self.assertEqual(rec["comments"], "")
        r = self.patch(rec["sys_id"], auth=SYNC, comments="second")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.result["comments"], "")
        self.assertEqual(r.result["sys_mod_count"], "1")
        self.assertEqual(r.result["sys_updated_by"], "sync")
        self.assertEqual(self.patch(rec["sys_id"], work_notes="internal").result["sys_mod_count"], "2")

    def test_display_value_true_and_all_newest_first(self):
        sid = self.create(comments="first")["sys_id"]
        self.patch(sid, auth=SYNC, comments="second\n\nwith blank line")
        self.patch(sid, auth=("beth", "bethpw"), work_notes="note")
        self.ctl("POST", "/__snemu/clock", {"offset_seconds": 5})  # a later second for the last entry
        self.patch(sid, comments="third")
        r = self.call("GET", "/api/now/table/incident/" + sid, {"sysparm_display_value": "true"})
        comments = r.result["comments"]
        stamps = [e["sys_created_on"] for e in self.list("sys_journal_field", sysparm_query="element=comments"
                                                         "^ORDERBYsys_created_on").result]
        self.assertEqual(comments,
                         "%s - System Administrator (Additional comments)\nthird\n\n"
                         "%s - Sync User (Additional comments)\nsecond\n\nwith blank line\n\n"
                         "%s - System Administrator (Additional comments)\nfirst\n\n" % (stamps[2], stamps[1], stamps[0]))
        self.assertEqual(r.result["work_notes"].split("\n")[0][19:], " - Beth Anglin (Work notes)")
        both = r.result["comments_and_work_notes"]
        self.assertTrue(both.startswith(stamps[2]) and "(Work notes)\nnote" in both and both.endswith("first\n\n"))
        r = self.call("GET", "/api/now/table/incident/" + sid, {"sysparm_display_value": "all"})
        self.assertEqual(r.result["comments"], {"display_value": comments, "value": ""})

    def test_sys_journal_field_rows_and_queries(self):
        a = self.create(comments="c1")["sys_id"]
        b = self.create(work_notes="w1")["sys_id"]
        self.patch(a, auth=SYNC, work_notes="w2")
        rows = self.list("sys_journal_field", sysparm_query="element_id=%s^ORDERBYsys_created_on" % a).result
        self.assertEqual([(r["element"], r["value"], r["sys_created_by"], r["name"]) for r in rows],
                         [("comments", "c1", "admin", "incident"), ("work_notes", "w2", "sync", "incident")])
        self.assertRegex(rows[0]["sys_id"], r"^[0-9a-f]{32}$")
        q = "element_id=%s^element=comments^ORelement=work_notes^sys_created_on>=%s" % (b, rows[0]["sys_created_on"])
        self.assertEqual([r["value"] for r in self.list("sys_journal_field", sysparm_query=q).result], ["w1"])
        one = self.call("GET", "/api/now/table/sys_journal_field/" + rows[0]["sys_id"])
        self.assertEqual(one.result["value"], "c1")

    def test_sys_journal_field_is_read_only(self):
        r = self.call("POST", "/api/now/table/sys_journal_field", body={"value": "x"})
        self.assertError(r, 403, "Operation Failed", "ACL Exception Insert Failed due to security constraints")
        sid = self.create(comments="c")["sys_id"]
        jid = self.list("sys_journal_field", sysparm_query="element_id=" + sid).result[0]["sys_id"]
        r = self.call("PATCH", "/api/now/table/sys_journal_field/" + jid, body={"value": "x"})
        self.assertError(r, 403, "Operation Failed", "ACL Exception Update Failed due to security constraints")
        r = self.call("DELETE", "/api/now/table/sys_journal_field/" + jid)
        self.assertError(r, 403, "Operation Failed", "ACL Exception Delete Failed due to security constraints")


class TestDataPolicy(EmuTest):
    """Resolving or closing needs close_code and close_notes on the record after the write."""

    POLICY = "Data Policy Exception: \n\tThe following fields are mandatory: "

    def test_resolve_without_close_fields_is_refused(self):
        sid = self.create()["sys_id"]
        self.assertError(self.patch(sid, state="6"), 403, "Operation Failed", self.POLICY + "Resolution code, Close notes")
        self.assertError(self.patch(sid, state="7", close_code="Duplicate"), 403, "Operation Failed",
                         self.POLICY + "Close notes")
        r = self.call("POST", "/api/now/table/incident", body={"state": "6", "close_notes": "n"})
        self.assertError(r, 403, "Operation Failed", self.POLICY + "Resolution code")
        rec = self.call("GET", "/api/now/table/incident/" + sid).result
        self.assertEqual((rec["state"], rec["sys_mod_count"]), ("1", "0"))

    def test_resolve_and_close_with_close_fields(self):
        sid = self.create()["sys_id"]
        self.patch(sid, close_code="Solution provided")
        rec = self.patch(sid, auth=SYNC, state="6", close_notes="fixed").result
        self.assertEqual((rec["state"], rec["active"]), ("6", "true"))
        self.assertEqual(rec["resolved_at"], rec["sys_updated_on"])
        self.assertEqual(rec["resolved_by"]["value"], snemu.user_sys_id("sync"))
        rec = self.patch(sid, state="7").result
        self.assertEqual((rec["active"], rec["closed_at"] != ""), ("false", True))
        self.assertError(self.patch(sid, close_notes=""), 403, "Operation Failed", self.POLICY + "Close notes")


class TestQuery(EmuTest):
    """sysparm_query operators, ORDERBY, ^OR/^NQ, dates, and ignored unknown fields."""

    def setUp(self):
        super().setUp()
        self.recs = [self.create(short_description=d, urgency=u, impact="2", correlation_id=c)
                     for d, u, c in (("Printer on fire", "1", "ext-1"), ("Mail down", "2", ""),
                                     ("printer jam", "3", "ext-3"), ("VPN slow", "2", "ext-4"))]

    def numbers(self, query, **params):
        return [r["number"] for r in self.list(sysparm_query=query, **params).result]

    def test_operators(self):
        cases = {
            "urgency=2": ["INC0010002", "INC0010004"],
            "urgency!=2": ["INC0010001", "INC0010003"],
            "urgency<2": ["INC0010001"],
            "urgency<=2": ["INC0010001", "INC0010002", "INC0010004"],
            "urgency>2": ["INC0010003"],
            "urgency>=2": ["INC0010002", "INC0010003", "INC0010004"],
            "short_descriptionLIKEprinter": ["INC0010001", "INC0010003"],
            "short_descriptionNOT LIKEprinter": ["INC0010002", "INC0010004"],
            "short_descriptionSTARTSWITHprinter": ["INC0010001", "INC0010003"],
            "short_descriptionENDSWITHslow": ["INC0010004"],
            "numberININC0010001,INC0010004": ["INC0010001", "INC0010004"],
            "urgencyNOT IN1,2": ["INC0010003"],
            "correlation_idISEMPTY": ["INC0010002"],
            "correlation_idISNOTEMPTY": ["INC0010001", "INC0010003", "INC0010004"],
            "urgencyBETWEEN2@3": ["INC0010002", "INC0010003", "INC0010004"],
            "urgencySAMEASimpact": ["INC0010002", "INC0010004"],
            "urgency=1^ORurgency=3": ["INC0010001", "INC0010003"],
            "urgency=1^ORurgency=3^short_descriptionLIKEjam": ["INC0010003"],
            "urgency=1^NQshort_descriptionLIKEvpn": ["INC0010001", "INC0010004"],
            "nonexistent_field=zzz^urgency=3": ["INC0010003"],
            "nonexistent_field=zzz": ["INC0010001", "INC0010002", "INC0010003", "INC0010004"],
            "caller_id=javascript:gs.getUserID()": [],
            "opened_by=javascript:gs.getUserID()": ["INC0010001", "INC0010002", "INC0010003", "INC0010004"],
            "opened_by.user_name=admin^urgency=1": ["INC0010001"],
        }
        for query, expected in cases.items():
            self.assertEqual(self.numbers(query), expected, query)

    def test_orderby(self):
        self.assertEqual(self.numbers("ORDERBYDESCnumber"), ["INC0010004", "INC0010003", "INC0010002", "INC0010001"])
        self.assertEqual(self.numbers("ORDERBYurgency^ORDERBYDESCnumber"),
                         ["INC0010001", "INC0010004", "INC0010002", "INC0010003"])
        self.assertEqual(self.numbers("urgency=2^ORDERBYDESCshort_description"), ["INC0010004", "INC0010002"])
        self.assertEqual(self.numbers("ORDERBYbogus"), ["INC0010001", "INC0010002", "INC0010003", "INC0010004"])

    def test_date_comparisons(self):
        first, last = self.recs[0]["sys_created_on"], self.recs[-1]["sys_created_on"]
        self.assertEqual(len(self.numbers("sys_updated_on>=" + first)), 4)
        self.assertEqual(self.numbers("sys_updated_on>" + last), [])
        self.assertEqual(self.numbers("sys_updated_on<2000-01-01 00:00:00"), [])
        self.assertEqual(self.numbers("resolved_at<2999-01-01 00:00:00"), [])  # empty never compares
        self.assertEqual(len(self.numbers("sys_created_on>javascript:gs.dateGenerate('2000-01-01','00:00:00')")), 4)
        self.assertEqual(self.numbers("sys_created_on>javascript:gs.dateGenerate('2999-01-01','end')"), [])
        self.assertEqual(len(self.numbers("sys_created_onBETWEENjavascript:gs.dateGenerate('2000-01-01','start')"
                                          "@javascript:gs.endOfToday()")), 4)
        self.assertEqual(len(self.numbers("sys_created_on>=javascript:gs.minutesAgoStart(5)")), 4)

    def test_name_value_filters_and_sys_id_keyset(self):
        self.assertEqual([r["number"] for r in self.list(urgency="2").result], ["INC0010002", "INC0010004"])
        self.assertEqual(len(self.list(query="urgency=1").result), 4)  # not a field: ignored
        ids = sorted(r["sys_id"] for r in self.recs)
        rows = self.list(sysparm_query="sys_id>%s^ORDERBYsys_id" % ids[1]).result
        self.assertEqual([r["sys_id"] for r in rows], ids[2:])

    def test_strict_query_mode(self):
        emu = snemu.Emulator(users=USERS, strict_query=True)
        emu.start()
        try:
            send(emu.base_url, "POST", "/api/now/table/incident", body={})
            r = send(emu.base_url, "GET", "/api/now/table/incident", {"sysparm_query": "bogus=1"})
            self.assertEqual(r.json["result"], [])
        finally:
            emu.stop()


class TestPaging(EmuTest):
    """sysparm_limit/offset, Link, X-Total-Count and their switches; fields and reference shapes."""

    def setUp(self):
        super().setUp()
        for i in range(5):
            self.create(short_description="r%d" % i)

    def test_link_and_total_count(self):
        r = self.list(sysparm_query="ORDERBYnumber", sysparm_limit="2")
        self.assertEqual(r.headers["X-Total-Count"], "5")
        self.assertEqual(len(r.result), 2)
        self.assertEqual(parse_link(r.headers["Link"]), {"first": (0, 2), "next": (2, 2), "last": (4, 2)})
        self.assertTrue(r.headers["Link"].startswith("<" + self.base + "/api/now/table/incident?sysparm_query="))
        r = self.list(sysparm_query="ORDERBYnumber", sysparm_limit="2", sysparm_offset="2")
        self.assertEqual(parse_link(r.headers["Link"]), {"first": (0, 2), "prev": (0, 2), "next": (4, 2),
                                                         "last": (4, 2)})
        r = self.list(sysparm_query="ORDERBYnumber", sysparm_limit="2", sysparm_offset="4")
        self.assertEqual([x["number"] for x in r.result], ["INC0010005"])
        self.assertEqual(parse_link(r.headers["Link"]), {"first": (0, 2), "prev": (2, 2), "last": (4, 2)})
        r = self.list(sysparm_limit="10")
        self.assertIsNone(r.headers["Link"])
        self.assertEqual(r.headers["X-Total-Count"], "5")

    def test_link_keeps_path_and_parameters(self):
        r = self.call("GET", "/api/now/v2/table/incident", "sysparm_fields=number,sys_id&sysparm_limit=1")
        link = r.headers["Link"]
        self.assertIn(self.base + "/api/now/v2/table/incident?sysparm_fields=number,sys_id&sysparm_offset=1"
                      "&sysparm_limit=1>;rel=\"next\"", link)

    def test_suppress_pagination_header_and_no_count(self):
        r = self.list(sysparm_limit="2", sysparm_suppress_pagination_header="true")
        self.assertIsNone(r.headers["Link"])
        self.assertEqual(r.headers["X-Total-Count"], "5")
        r = self.list(sysparm_limit="2", sysparm_no_count="true")
        self.assertIsNone(r.headers["X-Total-Count"])
        self.assertEqual(set(parse_link(r.headers["Link"])), {"first", "next"})

    def test_negative_prev_quirk(self):
        self.emu.negative_prev = True
        try:
            r = self.list(sysparm_limit="2")
            self.assertEqual(parse_link(r.headers["Link"])["prev"], (-2, 2))
        finally:
            self.emu.negative_prev = False

    def test_empty_result_v1_404_v2_200(self):
        self.assertError(self.call("GET", "/api/now/v1/table/incident", {"sysparm_query": "number=NONE"}),
                         404, "No Record found")
        for prefix in ("/api/now/v2/table/", "/api/now/table/"):
            r = self.call("GET", prefix + "incident", {"sysparm_query": "number=NONE"})
            self.assertEqual((r.status, r.result, r.headers["X-Total-Count"]), (200, [], "0"))

    def test_fields_and_reference_shapes(self):
        rows = self.list(sysparm_fields="number,opened_by,bogus,opened_by.user_name", sysparm_limit="1").result
        self.assertEqual(set(rows[0]), {"number", "opened_by", "opened_by.user_name"})
        self.assertEqual(rows[0]["opened_by"], {"link": self.base + "/api/now/table/sys_user/" + snemu.ADMIN_SYS_ID,
                                                "value": snemu.ADMIN_SYS_ID})
        self.assertEqual(rows[0]["opened_by.user_name"], "admin")
        shapes = {
            ("false", "true"): snemu.ADMIN_SYS_ID,
            ("true", "false"): {"display_value": "System Administrator",
                                "link": self.base + "/api/now/table/sys_user/" + snemu.ADMIN_SYS_ID},
            ("true", "true"): "System Administrator",
            ("all", "true"): {"display_value": "System Administrator", "value": snemu.ADMIN_SYS_ID},
        }
        for (mode, exclude), expected in shapes.items():
            row = self.list(sysparm_fields="opened_by,state,priority,caller_id", sysparm_limit="1",
                            sysparm_display_value=mode, sysparm_exclude_reference_link=exclude).result[0]
            self.assertEqual(row["opened_by"], expected, (mode, exclude))
        row = self.list(sysparm_fields="state,priority,caller_id", sysparm_display_value="true").result[0]
        self.assertEqual(row, {"state": "New", "priority": "5 - Planning", "caller_id": ""})
        row = self.list(sysparm_fields="state", sysparm_display_value="all").result[0]
        self.assertEqual(row["state"], {"display_value": "New", "value": "1"})


class TestErrors(EmuTest):
    """The documented error statuses, bodies and headers."""

    def test_401_with_www_authenticate(self):
        for auth in (None, ("admin", "wrong"), ("nobody", "x"), "Bearer nope", "Basic !!!"):
            r = self.call("GET", "/api/now/table/incident", auth=auth)
            self.assertError(r, 401, "User Not Authenticated", "Required to provide Auth information")
            self.assertEqual(r.headers["WWW-Authenticate"], 'BASIC realm="Service-now"')

    def test_400_invalid_table_and_unknown_route(self):
        self.assertError(self.call("GET", "/api/now/table/not_a_real_class"), 400, "Invalid table not_a_real_class")
        self.assertIsNone(self.call("GET", "/api/now/table/nope").json["error"]["detail"])
        self.assertError(self.call("GET", "/api/now/nothing"), 400, "Requested URI does not represent any resource")

    def test_400_bad_json_and_large_payload(self):
        self.assertError(self.call("POST", "/api/now/table/incident", body=b"{nope"), 400,
                         "Exception while reading request")
        saved = self.emu.max_content_length
        self.emu.max_content_length = 100
        try:
            r = self.call("POST", "/api/now/table/incident", body={"description": "x" * 200})
            self.assertError(r, 400, "Exception while reading request")
            self.assertIn("Max allowed: 100 bytes.", r.json["error"]["detail"])
        finally:
            self.emu.max_content_length = saved

    def test_404_and_405(self):
        self.assertError(self.call("GET", "/api/now/table/incident/" + "f" * 32), 404, "No Record found")
        sid = self.create()["sys_id"]
        r = self.call("POST", "/api/now/table/incident/" + sid, body={})
        self.assertError(r, 405, "Method not Supported")
        self.assertIn("PATCH", r.headers["Allow"])
        self.assertError(self.call("PATCH", "/api/now/table/incident", body={}), 405, "Method not Supported")
        self.assertError(self.call("DELETE", "/api/now/table/incident"), 405, "Method not Supported")


class TestAuth(EmuTest):
    """Basic auth users, OAuth password/refresh/client_credentials grants and token expiry."""

    def token(self, **form):
        base = {"client_id": CLIENT[0], "client_secret": CLIENT[1]}
        base.update(form)
        return self.call("POST", "/oauth_token.do", form=base, auth=None)

    def test_password_grant_refresh_and_expiry(self):
        r = self.token(grant_type="password", username="sync", password="syncpw")
        self.assertEqual(r.status, 200, r.raw)
        tok = r.json
        self.assertEqual((tok["scope"], tok["token_type"], tok["expires_in"]), ("useraccount", "Bearer", 1800))
        bearer = "Bearer " + tok["access_token"]
        self.assertEqual(self.create(auth=bearer)["sys_created_by"], "sync")
        again = self.token(grant_type="refresh_token", refresh_token=tok["refresh_token"]).json
        self.assertEqual(again["access_token"], tok["access_token"])  # still valid: the same token
        self.assertNotIn("refresh_token", again)
        self.ctl("POST", "/__snemu/clock", {"offset_seconds": 1801})
        r = self.call("GET", "/api/now/table/incident", auth=bearer)
        self.assertError(r, 401, "User Not Authenticated")
        self.assertEqual(r.headers["WWW-Authenticate"], 'BASIC realm="Service-now"')
        fresh = self.token(grant_type="refresh_token", refresh_token=tok["refresh_token"]).json
        self.assertNotEqual(fresh["access_token"], tok["access_token"])
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth="Bearer " + fresh["access_token"]).status, 200)

    def test_token_expires_in_real_time(self):
        self.emu.auth.token_ttl = 1
        try:
            tok = self.token(grant_type="password", username="sync", password="syncpw").json
        finally:
            self.emu.auth.token_ttl = 1800
        bearer = "Bearer " + tok["access_token"]
        self.assertEqual((tok["expires_in"], self.call("GET", "/api/now/table/incident", auth=bearer).status), (1, 200))
        time.sleep(1.1)
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth=bearer).status, 401)

    def test_token_failures(self):
        denied = {"error_description": "access_denied", "error": "server_error"}
        for form in ({"grant_type": "password", "username": "sync", "password": "bad"},
                     {"grant_type": "password", "username": "sync", "password": "syncpw", "client_secret": "x"},
                     {"grant_type": "refresh_token", "refresh_token": "bogus"},
                     {"grant_type": "client_credentials"},
                     {"grant_type": "unknown"}):
            r = self.token(**form)
            self.assertEqual((r.status, r.json), (401, denied), form)
        r = self.call("POST", "/oauth_token.do", body={"grant_type": "password"}, auth=None)
        self.assertEqual((r.status, r.json), (401, denied))

    def test_client_credentials_grant(self):
        r = self.call("POST", "/oauth_token.do", form={"grant_type": "client_credentials", "client_id": "robot",
                                                       "client_secret": "robotpw"}, auth=None)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(self.create(auth="Bearer " + r.json["access_token"])["sys_created_by"], "sync")

    def test_control_users_add_and_change_password(self):
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth=("carol", "pw")).status, 401)
        out = self.ctl("POST", "/__snemu/users", {"name": "carol", "password": "pw", "full_name": "Carol C"})
        self.assertEqual(out["user"]["name"], "Carol C")
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth=("carol", "pw")).status, 200)
        self.ctl("POST", "/__snemu/users", {"name": "carol", "password": "pw2"})
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth=("carol", "pw")).status, 401)
        self.assertEqual(self.call("GET", "/api/now/table/incident", auth=("carol", "pw2")).status, 200)


class TestFaults(EmuTest):
    """Each injected fault, the control API contract and the command-line equivalents."""

    def test_rate_limit(self):
        state = self.ctl("POST", "/__snemu/faults", {"rate_limit": {"count": 2, "retry_after": 7}})
        self.assertEqual(state["rate_limit"], {"count": 2, "retry_after": 7, "limit": 100})
        before = int(time.time())
        for _ in range(2):
            r = self.call("GET", "/api/now/table/incident")
            self.assertError(r, 429, "Rate limit exceeded", "Rate limit of 100 requests per hour for Table API exceeded")
            self.assertEqual(r.headers["Retry-After"], "7")
            self.assertEqual(r.headers["X-RateLimit-Limit"], "100")
            self.assertEqual(r.headers["X-RateLimit-Remaining"], "0")
            self.assertTrue(before + 7 <= int(r.headers["X-RateLimit-Reset"]) <= int(time.time()) + 7)
        self.assertEqual(self.call("GET", "/api/now/table/incident").status, 200)
        self.assertIsNone(self.ctl("GET", "/__snemu/faults")["rate_limit"])

    def test_rate_limit_cleared_by_null(self):
        self.ctl("POST", "/__snemu/faults", {"rate_limit": {"count": 5, "retry_after": 1}})
        self.ctl("POST", "/__snemu/faults", {"rate_limit": None})
        self.assertEqual(self.call("GET", "/api/now/table/incident").status, 200)

    def test_fail_next(self):
        self.ctl("POST", "/__snemu/faults", {"fail_next": {"count": 1, "status": 500}})
        r = self.call("GET", "/api/now/table/incident")
        self.assertEqual(r.status, 500)
        self.assertEqual(r.json["status"], "failure")
        for status in (502, 503):
            self.ctl("POST", "/__snemu/faults", {"fail_next": {"count": 1, "status": status}})
            r = self.call("POST", "/api/now/table/incident", body={})
            self.assertEqual(r.status, status)
            self.assertTrue(r.headers["Content-Type"].startswith("text/html"))
        self.assertEqual(self.list().result, [])  # failed writes were not applied
        self.assertEqual(self.call("GET", "/api/now/table/incident").status, 200)

    def test_fail_next_for_one_method(self):
        self.ctl("POST", "/__snemu/faults", {"fail_next": {"count": 1, "status": 500, "method": "PATCH"}})
        made = self.call("POST", "/api/now/table/incident", body={"short_description": "x"})
        self.assertEqual(made.status, 201)  # other methods pass and do not use it up
        self.assertEqual(self.call("GET", "/api/now/table/incident").status, 200)
        path = "/api/now/table/incident/" + made.json["result"]["sys_id"]
        self.assertEqual(self.call("PATCH", path, body={"urgency": "1"}).status, 500)
        self.assertIsNone(self.ctl("GET", "/__snemu/faults")["fail_next"])
        self.assertEqual(self.call("PATCH", path, body={"urgency": "1"}).status, 200)
        for bad in ("patch", "HEAD", 1):
            r = send(self.base, "POST", "/__snemu/faults",
                     body={"fail_next": {"count": 1, "status": 500, "method": bad}}, auth=None)
            self.assertEqual(r.status, 400, bad)

    def _raw(self, conn, method, path, body=None):
        """One request on an open http.client connection (kept alive), admin's credentials."""
        auth = "Basic " + base64.b64encode(b"admin:admin").decode()
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", "Authorization": auth}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        return conn.getresponse()

    def test_lose_answer_carries_out_the_write_and_closes_without_a_byte(self):
        host, port = self.base.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        first = self._raw(conn, "GET", "/api/now/table/incident")  # the connection is now reused
        first.read()
        self.ctl("POST", "/__snemu/faults", {"lose_answer": {"count": 1, "method": "POST"}})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self._raw(conn, "POST", "/api/now/table/incident", {"short_description": "lost", "correlation_id": "c1"})
        conn.close()
        made = self.list(sysparm_query="correlation_id=c1").result
        self.assertEqual(len(made), 1)  # carried out once, although nobody heard the answer
        self.assertIsNone(self.ctl("GET", "/__snemu/faults")["lose_answer"])
        log = self.ctl("GET", "/__snemu/log")["requests"]
        lost = [e for e in log if e["lost"]]
        self.assertEqual([(e["method"], e["status"]) for e in lost], [("POST", 201)])

    def test_lose_answer_for_one_method_leaves_others(self):
        self.ctl("POST", "/__snemu/faults", {"lose_answer": {"count": 1, "method": "PATCH"}})
        made = self.call("POST", "/api/now/table/incident", body={"short_description": "x"})
        self.assertEqual(made.status, 201)
        path = "/api/now/table/incident/" + made.json["result"]["sys_id"]
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            self.call("PATCH", path, body={"comments": "once"})
        self.assertEqual(self.call("PATCH", path, body={"urgency": "1"}).status, 200)
        journal = self.list("sys_journal_field", sysparm_query="element_id=%s^element=comments"
                            % made.json["result"]["sys_id"]).result
        self.assertEqual([j["value"] for j in journal], ["once"])
        for bad in ("patch", 1):
            r = send(self.base, "POST", "/__snemu/faults",
                     body={"lose_answer": {"count": 1, "method": bad}}, auth=None)
            self.assertEqual(r.status, 400, bad)

    def test_lose_answer_for_one_user_leaves_the_others(self):
        self.ctl("POST", "/__snemu/faults", {"lose_answer": {"count": 1, "method": "POST", "user": "sync"}})
        self.assertEqual(self.create(short_description="a person's write").get("short_description"),
                         "a person's write")
        self.assertEqual(self.ctl("GET", "/__snemu/faults")["lose_answer"]["count"], 1, "not used by admin")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            self.call("POST", "/api/now/table/incident", body={"short_description": "lost"}, auth=SYNC)
        self.assertIsNone(self.ctl("GET", "/__snemu/faults")["lose_answer"])
        self.assertEqual(len(self.list(sysparm_query="short_description=lost").result), 1)
        for bad in ("", 1):
            r = send(self.base, "POST", "/__snemu/faults",
                     body={"lose_answer": {"count": 1, "user": bad}}, auth=None)
            self.assertEqual(r.status, 400, bad)

    def test_log_counts_rows_of_list_answers(self):
        for i in range(3):
            self.call("POST", "/api/now/table/incident", body={"short_description": "r%d" % i})
        self.ctl("DELETE", "/__snemu/log")
        self.call("GET", "/api/now/table/incident", params={"sysparm_limit": "2"})
        made = self.call("POST", "/api/now/table/incident", body={"short_description": "r"})
        self.call("GET", "/api/now/table/incident/" + made.json["result"]["sys_id"])
        rows = [(e["method"], e["rows"], e["lost"]) for e in self.ctl("GET", "/__snemu/log")["requests"]]
        self.assertEqual(rows, [("GET", 2, False), ("POST", 0, False), ("GET", 0, False)])

    def test_latency(self):
        self.ctl("POST", "/__snemu/faults", {"latency_ms": 300})
        t0 = time.monotonic()
        self.call("GET", "/api/now/table/incident")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        t0 = time.monotonic()
        self.ctl("GET", "/__snemu/faults")  # control requests are never delayed
        self.assertLess(time.monotonic() - t0, 0.3)

    def test_hibernate(self):
        self.ctl("POST", "/__snemu/faults", {"hibernate": True})
        for auth in (ADMIN, None):
            r = self.call("GET", "/api/now/table/incident", auth=auth)
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith("text/html"))
            self.assertIn(b"Instance Hibernating page", r.raw)
        self.ctl("POST", "/__snemu/faults", {"hibernate": False})
        self.assertEqual(self.list().result, [])

    def test_journal_acl(self):
        sid = self.create(comments="secret")["sys_id"]
        self.ctl("POST", "/__snemu/faults", {"journal_acl": True})
        r = self.list("sys_journal_field", sysparm_query="element_id=" + sid)
        self.assertEqual(r.result, [])
        self.assertEqual(r.headers["X-Total-Count"], "1")  # counted before ACLs, like the real limit
        r = self.call("GET", "/api/now/table/incident/" + sid, {"sysparm_display_value": "true"})
        self.assertEqual(r.result["comments"], "")
        self.ctl("POST", "/__snemu/reset")
        self.assertEqual(len(self.list("sys_journal_field").result), 1)

    def test_short_pages(self):
        for _ in range(5):
            self.create()
        self.ctl("POST", "/__snemu/faults", {"short_pages": 2})
        r = self.list(sysparm_limit="4", sysparm_query="ORDERBYnumber")
        self.assertEqual(len(r.result), 2)
        self.assertEqual(r.headers["X-Total-Count"], "5")
        self.assertEqual(parse_link(r.headers["Link"])["next"], (4, 4))

    def test_data_policy_refuses_writes_leaving_a_mandatory_field_empty(self):
        policy = TestDataPolicy.POLICY
        kept = self.create(short_description="before the policy")["sys_id"]
        state = self.ctl("POST", "/__snemu/faults", {"data_policy": {"mandatory": ["description", "caller_id"]}})
        self.assertEqual(state["data_policy"], {"mandatory": ["description", "caller_id"]})
        self.assertEqual(self.ctl("GET", "/__snemu/faults")["data_policy"],
                         {"mandatory": ["description", "caller_id"]})
        # POST: refused, naming each missing field by its label; nothing written, not even the comment.
        r = self.call("POST", "/api/now/table/incident",
                      body={"short_description": "no description", "caller_id": "beth", "comments": "lost"})
        self.assertError(r, 403, "Operation Failed", policy + "Description")
        r = self.call("POST", "/api/now/table/incident", body={"description": "   "})
        self.assertError(r, 403, "Operation Failed", policy + "Description, Caller")
        self.assertEqual([rec["sys_id"] for rec in self.list().result], [kept])
        self.assertEqual(self.list("sys_journal_field").result, [])
        # PATCH and PUT on a record that predates the policy: refused until the fields are filled.
        r = self.patch(kept, urgency="1", caller_id="beth")
        self.assertError(r, 403, "Operation Failed", policy + "Description")
        r = self.call("PUT", "/api/now/table/incident/" + kept, body={"urgency": "1"})
        self.assertError(r, 403, "Operation Failed", policy + "Description, Caller")
        rec = self.call("GET", "/api/now/table/incident/" + kept).result
        self.assertEqual((rec["urgency"], rec["caller_id"], rec["sys_mod_count"]), ("3", "", "0"))
        r = self.patch(kept, description="filled", caller_id="beth")
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.result["description"], "filled")
        self.assertError(self.patch(kept, description=""), 403, "Operation Failed", policy + "Description")
        # With the built-in resolve policy, every missing field is listed, the built-in ones first.
        r = self.patch(kept, state="6", description="")
        self.assertError(r, 403, "Operation Failed", policy + "Resolution code, Close notes, Description")
        # Other tables are not concerned.
        r = self.call("POST", "/api/now/table/sys_user", body={"user_name": "dora"})
        self.assertEqual(r.status, 201, r.raw)
        # Cleared (null): the refused write goes through.
        self.assertIsNone(self.ctl("POST", "/__snemu/faults", {"data_policy": None})["data_policy"])
        self.assertEqual(self.create(short_description="no description").get("description"), "")
        self.assertEqual(self.patch(kept, description="").status, 200)

    def test_data_policy_cleared_by_reset_and_by_an_empty_list(self):
        for clear in (lambda: self.ctl("POST", "/__snemu/reset"),
                      lambda: self.ctl("POST", "/__snemu/faults", {"data_policy": {"mandatory": []}})):
            self.ctl("POST", "/__snemu/faults", {"data_policy": {"mandatory": ["short_description"]}})
            self.assertError(self.call("POST", "/api/now/table/incident", body={}), 403, "Operation Failed",
                             TestDataPolicy.POLICY + "Short description")
            self.assertIsNone(clear()["data_policy"])
            self.create()

    def test_control_api_validation_and_reset(self):
        for bad in ({"rate_limit": {"count": "x", "retry_after": 1}}, {"fail_next": {"count": 1}},
                    {"latency_ms": -1}, {"hibernate": "yes"}, {"bogus": 1}, [1],
                    {"data_policy": {"mandatory": "description"}}, {"data_policy": {"mandatory": ["bogus"]}},
                    {"data_policy": {"mandatory": ["sys_id"]}}, {"data_policy": {"mandatory": ["priority"]}},
                    {"data_policy": {"mandatory": ["comments"]}}, {"data_policy": {"mandatory": [1]}},
                    {"data_policy": {"fields": ["description"]}}, {"data_policy": ["description"]},
                    {"data_policy": {"mandatory": ["description"]}, "latency_ms": -1}):
            r = send(self.base, "POST", "/__snemu/faults", body=bad, auth=None)
            self.assertEqual(r.status, 400, bad)
        self.ctl("POST", "/__snemu/faults", {"latency_ms": 5, "journal_acl": True, "short_pages": 3,
                                             "fail_next": {"count": 2, "status": 503}})
        self.ctl("POST", "/__snemu/faults", {"hibernate": True})  # other keys unchanged
        state = self.ctl("GET", "/__snemu/faults")
        self.assertEqual((state["latency_ms"], state["journal_acl"], state["short_pages"], state["hibernate"]),
                         (5, True, 3, True))
        self.assertEqual(state["fail_next"], {"count": 2, "status": 503})
        self.assertIsNone(state["data_policy"])  # a refused update changed nothing
        self.ctl("POST", "/__snemu/faults", {"data_policy": {"mandatory": ["description", "description"]}})
        self.assertEqual(self.ctl("GET", "/__snemu/faults")["data_policy"], {"mandatory": ["description"]})
        self.assertEqual(self.ctl("POST", "/__snemu/reset"),
                         {"rate_limit": None, "fail_next": None, "lose_answer": None, "latency_ms": 0,
                          "hibernate": False, "journal_acl": False, "short_pages": 0, "data_policy": None,
                          "attachment_extensions": None, "attachment_max_bytes": 1073741824,
                          "attachment_acl": None})

    def test_command_line_fault_flags(self):
        args = snemu.parse_args(["--port", "0", "--user", "admin:admin", "--rate-limit", "1:9", "--fail-next",
                                 "2:502", "--lose-answer", "3", "--latency-ms", "10", "--hibernate",
                                 "--journal-acl", "--short-pages", "4", "--data-policy", "description,caller_id",
                                 "--attachment-extensions", "pdf,TXT", "--attachment-max-bytes", "5000",
                                 "--attachment-acl", "beth,sync"])
        emu = snemu.emulator_from_args(args)
        self.assertEqual(emu.faults.snapshot(), {"rate_limit": {"count": 1, "retry_after": 9, "limit": 100},
                                                 "fail_next": {"count": 2, "status": 502},
                                                 "lose_answer": {"count": 3}, "latency_ms": 10,
                                                 "hibernate": True, "journal_acl": True, "short_pages": 4,
                                                 "data_policy": {"mandatory": ["description", "caller_id"]},
                                                 "attachment_extensions": "pdf,txt", "attachment_max_bytes": 5000,
                                                 "attachment_acl": ["beth", "sync"]})
        with self.assertRaises(ValueError):
            snemu.emulator_from_args(snemu.parse_args(["--data-policy", "description,no_such_field"]))


class TestLogAndGzip(EmuTest):
    """The request log and gzip responses."""

    def test_request_log(self):
        self.call("GET", "/api/now/table/incident", {"sysparm_query": "active=true"})
        self.call("GET", "/api/now/table/incident", auth=None)
        self.ctl("GET", "/__snemu/faults")
        self.call("POST", "/api/now/table/incident", body={}, auth=SYNC)
        log = self.ctl("GET", "/__snemu/log")["requests"]
        self.assertEqual([(e["method"], e["path"], e["status"], e["user"]) for e in log],
                         [("GET", "/api/now/table/incident", 200, "admin"), ("GET", "/api/now/table/incident", 401, ""),
                          ("POST", "/api/now/table/incident", 201, "sync")])
        self.assertEqual(log[0]["query"], "sysparm_query=active%3Dtrue")
        self.assertEqual([e["seq"] for e in log], [log[0]["seq"], log[0]["seq"] + 1, log[0]["seq"] + 2])
        self.assertRegex(log[0]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(self.ctl("DELETE", "/__snemu/log"), {"requests": []})
        self.assertEqual(self.ctl("GET", "/__snemu/log")["requests"], [])

    def test_gzip(self):
        self.create(short_description="zip me")
        r = self.call("GET", "/api/now/table/incident", headers={"Accept-Encoding": "gzip, deflate"})
        self.assertEqual(r.headers["Content-Encoding"], "gzip")
        self.assertEqual(json.loads(gzip.decompress(r.raw))["result"][0]["short_description"], "zip me")
        r = self.call("GET", "/api/now/table/incident")
        self.assertIsNone(r.headers["Content-Encoding"])


class TestConnection(EmuTest):
    """HTTP/1.1 details a libcurl client relies on: keep-alive, chunked bodies, concurrency."""

    def auth_header(self):
        return {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode(),
                "Content-Type": "application/json"}

    def test_keep_alive_across_statuses(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=10)
        try:
            for method, path, body, status in (("POST", "/api/now/table/incident", b"{}", 201),
                                               ("GET", "/api/now/table/nope", None, 400),
                                               ("GET", "/api/now/table/incident", None, 200),
                                               ("HEAD", "/api/now/table/incident", None, 200)):
                conn.request(method, path, body=body, headers=self.auth_header())
                resp = conn.getresponse()
                resp.read()
                self.assertEqual(resp.status, status, path)
            sid = self.list().result[0]["sys_id"]
            conn.request("DELETE", "/api/now/table/incident/" + sid, headers=self.auth_header())
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (204, b""))
            conn.request("GET", "/api/now/table/incident", headers=self.auth_header())
            self.assertEqual(json.loads(conn.getresponse().read())["result"], [])
        finally:
            conn.close()

    def test_chunked_request_body(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=10)
        try:
            body = iter([b'{"short_description":', b' "chunked"}'])
            conn.request("POST", "/api/now/table/incident", body=body, headers=self.auth_header(),
                         encode_chunked=True)
            resp = conn.getresponse()
            self.assertEqual((resp.status, json.loads(resp.read())["result"]["short_description"]),
                             (201, "chunked"))
        finally:
            conn.close()

    def test_concurrent_writes_get_unique_numbers(self):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            numbers = list(pool.map(lambda i: self.create(comments="c%d" % i)["number"], range(40)))
        self.assertEqual(len(set(numbers)), 40)
        self.assertEqual(self.list("sys_journal_field").headers["X-Total-Count"], "40")


ATT = "/api/now/v1/attachment"
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def disposition_names(header):
    """(quoted filename, filename*) of a Content-Disposition, both decoded to str: the quoted one
    carries UTF-8 bytes (read by http.client as latin-1) with \\-escapes; filename* is UTF-8''<pct>."""
    m = re.fullmatch(r'attachment;filename="((?:[^"\\]|\\.)*)";filename\*=UTF-8\'\'(\S*)', header)
    assert m, header
    quoted = re.sub(r"\\(.)", r"\1", m.group(1)).encode("latin-1").decode("utf-8")
    return quoted, urllib.parse.unquote(m.group(2), errors="strict")


class AttachmentTest(EmuTest):
    """Helpers for the Attachment API."""

    def upload(self, parent, name="notes.txt", data=b"hello", ctype="text/plain", auth=ADMIN,
               table="incident", prefix=ATT, **extra):
        """POST /attachment/file; a None parameter or ctype is left out. Returns the Reply."""
        params = {"table_name": table, "table_sys_id": parent, "file_name": name}
        params.update(extra)
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None},
                                       quote_via=urllib.parse.quote)
        headers = {"Accept": "application/json"}
        if ctype is not None:
            headers["Content-Type"] = ctype
        return raw_request(self.base, "POST", prefix + "/file?" + query, data, headers, auth)

    def attach(self, parent, name="notes.txt", data=b"hello", ctype="text/plain", **kw):
        """Upload; asserts 201 and returns the metadata."""
        r = self.upload(parent, name, data, ctype, **kw)
        self.assertEqual(r.status, 201, r.raw)
        return r.result

    def download(self, sys_id, headers=None, auth=ADMIN, method="GET"):
        return raw_request(self.base, method, "%s/%s/file" % (ATT, sys_id), b"", headers, auth)

    def attachments(self, **params):
        """GET /attachment; asserts 200 and returns the Reply."""
        r = self.call("GET", ATT, params)
        self.assertEqual(r.status, 200, r.raw)
        return r


class TestAttachments(AttachmentTest):
    """The Attachment API: upload, list, metadata, download, delete, and what they refuse."""

    def test_upload_list_get_file_delete_round_trip(self):
        inc = self.create(short_description="with a file")["sys_id"]
        data = bytes(range(256)) * 40
        r = self.upload(inc, "dump.bin", data, "application/octet-stream")
        self.assertEqual(r.status, 201, r.raw)
        meta = r.result
        sid = meta["sys_id"]
        self.assertRegex(sid, r"^[0-9a-f]{32}$")
        self.assertEqual(r.headers["Location"], self.base + "/api/now/v1/attachment/" + sid)
        self.assertEqual(r.headers["Content-Type"], "application/json;charset=UTF-8")
        expected = {"file_name": "dump.bin", "content_type": "application/octet-stream", "size_bytes": "10240",
                    "compressed": "false", "size_compressed": "", "table_name": "incident", "table_sys_id": inc,
                    "download_link": "%s/api/now/attachment/%s/file" % (self.base, sid), "state": "available",
                    "chunk_size_bytes": "700000", "hash": sha256(data), "image_width": "", "image_height": "",
                    "average_image_color": "", "sys_tags": "", "sys_created_by": "admin",
                    "sys_updated_by": "admin", "created_by_name": "System Administrator",
                    "updated_by_name": "System Administrator", "sys_mod_count": "0"}
        self.assertEqual({k: meta[k] for k in expected}, expected)
        self.assertRegex(meta["sys_created_on"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(meta["sys_updated_on"], meta["sys_created_on"])
        self.assertTrue(all(isinstance(v, str) for v in meta.values()))
        for prefix in ("/api/now/attachment", ATT):  # both URL forms, same answers
            self.assertEqual(self.call("GET", prefix, {"table_sys_id": inc}).result, [meta])
            self.assertEqual(self.call("GET", prefix + "/" + sid).result, meta)
        f = self.download(sid)
        self.assertEqual((f.status, f.raw), (200, data))
        self.assertEqual(f.headers["Content-Type"], "application/octet-stream")
        self.assertEqual(f.headers["Content-Length"], "10240")
        self.assertEqual(f.headers["Content-Disposition"],
                         "attachment;filename=\"dump.bin\";filename*=UTF-8''dump.bin")
        self.assertNotIn("\n", f.headers["X-Attachment-Metadata"])
        self.assertEqual(json.loads(f.headers["X-Attachment-Metadata"]), meta)
        head = self.download(sid, method="HEAD")
        self.assertEqual((head.status, head.headers["Content-Length"], head.raw), (200, "10240", b""))
        content = self.emu.store.files.path(sid)
        self.assertTrue(os.path.exists(content))
        r = self.call("DELETE", ATT + "/" + sid)
        self.assertEqual((r.status, r.raw), (204, b""))
        self.assertFalse(os.path.exists(content))
        self.assertError(self.call("GET", ATT + "/" + sid), 404, "No Record found")
        self.assertError(self.download(sid), 404, "No Record found")
        self.assertError(self.call("DELETE", ATT + "/" + sid), 404, "No Record found")
        self.assertEqual(self.attachments().result, [])

    def test_empty_file(self):
        inc = self.create()["sys_id"]
        meta = self.attach(inc, "empty.txt", b"")
        self.assertEqual((meta["size_bytes"], meta["hash"]), ("0", SHA256_EMPTY))
        for headers in (None, {"Range": "bytes=0-"}):  # a range of an empty file is the whole of it
            f = self.download(meta["sys_id"], headers)
            self.assertEqual((f.status, f.raw, f.headers["Content-Length"]), (200, b"", "0"))

    def test_awkward_names_round_trip(self):
        inc = self.create()["sys_id"]
        names = ["résumé 2026 – 東京.pdf", "two  spaces and+plus.txt", "..", "../../etc/passwd",
                 "n" * 196 + ".txt", 'say "hi"\\now.txt', "semi;colon,comma%25.txt"]
        for name in names:
            meta = self.attach(inc, name, name.encode("utf-8"))
            self.assertEqual(meta["file_name"], name)
            self.assertEqual(self.call("GET", ATT + "/" + meta["sys_id"]).result["file_name"], name)
            f = self.download(meta["sys_id"])
            self.assertEqual(f.raw, name.encode("utf-8"))
            self.assertEqual(disposition_names(f.headers["Content-Disposition"]), (name, name))
            self.assertEqual(json.loads(f.headers["X-Attachment-Metadata"])["file_name"], name)
        listed = self.attachments(table_sys_id=inc, sysparm_query="ORDERBYsys_created_on").result
        self.assertEqual(sorted(m["file_name"] for m in listed), sorted(names))
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.emu.store.files.path("x")))),
                         sorted(m["sys_id"] for m in listed))  # stored by sys_id, never by name

    def test_range_requests(self):
        data = bytes(range(250)) * 4
        sid = self.attach(self.create()["sys_id"], "r.bin", data)["sys_id"]
        for rng, first, last in (("bytes=100-", 100, 999), ("bytes=10-19", 10, 19), ("bytes=990-5000", 990, 999),
                                 ("bytes=-10", 990, 999), ("bytes=0-0", 0, 0)):
            f = self.download(sid, {"Range": rng})
            self.assertEqual(f.status, 206, rng)
            self.assertEqual(f.headers["Content-Range"], "bytes %d-%d/1000" % (first, last), rng)
            self.assertEqual(f.raw, data[first:last + 1], rng)
            self.assertEqual(int(f.headers["Content-Length"]), last - first + 1)
            self.assertIn("X-Attachment-Metadata", f.headers)
        for rng in ("bytes=1000-", "bytes=5000-6000"):
            f = self.download(sid, {"Range": rng})
            self.assertError(f, 416, "Requested range not satisfiable")
            self.assertEqual(f.headers["Content-Range"], "bytes */1000")
        for rng in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6"):  # ignored: the whole file
            f = self.download(sid, {"Range": rng})
            self.assertEqual((f.status, f.raw), (200, data), rng)

    def test_upload_400_for_a_missing_parameter_or_content_type(self):
        inc = self.create()["sys_id"]
        for missing in ("table_name", "table_sys_id", "file_name"):
            for value in (None, ""):
                params = {"table": "incident", "parent": inc, "name": "a.txt"}
                key = {"table_name": "table", "table_sys_id": "parent", "file_name": "name"}[missing]
                params[key] = value
                r = self.upload(params["parent"], params["name"], b"x", table=params["table"])
                self.assertError(r, 400, "Missing parameter: " + missing)
        for ctype in (None, ""):
            self.assertError(self.upload(inc, "a.txt", b"x", ctype), 400, "Missing header: Content-Type")
        self.assertEqual(self.attachments().result, [])

    def test_404_for_an_unknown_record_or_attachment(self):
        inc = self.create()["sys_id"]
        self.assertError(self.upload("f" * 32), 404, "No Record found",
                         "Record doesn't exist or ACL restricts the record retrieval")
        self.assertError(self.upload(inc, table="problem"), 404, "No Record found")
        self.assertError(self.upload(inc, table="sys_attachment"), 404, "No Record found")
        for method, path in (("GET", "/" + "a" * 32), ("GET", "/%s/file" % ("a" * 32)), ("DELETE", "/" + "a" * 32),
                             ("PATCH", "/" + "a" * 32)):
            self.assertError(self.call(method, ATT + path, body={"file_name": "x"}), 404, "No Record found")
        self.assertEqual(self.attachments().result, [])

    def test_extension_rule_refuses_then_accepts_when_cleared(self):
        inc = self.create()["sys_id"]
        state = self.ctl("POST", "/__snemu/faults", {"attachment_extensions": " pdf, TXT,,"})
        self.assertEqual(state["attachment_extensions"], "pdf,txt")
        r = self.upload(inc, "setup.exe", b"MZ")
        self.assertError(r, 400, "Attachment refused: extension exe is not allowed",
                         "glide.attachment.extensions allows: pdf,txt")
        self.assertError(self.upload(inc, "README", b"x"), 400,
                         "Attachment refused: a file name without an extension is not allowed")
        self.assertEqual(self.upload(inc, "archive.txt.gz", b"x").status, 400)  # the last extension counts
        self.assertEqual(self.attachments().result, [])
        self.assertEqual(self.attach(inc, "Report.PDF", b"%PDF")["file_name"], "Report.PDF")
        sid = self.attach(inc, "notes.txt")["sys_id"]
        self.assertEqual(self.call("PATCH", ATT + "/" + sid, body={"file_name": "notes.exe"}).status, 400)
        for clear in (None, "", " , "):
            self.ctl("POST", "/__snemu/faults", {"attachment_extensions": "pdf"})
            self.assertIsNone(self.ctl("POST", "/__snemu/faults", {"attachment_extensions": clear})
                              ["attachment_extensions"])
            self.assertEqual(self.upload(inc, "setup.exe", b"MZ").status, 201)
        self.ctl("POST", "/__snemu/faults", {"attachment_extensions": "pdf"})
        self.assertIsNone(self.ctl("POST", "/__snemu/reset")["attachment_extensions"])
        for bad in (5, ".pdf", "p df", ["pdf"], "a/b"):
            r = send(self.base, "POST", "/__snemu/faults", body={"attachment_extensions": bad}, auth=None)
            self.assertEqual(r.status, 400, bad)

    def test_size_limit_413(self):
        inc = self.create()["sys_id"]
        self.assertEqual(self.ctl("POST", "/__snemu/faults", {"attachment_max_bytes": 1000})["attachment_max_bytes"],
                         1000)
        self.assertEqual(self.attach(inc, "fits.bin", b"x" * 1000)["size_bytes"], "1000")
        r = self.upload(inc, "big.bin", b"x" * 1001)
        self.assertError(r, 413, "Maximum file size of 1000 bytes exceeded",
                         "Attachment refused: com.glide.attachment.max_size is 1000 bytes; the file is 1001 bytes")
        # Chunked (no Content-Length): refused while reading; the rest of the body is read and
        # dropped, so the same connection answers the next request.
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=30)
        try:
            hdrs = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode(),
                    "Content-Type": "application/octet-stream"}
            path = ATT + "/file?table_name=incident&table_sys_id=%s&file_name=c.bin" % inc
            conn.request("POST", path, body=iter([b"y" * 700] * 10), headers=hdrs, encode_chunked=True)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            self.assertEqual((resp.status, body["error"]["message"]), (413, "Maximum file size of 1000 bytes exceeded"))
            conn.request("GET", ATT, headers=hdrs)
            resp = conn.getresponse()
            self.assertEqual((resp.status, len(json.loads(resp.read())["result"])), (200, 1))
        finally:
            conn.close()
        directory = os.path.dirname(self.emu.store.files.path("x"))
        self.assertEqual(len(os.listdir(directory)), 1)  # no half-written upload left behind
        for bad in (-1, "1", None, True):
            r = send(self.base, "POST", "/__snemu/faults", body={"attachment_max_bytes": bad}, auth=None)
            self.assertEqual(r.status, 400, bad)
        self.assertEqual(self.ctl("POST", "/__snemu/reset")["attachment_max_bytes"], 1073741824)
        self.assertEqual(self.upload(inc, "big.bin", b"x" * 1001).status, 201)

    def test_acl_403_on_every_attachment_request(self):
        inc = self.create()["sys_id"]
        sid = self.attach(inc)["sys_id"]
        state = self.ctl("POST", "/__snemu/faults", {"attachment_acl": ["sync", "sync"]})
        self.assertEqual(state["attachment_acl"], ["sync"])
        denied = "ACL Exception %s Failed due to security constraints"
        self.assertError(self.upload(inc, auth=SYNC), 403, "Operation Failed", denied % "Insert")
        for method, path, op in (("GET", ATT, "Read"), ("GET", ATT + "/" + sid, "Read"),
                                 ("GET", ATT + "/%s/file" % sid, "Read"), ("DELETE", ATT + "/" + sid, "Delete"),
                                 ("PATCH", ATT + "/" + sid, "Update"),
                                 ("GET", "/api/now/table/sys_attachment", "Read")):
            r = self.call(method, path, body={"file_name": "n.txt"} if method == "PATCH" else None, auth=SYNC)
            self.assertError(r, 403, "Operation Failed", denied % op)
        self.assertEqual(len(self.attachments().result), 1)  # others are not concerned
        self.assertEqual(self.call("GET", ATT, auth=SYNC).status, 403)
        self.assertIsNone(self.ctl("POST", "/__snemu/faults", {"attachment_acl": []})["attachment_acl"])
        self.assertEqual(self.call("GET", ATT + "/" + sid, auth=SYNC).status, 200)
        self.ctl("POST", "/__snemu/faults", {"attachment_acl": ["sync"]})
        self.ctl("POST", "/__snemu/reset")
        self.assertEqual(self.upload(inc, auth=SYNC).status, 201)
        for bad in ("sync", [""], [1], {"users": ["sync"]}):
            r = send(self.base, "POST", "/__snemu/faults", body={"attachment_acl": bad}, auth=None)
            self.assertEqual(r.status, 400, bad)

    def test_upload_leaves_the_parent_incident_untouched(self):
        inc = self.create(short_description="parent")
        self.ctl("POST", "/__snemu/clock", {"offset_seconds": 3600})
        meta = self.attach(inc["sys_id"], auth=SYNC)
        self.assertEqual((meta["sys_created_by"], meta["created_by_name"]), ("sync", "Sync User"))
        self.assertGreater(meta["sys_created_on"], inc["sys_updated_on"])
        after = self.call("GET", "/api/now/table/incident/" + inc["sys_id"]).result
        for field in ("sys_updated_on", "sys_updated_by", "sys_mod_count"):
            self.assertEqual(after[field], inc[field], field)
        self.call("DELETE", ATT + "/" + meta["sys_id"])
        after = self.call("GET", "/api/now/table/incident/" + inc["sys_id"]).result
        self.assertEqual((after["sys_updated_on"], after["sys_mod_count"]), (inc["sys_updated_on"], "0"))

    def test_list_filters_queries_order_and_paging(self):
        one, two = self.create()["sys_id"], self.create()["sys_id"]
        made = []
        for i, (parent, name) in enumerate([(one, "c.txt"), (two, "a.txt"), (one, "b.txt"), (one, "d.txt"),
                                            (two, "e.txt")]):
            self.ctl("POST", "/__snemu/clock", {"offset_seconds": 10 * i})
            made.append(self.attach(parent, name, b"x" * (i + 1)))
        names = lambda r: [m["file_name"] for m in r.result]  # noqa: E731
        self.assertEqual(names(self.attachments(table_sys_id=one)), ["c.txt", "b.txt", "d.txt"])
        self.assertEqual(names(self.attachments(table_name="incident", table_sys_id=two)), ["a.txt", "e.txt"])
        self.assertEqual(names(self.attachments(table_name="sys_user")), [])
        cursor = made[2]["sys_created_on"]
        q = "table_name=incident^table_sys_idIN%s,%s^sys_created_on>=%s^ORDERBYDESCsys_created_on" % (one, two, cursor)
        self.assertEqual(names(self.attachments(sysparm_query=q)), ["e.txt", "d.txt", "b.txt"])
        q = "sys_created_on>%s^ORDERBYsys_created_on^ORDERBYsys_id" % cursor
        self.assertEqual(names(self.attachments(sysparm_query=q, table_sys_id=one)), ["d.txt"])  # both apply
        self.assertEqual(names(self.attachments(sysparm_query="ORDERBYfile_name")),
                         ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"])
        self.assertEqual(names(self.attachments(sysparm_query="size_bytes>=4^ORfile_name=a.txt^ORDERBYfile_name")),
                         ["a.txt", "d.txt", "e.txt"])
        self.assertEqual(names(self.attachments(sysparm_query="hash=%s" % made[3]["hash"])), ["d.txt"])
        r = self.attachments(sysparm_query="ORDERBYfile_name", sysparm_limit="2", sysparm_offset="2")
        self.assertEqual(names(r), ["c.txt", "d.txt"])
        self.assertEqual(r.headers["X-Total-Count"], "5")
        links = parse_link(r.headers["Link"])
        self.assertEqual((links["prev"], links["next"], links["last"]), ((0, 2), (4, 2), (4, 2)))
        self.assertIn(self.base + ATT + "?sysparm_query=ORDERBYfile_name&", r.headers["Link"])
        r = self.attachments(sysparm_offset="4")
        self.assertEqual((names(r), parse_link(r.headers["Link"])["prev"]), (["e.txt"], (0, 1000)))  # limit 1000
        self.assertIsNone(self.attachments().headers["Link"])
        self.ctl("POST", "/__snemu/faults", {"short_pages": 1})
        r = self.attachments(sysparm_limit="3")
        self.assertEqual((len(r.result), r.headers["X-Total-Count"], parse_link(r.headers["Link"])["next"]),
                         (1, "5", (3, 3)))
        log = self.ctl("GET", "/__snemu/log")["requests"]
        self.assertEqual((log[-1]["path"], log[-1]["rows"], log[-1]["user"]), (ATT, 1, "admin"))

    def test_generic_faults_and_auth_apply(self):
        inc = self.create()["sys_id"]
        sid = self.attach(inc)["sys_id"]
        self.assertError(self.upload(inc, auth=None), 401, "User Not Authenticated")
        self.assertError(self.download(sid, auth=None), 401, "User Not Authenticated")
        self.ctl("POST", "/__snemu/faults", {"rate_limit": {"count": 1, "retry_after": 2}})
        self.assertEqual(self.upload(inc, data=b"z" * 5000).status, 429)
        self.ctl("POST", "/__snemu/faults", {"fail_next": {"count": 1, "status": 500, "method": "POST"}})
        self.assertEqual(self.download(sid).status, 200)  # not a POST: passes
        self.assertEqual(self.upload(inc).status, 500)
        self.assertEqual(len(self.attachments().result), 1)  # refused uploads stored nothing
        self.ctl("POST", "/__snemu/faults", {"fail_next": {"count": 1, "status": 503}})
        f = self.download(sid)
        self.assertEqual(f.status, 503)
        self.assertTrue(f.headers["Content-Type"].startswith("text/html"))
        self.ctl("POST", "/__snemu/faults", {"hibernate": True})
        f = self.download(sid)
        self.assertEqual(f.status, 200)
        self.assertIn(b"Instance Hibernating page", f.raw)
        self.ctl("POST", "/__snemu/faults", {"hibernate": False, "latency_ms": 200})
        t0 = time.monotonic()
        self.assertEqual(self.download(sid).raw, b"hello")
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)
        log = [(e["method"], e["path"], e["status"]) for e in self.ctl("GET", "/__snemu/log")["requests"]]
        file_path = ATT + "/%s/file" % sid
        self.assertEqual(log[-9:], [("POST", ATT + "/file", 401), ("GET", file_path, 401), ("POST", ATT + "/file", 429),
                                    ("GET", file_path, 200), ("POST", ATT + "/file", 500), ("GET", ATT, 200),
                                    ("GET", file_path, 503), ("GET", file_path, 200), ("GET", file_path, 200)])

    def test_lose_answer_on_upload_stores_the_file_but_drops_the_answer(self):
        inc = self.create()["sys_id"]
        self.ctl("POST", "/__snemu/faults", {"lose_answer": {"count": 1, "method": "POST", "user": "sync"}})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.upload(inc, "lost.txt", b"carried out", auth=SYNC)
        listed = self.attachments(table_sys_id=inc).result
        self.assertEqual([(m["file_name"], m["hash"], m["sys_created_by"]) for m in listed],
                         [("lost.txt", sha256(b"carried out"), "sync")])
        self.assertEqual(self.download(listed[0]["sys_id"]).raw, b"carried out")
        lost = [e for e in self.ctl("GET", "/__snemu/log")["requests"] if e["lost"]]
        self.assertEqual([(e["method"], e["path"], e["status"]) for e in lost], [("POST", ATT + "/file", 201)])
        self.ctl("POST", "/__snemu/faults", {"lose_answer": {"count": 1, "method": "GET"}})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.download(listed[0]["sys_id"])
        self.assertEqual(self.download(listed[0]["sys_id"]).raw, b"carried out")

    def test_rename_chunked_upload_and_routes(self):
        inc = self.create()["sys_id"]
        r = raw_request(self.base, "POST", "/api/now/attachment/file?table_name=incident&table_sys_id=%s"
                        "&file_name=chunked.txt" % inc, iter([b"one ", b"two ", b"three"]),
                        {"Content-Type": "text/plain;charset=UTF-8"})
        self.assertEqual(r.status, 201, r.raw)
        meta = r.result
        self.assertEqual((meta["size_bytes"], meta["hash"], meta["content_type"]),
                         ("13", sha256(b"one two three"), "text/plain;charset=UTF-8"))
        self.assertEqual(self.download(meta["sys_id"]).headers["Content-Type"], "text/plain;charset=UTF-8")
        self.ctl("POST", "/__snemu/clock", {"offset_seconds": 60})
        r = self.call("PATCH", ATT + "/" + meta["sys_id"], body={"file_name": "renamed.txt"}, auth=SYNC)
        self.assertEqual((r.status, r.raw), (204, b""))
        after = self.call("GET", ATT + "/" + meta["sys_id"]).result
        self.assertEqual((after["file_name"], after["sys_mod_count"], after["sys_updated_by"]),
                         ("renamed.txt", "1", "sync"))
        self.assertGreater(after["sys_updated_on"], meta["sys_updated_on"])
        self.assertEqual(self.call("PATCH", ATT + "/" + meta["sys_id"], body={}).status, 400)
        self.assertError(self.call("POST", "/api/now/attachment/upload", body=b"--x--"), 400,
                         "Requested URI does not represent any resource")
        self.assertError(self.call("GET", "/api/now/v2/attachment"), 400,
                         "Requested URI does not represent any resource")
        r = self.call("PUT", ATT + "/" + meta["sys_id"], body={})
        self.assertError(r, 405, "Method not Supported")
        self.assertEqual(r.headers["Allow"], "GET, HEAD, PATCH, DELETE")
        self.assertError(self.call("DELETE", ATT), 405, "Method not Supported")
        self.assertError(self.call("POST", ATT + "/%s/file" % meta["sys_id"], body=b"x"), 405,
                         "Method not Supported")

    def test_table_api_reads_sys_attachment_and_refuses_writes(self):
        inc = self.create()["sys_id"]
        meta = self.attach(inc)
        r = self.list("sys_attachment", sysparm_query="table_sys_id=" + inc)
        self.assertEqual(r.result, [meta])
        self.assertError(self.call("POST", "/api/now/table/sys_attachment", body={"file_name": "x"}), 403,
                         "Operation Failed")
        self.assertError(self.call("DELETE", "/api/now/table/sys_attachment/" + meta["sys_id"]), 403,
                         "Operation Failed")

    def test_wipe_removes_attachments_and_their_content(self):
        sid = self.attach(self.create()["sys_id"])["sys_id"]
        path = self.emu.store.files.path(sid)
        self.assertTrue(os.path.exists(path))
        self.ctl("DELETE", "/__snemu/data")
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.attachments().result, [])

    def test_abandoned_transfers_leave_nothing_behind(self):
        inc = self.create()["sys_id"]
        sid = self.attach(inc, "big.bin", os.urandom(4 << 20))["sys_id"]
        auth = "Basic " + base64.b64encode(b"admin:admin").decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=30)
        conn.putrequest("POST", ATT + "/file?table_name=incident&table_sys_id=%s&file_name=cut.bin" % inc)
        for name, value in (("Authorization", auth), ("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(1 << 20))):
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(b"only the start")
        conn.close()  # the upload is cut short
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=30)
        conn.request("GET", ATT + "/%s/file" % sid, headers={"Authorization": auth})
        self.assertEqual(len(conn.getresponse().read(1000)), 1000)
        conn.close()  # the download is abandoned after 1000 bytes
        deadline = time.monotonic() + 10
        while not any(e["status"] == 400 for e in self.ctl("GET", "/__snemu/log")["requests"]):
            self.assertLess(time.monotonic(), deadline, "the cut upload was never answered")
            time.sleep(0.05)
        self.assertEqual([m["file_name"] for m in self.attachments().result], ["big.bin"])
        self.assertEqual(os.listdir(os.path.dirname(self.emu.store.files.path(sid))), [sid])  # no half file
        self.assertEqual(self.download(sid).headers["Content-Length"], str(4 << 20))

    def test_concurrent_transfers(self):
        inc = self.create()["sys_id"]
        blobs = [os.urandom(3 << 20) + bytes([i]) for i in range(6)]

        def round_trip(i):
            meta = self.attach(inc, "blob%d.bin" % i, blobs[i], "application/octet-stream")
            got = self.download(meta["sys_id"]).raw
            return meta["hash"], sha256(got), got == blobs[i]

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(round_trip, range(6)))
        self.assertEqual(results, [(sha256(b), sha256(b), True) for b in blobs])
        self.assertEqual(self.attachments().headers["X-Total-Count"], "6")


class TestResolvedInactive(EmuTest):
    """--resolved-inactive: the issue's reading, Resolved also inactive."""

    options = {"resolved_inactive": True}

    def test_resolved_is_inactive(self):
        rec = self.create(state="6", close_code="Duplicate", close_notes="n")
        self.assertEqual(rec["active"], "false")


class ProcessTest(unittest.TestCase):
    """Base: runs the command line as a subprocess with a state file in a temporary directory."""

    def start(self, *extra):
        port_file = os.path.join(self.tmp.name, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "snemu.py"), "--port", "0", "--port-file",
                                 port_file, "--instance", "dev9", "--user", "admin:admin:System Administrator",
                                 "--state-file", self.state] + list(extra), stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            self.assertIsNone(proc.poll(), "snemu exited early")
            self.assertLess(time.monotonic(), deadline, "no port file")
            time.sleep(0.02)
        with open(port_file) as f:
            return proc, "http://127.0.0.1:%d" % int(f.read())

    def stop(self, proc):
        proc.terminate()
        self.assertEqual(proc.wait(timeout=10), 0)
        proc.stderr.close()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.tmp.name, "state.json")

    def tearDown(self):
        self.tmp.cleanup()


class TestProcess(ProcessTest):
    """The command line: port file, SIGTERM, and the state file surviving a restart."""

    def test_state_survives_restart_and_sigterm_exits_cleanly(self):
        proc, base = self.start()
        try:
            r = send(base, "POST", "/api/now/table/incident", body={"short_description": "keep", "comments": "c"})
            self.assertEqual(r.status, 201)
            sid = r.json["result"]["sys_id"]
        finally:
            self.stop(proc)
        proc, base = self.start("--rate-limit", "1:3")
        try:
            self.assertEqual(send(base, "GET", "/api/now/table/incident").status, 429)
            r = send(base, "GET", "/api/now/table/incident/" + sid, {"sysparm_display_value": "true"})
            self.assertEqual(r.json["result"]["short_description"], "keep")
            self.assertIn("(Additional comments)\nc\n\n", r.json["result"]["comments"])
            r = send(base, "POST", "/api/now/table/incident", body={})
            self.assertEqual(r.json["result"]["number"], "INC0010002")
        finally:
            self.stop(proc)



def memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        values = dict(line.split(":", 1) for line in f)
    return int(values["VmRSS"].split()[0]), int(values["VmHWM"].split()[0])


class GeneratedFile:
    """size bytes made up on the fly, never held whole: 1 MiB blocks of one random block, each
    stamped with its index so no two are alike. blocks() yields them; sha256 is their hash."""

    def __init__(self, size, block=1 << 20):
        self.size = size
        self.block = block
        self.base = os.urandom(block)
        digest = hashlib.sha256()
        for b in self.blocks():
            digest.update(b)
        self.sha256 = digest.hexdigest()

    def blocks(self):
        for i, start in enumerate(range(0, self.size, self.block)):
            yield (i.to_bytes(8, "big") + self.base[8:])[:self.size - start]


class TestAttachmentProcess(ProcessTest):
    """Attachment contents on disk: kept beside the state file across a restart, in a temporary
    directory otherwise, and streamed so that a large file does not grow the emulator."""

    def setUp(self):
        super().setUp()
        self.files = self.state + ".files"

    def new_incident(self, base):
        r = send(base, "POST", "/api/now/table/incident", body={"short_description": "files"})
        self.assertEqual(r.status, 201)
        return r.json["result"]["sys_id"]

    @staticmethod
    def upload_path(inc, name):
        return ATT + "/file?table_name=incident&table_sys_id=%s&file_name=%s" % (inc, name)

    def test_attachments_survive_a_restart_beside_the_state_file(self):
        proc, base = self.start()
        try:
            inc = self.new_incident(base)
            r = raw_request(base, "POST", self.upload_path(inc, "kept.txt"), b"persistent bytes",
                            {"Content-Type": "text/plain"})
            self.assertEqual(r.status, 201, r.raw)
            meta = r.json["result"]
        finally:
            self.stop(proc)
        self.assertEqual(os.listdir(self.files), [meta["sys_id"]])
        proc, base = self.start()
        try:
            got = send(base, "GET", ATT + "/" + meta["sys_id"]).json["result"]
            self.assertEqual({k: v for k, v in got.items() if k != "download_link"},
                             {k: v for k, v in meta.items() if k != "download_link"})
            self.assertEqual(got["download_link"], base + "/api/now/attachment/%s/file" % meta["sys_id"])
            f = raw_request(base, "GET", ATT + "/%s/file" % meta["sys_id"])
            self.assertEqual((f.status, f.raw), (200, b"persistent bytes"))
            self.assertEqual(send(base, "DELETE", ATT + "/" + meta["sys_id"]).status, 204)
            self.assertEqual(os.listdir(self.files), [])
        finally:
            self.stop(proc)

    def test_without_a_state_file_contents_live_in_a_temporary_directory_removed_at_stop(self):
        emu = snemu.Emulator(users=USERS)
        emu.start()
        try:
            inc = self.new_incident(emu.base_url)
            r = raw_request(emu.base_url, "POST", self.upload_path(inc, "t.txt"), b"temp", {"Content-Type": "text/plain"})
            self.assertEqual(r.status, 201)
            directory = os.path.dirname(emu.store.files.path(r.json["result"]["sys_id"]))
            self.assertEqual(os.listdir(directory), [r.json["result"]["sys_id"]])
        finally:
            emu.stop()
        self.assertFalse(os.path.exists(directory))

    def test_a_large_file_is_streamed_with_bounded_memory(self):
        size = 64 << 20
        data = GeneratedFile(size)
        proc, base = self.start()
        try:
            inc = self.new_incident(base)
            auth = "Basic " + base64.b64encode(b"admin:admin").decode()
            small = raw_request(base, "POST", self.upload_path(inc, "warm.bin"), b"w" * 4096,
                                {"Content-Type": "application/octet-stream"})  # warm up the code paths
            raw_request(base, "GET", ATT + "/%s/file" % small.json["result"]["sys_id"])
            _, peak_before = memory_kib(proc.pid)
            conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=120)
            try:
                conn.putrequest("POST", self.upload_path(inc, "big.bin"))
                for name, value in (("Authorization", auth), ("Content-Type", "application/octet-stream"),
                                    ("Content-Length", str(size))):
                    conn.putheader(name, value)
                conn.endheaders()
                for block in data.blocks():
                    conn.send(block)
                resp = conn.getresponse()
                meta = json.loads(resp.read())["result"]
                self.assertEqual((resp.status, meta["size_bytes"], meta["hash"]), (201, str(size), data.sha256))
                conn.request("GET", ATT + "/%s/file" % meta["sys_id"], headers={"Authorization": auth})
                resp = conn.getresponse()
                self.assertEqual(resp.headers["Content-Length"], str(size))
                digest, got = hashlib.sha256(), 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    got += len(chunk)
                self.assertEqual((resp.status, got, digest.hexdigest()), (200, size, data.sha256))
            finally:
                conn.close()
            _, peak_after = memory_kib(proc.pid)
            self.assertLess(peak_after - peak_before, 16 << 10,
                            "the emulator's peak RSS grew by %d KiB for a %d MiB file" % (
                                peak_after - peak_before, size >> 20))
            self.assertEqual(os.path.getsize(os.path.join(self.files, meta["sys_id"])), size)
        finally:
            self.stop(proc)


if __name__ == "__main__":
    unittest.main()
