"""End to end: a write whose answer is lost is made once (docs/servicenow.md, "Writes whose answer
is lost").

Each instance in turn carries out the node's write, then closes the connection before any byte of
the answer (the emulator's lose_answer fault, on a kept-alive connection the node reuses: the case
where an HTTP library re-sends a request by itself). A twin is created once, a field update lands
once, a comment is written once — in both directions — and each node says in its log that it
checked a write whose outcome it did not know.
"""

import unittest

from harness import ConnectedTest, wait_until


def _lines(path, needle):
    with open(path, errors="replace") as f:
        return [line for line in f if needle in line]


class LostAnswersTest(ConnectedTest):

    def tearDown(self):
        self.world.acme.reset_faults()
        self.world.globex.reset_faults()
        self.world.settle(timeout=60)

    def _directions(self):
        w = self.world
        # (source instance, target instance, node that writes on the target)
        return ((w.acme, w.globex, w.priv), (w.globex, w.acme, w.pub))

    def _lost(self, target, method):
        return [e for e in target.log() if e["lost"] and e["method"] == method]

    def _checked(self, node):
        return _lines(node.log_path, "outcome unknown")

    def test_1_create_whose_answer_is_lost_makes_one_twin(self):
        for source, target, node in self._directions():
            with self.subTest(source=source.name):
                checked = len(self._checked(node))
                target.clear_log()
                target.faults(lose_answer={"count": 1, "method": "POST"})
                a = source.create(short_description="lost create from %s" % source.name, urgency="1",
                                  comments="first words")
                b = self.twin(target, a["sys_id"], timeout=60)
                self.world.settle(timeout=60)
                self.assertEqual(len(self._lost(target, "POST")), 1, "the fault was hit")
                self.assertEqual([t["sys_id"] for t in target.twins_of(a["sys_id"])], [b["sys_id"]],
                                 "one twin\n" + self.world.logs())
                self.assertEqual([e["value"] for e in target.journal(b["sys_id"])],
                                 ["[%s] %s wrote:\nfirst words" % (source.name, source.human)])
                self.assertGreater(len(self._checked(node)), checked, "the node logged the unknown outcome")
                self.assertEqual(node.cli_json("errors", "list")["errors"], [])

    def test_2_update_whose_answer_is_lost_lands_once(self):
        for source, target, node in self._directions():
            with self.subTest(source=source.name):
                a = source.create(short_description="update from %s" % source.name, urgency="1")
                b = self.twin(target, a["sys_id"], timeout=60)
                self.world.settle(timeout=60)
                mods = int(target.get(b["sys_id"])["sys_mod_count"])
                target.clear_log()
                target.faults(lose_answer={"count": 1, "method": "PATCH"})
                source.update(a["sys_id"], short_description="updated once", impact="1")
                wait_until(lambda: target.get(b["sys_id"])["short_description"] == "updated once",
                           timeout=60, what="the update on the twin\n" + self.world.logs())
                self.world.settle(timeout=60)
                self.assertEqual(len(self._lost(target, "PATCH")), 1, "the fault was hit")
                twin = target.get(b["sys_id"])
                self.assertEqual((twin["short_description"], twin["impact"]), ("updated once", "1"))
                # The write reached the instance once: one more version of the record, not two.
                self.assertEqual(int(twin["sys_mod_count"]), mods + 1, self.world.logs())
                # Nothing came back: the source kept the value and got no echo.
                self.assertEqual(source.get(a["sys_id"])["short_description"], "updated once")
                self.assertEqual(node.cli_json("errors", "list")["errors"], [])

    def test_3_comment_whose_answer_is_lost_is_written_once(self):
        for source, target, node in self._directions():
            with self.subTest(source=source.name):
                a = source.create(short_description="comments from %s" % source.name, urgency="1")
                b = self.twin(target, a["sys_id"], timeout=60)
                self.world.settle(timeout=60)
                target.clear_log()
                target.faults(lose_answer={"count": 1, "method": "PATCH"})
                source.update(a["sys_id"], comments="said once")
                expected = ["[%s] %s wrote:\nsaid once" % (source.name, source.human)]
                wait_until(lambda: [e["value"] for e in target.journal(b["sys_id"])] == expected,
                           timeout=60, what="the comment on the twin\n" + self.world.logs())
                self.world.settle(timeout=60)
                self.assertEqual(len(self._lost(target, "PATCH")), 1, "the fault was hit")
                self.assertEqual([e["value"] for e in target.journal(b["sys_id"])], expected)
                self.assertEqual([e["value"] for e in source.journal(a["sys_id"])], ["said once"],
                                 "no echo on the source")
                self.assertEqual(node.cli_json("errors", "list")["errors"], [])


if __name__ == "__main__":
    unittest.main()
