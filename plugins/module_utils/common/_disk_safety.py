# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: is a block device empty and unused? The one data-safety verdict of the collection, for every module
that would write over a whole device (kvm_benchmark's write jobs, DRBD's metadata creation).

The facts come from ``_disk_safety_io.device_facts`` (+ ``claim`` for the exclusive open): blkid's low-level
probe (``blkid -p -o export``), ``wipefs --no-act --json``, sysfs (holders, partitions, read-only),
/proc/self/mountinfo, /proc/swaps, the processes with the device open, and an O_EXCL open. ``examine`` turns them
into two lists a caller words its refusal with:

``in_use``
    mounted, swap, held by another device (LVM, device-mapper, md, DRBD, bcache), partitioned, open by another
    process, refused an exclusive open: never overwritten, whatever force says.
``signatures``
    what blkid and wipefs found on it (filesystem, partition table, LVM PV, RAID member, DRBD metadata, swap, an
    ambivalent probe), or a probe that did not answer: overwritten only when the caller's force says so.

No I/O and no ansible imports.
"""

from __future__ import annotations

import json
import re


def tail(text, limit=600):
    """The last lines of a tool's output, at most ``limit`` characters, on one line."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    out = " | ".join(lines[-6:])
    return out if len(out) <= limit else "..." + out[-limit:]


def parse_blkid_export(text):
    """``blkid -p -o export`` -> {KEY: value} (of the first device block: blkid prints one)."""
    out = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_wipefs_json(text):
    """``wipefs --no-act --json`` -> [{"type", "offset", "uuid", "label"}] (no output at all: nothing found)."""
    if not (text or "").strip():
        return []
    data = json.loads(text)
    out = []
    for sig in data.get("signatures") or []:
        out.append({k: sig.get(k) for k in ("type", "offset", "uuid", "label")})
    return out


def _details(pairs):
    shown = [f"{k}={v}" for k, v in pairs if v]
    return f" ({', '.join(shown)})" if shown else ""


def blkid_findings(rc, out, err):
    """-> (types found, descriptions). blkid exits 2 when it finds nothing, 8 when the probe is ambivalent (more
    than one signature)."""
    if rc == 2 and not (out or "").strip():
        return [], []
    tags = parse_blkid_export(out)
    found, types = [], []
    if tags.get("PTTYPE"):
        types.append(tags["PTTYPE"])
        found.append(f"{tags['PTTYPE']} partition table{_details([('PTUUID', tags.get('PTUUID'))])}")
    if tags.get("TYPE"):
        types.append(tags["TYPE"])
        found.append(
            f"{tags['TYPE']} signature"
            + _details([("UUID", tags.get("UUID")), ("LABEL", tags.get("LABEL")), ("VERSION", tags.get("VERSION"))])
        )
    if rc == 8:
        found.append("more than one signature (blkid: ambivalent result)")
    elif rc not in (0, 2):
        found.append(f"no answer from blkid (rc {rc}: {tail(err or out, 200)})")
    elif rc == 0 and not found:
        found.append("a signature blkid names no type for (" + ", ".join(f"{k}={v}" for k, v in tags.items()) + ")")
    return types, found


def wipefs_findings(rc, out, err, known_types):
    """wipefs' signatures that blkid did not already name (a GPT's protective MBR and backup header, a second
    filesystem); every one when blkid saw none."""
    if rc != 0:
        return [f"no answer from wipefs (rc {rc}: {tail(err or out, 200)})"]
    try:
        sigs = parse_wipefs_json(out)
    except ValueError:
        return [f"wipefs output that is not JSON: {tail(out, 200)!r}"]
    extra = [s for s in sigs if s["type"] not in known_types]
    return [
        f"{s['type']} signature at offset {s['offset']}{_details([('UUID', s['uuid']), ('LABEL', s['label'])])}"
        for s in extra
    ]


def unescape(path):
    """mountinfo and /proc/swaps escape space, tab, newline and backslash as octal (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mountinfo(text, majmin):
    """/proc/self/mountinfo -> the mount points of the device ``major:minor``."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[2] == majmin:
            out.append(unescape(fields[4]))
    return out


def fstype_of(mountinfo, path):
    """/proc/self/mountinfo + an absolute, resolved path -> the type of the filesystem it is on (the mount with
    the longest mount point above it; the last one mounted there), or None."""
    best, best_len = None, -1
    for line in (mountinfo or "").splitlines():
        head, sep, rest = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5 or not rest.split():
            continue
        mp = unescape(fields[4])
        inside = path == mp or path.startswith(mp.rstrip("/") + "/")
        if inside and len(mp) >= best_len:
            best, best_len = rest.split()[0], len(mp)
    return best


def parse_swaps(text):
    """/proc/swaps -> the swap areas' paths (the header line skipped)."""
    out = []
    for line in (text or "").splitlines()[1:]:
        fields = line.split()
        if fields:
            out.append(unescape(fields[0]))
    return out


def in_use(facts):
    """What makes a device off limits whatever a force option says: [description] (empty: not in use)."""
    out = [f"mounted at {m}" for m in facts.get("mounts") or []]
    if facts.get("swap"):
        out.append("in use as swap (/proc/swaps)")
    out += [f"held by {h}" for h in facts.get("holders") or []]
    if facts.get("partitions"):
        out.append(f"has partitions ({', '.join(facts['partitions'])})")
    out += [f"open by {o}" for o in facts.get("openers") or []]
    if facts.get("excl_error"):
        out.append(f"cannot be opened exclusively ({facts['excl_error']}): something else claims it")
    return out


def signatures(facts):
    """What blkid and wipefs found on the device, or that one of them did not answer: [description] (empty:
    nothing found by either)."""
    types, found = blkid_findings(facts.get("blkid_rc"), facts.get("blkid_out"), facts.get("blkid_err"))
    return found + wipefs_findings(facts.get("wipefs_rc"), facts.get("wipefs_out"), facts.get("wipefs_err"), types)


def shown(facts):
    """The device as messages name it: the path given, and where it resolves when that differs."""
    dev = facts["path"]
    return dev if facts.get("real") in (None, dev) else f"{dev} ({facts['real']})"


def examine(facts):
    """Facts of a device -> {"device", "exists", "is_block", "in_use": [...], "signatures": [...], "empty"}.
    ``empty``: a block device with nothing in use and no signature (what may be written over without force)."""
    exists = bool(facts.get("exists", True))
    is_block = bool(exists and facts.get("is_block"))
    busy = in_use(facts) if is_block else []
    sigs = signatures(facts) if is_block else []
    return {
        "device": shown(facts),
        "exists": exists,
        "is_block": is_block,
        "in_use": busy,
        "signatures": sigs,
        "empty": is_block and not busy and not sigs,
    }
