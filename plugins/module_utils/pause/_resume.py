# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: a fresh diagnosis of one domain + the operator's options -> resume, restart or refuse, and why.

No I/O, no libvirt, no ansible. The module feeds in the ``kvm_pause`` paused[] entry of the domain (from
``_collect``), the state libvirt reports just before acting, and the state after; every function here
returns plain data with the exact sentence a person reads.

What may be overridden (``OVERRIDABLE``) and what never (a job in flight, a domain libvirt does not
answer for, storage that does not answer, a domain shutting down or starting up, a cause this code does
not know) is decided here and only here; the module documentation repeats the table.
"""

from __future__ import annotations

import re

from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import (
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTOFF,
    fmt_bytes,
    state_text,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._diagnose import CAUSES

# cause -> what listing it in ``override`` does. Everything else is never overridden.
OVERRIDABLE = {
    "watchdog": "resume the guest although its watchdog fired (a hung guest stays hung and may fire again)",
    "crashed": "restart the domain (destroy, then start from its persistent definition): the crashed guest's "
    "memory is lost and it boots again; take a dump first if it is needed",
    "postcopy": "ask libvirt to resume the source of a post-copy migration: if the destination runs too, two "
    "copies of the guest write to the same disks (split brain)",
    "postcopy_failed": "ask libvirt to resume a source whose post-copy failed: part of the guest's memory lives "
    "only on the other host, so the guest runs on torn memory (split brain, corruption)",
    "migration": "resume a domain paused for a migration that is no longer running: if the destination already "
    "runs the guest, it runs twice",
    "lock_failure": "resume a domain that lost its disk lease: another host may be writing to the same disks",
    "user_paused": "resume a user-paused domain although on_lockfailure=pause means it may have lost its lease",
    "storage_full": "resume without checking free space (min_free and the diagnosis' headroom)",
    "storage_io_error": "resume although the failed storage cannot be shown to be healthy",
    "storage_unreachable": "resume although the storage endpoint does not answer from this host",
    "unknown": "resume although nobody knows why QEMU stopped",
    "emulation_failure": "resume after an emulation failure (QEMU usually stops the guest again)",
    "api_error": "resume after a libvirt API call failed half-way",
}
# a job in flight is never overridden, except for these causes (the job *is* the post-copy migration)
JOB_OVERRIDABLE = ("postcopy", "postcopy_failed")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ResumeError(ValueError):
    """An option value is invalid; the message names the option."""


MIN_FREE_MAX_CHARS = 64
MIN_FREE_MAX_BYTES = 2**64  # 16 EiB: a filesystem's size is a 64-bit byte count


def parse_min_free(text) -> dict:
    """'512M' -> {'bytes': 536870912, 'percent': None, 'text': '512M'}; '5%' -> percent 5.0.

    Bytes take an optional K, M, G or T suffix (powers of 1024, optionally followed by B or iB). Bounded
    before any conversion: at most 64 characters, at most 16 EiB, so no number becomes an infinite float."""
    raw = str(text if text is not None else "").strip()
    if len(raw) > MIN_FREE_MAX_CHARS:
        raise ResumeError(
            f"min_free: must be a size or percentage of at most {MIN_FREE_MAX_CHARS} characters, "
            f"got {len(raw)} characters"
        )
    m = _PERCENT.match(raw)
    if m:
        pct = float(m.group(1))
        if pct > 100:
            raise ResumeError(f"min_free: {raw!r} is more than 100 %")
        return {"bytes": None, "percent": pct, "text": raw}
    m = _SIZE.match(raw)
    if m:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if not value <= MIN_FREE_MAX_BYTES:  # also refuses inf
            raise ResumeError(f"min_free: {raw!r} is more than 16 EiB, more than any filesystem can have")
        return {"bytes": int(value), "percent": None, "text": raw}
    raise ResumeError(
        f"min_free: {raw!r} is neither a size (bytes with an optional K, M, G or T suffix, e.g. 512M) "
        "nor a percentage (e.g. 5%)"
    )


def required_bytes(min_free: dict, total) -> int | None:
    """Bytes min_free asks for on a filesystem of ``total`` bytes; None when a percentage meets no size."""
    if min_free["percent"] is None:
        return min_free["bytes"]
    if not total:
        return None
    return int(total * min_free["percent"] / 100.0 + 0.999999)


def glob_escape(name: str) -> str:
    """A domain name as a shell-style pattern matching only itself (for _collect's fnmatch patterns)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _fs_label(fs: dict) -> str:
    where = fs.get("mount_point") or "?"
    if fs.get("device"):
        return "{} ({} on {})".format(where, fs.get("fstype") or "?", fs["device"])
    return where


def filesystems(entry: dict) -> list:
    """The filesystems holding the domain's disks (not CD-ROMs/floppies), each once, in disk order."""
    seen, out = set(), []
    for disk in entry.get("disks") or []:
        fs = disk.get("filesystem")
        if disk.get("device") not in (None, "disk") or not fs:
            continue
        key = (fs.get("mount_point"), fs.get("device"))
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(fs, disks=[d.get("target") for d in entry["disks"] if _same_fs(d, key)]))
    return out


def _same_fs(disk: dict, key) -> bool:
    fs = disk.get("filesystem") or {}
    return (fs.get("mount_point"), fs.get("device")) == key


def space_check(entry: dict, min_free: dict):
    """-> (shortfalls, confirmations): sentences per filesystem holding a disk of the domain."""
    short, ok = [], []
    for fs in filesystems(entry):
        avail, total = fs.get("available_bytes"), fs.get("total_bytes")
        need = required_bytes(min_free, total)
        want = fmt_bytes(need) + (
            f" ({min_free['text']} of {fmt_bytes(total)})" if min_free["percent"] is not None else ""
        )
        label = _fs_label(fs)
        if avail is None or need is None:
            short.append(f"free space on {label} is unknown, so min_free={min_free['text']} cannot be checked")
        elif avail < need:
            short.append(
                f"{label} has {fmt_bytes(avail)} available for QEMU (f_bavail), "
                f"less than min_free={min_free['text']} requires: {want}"
            )
        else:
            ok.append(f"{label} has {fmt_bytes(avail)} available for QEMU, at least {want}")
    return short, ok


def storage_details(entry: dict) -> list:
    """Where the failed disks live, per disk: source, endpoints and whether they answer, or filesystem."""
    disks = entry.get("disks") or []
    failed = [d for d in disks if d.get("error_code")] or [d for d in disks if d.get("device") in (None, "disk")]
    out = []
    for d in failed:
        what = "disk {} ({})".format(d.get("target"), d.get("source") or "?")
        if d.get("error_code"):
            what += " has a {} error".format(d.get("error") or "disk")
        eps = d.get("endpoints") or []
        fs = d.get("filesystem") or {}
        if eps:
            what += ": " + ", ".join(
                "endpoint {} answers".format(e.get("endpoint"))
                if e.get("reachable")
                else "endpoint {} does not answer ({})".format(e.get("endpoint"), e.get("error") or "no answer")
                for e in eps
            )
        elif fs.get("device"):
            what += f": on {_fs_label(fs)}"
        elif (d.get("block_device") or {}).get("device"):
            what += ": block device {}".format(d["block_device"]["device"])
        out.append(what)
    return out


def unresponsive_storage(entry: dict) -> list:
    """Per storage that does not answer: which disks, mount point, filesystem type, server or device, how long."""
    out = {}
    for d in entry.get("disks") or []:
        un = d.get("storage_unresponsive")
        if not un:
            continue
        key = (un.get("kind"), un.get("target"))
        if key not in out:
            where = (
                "block device {}".format(un.get("source"))
                if un.get("kind") == "block"
                else "{} ({} from {})".format(un.get("mount_point"), un.get("fstype") or "?", un.get("source") or "?")
            )
            since = " for {:.0f}s".format(un["seconds"]) if un.get("seconds") is not None else ""
            out[key] = [where + " has not answered" + since, []]
        out[key][1].append(str(d.get("target")))
    return ["{} (disks {})".format(text, ", ".join(targets)) for text, targets in out.values()]


def _decision(op, reason, overridden=None) -> dict:
    return {"op": op, "reason": reason, "overridden": overridden}


def judge(name: str, entry: dict, min_free: dict, override) -> dict:
    """The paused[] entry of a paused or crashed domain -> {'op': 'resume'|'restart'|None, 'reason', 'overridden'}.

    ``op`` None means refuse; ``reason`` says exactly why (and whether ``override`` could change it)."""
    override = set(override or ())
    cause = entry.get("cause") or "unknown"
    why = entry.get("safe_to_resume_reason") or "no reason given"
    if not entry.get("responsive", True):
        return _decision(
            None,
            "{}: {}; {}; nothing is done to a domain libvirt was not asked about (override cannot change this)".format(
                cause, why, entry.get("unresponsive_reason") or "libvirt does not answer for this domain"
            ),
        )
    if cause == "storage_unresponsive":
        return _decision(
            None,
            "storage_unresponsive: {}; {} (override cannot change this: the guest would block on its first I/O, and "
            "libvirt's resume needs the domain's job, which waits on the same storage)".format(
                why, "; ".join(unresponsive_storage(entry)) or "the storage under its disks does not answer"
            ),
        )
    job = entry.get("job") or {}
    if job.get("active") and cause not in JOB_OVERRIDABLE:
        kind = (job.get("kind") or "unknown").replace("_", " ")
        return _decision(
            None,
            f"{cause}: a {kind} job is in flight; let it finish or abort it (virsh domjobabort {name}), then run "
            "again (override cannot change this: libvirt holds the domain for the job, and resuming under a "
            "save, dump, snapshot, backup or migration makes its result inconsistent)",
        )
    if cause not in CAUSES:
        return _decision(None, f"{cause}: a cause this module does not know (override cannot change this)")
    overridden = cause in override and cause in OVERRIDABLE
    if cause == "crashed":
        if overridden:
            return _decision(
                "restart", f"crashed: {why}; overridden (override: crashed): {OVERRIDABLE['crashed']}", cause
            )
        return _decision(None, f"crashed: {why} (list crashed in override to {OVERRIDABLE['crashed']})")
    if entry.get("safe_to_resume") and cause == "storage_full":
        short, ok = space_check(entry, min_free)
        if short and overridden:
            return _decision(
                "resume",
                "storage_full: {}; overridden (override: storage_full): {}".format(
                    "; ".join(short), OVERRIDABLE[cause]
                ),
                cause,
            )
        if short:
            return _decision(
                None,
                "storage_full: {} (list storage_full in override to {})".format("; ".join(short), OVERRIDABLE[cause]),
            )
        if ok:
            return _decision("resume", "storage_full: {}: {}".format(why, "; ".join(ok)))
        return _decision(
            "resume",
            f"storage_full: {why} (no disk lives on a filesystem, so min_free={min_free['text']} does not apply)",
        )
    if entry.get("safe_to_resume"):
        return _decision("resume", f"{cause}: {why}")
    if overridden:
        return _decision("resume", f"{cause}: {why}; overridden (override: {cause}): {OVERRIDABLE[cause]}", cause)
    if cause == "storage_full":
        why = "; ".join([why, *space_check(entry, min_free)[0]])
    elif cause in ("storage_io_error", "storage_unreachable"):
        why = "; ".join([why, *storage_details(entry)])
    if cause in OVERRIDABLE:
        return _decision(None, f"{cause}: {why} (list {cause} in override to {OVERRIDABLE[cause]})")
    return _decision(None, f"{cause}: {why} (override cannot change this)")


def changed_since(entry: dict, state) -> str | None:
    """None when libvirt still reports the state the diagnosis was made for, else a sentence."""
    before = (entry.get("state_code"), entry.get("reason_code") or 0)
    now = (state[0], state[1])
    if now == before:
        return None
    return (
        f"the domain changed state since the diagnosis ({state_text(*before)} -> {state_text(*now)}); run again "
        "for a fresh diagnosis"
    )


def not_paused(name: str, state) -> dict:
    """A domain that is neither paused nor crashed -> already_running (ok) or refused."""
    if state[0] == RUNNING:
        return {"action": "already_running", "failed": False, "reason": f"{name} is already running"}
    text = state_text(*state)
    if state[0] == SHUTOFF:
        why = f"{name} is {text}, not paused: kvm_resume does not start domains"
    elif state[0] == PMSUSPENDED:
        why = f"{name} is {text}: the guest suspended itself; wake it with virsh dompmwakeup {name}"
    else:
        why = f"{name} is {text}, not paused or crashed: nothing to resume"
    return {"action": "refused", "failed": True, "reason": why}


def outcome(name: str, op: str, after, settle: float) -> dict:
    """State after the resume/restart (and ``settle`` seconds of watching) -> action, failed, reason."""
    text = state_text(*after) if after else "unknown"
    did = "restarted" if op == "restart" else "resumed"
    if after and after[0] == RUNNING:
        return {"action": did, "failed": False, "reason": f"{did} {name}; it is running"}
    if after and after[0] == PAUSED:
        return {
            "action": "paused_again",
            "failed": True,
            "reason": f"{did} {name}, but it paused again within {settle:g} s: now {text}; the cause is still there",
        }
    return {"action": "error", "failed": True, "reason": f"{did} {name}, but it did not stay running: now {text}"}
