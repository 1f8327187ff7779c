"""sbench_client: the sync benchmark's measuring tools (bench/sync/run uses them).

How the parts fit:
  Client        one keep-alive HTTP/1.1 connection to one emulated instance, as one user
                (the REST calls a person or a script makes; http.client, not urllib, so that
                a request costs the emulator a request and not a TCP handshake and a thread)
  run_parallel  runs jobs on a few threads, each thread with its own Client
  Pacer         calls a function at a steady rate on absolute deadlines
  request log   fetch_log / log_time / classify / busy_rate: the emulator's own record of
                every request, with millisecond times, read after a phase
  ProcStats     CPU seconds, run-queue wait, disk writes and resident memory of a process,
                from /proc; CpuMeter and LoadMeter measure them over an interval
  random_file   a temporary file of random bytes and its SHA-256 (attachments)
  percentile    nearest-rank percentile

Standard library only.
"""

import base64
import concurrent.futures
import datetime
import glob
import hashlib
import http.client
import json
import math
import os
import tempfile
import threading
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")
BLOCK = 1 << 20  # bytes per read and send of a streamed attachment


class BenchError(Exception):
    """A step of the benchmark that did not happen; the message says which."""


class Client:
    """One keep-alive connection to an emulator at url, authenticated as user (Basic).

    Not thread-safe: give each thread its own. call() reconnects once when the server closed
    the idle connection; the streamed attachment calls (upload, download) do not retry."""

    def __init__(self, url, user=None, password=None, timeout=60):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if user:
            token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            self.headers["Authorization"] = "Basic " + token
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                                   blocksize=BLOCK)
        return self.conn

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        """Sends one request; returns (status, headers dict with lower-case names, parsed JSON
        body or None). Raises BenchError when the status is not in ok."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            self.connect()
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError) as e:
                self.close()
                if attempt == 2:
                    raise BenchError("%s %s: %s" % (method, path, e))
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status not in ok:
            raise BenchError("%s %s -> %d %s" % (method, path, resp.status, raw[:200]))
        return resp.status, headers, (json.loads(raw) if raw else None)

    # -- the Table API

    def create(self, table, fields):
        return self.call("POST", "/api/now/table/%s" % table, fields)[2]["result"]

    def update(self, table, sys_id, fields):
        return self.call("PATCH", "/api/now/table/%s/%s" % (table, sys_id), fields)[2]["result"]

    def select(self, table, query, fields, limit=100000):
        """Rows of table matching the encoded query, only the named fields."""
        params = urllib.parse.urlencode({"sysparm_query": query, "sysparm_fields": fields,
                                         "sysparm_limit": str(limit)})
        return self.call("GET", "/api/now/table/%s?%s" % (table, params))[2]["result"]

    def count(self, table, query):
        """Rows of table matching query (X-Total-Count of a one-row page)."""
        params = urllib.parse.urlencode({"sysparm_query": query, "sysparm_fields": "sys_id",
                                         "sysparm_limit": "1"})
        return int(self.call("GET", "/api/now/table/%s?%s" % (table, params))[1]["x-total-count"])

    # -- the Attachment API, streamed in blocks of BLOCK bytes (never a whole file in memory)

    def upload(self, table, sys_id, file_name, path, content_type="application/octet-stream"):
        """Attaches the file at path to a record (POST /api/now/attachment/file, the raw body
        sent from disk with its Content-Length, as the node sends it). Returns the new
        attachment's metadata."""
        query = urllib.parse.urlencode({"table_name": table, "table_sys_id": sys_id,
                                        "file_name": file_name})
        headers = dict(self.headers, **{"Content-Type": content_type,
                                        "Content-Length": str(os.path.getsize(path))})
        what = "POST attachment %s" % file_name
        try:
            with open(path, "rb") as body:
                self.connect().request("POST", "/api/now/attachment/file?" + query, body=body,
                                       headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (http.client.HTTPException, OSError) as e:
            self.close()
            raise BenchError("%s: %s" % (what, e))
        if resp.status != 201:
            raise BenchError("%s -> %d %s" % (what, resp.status, raw[:200]))
        return json.loads(raw)["result"]

    def download(self, sys_id, sink):
        """Reads the content of attachment sys_id (GET /api/now/attachment/ID/file), passing
        each block to sink(bytes). Returns the number of bytes read."""
        what = "GET attachment %s" % sys_id
        got = 0
        try:
            self.connect().request("GET", "/api/now/attachment/%s/file" % sys_id,
                                   headers=self.headers)
            resp = self.conn.getresponse()
            if resp.status != 200:
                raise BenchError("%s -> %d %s" % (what, resp.status, resp.read()[:200]))
            while True:
                block = resp.read(BLOCK)
                if not block:
                    break
                sink(block)
                got += len(block)
        except (http.client.HTTPException, OSError) as e:
            self.close()
            raise BenchError("%s: %s" % (what, e))
        return got

    def attachments(self, table_sys_id):
        """The metadata of every attachment of one record."""
        params = urllib.parse.urlencode({"table_sys_id": table_sys_id, "sysparm_limit": "1000"})
        return self.call("GET", "/api/now/attachment?" + params)[2]["result"]

    def delete_attachment(self, sys_id):
        self.call("DELETE", "/api/now/attachment/%s" % sys_id)

    # -- the emulator's control API (no authentication)

    def control(self, method, name, body=None):
        return self.call(method, "/__snemu/" + name, body)[2]


def run_parallel(url, user, password, jobs, threads):
    """Runs every job (a function taking a Client) on `threads` threads, each with its own
    Client. Returns the jobs' results in order; the first exception is raised."""
    local = threading.local()
    clients = []
    lock = threading.Lock()

    def run(job):
        if not hasattr(local, "client"):
            local.client = Client(url, user, password)
            with lock:
                clients.append(local.client)
        return job(local.client)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(run, jobs))
    finally:
        for client in clients:
            client.close()


class Pacer:
    """Calls fn(i) for i = 0 .. count-1 at `rate` calls per second on absolute deadlines
    (start + i / rate), so a slow call delays the next one but not the schedule; stops early
    once until() (when given) returns true. Returns the wall-clock times at which each call
    was made."""

    def __init__(self, rate):
        self.rate = rate

    def run(self, count, fn, until=None):
        start = time.monotonic()
        sent = []
        for i in range(count):
            if until and until():
                break
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.time())
            fn(i)
        return sent


# -- the emulator's request log


def fetch_log(url):
    """Every request the emulator at url logged, oldest first (see docs/snemu.md)."""
    client = Client(url)
    try:
        return client.control("GET", "log")["requests"]
    finally:
        client.close()


def clear_log(url):
    client = Client(url)
    try:
        client.control("DELETE", "log")
    finally:
        client.close()


def log_time(entry):
    """The UNIX time of a log entry ("2026-01-01T10:00:00.123Z", UTC, taken when the emulator
    finished the request)."""
    t = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def classify(entry):
    """The kind of a logged request, for rates and the emulator's capacity: "POST incident",
    "PATCH incident", "GET incident list", "GET incident", "GET sys_journal_field list", ...;
    the Attachment API's: "GET attachment list", "GET attachment", "GET attachment file",
    "POST attachment file", "DELETE attachment"."""
    parts = entry["path"].split("/")
    if "attachment" in parts:
        rest = parts[parts.index("attachment") + 1:]
        if entry["method"] == "GET" and not rest:
            return "GET attachment list"
        return " ".join([entry["method"], "attachment"] + (["file"] if "file" in rest else []))
    try:
        table_at = parts.index("table") + 1
    except ValueError:
        return "%s %s" % (entry["method"], entry["path"])
    table = parts[table_at] if table_at < len(parts) else ""
    one = table_at + 1 < len(parts) and parts[table_at + 1]
    if entry["method"] == "GET":
        return "GET %s%s" % (table, "" if one else " list")
    return "%s %s" % (entry["method"], table)


def rate_series(times, start, end, step=1.0):
    """Requests per second in consecutive windows of `step` seconds from start to end."""
    buckets = [0] * max(1, int(math.ceil((end - start) / step)))
    for t in times:
        if start <= t < end:
            buckets[min(len(buckets) - 1, int((t - start) / step))] += 1
    return [n / step for n in buckets]


def busy_rate(times, max_gap):
    """Requests per second while a client was busy: over sorted request times, the gaps of at
    most max_gap seconds count as work, longer ones as waiting for work (e.g. for the next
    poll). Returns (rate, busy seconds); (0.0, 0.0) with fewer than two requests."""
    gaps = [b - a for a, b in zip(times, times[1:]) if b - a <= max_gap]
    busy = sum(gaps)
    return (len(gaps) / busy if busy > 0 else 0.0), busy


# -- processes


class ProcStats:
    """CPU time and memory of one process, read from /proc/PID."""

    def __init__(self, pid):
        self.pid = pid

    def cpu_seconds(self):
        """User + system CPU seconds used so far (0.0 once the process is gone)."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (stat fields 14, 15)

    def runq_wait_seconds(self):
        """Seconds the process's threads have spent runnable but waiting for a CPU, summed over
        the threads it has now (/proc/PID/task/*/schedstat, second field, ns; a thread that
        has ended takes its share with it). 0.0 once the process is gone."""
        total = 0
        for path in glob.glob("/proc/%d/task/*/schedstat" % self.pid):
            try:
                with open(path) as f:
                    total += int(f.read().split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
        return total / 1e9

    def write_bytes(self):
        """Bytes the process has caused to be written to storage (/proc/PID/io write_bytes:
        file data when it enters the page cache, not when the disk gets it; 0 once gone)."""
        try:
            with open("/proc/%d/io" % self.pid) as f:
                for line in f:
                    if line.startswith("write_bytes:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
        return 0

    def memory_kib(self):
        """{"VmRSS": KiB, "VmHWM": KiB} ({} once the process is gone)."""
        out = {}
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        out[key] = int(value.split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
        return out


class CpuMeter:
    """CPU use of named processes over an interval: start(), then stop() returns
    {name: fraction of one core}."""

    def __init__(self, pids):
        self.stats = {name: ProcStats(pid) for name, pid in pids.items()}
        self.begin = None

    def start(self):
        self.begin = (time.monotonic(), {n: s.cpu_seconds() for n, s in self.stats.items()})
        return self

    def stop(self):
        t0, cpu0 = self.begin
        wall = max(1e-9, time.monotonic() - t0)
        return {n: (s.cpu_seconds() - cpu0[n]) / wall for n, s in self.stats.items()}


def random_file(directory, mib):
    """Writes mib MiB of random bytes to a new file in directory, in 1 MiB blocks; returns
    (path, SHA-256 in lower-case hex)."""
    fd, path = tempfile.mkstemp(prefix="sbench-", suffix=".bin", dir=directory)
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as f:
        for _ in range(mib):
            block = os.urandom(BLOCK)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


class LoadMeter:
    """CpuMeter and more over an interval: start(), then stop() returns {"cpu": {name:
    fraction of one core}, "wait": {name: run-queue wait, seconds per second of the interval
    summed over threads, so it can exceed 1}, "write_mib": {name: MiB written to storage}}."""

    def __init__(self, pids):
        self.stats = {name: ProcStats(pid) for name, pid in pids.items()}
        self.begin = None

    def _read(self):
        return {n: (s.cpu_seconds(), s.runq_wait_seconds(), s.write_bytes())
                for n, s in self.stats.items()}

    def start(self):
        self.begin = (time.monotonic(), self._read())
        return self

    def stop(self):
        t0, before = self.begin
        wall = max(1e-9, time.monotonic() - t0)
        now = self._read()
        return {"cpu": {n: (now[n][0] - before[n][0]) / wall for n in now},
                "wait": {n: (now[n][1] - before[n][1]) / wall for n in now},
                "write_mib": {n: max(0, now[n][2] - before[n][2]) / 1048576.0 for n in now}}


def percentile(values, p):
    """The nearest-rank p-th percentile of values (p in 0..100); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(p / 100.0 * len(ordered))))
    return ordered[rank - 1]
