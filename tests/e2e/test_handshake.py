"""End to end: the invitation handshake (docs/sync.md §1), with a real broker and both nodes.

initiate -> accept -> active on both sides; both admins see the same fingerprint (initiate,
accept, connection show on each side); once joined the public node no longer gives the code
(connection show --code refused with one line, status 1); wrong, truncated, altered, expired and
reused codes are refused with one clear line and a non-zero status, and nothing is written; the
private node listens on no TCP port; a code whose invitation secret was changed on its way (and
re-encoded with a valid checksum) shows another fingerprint, and the public node refuses the join
it leads to (connection error, "join refused"), although the broker accepted its token.
"""

import base64
import hashlib
import json
import os
import re
import time
import unittest

from harness import PRIVATE, Node, World, wait_until


class HandshakeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.world = World().start()

    @classmethod
    def tearDownClass(cls):
        cls.world.cleanup()

    def private_connections(self):
        """The private node's connections, less what the daemon's own polling changes
        (last_poll moves whenever a poll lands, which is no write by the command)."""
        conns = self.world.priv.cli_json("connection", "list")["connections"]
        return [{k: v for k, v in c.items() if k != "last_poll"} for c in conns]

    def assert_refused(self, code, words):
        """accept(code) fails with exactly one stderr line containing words, writes nothing."""
        before = self.private_connections()
        out = self.world.priv.cli("connection", "accept", code, "--wait", "10")
        self.assertNotEqual(out.returncode, 0, out.stdout)
        lines = out.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, out.stderr)
        self.assertIn(words, lines[0])
        self.assertTrue(lines[0].startswith("twinsync-private: "), lines[0])
        self.assertEqual(self.private_connections(), before)
        return lines[0]

    def test_1_initiate_accept_active_on_both_sides(self):
        w = self.world
        out = w.pub.cli("connection", "initiate", "--name", "first", "--mode", "basic", "--trigger",
                        "urgency=1", "--json", "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr + w.logs())
        import json
        doc = json.loads(out.stdout)
        self.assertEqual(doc["status"], "pending")
        self.assertTrue(doc["registered"], "the daemon registered the INVITE before printing")
        code = doc["code"]
        self.assertTrue(code.startswith("tsi1."))
        fingerprint = doc["fingerprint"]
        self.assertRegex(fingerprint, r"^\d{5}( \d{5}){4}$")
        self.assertEqual(w.pub.cli_json("connection", "show", "first")["status"], "pending")

        # Refusals before the good accept: garbage, truncated, altered.
        self.assert_refused("hello world", "cannot read invitation code")
        self.assert_refused(code[:len(code) // 2], "cannot read invitation code")
        i = len(code) // 2
        altered = code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1:]
        self.assert_refused(altered, "cannot read invitation code")

        out = w.priv.cli("connection", "accept", code, "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr + w.logs())
        self.assertIn("is active", out.stdout)
        # The private admin reads the same fingerprint as the public admin.
        shown = re.search(r"fingerprint: (\d{5}( \d{5}){4})", out.stdout)
        self.assertIsNotNone(shown, out.stdout)
        self.assertEqual(shown.group(1), fingerprint)
        wait_until(lambda: w.pub.cli_json("connection", "show", "first")["status"] == "active",
                   what="public side active")
        priv = w.priv.cli_json("connection", "show", "first")
        self.assertEqual(priv["status"], "active")
        self.assertIn("acme-node", priv["peer"])
        self.assertIn("globex-node", w.pub.cli_json("connection", "show", "first")["peer"])
        # connection show, text and JSON, on both sides: the same fingerprint.
        for node in (w.pub, w.priv):
            self.assertEqual(node.cli_json("connection", "show", "first")["fingerprint"],
                             fingerprint)
            out = node.cli("connection", "show", "first")
            self.assertRegex(out.stdout, r"(?m)^fingerprint +%s$" % re.escape(fingerprint))
        # Joined: the code's secrets are gone, so is the code.
        out = w.pub.cli("connection", "show", "first", "--code")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertEqual(out.stdout, "")
        lines = out.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, out.stderr)
        self.assertIn("exists only while the connection is pending", lines[0])

        # The same code again on the same node: already accepted, nothing changes.
        self.assert_refused(code, "accepted already")
        type(self).code = code

    def test_2_reused_code_on_another_node_refused_by_broker(self):
        # A second private node presents the burnt join token: the broker refuses (409).
        w = self.world
        other = Node(w, "private", w.globex)
        other.dir = os.path.join(w.tmp, "private2")
        other.state_dir = os.path.join(other.dir, "state")
        other.config = os.path.join(other.dir, "node.ini")
        other.log_path = os.path.join(other.dir, "node.log")
        os.makedirs(other.dir, exist_ok=True)
        other.password_file = w.priv.password_file
        other.write_config()
        with open(other.config) as f:
            text = f.read().replace("name = globex-node", "name = intruder-node")
        with open(other.config, "w") as f:
            f.write(text)
        other.proc = None
        import subprocess
        log = open(other.log_path, "ab")
        other.proc = subprocess.Popen([PRIVATE, "run", "--config", other.config], stdout=log,
                                      stderr=subprocess.STDOUT)
        log.close()
        try:
            out = other.cli("connection", "accept", self.code, "--wait", "20")
            self.assertNotEqual(out.returncode, 0)
            lines = out.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, out.stderr)
            self.assertIn("cannot accept invitation", lines[0])
            self.assertIn("409", lines[0])
            self.assertEqual(other.cli_json("connection", "list")["connections"], [])
        finally:
            other.stop()

    def test_3_expired_code_refused(self):
        w = self.world
        out = w.pub.cli("connection", "initiate", "--name", "late", "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr)
        conn_id = w.pub.cli_json("connection", "show", "late")["id"]
        db = w.pub.db()
        db.execute("UPDATE connections SET expires = ? WHERE id = ?", (int(time.time()) - 5, conn_id))
        db.commit()
        db.close()
        out = w.pub.cli("connection", "show", "late", "--code", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        import json
        expired = json.loads(out.stdout)["code"]
        line = self.assert_refused(expired, "expired")
        self.assertIn("cannot read invitation code", line)

    def test_4_private_node_listens_on_no_port(self):
        pid = self.world.priv.proc.pid
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            with open(table) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                        listening.append(cols[1])
        self.assertEqual(listening, [], "twinsync-private listens on %s" % listening)
        self.assertTrue(inodes, "the private node should have its outbound sockets")


    def test_5_altered_secret_join_refused_by_the_public_node(self):
        w = self.world
        doc = w.pub.cli_json("connection", "initiate", "--name", "tampered", "--wait", "20")
        # A man in the middle changes the invitation secret and makes the checksum right again:
        # tsi1. base64url(first 8 bytes of SHA-256(body) || body); the secret is the bin8 of 32
        # bytes after the msgpack key "secret" (docs/protocol.md §7).
        text = doc["code"][len("tsi1."):]
        body = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))[8:])
        at = body.index(b"\xa6secret\xc4\x20") + 9
        body[at] ^= 0x01
        raw = hashlib.sha256(bytes(body)).digest()[:8] + bytes(body)
        altered = "tsi1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        out = w.priv.cli("connection", "accept", altered, "--json", "--wait", "20")
        self.assertEqual(out.returncode, 0, out.stderr + w.logs())  # the broker took the token
        accepted = json.loads(out.stdout)
        self.assertNotEqual(accepted["fingerprint"], doc["fingerprint"],
                            "the admins' comparison catches the altered code")
        def refused():
            shown = w.pub.cli_json("connection", "show", "tampered")
            return shown["status"] == "error" and shown
        shown = wait_until(refused, what="the public node refuses the join\n" + w.logs())
        self.assertIn("join refused", shown["error"])
        self.assertIn("not authenticated", shown["error"])
        # No root was derived: the public key file still holds the exchange, no root= line.
        with open(os.path.join(w.pub.state_dir, "keys", doc["id"] + ".secret")) as f:
            self.assertNotIn("root=", f.read())


if __name__ == "__main__":
    unittest.main()
