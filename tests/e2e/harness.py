"""harness: real twinsync processes on 127.0.0.1 for the end-to-end tests.

A World is two emulated ServiceNow instances (tests/snemu, "acme" for the public side and
"globex" for the private side), one twinsync-broker, one twinsync-public and one twinsync-private,
each with its own temporary directory, config file and log. It offers:

  world.start() / world.stop()          every process, in order
  world.connect(trigger)                connection initiate + accept -> active on both sides
  world.kill(name) / world.restart(name) kill -9 and start again ("pub", "priv", "broker", "acme", "globex")
  world.cli(side, *args)                run an admin command; world.cli_json(...) parses --json
  world.acme / world.globex             Instance: REST calls as a human user, the emulator's
                                        control API (faults, request log, users), attachments
                                        (attach, attachments, download, delete_attachment)
  wait_until(fn, timeout)               poll a condition

Binaries come from the environment (CTest sets them): TWINSYNC_PUBLIC, TWINSYNC_PRIVATE,
TWINSYNC_BROKER, SNEMU_PY. Standard library only.
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SNEMU_PY = os.environ.get("SNEMU_PY", os.path.join(HERE, "..", "snemu", "snemu.py"))
PUBLIC = os.environ.get("TWINSYNC_PUBLIC", "twinsync-public")
PRIVATE = os.environ.get("TWINSYNC_PRIVATE", "twinsync-private")
BROKER = os.environ.get("TWINSYNC_BROKER", "twinsync-broker")
POLL_MS = 250
SYNC_PASSWORD = "sync-secret-1"


def wait_until(fn, timeout=20.0, interval=0.1, what="condition"):
    """Call fn until it returns a true value (returned) or timeout passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


def _read(path):
    """The stripped text of path, or "" when it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def free_port():
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """One emulated ServiceNow instance: the emulator process, REST calls as a human user, and
    the control API."""

    def __init__(self, world, name, human, extra_args=()):
        self.world = world
        self.name = name
        self.human = human
        self.extra_args = list(extra_args)
        self.dir = os.path.join(world.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = None
        self.proc = None

    # -- process

    def start(self, extra_args=None):
        if extra_args is not None:
            self.extra_args = list(extra_args)
        port_file = os.path.join(self.dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        args = ["python3", SNEMU_PY, "--port", str(self.port or 0), "--port-file", port_file,
                "--instance", self.name, "--state-file", os.path.join(self.dir, "state.json"),
                "--user", "sync:%s:Sync User" % SYNC_PASSWORD,
                "--user", "%s:pw:%s" % (self.human, self.human.capitalize())] + self.extra_args
        log = open(os.path.join(self.dir, "snemu.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: _read(port_file), timeout=10, what="emulator %s to listen" % self.name)
        self.port = int(_read(port_file))

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- HTTP

    def _request(self, method, path, body=None, auth=True):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            token = base64.b64encode(("%s:pw" % self.human).encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        # Injected faults hit the test's own calls too: retry them like a client would (a
        # create refused with 429/502/503 was not carried out by the emulator).
        for attempt in range(200):
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as e:
                body = e.read()[:300]
                if e.code in (429, 500, 502, 503, 504) and attempt < 199 and auth:
                    time.sleep(0.05)
                    continue
                raise AssertionError("%s %s -> %d %s" % (method, path, e.code, body))

    def create(self, **fields):
        return self._request("POST", "/api/now/table/incident", fields)["result"]

    def update(self, sys_id, **fields):
        return self._request("PATCH", "/api/now/table/incident/" + sys_id, fields)["result"]

    def get(self, sys_id):
        return self._request("GET", "/api/now/table/incident/" + sys_id)["result"]

    def query(self, query, table="incident"):
        q = urllib.parse.urlencode({"sysparm_query": query, "sysparm_limit": "10000"})
        return self._request("GET", "/api/now/table/%s?%s" % (table, q))["result"]

    def twins_of(self, sys_id):
        """Incidents whose correlation_id is sys_id (the twins of a remote record)."""
        return self.query("correlation_id=" + sys_id)

    def twin_of(self, sys_id):
        twins = self.twins_of(sys_id)
        assert len(twins) <= 1, "%d twins of %s on %s" % (len(twins), sys_id, self.name)
        return twins[0] if twins else None

    def journal(self, sys_id, element="comments"):
        return self.query("element_id=%s^element=%s^ORDERBYsys_created_on" % (sys_id, element),
                          table="sys_journal_field")

    # -- attachments (the Attachment API, as the human user)

    def _attachment_call(self, method, path, body=None, length=None, content_type=None,
                         sink=None):
        """One Attachment API request as the human user, retried through injected faults (429,
        5xx: the emulator carried nothing out) like _request. body: bytes, or a callable that
        opens a fresh file object for each attempt (streamed in 1 MiB blocks). sink: called with
        each block of the answer (then nothing is returned). Returns the parsed JSON answer."""
        token = base64.b64encode(("%s:pw" % self.human).encode()).decode()
        for attempt in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120,
                                              blocksize=1 << 20)
            stream = body() if callable(body) else body
            try:
                headers = {"Authorization": "Basic " + token, "Accept": "application/json"}
                if content_type is not None:
                    headers["Content-Type"] = content_type
                if stream is not None:
                    headers["Content-Length"] = str(length if length is not None else len(stream))
                conn.request(method, path, body=stream, headers=headers)
                resp = conn.getresponse()
                if resp.status in (429, 500, 502, 503, 504) and attempt < 199:
                    resp.read()
                    time.sleep(0.05)
                    continue
                if resp.status >= 300:
                    raise AssertionError("%s %s -> %d %s" % (method, path, resp.status,
                                                             resp.read()[:300]))
                if sink is not None:
                    while True:
                        block = resp.read(1 << 20)
                        if not block:
                            return None
                        sink(block)
                raw = resp.read()
                return json.loads(raw) if raw else None
            finally:
                if callable(body) and stream is not None:
                    stream.close()
                conn.close()

    def attach(self, sys_id, name, data, content_type="application/octet-stream",
               table="incident"):
        """Attaches a file to record sys_id as the human user: data is bytes, or the path of a
        file (streamed from disk, for big ones). Returns the attachment's metadata."""
        q = urllib.parse.urlencode({"table_name": table, "table_sys_id": sys_id,
                                    "file_name": name}, quote_via=urllib.parse.quote)
        if isinstance(data, (bytes, bytearray)):
            body, length = bytes(data), len(data)
        else:
            path = data
            body, length = (lambda: open(path, "rb")), os.path.getsize(path)
        return self._attachment_call("POST", "/api/now/attachment/file?" + q, body, length,
                                     content_type)["result"]

    def attachments(self, sys_id, table="incident"):
        """The metadata of every attachment of record sys_id, oldest first."""
        q = urllib.parse.urlencode({"table_name": table, "table_sys_id": sys_id,
                                    "sysparm_query": "ORDERBYsys_created_on",
                                    "sysparm_limit": "10000"})
        return self._attachment_call("GET", "/api/now/attachment?" + q)["result"]

    def download(self, att_sys_id, sha256=False):
        """The content of attachment att_sys_id: its bytes, or with sha256 its SHA-256 (hex),
        computed while streaming (for big files)."""
        digest, parts = hashlib.sha256(), []
        self._attachment_call("GET", "/api/now/attachment/%s/file" % att_sys_id,
                              sink=digest.update if sha256 else parts.append)
        return digest.hexdigest() if sha256 else b"".join(parts)

    def delete_attachment(self, att_sys_id):
        self._attachment_call("DELETE", "/api/now/attachment/" + att_sys_id)

    # -- control API

    def control(self, method, path, body=None):
        return self._request(method, "/__snemu/" + path, body, auth=False)

    def faults(self, **faults):
        return self.control("POST", "faults", faults)

    def reset_faults(self):
        return self.control("POST", "reset")

    def log(self):
        return self.control("GET", "log")["requests"]

    def clear_log(self):
        self.control("DELETE", "log")

    def set_password(self, user, password):
        self.control("POST", "users", {"name": user, "password": password})


class Node:
    """One twinsync node: its state directory, config file, daemon process and log."""

    def __init__(self, world, role, instance):
        self.world = world
        self.role = role
        self.binary = PUBLIC if role == "public" else PRIVATE
        self.instance = instance
        self.dir = os.path.join(world.tmp, role)
        self.state_dir = os.path.join(self.dir, "state")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "node.ini")
        self.password_file = os.path.join(self.dir, "password")
        with open(self.password_file, "w") as f:
            f.write(SYNC_PASSWORD)
        os.chmod(self.password_file, 0o600)
        self.proc = None
        self.log_path = os.path.join(self.dir, "node.log")
        self.seal_trace = os.path.join(self.dir, "seal-trace")
        self.servicenow_extra = []  # more [servicenow] lines, e.g. OAuth settings
        self.node_extra = []  # more [node] lines, e.g. "attachment_scan = 1s"

    def write_config(self):
        lines = (["[node]", "name = %s-node" % self.instance.name,
                  "state_dir = %s" % self.state_dir, "poll_interval_ms = %d" % POLL_MS,
                  "lookback_s = 5"] + self.node_extra
                 + ["[servicenow]", "url = %s" % self.instance.url,
                    "instance = %s" % self.instance.name, "user = sync",
                    "password_file = %s" % self.password_file, "max_retry_wait_ms = 3000"]
                 + self.servicenow_extra + ["[broker]", "heartbeat_ms = 500"])
        if self.role == "public":
            lines += ["endpoint = %s" % self.world.broker_endpoint,
                      "public_key = %s" % self.world.broker_key]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        self.write_config()
        log = open(self.log_path, "ab")
        # Every payload's (key fingerprint, nonce), for the tests that prove none repeats
        env = dict(os.environ, TWINSYNC_SEAL_TRACE=self.seal_trace)
        self.proc = subprocess.Popen([self.binary, "run", "--config", self.config], stdout=log,
                                     stderr=subprocess.STDOUT, env=env)
        log.close()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def cli(self, *args, timeout=60):
        """Runs an admin command; returns CompletedProcess (text)."""
        return subprocess.run([self.binary] + list(args) + ["--config", self.config],
                              capture_output=True, text=True, timeout=timeout)

    def cli_json(self, *args):
        out = self.cli(*args, "--json")
        assert out.returncode == 0, "%s %s failed: %s" % (self.role, args, out.stderr)
        return json.loads(out.stdout)

    def key(self):
        out = self.cli("key")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def db(self):
        """A sqlite3 connection to the node's state (for tests that forge a state)."""
        return sqlite3.connect(os.path.join(self.state_dir, "node.db"), timeout=10)


class World:
    """Two instances, a broker and two nodes."""

    def __init__(self, globex_args=()):
        self.tmp = tempfile.mkdtemp(prefix="twinsync-e2e-")
        self.acme = Instance(self, "acme", "alice")
        self.globex = Instance(self, "globex", "bob", globex_args)
        self.pub = Node(self, "public", self.acme)
        self.priv = Node(self, "private", self.globex)
        self.broker_dir = os.path.join(self.tmp, "broker")
        os.makedirs(self.broker_dir, exist_ok=True)
        self.broker_endpoint = None  # chosen in start(), after the emulators took their ports
        self.broker_key = None
        self.broker = None
        self.conn = None

    # -- processes

    def start_broker(self):
        log = open(os.path.join(self.broker_dir, "broker.log"), "ab")
        self.broker = subprocess.Popen(
            [BROKER, "run", "--broker.state_dir", self.broker_dir,
             "--broker.endpoint", self.broker_endpoint, "--broker.public_keys", self.pub.key(),
             "--broker.metrics_port", "0", "--broker.heartbeat_ms", "500"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self):
        """Starts every process; on a failure stops what started, removes the directory and
        re-raises (a failing setUpClass gets no tearDownClass)."""
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self):
        self.acme.start()
        self.globex.start()
        self.pub.write_config()
        out = subprocess.run([BROKER, "key", "--broker.state_dir", self.broker_dir],
                             capture_output=True, text=True, check=True)
        self.broker_key = out.stdout.strip()
        # A port that was free a moment ago may be taken meanwhile: try another one then.
        for _ in range(5):
            self.broker_endpoint = "tcp://127.0.0.1:%d" % free_port()
            self.start_broker()
            time.sleep(0.3)
            if self.broker.poll() is None:
                break
        assert self.broker.poll() is None, "the broker does not start\n" + self.logs()
        self.pub.start()
        self.priv.start()
        return self

    def stop(self):
        """Stops every process; one that does not stop in time is killed, and a failure to
        stop one never leaves the others running."""
        broker = self.broker
        for proc in (self.pub.proc, self.priv.proc, broker, self.acme.proc, self.globex.proc):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.pub.proc = self.priv.proc = self.broker = self.acme.proc = self.globex.proc = None

    def cleanup(self):
        self.stop()
        if os.environ.get("TWINSYNC_E2E_KEEP"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def logs(self):
        """Tails of every log, for a failure message."""
        parts = []
        for path in (self.pub.log_path, self.priv.log_path,
                     os.path.join(self.broker_dir, "broker.log")):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    parts.append("== %s\n%s" % (path, "".join(f.readlines()[-25:])))
        return "\n".join(parts)

    def kill(self, name):
        """kill -9 one process."""
        if name == "pub":
            self.pub.stop(signal.SIGKILL)
        elif name == "priv":
            self.priv.stop(signal.SIGKILL)
        elif name == "broker":
            self.broker.kill()
            self.broker.wait()
        else:
            getattr(self, name).stop(signal.SIGKILL)

    def restart(self, name):
        if name == "pub":
            self.pub.start()
        elif name == "priv":
            self.priv.start()
        elif name == "broker":
            self.start_broker()
        else:
            getattr(self, name).start()

    # -- connection

    def connect(self, trigger="urgency=1", name="acme-globex"):
        """Initiate on the public node, accept on the private node; returns the connection id."""
        out = self.pub.cli("connection", "initiate", "--name", name, "--mode", "basic",
                           "--trigger", trigger, "--wait", "20")
        assert out.returncode == 0, "initiate failed: %s\n%s" % (out.stderr, self.logs())
        code = out.stdout.strip()
        out = self.priv.cli("connection", "accept", code, "--trigger", trigger, "--wait", "20")
        assert out.returncode == 0, "accept failed: %s\n%s" % (out.stderr, self.logs())
        self.conn = name
        for node in (self.pub, self.priv):
            wait_until(lambda: node.cli_json("connection", "show", name)["status"] == "active",
                       what="%s active" % node.role)
        return code

    def settle(self, timeout=30):
        """Waits until both outboxes are empty and nothing is pending twice in a row."""
        def idle():
            for node in (self.pub, self.priv):
                doc = node.cli_json("connection", "show", self.conn)
                if doc["outbox"] or doc["status"] != "active":
                    return False
            return True
        wait_until(lambda: idle() and (time.sleep(4 * POLL_MS / 1000.0) or idle()),
                   timeout=timeout, what="both nodes idle")


class ConnectedTest(unittest.TestCase):
    """Base of the suites that share one World for the class, started and connected with the
    trigger urgency=1. A subclass may set GLOBEX_ARGS (extra emulator flags for globex) and
    TWIN_TIMEOUT, and override prepare(world) to change the world before its processes start."""

    GLOBEX_ARGS = ()
    TWIN_TIMEOUT = 30

    @classmethod
    def prepare(cls, world):
        """Called with the new World before its processes start."""

    @classmethod
    def setUpClass(cls):
        world = World(globex_args=cls.GLOBEX_ARGS)
        cls.prepare(world)
        cls.world = world.start()
        cls.world.connect(trigger="urgency=1")

    @classmethod
    def tearDownClass(cls):
        cls.world.cleanup()

    def twin(self, instance, sys_id, timeout=None):
        """The twin of sys_id on instance, once it exists."""
        return wait_until(lambda: instance.twin_of(sys_id), timeout=timeout or self.TWIN_TIMEOUT,
                          what="twin of %s on %s\n%s" % (sys_id, instance.name, self.world.logs()))
