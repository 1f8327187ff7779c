"""sbench_state: writes twin rows into a stopped node's state database (STATE_DIR/node.db).

The node-memory run of the sync benchmark gives each node 100,000 twins without syncing
100,000 incidents first: the emulators are seeded with matching incidents (snemu_bench.py),
and each node gets the twin rows it would have written itself had it synced them. The rows
follow node/node_state.c (schema version 1) and node/node_fields.h (a field set's canonical
form: for each field sorted by name, name NUL value NUL):

  public node  (it sent the incident):  local = the replica of its incident, previous = empty,
                                        sys_mod_count of its incident
  private node (it created the twin):   local = previous = the replica received,
                                        sys_mod_count of the twin

Anything else in the schema than what this file knows stops the benchmark with a message
naming the difference, rather than seeding rows the node would read differently.
"""

import sqlite3
import time

from sbench_client import BenchError

SCHEMA_VERSION = "1"
SYNCED = ("short_description", "description", "urgency", "impact", "state")
COLUMNS = ("conn", "local_sys_id", "local_number", "remote_sys_id", "remote_number",
           "under_sync", "peer_stopped", "local_fields", "previous_fields", "pending_fields",
           "last_sent_seq", "acked_seq", "mod_count", "last_sync_at", "created_at")


def canonical(record):
    """The canonical form (node_fields.h) of the Basic-mode replica of record."""
    out = bytearray()
    for name in sorted(SYNCED):
        out += name.encode() + b"\0" + record[name].encode() + b"\0"
    return bytes(out)


def check_schema(db):
    """Raises BenchError unless db has the schema version and twin columns this file knows."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    version = str(row[0]) if row else None
    if version != SCHEMA_VERSION:
        raise BenchError("node state schema is version %s, bench/sync/sbench_state.py knows %s"
                         % (version, SCHEMA_VERSION))
    have = {r[1] for r in db.execute("PRAGMA table_info(twins)")}
    missing = set(COLUMNS) - have
    if missing:
        raise BenchError("node state table twins lacks %s: update bench/sync/sbench_state.py"
                         % ", ".join(sorted(missing)))


def seed_twins(db_path, conn, role, local_rows, remote_rows):
    """Inserts one twin of connection conn per pair (local_rows[i], remote_rows[i]) into the
    node database at db_path, as the node with that role ("public" or "private") would hold
    it. The node must not be running. Returns the number of twins of conn afterwards."""
    if len(local_rows) != len(remote_rows):
        raise BenchError("seed files differ in length: %d local, %d remote"
                         % (len(local_rows), len(remote_rows)))
    now = int(time.time())
    db = sqlite3.connect(db_path, timeout=30)
    try:
        check_schema(db)
        placeholders = ",".join("?" * len(COLUMNS))
        sql = "INSERT INTO twins(%s) VALUES(%s)" % (",".join(COLUMNS), placeholders)
        rows = []
        for local, remote in zip(local_rows, remote_rows):
            previous = canonical(remote) if role == "private" else b""
            rows.append((conn, local["sys_id"], local["number"], remote["sys_id"],
                         remote["number"], 1, 0, canonical(local), previous, b"", 0, 0,
                         local["sys_mod_count"], now, now))
        with db:
            db.executemany(sql, rows)
        return db.execute("SELECT count(*) FROM twins WHERE conn = ?", (conn,)).fetchone()[0]
    finally:
        db.close()


def poll_cursor(db_path, conn):
    """The poll cursor (a sys_updated_on stamp, "" none) of connection conn; safe while the
    node runs (WAL)."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=30)
    try:
        row = db.execute("SELECT poll_cursor FROM connections WHERE id = ?", (conn,)).fetchone()
    finally:
        db.close()
    if row is None:
        raise BenchError("no connection %s in %s" % (conn, db_path))
    return row[0]


def set_poll_cursor(db_path, conn, cursor):
    """Moves the poll cursor of connection conn back to cursor ("YYYY-MM-DD HH:MM:SS" UTC), as
    after a long outage. The node must not be running."""
    db = sqlite3.connect(db_path, timeout=30)
    try:
        with db:
            changed = db.execute("UPDATE connections SET poll_cursor = ? WHERE id = ?",
                                 (cursor, conn)).rowcount
    finally:
        db.close()
    if changed != 1:
        raise BenchError("no connection %s in %s" % (conn, db_path))
