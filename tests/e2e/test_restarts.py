"""End to end: kill -9 during a sync (docs/architecture.md §1, §4: nothing lost, nothing twice).

Many incidents with comments are created on both sides while the private node, the broker and
the public node are killed with SIGKILL in turn and started again. Afterwards both instances hold
exactly one twin per incident, with the same field values, and every comment exactly once.
"""

import time
import unittest

from harness import ConnectedTest, wait_until

SYNCED = ("short_description", "description", "urgency", "impact", "state")


class RestartTest(ConnectedTest):

    def make(self, instance, tag, count, comments):
        made = []
        for i in range(count):
            rec = instance.create(short_description="%s %d" % (tag, i), description="d%d" % i,
                                  urgency="1", impact=str(1 + i % 3))
            for c in range(comments):
                instance.update(rec["sys_id"], comments="%s %d comment %d" % (tag, i, c))
            made.append(rec)
        return made

    def converged(self, source, target, records, comments):
        """True when every record of source has exactly one twin on target with equal fields
        and each comment exactly once (raises on a duplicate)."""
        for rec in records:
            twins = target.twins_of(rec["sys_id"])
            self.assertLessEqual(len(twins), 1, "duplicate twin of %s" % rec["number"])
            if not twins:
                return False
            here, there = source.get(rec["sys_id"]), twins[0]
            if any(here[f] != there[f] for f in SYNCED):
                return False
            texts = [e["value"] for e in target.journal(there["sys_id"])]
            for text in set(texts):
                self.assertEqual(texts.count(text), 1, "comment twice on %s: %r"
                                 % (there["number"], text))
            if len(texts) != comments:
                return False
        return True

    def count_twins(self, target, records):
        """Records with a twin on target, in one request (the instances answer slowly here, so
        that kill_midway looks often enough to catch the sync half done)."""
        ids = ",".join(rec["sys_id"] for rec in records)
        return len({t["correlation_id"] for t in target.query("correlation_idIN" + ids)})

    def kill_midway(self, name, target, records):
        """kill -9 process name once some but not all records have a twin on target."""
        w = self.world
        wait_until(lambda: 0 < self.count_twins(target, records) < len(records), timeout=30,
                   interval=0.05, what="a sync half done before killing %s" % name)
        w.kill(name)
        return self.count_twins(target, records)

    def test_kill_each_process_during_sync(self):
        w = self.world
        # Slow instances (every request 80 ms) so that each kill lands mid-sync.
        w.acme.faults(latency_ms=80)
        w.globex.faults(latency_ms=80)
        from_acme = self.make(w.acme, "acme", 10, 2)
        self.kill_midway("priv", w.globex, from_acme)   # mid-apply on the private side
        from_globex = self.make(w.globex, "globex", 10, 1)  # enough that the sync takes seconds
        w.restart("priv")
        self.kill_midway("broker", w.acme, from_globex)  # messages in flight
        from_acme += self.make(w.acme, "acme-b", 4, 2)
        for rec in from_globex[:2]:
            w.globex.update(rec["sys_id"], comments="added while the broker was down")
        w.restart("broker")
        more = self.make(w.globex, "globex-b", 4, 1)
        self.kill_midway("pub", w.acme, more)            # mid-apply on the public side
        from_globex += more
        w.restart("pub")
        time.sleep(0.5)
        w.kill("priv")
        w.restart("priv")
        w.acme.faults(latency_ms=0)
        w.globex.faults(latency_ms=0)

        wait_until(lambda: self.converged(w.acme, w.globex, from_acme, 2), timeout=90,
                   interval=1, what="acme's incidents on globex\n" + w.logs())
        wait_until(lambda: self.converged(w.globex, w.acme, from_globex[:2], 2)
                   and self.converged(w.globex, w.acme, from_globex[2:], 1), timeout=60,
                   interval=1, what="globex's incidents on acme\n" + w.logs())
        # Nothing in error, nothing left behind.
        self.assertEqual(w.pub.cli_json("errors", "list")["errors"], [])
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        wait_until(lambda: w.pub.cli_json("queue", w.conn)["outbox"]["waiting"] == 0
                   and w.priv.cli_json("queue", w.conn)["outbox"]["waiting"] == 0,
                   what="empty outboxes")
        total = len(from_acme) + len(from_globex)
        self.assertEqual(len(w.pub.cli_json("twins", w.conn)["twins"]), total)
        self.assertEqual(len(w.priv.cli_json("twins", w.conn)["twins"]), total)


if __name__ == "__main__":
    unittest.main()
