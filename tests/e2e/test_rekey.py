"""End to end: `connection rekey` during a burst of changes (docs/protocol.md §8.3,
docs/security.md).

Both sides create incidents with comments while the public node's admin rotates the keys. Every
incident gets exactly one twin, every comment arrives exactly once, and afterwards both nodes seal
in generation 1 with generation 0 wiped: the join's key file is gone and the generations file holds
one root. A second rekey, from the private side, works the same way.
"""

import os
import unittest

from harness import ConnectedTest, wait_until


class RekeyTest(ConnectedTest):

    def burst(self, tag, count):
        w = self.world
        made = []
        for i in range(count):
            made.append((w.acme, w.globex,
                         w.acme.create(short_description="%s a%d" % (tag, i), urgency="1",
                                       comments="%s from acme %d" % (tag, i))))
            made.append((w.globex, w.acme,
                         w.globex.create(short_description="%s g%d" % (tag, i), urgency="1",
                                         comments="%s from globex %d" % (tag, i))))
        return made

    def gens(self, node):
        conn = node.cli_json("connection", "show", self.world.conn)["id"]
        keys = os.path.join(node.state_dir, "keys")
        with open(os.path.join(keys, conn + ".gens")) as f:
            lines = f.read().split("\n")
        return lines, os.path.exists(os.path.join(keys, conn + ".secret"))

    def check(self, made):
        for source, target, record in made:
            twin = self.twin(target, record["sys_id"], timeout=60)
            self.world.settle(timeout=60)
            self.assertEqual(len(target.twins_of(record["sys_id"])), 1, "one twin")
            said = [e["value"] for e in target.journal(twin["sys_id"])]
            self.assertEqual(len(said), 1, said)

    def settled_generation(self, generation):
        w = self.world
        for node in (w.pub, w.priv):
            def one_root():
                lines, join_file = self.gens(node)
                return ("current=%d" % generation in lines and not join_file
                        and len([l for l in lines if l.startswith("root=")]) == 1)
            wait_until(one_root, timeout=60, what="generation %d alone on %s\n%s"
                       % (generation, node.role, w.logs()))

    def test_rekey_during_a_burst_loses_and_doubles_nothing(self):
        w = self.world
        made = self.burst("before", 5)
        out = w.pub.cli("connection", "rekey", w.conn, "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("started", out.stdout)
        made += self.burst("during", 5)
        self.check(made)
        # Traffic both ways in the new generation lets each side wipe the old one
        made = self.burst("after", 2)
        self.check(made)
        self.settled_generation(1)
        # The private side rotates next
        out = w.priv.cli("connection", "rekey", "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr)
        made = self.burst("second", 3)
        self.check(made)
        made = self.burst("last", 1)
        self.check(made)
        self.settled_generation(2)
        self.assertEqual(w.pub.cli_json("errors", "list")["errors"], [])
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])


if __name__ == "__main__":
    unittest.main()
