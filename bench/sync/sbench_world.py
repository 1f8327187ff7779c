"""sbench_world: the processes one sync-benchmark run starts, all on 127.0.0.1.

A World is a scripts/twinsync_harness.py Deployment (imported, not copied; the same one
scripts/demo.py and scripts/chaos.py use): two emulated ServiceNow instances ("acme", public
side; "partner", private side), the broker and both nodes configured from the example files in
deploy/, and a Basic connection set up the way two admins do it (initiate, accept), with the
trigger active=true on both sides. The benchmark adds:

  - its emulators start through snemu_bench.py (TCP_NODELAY, optionally pre-seeded);
  - a "bench" user on each instance, which the benchmark acts as;
  - the poll interval on both nodes;
  - node restarts, the pids of every process for /proc measurements, the node state
    databases, and log tails (plus the emulators' request logs) for a failure report.

Every process is a child of the benchmark; World.stop() (called from a finally clause) ends
each one by its pid and removes the temporary directory unless asked to keep it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import twinsync_harness as harness  # noqa: E402

from sbench_client import BenchError, Client, fetch_log  # noqa: E402

SNEMU_BENCH = os.path.join(HERE, "snemu_bench.py")
SYNC_USER = harness.SYNC_USER
BENCH_USER, BENCH_PASSWORD = "bench", "bench-pw"
PEOPLE = {BENCH_USER: (BENCH_PASSWORD, "Bench Driver")}
START_TIMEOUT_S = 120  # a seeded emulator needs ~10 s per 100,000 incidents


class Emulator(harness.Emulator):
    """A harness emulator started through snemu_bench.py, which adds TCP_NODELAY (nodelay)
    and a seed: None, or (count, seed file to write, seed file of the source instance or
    None) (see snemu_bench.py). Only start() differs from the harness's."""

    def __init__(self, name, workdir, nodelay, seed=None):
        super().__init__(name, workdir, PEOPLE, "%s-sync-secret" % name, snemu=SNEMU_BENCH)
        self.nodelay = nodelay
        self.seed = seed

    def start(self):
        port_file = os.path.join(self.dir, "port")
        args = [sys.executable, SNEMU_BENCH] + (["--nodelay"] if self.nodelay else [])
        if self.seed:
            count, seed_out, twins_of = self.seed
            args += ["--seed", str(count), "--seed-out", seed_out,
                     "--creator", SYNC_USER if twins_of else BENCH_USER]
            if twins_of:
                args += ["--twins-of", twins_of, "--source-instance", "acme"]
        args += ["--", "--port", "0", "--port-file", port_file, "--instance", self.name]
        for user, (password, full) in self.people.items():
            args += ["--user", "%s:%s:%s" % (user, password, full)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        harness.wait_for("emulator %s to listen (see %s)" % (self.name, self.log_path),
                         lambda: os.path.exists(port_file) or self.proc.poll() is not None,
                         timeout=START_TIMEOUT_S)
        if self.proc.poll() is not None:
            raise BenchError("emulator %s exited (see %s)" % (self.name, self.log_path))
        with open(port_file) as f:
            self.port = int(f.read().strip())

    def client(self):
        """A new keep-alive client acting as the bench user (close it when done)."""
        return Client(self.url, BENCH_USER, BENCH_PASSWORD)

    def seeded(self):
        """The seed file's records (see snemu_bench.py), in creation order."""
        with open(self.seed[1]) as f:
            return [json.loads(line) for line in f]


class World:
    """Emulators, broker and nodes of one run (see the top comment)."""

    def __init__(self, build, poll_ms, label, nodelay=True):
        self.dir = tempfile.mkdtemp(prefix="twinsync-sbench-%s-" % label)
        self.nodelay = nodelay
        poll = {("node", "poll_interval_ms"): str(poll_ms)}
        self.dep = harness.Deployment(harness.binaries(build=build), self.dir,
                                      public=("acme", PEOPLE), private=("partner", PEOPLE),
                                      settings={"public": poll, "private": poll})
        self.acme = self.partner = None

    @property
    def conn(self):
        return self.dep.conn

    # -- processes

    def start(self, seed=0):
        """Starts both emulators (seeded with `seed` incidents on acme and their twins on
        partner when seed > 0), the broker and both nodes, and connects them."""
        acme_seed = partner_seed = None
        if seed:
            acme_seed = (seed, os.path.join(self.dir, "acme.seed"), None)
            partner_seed = (seed, os.path.join(self.dir, "partner.seed"), acme_seed[1])
        self.acme = Emulator("acme", self.dir, self.nodelay, acme_seed)
        self.partner = Emulator("partner", self.dir, self.nodelay, partner_seed)
        self.dep.instances = {"public": self.acme, "private": self.partner}
        self.dep.start_all()
        self.dep.connect()
        self.wait_active("private")

    def stop_nodes(self, roles=("public", "private")):
        """SIGTERM to the nodes of roles; waits until they are gone."""
        for role in roles:
            self.dep.daemons[role].stop(timeout=30)

    def restart_nodes(self, roles=("public", "private")):
        """Starts the nodes of roles again (their logs go on in the same files)."""
        for role in roles:
            self.dep.start(role)

    def node_pid(self, role):
        return self.dep.daemons[role].proc.pid

    def node_running(self, role):
        return self.dep.daemons[role].running()

    def pids(self):
        return {"acme": self.acme.proc.pid, "partner": self.partner.proc.pid,
                "broker": self.dep.daemons["broker"].proc.pid,
                "public": self.node_pid("public"), "private": self.node_pid("private")}

    def db_path(self, role):
        return os.path.join(self.dir, "%s-state" % role, "node.db")

    def stop(self, keep_files):
        """Stops every process; keeps the directory (and, in it, each emulator's request log
        as NAME-requests.json) when keep_files, else removes it."""
        if keep_files:
            self.save_request_logs()
        self.dep.stop_all()
        if keep_files:
            print("(files kept in %s)" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def save_request_logs(self):
        for instance in (self.acme, self.partner):
            if not instance or not instance.proc or instance.proc.poll() is not None:
                continue
            try:
                entries = fetch_log(instance.url)
            except (BenchError, OSError):
                continue  # a failure report should not fail for want of a log
            with open(os.path.join(self.dir, "%s-requests.json" % instance.name), "w") as f:
                json.dump(entries, f)

    def tails(self, lines=15):
        """The last lines of every daemon's log, for a failure report."""
        return "\n".join("--- last lines of %s ---\n%s" % (d.log_path, d.tail(lines))
                         for d in self.dep.daemons.values())

    # -- the connection

    def cli(self, role, *args):
        return self.dep.cli(role, *args)

    def show(self, role):
        return self.dep.cli_json(role, "connection", "show", self.conn)

    def wait_active(self, role, timeout=60):
        harness.wait_for("the %s node to call the connection active" % role,
                         lambda: self.show(role).get("status") == "active", timeout)
