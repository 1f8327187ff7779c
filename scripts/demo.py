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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twinsync_harness as harness  # noqa: E402
from twinsync_harness import HarnessError as DemoError  # noqa: E402

ROOT = harness.ROOT
WAIT_S = 60


def say(text):
    print(text, flush=True)


def step(number, text):
    say(f"\n==> {number}. {text}")


class Demo:
    def __init__(self, build, keep, poll_ms):
        self.build = build
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="twinsync-demo-")
        poll = {("node", "poll_interval_ms"): str(poll_ms)}
        self.dep = harness.Deployment(
            harness.binaries(build=build), self.dir,
            public=("acme", {"alice": ("alice-pw", "Alice Adams")}),
            private=("partner", {"bob": ("bob-pw", "Bob Brown")}),
            settings={"public": poll, "private": poll})

    def run(self, args, check=True):
        return harness.run(args, check=check)

    def stop_all(self):
        self.dep.stop_all()

    @staticmethod
    def wait_for(what, probe):
        return harness.wait_for(what, probe, timeout=WAIT_S)

    # ---- the story -------------------------------------------------------

    def main(self):
        dep = self.dep
        public_bin, private_bin, broker_bin = (dep.bins[r] for r in ("public", "private",
                                                                      "broker"))

        step(1, "Start two emulated ServiceNow instances")
        dep.start_instances()
        acme, partner = dep.instances["public"], dep.instances["private"]
        say(f"    acme    (public side)  {acme.url}   user alice / alice-pw")
        say(f"    partner (private side) {partner.url}   user bob / bob-pw")

        step(2, "Start the broker; both nodes will dial out to it")
        dep.configure()  # from the example files in deploy/, paths and ports changed
        public_cfg, private_cfg, broker_cfg = (dep.configs[r] for r in ("public", "private",
                                                                         "broker"))
        dep.start("broker")
        say(f"    broker on {dep.endpoint}, "
            f"metrics on http://127.0.0.1:{dep.metrics_port}/metrics")
        say(f"    broker key {dep.broker_key}")

        step(3, "Start twinsync-public (beside acme) and twinsync-private (beside partner)")
        dep.start("public")
        dep.start("private")
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
  curl -s http://127.0.0.1:{self.dep.metrics_port}/metrics
  curl -s -u alice:alice-pw '{acme.url}/api/now/table/incident?sysparm_fields=number,short_description,state'
  curl -s -u bob:bob-pw '{partner.url}/api/now/table/incident?sysparm_fields=number,short_description,state'
Logs: {self.dir}/*.log. Stop it all with: kill {' '.join(str(d.proc.pid) for d in self.dep.daemons.values())} {' '.join(str(i.proc.pid) for i in self.dep.instances.values())}""")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument("--poll-ms", type=int, default=1000, help="node poll interval")
    args = parser.parse_args()
    try:
        demo = Demo(args.build, args.keep, args.poll_ms)
    except DemoError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    ok = False
    try:
        demo.main()
        ok = True
    except (DemoError, subprocess.TimeoutExpired, urllib.error.URLError, KeyError, ValueError) as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        for daemon in demo.dep.daemons.values():
            print(f"--- last lines of {daemon.name}.log ---", file=sys.stderr)
            sys.stderr.write(daemon.tail())
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
