"""twinsync_harness: the three daemons and two emulated instances on 127.0.0.1.

Shared by scripts/demo.py, scripts/chaos.py and tests/install/test_install.py, so
that each of them starts things the same way and from the shipped example
configurations (deploy/*.ini, or their installed copies), changed only in
paths, ports, URLs and a few timings. Python 3, standard library only.

How the parts fit:
  Emulator     one tests/snemu/snemu.py process: REST calls as a named user
               (retried through injected faults) and the emulator's control API
  Daemon       one twinsync process: start, SIGTERM, SIGKILL, restart, its log
  Deployment   two emulators, the broker and both nodes, configured from the
               example files, and the connection between the nodes
  ini_set      changes one key of an example file, uncommenting it if needed
  binaries     where the three programs are (build tree or installed bin/)
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNEMU = os.path.join(ROOT, "tests", "snemu", "snemu.py")
EXAMPLES = os.path.join(ROOT, "deploy")
SYNC_USER = "twinsync.integration"  # the user named in deploy/public.ini and private.ini
RETRY_STATUS = (429, 500, 502, 503, 504)


class HarnessError(Exception):
    """Something that should have happened did not; the message says what."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, probe, timeout=60.0, interval=0.2):
    """Calls probe until it returns a true value, which is returned; raises HarnessError
    naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def write_file(path, text, mode=0o600):
    """Writes text to path with the given mode (0600 by default: secrets and configs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def run(args, check=True, timeout=120, stdin=None):
    """Runs a command to completion; returns the CompletedProcess (text). With check, a non-zero
    exit status raises HarnessError carrying the command's stderr."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise HarnessError(f"{' '.join(args[:3])} failed ({done.returncode}): "
                           f"{done.stderr.strip()}")
    return done


def ini_set(text, section, key, value):
    """Returns the INI text with `key = value` in [section]: the key's line is replaced, or its
    commented example line (`#key = ...`) uncommented. A key the file does not show at all
    raises HarnessError: the examples must list every key."""
    lines = text.splitlines()
    current = None
    pattern = re.compile(r"^\s*#?\s*" + re.escape(key) + r"\s*=")
    for i, line in enumerate(lines):
        header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if header:
            current = header.group(1).strip()
        elif current == section and pattern.match(line):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    raise HarnessError(f"the example configuration has no line for {section}.{key}")


def binaries(build=None, bindir=None):
    """Paths of the three programs: in a build tree (build/broker/twinsync-broker, ...) or in one
    installed bin/ directory. Raises HarnessError when one is missing."""
    names = {"broker": ("broker", "twinsync-broker"),
             "public": ("public-node", "twinsync-public"),
             "private": ("private-node", "twinsync-private")}
    found = {}
    for role, (subdir, program) in names.items():
        path = os.path.join(bindir, program) if bindir else os.path.join(build, subdir, program)
        if not os.access(path, os.X_OK):
            raise HarnessError(f"{path} is missing: did the build (or install) succeed?")
        found[role] = path
    return found


class Emulator:
    """One emulated ServiceNow instance: the snemu process, REST calls as one of its people,
    and the control API (faults, request log)."""

    def __init__(self, name, workdir, people, sync_password, snemu=SNEMU):
        self.name = name
        self.people = dict(people)  # user name -> (password, full name)
        self.people[SYNC_USER] = (sync_password, "twinsync integration")
        self.sync_password = sync_password
        self.snemu = snemu
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "snemu.log")
        self.proc = None
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        """Starts the emulator and waits until it listens."""
        port_file = os.path.join(self.dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        args = [sys.executable, self.snemu, "--port", str(self.port or 0), "--port-file",
                port_file, "--instance", self.name]
        for user, (password, full) in self.people.items():
            args += ["--user", f"{user}:{password}:{full}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"emulator {self.name} to listen (see {self.log_path})",
                 lambda: os.path.exists(port_file) or self.proc.poll() is not None, timeout=15)
        if self.proc.poll() is not None:
            raise HarnessError(f"emulator {self.name} exited (see {self.log_path})")
        with open(port_file) as f:
            self.port = int(f.read().strip())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    # ---- REST as a person ------------------------------------------------

    def _send(self, method, path, body, headers, timeout, raw=None):
        """One request: body as JSON, or raw bytes as they are. Returns (status, Content-Type,
        answer bytes)."""
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()

    def call(self, user, method, path, body=None, patience=120.0, raw=None,
             content_type="application/json"):
        """One REST call as `user`; returns the body's "result" (None when empty). raw: bytes sent
        as they are with content_type instead of a JSON body (an attachment upload). Injected
        faults (429, 5xx, a hibernation page) are retried for up to `patience` seconds, like a
        browser user who tries again: the emulator carries out nothing it answered that way. Any
        other error status raises HarnessError."""
        token = base64.b64encode(f"{user}:{self.people[user][0]}".encode()).decode()
        headers = {"Authorization": "Basic " + token, "Accept": "application/json",
                   "Content-Type": content_type}
        deadline = time.monotonic() + patience
        while True:
            try:
                status, kind, answer = self._send(method, path, body, headers, timeout=60,
                                                  raw=raw)
                if status == 204:
                    return None
                if "json" in kind:
                    return json.loads(answer)["result"] if answer else None
                problem = f"{kind} answer (hibernating?)"
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUS:
                    raise HarnessError(f"{self.name}: {method} {path} -> {e.code} "
                                       f"{e.read()[:300]!r}") from None
                problem = f"status {e.code}"
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: {method} {path} still failing after "
                                   f"{patience:.0f} s: {problem}")
            time.sleep(0.2)

    def create(self, user, **fields):
        return self.call(user, "POST", "/api/now/table/incident", fields)

    def update(self, user, sys_id, **fields):
        return self.call(user, "PATCH", f"/api/now/table/incident/{sys_id}", fields)

    def query(self, user, query, table="incident", fields=None):
        params = {"sysparm_query": query, "sysparm_limit": "100000"}
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        return self.call(user, "GET", f"/api/now/table/{table}?" + urllib.parse.urlencode(params))

    def find(self, user, query):
        return self.query(user, query)

    def attach(self, user, sys_id, name, data, content_type="application/octet-stream"):
        """Attaches data (bytes) to incident sys_id as `user`; returns the attachment's
        metadata."""
        query = urllib.parse.urlencode({"table_name": "incident", "table_sys_id": sys_id,
                                        "file_name": name}, quote_via=urllib.parse.quote)
        return self.call(user, "POST", "/api/now/attachment/file?" + query, raw=data,
                         content_type=content_type)

    def attachments(self, user, query):
        """The metadata of the attachments matching an encoded query over sys_attachment."""
        params = urllib.parse.urlencode({"sysparm_query": query, "sysparm_limit": "100000"})
        return self.call(user, "GET", "/api/now/attachment?" + params)

    def delete_attachment(self, user, att_sys_id):
        self.call(user, "DELETE", f"/api/now/attachment/{att_sys_id}")

    def comments(self, user, sys_id):
        return self.query(user, f"element_id={sys_id}^element=comments^ORDERBYsys_created_on",
                          table="sys_journal_field")

    # ---- control API -----------------------------------------------------

    def control(self, method, path, body=None):
        _, _, raw = self._send(method, "/__snemu/" + path, body,
                               {"Content-Type": "application/json"}, timeout=30)
        return json.loads(raw) if raw else None

    def faults(self, **faults):
        return self.control("POST", "faults", faults)

    def reset_faults(self):
        return self.control("POST", "reset")

    def request_log(self):
        return self.control("GET", "log")["requests"]


class Daemon:
    """One twinsync process, its arguments and its log (appended across restarts)."""

    def __init__(self, name, args, log_path):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.proc = None
        self.starts = 0

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self):
        """The exit status of a process that ended by itself, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill(self):
        """SIGKILL, and reap it."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL if it has not stopped after timeout seconds; returns the exit
        status (None when it was not running)."""
        if not self.running():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise HarnessError(f"{self.name} did not stop within {timeout} s of SIGTERM")

    def tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""


class Deployment:
    """Two emulated instances, the broker and both nodes on 127.0.0.1, configured from the
    example files in `examples`.

    public/private: (instance name, {user: (password, full name)}) of the human users.
    settings: extra keys per daemon, e.g. {"public": {("node", "poll_interval_ms"): "500"}}.
    """

    def __init__(self, bins, workdir, public=("acme", {}), private=("globex", {}),
                 examples=EXAMPLES, snemu=SNEMU, settings=None):
        self.bins = bins
        self.dir = workdir
        self.examples = examples
        self.settings = settings or {}
        self.instances = {
            "public": Emulator(public[0], workdir, public[1], f"{public[0]}-sync-secret", snemu),
            "private": Emulator(private[0], workdir, private[1], f"{private[0]}-sync-secret",
                                snemu)}
        self.daemons = {}
        self.configs = {}
        self.broker_port = free_port()
        self.metrics_port = free_port()
        self.broker_key = None
        self.conn = None

    @property
    def endpoint(self):
        return f"tcp://127.0.0.1:{self.broker_port}"

    # ---- configuration ---------------------------------------------------

    def _write_config(self, daemon, values):
        """The example file of `daemon` with `values` ({(section, key): value}) and then the
        deployment's extra settings applied, written to WORKDIR/DAEMON.ini (0600)."""
        with open(os.path.join(self.examples, f"{daemon}.ini")) as f:
            text = f.read()
        for (section, key), value in list(values.items()) + list(
                self.settings.get(daemon, {}).items()):
            text = ini_set(text, section, key, value)
        self.configs[daemon] = write_file(os.path.join(self.dir, f"{daemon}.ini"), text)
        return self.configs[daemon]

    def _node_config(self, role):
        instance = self.instances[role]
        secret = write_file(os.path.join(self.dir, f"{role}.password"),
                            instance.sync_password + "\n")
        values = {("node", "name"): f"{instance.name}-node",
                  ("node", "state_dir"): os.path.join(self.dir, f"{role}-state"),
                  ("servicenow", "url"): instance.url,
                  ("servicenow", "instance"): instance.name,
                  ("servicenow", "password_file"): secret}
        if role == "public":
            values[("broker", "endpoint")] = self.endpoint
            values[("broker", "public_key")] = self.broker_key
        return self._write_config(role, values)

    def configure(self):
        """Makes the broker's key and the three configuration files (emulators must run)."""
        broker_state = os.path.join(self.dir, "broker-state")
        self.broker_key = run([self.bins["broker"], "key", "--broker.state_dir",
                               broker_state]).stdout.strip()
        for role in ("public", "private"):
            self._node_config(role)
        public_node_key = run([self.bins["public"], "key", "--config",
                               self.configs["public"]]).stdout.strip()
        self._write_config("broker", {
            ("broker", "endpoint"): self.endpoint, ("broker", "state_dir"): broker_state,
            ("broker", "metrics_port"): str(self.metrics_port),
            ("broker", "public_keys"): public_node_key})
        for name in ("broker", "public", "private"):
            self.daemons[name] = Daemon(name, [self.bins[name], "run", "--config",
                                               self.configs[name]],
                                        os.path.join(self.dir, f"{name}.log"))

    # ---- processes -------------------------------------------------------

    def start_instances(self):
        for instance in self.instances.values():
            instance.start()

    def start(self, name):
        self.daemons[name].start()

    def start_all(self):
        """Starts everything not yet started: emulators, configuration, the three daemons."""
        if not all(i.proc for i in self.instances.values()):
            self.start_instances()
        if not self.daemons:
            self.configure()
        for name in ("broker", "public", "private"):
            if not self.daemons[name].running():
                self.start(name)

    def stop_all(self):
        """Stops the daemons (nodes first) and the emulators; returns {name: exit status}."""
        statuses = {}
        for name in ("public", "private", "broker"):
            if name in self.daemons:
                try:
                    statuses[name] = self.daemons[name].stop()
                except HarnessError:
                    statuses[name] = "killed"
        for instance in self.instances.values():
            instance.stop()
        return statuses

    def cli(self, role, *args, check=True, stdin=None, timeout=120):
        """Runs an admin command of a node with its configuration."""
        return run([self.bins[role], *args, "--config", self.configs[role]], check=check,
                   stdin=stdin, timeout=timeout)

    def cli_json(self, role, *args):
        return json.loads(self.cli(role, *args, "--json").stdout)

    # ---- the connection --------------------------------------------------

    def initiate(self, name="acme-globex", trigger="active=true"):
        """connection initiate on the public node; returns its JSON answer (code, id)."""
        answer = self.cli_json("public", "connection", "initiate", "--name", name, "--mode",
                               "basic", "--trigger", trigger)
        self.conn = answer.get("id") or answer.get("connection")
        return answer

    def accept(self, code, trigger="active=true"):
        """connection accept on the private node (code on stdin); returns its output."""
        return self.cli("private", "connection", "accept", "-", "--trigger", trigger,
                        stdin=code + "\n")

    def wait_active(self, timeout=60):
        def active():
            shown = self.cli("public", "connection", "show", self.conn, "--json", check=False)
            return shown.returncode == 0 and json.loads(shown.stdout).get("status") == "active"
        wait_for("the connection to be active on the public side", active, timeout)

    def connect(self, trigger="active=true"):
        """initiate + accept + active on both sides; returns the connection id."""
        answer = self.initiate(trigger=trigger)
        self.accept(answer["code"], trigger=trigger)
        self.wait_active()
        return self.conn

    # ---- what the operators see ------------------------------------------

    def metrics(self):
        """The broker's /metrics as {(name, ((label, value), ...)): float}; {} when it does not
        answer (stopped, restarting)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        figures = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
            if not m or line.startswith("#"):
                continue
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            figures[(m.group(1), labels)] = float(m.group(3))
        return figures

    def queued_at_broker(self):
        """Messages the broker holds for the connection (ready + unacknowledged, both
        directions), or None when its metrics cannot be read."""
        figures = self.metrics()
        if not figures:
            return None
        names = ("twinsync_broker_queue_messages_ready", "twinsync_broker_queue_messages_unacked")
        return sum(v for (name, labels), v in figures.items()
                   if name in names and ("connection", self.conn) in labels)
