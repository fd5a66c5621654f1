# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: evidence about one paused or crashed domain -> diagnosis (cause, remediation, safe_to_resume).

Table-driven over (state, reason, disk error codes, job in flight, host evidence). No I/O, no ansible.

``diagnose(ev)`` takes a plain dict::

    name, state (int virDomainState), reason (int), disk_errors {target: 0|1|2},
    disks [{target, type, path, protocol, export, hosts, pool, volume, error_policy, rerror_policy,
            capacity, allocation, physical,              # from getAllDomainStats block.* (may be None)
            evidence: {filesystem, block_device, endpoints, pool, thin_pool, errors}}],
    job {active, kind, progress_percent, elapsed_seconds, source} or None,
    watchdog {model, action} or None, on_lockfailure, on_crash,
    log_lines [str], paused {since, seconds, source}, responsive (bool), source ('libvirt'|'status_xml'),
    started_at (epoch the domain's QEMU was started, from its log, or None)

and returns ``{cause, severity, summary, findings, remediation, safe_to_resume, safe_to_resume_reason}``.
"""

from __future__ import annotations

from ansible_collections.kvmops.fleet.plugins.module_utils.pause._evidence_io import fmt_bytes

PAUSED, CRASHED = 3, 6

# virDomainPausedReason -> (name, default cause, severity)
REASONS = {
    0: ("unknown", "unknown", "warning"),
    1: ("user", "user_paused", "info"),
    2: ("migration", "migration", "warning"),
    3: ("save", "save_job", "warning"),
    4: ("dump", "dump_job", "warning"),
    5: ("ioerror", "storage_io_error", "critical"),
    6: ("watchdog", "watchdog", "critical"),
    7: ("from_snapshot", "from_snapshot", "info"),
    8: ("shutting_down", "shutting_down", "warning"),
    9: ("snapshot", "snapshot_job", "warning"),
    10: ("crashed", "crashed", "critical"),
    11: ("starting_up", "starting_up", "info"),
    12: ("postcopy", "postcopy", "critical"),
    13: ("postcopy_failed", "postcopy_failed", "critical"),
    14: ("api_error", "api_error", "critical"),
}
CRASHED_REASONS = {0: "unknown", 1: "panicked"}
# virDomainDiskErrorCode
DISK_ERRORS = {0: "none", 1: "unspecified", 2: "no_space"}

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
    "watchdog": "critical",
    "lock_failure": "critical",
    "crashed": "critical",
    "postcopy": "critical",
    "postcopy_failed": "critical",
    "api_error": "critical",
    "emulation_failure": "critical",
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


def reason_name(state: int, reason: int) -> str:
    if state == CRASHED:
        return CRASHED_REASONS.get(reason, str(reason))
    return REASONS.get(reason, (str(reason),))[0]


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
        return "volume {} in pool {}".format(disk.get("volume"), disk.get("pool"))
    if disk.get("type") == "network":
        hosts = ", ".join(e["endpoint"] for e in (disk.get("evidence") or {}).get("endpoints", []))
        return "{} export {} ({})".format(
            disk.get("protocol") or "network", disk.get("export") or "-", hosts or "no host"
        )
    return disk.get("target") or "?"


def _space_state(disk: dict):
    """-> (ok: bool|None, text) for the storage a disk lives on. None = cannot tell."""
    ev = disk.get("evidence") or {}
    fs, pool, thin = ev.get("filesystem"), ev.get("pool"), ev.get("thin_pool")
    if fs and fs.get("available_bytes") is not None:
        need = _headroom_needed(disk, fs)
        where = fs.get("mount_point") or disk.get("path")
        dev = " ({} on {})".format(fs.get("fstype"), fs.get("device")) if fs.get("device") else ""
        avail, total = fs["available_bytes"], fs.get("total_bytes")
        text = f"{where}{dev} has {fmt_bytes(avail)} available for QEMU of {fmt_bytes(total)}"
        return avail >= need, text, need
    if thin and thin.get("data_percent") is not None:
        pct = thin["data_percent"]
        text = "LVM thin pool {} is {:.1f} % full (metadata {} %)".format(
            thin["name"], pct, thin.get("metadata_percent")
        )
        return pct < 98.0 and (thin.get("metadata_percent") or 0) < 98.0, text, None
    if pool and pool.get("available") is not None:
        text = "storage pool {} has {} available of {}".format(
            pool["name"], fmt_bytes(pool["available"]), fmt_bytes(pool.get("capacity"))
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
                    "{} is full for QEMU ({} available of {}): free space or grow it (at least {} for disk {} "
                    "at {}), then resume.".format(
                        where,
                        fmt_bytes(fs.get("available_bytes")),
                        fmt_bytes(fs.get("total_bytes")),
                        fmt_bytes(need),
                        disk.get("target"),
                        disk.get("path"),
                    )
                )
            elif ev_disk.get("thin_pool"):
                d.remediation.append(
                    f"Extend LVM thin pool {ev_disk['thin_pool']['name']} (lvextend) or free space in it, then resume."
                )
            else:
                pool_name = (ev_disk.get("pool") or {}).get("name")
                d.remediation.append(f"Free space in storage pool {pool_name} or grow it, then resume.")
    first = disks[0] if disks else {}
    d.summary = "disk {} ran out of space on {}{}".format(
        first.get("target"), _where(first), " (inferred from free space)" if inferred else ""
    )
    if still_full:
        d.safe, d.why = False, "the storage is still full: resuming would pause the domain again at once"
    elif unknown:
        d.safe, d.why = False, "free space behind {} cannot be verified".format(", ".join(_where(x) for x in unknown))
    else:
        d.safe, d.why = True, "enough space is available again on the storage that ran full"
        d.remediation = ["Space is available again: resume the domain (virsh resume {}).".format(ev.get("name"))]


def _endpoint_state(disk: dict):
    eps = (disk.get("evidence") or {}).get("endpoints") or []
    down = [e for e in eps if not e.get("reachable")]
    return eps, down


def _io_error(d: Diagnosis, ev: dict) -> None:
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
    network = [x for x in suspects if x.get("type") == "network"]
    unreachable = [x for x in network if _endpoint_state(x)[1]]
    if unreachable:
        d.cause = "storage_unreachable"
        disk = unreachable[0]
        down = _endpoint_state(disk)[1]
        d.summary = "disk {} lost its {} server {}".format(
            disk.get("target"), disk.get("protocol") or "network", ", ".join(e["endpoint"] for e in down)
        )
        for x in unreachable:
            for e in _endpoint_state(x)[1]:
                d.findings.append(
                    "endpoint {} of disk {} does not answer: {}".format(e["endpoint"], x.get("target"), e.get("error"))
                )
                d.remediation.append(
                    f"Bring the {x.get('protocol') or 'network'} export {x.get('export') or ''} "
                    f"back at {e['endpoint']}, then resume."
                )
        d.safe, d.why = False, "the storage endpoint still does not answer"
        return
    d.cause = "storage_io_error"
    disk = suspects[0] if suspects else {}
    d.summary = "disk {} got an I/O error from {}".format(disk.get("target"), _where(disk))
    paused_at = (ev.get("paused") or {}).get("since")
    started_at = ev.get("started_at")
    restarted = []
    for x in suspects:
        for e in _endpoint_state(x)[0]:
            d.findings.append("endpoint {} of disk {} answers".format(e["endpoint"], x.get("target")))
            created = e.get("created")
            if created is not None and paused_at is not None and created > paused_at:
                restarted.append(e["endpoint"])
                d.findings.append("endpoint {} was (re)created after the domain paused".format(e["endpoint"]))
            elif created is not None and started_at is not None and created > started_at:
                restarted.append(e["endpoint"])
                d.findings.append(
                    "endpoint {} was (re)created after the domain started: the server that "
                    "failed has been replaced".format(e["endpoint"])
                )
        fs = (x.get("evidence") or {}).get("filesystem")
        if fs:
            d.findings.append(
                "{} is on {} ({}), {} available".format(
                    x.get("path"), fs.get("mount_point"), fs.get("device"), fmt_bytes(fs.get("available_bytes"))
                )
            )
    all_eps = [e for x in suspects for e in _endpoint_state(x)[0]]
    if network and all_eps and len(restarted) == len(all_eps) and len(network) == len(suspects):
        d.safe = True
        d.why = "every storage endpoint of the failed disks was replaced since the failure and answers"
        d.remediation.append(
            "The storage server was replaced after the failure: resume (virsh resume {}) and "
            "watch for a new pause.".format(ev.get("name"))
        )
        return
    d.safe = False
    d.why = (
        ("an I/O error whose cause cannot be shown to be gone: the storage that failed is the one still serving")
        if all_eps
        else "an unspecified I/O error cannot be shown to be gone from the host side"
    )
    for x in suspects or [{}]:
        if x.get("type") == "network":
            d.remediation.append(
                "Check the {} server for {} (its logs, the device behind it); restart or "
                "replace it, then resume.".format(x.get("protocol") or "network", _where(x))
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


# ---- other reasons -----------------------------------------------------------------------------------


def _job_rule(d: Diagnosis, ev: dict, job: dict, reason: int) -> None:
    kind = job.get("kind") or "unknown"
    d.cause = JOB_CAUSES.get(kind, "job_in_flight")
    if reason in (12, 13):
        d.cause = REASONS[reason][1]
    prog = job.get("progress_percent")
    elapsed = job.get("elapsed_seconds")
    d.summary = "a {} job is in flight{}{}".format(
        kind.replace("_", " "),
        f", {prog:.0f} % done" if prog is not None else "",
        f", running for {elapsed:.0f}s" if elapsed is not None else "",
    )
    d.findings.append("job {} (source: {})".format(kind, job.get("source")))
    if not ev.get("responsive", True):
        d.findings.append(
            "libvirt does not answer for this domain: the job may be blocked (e.g. writing into "
            "a pipe or file nobody reads)"
        )
        d.remediation.append(
            "Find the job's target (ps for the virsh/client that started it, ls -l "
            "/proc/$(pgrep -f 'guest={}')/fd) and unblock it, or abort it with virsh "
            "domjobabort {}.".format(ev.get("name"), ev.get("name"))
        )
    else:
        d.remediation.append(
            "Wait for the {} job to finish (virsh domjobinfo {}) or abort it (virsh domjobabort {}).".format(
                kind.replace("_", " "), ev.get("name"), ev.get("name")
            )
        )
    d.safe, d.why = False, "a {} job is in flight".format(kind.replace("_", " "))
    if d.cause in ("postcopy", "postcopy_failed"):
        _postcopy(d, ev, reason)


def _postcopy(d: Diagnosis, ev: dict, reason: int) -> None:
    d.safe = False
    if reason == 12:
        d.summary = d.summary or "post-copy migration in progress"
        d.why = "post-copy migration: the destination owns the running state; never resume the source"
        d.remediation = [
            "Let the post-copy migration finish on the destination (virsh domjobinfo {}); if it "
            "stalls, recover it (virsh migrate-postcopy / migrate --postcopy-resume), never resume "
            "here.".format(ev.get("name"))
        ]
    else:
        d.summary = d.summary or "post-copy migration failed"
        d.why = "post-copy failed: guest memory is split between two hosts; resuming either copy corrupts the guest"
        d.remediation = [
            "Try to recover the migration (virsh migrate --postcopy-resume {}); if that is "
            "impossible the guest state is lost: destroy both halves and restore from backup.".format(ev.get("name"))
        ]


def _lock_evidence(ev: dict) -> bool:
    return any("lock" in line.lower() for line in ev.get("log_lines") or [])


def diagnose(ev: dict) -> dict:
    """Evidence for one paused/crashed domain -> the diagnosis dict (see module docstring)."""
    state, reason = ev.get("state"), ev.get("reason") or 0
    name = ev.get("name")
    job = ev.get("job") or None
    d = Diagnosis("unknown")

    if state == CRASHED:
        d.cause = "crashed"
        d.summary = "the guest crashed ({}); on_crash={} kept it for inspection".format(
            CRASHED_REASONS.get(reason, reason), ev.get("on_crash") or "?"
        )
        d.safe, d.why = False, "a crashed domain cannot be resumed"
        d.remediation = [
            f"Collect a memory dump if needed (virsh dump --memory-only {name} /var/tmp/{name}.core), "
            f"then restart it (virsh destroy {name}; virsh start {name})."
        ]
        return _finish(d, ev)

    if job and job.get("active"):
        _job_rule(d, ev, job, reason)
        return _finish(d, ev)

    entry = REASONS.get(reason)
    if entry is None:
        d.cause, d.summary = "unknown", f"paused for reason code {reason} this module does not know"
        d.safe, d.why = False, "unknown pause reason"
        d.remediation = [f"Check virsh domstate --reason {name} and the libvirtd log."]
        return _finish(d, ev)
    d.cause = entry[1]

    if reason == 5:
        _io_error(d, ev)
    elif reason == 0:
        lines = " ".join(ev.get("log_lines") or []).lower()
        if "emulation failure" in lines or "internal error" in lines:
            d.cause = "emulation_failure"
            d.summary = "QEMU stopped the guest after an emulation/internal error"
            d.safe, d.why = False, "QEMU refuses to continue a guest after an emulation failure"
            d.remediation = [
                f"Read the QEMU log (/var/log/libvirt/qemu/{name}.log); destroy and start the domain "
                "(consider TCG or a newer kernel/QEMU)."
            ]
        else:
            d.summary = "QEMU is stopped but libvirt does not know why"
            if "custom-monitor" in lines:
                d.findings.append(
                    "the domain is tainted by custom-monitor: someone stopped QEMU through its "
                    "monitor behind libvirt's back"
                )
            d.safe, d.why = False, "the cause is unknown; inspect before resuming"
            d.remediation = [
                f"Look at the QEMU log (/var/log/libvirt/qemu/{name}.log) and who drove its monitor; "
                f"resume (virsh resume {name}) only once the cause is understood."
            ]
    elif reason == 1:
        if ev.get("on_lockfailure") == "pause" and _lock_evidence(ev):
            d.cause = "lock_failure"
            d.summary = "the disk lease was lost (on_lockfailure=pause)"
            d.safe, d.why = False, "the domain lost its disk lock; another host may be using the disks"
            d.remediation = [
                f"Check the lock manager (sanlock/virtlockd) and that no other host runs {name}; "
                "re-acquire the lease before resuming."
            ]
        else:
            d.summary = "paused by a user or a management tool (virsh suspend)"
            if ev.get("on_lockfailure") == "pause":
                d.findings.append("on_lockfailure=pause: a lost disk lease also shows up as 'user'")
                d.safe, d.why = (
                    False,
                    ("on_lockfailure=pause makes a lost lock look like a user pause; verify the lease first"),
                )
                d.remediation = [
                    f"Verify the disk lease (sanlock client status / virtlockd) then resume (virsh resume {name})."
                ]
            else:
                d.safe, d.why = True, "paused on request; nothing points at a fault"
                d.remediation = [f"Resume when whoever paused it is done (virsh resume {name})."]
    elif reason == 2:
        d.summary = "paused for a migration, no migration job is running any more"
        d.safe, d.why = (
            False,
            "the migration may have completed on the destination: resuming here could run the guest twice",
        )
        d.remediation = [
            f"Check whether {name} runs on the destination host; if it does, destroy this copy; if not, resume here."
        ]
    elif reason in (3, 4, 9):
        what = {3: "save", 4: "dump", 9: "snapshot"}[reason]
        d.summary = f"left paused by a {what} that is no longer running"
        d.safe, d.why = True, f"no {what} job is in flight any more"
        d.remediation = [f"Check that the {what} finished (virsh domjobinfo --completed {name}), then resume."]
    elif reason == 6:
        action = (ev.get("watchdog") or {}).get("action")
        d.summary = "the guest stopped feeding its watchdog ({}, action={})".format(
            (ev.get("watchdog") or {}).get("model"), action
        )
        d.safe, d.why = False, "the guest OS hung; resuming continues a hung guest"
        d.remediation = [
            f"Look at the guest console (virsh console {name}) or take a dump; then reset it (virsh "
            f"reset {name}) rather than resume."
        ]
    elif reason == 7:
        d.summary = "restored from a snapshot in the paused state"
        d.safe, d.why = True, "restored paused on request; nothing points at a fault"
        d.remediation = [f"Resume when ready (virsh resume {name})."]
    elif reason == 8:
        d.summary = "paused while shutting down"
        d.safe, d.why = False, "the domain is shutting down"
        d.remediation = [f"Wait for the shutdown to finish or destroy it (virsh destroy {name})."]
    elif reason == 10:
        d.summary = "the guest crashed and was kept paused (on_crash=%s)" % (ev.get("on_crash") or "?")
        d.safe, d.why = False, "the guest crashed; resuming does not recover it"
        d.remediation = [f"Dump it for analysis (virsh dump --memory-only {name} FILE), then destroy and start it."]
    elif reason == 11:
        d.summary = "the domain is starting up"
        d.safe, d.why = False, "libvirt is still starting the domain"
        d.remediation = ["Wait a few seconds and look again."]
    elif reason in (12, 13):
        _postcopy(d, ev, reason)
    elif reason == 14:
        d.summary = "libvirt paused the domain after a failed API call"
        d.safe, d.why = False, "an API call failed half-way; the domain's state needs checking"
        d.remediation = [f"Read the libvirtd log for {name}, fix what failed, then resume."]
    return _finish(d, ev)


def _finish(d: Diagnosis, ev: dict) -> dict:
    if not ev.get("responsive", True) and d.safe:
        d.safe, d.why = False, "libvirt does not answer for this domain"
    if not d.summary:
        d.summary = d.cause.replace("_", " ")
    return d.as_dict()
