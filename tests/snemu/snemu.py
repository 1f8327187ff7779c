#!/usr/bin/env python3
"""snemu: a ServiceNow instance emulator for twinsync's tests.

twinsync's nodes talk to ServiceNow over the REST Table and Attachment APIs. This module plays one
ServiceNow instance on 127.0.0.1 so the C client, the end-to-end tests and the chaos tests can run
without a real instance. It follows the facts about the real API (collected with their sources in
docs/servicenow-api.md), quirks included, and documents its own choices in docs/snemu.md.

How the parts fit:
  schema      TABLES: the fields of incident, sys_user, sys_journal_field and sys_attachment,
              their types, defaults and choice labels.
  time        Clock: the emulator's clock ("YYYY-MM-DD HH:MM:SS" UTC, one-second resolution,
              shiftable for tests) and the javascript:gs.* date helpers used in queries.
  Query       the encoded-query language (sysparm_query): parse once, then match and sort rows.
  Store       every record in memory, the business rules (numbers, priority, active, journal
              entries, data policy) and the optional state file; attachment contents are files
              on disk (ContentStore), beside the state file or in a temporary directory.
  Auth        Basic credentials and OAuth tokens (/oauth_token.do).
  Faults      injected faults (rate limit, failures, latency, hibernation, journal ACL, short
              pages, extra mandatory fields) and the attachment rules (allowed extensions, size
              limit, attachment ACL), switched by flags or by the control API.
  RequestLog  what the client asked, for tests to count requests.
  Emulator    the HTTP server: routing, response envelopes, gzip, the Attachment API (bodies
              streamed to and from disk in blocks), the /__snemu control API.
  main()      the command line.

Standard library only. Run `python3 snemu.py --help`.
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

# --------------------------------------------------------------------------------------------
# Schema

Field = namedtuple("Field", "type ref default")
"""A column: type is one of string, integer, choice, boolean, datetime, reference, journal,
journal_list, sys_id; ref names the referenced table for references; default is the value a new
record gets."""

NUMERIC_TYPES = ("integer", "choice")


def _f(ftype, default="", ref=None):
    """Shorthand constructor for Field."""
    return Field(ftype, ref, default)


INCIDENT_FIELDS = {
    "sys_id": _f("sys_id"),
    "number": _f("string"),
    "task_effective_number": _f("string"),
    "short_description": _f("string"),
    "description": _f("string"),
    "state": _f("choice", "1"),
    "incident_state": _f("choice", "1"),
    "impact": _f("choice", "3"),
    "urgency": _f("choice", "3"),
    "priority": _f("choice", "5"),
    "severity": _f("choice", "3"),
    "hold_reason": _f("choice"),
    "active": _f("boolean", "true"),
    "made_sla": _f("boolean", "true"),
    "notify": _f("choice", "1"),
    "escalation": _f("integer", "0"),
    "approval": _f("string", "not requested"),
    "upon_approval": _f("string", "proceed"),
    "upon_reject": _f("string", "cancel"),
    "category": _f("string", "inquiry"),
    "subcategory": _f("string"),
    "contact_type": _f("string"),
    "caller_id": _f("reference", ref="sys_user"),
    "opened_by": _f("reference", ref="sys_user"),
    "assigned_to": _f("reference", ref="sys_user"),
    "assignment_group": _f("reference", ref="sys_user_group"),
    "resolved_by": _f("reference", ref="sys_user"),
    "closed_by": _f("reference", ref="sys_user"),
    "opened_at": _f("datetime"),
    "resolved_at": _f("datetime"),
    "closed_at": _f("datetime"),
    "close_code": _f("string"),
    "close_notes": _f("string"),
    "correlation_id": _f("string"),
    "correlation_display": _f("string"),
    "comments": _f("journal"),
    "work_notes": _f("journal"),
    "comments_and_work_notes": _f("journal_list"),
    "work_notes_list": _f("string"),
    "reopen_count": _f("integer", "0"),
    "reassignment_count": _f("integer", "0"),
    "child_incidents": _f("integer", "0"),
    "sys_domain": _f("reference", "global", ref="sys_user_group"),
    "sys_domain_path": _f("string", "/"),
    "sys_class_name": _f("string", "incident"),
    "sys_tags": _f("string"),
    "sys_created_on": _f("datetime"),
    "sys_created_by": _f("string"),
    "sys_updated_on": _f("datetime"),
    "sys_updated_by": _f("string"),
    "sys_mod_count": _f("integer", "0"),
}

SYS_USER_FIELDS = {
    "sys_id": _f("sys_id"),
    "user_name": _f("string"),
    "name": _f("string"),
    "first_name": _f("string"),
    "last_name": _f("string"),
    "email": _f("string"),
    "active": _f("boolean", "true"),
    "time_zone": _f("string", "GMT"),
    "sys_domain": _f("reference", "global", ref="sys_user_group"),
    "sys_class_name": _f("string", "sys_user"),
    "sys_created_on": _f("datetime"),
    "sys_created_by": _f("string"),
    "sys_updated_on": _f("datetime"),
    "sys_updated_by": _f("string"),
    "sys_mod_count": _f("integer", "0"),
}

JOURNAL_FIELDS = {
    "sys_id": _f("sys_id"),
    "element_id": _f("string"),
    "name": _f("string"),
    "element": _f("string"),
    "value": _f("string"),
    "sys_created_on": _f("datetime"),
    "sys_created_by": _f("string"),
}

ATTACHMENT_FIELDS = {
    "sys_id": _f("sys_id"),
    "file_name": _f("string"),
    "content_type": _f("string"),
    "size_bytes": _f("integer", "0"),
    "compressed": _f("boolean", "false"),
    "size_compressed": _f("string"),
    "table_name": _f("string"),
    "table_sys_id": _f("string"),
    "download_link": _f("string"),
    "state": _f("string", "available"),
    "chunk_size_bytes": _f("string", "700000"),
    "hash": _f("string"),
    "image_width": _f("string"),
    "image_height": _f("string"),
    "average_image_color": _f("string"),
    "sys_tags": _f("string"),
    "sys_created_on": _f("datetime"),
    "sys_created_by": _f("string"),
    "created_by_name": _f("string"),
    "sys_updated_on": _f("datetime"),
    "sys_updated_by": _f("string"),
    "updated_by_name": _f("string"),
    "sys_mod_count": _f("integer", "0"),
}

TableSpec = namedtuple("TableSpec", "fields read_only display_field computed")
"""fields: the schema; read_only: writes are refused with the ACL 403; display_field: the field a
reference to this table displays; computed: fields a client write is ignored on (besides sys_*)."""

TABLES = {
    "incident": TableSpec(INCIDENT_FIELDS, False, "number",
                          {"number", "task_effective_number", "priority", "active",
                           "comments_and_work_notes"}),
    "sys_user": TableSpec(SYS_USER_FIELDS, False, "name", set()),
    "sys_journal_field": TableSpec(JOURNAL_FIELDS, True, "value", set()),
    # Attachment metadata: written only through the Attachment API (Table API writes get the 403).
    "sys_attachment": TableSpec(ATTACHMENT_FIELDS, True, "file_name", set()),
}

STATE_LABELS = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed",
                "8": "Canceled"}
HML_LABELS = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
CHOICE_LABELS = {
    "state": STATE_LABELS,
    "incident_state": STATE_LABELS,
    "impact": HML_LABELS,
    "urgency": HML_LABELS,
    "severity": HML_LABELS,
    "priority": {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low",
                 "5": "5 - Planning"},
    "notify": {"1": "Do Not Notify", "2": "Send Email"},
    "hold_reason": {"1": "Awaiting Caller", "3": "Awaiting Problem", "4": "Awaiting Vendor",
                    "5": "Awaiting Change"},
}

JOURNAL_LABELS = {"comments": "Additional comments", "work_notes": "Work notes"}
DATA_POLICY_LABELS = (("close_code", "Resolution code"), ("close_notes", "Close notes"))
FIELD_LABELS = dict(DATA_POLICY_LABELS, short_description="Short description", description="Description",
                    caller_id="Caller", category="Category", subcategory="Subcategory", contact_type="Channel",
                    assignment_group="Assignment group", assigned_to="Assigned to", impact="Impact",
                    urgency="Urgency", severity="Severity", state="State", incident_state="Incident state",
                    hold_reason="On hold reason", correlation_id="Correlation ID",
                    correlation_display="Correlation display", opened_by="Opened by", opened_at="Opened",
                    resolved_by="Resolved by", resolved_at="Resolved", closed_by="Closed by",
                    closed_at="Closed", work_notes_list="Work notes list")
RESOLVED_STATES = ("6", "7")
ADMIN_SYS_ID = "6816f79cc0a8016401c5a33be04be441"  # the admin user's sys_id on every instance
FIRST_NUMBER = 10001                                 # PDIs number new incidents from INC0010001
REFRESH_TTL = 8640000                                # OAuth refresh-token lifespan (100 days)
DEFAULT_LIMIT = 10000                                # sysparm_limit default
MAX_CONTENT_LENGTH = 10485760                        # glide.rest.max_content_length default
LOG_CAP = 100000                                     # request-log entries kept
ATTACHMENT_LIMIT = 1000                              # sysparm_limit default of the Attachment API
ATTACHMENT_MAX_BYTES = 1073741824                    # com.glide.attachment.max_size default (1 GiB)
BLOCK = 1 << 20                                      # attachment bytes move in blocks of at most this


def field_label(name):
    """The label ServiceNow shows for an incident field (what a data-policy message names):
    FIELD_LABELS, else the name with its first letter capitalised and "_" as spaces."""
    return FIELD_LABELS.get(name) or name.replace("_", " ").capitalize()


def priority_of(impact, urgency):
    """Return the priority the standard 3x3 lookup gives impact and urgency ("1".."3" each),
    i.e. impact + urgency - 1, or None when either is outside 1..3."""
    if impact in HML_LABELS and urgency in HML_LABELS:
        return str(int(impact) + int(urgency) - 1)
    return None


# --------------------------------------------------------------------------------------------
# Time

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Clock:
    """The emulator's wall clock in UTC. offset shifts it (seconds) so tests can make time pass."""

    def __init__(self):
        self.offset = 0

    def now(self):
        """Current emulated time as a naive UTC datetime with whole seconds."""
        t = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
        return t + datetime.timedelta(seconds=self.offset)

    def stamp(self):
        """Current emulated time as "YYYY-MM-DD HH:MM:SS"."""
        return self.now().strftime(TIME_FORMAT)

    def epoch(self):
        """Current emulated time as a UNIX timestamp (float)."""
        return time.time() + self.offset


_JS_CALL = re.compile(r"^javascript:\s*gs\.(\w+)\((.*)\)\s*;?\s*$")


def eval_javascript(expr, clock, caller_sys_id):
    """Evaluate the javascript:gs.* helpers ServiceNow accepts as query values.

    Supports gs.dateGenerate(date, 'start'|'end'|'hh:mm:ss'), gs.daysAgo/Start/End(n),
    gs.hoursAgo/Start/End(n), gs.minutesAgo/Start/End(n), gs.beginningOfToday(), gs.endOfToday(),
    gs.beginningOfYesterday(), gs.endOfYesterday(), gs.now(), gs.nowDateTime() and gs.getUserID(),
    in UTC (the session time zone is taken to be GMT). Returns the value as a string, or None when
    the expression is not one of these (the condition is then invalid and ignored)."""
    m = _JS_CALL.match(expr)
    if not m:
        return None
    name, raw_args = m.group(1), m.group(2)
    args = [a.strip().strip("'\"") for a in raw_args.split(",")] if raw_args.strip() else []
    now = clock.now()
    day = now.replace(hour=0, minute=0, second=0)
    end_of = datetime.timedelta(hours=23, minutes=59, seconds=59)
    try:
        if name == "getUserID":
            return caller_sys_id
        if name == "dateGenerate":
            rng = args[1] if len(args) > 1 else "start"
            rng = {"start": "00:00:00", "end": "23:59:59"}.get(rng, rng)
            return datetime.datetime.strptime(args[0] + " " + rng, TIME_FORMAT).strftime(TIME_FORMAT)
        n = int(args[0]) if args else 0
        units = {"days": datetime.timedelta(days=n), "hours": datetime.timedelta(hours=n),
                 "minutes": datetime.timedelta(minutes=n)}
        simple = {
            "beginningOfToday": day, "endOfToday": day + end_of,
            "beginningOfYesterday": day - datetime.timedelta(days=1),
            "endOfYesterday": day - datetime.timedelta(days=1) + end_of,
            "now": now, "nowDateTime": now,
        }
        if name in simple:
            return simple[name].strftime(TIME_FORMAT)
        m2 = re.fullmatch(r"(days|hours|minutes)Ago(Start|End)?", name)
        if not m2:
            return None
        t = now - units[m2.group(1)]
        if m2.group(2) == "Start":
            t = {"days": t.replace(hour=0, minute=0, second=0),
                 "hours": t.replace(minute=0, second=0), "minutes": t.replace(second=0)}[m2.group(1)]
        elif m2.group(2) == "End":
            t = {"days": t.replace(hour=23, minute=59, second=59),
                 "hours": t.replace(minute=59, second=59), "minutes": t.replace(second=59)}[m2.group(1)]
        return t.strftime(TIME_FORMAT)
    except (ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# Errors and responses


class ApiError(Exception):
    """A failed API call: the HTTP status plus ServiceNow's error envelope
    {"error":{"message","detail"},"status":"failure"}; headers are extra response headers."""

    def __init__(self, status, message, detail=None, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = list(headers)

    def body(self):
        """The JSON envelope of this error."""
        return {"error": {"message": self.message, "detail": self.detail}, "status": "failure"}


def not_found():
    """The documented 404 for a record that does not exist (or an ACL hides)."""
    return ApiError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def too_large(limit, length):
    """The 413 of an upload above the attachment size limit (com.glide.attachment.max_size); length
    is the declared size (None when unknown, the body being chunked)."""
    size = "%d bytes" % length if length is not None else "more than that"
    return ApiError(413, "Maximum file size of %d bytes exceeded" % limit,
                    "Attachment refused: com.glide.attachment.max_size is %d bytes; the file is %s" % (limit, size))


def acl_denied(operation):
    """The documented 403 for a write an ACL refuses; operation is Insert, Update or Delete."""
    return ApiError(403, "Operation Failed", "ACL Exception %s Failed due to security constraints" % operation)


JSON_TYPE = "application/json;charset=UTF-8"
HTML_TYPE = "text/html;charset=UTF-8"


class Response:
    """An HTTP response before encoding: status, headers (list of pairs) and body bytes."""

    def __init__(self, status, body=b"", content_type=JSON_TYPE, headers=()):
        self.status = status
        self.headers = [("Content-Type", content_type)] if body or status != 204 else []
        self.headers += list(headers)
        self.body = body
        self.rows = 0  # records in a list answer (the request log shows it)
        self.stream = None  # a FileBody sent instead of body (attachment downloads)

    @classmethod
    def json(cls, status, obj, headers=()):
        """A JSON response of obj."""
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), JSON_TYPE, headers)

    @classmethod
    def html(cls, status, text, headers=()):
        """An HTML response."""
        return cls(status, text.encode(), HTML_TYPE, headers)


HIBERNATE_PAGE = """<!DOCTYPE html>
<html><head><title>Instance Hibernating page</title></head>
<body><h1>Your instance is hibernating</h1>
<p>The developer instance {instance} is hibernating. Sign in to the developer portal to wake it up.</p>
</body></html>
"""

GATEWAY_PAGES = {
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n",
    503: ("<html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable"
          "</h1><p>The instance is temporarily unavailable.</p></body></html>\n"),
}


# --------------------------------------------------------------------------------------------
# Encoded queries

_OPERATORS = ("NOT LIKE", "NOT IN", "NSAMEAS", "SAMEAS", "ISNOTEMPTY", "ISEMPTY", "EMPTYSTRING",
              "ANYTHING", "STARTSWITH", "ENDSWITH", "BETWEEN", "LIKE", "IN", "!=", "<=", ">=", "=",
              "<", ">")
_CONDITION = re.compile(r"^([a-z_][a-z0-9_.]*)(%s)(.*)$" % "|".join(re.escape(o) for o in _OPERATORS),
                        re.DOTALL)

Condition = namedtuple("Condition", "path ftype op value")


def _compare_key(ftype, value):
    """Sort/compare key of a raw value: numbers numerically for integer and choice fields,
    everything else (dates included, "YYYY-MM-DD HH:MM:SS") as strings; empty sorts first."""
    if value == "":
        return (0, 0, "")
    if ftype in NUMERIC_TYPES and re.fullmatch(r"-?\d+", value):
        return (1, int(value), "")
    return (2, 0, value)


class Query:
    """A parsed sysparm_query.

    Grammar: groups separated by ^NQ are OR'd; within a group, conditions separated by ^ are
    AND'd; a condition written ^OR<cond> is OR'd with the condition before it (so a^ORb^c means
    (a OR b) AND c). ORDERBY<field> and ORDERBYDESC<field> may appear anywhere. A condition on an
    unknown field, with an unknown operator or an unknown javascript: value is invalid and ignored,
    as the real instance does; `invalid` records that one was seen (for strict mode)."""

    def __init__(self, text, store, table, caller_sys_id):
        self.store = store
        self.table = table
        self.groups = []
        self.order = []
        self.invalid = False
        for part in (text or "").split("^NQ"):
            group = []
            for token in part.split("^"):
                self._add_token(token, group, caller_sys_id)
            self.groups.append([clause for clause in group if clause])

    def _add_token(self, token, group, caller_sys_id):
        """Parse one ^-separated token into group (a list of OR-clauses)."""
        if token in ("", "EQ"):
            return
        for prefix, desc in (("ORDERBYDESC", True), ("ORDERBY", False)):
            if token.startswith(prefix):
                path = token[len(prefix):]
                if self.store.resolve_path(self.table, path):
                    self.order.append((path, desc))
                else:
                    self.invalid = True
                return
        is_or = token.startswith("OR") and bool(group)
        cond = self._parse_condition(token[2:] if is_or else token, caller_sys_id)
        if cond is None:
            self.invalid = True
            if not is_or:
                group.append([])
            return
        if is_or:
            group[-1].append(cond)
        else:
            group.append([cond])

    def _parse_condition(self, text, caller_sys_id):
        """Return a Condition, or None when text is not a valid condition on this table."""
        m = _CONDITION.match(text)
        if not m:
            return None
        path, op, value = m.groups()
        field = self.store.resolve_path(self.table, path)
        if field is None:
            return None
        if op == "BETWEEN":
            bounds = value.split("@")
            if len(bounds) != 2:
                return None
            value = [self._literal(b, caller_sys_id) for b in bounds]
            if None in value:
                return None
        elif op in ("IN", "NOT IN"):
            value = value.split(",")
        elif op in ("SAMEAS", "NSAMEAS"):
            if self.store.resolve_path(self.table, value) is None:
                return None
        else:
            value = self._literal(value, caller_sys_id)
            if value is None:
                return None
        return Condition(path, field.type, op, value)

    def _literal(self, value, caller_sys_id):
        """A query value with javascript: helpers evaluated (None when unknown)."""
        if value.startswith("javascript:"):
            return eval_javascript(value, self.store.clock, caller_sys_id)
        return value

    def _test(self, cond, rec):
        """Whether rec satisfies one condition."""
        v = self.store.path_value(self.table, rec, cond.path)
        op, want = cond.op, cond.value
        if op == "=":
            return v == want
        if op == "!=":
            return v != want
        if op in ("LIKE", "NOT LIKE"):
            return (want.lower() in v.lower()) == (op == "LIKE")
        if op == "STARTSWITH":
            return v.lower().startswith(want.lower())
        if op == "ENDSWITH":
            return v.lower().endswith(want.lower())
        if op in ("IN", "NOT IN"):
            return (v in want) == (op == "IN")
        if op in ("ISEMPTY", "EMPTYSTRING"):
            return v == ""
        if op == "ISNOTEMPTY":
            return v != ""
        if op == "ANYTHING":
            return True
        if op in ("SAMEAS", "NSAMEAS"):
            return (v == self.store.path_value(self.table, rec, want)) == (op == "SAMEAS")
        if v == "":  # SQL: NULL compares false with every ordering operator
            return False
        key = _compare_key(cond.ftype, v)
        if op == "BETWEEN":
            return _compare_key(cond.ftype, want[0]) <= key <= _compare_key(cond.ftype, want[1])
        other = _compare_key(cond.ftype, want)
        return {"<": key < other, "<=": key <= other, ">": key > other, ">=": key >= other}[op]

    def matches(self, rec):
        """Whether rec satisfies the whole query (an empty query matches everything)."""
        return any(all(any(self._test(c, rec) for c in clause) for clause in group)
                   for group in self.groups)

    def sort(self, rows):
        """Sort rows in place by the ORDERBY terms (stable: ties keep insertion order)."""
        for path, desc in reversed(self.order):
            ftype = self.store.resolve_path(self.table, path).type
            rows.sort(key=lambda r: _compare_key(ftype, self.store.path_value(self.table, r, path)),
                      reverse=desc)


# --------------------------------------------------------------------------------------------
# Store


def new_sys_id():
    """A fresh 32-hex-digit sys_id."""
    return secrets.token_hex(16)


def user_sys_id(user_name):
    """The sys_id of a configured user: admin's well-known one, else derived from the name so that
    it is stable across restarts even without a state file."""
    if user_name == "admin":
        return ADMIN_SYS_ID
    return hashlib.md5(("sys_user:" + user_name).encode()).hexdigest()


def to_string(value):
    """Coerce a JSON input value to the string ServiceNow stores: booleans as true/false, null as
    empty, a {"value": …} object as its value, lists comma-joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return to_string(value.get("value", ""))
    if isinstance(value, list):
        return ",".join(to_string(v) for v in value)
    return str(value)


Caller = namedtuple("Caller", "user_name sys_id")

_SYS_ID_NAME = re.compile(r"^[0-9a-f]{32}$")


class ContentStore:
    """Attachment contents on disk: one file per attachment, named by its sys_id, in directory.

    Without a directory, a temporary one is made on first use and removed by close(). An upload
    is written to a hidden temporary file (".upload-*") in the same directory and renamed to its
    sys_id when it is stored, so a half-received file never shows."""

    def __init__(self, directory=None):
        self.lock = threading.Lock()
        self.directory = directory
        self.temporary = directory is None
        if directory and os.path.isdir(directory):
            for name in os.listdir(directory):  # uploads cut short by a crash or a kill
                if name.startswith(".upload-"):
                    os.unlink(os.path.join(directory, name))

    def _dir(self):
        """The directory, created when missing."""
        with self.lock:
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="snemu-files-")
            os.makedirs(self.directory, exist_ok=True)
            return self.directory

    def path(self, sys_id):
        """Where the content of attachment sys_id is (or would be)."""
        return os.path.join(self._dir(), sys_id)

    def new_upload(self):
        """A fresh temporary file for an upload: (binary file object, its path)."""
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self._dir())
        return os.fdopen(fd, "wb"), tmp

    def commit(self, tmp, sys_id):
        """Give an uploaded temporary file its final name."""
        os.replace(tmp, self.path(sys_id))

    def remove(self, sys_id):
        """Delete the content of attachment sys_id (nothing when absent)."""
        try:
            os.unlink(self.path(sys_id))
        except FileNotFoundError:
            pass

    def clear(self):
        """Delete every stored content (uploads in progress are left alone)."""
        for name in os.listdir(self._dir()):
            if _SYS_ID_NAME.match(name):
                self.remove(name)

    def close(self):
        """Remove the directory if it is a temporary one."""
        with self.lock:
            if self.temporary and self.directory:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None


class Store:
    """All records, the business rules and the state file. Thread-safe: every public method takes
    the store lock. Records are dicts of field -> string; tables are dicts sys_id -> record in
    insertion order."""

    def __init__(self, clock, state_file=None, inactive_states=("7", "8")):
        self.lock = threading.RLock()
        self.clock = clock
        self.state_file = state_file
        self.inactive_states = tuple(inactive_states)
        self.tables = {name: {} for name in TABLES}
        self.next_number = FIRST_NUMBER
        self.credentials = {}      # user_name -> password
        self.tokens = {"access": {}, "refresh": {}}  # see Auth
        self.files = ContentStore(state_file + ".files" if state_file else None)
        if state_file and os.path.exists(state_file):
            self._load()

    # -- persistence

    def _load(self):
        """Read the state file written by save()."""
        with open(self.state_file, encoding="utf-8") as f:
            data = json.load(f)
        for name in TABLES:
            self.tables[name] = {r["sys_id"]: r for r in data.get("tables", {}).get(name, [])}
        self.next_number = data.get("next_number", FIRST_NUMBER)
        self.credentials = data.get("credentials", {})
        self.tokens = data.get("tokens", self.tokens)

    def save(self):
        """Write the whole state to the state file atomically (temp file, fsync, rename); no-op
        without a state file."""
        if not self.state_file:
            return
        with self.lock:
            data = {"format": "snemu-state-1", "next_number": self.next_number,
                    "tables": {n: list(t.values()) for n, t in self.tables.items()},
                    "credentials": self.credentials, "tokens": self.tokens}
            directory = os.path.dirname(os.path.abspath(self.state_file))
            fd, tmp = tempfile.mkstemp(prefix=".snemu-state-", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.state_file)
            except BaseException:
                os.unlink(tmp)
                raise

    # -- users

    def upsert_user(self, user_name, password=None, full_name=None):
        """Create the sys_user record of user_name or update its full name; set its password when
        given (a user without a password cannot log in). Returns the sys_user record."""
        with self.lock:
            sid = user_sys_id(user_name)
            rec = self.tables["sys_user"].get(sid)
            now = self.clock.stamp()
            if rec is None:
                rec = self._defaults("sys_user")
                rec.update({"sys_id": sid, "user_name": user_name, "name": full_name or user_name,
                            "email": user_name + "@example.com", "sys_created_on": now,
                            "sys_created_by": "system", "sys_updated_on": now, "sys_updated_by": "system"})
                self.tables["sys_user"][sid] = rec
            elif full_name and rec["name"] != full_name:
                rec.update({"name": full_name, "sys_updated_on": now,
                            "sys_mod_count": str(int(rec["sys_mod_count"]) + 1)})
            first, _, last = rec["name"].partition(" ")
            rec["first_name"], rec["last_name"] = first, last
            if password is not None:
                self.credentials[user_name] = password
            self.save()
            return dict(rec)

    def caller(self, user_name):
        """The Caller (user_name, sys_id) for an authenticated user name."""
        return Caller(user_name, user_sys_id(user_name))

    def full_name(self, user_name):
        """The display name of the user called user_name (the name itself if unknown)."""
        with self.lock:
            for rec in self.tables["sys_user"].values():
                if rec["user_name"] == user_name:
                    return rec["name"] or user_name
            return user_name

    # -- field paths

    def resolve_path(self, table, path):
        """The Field a (possibly dot-walked) path such as caller_id.user_name ends at on table, or
        None when any step is unknown."""
        fields = TABLES[table].fields
        head, _, rest = path.partition(".")
        field = fields.get(head)
        if field is None or not rest:
            return field
        if field.type != "reference" or field.ref not in TABLES:
            return None
        return self.resolve_path(field.ref, rest)

    def path_value(self, table, rec, path):
        """The raw value at a dot-walked path from rec ("" when a reference is empty or dangling).
        The path must be valid (see resolve_path)."""
        head, _, rest = path.partition(".")
        value = rec.get(head, "")
        if not rest:
            return value
        target = self.tables[TABLES[table].fields[head].ref].get(value)
        return self.path_value(TABLES[table].fields[head].ref, target, rest) if target else ""

    # -- reads

    def get(self, table, sys_id):
        """A copy of one record, or raise the 404."""
        with self.lock:
            rec = self.tables[table].get(sys_id)
            if rec is None:
                raise not_found()
            return dict(rec)

    def select(self, table, query):
        """Copies of the records of table matching query (a Query), sorted by its ORDERBY terms."""
        with self.lock:
            rows = [dict(r) for r in self.tables[table].values() if query.matches(r)]
            query.sort(rows)
            return rows

    def journal_text(self, rec_sys_id, elements):
        """The display value of a journal field: the entries of rec_sys_id whose element is in
        elements, newest first, each "<time> - <full name> (<label>)\\n<text>\\n\\n"."""
        with self.lock:
            entries = [(i, e) for i, e in enumerate(self.tables["sys_journal_field"].values())
                       if e["element_id"] == rec_sys_id and e["element"] in elements]
            entries.sort(key=lambda p: (p[1]["sys_created_on"], p[0]), reverse=True)
            return "".join("%s - %s (%s)\n%s\n\n" % (e["sys_created_on"], self.full_name(e["sys_created_by"]),
                                                     JOURNAL_LABELS[e["element"]], e["value"])
                           for _, e in entries)

    def display_of(self, field, value):
        """The display value of a raw value of a Field: a reference shows the referenced record's
        display field ("" when dangling; the value itself for tables not emulated)."""
        if field.type == "reference":
            target = self.tables.get(field.ref, {}).get(value)
            if target is None:
                return value if field.ref not in TABLES else ""
            return target[TABLES[field.ref].display_field]
        return value

    # -- writes

    def _defaults(self, table):
        """A new record of table holding every field's default."""
        return {name: f.default for name, f in TABLES[table].fields.items()}

    def _resolve_reference(self, field, value):
        """A reference written as a user_name or display name becomes that user's sys_id."""
        if field.type != "reference" or field.ref != "sys_user" or value in self.tables["sys_user"]:
            return value
        for rec in self.tables["sys_user"].values():
            if value in (rec["user_name"], rec["name"]):
                return rec["sys_id"]
        return value

    def write(self, table, sys_id, body, caller, mandatory=()):
        """Insert (sys_id None) or update a record from a client body (dict of field -> JSON
        value) on behalf of caller, applying the business rules and data policy; mandatory names
        incident fields an extra data policy (the data_policy fault) requires non-blank. Returns a
        copy of the stored record. Raises ApiError 403 for read-only tables and data-policy
        refusals (nothing stored), 404 for an unknown sys_id."""
        spec = TABLES[table]
        with self.lock:
            if spec.read_only:
                raise acl_denied("Insert" if sys_id is None else "Update")
            old = None
            if sys_id is not None:
                old = self.tables[table].get(sys_id)
                if old is None:
                    raise not_found()
            rec = dict(old) if old else self._defaults(table)
            journal = []
            written = set()
            for name, raw in body.items():
                field = spec.fields.get(name)
                if field is None or name.startswith("sys_") or name in spec.computed:
                    continue  # unknown fields and server-maintained ones are ignored silently
                value = to_string(raw)
                if field.type == "journal":
                    if value.strip():
                        journal.append((name, value))
                    continue
                if field.type == "choice" and value == "":
                    continue  # an empty value does not clear a choice field
                rec[name] = self._resolve_reference(field, value)
                written.add(name)
            now = self.clock.stamp()
            if table == "incident":
                self._incident_rules(old, rec, written, caller, now)
                self._data_policy(rec, mandatory)
            if old is not None and rec == old and not journal:
                return dict(old)  # nothing changed: no update, as the real instance
            if old is None:
                rec.update({"sys_id": new_sys_id(), "sys_created_on": now,
                            "sys_created_by": caller.user_name, "sys_mod_count": "0"})
                if table == "incident":
                    self._number(rec, caller, now)
            else:
                rec["sys_mod_count"] = str(int(rec["sys_mod_count"]) + 1)
            rec.update({"sys_updated_on": now, "sys_updated_by": caller.user_name})
            self.tables[table][rec["sys_id"]] = rec
            for element, value in journal:
                self._append_journal(table, rec["sys_id"], element, value, caller, now)
            self.save()
            return dict(rec)

    def _number(self, rec, caller, now):
        """Give a new incident its number and opening fields."""
        rec["number"] = rec["task_effective_number"] = "INC%07d" % self.next_number
        self.next_number += 1
        rec["opened_at"] = rec["opened_at"] or now
        rec["opened_by"] = rec["opened_by"] or caller.sys_id

    def _incident_rules(self, old, rec, written, caller, now):
        """The incident business rules: incident_state mirrors state, priority follows impact x
        urgency, active follows state, resolved_/closed_ at and by are stamped."""
        if "incident_state" in written and "state" not in written:
            rec["state"] = rec["incident_state"]
        rec["incident_state"] = rec["state"]
        rec["priority"] = priority_of(rec["impact"], rec["urgency"]) or rec["priority"]
        rec["active"] = "false" if rec["state"] in self.inactive_states else "true"
        old_state = old["state"] if old else None
        if rec["state"] != old_state:
            if rec["state"] in RESOLVED_STATES:
                rec["resolved_at"] = rec["resolved_at"] or now
                rec["resolved_by"] = rec["resolved_by"] or caller.sys_id
            if rec["state"] == "7":
                rec["closed_at"] = rec["closed_at"] or now
                rec["closed_by"] = rec["closed_by"] or caller.sys_id
            if old_state in RESOLVED_STATES and rec["state"] not in RESOLVED_STATES + ("8",):
                rec["reopen_count"] = str(int(rec["reopen_count"]) + 1)

    @staticmethod
    def _data_policy(rec, mandatory):
        """The incident data policies: a resolved or closed incident needs close_code and
        close_notes (built in), and every field in mandatory must be non-blank. Raises the
        documented 403 naming every missing field by its label, built-in ones first."""
        required = [name for name, _ in DATA_POLICY_LABELS] if rec["state"] in RESOLVED_STATES else []
        required += [name for name in mandatory if name not in required]
        missing = [field_label(name) for name in required if not rec[name].strip()]
        if missing:
            raise ApiError(403, "Operation Failed", "Data Policy Exception: \n\tThe following fields "
                           "are mandatory: " + ", ".join(missing))

    def _append_journal(self, table, element_id, element, value, caller, now):
        """Store one journal entry (a sys_journal_field row)."""
        sid = new_sys_id()
        self.tables["sys_journal_field"][sid] = {
            "sys_id": sid, "element_id": element_id, "name": table, "element": element,
            "value": value, "sys_created_on": now, "sys_created_by": caller.user_name}

    def delete(self, table, sys_id):
        """Delete one record (403 on read-only tables, 404 when absent). Journal entries of a
        deleted incident stay in sys_journal_field."""
        with self.lock:
            if TABLES[table].read_only:
                raise acl_denied("Delete")
            if self.tables[table].pop(sys_id, None) is None:
                raise not_found()
            self.save()

    def wipe(self):
        """Delete every incident, journal entry and attachment (with its content); users and
        tokens stay; numbering restarts."""
        with self.lock:
            self.tables["incident"].clear()
            self.tables["sys_journal_field"].clear()
            self.tables["sys_attachment"].clear()
            self.files.clear()
            self.next_number = FIRST_NUMBER
            self.save()

    # -- attachments

    def exists(self, table, sys_id):
        """Whether table holds a record sys_id."""
        with self.lock:
            return sys_id in self.tables[table]

    def add_attachment(self, tmp, fields, caller):
        """Store an uploaded attachment: tmp is its content (a ContentStore upload), fields the
        metadata the upload determines (sys_id, file_name, content_type, size_bytes, hash,
        table_name, table_sys_id, download_link). The parent record is not touched. Raises the 404 (and drops
        tmp) when the parent went away meanwhile. Returns a copy of the sys_attachment record."""
        with self.lock:
            if not self.exists(fields["table_name"], fields["table_sys_id"]):
                os.unlink(tmp)
                raise not_found()
            now = self.clock.stamp()
            full_name = self.full_name(caller.user_name)
            rec = self._defaults("sys_attachment")
            rec.update(fields)
            rec.update({"sys_created_on": now, "sys_created_by": caller.user_name,
                        "created_by_name": full_name, "sys_updated_on": now,
                        "sys_updated_by": caller.user_name, "updated_by_name": full_name})
            self.files.commit(tmp, rec["sys_id"])
            self.tables["sys_attachment"][rec["sys_id"]] = rec
            self.save()
            return dict(rec)

    def rename_attachment(self, sys_id, file_name, caller):
        """Change an attachment's file_name (the 404 when absent); sys_updated_* and sys_mod_count
        move when the name changes."""
        with self.lock:
            rec = self.tables["sys_attachment"].get(sys_id)
            if rec is None:
                raise not_found()
            if rec["file_name"] != file_name:
                rec.update({"file_name": file_name, "sys_updated_on": self.clock.stamp(),
                            "sys_updated_by": caller.user_name,
                            "updated_by_name": self.full_name(caller.user_name),
                            "sys_mod_count": str(int(rec["sys_mod_count"]) + 1)})
                self.save()

    def delete_attachment(self, sys_id):
        """Delete an attachment and its content (the 404 when absent)."""
        with self.lock:
            if self.tables["sys_attachment"].pop(sys_id, None) is None:
                raise not_found()
            self.files.remove(sys_id)
            self.save()


# --------------------------------------------------------------------------------------------
# Authentication


class Auth:
    """Basic credentials and OAuth tokens, kept in the store (so they survive a restart).

    store.tokens["access"][token] = {"user", "client", "expires"}; store.tokens["refresh"][token] =
    {"user", "client", "expires", "access"} where "access" is the latest access token issued for it."""

    def __init__(self, store, clients, token_ttl):
        self.store = store
        self.clients = dict(clients)   # client_id -> (secret, client_credentials user or None)
        self.token_ttl = token_ttl

    def identify(self, authorization):
        """The user name an Authorization header proves, or None (missing, malformed, wrong
        password, unknown or expired token)."""
        scheme, _, cred = (authorization or "").strip().partition(" ")
        scheme = scheme.lower()
        with self.store.lock:
            if scheme == "basic":
                try:
                    user, _, password = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
                except (ValueError, UnicodeDecodeError):
                    return None
                ok = user in self.store.credentials and secrets.compare_digest(
                    self.store.credentials[user].encode(), password.encode())
                return user if ok else None
            if scheme == "bearer":
                tok = self.store.tokens["access"].get(cred.strip())
                if tok and tok["expires"] > self.store.clock.epoch():
                    return tok["user"]
        return None

    def _issue_access(self, user, client):
        """Create an access token; returns (token, expires_in)."""
        token = secrets.token_urlsafe(64)[:86]
        self.store.tokens["access"][token] = {"user": user, "client": client,
                                              "expires": self.store.clock.epoch() + self.token_ttl}
        return token, self.token_ttl

    def token_request(self, form):
        """Serve POST /oauth_token.do for a parsed form (dict). Returns (status, JSON object):
        200 with scope/token_type/expires_in/access_token[/refresh_token], or 401
        {"error_description":"access_denied","error":"server_error"}."""
        denied = (401, {"error_description": "access_denied", "error": "server_error"})
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(client[0].encode(),
                                                        form.get("client_secret", "").encode()):
            return denied
        grant = form.get("grant_type", "")
        now = self.store.clock.epoch()
        with self.store.lock:
            body = {"scope": "useraccount", "token_type": "Bearer"}
            if grant == "password" or (grant == "client_credentials" and client[1]):
                if grant == "password":
                    user = form.get("username", "")
                    pw = self.store.credentials.get(user)
                    if pw is None or not secrets.compare_digest(pw.encode(), form.get("password", "").encode()):
                        return denied
                else:
                    user = client[1]
                access, ttl = self._issue_access(user, form["client_id"])
                body.update(access_token=access, expires_in=ttl)
                if grant == "password":
                    refresh = secrets.token_urlsafe(64)[:86]
                    self.store.tokens["refresh"][refresh] = {"user": user, "client": form["client_id"],
                                                             "expires": now + REFRESH_TTL, "access": access}
                    body["refresh_token"] = refresh
            elif grant == "refresh_token":
                ref = self.store.tokens["refresh"].get(form.get("refresh_token", ""))
                if ref is None or ref["client"] != form["client_id"] or ref["expires"] <= now:
                    return denied
                current = self.store.tokens["access"].get(ref["access"])
                if current and current["expires"] > now:  # within its lifetime: the same token
                    body.update(access_token=ref["access"], expires_in=int(current["expires"] - now))
                else:
                    ref["access"], ttl = self._issue_access(ref["user"], form["client_id"])
                    body.update(access_token=ref["access"], expires_in=ttl)
            else:
                return denied
            self._expire(now)
            self.store.save()
        return 200, body

    def _expire(self, now):
        """Forget expired tokens so the state does not grow without bound."""
        for kind in ("access", "refresh"):
            table = self.store.tokens[kind]
            for token in [t for t, v in table.items() if v["expires"] <= now]:
                del table[token]


# --------------------------------------------------------------------------------------------
# Faults and the request log


def int_member(obj, key, low, high=None):
    """obj[key] (obj a decoded JSON object) as an int in [low, high]; ValueError naming the key
    otherwise."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
        raise ValueError("%s must be an integer >= %d%s" % (key, low, " and <= %d" % high if high else ""))
    return value


class Faults:
    """Injected faults. Thread-safe. The fault keys and their JSON forms are the control API's:
    rate_limit {"count","retry_after"[,"limit"]}|null, fail_next {"count","status"[,"method"]}|null,
    lose_answer {"count"[,"method"][,"user"]}|null, latency_ms int, hibernate bool, journal_acl bool,
    short_pages int, data_policy {"mandatory":[field,…]}|null, and the instance's attachment rules
    attachment_extensions "ext,ext"|null, attachment_max_bytes int, attachment_acl [user,…]|null."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        """Clear every fault."""
        with self.lock:
            self.rate_limit = None
            self.fail_next = None
            self.lose_answer = None
            self.latency_ms = 0
            self.hibernate = False
            self.journal_acl = False
            self.short_pages = 0
            self.data_policy = None
            self.attachment_extensions = None   # tuple of lower-case extensions; None: all allowed
            self.attachment_max_bytes = ATTACHMENT_MAX_BYTES
            self.attachment_acl = None          # tuple of user names refused on sys_attachment

    def snapshot(self):
        """The current fault state as the JSON object GET /__snemu/faults returns."""
        with self.lock:
            return {"rate_limit": dict(self.rate_limit) if self.rate_limit else None,
                    "fail_next": dict(self.fail_next) if self.fail_next else None,
                    "lose_answer": dict(self.lose_answer) if self.lose_answer else None,
                    "latency_ms": self.latency_ms, "hibernate": self.hibernate,
                    "journal_acl": self.journal_acl, "short_pages": self.short_pages,
                    "data_policy": {"mandatory": list(self.data_policy)} if self.data_policy else None,
                    "attachment_extensions": ",".join(self.attachment_extensions)
                    if self.attachment_extensions else None,
                    "attachment_max_bytes": self.attachment_max_bytes,
                    "attachment_acl": list(self.attachment_acl) if self.attachment_acl else None}

    def update(self, obj):
        """Apply a POST /__snemu/faults object: keys present are set, absent ones unchanged.
        Validates everything first; raises ValueError (nothing changed) on a bad key or value."""
        if not isinstance(obj, dict):
            raise ValueError("the body must be a JSON object")
        new = {}
        for key, value in obj.items():
            if key == "rate_limit":
                new[key] = None if value is None else {
                    "count": int_member(value, "count", 0), "retry_after": int_member(value, "retry_after", 0),
                    "limit": int_member(value, "limit", 1) if "limit" in value else 100}
            elif key == "fail_next":
                new[key] = None if value is None else {
                    "count": int_member(value, "count", 0), "status": int_member(value, "status", 400, 599)}
                if value is not None and "method" in value:
                    if value["method"] not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                        raise ValueError("fail_next method must be GET, POST, PUT, PATCH or DELETE")
                    new[key]["method"] = value["method"]
            elif key == "lose_answer":
                new[key] = None if value is None else {"count": int_member(value, "count", 0)}
                if value is not None and "method" in value:
                    if value["method"] not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                        raise ValueError("lose_answer method must be GET, POST, PUT, PATCH or DELETE")
                    new[key]["method"] = value["method"]
                if value is not None and "user" in value:
                    if not isinstance(value["user"], str) or not value["user"]:
                        raise ValueError("lose_answer user must be a user name")
                    new[key]["user"] = value["user"]
            elif key in ("latency_ms", "short_pages"):
                new[key] = int_member(obj, key, 0)
            elif key in ("hibernate", "journal_acl"):
                if not isinstance(value, bool):
                    raise ValueError("%s must be true or false" % key)
                new[key] = value
            elif key == "data_policy":
                new[key] = None if value is None else self._mandatory_fields(value)
            elif key == "attachment_extensions":
                new[key] = None if value is None else self._extensions(value)
            elif key == "attachment_max_bytes":
                new[key] = int_member(obj, key, 0)
            elif key == "attachment_acl":
                new[key] = None if value is None else self._user_names(value)
            else:
                raise ValueError("unknown fault %r" % key)
        with self.lock:
            for key, value in new.items():
                if isinstance(value, dict) and value["count"] == 0:
                    value = None
                setattr(self, key, value)

    @staticmethod
    def _mandatory_fields(value):
        """Validate a data_policy fault {"mandatory": [field, …]}: returns the tuple of fields
        (duplicates dropped, order kept; empty means no policy). Each must be an incident field a
        client can write and read back (not sys_*, computed or journal); ValueError otherwise."""
        names = value.get("mandatory") if isinstance(value, dict) else None
        if set(value if isinstance(value, dict) else ()) - {"mandatory"} or not isinstance(names, list):
            raise ValueError('data_policy must be {"mandatory": [field, ...]} or null')
        spec = TABLES["incident"]
        for name in names:
            field = spec.fields.get(name) if isinstance(name, str) else None
            if (field is None or name.startswith("sys_") or name in spec.computed
                    or field.type in ("journal", "journal_list")):
                raise ValueError("data_policy: %r is not a writable incident field" % (name,))
        return tuple(dict.fromkeys(names)) or None

    @staticmethod
    def _extensions(value):
        """Validate attachment_extensions, a comma list like glide.attachment.extensions
        ("pdf,txt", no dots): returns the tuple of lower-case extensions (blanks around commas and
        empty items dropped; empty means every extension is allowed, None); ValueError otherwise."""
        if not isinstance(value, str):
            raise ValueError('attachment_extensions must be a string like "pdf,txt" or null')
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
        for item in items:
            if not re.fullmatch(r"[^.\s/\\]+", item):
                raise ValueError("attachment_extensions: %r is not an extension without a dot" % item)
        return tuple(dict.fromkeys(items)) or None

    @staticmethod
    def _user_names(value):
        """Validate attachment_acl, a list of user names: returns the tuple (duplicates dropped;
        empty is None); ValueError otherwise."""
        if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
            raise ValueError('attachment_acl must be a list of user names or null')
        return tuple(dict.fromkeys(value)) or None

    def mandatory_fields(self):
        """The incident fields the data_policy fault requires (an empty tuple when none)."""
        with self.lock:
            return self.data_policy or ()

    def _take(self, name, method=None, user=None):
        """Consume one use of a counted fault; returns its settings or None. A fault limited to
        one method (or one user) is neither used nor consumed by a request of another."""
        with self.lock:
            fault = getattr(self, name)
            if not fault or fault.get("method", method) != method or fault.get("user", user) != user:
                return None
            fault["count"] -= 1
            if fault["count"] <= 0:
                setattr(self, name, None)
            return dict(fault)

    def take_rate_limit(self):
        """Consume one rate-limited request: its settings, or None when not rate-limited."""
        return self._take("rate_limit")

    def take_failure(self, method=None):
        """Consume one injected failure of a request with this method: its settings, or None."""
        return self._take("fail_next", method)

    def take_lost_answer(self, method=None, user=None):
        """Consume one lost answer of a request with this method by this user: its settings, or
        None."""
        return self._take("lose_answer", method, user)


class RequestLog:
    """Every non-control request, numbered from 1 (numbers keep rising after a clear)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []
        self.seq = 0

    def add(self, method, path, query, status, user, rows=0, lost=False):
        """Record one request: rows is the number of records a list answer held; lost marks a
        request carried out whose answer was never sent (the lose_answer fault)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        with self.lock:
            self.seq += 1
            self.entries.append({"seq": self.seq, "time": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                                 "method": method, "path": path, "query": query,
                                 "status": status, "user": user or "", "rows": rows, "lost": lost})
            del self.entries[:-LOG_CAP]

    def list(self):
        """A copy of the entries, oldest first."""
        with self.lock:
            return list(self.entries)

    def clear(self):
        """Forget every entry."""
        with self.lock:
            self.entries.clear()


# --------------------------------------------------------------------------------------------
# HTTP


class Request:
    """One parsed HTTP request: method (after X-HTTP-Method-Override), path, raw query string,
    params (first value of each name, in order), headers, body bytes, base URL and the
    authenticated user name (None until identified)."""

    def __init__(self, handler, body):
        url = urlsplit(handler.path)
        self.method = handler.command
        override = handler.headers.get("X-HTTP-Method-Override")
        if override and self.method == "POST":
            self.method = override.upper()
        self.path = url.path
        self.query = url.query
        self.params = {}
        for k, v in parse_qsl(url.query, keep_blank_values=True):
            self.params.setdefault(k, v)
        self.headers = handler.headers
        self.body = body
        host = handler.headers.get("Host") or "127.0.0.1:%d" % handler.server.server_address[1]
        self.base = "http://" + host
        self.user = None

    def flag(self, name):
        """A boolean sysparm (true when "true", case-insensitive)."""
        return self.params.get(name, "").lower() == "true"

    def json_body(self):
        """The request body as one JSON object: {} when empty, the first element of an array (the
        rest is ignored, as the real API does). Raises the 400 on bad JSON."""
        if not self.body.strip():
            return {}
        try:
            obj = json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Exception while reading request", "The payload is not valid JSON.")
        if isinstance(obj, list):
            obj = obj[0] if obj else {}
        if not isinstance(obj, dict):
            raise ApiError(400, "Exception while reading request", "The payload must be a JSON object.")
        return obj


class BodyStream:
    """A request body read from the socket bit by bit (an attachment upload), never whole:
    Content-Length or chunked. length is the declared length (None when chunked)."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length = None if self.chunked else int(headers.get("Content-Length") or 0)
        if self.length is not None and self.length < 0:
            raise ValueError("negative Content-Length")
        self.left = self.length or 0  # bytes left in the body, or in the current chunk
        self.done = not self.chunked and self.left == 0

    def readinto(self, buf):
        """Read the next bytes of the body into buf (a memoryview); 0 at its end. Raises EOFError
        when the client stops sending early, ValueError on a malformed chunk."""
        if self.done:
            return 0
        if self.left == 0:  # chunked: the next chunk
            self.left = self._chunk_size()
            if self.left == 0:
                self.done = True
                return 0
        n = self.rfile.readinto(buf[:min(len(buf), self.left)])
        if not n:
            raise EOFError("the request body ended early")
        self.left -= n
        if self.left == 0:
            if self.chunked:
                self.rfile.readline(64)  # the CRLF after a chunk's data
            else:
                self.done = True
        return n

    def _chunk_size(self):
        """Read a chunk-size line (and the trailers after the last chunk); returns the size."""
        line = self.rfile.readline(1024)
        if not line:
            raise EOFError("the request body ended early")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while self.rfile.readline(65537).strip():
                pass
        return size

    def drain(self):
        """Read and discard what is left of the body, so the connection can serve the next request."""
        buf = memoryview(bytearray(min(BLOCK, 65536)))
        while self.readinto(buf):
            pass


class FileBody:
    """A response body streamed from a file in blocks: length bytes from offset. The file is
    opened at once, so a deletion meanwhile does not cut the answer."""

    def __init__(self, path, offset, length):
        self.file = open(path, "rb")
        self.file.seek(offset)
        self.length = length

    def write_to(self, wfile):
        """Send the bytes; returns how many went (fewer only when the file shrank)."""
        buf = memoryview(bytearray(min(BLOCK, max(self.length, 1))))
        sent = 0
        while sent < self.length:
            n = self.file.readinto(buf[:min(len(buf), self.length - sent)])
            if not n:
                break
            wfile.write(buf[:n])
            sent += n
        return sent

    def close(self):
        self.file.close()


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def byte_range(header, size):
    """The (first, last) byte positions a Range header asks of a size-byte file: bytes=N-,
    bytes=N-M (M clamped to the end) or bytes=-N (the last N). None, meaning the whole file, when
    there is no header, it is malformed or holds several ranges, or the file is empty. Raises the
    416 when the range starts at or past the end."""
    m = _RANGE.match(header or "")
    if not m or size == 0 or not (m.group(1) or m.group(2)):
        return None
    if m.group(1):
        first = int(m.group(1))
        if m.group(2) and int(m.group(2)) < first:
            return None
        last = int(m.group(2)) if m.group(2) else size - 1
    else:  # bytes=-N: the last N bytes
        suffix = int(m.group(2))
        first, last = (max(0, size - suffix) if suffix else size), size - 1
    if first >= size:
        raise ApiError(416, "Requested range not satisfiable",
                       "Range %s of a %d-byte file" % (header.strip(), size), [("Content-Range", "bytes */%d" % size)])
    return first, min(last, size - 1)


def content_disposition(name):
    """Content-Disposition of a download: attachment;filename="<name>";filename*=UTF-8''<name
    percent-encoded>. The quoted form carries the name's UTF-8 bytes as they are (quotes and
    backslashes escaped, control characters as "_"), as a servlet that pastes the name does."""
    plain = re.sub(r"[\x00-\x1f\x7f]", "_", name).replace("\\", "\\\\").replace('"', '\\"')
    return "attachment;filename=\"%s\";filename*=UTF-8''%s" % (
        plain.encode("utf-8").decode("latin-1"), quote(name, safe=""))


_TABLE_ROUTE = re.compile(r"^/api/now/(?:(v1|v2)/)?table/([^/]+)(?:/([^/]+))?/?$")
_ATTACHMENT_ROUTE = re.compile(r"^/api/now/(?:v1/)?attachment(?:/([^/]+))?(/file)?/?$")
_UPLOAD_ROUTE = re.compile(r"^/api/now/(?:v1/)?attachment/file/?$")

COMMON_HEADERS = (("Cache-Control", "no-cache,no-store,must-revalidate,max-age=-1"),
                  ("Pragma", "no-store,no-cache"), ("Expires", "0"))


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning Emulator."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the
    # second waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def version_string(self):
        return "ServiceNow"

    def date_time_string(self, timestamp=None):
        """The Date header follows the emulated clock (POST /__snemu/clock), like the
        timestamps the instance writes, so a client bounding its polls by Date stays
        consistent with sys_updated_on."""
        if timestamp is None:
            timestamp = self.server.emulator.clock.epoch()
        return super().date_time_string(timestamp)

    def _dispatch(self):
        self.server.emulator.handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, fmt, *args):
        if self.server.emulator.verbose:
            sys.stderr.write("snemu: %s %s\n" % (self.address_string(), fmt % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _user_spec(spec):
    """Normalise a user given as "name:password[:Full Name]", a tuple or a dict to a tuple
    (name, password, full_name)."""
    if isinstance(spec, dict):
        return spec["name"], spec.get("password"), spec.get("full_name")
    if isinstance(spec, str):
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0]:
            raise ValueError("user must be NAME:PASSWORD[:Full Name], got %r" % spec)
        parts += [None] * (3 - len(parts))
        return tuple(parts)
    name, password, *rest = spec
    return name, password, rest[0] if rest else None


def _client_spec(spec):
    """Normalise an OAuth client "ID:SECRET[:USER]" or tuple to (id, (secret, user or None));
    USER enables the client_credentials grant acting as that user."""
    parts = spec.split(":", 2) if isinstance(spec, str) else list(spec)
    if len(parts) < 2 or not parts[0]:
        raise ValueError("OAuth client must be ID:SECRET[:USER], got %r" % (spec,))
    return parts[0], (parts[1], parts[2] if len(parts) > 2 else None)


class Emulator:
    """One emulated ServiceNow instance.

    Emulator(instance="dev12345", users=["admin:admin:System Administrator"]) then .start() returns
    the port it listens on (127.0.0.1); .stop() shuts it down. Options:
      oauth_clients       "ID:SECRET[:USER]" strings
      token_ttl           access-token lifetime in seconds (1800)
      state_file          JSON file loaded at start and rewritten atomically after every write
      faults              a dict as POST /__snemu/faults takes, applied at start
      resolved_inactive   state 6 also sets active=false (docs/servicenow-api.md §3: 7 and 8 only)
      strict_query        an invalid query part returns no rows (glide.invalid_query.returns_no_rows)
      negative_prev       rel="prev" is emitted on the first page with offset -limit (seen on PDIs)
      max_content_length  larger request bodies get the documented 400
    """

    def __init__(self, instance="snemu", users=(), oauth_clients=(), token_ttl=1800, state_file=None,
                 port=0, faults=None, resolved_inactive=False, strict_query=False, negative_prev=False,
                 max_content_length=MAX_CONTENT_LENGTH, verbose=False):
        self.instance = instance
        self.port = port
        self.verbose = verbose
        self.strict_query = strict_query
        self.negative_prev = negative_prev
        self.max_content_length = max_content_length
        self.clock = Clock()
        inactive = ("6", "7", "8") if resolved_inactive else ("7", "8")
        self.store = Store(self.clock, state_file, inactive)
        for spec in users:
            self.store.upsert_user(*_user_spec(spec))
        self.auth = Auth(self.store, [_client_spec(c) for c in oauth_clients], token_ttl)
        self.faults = Faults()
        if faults:
            self.faults.update(faults)
        self.log = RequestLog()
        self.server = None
        self.thread = None

    # -- lifecycle

    def bind(self):
        """Create the listening socket on 127.0.0.1 (port 0 picks a free one); returns the port."""
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.emulator = self
        self.port = self.server.server_address[1]
        return self.port

    def start(self):
        """Listen and serve in a background thread; returns the port."""
        self.bind()
        self.thread = threading.Thread(target=self.server.serve_forever, name="snemu", daemon=True)
        self.thread.start()
        return self.port

    def stop(self):
        """Stop serving and close the socket (idempotent)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        self.store.files.close()

    @property
    def base_url(self):
        """http://127.0.0.1:PORT"""
        return "http://127.0.0.1:%d" % self.port

    # -- request handling

    def _read_body(self, handler):
        """The request body (Content-Length or chunked). Raises the documented 400 when it is
        larger than max_content_length (the connection is then closed unread)."""
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        if length > self.max_content_length:
            handler.close_connection = True
            raise ApiError(400, "Exception while reading request",
                           "Rejected large REST payload with content-length = %d bytes. Max allowed: %d bytes."
                           % (length, self.max_content_length), [("Connection", "close")])
        return handler.rfile.read(length) if length > 0 else b""

    def handle(self, handler):
        """Serve one HTTP request: control requests directly, everything else through faults,
        auth and the API, logging it."""
        req = None
        stream = None
        try:
            if handler.command == "POST" and _UPLOAD_ROUTE.match(urlsplit(handler.path).path):
                try:
                    stream = BodyStream(handler.rfile, handler.headers)  # read while storing, not here
                except ValueError:
                    handler.close_connection = True
                    raise ApiError(400, "Exception while reading request", "Invalid Content-Length")
                body = b""
            else:
                body = self._read_body(handler)
            req = Request(handler, body)
            req.stream = stream
            if req.path.startswith("/__snemu/"):
                resp = self._control(req)
            else:
                resp = self._serve(req)
        except ApiError as e:
            resp = Response.json(e.status, e.body(), e.headers)
        except Exception as e:  # a bug in the emulator: answer 500 rather than hang the client
            resp = Response.json(500, {"error": {"message": "snemu internal error", "detail": repr(e)},
                                       "status": "failure"})
            if self.verbose:
                traceback.print_exc()
        try:
            self._finish_body(handler, stream)
            self._answer(handler, req, resp)
        finally:
            if resp.stream is not None:
                resp.stream.close()

    @staticmethod
    def _finish_body(handler, stream):
        """Read what is left of a streamed request body (a refused or failed upload), so that the
        client gets the answer and the connection stays usable; close it if the body is broken."""
        if stream is None:
            return
        try:
            stream.drain()
        except (EOFError, ValueError, OSError):
            handler.close_connection = True

    def _answer(self, handler, req, resp):
        """Log the request, then send resp, or close the connection unanswered (lose_answer)."""
        lost = (req is not None and req.path.startswith("/api/")
                and self.faults.take_lost_answer(req.method, req.user) is not None)
        if req is None or not req.path.startswith("/__snemu/"):
            path = req.path if req else urlsplit(handler.path).path
            self.log.add(handler.command, path, req.query if req else "", resp.status, req.user if req else None,
                         resp.rows, lost)
        if lost:
            # The request was carried out; the connection closes before any byte of the answer,
            # as when a load balancer drops a connection while the instance works.
            handler.close_connection = True
            return
        try:
            self._send(handler, resp)
        except OSError:  # the client went away (e.g. it stopped reading a download)
            handler.close_connection = True

    def _send(self, handler, resp):
        """Write resp, gzipped when the client accepts gzip (never a streamed file); HEAD gets the
        headers only."""
        body = resp.body
        headers = list(COMMON_HEADERS) + resp.headers
        accept = [t.split(";")[0].strip().lower() for t in handler.headers.get("Accept-Encoding", "").split(",")]
        if body and "gzip" in accept:
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        handler.send_response(resp.status)
        for name, value in headers:
            handler.send_header(name, value)
        if resp.status not in (204, 304):
            length = resp.stream.length if resp.stream is not None else len(body)
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        if handler.command == "HEAD" or resp.status in (204, 304):
            return
        if resp.stream is None:
            handler.wfile.write(body)
        elif resp.stream.write_to(handler.wfile) < resp.stream.length:
            handler.close_connection = True  # the file shrank: the client must not wait for more

    def _serve(self, req):
        """An instance request: latency, hibernation, rate limit and injected failures first,
        then /oauth_token.do, authentication and the Table API."""
        req.user = self.auth.identify(req.headers.get("Authorization"))
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000.0)
        if self.faults.hibernate:
            return Response.html(200, HIBERNATE_PAGE.format(instance=self.instance))
        if req.path.startswith("/api/"):
            fault = self._injected_fault(req.method)
            if fault:
                return fault
        if req.path == "/oauth_token.do":
            return self._oauth(req)
        if req.user is None:
            raise ApiError(401, "User Not Authenticated", "Required to provide Auth information",
                           [("WWW-Authenticate", 'BASIC realm="Service-now"')])
        m = _TABLE_ROUTE.match(req.path)
        a = _ATTACHMENT_ROUTE.match(req.path)
        if m:
            resp = self._table(req, m.group(1), m.group(2), m.group(3))
        elif a:
            resp = self._attachment(req, a.group(1), bool(a.group(2)))
        else:
            raise ApiError(400, "Requested URI does not represent any resource")
        resp.headers += [("X-Is-Logged-In", "true"), ("X-Transaction-ID", secrets.token_hex(6))]
        return resp

    def _injected_fault(self, method):
        """The response of a consumed rate-limit or fail_next fault, or None."""
        rl = self.faults.take_rate_limit()
        if rl:
            err = ApiError(429, "Rate limit exceeded",
                           "Rate limit of %d requests per hour for Table API exceeded" % rl["limit"],
                           [("Retry-After", str(rl["retry_after"])), ("X-RateLimit-Limit", str(rl["limit"])),
                            ("X-RateLimit-Remaining", "0"),
                            ("X-RateLimit-Reset", str(int(self.clock.epoch()) + rl["retry_after"])),
                            ("X-RateLimit-Rule", hashlib.md5(b"snemu-rate-limit").hexdigest())])
            return Response.json(429, err.body(), err.headers)
        fail = self.faults.take_failure(method)
        if fail:
            status = fail["status"]
            if status in GATEWAY_PAGES:
                return Response.html(status, GATEWAY_PAGES[status])
            return Response.json(status, ApiError(status, "Internal server error",
                                                  "snemu injected failure (HTTP %d)" % status).body())
        return None

    def _oauth(self, req):
        """POST /oauth_token.do (form-encoded; a JSON body is refused like the real one)."""
        if req.method != "POST":
            raise ApiError(405, "Method not Supported", "Requested method is not supported by this API")
        if "json" in req.headers.get("Content-Type", "").lower():
            status, body = 401, {"error_description": "access_denied", "error": "server_error"}
        else:
            form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
            status, body = self.auth.token_request(form)
            req.user = form.get("username") if status == 200 else None
        return Response.json(status, body)

    # -- Table API

    def _table(self, req, version, table, sys_id):
        """Route a Table API request to list/get/write/delete."""
        if table not in TABLES:
            raise ApiError(400, "Invalid table %s" % table)
        caller = self.store.caller(req.user)
        if table == "sys_attachment":
            self._attachment_acl(req, caller)
        method = req.method
        allowed = ("GET", "HEAD", "PUT", "PATCH", "DELETE") if sys_id else ("GET", "HEAD", "POST")
        if method not in allowed:
            raise ApiError(405, "Method not Supported", "Requested method is not supported by this API",
                           [("Allow", ", ".join(allowed))])
        if method in ("GET", "HEAD"):
            if sys_id is None:
                return self._list(req, version, table, caller)
            if table == "sys_journal_field" and self.faults.journal_acl:
                raise not_found()
            return self._result(req, 200, self._render(req, table, self.store.get(table, sys_id)))
        if method == "DELETE":
            self.store.delete(table, sys_id)
            return Response(204)
        mandatory = self.faults.mandatory_fields() if table == "incident" else ()
        rec = self.store.write(table, sys_id, req.json_body(), caller, mandatory)
        if sys_id is not None:
            return self._result(req, 200, self._render(req, table, rec))
        location = "%s/api/now/v2/table/%s/%s" % (req.base, table, rec["sys_id"])
        return self._result(req, 201, self._render(req, table, rec), [("Location", location)])

    def _result(self, req, status, result, headers=()):
        """A {"result": …} response; an empty body when X-no-response-body: true (status kept)."""
        if req.headers.get("X-no-response-body", "").lower() == "true":
            return Response(status, b"", JSON_TYPE, headers)
        return Response.json(status, {"result": result}, headers)

    def _list(self, req, version, table, caller, default_limit=DEFAULT_LIMIT, filters=()):
        """GET a collection: query, order, page; X-Total-Count and Link headers. filters are
        (field, value) pairs every row must also equal (the Attachment API's plain parameters)."""
        query = Query(req.params.get("sysparm_query", ""), self.store, table, caller.sys_id)
        if "sysparm_query" not in req.params:  # name=value pairs filter when there is no query
            pairs = [k + "=" + v for k, v in req.params.items()
                     if not k.startswith("sysparm_") and self.store.resolve_path(table, k)]
            query = Query("^".join(pairs), self.store, table, caller.sys_id)
        rows = [] if (query.invalid and self.strict_query) else self.store.select(table, query)
        rows = [r for r in rows if all(r.get(k) == v for k, v in filters)]
        limit = self._int_param(req, "sysparm_limit", default_limit, 1)
        offset = self._int_param(req, "sysparm_offset", 0, 0)
        total = len(rows)
        page = rows[offset:offset + limit]
        full_page = len(page) == limit
        if self.faults.short_pages:
            page = page[:self.faults.short_pages]
        if table == "sys_journal_field" and self.faults.journal_acl:
            page = []  # ACLs filter rows after the count and the limit
        if version == "v1" and not page:
            raise not_found()
        headers = []
        if not req.flag("sysparm_no_count"):
            headers.append(("X-Total-Count", str(total)))
        if not req.flag("sysparm_suppress_pagination_header"):
            link = self._link(req, offset, limit, None if req.flag("sysparm_no_count") else total, full_page)
            if link:
                headers.append(("Link", link))
        resp = self._result(req, 200, [self._render(req, table, r) for r in page], headers)
        resp.rows = len(page)
        return resp

    @staticmethod
    def _int_param(req, name, default, low):
        """An integer sysparm: default when absent or not a number, at least low."""
        try:
            return max(low, int(req.params.get(name, default)))
        except ValueError:
            return default

    def _link(self, req, offset, limit, total, full_page):
        """The Link header: <url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last",
        URLs absolute with every original parameter then sysparm_offset and sysparm_limit. prev only
        when offset > 0 (or always, negative, with negative_prev); next when rows remain; last only
        when the count is known (not with sysparm_no_count). None when everything fits one page."""
        if total is not None and offset == 0 and total <= limit:
            return None
        kept = [p for p in req.query.split("&") if p and not p.startswith(("sysparm_offset=", "sysparm_limit="))]
        prefix = "%s%s?%s" % (req.base, req.path, "&".join(kept + [""]))

        def url(off, rel):
            return '<%ssysparm_offset=%d&sysparm_limit=%d>;rel="%s"' % (prefix, off, limit, rel)

        links = [url(0, "first")]
        if offset > 0 or self.negative_prev:
            links.append(url(offset - limit if self.negative_prev else max(0, offset - limit), "prev"))
        if (offset + limit < total) if total is not None else full_page:
            links.append(url(offset + limit, "next"))
        if total is not None:
            links.append(url(max(0, (total - 1) // limit * limit), "last"))
        return ",".join(links)

    def _render(self, req, table, rec):
        """A record as the API shows it under the request's sysparm_fields, sysparm_display_value
        (false/true/all) and sysparm_exclude_reference_link."""
        mode = req.params.get("sysparm_display_value", "false").lower()
        mode = mode if mode in ("true", "all") else "false"
        exclude = req.flag("sysparm_exclude_reference_link")
        spec = TABLES[table].fields
        if table == "sys_attachment":
            rec = dict(rec, download_link=self._download_link(req, rec["sys_id"]))
        if req.params.get("sysparm_fields"):
            names = [n.strip() for n in req.params["sysparm_fields"].split(",")]
            names = [n for n in dict.fromkeys(names) if n and self.store.resolve_path(table, n)]
        else:
            names = list(spec)
        out = {}
        for name in names:
            field = self.store.resolve_path(table, name)
            raw = self.store.path_value(table, rec, name)
            if field.type in ("journal", "journal_list"):
                display = self._journal_display(table, rec, name)
            elif field.type == "choice":
                display = CHOICE_LABELS.get(name.rsplit(".", 1)[-1], {}).get(raw, raw)
            else:
                display = self.store.display_of(field, raw)
            out[name] = self._shape(req, field, raw, display, mode, exclude)
        return out

    def _journal_display(self, table, rec, name):
        """The display value of a journal field of rec (empty under the journal_acl fault)."""
        if table != "incident" or self.faults.journal_acl or "." in name:
            return ""
        elements = ("comments", "work_notes") if name == "comments_and_work_notes" else (name,)
        return self.store.journal_text(rec["sys_id"], elements)

    @staticmethod
    def _shape(req, field, raw, display, mode, exclude):
        """One field's JSON value in a display mode: references as {link,value} objects (or bare
        strings with exclude_reference_link, "" when empty); {display_value,value[,link]} for all."""
        is_ref = field.type == "reference" and raw != ""
        link = "%s/api/now/table/%s/%s" % (req.base, field.ref, raw) if is_ref else None
        if mode == "all":
            obj = {"display_value": display, "value": raw}
            if is_ref and not exclude:
                obj["link"] = link
            return obj
        value = display if mode == "true" else raw
        if not is_ref or exclude:
            return value
        return {"display_value": value, "link": link} if mode == "true" else {"link": link, "value": value}

    # -- Attachment API

    def _attachment(self, req, sys_id, file_part):
        """Route an Attachment API request (/api/now/[v1/]attachment[/sys_id[/file]]) after the
        attachment_acl check."""
        caller = self.store.caller(req.user)
        self._attachment_acl(req, caller)
        allowed = self._attachment_methods(sys_id, file_part, req.method)
        if req.method not in allowed:
            raise ApiError(405, "Method not Supported", "Requested method is not supported by this API",
                           [("Allow", ", ".join(allowed))])
        if sys_id is None:
            filters = [(k, req.params[k]) for k in ("table_name", "table_sys_id") if k in req.params]
            return self._list(req, None, "sys_attachment", caller, ATTACHMENT_LIMIT, filters)
        if file_part:
            return self._download(req, sys_id)
        if sys_id == "upload":
            raise ApiError(400, "Requested URI does not represent any resource",
                           "snemu does not emulate multipart uploads; use POST /api/now/v1/attachment/file")
        if req.method == "POST":
            return self._upload(req, caller)
        if req.method == "DELETE":
            self.store.delete_attachment(sys_id)
            return Response(204)
        if req.method == "PATCH":
            return self._rename(req, sys_id, caller)
        return self._result(req, 200, self._render(req, "sys_attachment", self.store.get("sys_attachment", sys_id)))

    @staticmethod
    def _attachment_methods(sys_id, file_part, method):
        """The methods an attachment path allows: the list and a file GET and HEAD; /file (and
        /upload) POST; an attachment GET, HEAD, PATCH and DELETE."""
        if sys_id is None or file_part:
            return ("GET", "HEAD")
        if sys_id in ("file", "upload") and method == "POST":
            return ("POST",)
        return ("GET", "HEAD", "PATCH", "DELETE")

    def _attachment_acl(self, req, caller):
        """The 403 of the attachment_acl setting for a caller it names (any sys_attachment access)."""
        if caller.user_name in (self.faults.attachment_acl or ()):
            operation = {"POST": "Insert", "PUT": "Update", "PATCH": "Update", "DELETE": "Delete"}
            raise acl_denied(operation.get(req.method, "Read"))

    def _attachment_meta(self, req, rec):
        """The metadata of an attachment as the Attachment API shows it: every field, raw."""
        rec = dict(rec, download_link=self._download_link(req, rec["sys_id"]))
        return {name: rec.get(name, "") for name in ATTACHMENT_FIELDS}

    @staticmethod
    def _download_link(req, sys_id):
        """The absolute URL of an attachment's content, on the host the client called."""
        return "%s/api/now/attachment/%s/file" % (req.base, sys_id)

    def _download(self, req, sys_id):
        """GET /attachment/{sys_id}/file: the content streamed from disk, whole (200) or the one
        range asked (206; 416 past the end), with the stored Content-Type, Content-Disposition and
        X-Attachment-Metadata."""
        rec = self.store.get("sys_attachment", sys_id)
        size = int(rec["size_bytes"])
        span = byte_range(req.headers.get("Range"), size)
        first, last = span or (0, size - 1)
        headers = [("Content-Disposition", content_disposition(rec["file_name"])),
                   ("X-Attachment-Metadata", json.dumps(self._attachment_meta(req, rec))),
                   ("Accept-Ranges", "bytes")]
        if span:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (first, last, size)))
        try:
            stream = FileBody(self.store.files.path(sys_id), first, last - first + 1)
        except FileNotFoundError:  # deleted meanwhile, or a state file moved without its .files
            raise not_found()
        resp = Response(206 if span else 200, b"", rec["content_type"], headers)
        resp.stream = stream
        return resp

    def _upload(self, req, caller):
        """POST /attachment/file?table_name&table_sys_id&file_name with the raw content: checks
        (400 parameters and Content-Type, 404 target record, 400 extension, 413 size), then the body
        streamed to disk while hashed, then 201 with Location and the metadata."""
        names = ("table_name", "table_sys_id", "file_name")
        table, parent, file_name = (req.params.get(k, "") for k in names)
        for key, value in zip(names, (table, parent, file_name)):
            if not value:
                raise ApiError(400, "Missing parameter: %s" % key,
                               "table_name, table_sys_id and file_name are required")
        content_type = (req.headers.get("Content-Type") or "").strip()
        if not content_type:
            raise ApiError(400, "Missing header: Content-Type", "The Content-Type of the file is required")
        if table not in TABLES or table == "sys_attachment" or not self.store.exists(table, parent):
            raise not_found()
        self._check_extension(file_name)
        limit = self.faults.attachment_max_bytes
        if req.stream.length is not None and req.stream.length > limit:
            raise too_large(limit, req.stream.length)
        tmp, size, digest = self._receive(req.stream, limit)
        sys_id = new_sys_id()
        fields = {"sys_id": sys_id, "file_name": file_name, "content_type": content_type,
                  "size_bytes": str(size), "hash": digest, "table_name": table, "table_sys_id": parent,
                  "download_link": self._download_link(req, sys_id)}
        rec = self.store.add_attachment(tmp, fields, caller)
        location = "%s/api/now/v1/attachment/%s" % (req.base, rec["sys_id"])
        return self._result(req, 201, self._render(req, "sys_attachment", rec), [("Location", location)])

    def _check_extension(self, file_name):
        """The 400 of the attachment_extensions setting when file_name's extension (after its last
        dot, compared case-insensitively) is not listed; a name without one is refused too."""
        allowed = self.faults.attachment_extensions
        if not allowed:
            return
        ext = file_name.rpartition(".")[2].lower() if "." in file_name else ""
        if ext not in allowed:
            what = "extension %s" % ext if ext else "a file name without an extension"
            raise ApiError(400, "Attachment refused: %s is not allowed" % what,
                           "glide.attachment.extensions allows: %s" % ",".join(allowed))

    def _receive(self, stream, limit):
        """Copy an upload body to a new file in blocks, hashing it with SHA-256. Returns (temporary
        path, size, hex digest); raises the 413 once more than limit bytes came (chunked bodies) or
        the 400 when the body is cut short, the file removed either way."""
        out, tmp = self.store.files.new_upload()
        digest = hashlib.sha256()
        buf = memoryview(bytearray(BLOCK))
        size = 0
        try:
            with out:
                while True:
                    n = stream.readinto(buf)
                    if not n:
                        break
                    size += n
                    if size > limit:
                        raise too_large(limit, None)
                    digest.update(buf[:n])
                    out.write(buf[:n])
                if self.store.state_file:
                    out.flush()
                    os.fsync(out.fileno())
        except (EOFError, ValueError):
            os.unlink(tmp)
            raise ApiError(400, "Exception while reading request", "The request body was cut short or malformed")
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp, size, digest.hexdigest()

    def _rename(self, req, sys_id, caller):
        """PATCH /attachment/{sys_id} {"file_name": …}: 204; the extension rule applies."""
        name = req.json_body().get("file_name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Missing parameter: file_name", "The body must be {\"file_name\": \"…\"}")
        self.store.get("sys_attachment", sys_id)  # the 404 first
        self._check_extension(name)
        self.store.rename_attachment(sys_id, name, caller)
        return Response(204)

    # -- control API

    def _control(self, req):
        """The /__snemu control API (no auth, not logged); see docs/snemu.md."""
        route = (req.method, req.path.rstrip("/"))
        try:
            if route == ("GET", "/__snemu/faults"):
                return Response.json(200, self.faults.snapshot())
            if route == ("POST", "/__snemu/faults"):
                self.faults.update(self._control_json(req))
                return Response.json(200, self.faults.snapshot())
            if route == ("POST", "/__snemu/reset"):
                self.faults.reset()
                return Response.json(200, self.faults.snapshot())
            if route == ("GET", "/__snemu/log"):
                return Response.json(200, {"requests": self.log.list()})
            if route == ("DELETE", "/__snemu/log"):
                self.log.clear()
                return Response.json(200, {"requests": []})
            if route == ("POST", "/__snemu/users"):
                obj = self._control_json(req)
                if not isinstance(obj.get("name"), str) or not obj["name"]:
                    raise ValueError("name is required")
                for key in ("password", "full_name"):
                    if obj.get(key) is not None and not isinstance(obj[key], str):
                        raise ValueError("%s must be a string" % key)
                rec = self.store.upsert_user(obj["name"], obj.get("password"), obj.get("full_name"))
                return Response.json(200, {"user": {"sys_id": rec["sys_id"], "user_name": rec["user_name"],
                                                    "name": rec["name"]}})
            if route == ("GET", "/__snemu/clock"):
                return Response.json(200, self._clock_state())
            if route == ("POST", "/__snemu/clock"):
                self.clock.offset = int_member(self._control_json(req), "offset_seconds", -10 ** 9)
                return Response.json(200, self._clock_state())
            if route == ("DELETE", "/__snemu/data"):
                self.store.wipe()
                return Response.json(200, {"wiped": True})
        except ValueError as e:
            return Response.json(400, {"error": str(e)})
        return Response.json(404, {"error": "no control endpoint %s %s" % route})

    def _clock_state(self):
        """The emulated clock as GET /__snemu/clock returns it."""
        return {"offset_seconds": self.clock.offset, "now": self.clock.stamp()}

    @staticmethod
    def _control_json(req):
        """The JSON object body of a control request (ValueError when not an object)."""
        try:
            obj = json.loads(req.body.decode("utf-8") or "{}")
        except (ValueError, UnicodeDecodeError):
            raise ValueError("the body must be JSON")
        if not isinstance(obj, dict):
            raise ValueError("the body must be a JSON object")
        return obj


# --------------------------------------------------------------------------------------------
# Command line


def _pair(text, what):
    """Parse "N:M" into two ints (argparse type helper)."""
    try:
        a, b = text.split(":")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError("%s must be N:M, got %r" % (what, text))


def parse_args(argv):
    """Parse the command line into an argparse namespace."""
    p = argparse.ArgumentParser(prog="snemu.py", description="Emulate a ServiceNow instance (Table API, "
                                "OAuth, journal, faults) on 127.0.0.1 for twinsync's tests. See docs/snemu.md.")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default 0)")
    p.add_argument("--port-file", help="write the port here (atomically) once listening")
    p.add_argument("--instance", default="snemu", help="instance name (shown by the hibernation page)")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:Full Name]",
                   help="a user who may log in (repeatable)")
    p.add_argument("--oauth-client", action="append", default=[], metavar="ID:SECRET[:USER]",
                   help="an OAuth client (repeatable); USER enables client_credentials as that user")
    p.add_argument("--token-ttl", type=int, default=1800, help="access-token lifetime, seconds (1800)")
    p.add_argument("--state-file", help="keep the state in this JSON file across restarts")
    p.add_argument("--rate-limit", type=lambda t: _pair(t, "--rate-limit"), metavar="N:S",
                   help="the next N API requests get 429 with Retry-After: S")
    p.add_argument("--fail-next", type=lambda t: _pair(t, "--fail-next"), metavar="N:STATUS",
                   help="the next N API requests fail with STATUS (500, 502, 503, …)")
    p.add_argument("--lose-answer", type=int, default=0, metavar="N",
                   help="carry out the next N instance requests, then close the connection unanswered")
    p.add_argument("--latency-ms", type=int, default=0, help="delay every instance request N ms")
    p.add_argument("--hibernate", action="store_true", help="answer 200 with the hibernation HTML page")
    p.add_argument("--journal-acl", action="store_true", help="hide sys_journal_field rows and comments")
    p.add_argument("--short-pages", type=int, default=0, metavar="N", help="list pages hold at most N rows")
    p.add_argument("--data-policy", type=lambda t: [f.strip() for f in t.split(",") if f.strip()],
                   metavar="FIELD[,FIELD]", help="incident writes leaving one of these fields empty get "
                   "the data-policy 403")
    p.add_argument("--attachment-extensions", metavar="EXT[,EXT]", help="allowed attachment extensions "
                   "(glide.attachment.extensions); others are refused")
    p.add_argument("--attachment-max-bytes", type=int, metavar="N", help="largest attachment in bytes "
                   "(com.glide.attachment.max_size; default 1073741824)")
    p.add_argument("--attachment-acl", type=lambda t: [u.strip() for u in t.split(",") if u.strip()],
                   metavar="USER[,USER]", help="these users get the ACL 403 on every attachment request")
    p.add_argument("--resolved-inactive", action="store_true", help="state 6 also sets active=false")
    p.add_argument("--strict-query", action="store_true", help="an invalid query part returns no rows")
    p.add_argument("--negative-prev", action="store_true", help='emit rel="prev" with a negative offset '
                   "on the first page, as some instances do")
    p.add_argument("--max-content-length", type=int, default=MAX_CONTENT_LENGTH, help="request body limit")
    p.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return p.parse_args(argv)


def faults_from_args(args):
    """The control-API fault object equivalent to the fault flags."""
    faults = {"latency_ms": args.latency_ms, "hibernate": args.hibernate, "journal_acl": args.journal_acl,
              "short_pages": args.short_pages}
    if args.rate_limit:
        faults["rate_limit"] = {"count": args.rate_limit[0], "retry_after": args.rate_limit[1]}
    if args.fail_next:
        faults["fail_next"] = {"count": args.fail_next[0], "status": args.fail_next[1]}
    if args.lose_answer:
        faults["lose_answer"] = {"count": args.lose_answer}
    if args.data_policy:
        faults["data_policy"] = {"mandatory": args.data_policy}
    if args.attachment_extensions is not None:
        faults["attachment_extensions"] = args.attachment_extensions
    if args.attachment_max_bytes is not None:
        faults["attachment_max_bytes"] = args.attachment_max_bytes
    if args.attachment_acl:
        faults["attachment_acl"] = args.attachment_acl
    return faults


def emulator_from_args(args):
    """Build (not start) the Emulator a parsed command line describes."""
    return Emulator(instance=args.instance, users=args.user, oauth_clients=args.oauth_client,
                    token_ttl=args.token_ttl, state_file=args.state_file, port=args.port,
                    faults=faults_from_args(args), resolved_inactive=args.resolved_inactive,
                    strict_query=args.strict_query, negative_prev=args.negative_prev,
                    max_content_length=args.max_content_length, verbose=args.verbose)


def write_port_file(path, port):
    """Write the port (and a newline) to path atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".snemu-port-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    """Run the emulator until SIGTERM or SIGINT; exit status 0 on a clean stop, 2 on bad usage."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        emu = emulator_from_args(args)
    except ValueError as e:
        sys.stderr.write("snemu: %s\n" % e)
        return 2
    port = emu.bind()

    def stop(signum, frame):
        threading.Thread(target=emu.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        write_port_file(args.port_file, port)
    sys.stderr.write("snemu: instance %s listening on http://127.0.0.1:%d\n" % (args.instance, port))
    sys.stderr.flush()
    emu.server.serve_forever()
    emu.server.server_close()
    emu.store.files.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
