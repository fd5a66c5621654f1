# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: what DRBD says about its resources -> one record per resource with a verdict and what to do.

Two sources, one shape:

DRBD 8.4 (Debian's and Ubuntu's in-kernel module)
    ``/proc/drbd`` (per minor: cs, ro, ds, the counters, the sync progress lines), ``drbdsetup show`` (which
    resource each minor belongs to, the peer's address) and the kernel log (``dmesg``): 8.4 says nowhere else
    that a connection was dropped for a split brain.
DRBD 9
    ``drbdsetup status --json`` (drbd-utils' ``resource_status_json`` and friends; sizes and out-of-sync in KiB)
    and the same kernel log.

A resource record::

    {"name", "drbd_version", "role", "volumes": [{"volume", "minor", "disk_state", "client", "quorum",
     "size_bytes"}], "peers": [{"name", "node_id", "address", "connection_state", "role", "volumes": [{"volume",
     "replication_state", "disk_state", "client", "out_of_sync_bytes", "sync_percent"}]}], "out_of_sync_bytes",
     "sync": None or {"percent", "remaining_bytes", "total_bytes", "eta_seconds", "speed_kib_s"}, "suspended",
     "split_brain": {"detected", "evidence": [log lines]}, "verdict", "summary", "remediation": [steps]}

Verdicts, worst first: ``split-brain``, ``diskless``, ``no-quorum``, ``suspended``, ``disconnected``,
``degraded``, ``syncing``, ``healthy``.

No I/O and no ansible imports.
"""

from __future__ import annotations

import json
import re

KIB = 1024

VERDICTS = ("split-brain", "diskless", "no-quorum", "suspended", "disconnected", "degraded", "syncing", "healthy")
SEVERITY = {
    "split-brain": "critical",
    "diskless": "critical",
    "no-quorum": "critical",
    "suspended": "critical",
    "disconnected": "warning",
    "degraded": "warning",
    "syncing": "info",
    "healthy": "ok",
}
# 8.4 connection states (cs:) that mean the peers talk: they map to DRBD 9's replication states
REPLICATING_84 = {
    "Connected": "Established",
    "StartingSyncS": "StartingSyncS",
    "StartingSyncT": "StartingSyncT",
    "WFBitMapS": "WFBitMapS",
    "WFBitMapT": "WFBitMapT",
    "WFSyncUUID": "WFSyncUUID",
    "SyncSource": "SyncSource",
    "SyncTarget": "SyncTarget",
    "PausedSyncS": "PausedSyncS",
    "PausedSyncT": "PausedSyncT",
    "VerifyS": "VerifyS",
    "VerifyT": "VerifyT",
    "Ahead": "Ahead",
    "Behind": "Behind",
}
SYNCING = {
    "SyncSource",
    "SyncTarget",
    "PausedSyncS",
    "PausedSyncT",
    "StartingSyncS",
    "StartingSyncT",
    "WFBitMapS",
    "WFBitMapT",
    "WFSyncUUID",
}
# the kernel log's words for a split brain: 8.4 and 9 both print this line when they drop the connection for it
# ("Split-Brain detected, manually solved" / "... automatically solved" are resolutions, not evidence)
SPLIT_BRAIN = re.compile(r"Split-Brain detected but unresolved", re.IGNORECASE)
CONNECTED_AGAIN = re.compile(
    r"conn\( \S+ -> (Connected|WFBitMapS|WFBitMapT|SyncSource|SyncTarget)\s*\)|"
    r"(replication|repl)\( \S+ -> (Established|SyncSource|SyncTarget)\s*\)"
)


class StatusError(ValueError):
    """A status text DRBD did not write (or no longer writes the same way)."""


# ---- DRBD 8.4 -------------------------------------------------------------------------------------------------

# " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----"; a StandAlone minor has no protocol
_MINOR = re.compile(r"^\s*(\d+): cs:(\S+)(?: ro:(\S+)/(\S+) ds:(\S+)/(\S+)\s+([ABC](?=\s))?\s*(\S+)?)?")
_SYNCED = re.compile(r"sync'ed:\s*([\d.]+)% \((\d+)/(\d+)\)([KM])")
_FINISH = re.compile(r"finish: (\d+):(\d+):(\d+) speed: ([\d,]+)")


def parse_version_84(text):
    """/proc/drbd's first line -> '8.4.11' (or '9.2.5' on DRBD 9, whose /proc/drbd has the header only)."""
    m = re.match(r"version: (\S+)", (text or "").strip())
    return m.group(1) if m else None


def parse_proc_drbd(text):
    """/proc/drbd of DRBD 8.4 -> {"version", "minors": {minor: {...}}}. Unconfigured minors are left out."""
    version = parse_version_84(text)
    if version is None:
        raise StatusError("/proc/drbd has no 'version:' line: is the drbd module loaded?")
    minors = {}
    cur = None
    for line in text.splitlines()[1:]:
        m = _MINOR.match(line)
        if m:
            minor, cs = int(m.group(1)), m.group(2)
            cur = None
            if cs == "Unconfigured":
                continue
            cur = {
                "minor": minor,
                "cs": cs,
                "role": m.group(3),
                "peer_role": m.group(4),
                "disk_state": m.group(5),
                "peer_disk_state": m.group(6),
                "protocol": m.group(7),
                "flags": m.group(8),
                "counters": {},
                "sync": None,
            }
            minors[minor] = cur
            continue
        if cur is None:
            continue
        if " ns:" in f" {line}" or line.strip().startswith("ns:"):
            for key, value in re.findall(r"(\w+):(\S+)", line):
                cur["counters"][key] = int(value) if value.isdigit() else value
            continue
        m = _SYNCED.search(line)
        if m:
            mult = 1 if m.group(4) == "K" else 1024
            cur["sync"] = {
                "percent": float(m.group(1)),
                "remaining_bytes": int(m.group(2)) * mult * KIB,
                "total_bytes": int(m.group(3)) * mult * KIB,
                "eta_seconds": None,
                "speed_kib_s": None,
            }
            continue
        m = _FINISH.search(line)
        if m and cur["sync"] is not None:
            cur["sync"]["eta_seconds"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
            cur["sync"]["speed_kib_s"] = int(m.group(4).replace(",", ""))
    return {"version": version, "minors": minors}


def parse_drbdsetup_show_84(text):
    """``drbdsetup show`` (8.4) -> {resource: {"minors": {volume: minor}, "disks": {volume: path}, "peer_address",
    "address"}}."""
    out = {}
    res = None
    section = []
    volume = None
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^resource (\S+) \{$", line)
        if m and not section:
            res = {"minors": {}, "disks": {}, "peer_address": None, "address": None}
            out[m.group(1)] = res
            section = ["resource"]
            continue
        if line.endswith("{"):
            name = line[:-1].strip()
            section.append(name)
            m = re.match(r"^volume (\d+)$", name)
            if m:
                volume = int(m.group(1))
            continue
        if line == "}":
            if section:
                section.pop()
            continue
        if res is None:
            continue
        m = re.match(r"^address\s+(?:\S+\s+)?(\S+);$", line)
        if m and section[-1:] == ["_remote_host"]:
            res["peer_address"] = m.group(1)
        elif m and section[-1:] == ["_this_host"]:
            res["address"] = m.group(1)
        m = re.match(r"^device\s+minor (\d+);$", line)
        if m and volume is not None:
            res["minors"][volume] = int(m.group(1))
        m = re.match(r'^disk\s+"([^"]*)";$', line)
        if m and volume is not None:
            res["disks"][volume] = m.group(1)
    return out


def resources_84(proc, show, kernel_log=""):
    """/proc/drbd + ``drbdsetup show`` + the kernel log (8.4) -> [resource record]."""
    parsed = parse_proc_drbd(proc)
    names = parse_drbdsetup_show_84(show)
    by_minor = {}
    for name, res in names.items():
        for volume, minor in res["minors"].items():
            by_minor[minor] = (name, volume)
    out = []
    grouped = {}
    for minor, d in sorted(parsed["minors"].items()):
        name, volume = by_minor.get(minor, (f"minor-{minor}", 0))
        grouped.setdefault(name, []).append((volume, d))
    for name, vols in grouped.items():
        conf = names.get(name, {})
        first = vols[0][1]
        cs = first["cs"]
        connected = cs in REPLICATING_84
        peer_vols = []
        volumes = []
        sync = None
        for volume, d in vols:
            volumes.append(
                {
                    "volume": volume,
                    "minor": d["minor"],
                    "disk_state": d["disk_state"],
                    "client": False,
                    "quorum": None,
                    "size_bytes": None,
                    "disk": conf.get("disks", {}).get(volume),
                }
            )
            oos = d["counters"].get("oos")
            peer_vols.append(
                {
                    "volume": volume,
                    "replication_state": REPLICATING_84.get(d["cs"], "Off"),
                    "disk_state": d["peer_disk_state"],
                    "client": False,
                    "out_of_sync_bytes": oos * KIB if isinstance(oos, int) else None,
                    "sync_percent": d["sync"]["percent"] if d["sync"] else None,
                }
            )
            if d["sync"] is not None:
                sync = _merge_sync(sync, d["sync"])
        peer = {
            "name": None,
            "node_id": None,
            "address": conf.get("peer_address"),
            "connection_state": "Connected" if connected else cs,
            "role": first["peer_role"],
            "volumes": peer_vols,
        }
        record = {
            "name": name,
            "drbd_version": parsed["version"],
            "role": first["role"],
            "volumes": volumes,
            "peers": [peer],
            "sync": sync,
            "suspended": "s" in (first["flags"] or "")[:1],
        }
        out.append(finish(record, kernel_log, minors=[d["minor"] for _v, d in vols]))
    return out


def _merge_sync(a, b):
    if a is None:
        return dict(b)
    total = (a.get("total_bytes") or 0) + (b.get("total_bytes") or 0)
    remaining = (a.get("remaining_bytes") or 0) + (b.get("remaining_bytes") or 0)
    return {
        "percent": round(100.0 * (total - remaining) / total, 1) if total else None,
        "remaining_bytes": remaining,
        "total_bytes": total,
        "eta_seconds": max(x for x in (a.get("eta_seconds"), b.get("eta_seconds"), 0) if x is not None),
        "speed_kib_s": (a.get("speed_kib_s") or 0) + (b.get("speed_kib_s") or 0),
    }


# ---- DRBD 9 ---------------------------------------------------------------------------------------------------


def parse_status_json(text):
    """``drbdsetup status --json`` -> the list of resources it prints."""
    try:
        data = json.loads(text or "")
    except ValueError as exc:
        raise StatusError(f"drbdsetup status --json printed no JSON: {exc}") from None
    if not isinstance(data, list):
        raise StatusError("drbdsetup status --json printed JSON that is not a list of resources")
    return data


def resources_9(status_json, kernel_log="", version=None):
    """``drbdsetup status --json`` + the kernel log (DRBD 9) -> [resource record]."""
    out = []
    for res in parse_status_json(status_json):
        volumes = []
        for d in res.get("devices") or []:
            size = d.get("size")
            volumes.append(
                {
                    "volume": d.get("volume"),
                    "minor": d.get("minor"),
                    "disk_state": d.get("disk-state"),
                    "client": bool(d.get("client")),
                    "quorum": d.get("quorum"),
                    "size_bytes": size * KIB if isinstance(size, int) else None,
                    "disk": None,
                }
            )
        peers = []
        sync = None
        for c in res.get("connections") or []:
            pvols = []
            for pd in c.get("peer_devices") or []:
                oos = pd.get("out-of-sync")
                repl = pd.get("replication-state")
                done = pd.get("percent-resync-done")
                pvols.append(
                    {
                        "volume": pd.get("volume"),
                        "replication_state": repl,
                        "disk_state": pd.get("peer-disk-state"),
                        "client": bool(pd.get("peer-client")),
                        "out_of_sync_bytes": oos * KIB if isinstance(oos, int) else None,
                        "sync_percent": done if repl in SYNCING else None,
                    }
                )
                if repl in SYNCING:
                    eta = pd.get("estimated-seconds-to-finish")
                    part = {
                        "percent": done,
                        "remaining_bytes": oos * KIB if isinstance(oos, int) else None,
                        "total_bytes": pd["rs-total"] * 512 if isinstance(pd.get("rs-total"), int) else None,
                        "eta_seconds": int(eta) if isinstance(eta, (int, float)) and eta != 987654321 else None,
                        "speed_kib_s": int(pd["db1/dt1 [MiB/s]"] * 1024)
                        if isinstance(pd.get("db1/dt1 [MiB/s]"), (int, float))
                        else None,
                    }
                    sync = part if sync is None else _merge_sync(sync, part)
            peers.append(
                {
                    "name": c.get("name"),
                    "node_id": c.get("peer-node-id"),
                    "address": None,
                    "connection_state": c.get("connection-state"),
                    "role": c.get("peer-role"),
                    "volumes": pvols,
                }
            )
        record = {
            "name": res.get("name"),
            "drbd_version": version or "9",
            "role": res.get("role"),
            "volumes": volumes,
            "peers": peers,
            "sync": sync,
            "suspended": bool(res.get("suspended")),
        }
        out.append(finish(record, kernel_log, minors=[v["minor"] for v in volumes]))
    return out


# ---- split-brain evidence, verdict, remediation --------------------------------------------------------------


def split_brain_evidence(kernel_log, name, minors):
    """The kernel log's split-brain lines for this resource since it last connected (a later successful connect
    means it was resolved) -> [lines]."""
    tags = {f"drbd {name}:", f"drbd {name}/"} | {f"drbd{m}:" for m in minors} | {f"drbd{m} " for m in minors}
    evidence = []
    for line in (kernel_log or "").splitlines():
        if not any(t in line for t in tags):
            continue
        if SPLIT_BRAIN.search(line):
            evidence.append(line.strip())
        elif CONNECTED_AGAIN.search(line):
            evidence = []
    return evidence


def _disconnected(peer):
    return peer["connection_state"] != "Connected"


def finish(record, kernel_log, minors):
    """Adds out_of_sync_bytes, split_brain, verdict, severity, summary and remediation."""
    name = record["name"]
    oos = [
        pv["out_of_sync_bytes"] for p in record["peers"] for pv in p["volumes"] if pv["out_of_sync_bytes"] is not None
    ]
    record["out_of_sync_bytes"] = max(oos) if oos else None
    evidence = split_brain_evidence(kernel_log, name, minors)
    down = [p for p in record["peers"] if _disconnected(p)]
    record["split_brain"] = {"detected": bool(evidence and down), "evidence": evidence[-4:]}
    local = [v["disk_state"] for v in record["volumes"]]
    # a peer that is diskless on purpose (DRBD 9 client, a quorum tiebreaker) lacks nothing
    peer_disks = [pv["disk_state"] for p in record["peers"] for pv in p["volumes"] if not pv.get("client")]
    repl = [pv["replication_state"] for p in record["peers"] for pv in p["volumes"]]
    role = record["role"]
    out_of_sync = human_bytes(record["out_of_sync_bytes"] or 0)
    if record["split_brain"]["detected"]:
        verdict = "split-brain"
        summary = (
            f"split brain: both sides changed the data while apart; DRBD dropped the connection "
            f"({', '.join(p['connection_state'] for p in down)}) and keeps them apart until told which "
            "side's changes to discard"
        )
        remediation = split_brain_steps(name, role)
    elif any(d == "Diskless" for d, v in zip(local, record["volumes"]) if not v["client"]):
        verdict = "diskless"
        summary = (
            f"no local disk (Diskless, role {role}): I/O goes to the peer, or fails when there is none; "
            "the backing device failed or was detached"
        )
        remediation = [
            f"Look for the backing device's errors in the kernel log (dmesg | grep -i -e drbd -e "
            f"'I/O error') and fix or replace the disk, then attach it again: drbdadm attach {name}; "
            "the resync from the peer starts by itself"
        ]
    elif any(v["quorum"] is False for v in record["volumes"]):
        verdict = "no-quorum"
        summary = f"lost quorum (role {role}): I/O is frozen or fails per on-no-quorum"
        remediation = [
            "Bring back the missing peers or the tiebreaker (drbdadm status shows which are "
            f"missing); I/O resumes when quorum returns (drbdadm resume-io {name} if it was "
            "suspended)"
        ]
    elif record["suspended"]:
        verdict = "suspended"
        summary = f"I/O suspended (role {role}) by fencing or quorum: writers block"
        remediation = [
            f"Find why in the kernel log and the fence handler's log; drbdadm resume-io {name} when "
            "the peer is known to be outdated or down"
        ]
    elif down:
        verdict = "disconnected"
        states = ", ".join(sorted({p["connection_state"] for p in down}))
        summary = (
            f"not replicating: connection {states} (role {role}, disk {'/'.join(local)}); "
            f"{out_of_sync} changed since the peer last saw it"
        )
        where = ", ".join(p["address"] or p["name"] or "?" for p in down)
        remediation = [
            f"Check the replication link to the peer ({where}): "
            "addresses, firewall, cables; DRBD reconnects by itself when it answers"
            + (
                f"; a StandAlone side does not retry: drbdadm connect {name}"
                if any(p["connection_state"] == "StandAlone" for p in down)
                else ""
            ),
            "Writes go on locally meanwhile; the peer is not up to date and must not be promoted",
        ]
    elif any(r in SYNCING for r in repl):
        verdict = "syncing"
        sync = record["sync"] or {}
        pct = sync.get("percent")
        eta = sync.get("eta_seconds")
        summary = (
            f"resynchronising ({'/'.join(sorted({r for r in repl if r in SYNCING}))}): "
            f"{pct if pct is not None else '?'}% done, {out_of_sync} to go"
            + (f", about {eta} s left" if eta is not None else "")
        )
        remediation = ["Wait for the resync to finish; do not promote a SyncTarget (Inconsistent) node"]
    elif any(d != "UpToDate" for d in local + peer_disks):
        verdict = "degraded"
        summary = f"connected but not every disk is UpToDate (local {'/'.join(local)}, peer {'/'.join(peer_disks)})"
        if all(d == "Inconsistent" for d in local + peer_disks):
            remediation = [
                f"No initial sync yet: on the node whose data is to be kept (only that one): "
                f"drbdadm primary --force {name}"
            ]
        else:
            remediation = [
                f"Look at drbdadm status {name} and the kernel log; an Outdated disk resyncs when it "
                "connects to an UpToDate peer"
            ]
    else:
        verdict = "healthy"
        summary = f"replicating, every disk UpToDate (role {role})"
        remediation = []
    record["verdict"] = verdict
    record["severity"] = SEVERITY[verdict]
    record["summary"] = summary
    record["remediation"] = remediation
    return record


def split_brain_steps(name, role):
    # the form drbd-utils 9 takes for 8.4 and 9 kernels alike (proven on 8.4.11 with drbd-utils 9.22); the old
    # drbd-utils 8.4 wanted "drbdadm -- --discard-my-data connect"
    discard = f"drbdadm connect --discard-my-data {name}"
    return (
        [
            "Decide which node's data survives (the one whose changes since the split matter; compare what each "
            "side wrote). Keep the VMs or filesystems on the other node stopped",
            f"On the node whose changes are discarded (the victim): drbdadm disconnect {name}; drbdadm secondary "
            f"{name}; {discard}",
            f"On the surviving node, if it is StandAlone too: drbdadm connect {name}",
            "The victim then resyncs from the survivor (SyncTarget); drbd_facts says syncing, then healthy",
        ]
        if role != "Secondary"
        else [
            "Decide which node's data survives. This node is Secondary: usually it is the victim",
            f"Here, if its changes are to be discarded: drbdadm disconnect {name}; {discard}",
            f"On the surviving node, if it is StandAlone: drbdadm connect {name}",
            "This node then resyncs from the survivor (SyncTarget); drbd_facts says syncing, then healthy",
        ]
    )


def human_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def summary(resources):
    """Counts per verdict, and the worst verdict of the host (None without resources)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for r in resources:
        counts[r["verdict"]] += 1
    worst = next((v for v in VERDICTS if counts[v]), None)
    return {"resources": len(resources), "verdicts": {k: v for k, v in counts.items() if v}, "worst": worst}
