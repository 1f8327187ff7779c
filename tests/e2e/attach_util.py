"""attach_util: what the attachment suites share (test_attachments, test_attachments_large).

AttachmentCase is a ConnectedTest whose nodes scan for deleted files every second
(node.attachment_scan = 1s) and whose helpers speak of files: a twinned pair of incidents, the
`attachments` command's rows, the copies of an original on the twin, and the checks that a copy
is the original (name, type, size, SHA-256) and that it is there exactly once.
"""

import hashlib
import os
import threading
import time

from harness import ConnectedTest, wait_until

SYNC_USER = "sync"  # the integration user of the harness's emulators


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def random_file(directory, name, size):
    """A file of size random bytes in directory (1 MiB at a time); returns its path."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


class PartialWatch(threading.Thread):
    """Lists the attachments of one record every `interval` seconds until stopped, and keeps
    every row that is not a whole copy: a file named `name` whose size or hash differs from
    (size, sha256). Also counts the lists, so that a test can tell it looked."""

    def __init__(self, instance, record, name, size, sha256, interval=0.1):
        super().__init__(daemon=True)
        self.instance, self.record, self.name = instance, record, name
        self.size, self.sha256, self.interval = str(size), sha256, interval
        self.bad, self.looks, self.errors = [], 0, []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(self.interval):
            try:
                rows = self.instance.attachments(self.record)
            except (AssertionError, OSError) as e:  # an emulator answer cut: look again
                self.errors.append(str(e))
                continue
            self.looks += 1
            for row in rows:
                if row["file_name"] == self.name and (row["size_bytes"] != self.size
                                                      or row["hash"] != self.sha256):
                    self.bad.append((row["sys_id"], row["size_bytes"], row["hash"]))

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)


class AttachmentCase(ConnectedTest):
    """A connected world for the attachment suites (see the module's comment)."""

    TWIN_TIMEOUT = 30
    FILE_TIMEOUT = 60

    @classmethod
    def prepare(cls, world):
        for node in (world.pub, world.priv):
            node.node_extra = ["attachment_scan = 1s"]

    # -- who is who

    def node_of(self, instance):
        return self.world.pub if instance is self.world.acme else self.world.priv

    def other(self, instance):
        return self.world.globex if instance is self.world.acme else self.world.acme

    def pair(self, origin, text, **fields):
        """A new incident on instance origin matching the trigger and its twin on the other
        instance: (record, twin)."""
        rec = origin.create(short_description=text, urgency="1", **fields)
        return rec, self.twin(self.other(origin), rec["sys_id"])

    # -- what the nodes say

    def rows(self, node, number):
        """The `attachments` rows of a twin on node (by its local or remote number)."""
        return node.cli_json("attachments", self.world.conn, number)["attachments"]

    def row(self, node, number, file_sys_id):
        """The one row of node's twin `number` for the source attachment file_sys_id, or None."""
        found = [r for r in self.rows(node, number) if r["file_sys_id"] == file_sys_id]
        self.assertLessEqual(len(found), 1, "two rows of one file on %s: %r" % (node.role, found))
        return found[0] if found else None

    def wait_row(self, node, number, file_sys_id, states, timeout=None):
        """Waits until the row of file_sys_id on node is in one of states; returns it."""
        last = []

        def check():
            last[:] = [self.row(node, number, file_sys_id)]
            return last[0] if last[0] and last[0]["state"] in states else None
        try:
            return wait_until(check, timeout=timeout or self.FILE_TIMEOUT, interval=0.3,
                              what="file %s %s on the %s node" % (file_sys_id, "/".join(states),
                                                                  node.role))
        except AssertionError as e:
            raise AssertionError("%s\nlast row: %r\n%s" % (e, last, self.world.logs())) from None

    # -- what the instances hold

    def copies(self, instance, record, original):
        """The attachments of record on instance that the integration user stored under the
        original's file name."""
        return [a for a in instance.attachments(record)
                if a["file_name"] == original["file_name"] and a["sys_created_by"] == SYNC_USER]

    def wait_copy(self, original, instance, record, timeout=None):
        """Waits until the copy of original is on record of instance; returns it after checking
        that it is the original (name, type, size, SHA-256) and that it is alone."""
        found = wait_until(lambda: self.copies(instance, record, original),
                           timeout=timeout or self.FILE_TIMEOUT, interval=0.3,
                           what="a copy of %r on %s\n%s" % (original["file_name"], instance.name,
                                                             self.world.logs()))
        self.assertEqual(len(found), 1, "copies of %r: %r" % (original["file_name"], found))
        self.assert_same(original, found[0])
        return found[0]

    def assert_same(self, original, copy):
        for field in ("file_name", "content_type", "size_bytes", "hash"):
            self.assertEqual(copy[field], original[field], "%s of the copy of %r"
                             % (field, original["file_name"]))
        self.assertEqual(copy["sys_created_by"], SYNC_USER)

    def assert_once(self, instance, record, originals):
        """record on instance holds exactly one copy of each original, checked again after a
        few polls (a late duplicate shows up)."""
        time.sleep(2)
        for original in originals:
            found = self.copies(instance, record, original)
            self.assertEqual(len(found), 1, "copies of %r on %s: %r"
                             % (original["file_name"], instance.name, found))
            self.assert_same(original, found[0])
