"""End to end: ServiceNow faults (docs/sync.md §2, "Errors"; docs/servicenow.md).

A 401 puts the connection in error with ServiceNow's message, nothing is lost, and it resumes by
itself once the password is fixed; a 429 storm and 503 bursts only delay; one incident refused by
the instance blocks that twin only, is listed by `errors list` on both sides, and `errors retry`
succeeds after the fix: a body above the private emulator's --max-content-length (a record-scoped
400), and a literal data policy refusal (the 403 of the private instance's data_policy fault, an
admin there making `description` mandatory), cleared either by relaxing the policy and
`errors retry`, or by filling the field at the source, whose next replica goes through by itself.
"""

import time
import unittest

from harness import POLL_MS, SYNC_PASSWORD, ConnectedTest, wait_until

MAX_BODY = 20000


class FaultsTest(ConnectedTest):

    GLOBEX_ARGS = ("--max-content-length", str(MAX_BODY))

    def tearDown(self):
        self.world.acme.reset_faults()
        self.world.globex.reset_faults()

    def test_1_auth_failure_errors_connection_and_resumes(self):
        w = self.world
        w.globex.set_password("sync", "changed-by-someone")
        a = w.acme.create(short_description="during the 401", urgency="1", comments="kept")
        status = wait_until(lambda: [c for c in w.priv.cli_json("status")["connections"]
                                     if c["status"] == "error"], what="private connection in error")
        self.assertIn("auth", status[0]["error"])
        self.assertIn("User Not Authenticated", status[0]["error"])
        out = w.priv.cli("status")
        self.assertIn("error", out.stdout)
        self.assertIn("User Not Authenticated", out.stdout)
        time.sleep(6 * POLL_MS / 1000)
        self.assertIsNone(w.globex.twin_of(a["sys_id"]))
        # The public side is not affected.
        self.assertEqual(w.pub.cli_json("connection", "show", w.conn)["status"], "active")
        w.globex.set_password("sync", SYNC_PASSWORD)
        b = self.twin(w.globex, a["sys_id"], timeout=45)
        wait_until(lambda: w.priv.cli_json("connection", "show", w.conn)["status"] == "active",
                   what="private connection active again")
        wait_until(lambda: [e["value"] for e in w.globex.journal(b["sys_id"])]
                   == ["[acme] alice wrote:\nkept"], what="comment delivered once")

    def test_2_rate_limit_storm_delays_only(self):
        w = self.world
        w.globex.clear_log()
        made = [w.acme.create(short_description="storm %d" % i, urgency="1") for i in range(5)]
        w.globex.faults(rate_limit={"count": 40, "retry_after": 1})
        for a in made:
            self.twin(w.globex, a["sys_id"], timeout=60)
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        hits = [r for r in w.globex.log() if r["status"] == 429 and r["user"] == "sync"]
        self.assertTrue(hits, "the node ran into the storm")

    def test_3_outage_bursts_delay_only(self):
        w = self.world
        w.acme.clear_log()
        w.globex.clear_log()
        from_acme = [w.acme.create(short_description="burst a%d" % i, urgency="1") for i in range(3)]
        from_globex = [w.globex.create(short_description="burst g%d" % i, urgency="1")
                       for i in range(2)]
        w.globex.faults(fail_next={"count": 12, "status": 503})
        w.acme.faults(fail_next={"count": 12, "status": 502})
        for a in from_acme:
            self.twin(w.globex, a["sys_id"], timeout=60)
        for b in from_globex:
            self.twin(w.acme, b["sys_id"], timeout=60)
        self.assertEqual(w.pub.cli_json("errors", "list")["errors"], [])
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        for inst, status in ((w.acme, 502), (w.globex, 503)):
            self.assertTrue([r for r in inst.log() if r["status"] == status],
                            "%s returned %d" % (inst.name, status))

    def test_4_refused_incident_blocks_only_its_twin_then_retry(self):
        w = self.world
        big = w.acme.create(short_description="huge", description="x" * (MAX_BODY + 5000),
                            urgency="1")
        small = [w.acme.create(short_description="small %d" % i, urgency="1") for i in range(2)]
        for a in small:
            self.twin(w.globex, a["sys_id"])
        errors = wait_until(lambda: w.priv.cli_json("errors", "list")["errors"],
                            what="the refusal listed on the private node")
        self.assertEqual(len(errors), 1)
        err = errors[0]
        self.assertEqual(err["origin"], "local")
        self.assertEqual(err["remote"], big["number"])
        self.assertIn("bad_request", err["code"])
        self.assertIn("Exception while reading request", err["message"])
        out = w.priv.cli("errors", "list")
        self.assertIn(big["number"], out.stdout)
        remote = wait_until(lambda: w.pub.cli_json("errors", "list")["errors"],
                            what="the refusal reported to the public node")
        self.assertEqual(remote[0]["origin"], "remote")
        self.assertEqual(remote[0]["local"], big["number"])
        # Other twins keep syncing meanwhile.
        a = w.acme.create(short_description="still flowing", urgency="1")
        self.twin(w.globex, a["sys_id"])
        self.assertIsNone(w.globex.twin_of(big["sys_id"]))
        # The fix on the private side: an instance that takes large bodies.
        w.globex.stop()
        w.globex.start(extra_args=[])
        out = w.priv.cli("errors", "retry", str(err["id"]), "--wait", "40")
        self.assertEqual(out.returncode, 0, out.stderr + w.logs())
        self.assertIn("resolved", out.stdout)
        b = self.twin(w.globex, big["sys_id"])
        self.assertEqual(len(b["description"]), MAX_BODY + 5000)
        wait_until(lambda: w.pub.cli_json("errors", "list")["errors"] == [],
                   what="the public node's copy of the error cleared by the RECEIPT")
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])

    def test_5_data_policy_refusal_blocks_only_its_twin_then_retry(self):
        w = self.world
        # The private side's admin makes the description mandatory on incidents.
        w.globex.faults(data_policy={"mandatory": ["description"]})
        a = w.acme.create(short_description="no description", urgency="1", comments="waits with A")
        b, c = [w.acme.create(short_description="described %s" % n, description="details of %s" % n,
                              urgency="1") for n in "BC"]
        twin_b = self.twin(w.globex, b["sys_id"])
        self.twin(w.globex, c["sys_id"])
        errors = wait_until(lambda: w.priv.cli_json("errors", "list")["errors"],
                            what="the refusal listed on the private node\n" + w.logs())
        self.assertEqual(len(errors), 1, errors)
        err = errors[0]
        self.assertEqual((err["origin"], err["remote"], err["code"]), ("local", a["number"], "data_policy"))
        self.assertIn("Operation Failed", err["message"])
        self.assertIn("Data Policy Exception", err["message"])
        self.assertIn("The following fields are mandatory: Description", err["message"])
        line = [l for l in w.priv.cli("errors", "list").stdout.splitlines() if a["number"] in l]
        self.assertEqual(len(line), 1, line)
        self.assertIn("data_policy", line[0])
        self.assertIn("mandatory: Description", line[0])
        remote = wait_until(lambda: w.pub.cli_json("errors", "list")["errors"],
                            what="the refusal reported to the public node")
        self.assertEqual(len(remote), 1, remote)
        self.assertEqual((remote[0]["origin"], remote[0]["local"]), ("remote", a["number"]))
        self.assertIn("mandatory: Description", remote[0]["message"])
        # The other twins keep syncing: a change of B arrives, A still has no twin.
        w.acme.update(b["sys_id"], short_description="described B, changed", comments="B moves on")
        wait_until(lambda: w.globex.get(twin_b["sys_id"])["short_description"] == "described B, changed",
                   what="the change of B on its twin")
        wait_until(lambda: [e["value"] for e in w.globex.journal(twin_b["sys_id"])]
                   == ["[acme] alice wrote:\nB moves on"], what="B's comment on its twin")
        self.assertIsNone(w.globex.twin_of(a["sys_id"]))
        self.assertEqual([e["id"] for e in w.priv.cli_json("errors", "list")["errors"]], [err["id"]])
        # The fix: the admin relaxes the policy; the retry creates A's twin with its comment.
        w.globex.faults(data_policy=None)
        out = w.priv.cli("errors", "retry", str(err["id"]), "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr + w.logs())
        self.assertIn("resolved", out.stdout)
        twin_a = self.twin(w.globex, a["sys_id"], timeout=5)
        self.assertEqual((twin_a["short_description"], twin_a["description"]), ("no description", ""))
        self.assertEqual([e["value"] for e in w.globex.journal(twin_a["sys_id"])],
                         ["[acme] alice wrote:\nwaits with A"])
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        wait_until(lambda: w.pub.cli_json("errors", "list")["errors"] == [],
                   what="the public node's copy of the error cleared by the RECEIPT")

    def test_6_data_policy_refusal_cleared_by_a_fix_at_the_source(self):
        w = self.world
        w.globex.faults(data_policy={"mandatory": ["description"]})
        d = w.acme.create(short_description="described later", urgency="1")
        errors = wait_until(lambda: w.priv.cli_json("errors", "list")["errors"],
                            what="the refusal listed on the private node\n" + w.logs())
        self.assertEqual([(e["remote"], e["code"]) for e in errors], [(d["number"], "data_policy")])
        wait_until(lambda: w.pub.cli_json("errors", "list")["errors"],
                   what="the refusal reported to the public node")
        # The source fills the field: its next replica goes through the parked chain by itself,
        # the policy still in force.
        w.acme.update(d["sys_id"], description="now with a description")
        twin = self.twin(w.globex, d["sys_id"])
        self.assertEqual(twin["description"], "now with a description")
        wait_until(lambda: w.priv.cli_json("errors", "list")["errors"] == [],
                   what="the private error cleared without a retry")
        wait_until(lambda: w.pub.cli_json("errors", "list")["errors"] == [],
                   what="the public node's copy of the error cleared by the RECEIPT")

    def test_7_twin_changed_before_its_receipt_is_adopted_not_duplicated(self):
        # The private node creates the twin, then every PATCH fails: the comment cannot be
        # written, so the RECEIPT waits. Bob changes the new twin meanwhile (with a PUT, which
        # the fault lets through), so the private poll sends its replica first, naming acme's
        # record as its twin. The public node must take it as the twin it knows, not create a
        # second incident (and then stop on the late RECEIPT, as it once did).
        w = self.world
        w.globex.faults(fail_next={"count": 100000, "status": 503, "method": "PATCH"})
        a = w.acme.create(short_description="overtaken", urgency="1", comments="before receipt")
        b = self.twin(w.globex, a["sys_id"])
        w.globex._request("PUT", "/api/now/table/incident/" + b["sys_id"], {"impact": "2"})
        wait_until(lambda: "sync queued" in _grep(w.priv.log_path, "incident=" + b["number"]),
                   timeout=30, what="the private node sends its new twin's replica\n" + w.logs())
        time.sleep(4 * POLL_MS / 1000)  # the public node has it: before the fix, a duplicate
        w.globex.reset_faults()
        wait_until(lambda: [e["value"] for e in w.globex.journal(b["sys_id"])]
                   == ["[acme] alice wrote:\nbefore receipt"], timeout=45,
                   what="the comment written once\n" + w.logs())
        w.settle(timeout=60)
        self.assertEqual([r["sys_id"] for r in w.acme.query("short_description=overtaken")],
                         [a["sys_id"]], "no second incident on the public instance")
        self.assertEqual(w.acme.twins_of(b["sys_id"]), [])
        self.assertIsNone(w.pub.proc.poll(), "the public node is running\n" + w.logs())
        self.assertEqual(w.pub.cli_json("errors", "list")["errors"], [])
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        # Bob's change crossed acme's creating message (not yet acknowledged): concurrent, so
        # the public side's value wins on both (docs/sync.md, "Concurrent changes").
        self.assertEqual((w.acme.get(a["sys_id"])["impact"], w.globex.get(b["sys_id"])["impact"]),
                         ("3", "3"))
        w.acme.update(a["sys_id"], short_description="overtaken, then renamed")
        wait_until(lambda: w.globex.get(b["sys_id"])["short_description"]
                   == "overtaken, then renamed", what="the pair still syncs\n" + w.logs())


def _grep(path, needle):
    """The lines of a log file that hold needle, joined."""
    with open(path, errors="replace") as f:
        return "".join(line for line in f if needle in line)


if __name__ == "__main__":
    unittest.main()
