"""``python -m kvmlab up [STATE ...] | down | status | states``.

``up`` brings domains up and leaves them; what it created is recorded in
``<workdir>/<prefix>-cli/state.json`` so ``down`` (from any process) removes exactly that.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import libvirt

from .lab import DEFAULT_WORKDIR, Lab, LabTimeout, bounded, leftovers, status_file_state
from .proc import LabError
from .states import STATES, state_text

SESSION = "cli"
BLOCKED = {spec.expected for spec in STATES.values() if spec.libvirt_blocked}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvmlab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--prefix", default="kvmlab")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring up domains (default: every state) and leave them")
    up.add_argument("states", nargs="*", choices=[[], *STATES], metavar="STATE")
    sub.add_parser("down", help="remove everything `up` created")
    sub.add_parser("status", help="what `up` created and the state libvirt reports")
    sub.add_parser("states", help="list the states")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    if args.cmd == "states":
        for s in STATES.values():
            print(f"{s.key:14} {state_text(s.expected):22} {s.how}")
        return 0
    lab = Lab(workdir=args.workdir, prefix=args.prefix, session=SESSION, persistent=True)
    if args.cmd == "up":
        lab.open()
        rc = 0
        try:
            for state in args.states or list(STATES):
                try:
                    d = lab.create(state)
                except LabError as e:
                    print(f"FAILED {state}: {e}", file=sys.stderr)
                    rc = 1
                    continue
                print(f"{d.name:40} {state_text(d.expected):24} {d.time_to_state:6.2f}s")
        finally:
            lab.detach()
        return rc
    if args.cmd == "down":
        lab.open()
        lab.close()
        left = leftovers(args.workdir, args.prefix, SESSION)
        for item in left:
            print(f"LEFT: {item}", file=sys.stderr)
        return 1 if left else 0
    # status
    sf = lab.dir / "state.json"
    if not sf.exists():
        print("nothing is up")
        return 0
    conn = libvirt.open(lab.uri)
    for rec in json.loads(sf.read_text())["records"]:
        if rec["kind"] != "domain" or rec.get("uri"):     # (copies on the migration peer are not listed)
            continue
        from_file = status_file_state(rec["name"])
        if from_file in BLOCKED:
            # not asked: a look-up of a domain stuck in a job would itself hang inside libvirtd while
            # holding the domain list's read lock, and block every define until the job ends
            print(f"{rec['name']:40} {state_text(from_file)} (status file; libvirt calls on it hang)")
            continue
        try:
            st = state_text(bounded(lambda n=rec["name"]: conn.lookupByName(n).state(), 3, rec["name"]))
        except LabTimeout:
            st = f"libvirt does not answer (blocked); status file: {state_text(status_file_state(rec['name']))}"
        except libvirt.libvirtError as e:
            st = f"error: {e.get_error_message()}"
        print(f"{rec['name']:40} {st}")
    return 0
