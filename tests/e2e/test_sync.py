"""End to end: Basic-mode sync through the real broker (docs/sync.md §2).

Create on either side -> twin with the right fields and correlation; updates both ways; resolve
with close code; comments both ways exactly once; work notes stay home; both nodes go quiet
after a sync (the emulators' request logs show only polls); concurrent changes converge without
ping-pong; exalate / unexalate by hand; deactivate, change, reactivate -> the changes arrive.
"""

import json
import time
import unittest

from harness import POLL_MS, ConnectedTest, wait_until

SYNCED = ("short_description", "description", "urgency", "impact", "state")


class SyncTest(ConnectedTest):

    TWIN_TIMEOUT = 20

    def same(self, a_side, a_id, b_side, b_id, fields=SYNCED):
        def check():
            a, b = a_side.get(a_id), b_side.get(b_id)
            return all(a[f] == b[f] for f in fields) and (a, b)
        return wait_until(check, what="same values\n" + self.world.logs())

    def comments(self, instance, sys_id):
        return [e["value"] for e in instance.journal(sys_id)]

    def test_1_create_on_public_side(self):
        w = self.world
        a = w.acme.create(short_description="Mail down", description="since 9am", urgency="1",
                          impact="2", comments="first words", work_notes="internal: relay 3")
        b = self.twin(w.globex, a["sys_id"])
        for f in ("short_description", "description", "urgency", "impact", "state"):
            self.assertEqual(b[f], a[f], f)
        self.assertEqual(b["correlation_id"], a["sys_id"])
        self.assertEqual(b["correlation_display"], "%s@acme" % a["number"])
        wait_until(lambda: self.comments(w.globex, b["sys_id"]), what="comment")
        self.assertEqual(self.comments(w.globex, b["sys_id"]), ["[acme] alice wrote:\nfirst words"])
        self.assertEqual(w.globex.journal(b["sys_id"], "work_notes"), [])
        def row():
            return [t for t in w.pub.cli_json("twins", w.conn)["twins"]
                    if t["local"] == a["number"]][0]
        wait_until(lambda: row()["state"] == "synced", what="twin synced on the public node")
        self.assertEqual(row()["remote_sys_id"], b["sys_id"])
        self.assertEqual(row()["remote"], b["number"])

    def test_2_create_on_private_side_and_updates_both_ways(self):
        w = self.world
        b = w.globex.create(short_description="VPN flaps", urgency="1", impact="3")
        local_only = w.globex.create(short_description="local matter", urgency="3")
        a = self.twin(w.acme, b["sys_id"])
        self.assertEqual(a["correlation_display"], "%s@globex" % b["number"])
        w.acme.update(a["sys_id"], impact="1", comments="acme looks at it")
        self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])
        w.globex.update(b["sys_id"], description="tunnel 2 drops every 5 min",
                        comments="globex adds detail", work_notes="globex internal only")
        self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])
        wait_until(lambda: len(self.comments(w.acme, a["sys_id"])) == 2, what="2 comments")
        wait_until(lambda: len(self.comments(w.globex, b["sys_id"])) == 2, what="2 comments")
        time.sleep(6 * POLL_MS / 1000)
        self.assertEqual(sorted(self.comments(w.acme, a["sys_id"])),
                         sorted(["acme looks at it", "[globex] bob wrote:\nglobex adds detail"]))
        self.assertEqual(sorted(self.comments(w.globex, b["sys_id"])),
                         sorted(["globex adds detail", "[acme] alice wrote:\nacme looks at it"]))
        self.assertEqual(w.acme.journal(a["sys_id"], "work_notes"), [])
        self.assertIsNone(w.acme.twin_of(local_only["sys_id"]), "not matching the trigger")

    def test_3_resolve_with_close_code(self):
        w = self.world
        a = w.acme.create(short_description="Disk full", urgency="1")
        b = self.twin(w.globex, a["sys_id"])
        w.acme.update(a["sys_id"], state="6", close_code="Solved (Permanently)",
                      close_notes="cleaned /var")
        b2 = self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])[1]
        self.assertEqual(b2["state"], "6")
        self.assertEqual(b2["close_code"], "Solved (Permanently)")
        self.assertEqual(b2["close_notes"], "cleaned /var")
        errors = w.priv.cli_json("errors", "list")["errors"]
        self.assertEqual(errors, [])

    def test_4_quiet_after_sync(self):
        w = self.world
        a = w.acme.create(short_description="Quiet please", urgency="1", comments="c1")
        b = self.twin(w.globex, a["sys_id"])
        w.globex.update(b["sys_id"], comments="c2")
        wait_until(lambda: len(self.comments(w.acme, a["sys_id"])) == 2, what="comment back")
        time.sleep(8 * POLL_MS / 1000)
        w.acme.clear_log()
        w.globex.clear_log()
        time.sleep(12 * POLL_MS / 1000)
        for inst in (w.acme, w.globex):
            log = inst.log()
            self.assertGreaterEqual(len(log), 3, "the node keeps polling")
            polls = (("GET", "/api/now/table/incident"), ("GET", "/api/now/v1/attachment"))
            others = [(r["method"], r["path"]) for r in log if (r["method"], r["path"]) not in polls]
            self.assertEqual(others, [], "%s saw more than polls" % inst.name)

    def test_5_concurrent_changes_converge(self):
        w = self.world
        a = w.acme.create(short_description="Printer", urgency="1", impact="3")
        b = self.twin(w.globex, a["sys_id"])
        time.sleep(4 * POLL_MS / 1000)
        for round_ in range(3):
            w.acme.update(a["sys_id"], short_description="Printer %d (acme)" % round_, impact="2")
            w.globex.update(b["sys_id"], short_description="Printer %d (globex)" % round_,
                            urgency="2")
            a2, b2 = self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])
            # Both non-conflicting changes survive; the conflict has one winner on both sides.
            self.assertEqual(a2["impact"], "2")
            self.assertEqual(a2["urgency"], "2")
            self.assertIn(a2["short_description"], ("Printer %d (acme)" % round_,
                                                    "Printer %d (globex)" % round_))
        # No ping-pong: the records stop changing.
        time.sleep(6 * POLL_MS / 1000)
        mods = (w.acme.get(a["sys_id"])["sys_mod_count"], w.globex.get(b["sys_id"])["sys_mod_count"])
        time.sleep(10 * POLL_MS / 1000)
        self.assertEqual(mods, (w.acme.get(a["sys_id"])["sys_mod_count"],
                                w.globex.get(b["sys_id"])["sys_mod_count"]))

    def test_6_exalate_and_unexalate_by_hand(self):
        w = self.world
        a = w.acme.create(short_description="Not by trigger", urgency="3")
        time.sleep(4 * POLL_MS / 1000)
        self.assertIsNone(w.globex.twin_of(a["sys_id"]))
        out = w.pub.cli("exalate", w.conn, a["number"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("under sync", out.stdout)
        b = self.twin(w.globex, a["sys_id"])
        wait_until(lambda: any(t["local"] == b["number"] and t["state"] == "synced"
                               for t in w.priv.cli_json("twins", w.conn)["twins"]),
                   what="twin recorded on the private node")
        out = w.priv.cli("unexalate", w.conn, b["number"])
        self.assertEqual(out.returncode, 0, out.stderr)
        w.globex.update(b["sys_id"], short_description="changed after unexalate")
        w.acme.update(a["sys_id"], description="acme side change")
        time.sleep(10 * POLL_MS / 1000)
        self.assertEqual(w.acme.get(a["sys_id"])["short_description"], "Not by trigger")
        self.assertEqual(w.globex.get(b["sys_id"])["description"], "")
        self.assertEqual(w.globex.get(b["sys_id"])["short_description"], "changed after unexalate")
        # Exalate again from the private side: both sides sync the twin again and the change
        # the public side made meanwhile is not lost.
        out = w.priv.cli("exalate", w.conn, b["number"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])
        self.assertEqual(w.acme.get(a["sys_id"])["short_description"], "changed after unexalate")
        self.assertEqual(w.globex.get(b["sys_id"])["description"], "acme side change")
        w.acme.update(a["sys_id"], impact="1")
        wait_until(lambda: w.globex.get(b["sys_id"])["impact"] == "1", what="syncing again")
        out = w.pub.cli("exalate", w.conn, "INC9999999")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("no incident INC9999999", out.stderr)

    def test_6b_sync_start_and_stop(self):
        """The commands' names since issue 10: `sync start NUMBER` (the node's only connection)
        and `sync stop CONN NUMBER` do what exalate and unexalate do."""
        w = self.world
        a = w.acme.create(short_description="Started by sync start", urgency="3")
        time.sleep(4 * POLL_MS / 1000)
        self.assertIsNone(w.globex.twin_of(a["sys_id"]))
        out = w.pub.cli("sync", "start", a["number"], "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["number"], a["number"])
        b = self.twin(w.globex, a["sys_id"])
        out = w.pub.cli("sync", "stop", w.conn, a["number"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("no longer under sync", out.stdout)
        states = {t["local"]: t["state"] for t in w.pub.cli_json("twins", w.conn)["twins"]}
        self.assertEqual(states[a["number"]], "unexalated")
        w.acme.update(a["sys_id"], short_description="changed after sync stop")
        time.sleep(10 * POLL_MS / 1000)
        self.assertEqual(w.globex.get(b["sys_id"])["short_description"], "Started by sync start")
        out = w.pub.cli("sync", "stop", w.conn, "INC0000000")
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("INC0000000 is not a twin", out.stderr)

    def test_7_deactivate_change_reactivate(self):
        w = self.world
        a = w.acme.create(short_description="Before pause", urgency="1")
        b = self.twin(w.globex, a["sys_id"])
        out = w.pub.cli("connection", "deactivate", w.conn)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("deactivated", out.stdout)
        w.acme.update(a["sys_id"], short_description="changed while paused", comments="paused c")
        new = w.acme.create(short_description="created while paused", urgency="1")
        time.sleep(10 * POLL_MS / 1000)
        self.assertEqual(w.globex.get(b["sys_id"])["short_description"], "Before pause")
        self.assertIsNone(w.globex.twin_of(new["sys_id"]))
        self.assertEqual(w.pub.cli_json("status")["connections"][0]["status"], "deactivated")
        out = w.pub.cli("connection", "activate", w.conn)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.same(w.acme, a["sys_id"], w.globex, b["sys_id"])
        self.twin(w.globex, new["sys_id"])
        wait_until(lambda: "[acme] alice wrote:\npaused c" in self.comments(w.globex, b["sys_id"]),
                   what="comment made while paused")


if __name__ == "__main__":
    unittest.main()
