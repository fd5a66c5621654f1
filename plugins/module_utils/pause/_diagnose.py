# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: evidence about one paused or crashed domain -> diagnosis (cause, remediation, safe_to_resume).

A crashed domain, then a disk whose DRBD device cannot serve I/O, then storage that does not answer, then a job
in flight, then the pause reason decide
which rule runs: ``RULES`` maps each
reason by name (``_states.PAUSED_REASON_KEYS``) to its default cause and the function of its cause family,
which reads the disk error codes and host evidence. A new cause is one function and one entry. No I/O, no
ansible.

``diagnose(ev)`` takes a plain dict::

    name, state (int virDomainState), reason (int), disk_errors {target: 0|1|2},
    disks [{target, type, path, protocol, export, hosts, pool, volume, error_policy, rerror_policy,
            capacity, allocation, physical,              # from getAllDomainStats block.* (may be None)
            evidence: {filesystem, block_device, endpoints, pool, thin_pool, errors,
                       drbd: {resource, minor, volume, role, disk_state, quorum, suspended, peers,
                              data_access, verdict, summary, remediation, split_brain, error}
                             when the disk is a DRBD device (_evidence_io.drbd_evidence),
                       unresponsive: {kind, target, mount_point, fstype, source, options, since, seconds,
                                      probe_pid} when the storage under the disk did not answer}}],
    job {active, kind, progress_percent, elapsed_seconds, source} or None,
    watchdog {model, action} or None, on_lockfailure, on_crash,
    log_lines [str], paused {since, seconds, source}, responsive (bool), source ('libvirt'|'status_xml'),
    started_at (epoch the domain's QEMU was started, from its log, or None)

and returns ``{cause, severity, summary, findings, remediation, safe_to_resume, safe_to_resume_reason}``.
"""

from __future__ import annotations

from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import (
    CRASHED,
    DISK_ERRORS,
    fmt_bytes,
    reason_name,
)

# kind of job in flight -> cause
JOB_CAUSES = {
    "save": "save_job",
    "dump": "dump_job",
    "snapshot": "snapshot_job",
    "snapshot_revert": "snapshot_job",
    "snapshot_delete": "snapshot_job",
    "migration_out": "migration",
    "migration_in": "migration",
    "backup": "backup_job",
    "start": "starting_up",
    "restore": "starting_up",
}

SEVERITY = {
    "user_paused": "info",
    "from_snapshot": "info",
    "starting_up": "info",
    "migration": "warning",
    "save_job": "warning",
    "dump_job": "warning",
    "snapshot_job": "warning",
    "backup_job": "warning",
    "job_in_flight": "warning",
    "shutting_down": "warning",
    "unknown": "warning",
    "storage_full": "critical",
    "storage_io_error": "critical",
    "storage_unreachable": "critical",
    "storage_unresponsive": "critical",
    "watchdog": "critical",
    "lock_failure": "critical",
    "crashed": "critical",
    "postcopy": "critical",
    "postcopy_failed": "critical",
    "api_error": "critical",
    "emulation_failure": "critical",
    "drbd_diskless": "critical",
    "drbd_no_quorum": "critical",
    "drbd_suspended": "critical",
}
CAUSES = tuple(sorted(SEVERITY))

MIB = 1024 * 1024
GIB = 1024 * MIB


class Diagnosis:
    """Collects findings and remediation while one rule runs; ``as_dict`` is the public shape."""

    def __init__(self, cause, summary="", safe=False, why=""):
        self.cause = cause
        self.summary = summary
        self.findings = []
        self.remediation = []
        self.safe = safe
        self.why = why

    def as_dict(self):
        return {
            "cause": self.cause,
            "severity": SEVERITY.get(self.cause, "warning"),
            "summary": self.summary,
            "findings": list(self.findings),
            "remediation": list(self.remediation),
            "safe_to_resume": bool(self.safe),
            "safe_to_resume_reason": self.why,
        }


# ---- storage ---------------------------------------------------------------------------------------


def _headroom_needed(disk: dict, fs: dict | None) -> int:
    """Bytes that must be available before resuming an ENOSPC-paused file disk is worth it: what the
    image may still grow (capacity - physical), at least 1 MiB and at most 1 GiB; without sizes, 1 % of
    the filesystem (same bounds)."""
    cap, phys = disk.get("capacity"), disk.get("physical")
    if cap is not None and phys is not None:
        need = cap - phys
    elif fs and fs.get("total_bytes"):
        need = fs["total_bytes"] // 100
    else:
        need = MIB
    return int(min(max(need, MIB), GIB))


def _where(disk: dict) -> str:
    if disk.get("path"):
        return disk["path"]
    if disk.get("type") == "volume":
        return f"volume {disk.get('volume')} in pool {disk.get('pool')}"
    if disk.get("type") == "network":
        hosts = ", ".join(e["endpoint"] for e in (disk.get("evidence") or {}).get("endpoints", []))
        return f"{disk.get('protocol') or 'network'} export {disk.get('export') or '-'} ({hosts or 'no host'})"
    return disk.get("target") or "?"


def _space_state(disk: dict):
    """-> (ok: bool|None, text, bytes needed|None) for the storage a disk lives on. None = cannot tell."""
    ev = disk.get("evidence") or {}
    fs, pool, thin = ev.get("filesystem"), ev.get("pool"), ev.get("thin_pool")
    if fs and fs.get("available_bytes") is not None:
        need = _headroom_needed(disk, fs)
        where = fs.get("mount_point") or disk.get("path")
        dev = f" ({fs.get('fstype')} on {fs.get('device')})" if fs.get("device") else ""
        avail, total = fs["available_bytes"], fs.get("total_bytes")
        text = f"{where}{dev} has {fmt_bytes(avail)} available for QEMU of {fmt_bytes(total)}"
        return avail >= need, text, need
    if thin and thin.get("data_percent") is not None:
        pct = thin["data_percent"]
        text = f"LVM thin pool {thin['name']} is {pct:.1f} % full (metadata {thin.get('metadata_percent')} %)"
        return pct < 98.0 and (thin.get("metadata_percent") or 0) < 98.0, text, None
    if pool and pool.get("available") is not None:
        text = (
            f"storage pool {pool['name']} has {fmt_bytes(pool['available'])} available of "
            f"{fmt_bytes(pool.get('capacity'))}"
        )
        return pool["available"] >= _headroom_needed(disk, None), text, None
    return None, f"free space of the storage behind {_where(disk)} is unknown", None


def _storage_full(d: Diagnosis, ev: dict, disks: list, inferred: bool) -> None:
    d.cause = "storage_full"
    still_full, unknown = [], []
    for disk in disks:
        ok, text, need = _space_state(disk)
        d.findings.append(text)
        ev_disk = disk.get("evidence") or {}
        fs = ev_disk.get("filesystem")
        if ok is None:
            unknown.append(disk)
            d.remediation.append(
                f"Check free space behind {_where(disk)} (disk {disk.get('target')}), free space "
                "or grow it, then resume."
            )
        elif not ok:
            still_full.append(disk)
            if fs:
                where = fs.get("mount_point") or disk.get("path")
                d.remediation.append(
                    f"{where} is full for QEMU ({fmt_bytes(fs.get('available_bytes'))} available of "
                    f"{fmt_bytes(fs.get('total_bytes'))}): free space or grow it (at least {fmt_bytes(need)} for "
                    f"disk {disk.get('target')} at {disk.get('path')}), then resume."
                )
            elif ev_disk.get("thin_pool"):
                d.remediation.append(
                    f"Extend LVM thin pool {ev_disk['thin_pool']['name']} (lvextend) or free space in it, then resume."
                )
            else:
                pool_name = (ev_disk.get("pool") or {}).get("name")
                d.remediation.append(f"Free space in storage pool {pool_name} or grow it, then resume.")
    first = disks[0] if disks else {}
    d.summary = f"disk {first.get('target')} ran out of space on {_where(first)}" + (
        " (inferred from free space)" if inferred else ""
    )
    if still_full:
        d.safe, d.why = False, "the storage is still full: resuming would pause the domain again at once"
    elif unknown:
        d.safe, d.why = False, f"free space behind {', '.join(_where(x) for x in unknown)} cannot be verified"
    else:
        d.safe, d.why = True, "enough space is available again on the storage that ran full"
        d.remediation = [f"Space is available again: resume the domain (virsh resume {ev.get('name')})."]


def _endpoint_state(disk: dict):
    eps = (disk.get("evidence") or {}).get("endpoints") or []
    down = [e for e in eps if not e.get("reachable")]
    return eps, down


def _storage_unreachable(d: Diagnosis, unreachable: list) -> None:
    d.cause = "storage_unreachable"
    disk = unreachable[0]
    down = _endpoint_state(disk)[1]
    d.summary = (
        f"disk {disk.get('target')} lost its {disk.get('protocol') or 'network'} server "
        f"{', '.join(e['endpoint'] for e in down)}"
    )
    for x in unreachable:
        for e in _endpoint_state(x)[1]:
            d.findings.append(f"endpoint {e['endpoint']} of disk {x.get('target')} does not answer: {e.get('error')}")
            d.remediation.append(
                f"Bring the {x.get('protocol') or 'network'} export {x.get('export') or ''} "
                f"back at {e['endpoint']}, then resume."
            )
    d.safe, d.why = False, "the storage endpoint still does not answer"


def _storage_io_error(d: Diagnosis, ev: dict, suspects: list, network: list) -> None:
    d.cause = "storage_io_error"
    disk = suspects[0] if suspects else {}
    d.summary = f"disk {disk.get('target')} got an I/O error from {_where(disk)}"
    paused_at = (ev.get("paused") or {}).get("since")
    started_at = ev.get("started_at")
    restarted = []
    for x in suspects:
        for e in _endpoint_state(x)[0]:
            d.findings.append(f"endpoint {e['endpoint']} of disk {x.get('target')} answers")
            created = e.get("created")
            if created is not None and paused_at is not None and created > paused_at:
                restarted.append(e["endpoint"])
                d.findings.append(f"endpoint {e['endpoint']} was (re)created after the domain paused")
            elif created is not None and started_at is not None and created > started_at:
                restarted.append(e["endpoint"])
                d.findings.append(
                    f"endpoint {e['endpoint']} was (re)created after the domain started: the server that "
                    "failed has been replaced"
                )
        fs = (x.get("evidence") or {}).get("filesystem")
        if fs:
            d.findings.append(
                f"{x.get('path')} is on {fs.get('mount_point')} ({fs.get('device')}), "
                f"{fmt_bytes(fs.get('available_bytes'))} available"
            )
    all_eps = [e for x in suspects for e in _endpoint_state(x)[0]]
    if network and all_eps and len(restarted) == len(all_eps) and len(network) == len(suspects):
        d.safe = True
        d.why = "every storage endpoint of the failed disks was replaced since the failure and answers"
        d.remediation.append(
            f"The storage server was replaced after the failure: resume (virsh resume {ev.get('name')}) and "
            "watch for a new pause."
        )
        return
    d.safe = False
    d.why = (
        "an I/O error whose cause cannot be shown to be gone: the storage that failed is the one still serving"
        if all_eps
        else "an unspecified I/O error cannot be shown to be gone from the host side"
    )
    for x in suspects or [{}]:
        if x.get("type") == "network":
            d.remediation.append(
                f"Check the {x.get('protocol') or 'network'} server for {_where(x)} (its logs, the device behind "
                "it); restart or replace it, then resume."
            )
        elif x.get("type") == "block":
            d.remediation.append(
                f"Check block device {x.get('path')} (dmesg, SMART, multipath, SAN); once healthy, resume."
            )
        elif x.get("path"):
            fs = (x.get("evidence") or {}).get("filesystem") or {}
            d.remediation.append(
                f"Check the device {fs.get('device') or '?'} under {fs.get('mount_point') or '?'} "
                f"(dmesg, SMART) for {x.get('path')}; once healthy, resume."
            )
        else:
            d.remediation.append(
                f"Find the failing disk (virsh domblkerror {ev.get('name')}), fix its storage, then resume."
            )


def _unanswered(ev: dict) -> list:
    """[(storage, [disk targets])] of the storages under the domain's disks that did not answer."""
    groups = {}
    for disk in ev.get("disks") or []:
        un = (disk.get("evidence") or {}).get("unresponsive")
        if un:
            groups.setdefault((un.get("kind"), un.get("target")), (un, []))[1].append(disk.get("target"))
    return list(groups.values())


def storage_label(un: dict) -> str:
    """'/srv/nfs (nfs4 from srv1:/export)', 'block device /dev/sdb', or a path on a mount."""
    if un.get("kind") == "block":
        return f"block device {un.get('source')}"
    mount = "{} ({}{})".format(
        un.get("mount_point"), un.get("fstype") or "?", f" from {un['source']}" if un.get("source") else ""
    )
    if un.get("kind") == "path":
        return f"{un.get('target')} on {mount}"
    return mount


def _mount_semantics(un: dict) -> str:
    """What the mount options mean for I/O while the server does not answer (NFS: hard is the default)."""
    opts = set((un.get("options") or "").split(","))
    fstype = un.get("fstype") or ""
    if fstype.startswith("nfs"):
        timeo = next((o.split("=", 1)[1] for o in opts if o.startswith("timeo=")), None)
        retrans = next((o.split("=", 1)[1] for o in opts if o.startswith("retrans=")), None)
        extra = ", ".join(x for x in (timeo and f"timeo={timeo}", retrans and f"retrans={retrans}") if x)
        if "soft" in opts or "softerr" in opts:
            return f"mounted soft ({extra or 'default timeo/retrans'}): I/O fails with EIO once the retries run out"
        return f"mounted hard ({extra or 'default timeo/retrans'}): I/O waits for the server for ever"
    if fstype.startswith("fuse"):
        return "a FUSE filesystem: I/O waits until its daemon answers again"
    return ""


def _storage_unresponsive(d: Diagnosis, ev: dict, dead: list, reason: str) -> None:
    """The storage under the domain's disks does not answer (dead hard NFS mount, hung FUSE daemon or
    iSCSI session, a block device whose I/O hangs): whatever the pause reason says, that is what holds
    the domain now, and nothing on that storage can be resumed, restarted or even queried."""
    name = ev.get("name")
    d.cause = "storage_unresponsive"
    labels = [storage_label(un) for un, _t in dead]
    targets = [t for _un, ts in dead for t in ts]
    d.summary = "the storage under disk{} {} does not answer: {}".format(
        "s" if len(targets) > 1 else "", ", ".join(str(t) for t in targets), "; ".join(labels)
    )
    for un, ts in dead:
        since = f" for {un['seconds']:.0f}s" if un.get("seconds") is not None else ""
        probe = f" (a probe, PID {un['probe_pid']}, is still waiting for it)" if un.get("probe_pid") else ""
        d.findings.append(f"{storage_label(un)} has not answered{since}{probe}; disks on it: {', '.join(map(str, ts))}")
        meaning = _mount_semantics(un)
        if meaning:
            d.findings.append(f"{un.get('mount_point')} is {meaning}")
        if un.get("options"):
            d.findings.append(f"{un.get('mount_point') or un.get('source')} options: {un['options']}")
    d.findings.append(f"libvirt's pause reason: {reason}")
    job = ev.get("job") or {}
    if job.get("active"):
        d.findings.append(f"a {(job.get('kind') or 'unknown').replace('_', ' ')} job is in flight")
    for un, _ts in dead:
        if un.get("kind") == "block":
            d.remediation.append(
                f"Check block device {un.get('source')}: dmesg, multipath -ll, iscsiadm -m session, the SAN or "
                "array behind it, and the path to it."
            )
        else:
            d.remediation.append(
                f"Check the storage server {un.get('source') or '?'} ({un.get('fstype') or '?'}) and the network "
                f"path to it (ping, rpcinfo/showmount for NFS, the FUSE or iSCSI daemon); see the mount options "
                f"of {un.get('mount_point')} (`mount | grep {un.get('mount_point')}`: hard/soft, timeo, retrans)."
            )
    d.remediation.append(
        f"Do not resume, migrate or restart {name} on this storage while it does not answer: its I/O and libvirt's "
        f"job calls for it block. Once `stat {dead[0][0].get('target')}` answers again, run the diagnosis again."
    )
    d.safe = False
    d.why = "the storage under its disks does not answer ({}): the guest would block on its first I/O".format(
        "; ".join(labels)
    )


# ---- DRBD: a disk on a DRBD device that cannot serve I/O (lost its disk, its quorum, or I/O suspended) -----


def _drbd_of(disk: dict):
    return (disk.get("evidence") or {}).get("drbd")


def drbd_lost(ev: dict) -> list:
    """[(disk, drbd evidence)] of the domain's disks on a DRBD device that cannot serve I/O now."""
    return [(x, _drbd_of(x)) for x in ev.get("disks") or [] if _drbd_of(x) and _drbd_of(x).get("data_access") is False]


def _drbd_label(drbd: dict) -> str:
    vol = f" volume {drbd.get('volume')}" if drbd.get("volume") is not None else ""
    return f"DRBD resource {drbd.get('resource') or '?'}{vol} (/dev/drbd{drbd.get('minor')})"


def _drbd_state(drbd: dict) -> str:
    peers = "; ".join(
        f"peer {p.get('name') or p.get('address') or '?'} {p.get('connection_state')}, {p.get('role')}, "
        f"disk {p.get('disk_state')}"
        for p in drbd.get("peers") or []
    )
    quorum = "" if drbd.get("quorum") is None else (", quorum" if drbd["quorum"] else ", NO quorum")
    return (
        f"role {drbd.get('role')}, disk {drbd.get('disk_state')}{quorum}"
        + (", I/O suspended" if drbd.get("suspended") else "")
        + (f"; {peers}" if peers else "; no peer")
    )


def _drbd_cause(drbd: dict) -> str:
    if drbd.get("quorum") is False:
        return "drbd_no_quorum"
    local = drbd.get("disk_state") == "UpToDate"
    peer = any(p.get("connection_state") == "Connected" and p.get("disk_state") == "UpToDate" for p in drbd["peers"])
    if not (local or peer):
        return "drbd_diskless"
    return "drbd_suspended"


def _drbd_lost(d: Diagnosis, ev: dict, lost: list, reason: str) -> None:
    """A disk's DRBD device cannot serve I/O: no UpToDate data here nor on a connected peer (drbd_diskless), DRBD 9
    lost quorum (drbd_no_quorum), or its I/O is suspended by fencing or on-no-quorum (drbd_suspended). Whatever the
    pause reason, that is what stops the guest's I/O: resuming runs it into the same wall."""
    name = ev.get("name")
    disk, drbd = lost[0]
    d.cause = _drbd_cause(drbd)
    what = {
        "drbd_no_quorum": "lost quorum",
        "drbd_diskless": "has no up-to-date data: its own disk is {} and no connected peer has UpToDate data".format(
            drbd.get("disk_state")
        ),
        "drbd_suspended": "has its I/O suspended (fencing or on-no-quorum suspend-io)",
    }[d.cause]
    d.summary = f"disk {disk.get('target')} is {_drbd_label(drbd)}, which {what}"
    for x, dr in lost:
        d.findings.append(f"disk {x.get('target')} ({x.get('path')}) is {_drbd_label(dr)}: {_drbd_state(dr)}")
        if dr.get("summary"):
            d.findings.append(f"DRBD says: {dr.get('verdict')}: {dr['summary']}")
    d.findings.append(f"libvirt's pause reason: {reason}")
    for t, c in sorted((ev.get("disk_errors") or {}).items()):
        d.findings.append(f"libvirt disk error on {t}: {DISK_ERRORS.get(c, c)} ({c})")
    seen = set()
    for _x, dr in lost:
        if dr.get("resource") in seen:
            continue
        seen.add(dr.get("resource"))
        res = dr.get("resource") or "RESOURCE"
        if dr.get("quorum") is False:
            d.remediation.append(
                f"Bring back the peers or the tiebreaker of {res} (drbdadm status {res} shows which are missing); "
                "I/O continues when quorum returns"
            )
        if dr.get("disk_state") != "UpToDate" and not any(
            p.get("connection_state") == "Connected" and p.get("disk_state") == "UpToDate" for p in dr["peers"]
        ):
            d.remediation.append(
                f"Give {res} up-to-date data again: re-attach the backing disk once it is repaired (drbdadm attach "
                f"{res}) or reconnect the peer that holds the UpToDate copy (drbdadm connect {res} on both sides)"
            )
        if dr.get("suspended"):
            d.remediation.append(
                f"Once the peer is known to be outdated or down (or quorum is back), drbdadm resume-io {res}"
            )
        d.remediation.extend(step for step in dr.get("remediation") or [] if step not in d.remediation)
    d.remediation.append(
        f"Then run the diagnosis again: it says safe to resume once the DRBD device serves I/O (virsh resume {name})."
    )
    d.safe = False
    d.why = (
        f"the DRBD device under disk {disk.get('target')} cannot serve I/O ({_drbd_state(drbd)}): the guest "
        "would fail or block on its next write"
    )


def _drbd_back(d: Diagnosis, ev: dict, disks: list) -> bool:
    """After an I/O error on disks that are all DRBD devices serving I/O again (the disk re-attached, the peer
    back, quorum back): safe to resume, unless the resource is in split brain. True when it decided."""
    drbds = [_drbd_of(x) for x in disks]
    if not disks or not all(x and x.get("data_access") for x in drbds):
        return False
    for x, dr in zip(disks, drbds):
        d.findings.append(f"disk {x.get('target')} is {_drbd_label(dr)}, which serves I/O again: {_drbd_state(dr)}")
    split = [dr for dr in drbds if dr.get("split_brain")]
    if split:
        d.safe = False
        d.why = f"{_drbd_label(split[0])} is in split brain: resolve it first (which node's data survives)"
        d.remediation = list(split[0].get("remediation") or [])
        return True
    d.safe = True
    d.why = "the DRBD device{} behind the failed disk{} serve{} up-to-date data again".format(
        *(("s", "s", "") if len(disks) > 1 else ("", "", "s"))
    )
    d.remediation = [f"Resume the domain (virsh resume {ev.get('name')}) and watch for a new pause."]
    for dr in drbds:
        if dr.get("verdict") not in (None, "healthy"):
            d.remediation.append(f"{_drbd_label(dr)} is {dr['verdict']}: " + "; ".join(dr.get("remediation") or []))
    return True


# ---- the rules: one function per cause family, called with (diagnosis, evidence, reason name) ---------


def _io_error(d: Diagnosis, ev: dict, _reason: str) -> None:
    """ioerror: libvirt's disk error codes tell ENOSPC (no_space) from other I/O errors; without them,
    the storage itself (free space, endpoints) is judged."""
    disks = ev.get("disks") or []
    errors = ev.get("disk_errors") or {}
    by_target = {x.get("target"): x for x in disks}
    nospace = [by_target.get(t, {"target": t}) for t, c in sorted(errors.items()) if c == 2]
    unspec = [by_target.get(t, {"target": t}) for t, c in sorted(errors.items()) if c == 1]
    for t, c in sorted(errors.items()):
        d.findings.append(f"libvirt disk error on {t}: {DISK_ERRORS.get(c, c)} ({c})")
    if nospace:
        _storage_full(d, ev, nospace, inferred=False)
        return
    suspects = unspec
    if not suspects:
        # no error recorded (e.g. libvirtd restarted, or status XML only): look at every writable disk
        d.findings.append("libvirt holds no disk error for this domain; judging from the storage itself")
        suspects = [x for x in disks if not x.get("readonly") and x.get("device", "disk") == "disk"]
        full = [x for x in suspects if _space_state(x)[0] is False]
        if full:
            _storage_full(d, ev, full, inferred=True)
            return
    if _drbd_back(d, ev, suspects):
        d.summary = "disk{} {} got an I/O error from DRBD, which serves I/O again".format(
            "s" if len(suspects) > 1 else "", ", ".join(str(x.get("target")) for x in suspects)
        )
        return
    network = [x for x in suspects if x.get("type") == "network"]
    unreachable = [x for x in network if _endpoint_state(x)[1]]
    if unreachable:
        _storage_unreachable(d, unreachable)
        return
    _storage_io_error(d, ev, suspects, network)


def _stopped_behind_libvirt(d: Diagnosis, ev: dict, _reason: str) -> None:
    """unknown: QEMU stopped without telling libvirt why (emulation failure, someone on its monitor)."""
    name = ev.get("name")
    lines = " ".join(ev.get("log_lines") or []).lower()
    if "emulation failure" in lines or "internal error" in lines:
        d.cause = "emulation_failure"
        d.summary = "QEMU stopped the guest after an emulation/internal error"
        d.safe, d.why = False, "QEMU refuses to continue a guest after an emulation failure"
        d.remediation = [
            f"Read the QEMU log (/var/log/libvirt/qemu/{name}.log); destroy and start the domain "
            "(consider TCG or a newer kernel/QEMU)."
        ]
        return
    d.summary = "QEMU is stopped but libvirt does not know why"
    if "custom-monitor" in lines:
        d.findings.append(
            "the domain is tainted by custom-monitor: someone stopped QEMU through its monitor behind libvirt's back"
        )
    d.safe, d.why = False, "the cause is unknown; inspect before resuming"
    d.remediation = [
        f"Look at the QEMU log (/var/log/libvirt/qemu/{name}.log) and who drove its monitor; "
        f"resume (virsh resume {name}) only once the cause is understood."
    ]


def _lock_evidence(ev: dict) -> bool:
    return any("lock" in line.lower() for line in ev.get("log_lines") or [])


def _user_or_lock(d: Diagnosis, ev: dict, _reason: str) -> None:
    """user: a pause on request, unless on_lockfailure=pause makes a lost disk lease look the same."""
    name = ev.get("name")
    lock_pauses = ev.get("on_lockfailure") == "pause"
    if lock_pauses and _lock_evidence(ev):
        d.cause = "lock_failure"
        d.summary = "the disk lease was lost (on_lockfailure=pause)"
        d.safe, d.why = False, "the domain lost its disk lock; another host may be using the disks"
        d.remediation = [
            f"Check the lock manager (sanlock/virtlockd) and that no other host runs {name}; "
            "re-acquire the lease before resuming."
        ]
        return
    d.summary = "paused by a user or a management tool (virsh suspend)"
    if lock_pauses:
        d.findings.append("on_lockfailure=pause: a lost disk lease also shows up as 'user'")
        d.safe = False
        d.why = "on_lockfailure=pause makes a lost lock look like a user pause; verify the lease first"
        d.remediation = [
            f"Verify the disk lease (sanlock client status / virtlockd) then resume (virsh resume {name})."
        ]
    else:
        d.safe, d.why = True, "paused on request; nothing points at a fault"
        d.remediation = [f"Resume when whoever paused it is done (virsh resume {name})."]


def _migration_left(d: Diagnosis, ev: dict, _reason: str) -> None:
    """migration with no migration job left: the guest may already run on the destination."""
    name = ev.get("name")
    d.summary = "paused for a migration, no migration job is running any more"
    d.safe = False
    d.why = "the migration may have completed on the destination: resuming here could run the guest twice"
    d.remediation = [
        f"Check whether {name} runs on the destination host; if it does, destroy this copy; if not, resume here."
    ]


def _job_left(d: Diagnosis, ev: dict, reason: str) -> None:
    """save, dump, snapshot with no job left: the job that paused the domain is over."""
    d.summary = f"left paused by a {reason} that is no longer running"
    d.safe, d.why = True, f"no {reason} job is in flight any more"
    d.remediation = [f"Check that the {reason} finished (virsh domjobinfo --completed {ev.get('name')}), then resume."]


def _watchdog(d: Diagnosis, ev: dict, _reason: str) -> None:
    """watchdog: the guest OS hung and stopped feeding its watchdog device."""
    name = ev.get("name")
    watchdog = ev.get("watchdog") or {}
    d.summary = f"the guest stopped feeding its watchdog ({watchdog.get('model')}, action={watchdog.get('action')})"
    d.safe, d.why = False, "the guest OS hung; resuming continues a hung guest"
    d.remediation = [
        f"Look at the guest console (virsh console {name}) or take a dump; then reset it (virsh "
        f"reset {name}) rather than resume."
    ]


def _from_snapshot(d: Diagnosis, ev: dict, _reason: str) -> None:
    d.summary = "restored from a snapshot in the paused state"
    d.safe, d.why = True, "restored paused on request; nothing points at a fault"
    d.remediation = [f"Resume when ready (virsh resume {ev.get('name')})."]


def _shutting_down(d: Diagnosis, ev: dict, _reason: str) -> None:
    d.summary = "paused while shutting down"
    d.safe, d.why = False, "the domain is shutting down"
    d.remediation = [f"Wait for the shutdown to finish or destroy it (virsh destroy {ev.get('name')})."]


def _crashed_kept_paused(d: Diagnosis, ev: dict, _reason: str) -> None:
    """crashed (a paused reason): the guest panicked and on_crash kept it paused."""
    name = ev.get("name")
    d.summary = f"the guest crashed and was kept paused (on_crash={ev.get('on_crash') or '?'})"
    d.safe, d.why = False, "the guest crashed; resuming does not recover it"
    d.remediation = [f"Dump it for analysis (virsh dump --memory-only {name} FILE), then destroy and start it."]


def _starting_up(d: Diagnosis, _ev: dict, _reason: str) -> None:
    d.summary = "the domain is starting up"
    d.safe, d.why = False, "libvirt is still starting the domain"
    d.remediation = ["Wait a few seconds and look again."]


def _postcopy(d: Diagnosis, ev: dict, reason: str) -> None:
    """postcopy, postcopy_failed: the destination owns (part of) the guest's memory; never resume here."""
    name = ev.get("name")
    d.safe = False
    if reason == "postcopy":
        d.summary = d.summary or "post-copy migration in progress"
        d.why = "post-copy migration: the destination owns the running state; never resume the source"
        d.remediation = [
            f"Let the post-copy migration finish on the destination (virsh domjobinfo {name}); if it "
            "stalls, recover it (virsh migrate-postcopy / migrate --postcopy-resume), never resume "
            "here."
        ]
    else:
        d.summary = d.summary or "post-copy migration failed"
        d.why = "post-copy failed: guest memory is split between two hosts; resuming either copy corrupts the guest"
        d.remediation = [
            f"Try to recover the migration (virsh migrate --postcopy-resume {name}); if that is "
            "impossible the guest state is lost: destroy both halves and restore from backup."
        ]


def _api_error(d: Diagnosis, ev: dict, _reason: str) -> None:
    d.summary = "libvirt paused the domain after a failed API call"
    d.safe, d.why = False, "an API call failed half-way; the domain's state needs checking"
    d.remediation = [f"Read the libvirtd log for {ev.get('name')}, fix what failed, then resume."]


# reason name (_states.PAUSED_REASON_KEYS) -> (the cause it stands for by default, the rule that decides)
RULES = {
    "unknown": ("unknown", _stopped_behind_libvirt),
    "user": ("user_paused", _user_or_lock),
    "migration": ("migration", _migration_left),
    "save": ("save_job", _job_left),
    "dump": ("dump_job", _job_left),
    "ioerror": ("storage_io_error", _io_error),
    "watchdog": ("watchdog", _watchdog),
    "from_snapshot": ("from_snapshot", _from_snapshot),
    "shutting_down": ("shutting_down", _shutting_down),
    "snapshot": ("snapshot_job", _job_left),
    "crashed": ("crashed", _crashed_kept_paused),
    "starting_up": ("starting_up", _starting_up),
    "postcopy": ("postcopy", _postcopy),
    "postcopy_failed": ("postcopy_failed", _postcopy),
    "api_error": ("api_error", _api_error),
}


# ---- what comes before the reason: a crashed domain, a job in flight -----------------------------------


def _crashed_domain(d: Diagnosis, ev: dict, reason: str) -> None:
    name = ev.get("name")
    d.cause = "crashed"
    d.summary = f"the guest crashed ({reason}); on_crash={ev.get('on_crash') or '?'} kept it for inspection"
    d.safe, d.why = False, "a crashed domain cannot be resumed"
    d.remediation = [
        f"Collect a memory dump if needed (virsh dump --memory-only {name} /var/tmp/{name}.core), "
        f"then restart it (virsh destroy {name}; virsh start {name})."
    ]


def _job_in_flight(d: Diagnosis, ev: dict, job: dict, reason: str) -> None:
    name = ev.get("name")
    kind = job.get("kind") or "unknown"
    what = kind.replace("_", " ")
    d.cause = JOB_CAUSES.get(kind, "job_in_flight")
    if reason in ("postcopy", "postcopy_failed"):
        d.cause = RULES[reason][0]
    prog = job.get("progress_percent")
    elapsed = job.get("elapsed_seconds")
    d.summary = (
        f"a {what} job is in flight"
        + (f", {prog:.0f} % done" if prog is not None else "")
        + (f", running for {elapsed:.0f}s" if elapsed is not None else "")
    )
    d.findings.append(f"job {kind} (source: {job.get('source')})")
    if not ev.get("responsive", True):
        d.findings.append(
            "libvirt does not answer for this domain: the job may be blocked (e.g. writing into "
            "a pipe or file nobody reads)"
        )
        d.remediation.append(
            "Find the job's target (ps for the virsh/client that started it, ls -l "
            f"/proc/$(pgrep -f 'guest={name}')/fd) and unblock it, or abort it with virsh "
            f"domjobabort {name}."
        )
    else:
        d.remediation.append(
            f"Wait for the {what} job to finish (virsh domjobinfo {name}) or abort it (virsh domjobabort {name})."
        )
    d.safe, d.why = False, f"a {what} job is in flight"
    if d.cause in ("postcopy", "postcopy_failed"):
        _postcopy(d, ev, reason)


def diagnose(ev: dict) -> dict:
    """Evidence for one paused/crashed domain -> the diagnosis dict (see module docstring)."""
    state, code = ev.get("state"), ev.get("reason") or 0
    reason = reason_name(state, code)
    d = Diagnosis("unknown")
    job = ev.get("job") or None
    dead = _unanswered(ev)
    lost = drbd_lost(ev)
    if state == CRASHED:
        _crashed_domain(d, ev, reason)
        for un, ts in dead:
            d.findings.append(f"{storage_label(un)} does not answer; disks on it: {', '.join(map(str, ts))}")
    elif lost and not (job and job.get("active")):
        _drbd_lost(d, ev, lost, reason)
        for un, ts in dead:
            d.findings.append(f"{storage_label(un)} does not answer; disks on it: {', '.join(map(str, ts))}")
    elif dead:
        _storage_unresponsive(d, ev, dead, reason)
    elif job and job.get("active"):
        _job_in_flight(d, ev, job, reason)
    elif reason in RULES:
        d.cause, rule = RULES[reason]
        rule(d, ev, reason)
    else:
        d.cause, d.summary = "unknown", f"paused for reason code {code} this module does not know"
        d.safe, d.why = False, "unknown pause reason"
        d.remediation = [f"Check virsh domstate --reason {ev.get('name')} and the libvirtd log."]
    return _finish(d, ev)


def _finish(d: Diagnosis, ev: dict) -> dict:
    if not ev.get("responsive", True) and d.safe:
        d.safe, d.why = False, "libvirt does not answer for this domain"
    if not d.summary:
        d.summary = d.cause.replace("_", " ")
    return d.as_dict()
