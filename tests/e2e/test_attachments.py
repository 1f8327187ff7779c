"""End to end: attachment sync (docs/sync.md, "Attachments"), small and medium files.

Both directions with an empty file, small ones, a 24 MiB one (more than the 8 MiB window, so
acknowledgements drive it) and awkward names: each arrives once with the same name, type, size
and SHA-256, and the nodes show it sent and received. A new twin receives the files its source
already had. No echo: the copies are never sent back and the instances go quiet. Deletions: the
original's deletion deletes the copy, never a file a person attached on the twin, and deleting
a copy deletes nothing at the source. Refusals by the receiving instance (extension rule, size,
403 on sys_attachment) are per-twin errors naming the file, other files and fields go on, and
`errors retry` brings the file once the rule is fixed. Size caps and `attachments none` skip
files with a reason. An upload whose answer was lost is not stored twice, and not left behind
when its original is deleted before the node knows the upload's outcome.

The 200 MiB transfers and the kill -9 runs are in test_attachments_large.py (label long).
"""

import os
import time
import unittest

from attach_util import SYNC_USER, AttachmentCase, PartialWatch, random_file, sha256_file
from harness import POLL_MS, wait_until

MiB = 1024 * 1024
# What a node reads of an idle instance: incident polls and the attachment lists
POLLS = ("/api/now/table/incident", "/api/now/attachment", "/api/now/v1/attachment")
AWKWARD = ("Überprüfung €.txt", "  spaced  out name .txt", "..", "a..b.txt",
           "n" * 196 + ".txt")  # the last: 200 characters


class AttachmentTest(AttachmentCase):

    def test_1_both_directions(self):
        w = self.world
        a, b = self.pair(w.acme, "Files both ways")
        sent = {}  # (instance name, file name) -> (original metadata, bytes or None)
        data = {"empty.txt": b"", "small.bin": os.urandom(10 * 1024)}
        for name in AWKWARD:
            data[name] = ("%s: Inhalt äöü €\n" % name).encode()
        for name, content in data.items():
            kind = "application/octet-stream" if name.endswith(".bin") else "text/plain"
            sent[("acme", name)] = (w.acme.attach(a["sys_id"], name, content, kind), content)
        globex_data = {"empty-g.txt": b"", "report from globex.pdf": os.urandom(3000),
                       "Überprüfung €.txt": "globex's own version".encode()}
        for name, content in globex_data.items():
            kind = "application/pdf" if name.endswith(".pdf") else "text/plain; charset=utf-8"
            sent[("globex", name)] = (w.globex.attach(b["sys_id"], name, content, kind), content)
        medium = random_file(w.tmp, "medium.bin", 24 * MiB)
        medium_hash = sha256_file(medium)
        watch = PartialWatch(w.acme, a["sys_id"], "medium.bin", 24 * MiB, medium_hash)
        watch.start()
        try:
            sent[("globex", "medium.bin")] = (w.globex.attach(b["sys_id"], "medium.bin", medium),
                                              None)
            self.assertEqual(sent[("globex", "medium.bin")][0]["hash"], medium_hash)
            copies = {}
            for (side, name), (original, _) in sent.items():
                there, record = (w.globex, b["sys_id"]) if side == "acme" else (w.acme, a["sys_id"])
                copies[(side, name)] = self.wait_copy(original, there, record)
        finally:
            watch.stop()
        self.assertGreater(watch.looks, 10, "the watch looked at acme while medium.bin crossed")
        self.assertEqual(watch.bad, [], "a partial medium.bin appeared on acme")

        # Bytes, read back from the twins
        for key in (("acme", "small.bin"), ("acme", "Überprüfung €.txt"), ("acme", "empty.txt"),
                    ("globex", "report from globex.pdf")):
            there = w.globex if key[0] == "acme" else w.acme
            self.assertEqual(there.download(copies[key]["sys_id"]), sent[key][1], key)
        self.assertEqual(w.acme.download(copies[("globex", "medium.bin")]["sys_id"], sha256=True),
                         medium_hash)

        # Exactly once, and each side still holds exactly its own files plus the copies
        acme_own = [o for (s, _), (o, _) in sent.items() if s == "acme"]
        globex_own = [o for (s, _), (o, _) in sent.items() if s == "globex"]
        self.assert_once(w.globex, b["sys_id"], acme_own)
        self.assert_once(w.acme, a["sys_id"], globex_own)
        self.assertEqual(len(w.acme.attachments(a["sys_id"])), len(acme_own) + len(globex_own))
        self.assertEqual(len(w.globex.attachments(b["sys_id"])), len(acme_own) + len(globex_own))

        # What the nodes show: sent on the source's node, received on the other
        for (side, name), (original, _) in sent.items():
            src, dst = (w.pub, w.priv) if side == "acme" else (w.priv, w.pub)
            copy = copies[(side, name)]
            out = self.wait_row(src, a["number"] if side == "acme" else b["number"],
                                original["sys_id"], ("sent",))
            self.assertEqual(out["direction"], "out")
            self.assertEqual(out["name"], name)
            self.assertEqual(out["content_type"], original["content_type"])
            self.assertEqual(out["size"], int(original["size_bytes"]))
            self.assertEqual(out["sha256"], original["hash"])
            self.assertEqual(out["copy_sys_id"], copy["sys_id"])
            into = self.wait_row(dst, b["number"] if side == "acme" else a["number"],
                                 original["sys_id"], ("received",))
            self.assertEqual(into["direction"], "in")
            self.assertEqual(into["name"], name)
            self.assertEqual(into["size"], int(original["size_bytes"]))
            self.assertEqual(into["sha256"], original["hash"])
            self.assertEqual(into["copy_sys_id"], copy["sys_id"])
        # No row is about a copy: the copies the integration user stored are not files to send
        copy_ids = {c["sys_id"] for c in copies.values()}
        for node, number in ((w.pub, a["number"]), (w.priv, b["number"])):
            rows = self.rows(node, number)
            self.assertEqual(len(rows), len(sent), "rows on the %s node: %r" % (node.role, rows))
            self.assertFalse(copy_ids & {r["file_sys_id"] for r in rows},
                             "a copy became a file to send on the %s node" % node.role)

    def test_2_new_twin_receives_existing_files(self):
        w = self.world
        a = w.acme.create(short_description="Files before the trigger", urgency="3")
        early = [w.acme.attach(a["sys_id"], "before-%d.txt" % i, b"early %d" % i, "text/plain")
                 for i in range(2)]
        g = w.globex.create(short_description="Files before sync start", urgency="3")
        g_early = w.globex.attach(g["sys_id"], "globex-before.csv", b"a,b\n1,2\n", "text/csv")
        # Past the look-back (5 s) and some polls: the file cursor has passed these files
        # while their incidents were not twins.
        time.sleep(7)
        self.assertIsNone(w.globex.twin_of(a["sys_id"]))
        w.acme.update(a["sys_id"], urgency="1")
        b = self.twin(w.globex, a["sys_id"])
        out = w.priv.cli("sync", "start", w.conn, g["number"])
        self.assertEqual(out.returncode, 0, out.stderr)
        g_twin = self.twin(w.acme, g["sys_id"])
        for original in early:
            self.wait_copy(original, w.globex, b["sys_id"])
        self.wait_copy(g_early, w.acme, g_twin["sys_id"])
        # A file added after the twin was made comes too, once
        late = w.acme.attach(a["sys_id"], "after.txt", b"late", "text/plain")
        self.wait_copy(late, w.globex, b["sys_id"])
        self.assert_once(w.globex, b["sys_id"], early + [late])
        self.assert_once(w.acme, g_twin["sys_id"], [g_early])
        for original in early + [late]:
            self.wait_row(w.pub, a["number"], original["sys_id"], ("sent",))

    def test_3_no_echo_and_quiet(self):
        w = self.world
        a, b = self.pair(w.acme, "No echo")
        mine = w.acme.attach(a["sys_id"], "from-acme.txt", b"alice's", "text/plain")
        theirs = w.globex.attach(b["sys_id"], "from-globex.txt", b"bob's", "text/plain")
        self.wait_copy(mine, w.globex, b["sys_id"])
        self.wait_copy(theirs, w.acme, a["sys_id"])
        self.wait_row(w.pub, a["number"], mine["sys_id"], ("sent",))
        self.wait_row(w.priv, b["number"], theirs["sys_id"], ("sent",))
        w.settle()
        time.sleep(4 * POLL_MS / 1000)
        w.acme.clear_log()
        w.globex.clear_log()
        time.sleep(16 * POLL_MS / 1000 + 2)  # more than one deletion scan (1 s)
        for inst, record, own in ((w.acme, a, mine), (w.globex, b, theirs)):
            files = inst.attachments(record["sys_id"])
            self.assertEqual(sorted(f["file_name"] for f in files),
                             ["from-acme.txt", "from-globex.txt"], inst.name)
            self.assertEqual([f["sys_id"] for f in files if f["sys_created_by"] != SYNC_USER],
                             [own["sys_id"]], "%s still holds exactly its own file" % inst.name)
            log = inst.log()
            self.assertGreaterEqual(len(log), 3, "the node keeps polling")
            writes = [(r["method"], r["path"]) for r in log if r["method"] != "GET"]
            self.assertEqual(writes, [], "%s saw writes after the sync settled" % inst.name)
            reads = [r["path"] for r in log if r["method"] == "GET" and r["path"] not in
                     POLLS]
            self.assertEqual(reads, [], "%s saw more than the polls" % inst.name)

    def test_4_deletions(self):
        w = self.world
        a, b = self.pair(w.acme, "Deletions")
        shared = b"the same bytes on both sides"
        alice = w.acme.attach(a["sys_id"], "shared.txt", shared, "text/plain")
        gone_soon = w.acme.attach(a["sys_id"], "deleted-at-source.txt", b"bye", "text/plain")
        bob_same = w.globex.attach(b["sys_id"], "shared.txt", shared, "text/plain")
        bob_own = w.globex.attach(b["sys_id"], "bob-own.txt", b"bob's own file", "text/plain")
        alice_copy = self.wait_copy(gone_soon, w.globex, b["sys_id"])
        bob_own_copy = self.wait_copy(bob_own, w.acme, a["sys_id"])

        def on(instance, record):
            return {f["sys_id"]: f for f in instance.attachments(record["sys_id"])}
        # 2 own files and 2 copies on each side. shared.txt: alice's and bob's are the
        # same name and bytes; each arrives once
        wait_until(lambda: len(on(w.globex, b)) == 4 and len(on(w.acme, a)) == 4,
                   timeout=self.FILE_TIMEOUT, what="4 files on each side\n" + w.logs())
        alice_shared_copy = [f for f in on(w.globex, b).values() if f["file_name"] == "shared.txt"
                             and f["sys_created_by"] == SYNC_USER]
        self.assertEqual(len(alice_shared_copy), 1)
        alice_shared_copy = alice_shared_copy[0]
        self.wait_row(w.pub, a["number"], alice["sys_id"], ("sent",))
        self.wait_row(w.priv, b["number"], bob_same["sys_id"], ("sent",))

        # 1. The original is deleted at its source: its copy goes from the twin
        w.acme.delete_attachment(gone_soon["sys_id"])
        wait_until(lambda: alice_copy["sys_id"] not in on(w.globex, b), timeout=30,
                   what="the copy of a deleted original deleted\n" + w.logs())
        self.wait_row(w.pub, a["number"], gone_soon["sys_id"], ("deleted",))

        # 2. alice deletes her shared.txt: the copy goes, bob's file of the same name and bytes
        #    (which a person attached on the twin) stays, and so does its copy on acme
        w.acme.delete_attachment(alice["sys_id"])
        wait_until(lambda: alice_shared_copy["sys_id"] not in on(w.globex, b), timeout=30,
                   what="the copy of alice's shared.txt deleted\n" + w.logs())
        time.sleep(3)  # more deletion scans
        left = on(w.globex, b)
        self.assertIn(bob_same["sys_id"], left, "bob's own shared.txt was deleted")
        self.assertIn(bob_own["sys_id"], left)
        self.assertEqual(len(left), 2, left)
        acme_left = on(w.acme, a)
        self.assertEqual(sorted((f["file_name"], f["sys_created_by"]) for f in acme_left.values()),
                         [("bob-own.txt", SYNC_USER), ("shared.txt", SYNC_USER)])

        # 3. alice deletes the copy of bob's file on acme: bob's original stays
        w.acme.delete_attachment(bob_own_copy["sys_id"])
        time.sleep(4)  # several polls and deletion scans of both nodes
        self.assertIn(bob_own["sys_id"], on(w.globex, b), "deleting a copy deleted the original")
        self.assertEqual(w.globex.download(bob_own["sys_id"]), b"bob's own file")
        self.assertEqual(self.row(w.priv, b["number"], bob_own["sys_id"])["state"], "sent")
        self.assertEqual(w.priv.cli_json("errors", "list")["errors"], [])
        self.assertEqual(w.pub.cli_json("errors", "list")["errors"], [])

    def refused(self, rule, name, content, expect_words, others_refused=False):
        """The receiving instance (globex) refuses `name` while `rule` (emulator settings) holds:
        an error naming the file on the private node, refused on both nodes, other files and
        field changes go on (others_refused: the rule refuses every file, so the other file is
        refused too, and only fields and comments go on); after the rule is lifted, `errors
        retry` brings the files once."""
        w = self.world
        a, b = self.pair(w.acme, "Refused %s" % name)
        w.settle()
        w.globex.faults(**rule)
        bad = None
        try:
            bad = w.acme.attach(a["sys_id"], name, content, "application/octet-stream")
            into = self.wait_row(w.priv, b["number"], bad["sys_id"], ("refused",))
            self.assertIn(name, into["reason"])
            out = self.wait_row(w.pub, a["number"], bad["sys_id"], ("refused",))
            self.assertIn(name, out["reason"])
            for words in expect_words:
                self.assertIn(words, into["reason"])
            errors = [e for e in w.priv.cli_json("errors", "list")["errors"]
                      if e["local"] == b["number"]]
            self.assertEqual(len(errors), 1, errors)
            self.assertIn(name, errors[0]["message"])
            self.assertEqual(self.copies(w.globex, b["sys_id"], bad), [])
            # Other files, fields and comments of the same twin still cross
            good = w.acme.attach(a["sys_id"], "notes.txt", b"fine", "text/plain")
            w.acme.update(a["sys_id"], short_description="changed after the refusal",
                          comments="still talking")
            if others_refused:
                self.wait_row(w.priv, b["number"], good["sys_id"], ("refused",))
            else:
                self.wait_copy(good, w.globex, b["sys_id"])
            wait_until(lambda: w.globex.get(b["sys_id"])["short_description"]
                       == "changed after the refusal", what="field change\n" + w.logs())
            self.assertEqual(w.priv.cli_json("connection", "show", w.conn)["status"], "active")
        finally:
            w.globex.reset_faults()
            if bad and not self.row(w.priv, b["number"], bad["sys_id"]):
                # Failed before the file arrived: let it arrive, so that a later case's
                # injected fault is not used up by this file
                try:
                    self.wait_row(w.priv, b["number"], bad["sys_id"], ("refused", "received"),
                                  timeout=90)
                except AssertionError:
                    pass
        out = w.priv.cli("errors", "retry", str(errors[0]["id"]), "--json")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.wait_copy(bad, w.globex, b["sys_id"])
        self.wait_copy(good, w.globex, b["sys_id"])
        self.wait_row(w.priv, b["number"], bad["sys_id"], ("received",))
        self.wait_row(w.pub, a["number"], bad["sys_id"], ("sent",))
        self.assert_once(w.globex, b["sys_id"], [bad, good])
        self.assertEqual([e for e in w.priv.cli_json("errors", "list")["errors"]
                          if e["local"] == b["number"]], [])
        self.assertEqual([e for e in w.pub.cli_json("errors", "list")["errors"]
                          if e["local"] == a["number"]], [])

    def test_5a_refused_extension(self):
        self.refused({"attachment_extensions": "txt,pdf,csv,bin"}, "tool.exe",
                     b"MZ\x90\x00 not really a program", ["exe"])

    def test_5b_refused_size(self):
        self.refused({"attachment_max_bytes": 4096}, "too-big.bin", os.urandom(8192), [])

    def test_5c_refused_upload_403(self):
        # A 403 on the upload alone (the next POST to globex, which is the node's upload)
        self.refused({"fail_next": {"count": 1, "status": 403, "method": "POST"}}, "forbidden.txt",
                     b"no entry either", ["403"])

    def test_6_size_cap_and_none(self):
        w = self.world
        a, b = self.pair(w.acme, "Size caps")
        two = os.urandom(2 * MiB)
        small = os.urandom(1000)
        try:
            # The receiver's cap: it answers the first chunk with skipped
            out = w.priv.cli("connection", "attachments", w.conn, "all", "1MiB")
            self.assertEqual(out.returncode, 0, out.stderr)
            big = w.acme.attach(a["sys_id"], "two-mib-in.bin", two)
            ok = w.acme.attach(a["sys_id"], "small-in.bin", small)
            self.wait_copy(ok, w.globex, b["sys_id"])
            into = self.wait_row(w.priv, b["number"], big["sys_id"], ("skipped",))
            out_row = self.wait_row(w.pub, a["number"], big["sys_id"], ("skipped",))
            self.assertTrue(into["reason"], into)
            self.assertTrue(out_row["reason"], out_row)
            self.assertIn("globex", out_row["reason"])
            self.assertEqual(self.copies(w.globex, b["sys_id"], big), [])
            out = w.priv.cli("connection", "attachments", w.conn, "default")
            self.assertEqual(out.returncode, 0, out.stderr)

            # The sender's cap: it does not send
            out = w.pub.cli("connection", "attachments", w.conn, "all", "1MiB")
            self.assertEqual(out.returncode, 0, out.stderr)
            big = w.acme.attach(a["sys_id"], "two-mib-out.bin", two)
            ok = w.acme.attach(a["sys_id"], "small-out.bin", small)
            self.wait_copy(ok, w.globex, b["sys_id"])
            out_row = self.wait_row(w.pub, a["number"], big["sys_id"], ("skipped",))
            self.assertIn("acme", out_row["reason"])
            self.assertEqual(self.copies(w.globex, b["sys_id"], big), [])
            out = w.pub.cli("connection", "attachments", w.conn, "default")
            self.assertEqual(out.returncode, 0, out.stderr)

            # attachments none on the private side: it neither takes nor sends
            out = w.priv.cli("connection", "attachments", w.conn, "none")
            self.assertEqual(out.returncode, 0, out.stderr)
            incoming = w.acme.attach(a["sys_id"], "while-none.txt", b"x", "text/plain")
            outgoing = w.globex.attach(b["sys_id"], "globex-while-none.txt", b"y", "text/plain")
            self.wait_row(w.pub, a["number"], incoming["sys_id"], ("skipped",))
            self.wait_row(w.priv, b["number"], outgoing["sys_id"], ("skipped",))
            w.acme.update(a["sys_id"], description="fields still cross")
            wait_until(lambda: w.globex.get(b["sys_id"])["description"] == "fields still cross",
                       what="a field change while attachments are none")
            self.assertEqual(self.copies(w.globex, b["sys_id"], incoming), [])
            self.assertEqual(self.copies(w.acme, a["sys_id"], outgoing), [])
        finally:
            for node in (w.pub, w.priv):
                node.cli("connection", "attachments", w.conn, "default")
        # Default again: new files cross
        after = w.globex.attach(b["sys_id"], "after-default.txt", b"z", "text/plain")
        self.wait_copy(after, w.acme, a["sys_id"])

    def test_7_lost_upload_answer_stores_once(self):
        """globex stores the upload but the answer never reaches the private node (a crash
        between the two, as the emulator's lose_answer plays it): the node finds its earlier
        copy instead of storing a second one."""
        w = self.world
        a, b = self.pair(w.acme, "Lost answer")
        w.settle()
        w.globex.faults(lose_answer={"count": 1, "method": "POST", "user": SYNC_USER})
        try:
            original = w.acme.attach(a["sys_id"], "lost-answer.txt", b"once only", "text/plain")
            self.wait_copy(original, w.globex, b["sys_id"])
            self.wait_row(w.priv, b["number"], original["sys_id"], ("received",))
        finally:
            w.globex.reset_faults()
        lost = [r for r in w.globex.log() if r["lost"]]
        self.assertEqual([(r["method"], r["path"].replace("/v1/", "/")) for r in lost],
                         [("POST", "/api/now/attachment/file")], "the fault hit the upload")
        self.assert_once(w.globex, b["sys_id"], [original])

    def test_8_deleted_while_its_upload_outcome_is_unknown(self):
        """globex stores the upload but the answer is lost, and before the private node's next
        attempt the original is deleted at acme: the copy globex stored must go too (found by
        the chaos run: the FILE_DELETE found the file not yet uploaded as far as the node knew,
        marked it deleted, and the stored copy stayed for good)."""
        w = self.world
        a, b = self.pair(w.acme, "Deleted while uploading")
        w.settle()
        w.globex.clear_log()
        w.globex.faults(lose_answer={"count": 1, "method": "POST", "user": SYNC_USER})
        try:
            original = w.acme.attach(a["sys_id"], "short-lived.txt", b"here and gone",
                                     "text/plain")
            wait_until(lambda: [r for r in w.globex.log() if r["lost"]], timeout=self.FILE_TIMEOUT,
                       interval=0.05, what="the upload's answer lost\n" + w.logs())
        finally:
            w.globex.reset_faults()
        w.acme.delete_attachment(original["sys_id"])
        self.wait_row(w.pub, a["number"], original["sys_id"], ("deleted",))
        # The node's next upload attempt comes 5 s after the lost answer; give it, the
        # deletion scans and the FILE_DELETE time to settle either way
        time.sleep(12)
        self.assertEqual(self.copies(w.globex, b["sys_id"], original), [],
                         "a copy of a file deleted at its source stayed on globex\n" + w.logs())
        self.assertEqual(w.acme.attachments(a["sys_id"]), [])


    def test_9_refused_by_acl_on_sys_attachment(self):
        """The ACL 403 on sys_attachment for the integration user on the receiving instance.
        The emulator answers that user's reads of sys_attachment 403 too, so the private
        node's own attachment lists fail as long as the rule holds: this also asks that a
        failing attachment list does not stop fields and comments. Last of the suite: while it
        fails, the private node's back-off leaves its file to arrive later."""
        self.refused({"attachment_acl": [SYNC_USER]}, "acl.txt", b"no entry", [],
                     others_refused=True)


if __name__ == "__main__":
    unittest.main()
