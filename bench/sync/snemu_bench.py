#!/usr/bin/env python3
"""snemu_bench: tests/snemu/snemu.py as the sync benchmark runs it.

Two additions, both from outside the emulator (it is imported, not copied), then it serves
exactly as snemu.py does with the remaining arguments:

--nodelay   sets TCP_NODELAY on every accepted connection. snemu writes a response's headers
            and body in two send() calls; on a keep-alive connection the body then waits for
            the client's delayed ACK of the headers (Nagle), about 40 ms on Linux, so any
            keep-alive client (libcurl in the nodes included) gets at most ~23 answers per
            second whatever the work. A real instance does not stall like that, and the
            benchmark is about twinsync, so it sets the option unless told not to.

--seed N    creates N incidents before listening. The node-memory run needs 100,000 twins:
            creating them through twinsync would take far longer than the run, and snemu's
            --state-file rewrites the whole file after every write (seconds per write at that
            size), so they are written in memory through the emulator's own Store.write (the
            code path a REST POST takes, minus HTTP).

    snemu_bench.py [--nodelay] [--seed N --seed-out FILE [--twins-of FILE
                   --source-instance NAME] [--creator USER]] -- SNEMU-ARGS...

Without --twins-of the seed is N incidents (varied urgency and impact); with it, one twin per
line of FILE (as another snemu_bench.py wrote it), carrying the source's synced fields,
correlation_id = the source's sys_id and correlation_display = NUMBER@NAME, as twinsync writes
its twins. Records are stamped one hour in the past, so a connection activated afterwards does
not see them as changes. FILE gets one JSON object per incident: sys_id, number,
sys_mod_count, the synced fields, and correlation_id. The port file appears only once the
seeding is done.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "snemu"))
import snemu  # noqa: E402

SYNCED = ("short_description", "description", "urgency", "impact", "state")
KEPT = ("sys_id", "number", "sys_mod_count", "correlation_id") + SYNCED
SEED_AGE_S = 3600


def source_body(i):
    """The fields of the i-th seeded incident."""
    return {"short_description": "Seeded incident %d" % i,
            "description": "Seeded by the sync benchmark; record %d of the node-memory run." % i,
            "urgency": str(1 + i % 3), "impact": str(1 + (i // 3) % 3)}


def twin_body(source, source_instance):
    """The fields twinsync writes on the twin of source (a line of a seed file)."""
    body = {name: source[name] for name in SYNCED}
    body["correlation_id"] = source["sys_id"]
    body["correlation_display"] = "%s@%s" % (source["number"], source_instance)
    return body


def seed(emu, args):
    """Writes the incidents into emu's store and their summary into args.seed_out."""
    sources = None
    if args.twins_of:
        with open(args.twins_of) as f:
            sources = [json.loads(line) for line in f]
        if len(sources) < args.seed:
            raise SystemExit("snemu_bench: %s holds %d incidents, --seed asks for %d twins"
                             % (args.twins_of, len(sources), args.seed))
    caller = emu.store.caller(args.creator)
    emu.clock.offset = -SEED_AGE_S
    try:
        with open(args.seed_out, "w") as out:
            for i in range(args.seed):
                body = twin_body(sources[i], args.source_instance) if sources else source_body(i)
                rec = emu.store.write("incident", None, body, caller)
                out.write(json.dumps({k: rec[k] for k in KEPT}) + "\n")
    finally:
        emu.clock.offset = 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodelay", action="store_true", help="TCP_NODELAY on every connection")
    parser.add_argument("--seed", type=int, default=0, help="incidents to create (0)")
    parser.add_argument("--seed-out", help="where to write their summary")
    parser.add_argument("--twins-of", help="seed file of the source instance: create its twins")
    parser.add_argument("--source-instance", default="acme", help="source instance name")
    parser.add_argument("--creator", default="admin", help="user the incidents are created by")
    parser.add_argument("snemu_args", nargs=argparse.REMAINDER, help="-- then snemu.py's arguments")
    args = parser.parse_args()
    rest = args.snemu_args[1:] if args.snemu_args[:1] == ["--"] else args.snemu_args

    if args.seed and not args.seed_out:
        parser.error("--seed needs --seed-out")
    if args.nodelay:
        snemu._Handler.disable_nagle_algorithm = True  # socketserver.StreamRequestHandler
    if args.seed:
        plain = snemu.emulator_from_args

        def seeded(emu_args):
            emu = plain(emu_args)
            seed(emu, args)
            return emu

        snemu.emulator_from_args = seeded
    return snemu.main(rest)


if __name__ == "__main__":
    sys.exit(main())
