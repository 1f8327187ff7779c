"""End to end: 200 MiB attachments, and kill -9 in the middle of one (docs/sync.md,
"Attachments": "Crashes"). CTest name e2e_attachments_large, label long (several minutes).

1. A 200 MiB file each way at once: each arrives once, whole (SHA-256 of a download of the
   copy), never partial on the twin while it crosses, shown sent and received.
2. For each of the private node, the broker and the public node: a 200 MiB file is under way
   (the receiving node shows it partly received), the process is killed with SIGKILL and
   started again. Afterwards the twin holds exactly one copy with the source's SHA-256, no
   partial copy ever appeared, and the transfer resumed instead of starting over:
   - the sending node sealed about one payload per 511 KiB chunk of the file, not the chunks
     before the kill a second time (its seal trace, TWINSYNC_SEAL_TRACE, has one line per
     sealed payload: this counts every chunk it cut);
   - the receiving node's `transferred` never went back below what it held at the kill;
   - the source instance served the file once whole (a read resumed after a kill would be a
     206 Range read, never a second 200);
   - no node logged a damaged file (which would start the file over from offset 0).
3. kill -9 of the public node while it reads the file from acme into its spool: it reads on
   with a Range request after the restart, not the whole file again.
"""

import json
import os
import threading
import time
import unittest

from attach_util import AttachmentCase, PartialWatch, random_file, sha256_file
from harness import wait_until

MiB = 1024 * 1024
SIZE = 200 * MiB
CHUNK = 512 * 1024 - 1024  # PROTO_FILE_CHUNK_DATA
CHUNKS = -(-SIZE // CHUNK)
WINDOW_CHUNKS = -(-16 * MiB // CHUNK)  # what one transaction of the sender may cut at most


class Progress(threading.Thread):
    """Reads the receiving node's row of one file every interval and keeps (time, state,
    transferred) of each reading."""

    def __init__(self, case, node, number, file_sys_id, interval=0.2):
        super().__init__(daemon=True)
        self.case, self.node, self.number, self.file = case, node, number, file_sys_id
        self.interval = interval
        self.readings = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(self.interval):
            out = self.node.cli("attachments", self.case.world.conn, self.number, "--json")
            if out.returncode != 0:
                continue  # the state database is busy with a restart: read again
            rows = [r for r in json.loads(out.stdout)["attachments"]
                    if r["file_sys_id"] == self.file]
            if rows:
                self.readings.append((time.monotonic(), rows[0]["state"], rows[0]["transferred"]))

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)


class LargeAttachmentTest(AttachmentCase):

    FILE_TIMEOUT = 300

    def seals(self, node):
        """Payloads node has sealed so far (lines of its seal trace)."""
        try:
            with open(node.seal_trace) as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def full_reads(self, instance, att_sys_id):
        """(whole reads, range reads) of attachment att_sys_id's content on instance."""
        paths = ("/api/now/attachment/%s/file" % att_sys_id,
                 "/api/now/v1/attachment/%s/file" % att_sys_id)
        log = [r for r in instance.log() if r["path"] in paths and r["method"] == "GET"]
        return (sum(1 for r in log if r["status"] == 200),
                sum(1 for r in log if r["status"] == 206))

    def test_1_200_mib_each_way(self):
        w = self.world
        a, b = self.pair(w.acme, "Two big files")
        paths = {side: random_file(w.tmp, "big-%s.bin" % side, SIZE) for side in ("acme", "globex")}
        hashes = {side: sha256_file(path) for side, path in paths.items()}
        watches = [PartialWatch(w.globex, b["sys_id"], "big-acme.bin", SIZE, hashes["acme"], 0.5),
                   PartialWatch(w.acme, a["sys_id"], "big-globex.bin", SIZE, hashes["globex"], 0.5)]
        for watch in watches:
            watch.start()
        started = time.monotonic()
        try:
            from_acme = w.acme.attach(a["sys_id"], "big-acme.bin", paths["acme"])
            from_globex = w.globex.attach(b["sys_id"], "big-globex.bin", paths["globex"])
            self.assertEqual(from_acme["hash"], hashes["acme"])
            self.assertEqual(from_globex["hash"], hashes["globex"])
            copy_b = self.wait_copy(from_acme, w.globex, b["sys_id"])
            copy_a = self.wait_copy(from_globex, w.acme, a["sys_id"])
        finally:
            for watch in watches:
                watch.stop()
        print("200 MiB each way: %.0f s" % (time.monotonic() - started))
        for watch in watches:
            self.assertGreater(watch.looks, 5)
            self.assertEqual(watch.bad, [], "a partial copy appeared on %s" % watch.instance.name)
        self.assertEqual(w.globex.download(copy_b["sys_id"], sha256=True), hashes["acme"])
        self.assertEqual(w.acme.download(copy_a["sys_id"], sha256=True), hashes["globex"])
        self.assert_once(w.globex, b["sys_id"], [from_acme])
        self.assert_once(w.acme, a["sys_id"], [from_globex])
        self.wait_row(w.pub, a["number"], from_acme["sys_id"], ("sent",))
        self.wait_row(w.priv, b["number"], from_acme["sys_id"], ("received",))
        self.wait_row(w.priv, b["number"], from_globex["sys_id"], ("sent",))
        self.wait_row(w.pub, a["number"], from_globex["sys_id"], ("received",))

    def kill_during_transfer(self, name, origin):
        """A 200 MiB file from instance origin; kill -9 process name once the receiving node
        holds between 30 % and 70 % of it; start it again; check the outcome (module comment)."""
        w = self.world
        target = self.other(origin)
        sender, receiver = self.node_of(origin), self.node_of(target)
        rec, twin = self.pair(origin, "kill %s mid-file" % name)
        path = random_file(w.tmp, "kill-%s.bin" % name, SIZE)
        digest = sha256_file(path)
        fname = "kill-%s.bin" % name
        seals_before = self.seals(sender)
        watch = PartialWatch(target, twin["sys_id"], fname, SIZE, digest, 0.3)
        watch.start()
        progress = None
        try:
            original = origin.attach(rec["sys_id"], fname, path)
            progress = Progress(self, receiver, twin["number"], original["sys_id"])
            progress.start()
            partly = wait_until(
                lambda: [r for r in progress.readings[-1:]
                         if r[1] == "receiving" and 0.3 * SIZE <= r[2] <= 0.7 * SIZE],
                timeout=self.FILE_TIMEOUT, interval=0.05,
                what="%s partly received before killing %s\n%s" % (fname, name, w.logs()))
            w.kill(name)
            at_kill = partly[0][2]
            killed_at = time.monotonic()
            time.sleep(1)
            w.restart(name)
            copy = self.wait_copy(original, target, twin["sys_id"])
        finally:
            watch.stop()
            if progress:
                progress.stop()
        sealed = self.seals(sender) - seals_before
        self.assertGreater(watch.looks, 5)
        self.assertEqual(watch.bad, [], "a partial copy appeared on %s" % target.name)
        self.assertEqual(target.download(copy["sys_id"], sha256=True), digest)
        self.assert_once(target, twin["sys_id"], [original])
        self.wait_row(sender, rec["number"], original["sys_id"], ("sent",))
        self.wait_row(receiver, twin["number"], original["sys_id"], ("received",))
        # Resumed, not started over
        after = [r for r in progress.readings if r[0] > killed_at and r[1] == "receiving"]
        low = min((r[2] for r in after), default=None)
        self.assertTrue(low is None or low >= at_kill,
                        "the receiver's bytes went back from %d to %d after the kill of %s"
                        % (at_kill, low or 0, name))
        self.assertGreaterEqual(sealed, CHUNKS, "the sender sealed fewer payloads than chunks")
        self.assertLessEqual(sealed, CHUNKS + 2 * WINDOW_CHUNKS + 20,
                             "the sender sealed %d payloads for %d chunks: it sent the file again "
                             "after the kill of %s" % (sealed, CHUNKS, name))
        whole, ranged = self.full_reads(origin, original["sys_id"])
        self.assertEqual(whole, 1, "the source instance served the whole file %d times (and %d "
                                   "range reads)" % (whole, ranged))
        for node in (w.pub, w.priv):
            with open(node.log_path, errors="replace") as f:
                damaged = [line for line in f if "damaged" in line]
            self.assertEqual(damaged, [], "%s node log" % node.role)
        print("kill %s at %.0f MiB of %d: %d payloads sealed for %d chunks, %d range reads"
              % (name, at_kill / MiB, SIZE // MiB, sealed, CHUNKS, ranged))
        os.unlink(path)

    def test_2_kill_private_node(self):
        self.kill_during_transfer("priv", self.world.acme)

    def test_3_kill_broker(self):
        self.kill_during_transfer("broker", self.world.globex)

    def test_4_kill_public_node(self):
        self.kill_during_transfer("pub", self.world.acme)

    def test_5_kill_public_node_while_reading(self):
        """kill -9 of the public node while its transfer thread reads the file from acme into
        its spool: after the restart it reads on from where the spool ends (a 206 Range read),
        not the whole file again, and the copy is whole."""
        w = self.world
        conn_id = w.pub.cli_json("connection", "show", w.conn)["id"]
        rec, twin = self.pair(w.acme, "kill pub while reading")
        for attempt in range(3):
            fname = "read-%d.bin" % attempt
            path = random_file(w.tmp, fname, SIZE)
            original = w.acme.attach(rec["sys_id"], fname, path)
            spool = os.path.join(w.pub.state_dir, "files", conn_id, "out-" + original["sys_id"])

            def partly_read():
                try:
                    return 0 < os.stat(spool).st_size < SIZE
                except FileNotFoundError:
                    return False
            deadline = time.monotonic() + 30
            while not partly_read() and time.monotonic() < deadline:
                if os.path.exists(spool) and os.stat(spool).st_size >= SIZE:
                    break
                time.sleep(0.002)
            if partly_read():
                w.kill("pub")
                at_kill = os.stat(spool).st_size
                break
            # Read whole before this look caught it: another file
            self.wait_copy(original, w.globex, twin["sys_id"])
            os.unlink(path)
        else:
            self.fail("the public node read each of 3 files of 200 MiB before a look every 2 ms "
                      "caught one partly read")
        time.sleep(1)
        w.restart("pub")
        copy = self.wait_copy(original, w.globex, twin["sys_id"])
        self.assertEqual(w.globex.download(copy["sys_id"], sha256=True), original["hash"])
        self.assert_once(w.globex, twin["sys_id"], [original])
        whole, ranged = self.full_reads(w.acme, original["sys_id"])
        print("kill pub while reading at %.0f MiB of %d: %d whole reads, %d range reads"
              % (at_kill / MiB, SIZE // MiB, whole, ranged))
        self.assertEqual(whole, 1, "acme served the whole file %d times: the read started over"
                         % whole)
        self.assertGreaterEqual(ranged, 1, "no Range read after the restart")
        os.unlink(path)


if __name__ == "__main__":
    unittest.main()
