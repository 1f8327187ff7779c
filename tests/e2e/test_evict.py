"""End to end: nobody can cut a node off by its name (issue 12, first attack).

Nodes used to set their node name as ZeroMQ routing id and the broker let a newcomer take a
routing id over (ZMQ_ROUTER_HANDOVER). Anyone holding the broker's public key (every invitation
code and node configuration carries it) who knew a node's name could connect with a random CURVE
key and that routing id: the broker ended the node's session (reason=routing_id_taken), and one
PING every 0.5 s kept the node's link going down for as long as it ran.

Here tests/broker/broker_attacker.c does exactly that against both nodes of a connected world:
for 30 s at least, per node name, a new connection every 0.5 s with a fresh random key and the
name as routing id, sending HELLO and PING. Meanwhile
incidents are raised on both sides. Proven: neither node's broker link changes state (it stays
ready, never says HELLO again), the broker never ends either node's session, and every incident
raised during the attack gets its twin while the attack still runs. On the code before issue 12
both nodes' links went down within the first second (the node logs show `state=hello ... ERROR
401` after every takeover) and the broker logged `reason=routing_id_taken`.

TWINSYNC_ATTACKER names the tool (CTest sets it).
"""

import os
import subprocess
import time
import unittest

from harness import ConnectedTest, wait_until

ATTACKER = os.environ.get("TWINSYNC_ATTACKER", "broker_attacker")
ATTACK_SECONDS = 30   # how long the attack runs at least; the test stops it after
ATTACK_MAX_SECONDS = 300


def log_since(path, offset):
    """The text of the log at path from byte offset on."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def counts(line):
    """The key=value pairs of the attacker's summary line, as a dict of ints and strings."""
    out = {}
    for part in line.split():
        key, _, value = part.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


class EvictTest(ConnectedTest):

    def test_node_names_as_routing_ids_take_nothing_over(self):
        w = self.world
        names = ["%s-node" % w.globex.name, "%s-node" % w.acme.name]
        keys = {"public": w.pub.key(), "private": w.priv.key()}
        broker_log = os.path.join(w.broker_dir, "broker.log")
        # Both links are ready before the attack (the connection is active on both sides).
        for node in (w.pub, w.priv):
            wait_until(lambda: "state=ready" in log_since(node.log_path, 0),
                       what="%s link ready" % node.role)
        marks = {path: log_size(path) for path in (w.pub.log_path, w.priv.log_path, broker_log)}

        attacker = subprocess.Popen([ATTACKER, "evict", w.broker_endpoint, w.broker_key,
                                     str(ATTACK_MAX_SECONDS)] + names,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        try:
            # Incidents on both sides, one pair every few seconds for ATTACK_SECONDS; each twin
            # must appear while the attack goes on (it runs until stopped below).
            made = 0
            while time.monotonic() - started < ATTACK_SECONDS:
                made += 1
                a = w.acme.create(short_description="under attack a%d" % made, urgency="1")
                g = w.globex.create(short_description="under attack g%d" % made, urgency="1")
                self.twin(w.globex, a["sys_id"])
                self.twin(w.acme, g["sys_id"])
                self.assertIsNone(attacker.poll(), "the attacker died")
                time.sleep(2)
            attacker.terminate()  # it prints its counts and exits
            out, _ = attacker.communicate(timeout=30)
        finally:
            if attacker.poll() is None:
                attacker.kill()
                attacker.wait()
        self.assertEqual(attacker.returncode, 0, out)
        summary = counts(out.strip().splitlines()[-1])
        # The attack ran: two sockets, a HELLO and a PING each every 0.5 s, and the broker
        # answered them.
        self.assertEqual(summary["sockets"], 2, out)
        self.assertGreaterEqual(summary["hellos"], 2 * (ATTACK_SECONDS * 2 - 4), out)
        self.assertGreater(summary["welcomed"] + summary["error_401"] + summary["error_403"], 0,
                           out)
        self.assertGreaterEqual(made, 3)

        # Neither link changed state during the attack, and the broker ended neither session.
        for node in (w.pub, w.priv):
            changes = [line for line in log_since(node.log_path, marks[node.log_path]).splitlines()
                       if 'msg="broker link"' in line]
            self.assertEqual(changes, [], "%s link disturbed by the attack:\n%s\n%s"
                             % (node.role, "\n".join(changes[:10]), w.logs()))
        broker_text = log_since(broker_log, marks[broker_log])
        for role, key in keys.items():
            drops = [line for line in broker_text.splitlines()
                     if "peer disconnected" in line and key in line]
            self.assertEqual(drops, [], "the %s node's session ended:\n%s"
                             % (role, "\n".join(drops[:10])))
        self.assertNotIn("routing_id_taken", broker_text)


if __name__ == "__main__":
    unittest.main()
