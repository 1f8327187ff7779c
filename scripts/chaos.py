#!/usr/bin/env python3
"""chaos: the whole sync under kills and faults, then a strict count of the result.

Started by scripts/chaos (or CTest's short round). Everything runs on 127.0.0.1 in
a temporary directory, configured from the example files (deploy/*.ini): two
emulated instances ("acme", public side, user alice; "globex", private side,
user bob), the broker and both nodes (poll 500 ms), a Basic connection with the
trigger `active=true`. Then, for --minutes:

  users     one thread per instance makes a steady mix of creates, field
            updates (including resolve with close code and reopen), comments
            (some multi-line, some non-ASCII), work notes, attachments (empty,
            small and a few of 1-3 MiB, some with non-ASCII names) and
            deletions of files the user attached, on incidents of both origins;
  chaos     one thread SIGKILLs the broker, a node, or several at once at
            random moments and restarts them after a random pause, switches
            emulator faults on and off (429 bursts, 5xx bursts, latency,
            hibernation, writes of the node carried out whose answer is lost),
            and restarts any daemon that exits by itself
            (counted as a failure).

At the end it clears the faults, waits for quiet (broker queues empty, node
outboxes empty, both instances unchanged for a while) and checks both
instances: every incident has exactly one twin, synced fields equal and equal
to the latest value a user wrote on one side, every comment exactly once on
each side, no work note crossed, no incident nobody asked for, every file a
user attached and did not delete exactly once on the twin (same name, type,
size and SHA-256), no copy of a deleted one, no file nobody attached. It prints the
counts and exits 1 on any difference (0 otherwise; 2 on a setup failure).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twinsync_harness as harness  # noqa: E402

SIDES = ("public", "private")
PEOPLE = {"public": ("acme", "alice", "Alice Adams"), "private": ("globex", "bob", "Bob Brown")}
SYNCED = ("short_description", "description", "urgency", "impact", "state")
CLOSING = ("close_code", "close_notes")  # synced while state is 6 or 7
CLOSE_CODES = ("Solved (Permanently)", "Solved (Work Around)", "Not Solved (Not Reproducible)")
OPS = (("create", 15), ("update", 35), ("comment", 25), ("work_note", 10), ("attach", 10),
       ("detach", 5))
ATTACHMENT_SCAN = "2s"  # node.attachment_scan: deletions reach the twin within seconds


def other(side):
    return "private" if side == "public" else "public"


def say(text):
    print(text, flush=True)


class Pair:
    """One incident a user created and its twin: the sys_id on each side (the twin's once
    found), the latest value each side's user wrote per field, comments and work notes."""

    def __init__(self, origin, sys_id, number, fields):
        self.origin = origin
        self.ids = {origin: sys_id, other(origin): None}
        self.number = number
        self.written = {(origin, f): fields[f] for f in SYNCED + CLOSING if f in fields}
        self.comments = []  # (side written on, exact text)
        self.notes = []  # (side written on, exact text)
        self.files = []  # Files a user attached to this incident or its twin


class File:
    """One file a user attached: where, its metadata as the instance answered, whether the user
    deleted it since."""

    def __init__(self, side, meta):
        self.side = side
        self.sys_id = meta["sys_id"]
        self.meta = {k: meta[k] for k in ("file_name", "content_type", "size_bytes", "hash")}
        self.deleted = False


class Ledger:
    """What the users did, shared by both user threads (every access under the lock)."""

    def __init__(self, actions_path):
        self.lock = threading.Lock()
        self.actions = open(actions_path, "a")  # one JSON line per change, for a post-mortem
        self.pairs = []
        self.counts = {"create": 0, "update": 0, "comment": 0, "work_note": 0, "attach": 0,
                       "detach": 0}
        self.user_errors = []
        self.serial = 0

    def next_serial(self):
        with self.lock:
            self.serial += 1
            return self.serial

    def record(self, what, side, pair, body):
        """Counts a change and writes it to the actions log (caller holds the lock)."""
        self.counts[what] += 1
        line = {"t": round(time.time(), 3), "op": what, "side": side, "origin": pair.origin,
                "number": pair.number, "ids": pair.ids, "body": body}
        self.actions.write(json.dumps(line) + "\n")
        self.actions.flush()


class User(threading.Thread):
    """A person on one instance making a steady mix of changes until told to stop."""

    def __init__(self, side, instance, ledger, rate, seed, stop):
        super().__init__(name=f"user-{side}", daemon=True)
        self.side = side
        self.instance = instance
        self.person = PEOPLE[side][1]
        self.ledger = ledger
        self.rate = rate
        self.rng = random.Random(seed)
        self.stop = stop

    def run(self):
        while not self.stop.wait(self.rng.expovariate(self.rate)):
            op = self.rng.choices([o for o, _ in OPS], [w for _, w in OPS])[0]
            try:
                getattr(self, "do_" + op)()
            except (harness.HarnessError, OSError, ValueError, KeyError) as e:
                with self.ledger.lock:
                    self.ledger.user_errors.append(f"{self.side} {op}: {e}")

    # ---- choosing --------------------------------------------------------

    def text(self, kind):
        n = self.ledger.next_serial()
        words = self.rng.choice(["printer jams", "VPN drops", "mail slow", "disk full",
                                 "badge reader dead", "laptop will not boot"])
        text = f"{kind} {n} by {self.person}: {words}"
        roll = self.rng.random()
        if roll < 0.1:
            text += " \u2014 caf\u00e9 \u2713 \u00fcber"
        elif roll < 0.2:
            text += "\nsecond line\n\tthird line, indented"
        return text

    def target(self):
        """(pair, sys_id on this side) of a random incident, or None when none is ready (the
        twin of a recent incident of the other side may not exist yet)."""
        with self.ledger.lock:
            if not self.ledger.pairs:
                return None
            pair = self.rng.choice(self.ledger.pairs[-200:])
            sys_id = pair.ids[self.side]
            origin_id = pair.ids[pair.origin]
        if sys_id:
            return pair, sys_id
        found = self.instance.find(self.person, "correlation_id=" + origin_id)
        if len(found) != 1:
            return None  # not there yet (or a duplicate, which the final check reports)
        with self.ledger.lock:
            pair.ids[self.side] = found[0]["sys_id"]
        return pair, found[0]["sys_id"]

    def field_change(self):
        """A random change of one or two synced fields, as a person would make it."""
        choice = self.rng.choice(["short_description", "description", "urgency", "impact",
                                  "state", "resolve", "two"])
        if choice == "resolve":
            return {"state": "6", "close_code": self.rng.choice(CLOSE_CODES),
                    "close_notes": self.text("close note")}
        if choice == "two":
            return {"urgency": str(self.rng.randint(1, 3)), "impact": str(self.rng.randint(1, 3))}
        if choice in ("urgency", "impact"):
            return {choice: str(self.rng.randint(1, 3))}
        if choice == "state":
            return {"state": self.rng.choice(["1", "2", "3"])}
        return {choice: self.text(choice.replace("_", " "))}

    # ---- the operations --------------------------------------------------

    def do_create(self):
        fields = {"short_description": self.text("incident"), "description": self.text("details"),
                  "urgency": str(self.rng.randint(1, 3)), "impact": str(self.rng.randint(1, 3))}
        comment = self.text("first comment") if self.rng.random() < 0.3 else None
        body = dict(fields, comments=comment) if comment else fields
        record = self.instance.create(self.person, **body)
        fields["state"] = record["state"]
        pair = Pair(self.side, record["sys_id"], record["number"], fields)
        if comment:
            pair.comments.append((self.side, comment))
        with self.ledger.lock:
            self.ledger.pairs.append(pair)
            self.ledger.record("create", self.side, pair, body)
            if comment:
                self.ledger.counts["comment"] += 1

    def do_update(self):
        chosen = self.target()
        if not chosen:
            return
        pair, sys_id = chosen
        fields = self.field_change()
        comment = self.text("comment") if self.rng.random() < 0.2 else None
        body = dict(fields, comments=comment) if comment else fields
        self.instance.update(self.person, sys_id, **body)
        with self.ledger.lock:
            for field, value in fields.items():
                pair.written[(self.side, field)] = value
            self.ledger.record("update", self.side, pair, body)
            if comment:
                pair.comments.append((self.side, comment))
                self.ledger.counts["comment"] += 1

    def do_comment(self):
        self.journal("comments", "comment")

    def do_work_note(self):
        self.journal("work_notes", "work_note")

    def do_attach(self):
        """A file attached to a random incident: mostly small, one in ten empty, one in ten
        of 1-3 MiB (so that kills land in the middle of some), some names non-ASCII."""
        chosen = self.target()
        if not chosen:
            return
        pair, sys_id = chosen
        n = self.ledger.next_serial()
        roll = self.rng.random()
        size = (0 if roll < 0.1 else self.rng.randint(1, 3) << 20 if roll < 0.2
                else self.rng.randint(1, 64 << 10))
        name = self.rng.choice([f"file {n} by {self.person}.txt", f"r\u00e9sum\u00e9 {n}.pdf",
                                f"log-{n}.bin"])
        kind = {"txt": "text/plain", "pdf": "application/pdf"}.get(name.rsplit(".", 1)[1],
                                                                   "application/octet-stream")
        data = self.rng.getrandbits(8 * size).to_bytes(size, "little") if size else b""
        meta = self.instance.attach(self.person, sys_id, name, data, kind)
        with self.ledger.lock:
            pair.files.append(File(self.side, meta))
            self.ledger.record("attach", self.side, pair, {"file": name, "size": size,
                                                           "sys_id": meta["sys_id"]})

    def do_detach(self):
        """Deletes a file this user attached (and has not deleted yet)."""
        with self.ledger.lock:
            mine = [(pair, f) for pair in self.ledger.pairs[-200:] for f in pair.files
                    if f.side == self.side and not f.deleted]
        if not mine:
            return
        pair, f = self.rng.choice(mine)
        self.instance.delete_attachment(self.person, f.sys_id)
        with self.ledger.lock:
            f.deleted = True
            self.ledger.record("detach", self.side, pair, {"file": f.meta["file_name"],
                                                           "sys_id": f.sys_id})

    def journal(self, element, what):
        chosen = self.target()
        if not chosen:
            return
        pair, sys_id = chosen
        text = self.text("work note" if what == "work_note" else "comment")
        self.instance.update(self.person, sys_id, **{element: text})
        with self.ledger.lock:
            (pair.notes if what == "work_note" else pair.comments).append((self.side, text))
            self.ledger.record(what, self.side, pair, {element: text})


class Chaos(threading.Thread):
    """Kills and restarts daemons and switches emulator faults at random moments; restarts (and
    records) a daemon that exits by itself."""

    def __init__(self, deployment, seed, kill_every, fault_every, stop):
        super().__init__(name="chaos", daemon=True)
        self.dep = deployment
        self.rng = random.Random(seed)
        self.kill_every = kill_every
        self.fault_every = fault_every
        self.stop = stop
        self.kills = {"broker": 0, "public": 0, "private": 0}
        self.faults = {"rate_limit": 0, "fail_next": 0, "latency": 0, "hibernate": 0,
                       "lose_answer": 0}
        self.unexpected = []  # (daemon, exit status, last log lines)
        self.restarts = []  # (time, daemon) pending
        self.expiries = []  # (time, emulator, fault body) pending
        self.errors = []

    def run(self):
        now = time.monotonic()
        next_kill = now + self.rng.expovariate(1 / self.kill_every)
        next_fault = now + self.rng.expovariate(1 / self.fault_every)
        while not self.stop.wait(0.1):
            now = time.monotonic()
            try:
                self.reap()
                if now >= next_kill:
                    self.kill()
                    next_kill = now + self.rng.expovariate(1 / self.kill_every)
                if now >= next_fault:
                    self.fault()
                    next_fault = now + self.rng.expovariate(1 / self.fault_every)
                self.due(now)
            except (harness.HarnessError, OSError) as e:
                self.errors.append(str(e))

    def reap(self):
        """Restarts a daemon that ended without being killed, and records it."""
        pending = {name for _, name in self.restarts}
        for name, daemon in self.dep.daemons.items():
            status = daemon.exit_status()
            if status is not None and name not in pending:
                self.unexpected.append((name, status, daemon.tail()))
                daemon.start()

    def kill(self):
        roll = self.rng.random()
        count = 1 if roll < 0.7 else 2 if roll < 0.9 else 3
        for name in self.rng.sample(sorted(self.kills), count):
            if not self.dep.daemons[name].running():
                continue
            self.dep.daemons[name].kill()
            self.kills[name] += 1
            self.restarts.append((time.monotonic() + self.rng.uniform(0, 3), name))

    def fault(self):
        side = self.rng.choice(SIDES)
        emulator = self.dep.instances[side]
        kind = self.rng.choices(["rate_limit", "fail_next", "latency", "hibernate", "lose_answer"],
                                [25, 25, 20, 10, 20])[0]
        if kind == "rate_limit":
            emulator.faults(rate_limit={"count": self.rng.randint(3, 30),
                                        "retry_after": self.rng.randint(1, 2)})
        elif kind == "fail_next":
            emulator.faults(fail_next={"count": self.rng.randint(2, 15),
                                       "status": self.rng.choice([500, 502, 503, 504])})
        elif kind == "lose_answer":
            # The instance carries out the node's next writes, then closes without answering
            emulator.faults(lose_answer={"count": self.rng.randint(1, 3),
                                         "method": self.rng.choice(["POST", "PATCH"]),
                                         "user": harness.SYNC_USER})
        elif kind == "latency":
            emulator.faults(latency_ms=self.rng.randint(100, 2000))
            self.expiries.append((time.monotonic() + self.rng.uniform(3, 15), emulator,
                                  {"latency_ms": 0}))
        else:
            emulator.faults(hibernate=True)
            self.expiries.append((time.monotonic() + self.rng.uniform(2, 8), emulator,
                                  {"hibernate": False}))
        self.faults[kind] += 1

    def due(self, now):
        for entry in [r for r in self.restarts if r[0] <= now]:
            self.restarts.remove(entry)
            self.dep.daemons[entry[1]].start()
        for entry in [e for e in self.expiries if e[0] <= now]:
            self.expiries.remove(entry)
            entry[1].faults(**entry[2])

    def settle(self):
        """After the thread has stopped: every pending restart done, every fault cleared."""
        self.due(float("inf"))
        self.reap()
        for emulator in self.dep.instances.values():
            emulator.reset_faults()


class Checker:
    """Reads both instances and compares them with the ledger; counts checks and differences."""

    def __init__(self, deployment, ledger):
        self.dep = deployment
        self.ledger = ledger
        self.checks = 0
        self.differences = []

    def read(self):
        """{side: (incidents by sys_id, journal rows by incident sys_id, attachments by incident
        sys_id)}."""
        world = {}
        for side in SIDES:
            emulator, person = self.dep.instances[side], PEOPLE[side][1]
            incidents = {r["sys_id"]: r for r in emulator.query(person, "ORDERBYsys_created_on")}
            journal = {}
            for row in emulator.query(person, "name=incident^ORDERBYsys_created_on",
                                      table="sys_journal_field"):
                journal.setdefault(row["element_id"], []).append(row)
            files = {}
            for row in emulator.attachments(person, "table_name=incident^ORDERBYsys_created_on"):
                files.setdefault(row["table_sys_id"], []).append(row)
            world[side] = (incidents, journal, files)
        return world

    @staticmethod
    def fingerprint(world):
        """A digest of everything the check looks at (changes whenever anything is written)."""
        digest = hashlib.sha256()
        for side in SIDES:
            incidents, journal, files = world[side]
            for sys_id in sorted(incidents):
                r = incidents[sys_id]
                digest.update(f"{sys_id}:{r['sys_mod_count']}:{len(journal.get(sys_id, []))}:"
                              f"{','.join(sorted(f['sys_id'] for f in files.get(sys_id, [])))};"
                              .encode())
        return digest.hexdigest()

    def files_pending(self, world):
        """How many files the users attached are not yet where they belong: a live original
        without its copy, or a copy of a deleted one still there (the final wait goes on while
        the nodes still move files, which neither the outboxes nor the broker show)."""
        pending = 0
        for pair in self.ledger.pairs:
            for f in pair.files:
                away = other(f.side)
                twin = pair.ids[away]
                if twin is None:
                    twins = [r for r in world[away][0].values()
                             if r["correlation_id"] == pair.ids[pair.origin]]
                    twin = twins[0]["sys_id"] if len(twins) == 1 else None
                copies = [r for r in world[away][2].get(twin, [])
                          if r["file_name"] == f.meta["file_name"]
                          and r["sys_created_by"] == harness.SYNC_USER] if twin else []
                pending += len(copies) != (0 if f.deleted else 1)
        return pending

    def expect(self, ok, text):
        self.checks += 1
        if not ok:
            self.differences.append(text)

    def check(self, world):
        twins_of = {side: {} for side in SIDES}
        for side in SIDES:
            for r in world[side][0].values():
                if r["correlation_id"]:
                    twins_of[side].setdefault(r["correlation_id"], []).append(r)
        claimed = {side: set() for side in SIDES}
        for pair in self.ledger.pairs:
            self.check_pair(pair, world, twins_of, claimed)
        for side in SIDES:
            stray = set(world[side][0]) - claimed[side]
            for sys_id in sorted(stray):
                r = world[side][0][sys_id]
                self.expect(False, f"{PEOPLE[side][0]} {r['number']}: an incident no user made "
                                   f"and no twin of one (correlation_id={r['correlation_id']!r})")
            self.checks += len(world[side][0]) - len(stray)

    def check_pair(self, pair, world, twins_of, claimed):
        home, away = pair.origin, other(pair.origin)
        name = f"{PEOPLE[home][0]} {pair.number}"
        source = world[home][0].get(pair.ids[home])
        self.expect(source is not None, f"{name}: the incident itself is gone")
        twins = twins_of[away].get(pair.ids[home], [])
        self.expect(len(twins) == 1, f"{name}: {len(twins)} twins on {PEOPLE[away][0]} "
                                     f"({', '.join(t['number'] for t in twins)})")
        if source is None or len(twins) != 1:
            return
        twin = twins[0]
        claimed[home].add(source["sys_id"])
        claimed[away].add(twin["sys_id"])
        records = {home: source, away: twin}
        name = f"{name} <-> {PEOPLE[away][0]} {twin['number']}"
        self.expect(not source["correlation_id"], f"{name}: the source has a correlation_id")
        self.expect(twin["correlation_display"] == f"{pair.number}@{PEOPLE[home][0]}",
                    f"{name}: correlation_display {twin['correlation_display']!r}")
        self.check_fields(pair, records, name)
        self.check_journal(pair, records, world, name)
        self.check_files(pair, records, world, name)

    def check_fields(self, pair, records, name):
        fields = SYNCED + ("priority",)
        if records["public"]["state"] in ("6", "7"):
            fields += CLOSING
        for field in fields:
            values = {side: records[side][field] for side in SIDES}
            self.expect(values["public"] == values["private"],
                        f"{name}: {field} differs: {values['public']!r} / {values['private']!r}")
            if field == "priority":
                continue
            latest = {v for (side, f), v in pair.written.items() if f == field}
            if latest:
                self.expect(values["public"] in latest,
                            f"{name}: {field} is {values['public']!r}, which is not the latest "
                            f"value a user wrote on either side ({sorted(latest)!r})")

    def check_journal(self, pair, records, world, name):
        entries = {side: world[side][1].get(records[side]["sys_id"], []) for side in SIDES}
        comments = {side: [e for e in entries[side] if e["element"] == "comments"]
                    for side in SIDES}
        for side, text in pair.comments:
            instance, person, _ = PEOPLE[side]
            copy = f"[{instance}] {person} wrote:\n{text}"
            for where, wanted in ((side, text), (other(side), copy)):
                hits = sum(1 for e in comments[where] if e["value"] == wanted)
                self.expect(hits == 1, f"{name}: comment {text.splitlines()[0]!r} is "
                                       f"{hits} times on {PEOPLE[where][0]}")
        for side in SIDES:
            self.expect(len(comments[side]) == len(pair.comments),
                        f"{name}: {len(comments[side])} comments on {PEOPLE[side][0]}, "
                        f"{len(pair.comments)} were written")
        for side, text in pair.notes:
            home = sum(1 for e in entries[side] if e["element"] == "work_notes"
                       and e["value"] == text)
            self.expect(home == 1, f"{name}: work note {text!r} is {home} times at home")
            crossed = [e for rows in world[other(side)][1].values() for e in rows
                       if text in e["value"]]
            self.expect(not crossed, f"{name}: work note {text!r} crossed to "
                                     f"{PEOPLE[other(side)][0]}")


    def check_files(self, pair, records, world, name):
        """Each file a user attached and kept is on its incident and once on the twin with the
        same name, type, size and SHA-256, put there by the integration user; a deleted one is
        gone from both; the twins hold no other file."""
        files = {side: world[side][2].get(records[side]["sys_id"], []) for side in SIDES}
        claimed = {side: set() for side in SIDES}
        for f in pair.files:
            home, away = f.side, other(f.side)
            label = f"{name}: file {f.meta['file_name']!r} attached on {PEOPLE[home][0]}"
            originals = [r for r in files[home] if r["sys_id"] == f.sys_id]
            copies = [r for r in files[away] if r["file_name"] == f.meta["file_name"]
                      and r["sys_created_by"] == harness.SYNC_USER]
            claimed[home].update(r["sys_id"] for r in originals)
            claimed[away].update(r["sys_id"] for r in copies)
            if f.deleted:
                self.expect(not originals, f"{label}: deleted by its user, still there")
                self.expect(not copies, f"{label}: deleted at its source, but {len(copies)} "
                                        f"copies on {PEOPLE[away][0]}")
                continue
            self.expect(len(originals) == 1, f"{label}: the original is gone")
            self.expect(len(copies) == 1, f"{label}: {len(copies)} copies on {PEOPLE[away][0]}")
            for copy in copies:
                for field, value in f.meta.items():
                    self.expect(copy[field] == value, f"{label}: the copy's {field} is "
                                                      f"{copy[field]!r}, not {value!r}")
        for side in SIDES:
            for r in files[side]:
                self.expect(r["sys_id"] in claimed[side],
                            f"{name}: file {r['file_name']!r} on {PEOPLE[side][0]} that no user "
                            f"attached and no copy of one (by {r['sys_created_by']})")


def wait_quiet(dep, checker, timeout, still_s):
    """Waits until the broker holds nothing for the connection, both outboxes are empty, nothing
    is parked, and both instances stay unchanged for still_s seconds. Returns (seconds waited,
    the last reading of both instances, reason it stopped waiting)."""
    started = time.monotonic()
    last_print, mark, since = started, None, None
    while True:
        now = time.monotonic()
        world = checker.read()
        queued = dep.queued_at_broker()
        boxes = []
        for role in SIDES:
            shown = dep.cli(role, "connection", "show", dep.conn, "--json", check=False)
            doc = json.loads(shown.stdout) if shown.returncode == 0 else {}
            boxes.append(doc.get("outbox", -1) + doc.get("blocked", 0))
        fingerprint = checker.fingerprint(world)
        moving = checker.files_pending(world)
        idle = queued == 0 and boxes == [0, 0] and moving == 0
        if not idle or fingerprint != mark:
            mark, since = fingerprint, now
        if idle and now - since >= still_s:
            return now - started, world, "quiet"
        if now - started > timeout:
            return now - started, world, f"not quiet after {timeout} s (broker queued {queued}, " \
                                         f"outbox+blocked public/private {boxes}, files not " \
                                         f"where they belong {moving})"
        if now - last_print > 15:
            say(f"   ... waiting for quiet: broker queued {queued}, outbox+blocked {boxes}, "
                f"files moving {moving}")
            last_print = now
        time.sleep(1)


def faulted_responses(dep):
    """Count of 429, 5xx and lost answers each emulator gave (to the nodes and the users)."""
    counts = {"429": 0, "5xx": 0, "lost": 0}
    for emulator in dep.instances.values():
        for request in emulator.request_log():
            if request.get("lost"):
                counts["lost"] += 1
            elif request["status"] == 429:
                counts["429"] += 1
            elif request["status"] >= 500:
                counts["5xx"] += 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the rough part")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--build", default=os.path.join(harness.ROOT, "build"),
                        help="build directory holding the three programs")
    parser.add_argument("--bin", default=None,
                        help="or: a directory holding the installed programs")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="changes per second per instance (mean)")
    parser.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between kills")
    parser.add_argument("--fault-every", type=float, default=6.0,
                        help="mean seconds between emulator faults")
    parser.add_argument("--poll-ms", type=int, default=500, help="node poll interval")
    parser.add_argument("--log-level", default="info", choices=["debug", "info"],
                        help="daemons' log level (debug: for a post-mortem; large logs)")
    parser.add_argument("--quiet-timeout", type=float, default=300.0,
                        help="longest wait for quiet at the end, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)

    try:
        bins = harness.binaries(build=None if args.bin else args.build, bindir=args.bin)
    except harness.HarnessError as e:
        print(f"chaos: {e}", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="twinsync-chaos-")
    settings = {role: {("node", "poll_interval_ms"): str(args.poll_ms),
                       ("node", "attachment_scan"): ATTACHMENT_SCAN,
                       ("node", "log_level"): args.log_level} for role in SIDES}
    settings["broker"] = {("broker", "log_level"): args.log_level}
    dep = harness.Deployment(
        bins, workdir, settings=settings,
        public=("acme", {"alice": ("alice-pw", PEOPLE["public"][2])}),
        private=("globex", {"bob": ("bob-pw", PEOPLE["private"][2])}))
    say(f"chaos: {args.minutes:g} min, seed {seed}, files in {workdir}")
    try:
        dep.start_all()
        conn = dep.connect(trigger="active=true")
        say(f"connection {conn} active; users start, chaos starts")
    except (harness.HarnessError, OSError, ValueError, KeyError) as e:
        print(f"chaos: setup failed: {e} (files kept in {workdir})", file=sys.stderr)
        dep.stop_all()
        return 2

    ledger = Ledger(os.path.join(workdir, "actions.jsonl"))
    stop_users, stop_chaos = threading.Event(), threading.Event()
    users = [User(side, dep.instances[side], ledger, args.rate, rng.getrandbits(32), stop_users)
             for side in SIDES]
    chaos = Chaos(dep, rng.getrandbits(32), args.kill_every, args.fault_every, stop_chaos)
    checker = Checker(dep, ledger)
    failed = True
    try:
        for thread in users + [chaos]:
            thread.start()
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))
            say(f"   ... {sum(ledger.counts.values())} changes, {sum(chaos.kills.values())} "
                f"kills, {sum(chaos.faults.values())} faults")
        # Chaos stops first and clears its faults, so that a user caught in a
        # retry (say, behind a hibernation page) finishes instead of waiting
        # out a fault nobody will lift any more.
        stop_chaos.set()
        chaos.join()
        chaos.settle()
        stop_users.set()
        for thread in users:
            thread.join()
        waited, world, why = wait_quiet(dep, checker, args.quiet_timeout, still_s=8)
        checker.check(world)
        faulted = faulted_responses(dep)
        failures = report(args, seed, ledger, chaos, checker, faulted, waited, why)
        failed = failures > 0
        if failed or args.keep:
            keep_evidence(dep, world, workdir)
    except (harness.HarnessError, OSError, ValueError, KeyError) as e:
        print(f"chaos: aborted: {e}", file=sys.stderr)
    finally:
        stop_users.set()
        stop_chaos.set()
        ledger.actions.close()
        statuses = dep.stop_all()
        bad_stops = {n: s for n, s in statuses.items() if s not in (0, None)}
        if bad_stops:
            say(f"daemons that did not stop cleanly on SIGTERM: {bad_stops}")
            failed = True
        if failed or args.keep:
            say(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def keep_evidence(dep, world, workdir):
    """Writes what a post-mortem needs next to the logs: both instances as read at the end and
    each emulator's request log (actions.jsonl already holds every user change)."""
    with open(os.path.join(workdir, "final.json"), "w") as f:
        json.dump({side: {"incidents": world[side][0], "journal": world[side][1],
                          "attachments": world[side][2]} for side in SIDES}, f, indent=1)
    for emulator in dep.instances.values():
        with open(os.path.join(emulator.dir, "requests.json"), "w") as f:
            json.dump(emulator.request_log(), f, indent=1)


def report(args, seed, ledger, chaos, checker, faulted, waited, why):
    """Prints the figures; returns how many things went wrong."""
    c = ledger.counts
    creates = {side: sum(1 for p in ledger.pairs if p.origin == side) for side in SIDES}
    say(f"\nchaos run: {args.minutes:g} min, seed {seed}, {args.rate:g} changes/s per instance, "
        f"poll {args.poll_ms} ms")
    say(f"changes:     {sum(c.values())} (creates {c['create']}: acme {creates['public']} / "
        f"globex {creates['private']}; updates {c['update']}; comments {c['comment']}; "
        f"work notes {c['work_note']}; files attached {c['attach']}, deleted {c['detach']})")
    say(f"kills:       {sum(chaos.kills.values())} (broker {chaos.kills['broker']}, public "
        f"{chaos.kills['public']}, private {chaos.kills['private']}); unexpected exits "
        f"{len(chaos.unexpected)}")
    say(f"faults:      {sum(chaos.faults.values())} ("
        + ", ".join(f"{k} {v}" for k, v in chaos.faults.items())
        + f"); answers faulted: 429 x{faulted['429']}, 5xx x{faulted['5xx']}, lost x{faulted['lost']}")
    say(f"quiet:       {why} after {waited:.1f} s")
    say(f"checks:      {checker.checks}")
    say(f"differences: {len(checker.differences)}")
    for text in checker.differences[:50]:
        say(f"  DIFF {text}")
    for name, status, tail in chaos.unexpected:
        say(f"  EXIT {name} ended by itself with status {status}; last lines:\n{tail}")
    for text in ledger.user_errors[:20]:
        say(f"  USER {text}")
    for text in chaos.errors[:20]:
        say(f"  CHAOS {text}")
    return (len(checker.differences) + len(chaos.unexpected) + len(ledger.user_errors)
            + len(chaos.errors) + (why != "quiet"))


if __name__ == "__main__":
    sys.exit(main())
