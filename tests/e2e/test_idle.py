"""End to end: an idle connection costs each instance almost nothing (docs/servicenow.md, "Change
detection"; figures in docs/sync-bench.md).

After a burst of changes on both sides has synced and nothing has changed for the look-back, every
poll of each node is at most two requests to its instance and re-reads no row: the poll cursor
moves up to the instance-clock bound of each poll, so the look-back window empties once the
instance is quiet. Measured on the emulators' request logs (requests by the integration user, rows
in each answer).
"""

import time
import unittest

from harness import POLL_MS, ConnectedTest, wait_until

LOOKBACK_S = 5  # harness.Node.write_config
WINDOW_S = 6.0


class IdleTest(ConnectedTest):

    def _idle_figures(self, inst):
        """(requests, rows, polls at most) of the integration user on inst over WINDOW_S."""
        inst.clear_log()
        start = time.monotonic()
        time.sleep(WINDOW_S)
        elapsed = time.monotonic() - start
        reqs = [e for e in inst.log() if e["user"] == "sync"]
        polls = int(elapsed * 1000 / POLL_MS) + 1
        return reqs, sum(e["rows"] for e in reqs), polls

    def test_idle_polls_cost_at_most_two_requests_and_read_no_row(self):
        w = self.world
        made = [w.acme.create(short_description="burst a%d" % i, urgency="1", comments="c%d" % i)
                for i in range(20)]
        made += [w.globex.create(short_description="burst g%d" % i, urgency="1") for i in range(10)]
        for a in made[:20]:
            self.twin(w.globex, a["sys_id"], timeout=60)
        for b in made[20:]:
            self.twin(w.acme, b["sys_id"], timeout=60)
        w.settle(timeout=60)
        time.sleep(LOOKBACK_S + 2)  # nothing has changed for the look-back
        for inst in (w.acme, w.globex):
            reqs, rows, polls = self._idle_figures(inst)
            print("idle %s: %d requests, %d rows in %.1f s (at most %d polls)"
                  % (inst.name, len(reqs), rows, WINDOW_S, polls))
            self.assertTrue(reqs, "the node polls %s" % inst.name)
            self.assertEqual(rows, 0, "an idle poll re-reads no row on %s: %s"
                             % (inst.name, [(e["path"], e["query"][:120]) for e in reqs if e["rows"]][:3]))
            self.assertLessEqual(len(reqs), 2 * polls,
                                 "at most two requests per idle poll on %s" % inst.name)
        # Still alive: a change after the quiet spell syncs as before.
        a = w.acme.create(short_description="after the quiet", urgency="1")
        self.twin(w.globex, a["sys_id"], timeout=30)
        wait_until(lambda: w.globex.twin_of(a["sys_id"]) is not None, what="twin after idle")


if __name__ == "__main__":
    unittest.main()
