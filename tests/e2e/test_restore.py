"""End to end: a node restored from an older backup of its state (docs/operations.md).

The node's copy of node.db is taken while it runs (SQLite's backup API, as the operations guide
says); more incidents and comments sync both ways; the node is stopped, the old copy put back, and
the node started again. Its sequences are now behind the broker's queues: the broker says so in
WELCOME. The node's outbound continues after the broker's position (no new change dropped as a
duplicate). Its inbound does not skip on the broker's word alone: the node lists a `restored`
error, applies nothing from the other side until an admin accepts the position with `errors
retry`, then goes on, and finds the twins it created after the backup by correlation id instead
of creating them again.
"""

import os
import sqlite3
import time
import unittest

from harness import POLL_MS, ConnectedTest, wait_until

SYNCED = ("short_description", "urgency", "impact", "state")


class RestoreTest(ConnectedTest):

    def backup(self, node):
        path = os.path.join(self.world.tmp, "%s-backup.db" % node.role)
        with node.db() as live, sqlite3.connect(path) as copy:
            live.backup(copy)
        return path

    def restore(self, node, path):
        node.stop()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(os.path.join(node.state_dir, "node.db" + suffix))
            except FileNotFoundError:
                pass
        with sqlite3.connect(path) as copy, sqlite3.connect(
                os.path.join(node.state_dir, "node.db")) as back:
            copy.backup(back)
        os.chmod(os.path.join(node.state_dir, "node.db"), 0o600)
        node.start()

    def round_trip(self, tag):
        """An incident from each side with a comment; returns (acme record, its twin, globex
        record, its twin) once both twins and comments arrived."""
        w = self.world
        a = w.acme.create(short_description="%s from acme" % tag, urgency="1", comments=tag + " a")
        g = w.globex.create(short_description="%s from globex" % tag, urgency="1",
                            comments=tag + " g")
        a_twin, g_twin = self.twin(w.globex, a["sys_id"]), self.twin(w.acme, g["sys_id"])
        wait_until(lambda: [e["value"] for e in w.globex.journal(a_twin["sys_id"])]
                   == ["[acme] alice wrote:\n%s a" % tag], what="comment of %s on globex" % tag)
        wait_until(lambda: [e["value"] for e in w.acme.journal(g_twin["sys_id"])]
                   == ["[globex] bob wrote:\n%s g" % tag], what="comment of %s on acme" % tag)
        return a, a_twin, g, g_twin

    def same(self, a_side, a_id, b_side, b_id):
        def check():
            a, b = a_side.get(a_id), b_side.get(b_id)
            return all(a[f] == b[f] for f in SYNCED)
        wait_until(check, timeout=30, what="same values\n" + self.world.logs())

    def restored_from_backup(self, node):
        w = self.world
        self.round_trip("before")
        w.settle()
        path = self.backup(node)
        # After the backup: sequences move on both ways, twins are created on both sides.
        a1, a1_twin, g1, g1_twin = self.round_trip("after backup")
        w.settle()
        self.restore(node, path)
        # The broker says the other side's messages after the backup were applied here and are
        # gone. Its word alone skips nothing: inbound waits for the admin.
        errors = wait_until(lambda: node.cli_json("errors", "list")["errors"], timeout=30,
                            what="the restored notice\n" + w.logs())
        self.assertEqual([e["code"] for e in errors], ["restored"], errors)
        self.assertIn("older than the broker", errors[0]["message"])
        self.assertIn("inbound sync is held", errors[0]["message"])
        self.assertEqual(node.cli_json("connection", "show", w.conn)["status"], "active")
        with open(node.log_path, errors="replace") as f:
            self.assertIn("state behind broker", f.read())
        other = w.globex if node is w.pub else w.acme
        mine = w.acme if node is w.pub else w.globex
        held = other.create(short_description="while held", urgency="1")
        time.sleep(3 * POLL_MS / 1000 + 2)
        self.assertIsNone(mine.twin_of(held["sys_id"]), "nothing applied before the admin says so")
        out = node.cli("errors", "retry", str(errors[0]["id"]), "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr)
        wait_until(lambda: node.cli_json("errors", "list")["errors"] == [],
                   what="the restored notice acknowledged")
        self.twin(mine, held["sys_id"])
        # New changes both ways go through: nothing dropped as a duplicate, nothing waited for.
        self.round_trip("after restore")
        # Twins made after the backup still pair up, by correlation id: no second twin.
        w.acme.update(a1["sys_id"], impact="1", short_description="a1 changed after restore")
        w.globex.update(g1["sys_id"], impact="2", short_description="g1 changed after restore")
        self.same(w.acme, a1["sys_id"], w.globex, a1_twin["sys_id"])
        self.same(w.globex, g1["sys_id"], w.acme, g1_twin["sys_id"])
        self.assertEqual(len(w.globex.twins_of(a1["sys_id"])), 1)
        self.assertEqual(len(w.acme.twins_of(g1["sys_id"])), 1)
        self.assertEqual(node.cli_json("errors", "list")["errors"], [])
        # The restored node sealed again after the restore: never a (key, nonce) pair twice
        for n in (w.pub, w.priv):
            with open(n.seal_trace) as f:
                pairs = f.read().split("\n")[:-1]
            self.assertTrue(pairs, "the trace of %s holds the seals" % n.role)
            self.assertEqual(len(pairs), len(set(pairs)), "a (key, nonce) pair used twice")

    def test_1_private_node_restored(self):
        self.restored_from_backup(self.world.priv)

    def test_2_public_node_restored(self):
        self.restored_from_backup(self.world.pub)


if __name__ == "__main__":
    unittest.main()
