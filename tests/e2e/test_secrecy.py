"""End to end: what a leaked code, the broker and the disk reveal (docs/security.md).

With a real broker and both nodes, started under umask 022:

- a leaked invitation code opens nothing: payloads sealed by each node are read from the broker's
  store (broker.db, messages table) and handed, with the code and everything the broker saw (JOIN's
  kx and auth), to proto_leak_probe, which tries every root computable from them (the code's
  secret as the root, as before the key exchange, and the rest of tests/proto/leak.h): none opens
  a payload, while the root in a node's key file (the control) opens every one;
- after the join the key files hold one line, root=, and no file of either state directory holds
  the invitation secret, the join token or the public node's X25519 private key (raw or hex);
- broker.db holds neither instance URL, in any text column of any table, nor anywhere in the bytes
  of broker.db and its WAL, after a handshake and syncs both ways;
- node.db, node.db-wal and node.db-shm are 0600 on both nodes although the umask was 022.
"""

import base64
import glob
import os
import sqlite3
import subprocess
import unittest

from harness import HERE, World, wait_until

PROBE = os.environ.get("TWINSYNC_LEAK_PROBE",
                       os.path.join(HERE, "..", "..", "build", "tests", "proto", "proto_leak_probe"))


def code_secrets(code):
    """The invitation secret and the join token of a code, as raw bytes. The code is
    "tsi1." base64url(checksum(8) || msgpack body); in the body each is a msgpack str key
    followed by bin8 of 32 bytes (docs/protocol.md §7)."""
    text = code[len("tsi1."):]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    body = raw[8:]
    out = {}
    for name in ("secret", "join_token"):
        marker = bytes([0xa0 | len(name)]) + name.encode() + b"\xc4\x20"
        at = body.index(marker) + len(marker)
        out[name] = body[at:at + 32]
    return out


def key_file(node, conn_id):
    with open(os.path.join(node.state_dir, "keys", conn_id + ".secret")) as f:
        return f.read()


def files_under(path):
    return [p for p in glob.glob(os.path.join(path, "**"), recursive=True) if os.path.isfile(p)]


class SecrecyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.old_umask = os.umask(0o022)
        cls.world = World().start()
        w = cls.world
        out = w.pub.cli("connection", "initiate", "--name", "leaky", "--trigger", "urgency=1",
                        "--json", "--wait", "20")
        assert out.returncode == 0, out.stderr + w.logs()
        import json
        doc = json.loads(out.stdout)
        cls.code, cls.conn_id = doc["code"], doc["id"]
        # The public node's key file while pending: what the join must wipe.
        cls.pending = dict(line.split("=", 1) for line in key_file(w.pub, cls.conn_id).split())
        out = w.priv.cli("connection", "accept", cls.code, "--trigger", "urgency=1", "--wait", "20")
        assert out.returncode == 0, out.stderr + w.logs()
        w.conn = "leaky"
        for node in (w.pub, w.priv):
            wait_until(lambda: node.cli_json("connection", "show", "leaky")["status"] == "active",
                       what="%s active" % node.role)

    @classmethod
    def tearDownClass(cls):
        cls.world.cleanup()
        os.umask(cls.old_umask)

    def broker_db(self):
        path = os.path.join(self.world.broker_dir, "broker.db")
        return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)

    def stored_payloads(self, direction):
        """(seq, payload) of the messages the broker holds from the public (0) or private (1)
        node."""
        with self.broker_db() as db:
            return db.execute("SELECT m.seq, m.payload FROM messages m JOIN queues q"
                              " ON q.qid = m.qid WHERE q.conn = ? AND q.dir = ? ORDER BY m.seq",
                              (self.conn_id, direction)).fetchall()

    def test_1_pending_key_file_held_the_exchange(self):
        # The fixture is not blind: before the join the public key file held all three.
        self.assertEqual(sorted(self.pending), ["invite", "kx", "token"])
        secrets = code_secrets(self.code)
        self.assertEqual(self.pending["invite"], secrets["secret"].hex())
        self.assertEqual(self.pending["token"], secrets["join_token"].hex())

    def test_2_key_files_hold_the_root_alone(self):
        w = self.world
        roots = []
        for node in (w.pub, w.priv):
            lines = key_file(node, self.conn_id).splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], r"^root=[0-9a-f]{64}$")
            roots.append(lines[0])
        self.assertEqual(roots[0], roots[1], "both nodes derived the same root")
        secrets = code_secrets(self.code)
        gone = {"invitation secret": secrets["secret"], "join token": secrets["join_token"],
                "public X25519 private key": bytes.fromhex(self.pending["kx"])}
        for node in (w.pub, w.priv):
            for path in files_under(node.state_dir):
                with open(path, "rb") as f:
                    data = f.read()
                for what, value in gone.items():
                    self.assertNotIn(value, data, "%s in %s" % (what, path))
                    self.assertNotIn(value.hex().encode(), data, "%s (hex) in %s" % (what, path))

    def test_3_broker_learns_no_instance_url(self):
        w = self.world
        a = w.acme.create(short_description="url check from acme", urgency="1")
        b = w.globex.create(short_description="url check from globex", urgency="1")
        wait_until(lambda: w.globex.twin_of(a["sys_id"]) and w.acme.twin_of(b["sys_id"]),
                   timeout=40, what="twins both ways\n" + w.logs())
        urls = [w.acme.url, w.globex.url]
        hosts = [u.split("//", 1)[1] for u in urls]  # 127.0.0.1:PORT
        with self.broker_db() as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            self.assertIn("connections", tables)
            for table in tables:
                for row in db.execute("SELECT * FROM %s" % table):
                    for value in row:
                        if isinstance(value, str):
                            for host in hosts:
                                self.assertNotIn(host, value, "%s in broker.db %s" % (host, table))
            descs = db.execute("SELECT public_desc, private_desc FROM connections WHERE conn = ?",
                               (self.conn_id,)).fetchone()
        self.assertEqual(descs, ("acme-node", "globex-node"))
        for path in glob.glob(os.path.join(w.broker_dir, "broker.db*")):
            with open(path, "rb") as f:
                data = f.read()
            for host in hosts:
                self.assertNotIn(host.encode(), data, "%s in the bytes of %s" % (host, path))

    def test_4_state_files_private_under_umask_022(self):
        for node in (self.world.pub, self.world.priv):
            for name in ("node.db", "node.db-wal", "node.db-shm"):
                path = os.path.join(node.state_dir, name)
                self.assertTrue(os.path.exists(path), path)
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600, path)

    def test_5_leaked_code_opens_no_payload(self):
        w = self.world
        # Each receiver stopped: what its partner seals stays in the broker's store.
        w.priv.stop()
        w.acme.create(short_description="sealed for globex", urgency="1", comments="secret words")
        to_private = wait_until(lambda: self.stored_payloads(0), timeout=30,
                                what="a payload for the private node in broker.db\n" + w.logs())
        w.priv.start()
        w.pub.stop()
        w.globex.create(short_description="sealed for acme", urgency="1", comments="more words")
        to_public = wait_until(lambda: self.stored_payloads(1), timeout=30,
                               what="a payload for the public node in broker.db\n" + w.logs())
        with self.broker_db() as db:
            kx, auth = db.execute("SELECT private_kx, private_auth FROM connections WHERE conn = ?",
                                  (self.conn_id,)).fetchone()
        self.assertEqual((len(kx), len(auth)), (32, 32), "the broker keeps JOIN's kx and auth")
        root = key_file(w.priv, self.conn_id).strip().split("=", 1)[1]
        lines = ["code " + self.code, "join %s %s" % (kx.hex(), auth.hex()), "root " + root]
        lines += ["payload 1 %d %s" % (seq, bytes(p).hex()) for seq, p in to_private]
        lines += ["payload 2 %d %s" % (seq, bytes(p).hex()) for seq, p in to_public]
        out = subprocess.run([PROBE], input="\n".join(lines) + "\n", capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertNotIn("OPENED", out.stdout)
        self.assertEqual(out.stdout.count("control: the joined root opens it"),
                         len(to_private) + len(to_public), out.stdout)
        w.pub.start()
        wait_until(lambda: not self.stored_payloads(0) and not self.stored_payloads(1),
                   timeout=40, what="both queues drained\n" + w.logs())


if __name__ == "__main__":
    unittest.main()
