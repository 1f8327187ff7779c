"""The chaos run's final check must see every kind of difference it promises to report: a
missing or doubled twin, a field that differs or went back to a stale value, a comment lost or
doubled, a work note that crossed, an incident nobody made, a file's copy missing, doubled or
different, a copy of a deleted file left behind, a file nobody attached. Each test builds both instances as
the checker reads them (no process is started) and changes one thing."""

import copy
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts"))
import chaos  # noqa: E402


def incident(sys_id, number, correlation_id="", correlation_display="", **fields):
    record = {"sys_id": sys_id, "number": number, "correlation_id": correlation_id,
              "correlation_display": correlation_display, "sys_mod_count": "1",
              "short_description": "printer jams", "description": "since 9:00", "urgency": "2",
              "impact": "2", "priority": "3", "state": "1", "close_code": "", "close_notes": ""}
    record.update(fields)
    return record


def entry(element_id, element, value, by):
    return {"element_id": element_id, "element": element, "value": value, "sys_created_by": by}


def attachment(sys_id, record, name, by, hash_="ab" * 32, size="5"):
    return {"sys_id": sys_id, "table_name": "incident", "table_sys_id": record,
            "file_name": name, "content_type": "text/plain", "size_bytes": size, "hash": hash_,
            "sys_created_by": by}


class CheckerTest(unittest.TestCase):
    def setUp(self):
        """acme INC0010001 (alice's) and its twin globex INC0010007, with one comment each way,
        one work note each side, and one file each way (bob's deleted again)."""
        self.ledger = chaos.Ledger(os.devnull)
        pair = chaos.Pair("public", "a1", "INC0010001",
                          {"short_description": "printer jams", "description": "since 9:00",
                           "urgency": "2", "impact": "2", "state": "1"})
        pair.ids["private"] = "g7"
        pair.comments = [("public", "comment 1 by alice"), ("private", "comment 2 by bob")]
        pair.notes = [("public", "work note 3 by alice"), ("private", "work note 4 by bob")]
        self.ledger.pairs.append(pair)
        self.pair = pair
        acme = {"a1": incident("a1", "INC0010001")}
        globex = {"g7": incident("g7", "INC0010007", "a1", "INC0010001@acme")}
        acme_journal = {"a1": [entry("a1", "comments", "comment 1 by alice", "alice"),
                               entry("a1", "comments", "[globex] bob wrote:\ncomment 2 by bob",
                                     "twinsync.integration"),
                               entry("a1", "work_notes", "work note 3 by alice", "alice")]}
        globex_journal = {"g7": [entry("g7", "comments", "[acme] alice wrote:\ncomment 1 by alice",
                                       "twinsync.integration"),
                                 entry("g7", "comments", "comment 2 by bob", "bob"),
                                 entry("g7", "work_notes", "work note 4 by bob", "bob")]}
        self.original = attachment("f1", "a1", "r\u00e9sum\u00e9.pdf", "alice")
        self.copy = attachment("f2", "g7", "r\u00e9sum\u00e9.pdf", "twinsync.integration")
        pair.files = [chaos.File("public", self.original),
                      chaos.File("private", attachment("f3", "g7", "gone.txt", "bob"))]
        pair.files[1].deleted = True
        acme_files = {"a1": [self.original]}
        globex_files = {"g7": [self.copy]}
        self.world = {"public": (acme, acme_journal, acme_files),
                      "private": (globex, globex_journal, globex_files)}

    def differences(self, world=None):
        checker = chaos.Checker(None, self.ledger)
        checker.check(world or self.world)
        self.assertGreater(checker.checks, 0)
        self.checks = checker.checks
        return checker.differences

    def test_a_clean_world_has_no_difference(self):
        self.assertEqual(self.differences(), [])
        # two records, 6 synced fields with their latest values, 2 comments x 2 sides + counts,
        # 2 work notes home and away, correlation: all of it looked at
        self.assertGreaterEqual(self.checks, 25)

    def test_a_second_twin_is_reported(self):
        self.world["private"][0]["g8"] = incident("g8", "INC0010008", "a1", "INC0010001@acme")
        found = self.differences()
        self.assertTrue(any("2 twins on globex" in d for d in found), found)

    def test_a_missing_twin_is_reported(self):
        del self.world["private"][0]["g7"]
        found = self.differences()
        self.assertTrue(any("0 twins on globex" in d for d in found), found)

    def test_a_field_that_differs_is_reported(self):
        self.world["private"][0]["g7"]["urgency"] = "1"
        found = self.differences()
        self.assertTrue(any("urgency differs" in d for d in found), found)

    def test_equal_but_stale_values_are_reported(self):
        self.pair.written[("private", "description")] = "since 10:00, by bob"
        self.pair.written[("public", "description")] = "since 11:00, by alice"
        found = self.differences()
        self.assertTrue(any("description is 'since 9:00', which is not the latest" in d
                            for d in found), found)

    def test_close_fields_count_only_once_resolved(self):
        self.world["public"][0]["a1"]["close_notes"] = "left over from an old resolution"
        self.assertEqual(self.differences(), [])
        for side in ("public", "private"):
            self.world[side][0]["a1" if side == "public" else "g7"]["state"] = "6"
        self.pair.written[("public", "state")] = "6"
        found = self.differences()
        self.assertTrue(any("close_notes differs" in d for d in found), found)

    def test_a_lost_comment_copy_is_reported(self):
        self.world["private"][1]["g7"].pop(0)
        found = self.differences()
        self.assertTrue(any("'comment 1 by alice' is 0 times on globex" in d for d in found),
                        found)

    def test_a_doubled_comment_is_reported(self):
        self.world["public"][1]["a1"].append(copy.deepcopy(self.world["public"][1]["a1"][1]))
        found = self.differences()
        self.assertTrue(any("'comment 2 by bob' is 2 times on acme" in d for d in found), found)
        self.assertTrue(any("3 comments on acme, 2 were written" in d for d in found), found)

    def test_a_crossed_work_note_is_reported(self):
        self.world["private"][1]["g7"].append(
            entry("g7", "comments", "[acme] alice wrote:\nwork note 3 by alice",
                  "twinsync.integration"))
        found = self.differences()
        self.assertTrue(any("work note 'work note 3 by alice' crossed to globex" in d
                            for d in found), found)

    def test_an_incident_nobody_made_is_reported(self):
        self.world["public"][0]["a9"] = incident("a9", "INC0010009", "zz", "INC0010099@globex")
        found = self.differences()
        self.assertTrue(any("acme INC0010009: an incident no user made" in d for d in found),
                        found)

    def test_a_missing_copy_is_reported(self):
        self.world["private"][2]["g7"].clear()
        found = self.differences()
        self.assertTrue(any("attached on acme: 0 copies on globex" in d for d in found), found)

    def test_a_doubled_copy_is_reported(self):
        self.world["private"][2]["g7"].append(dict(self.copy, sys_id="f9"))
        found = self.differences()
        self.assertTrue(any("attached on acme: 2 copies on globex" in d for d in found), found)

    def test_a_different_copy_is_reported(self):
        self.copy["hash"] = "cd" * 32
        found = self.differences()
        self.assertTrue(any("the copy's hash is" in d for d in found), found)

    def test_a_lost_original_is_reported(self):
        self.world["public"][2]["a1"].clear()
        found = self.differences()
        self.assertTrue(any("the original is gone" in d for d in found), found)

    def test_a_copy_of_a_deleted_file_is_reported(self):
        self.world["public"][2]["a1"].append(attachment("f4", "a1", "gone.txt",
                                                        "twinsync.integration"))
        found = self.differences()
        self.assertTrue(any("'gone.txt' attached on globex: deleted at its source, but 1 copies "
                            "on acme" in d for d in found), found)

    def test_a_file_nobody_attached_is_reported(self):
        self.world["private"][2]["g7"].append(attachment("f5", "g7", "stray.txt", "bob"))
        found = self.differences()
        self.assertTrue(any("'stray.txt' on globex that no user attached" in d for d in found),
                        found)

    def test_files_pending_counts_what_has_not_arrived(self):
        checker = chaos.Checker(None, self.ledger)
        self.assertEqual(checker.files_pending(self.world), 0)
        self.world["private"][2]["g7"].clear()
        self.assertEqual(checker.files_pending(self.world), 1)
        self.world["public"][2]["a1"].append(attachment("f4", "a1", "gone.txt",
                                                        "twinsync.integration"))
        self.assertEqual(checker.files_pending(self.world), 2)

    def test_the_fingerprint_moves_with_any_write(self):
        before = chaos.Checker.fingerprint(self.world)
        self.world["private"][0]["g7"]["sys_mod_count"] = "2"
        moved = chaos.Checker.fingerprint(self.world)
        self.assertNotEqual(moved, before)
        self.world["public"][2]["a1"].append(attachment("f6", "a1", "new.txt", "alice"))
        self.assertNotEqual(chaos.Checker.fingerprint(self.world), moved)


if __name__ == "__main__":
    unittest.main()
