#!/usr/bin/env python3
"""The twinsync demo: two emulated ServiceNow instances kept in sync.

Started by scripts/demo after the build. It runs everything on 127.0.0.1 in a
temporary directory: two emulators ("acme", public; "partner", private), the
broker and both nodes. It sets up a Basic connection the way two admins
would (initiate on the public side, accept the invitation code on the private
side), then acts as human users on both instances through the REST API and
shows each change arrive on the other side. Without --keep it stops
everything it started and exits 0; any step that does not happen in time
exits 1 with the reason.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNEMU = os.path.join(ROOT, "tests", "snemu", "snemu.py")
SYNC_USER = "twinsync"
WAIT_S = 60


class DemoError(Exception):
    """A step that did not happen; the message says which."""


def say(text):
    print(text, flush=True)


def step(number, text):
    say(f"\n==> {number}. {text}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """One emulated ServiceNow instance and the REST calls a person makes."""

    def __init__(self, name, workdir, people):
        self.name = name
        self.people = people  # user name -> (password, full name)
        self.sync_password = f"{name}-sync-secret"
        port_file = os.path.join(workdir, f"{name}.port")
        args = [sys.executable, SNEMU, "--port", "0", "--port-file", port_file,
                "--instance", name,
                "--user", f"{SYNC_USER}:{self.sync_password}:twinsync integration"]
        for user, (password, full) in people.items():
            args += ["--user", f"{user}:{password}:{full}"]
        self.log = open(os.path.join(workdir, f"snemu-{name}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise DemoError(f"emulator {name} did not start (see {self.log.name})")
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read().strip())
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, user, method, path, body=None):
        password = self.people[user][0]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": "Basic " + token, "Accept": "application/json",
            "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text)["result"] if text else None

    def create(self, user, **fields):
        return self.call(user, "POST", "/api/now/table/incident", fields)

    def update(self, user, sys_id, **fields):
        return self.call(user, "PATCH", f"/api/now/table/incident/{sys_id}", fields)

    def find(self, user, query):
        path = "/api/now/table/incident?sysparm_query=" + urllib.request.quote(query)
        return self.call(user, "GET", path)

    def comments(self, user, sys_id):
        query = urllib.request.quote(f"element_id={sys_id}^element=comments^ORDERBYsys_created_on")
        return self.call(user, "GET", f"/api/now/table/sys_journal_field?sysparm_query={query}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


class Demo:
    def __init__(self, build, keep, poll_ms):
        self.build = build
        self.keep = keep
        self.poll_ms = poll_ms
        self.dir = tempfile.mkdtemp(prefix="twinsync-demo-")
        self.procs = []
        self.instances = []

    # ---- processes -------------------------------------------------------

    def binary(self, name):
        path = os.path.join(self.build, name)
        if not os.access(path, os.X_OK):
            raise DemoError(f"{path} is missing: did the build succeed?")
        return path

    def run(self, args, check=True):
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise DemoError(f"{' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done

    def spawn(self, name, args):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc, log))
        return proc

    def stop_all(self):
        for name, proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        for instance in self.instances:
            instance.stop()

    # ---- configuration ---------------------------------------------------

    def write(self, name, text, mode=0o600):
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def node_config(self, role, instance, broker_key):
        state = os.path.join(self.dir, f"{role}-state")
        os.makedirs(state, mode=0o700, exist_ok=True)
        secret = self.write(f"{role}.password", instance.sync_password + "\n")
        return self.write(f"{role}.ini", f"""# twinsync-{role} for the demo
[node]
name = {instance.name}-node
state_dir = {state}
poll_interval_ms = {self.poll_ms}
log_level = info

[servicenow]
url = {instance.url}
instance = {instance.name}
user = {SYNC_USER}
password_file = {secret}

[broker]
endpoint = tcp://127.0.0.1:{self.broker_port}
public_key = {broker_key}
""")

    # ---- waiting ---------------------------------------------------------

    @staticmethod
    def wait_for(what, probe):
        deadline = time.time() + WAIT_S
        while time.time() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.2)
        raise DemoError(f"timed out after {WAIT_S} s waiting for {what}")

    # ---- the story -------------------------------------------------------

    def main(self):
        public_bin = self.binary("public-node/twinsync-public")
        private_bin = self.binary("private-node/twinsync-private")
        broker_bin = self.binary("broker/twinsync-broker")

        step(1, "Start two emulated ServiceNow instances")
        acme = Instance("acme", self.dir, {"alice": ("alice-pw", "Alice Adams")})
        partner = Instance("partner", self.dir, {"bob": ("bob-pw", "Bob Brown")})
        self.instances += [acme, partner]
        say(f"    acme    (public side)  {acme.url}   user alice / alice-pw")
        say(f"    partner (private side) {partner.url}   user bob / bob-pw")

        step(2, "Start the broker; both nodes will dial out to it")
        self.broker_port = free_port()
        self.metrics_port = free_port()
        broker_state = os.path.join(self.dir, "broker-state")
        os.makedirs(broker_state, mode=0o700)
        broker_key = self.run([broker_bin, "key", "--state-dir", broker_state]).stdout.strip()
        public_cfg = self.node_config("public", acme, broker_key)
        private_cfg = self.node_config("private", partner, broker_key)
        public_node_key = self.run([public_bin, "key", "--config", public_cfg]).stdout.strip()
        broker_cfg = self.write("broker.ini", f"""# twinsync-broker for the demo
[broker]
endpoint = tcp://127.0.0.1:{self.broker_port}
state_dir = {broker_state}
metrics_port = {self.metrics_port}
public_keys = {public_node_key}
""")
        self.spawn("broker", [broker_bin, "run", "--config", broker_cfg])
        say(f"    broker on tcp://127.0.0.1:{self.broker_port}, "
            f"metrics on http://127.0.0.1:{self.metrics_port}/metrics")
        say(f"    broker key {broker_key}")

        step(3, "Start twinsync-public (beside acme) and twinsync-private (beside partner)")
        self.spawn("public", [public_bin, "run", "--config", public_cfg])
        self.spawn("private", [private_bin, "run", "--config", private_cfg])
        say("    the private node opens no listening socket: it only dials out")

        step(4, "acme's admin initiates a Basic connection and gets an invitation code")
        out = self.run([public_bin, "connection", "initiate", "--config", public_cfg,
                        "--name", "acme-partner", "--mode", "basic",
                        "--trigger", "active=true", "--json"]).stdout
        initiated = json.loads(out)
        code = initiated["code"]
        conn = initiated.get("id") or initiated.get("connection")
        say(f"    $ twinsync-public connection initiate --name acme-partner --mode basic "
            f"--trigger active=true")
        say(f"    invitation code ({len(code)} characters): {code[:48]}...")

        step(5, "partner's admin accepts the code; the connection becomes active on both sides")
        accepted = self.run([private_bin, "connection", "accept", "--config", private_cfg,
                             "--trigger", "active=true", code])
        say("    $ twinsync-private connection accept CODE --trigger active=true")
        for line in accepted.stdout.strip().splitlines():
            say("    " + line)
        self.wait_for("the public side to see the connection active", lambda: '"active"' in self.run(
            [public_bin, "connection", "show", conn, "--config", public_cfg, "--json"]).stdout)
        reused = self.run([private_bin, "connection", "accept", "--config", private_cfg, code],
                          check=False)
        say(f"    accepting the same code again is refused: {reused.stderr.strip()}")

        step(6, "Alice raises an incident on acme; its twin appears on partner")
        inc = acme.create("alice", short_description="Email down for the sales team",
                          description="Outlook cannot reach the mail server since 09:00.",
                          urgency="1", impact="2")
        say(f"    acme    {inc['number']}  \"{inc['short_description']}\"  urgency=1 impact=2")
        twin = self.wait_for(f"the twin of {inc['number']} on partner",
                             lambda: partner.find("bob", f"correlation_id={inc['sys_id']}"))[0]
        say(f"    partner {twin['number']}  \"{twin['short_description']}\"  urgency={twin['urgency']} "
            f"impact={twin['impact']} priority={twin['priority']} "
            f"correlation_display={twin['correlation_display']}")

        step(7, "Bob raises an incident on partner; its twin appears on acme")
        inc2 = partner.create("bob", short_description="VPN drops every hour",
                              urgency="2", impact="2")
        say(f"    partner {inc2['number']}  \"{inc2['short_description']}\"")
        twin2 = self.wait_for(f"the twin of {inc2['number']} on acme",
                              lambda: acme.find("alice", f"correlation_id={inc2['sys_id']}"))[0]
        say(f"    acme    {twin2['number']}  \"{twin2['short_description']}\"  "
            f"correlation_display={twin2['correlation_display']}")

        step(8, "A comment travels each way; a work note stays home")
        acme.update("alice", inc["sys_id"], comments="We restarted the mail relay; please retry.",
                    work_notes="internal: relay ran out of disk")
        got = self.wait_for("Alice's comment on partner", lambda: [
            c for c in partner.comments("bob", twin["sys_id"]) if "mail relay" in c["value"]])
        say(f"    on partner {twin['number']}: {got[0]['value']!r}")
        partner.update("bob", twin["sys_id"], comments="Works again here, thanks!")
        got = self.wait_for("Bob's comment on acme", lambda: [
            c for c in acme.comments("alice", inc["sys_id"]) if "Works again" in c["value"]])
        say(f"    on acme {inc['number']}: {got[0]['value']!r}")
        notes = [c for c in partner.comments("bob", twin["sys_id"]) if "relay ran out" in c["value"]]
        say(f"    work notes crossed to partner: {len(notes)}")
        if notes:
            raise DemoError("a work note crossed to the other side")

        step(9, "Bob resolves the twin; acme's incident follows")
        partner.update("bob", twin["sys_id"], state="6", close_code="Solved (Permanently)",
                       close_notes="Mail relay disk extended.")
        resolved = self.wait_for(f"{inc['number']} resolved on acme", lambda: [
            r for r in acme.find("alice", f"sys_id={inc['sys_id']}") if r["state"] == "6"])[0]
        say(f"    acme {inc['number']} state={resolved['state']} close_code="
            f"\"{resolved['close_code']}\"")

        step(10, "What the operators see")
        say("    $ twinsync-public twins " + conn)
        for line in self.run([public_bin, "twins", conn, "--config", public_cfg]).stdout.splitlines():
            say("    " + line)
        say("    $ twinsync-broker stats")
        for line in self.run([broker_bin, "stats", "--config", broker_cfg]).stdout.splitlines():
            say("    " + line)

        if self.keep:
            self.print_keep(public_bin, private_bin, broker_bin, public_cfg, private_cfg,
                            broker_cfg, acme, partner, conn)
            return
        step(11, "Stop everything")
        say("    the demo is done; ./scripts/demo --keep leaves it running to look around")

    def print_keep(self, public_bin, private_bin, broker_bin, public_cfg, private_cfg,
                   broker_cfg, acme, partner, conn):
        say(f"""
Everything keeps running (files in {self.dir}). Look around:
  {public_bin} status --config {public_cfg}
  {public_bin} twins {conn} --config {public_cfg}
  {private_bin} status --config {private_cfg}
  {private_bin} errors list --config {private_cfg}
  {broker_bin} stats --watch --config {broker_cfg}
  curl -s http://127.0.0.1:{self.metrics_port}/metrics
  curl -s -u alice:alice-pw '{acme.url}/api/now/table/incident?sysparm_fields=number,short_description,state'
  curl -s -u bob:bob-pw '{partner.url}/api/now/table/incident?sysparm_fields=number,short_description,state'
Logs: {self.dir}/*.log. Stop it all with: kill {' '.join(str(p.pid) for _, p, _ in self.procs)} {' '.join(str(i.proc.pid) for i in self.instances)}""")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument("--poll-ms", type=int, default=1000, help="node poll interval")
    args = parser.parse_args()
    demo = Demo(args.build, args.keep, args.poll_ms)
    ok = False
    try:
        demo.main()
        ok = True
    except (DemoError, subprocess.TimeoutExpired, urllib.error.URLError, KeyError, ValueError) as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        for name, _, log in demo.procs:
            log.flush()
            print(f"--- last lines of {name}.log ---", file=sys.stderr)
            with open(log.name) as f:
                sys.stderr.writelines(f.readlines()[-15:])
    finally:
        if not (ok and args.keep):
            demo.stop_all()
            if ok:
                shutil.rmtree(demo.dir, ignore_errors=True)
            else:
                print(f"(files kept in {demo.dir})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
