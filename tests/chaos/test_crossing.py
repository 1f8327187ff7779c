"""Crossing changes, made deterministic: the broker is paused (SIGSTOP) while both users change
the same incident, so that both nodes queue their SYNC before either arrives; then it resumes.
The chaos run found divergences of exactly this shape; each test here is one of them, reduced.

Expected in every case: both instances end with the same values, and a field only one side
changed ends with that side's value (docs/sync.md "Concurrent changes": only a field changed by
both sides is decided, public side wins).
"""

import os
import signal
import sys
import tempfile
import time
import unittest
import shutil

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts"))
import twinsync_harness as harness  # noqa: E402

BUILD = os.environ.get("TWINSYNC_BUILD_DIR", os.path.join(harness.ROOT, "build"))


class CrossingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            bins = harness.binaries(build=BUILD)
        except harness.HarnessError as e:
            raise unittest.SkipTest(str(e))
        poll = {("node", "poll_interval_ms"): "300"}
        cls.dep = harness.Deployment(bins, tempfile.mkdtemp(prefix="twinsync-crossing-"),
                                     public=("acme", {"alice": ("alice-pw", "Alice")}),
                                     private=("globex", {"bob": ("bob-pw", "Bob")}),
                                     settings={"public": poll, "private": poll})
        cls.dep.start_all()
        cls.dep.connect()
        cls.acme, cls.globex = cls.dep.instances["public"], cls.dep.instances["private"]

    @classmethod
    def tearDownClass(cls):
        cls.dep.stop_all()
        if not os.environ.get("TWINSYNC_CHAOS_KEEP"):
            shutil.rmtree(cls.dep.dir, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------

    def pair(self, origin, **fields):
        """(acme sys_id, globex sys_id) of a new incident made on `origin` and its twin."""
        home, user = (self.acme, "alice") if origin == "acme" else (self.globex, "bob")
        away, other = (self.globex, "bob") if origin == "acme" else (self.acme, "alice")
        made = home.create(user, short_description="crossing", **fields)
        twin = harness.wait_for("the twin", lambda: away.find(other, "correlation_id="
                                                               + made["sys_id"]), timeout=20)[0]
        ids = (made["sys_id"], twin["sys_id"])
        return ids if origin == "acme" else ids[::-1]

    def crossed(self, acme_change, globex_change, ids):
        """Pauses the broker, makes both changes, lets both nodes poll, resumes the broker."""
        broker = self.dep.daemons["broker"].proc
        broker.send_signal(signal.SIGSTOP)
        try:
            self.acme.update("alice", ids[0], **acme_change)
            self.globex.update("bob", ids[1], **globex_change)
            time.sleep(2)
        finally:
            broker.send_signal(signal.SIGCONT)

    def settled(self, ids, field):
        """(acme value, globex value) of field once both queues are empty and it stopped moving."""
        def read():
            return (self.acme.call("alice", "GET", "/api/now/table/incident/" + ids[0])[field],
                    self.globex.call("bob", "GET", "/api/now/table/incident/" + ids[1])[field])
        harness.wait_for("the broker queues to drain", lambda: self.dep.queued_at_broker() == 0,
                         timeout=30)
        time.sleep(3)
        return read()

    def sync(self, ids, source, **fields):
        """A plain, uncrossed change on one side (one field, or a comment), waited for on the
        other side."""
        user, home, away, reader = (("alice", self.acme, self.globex, "bob") if source == "acme"
                                    else ("bob", self.globex, self.acme, "alice"))
        here, there = (ids[0], ids[1]) if source == "acme" else (ids[1], ids[0])
        home.update(user, here, **fields)
        key, value = next(iter(fields.items()))
        if key == "comments":
            arrived = lambda: [c for c in away.comments(reader, there)  # noqa: E731
                               if c["value"].endswith("\n" + value)]
        else:
            arrived = lambda: away.call(  # noqa: E731
                reader, "GET", "/api/now/table/incident/" + there)[key] == value
        harness.wait_for(f"{key} on the other side", arrived, timeout=20)

    # ---- the cases -------------------------------------------------------

    def test_private_field_change_crossing_the_first_public_sync(self):
        ids = self.pair("globex", description="original")
        self.crossed({"comments": "alice says hi"}, {"description": "changed by bob"}, ids)
        self.assertEqual(self.settled(ids, "description"), ("changed by bob", "changed by bob"))

    def test_private_field_change_crossing_a_later_public_sync(self):
        ids = self.pair("globex", description="original")
        self.sync(ids, "acme", comments="first public sync")
        self.sync(ids, "globex", description="v1 by bob")
        self.crossed({"comments": "alice again"}, {"description": "v2 by bob"}, ids)
        self.assertEqual(self.settled(ids, "description"), ("v2 by bob", "v2 by bob"))

    def test_private_change_on_a_public_incident_crossing_a_public_comment(self):
        ids = self.pair("acme", urgency="3")
        self.sync(ids, "globex", urgency="2")
        self.crossed({"comments": "alice comments"}, {"urgency": "1"}, ids)
        self.assertEqual(self.settled(ids, "urgency"), ("1", "1"))

    def test_public_field_change_crossing_a_private_comment(self):
        ids = self.pair("globex", description="original")
        self.crossed({"description": "changed by alice"}, {"comments": "bob says hi"}, ids)
        self.assertEqual(self.settled(ids, "description"),
                         ("changed by alice", "changed by alice"))

    def test_both_change_the_same_field_public_wins(self):
        ids = self.pair("globex", impact="3")
        self.crossed({"impact": "1"}, {"impact": "2"}, ids)
        self.assertEqual(self.settled(ids, "impact"), ("1", "1"))


if __name__ == "__main__":
    unittest.main()
