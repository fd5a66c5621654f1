# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Collect pause evidence from libvirt within a deadline and assemble ansible_facts.kvm_pause.

Flow (cost grows with the number of paused domains, not the total):

1. parent, no libvirt: read libvirtd's status files (/run/libvirt/qemu/*.xml, root only). A domain whose
   status shows a job in flight is *busy*: a blocked job holds the domain lock and every call touching it
   (including listAllDomains/getAllDomainStats) would hang and pin a libvirtd worker thread until the job
   ends. Busy domains are never called; they are reported from the status file.
2. forked worker, ONE read-only connection: evidence for busy domains (from their status XML), then one
   round trip getAllDomainStats(STATE, NOWAIT) and one domainListGetStats(BLOCK, NOWAIT) of the paused and
   crashed domains (block stats cost a monitor query per domain on QEMU: never for the running ones) -- or,
   when a busy domain exists, lookups of the non-busy paused domains named by the status files and one
   domainListGetStats(STATE|BLOCK) -- then per paused/crashed domain: XMLDesc (parsed here, once),
   diskErrors, jobStats (or jobInfo where the driver has no jobStats, remembered after the first domain),
   controlInfo; then storage pools and host evidence.
3. parent: kill + reap the worker at the deadline, fill gaps from status files, diagnose (pure _pause).
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _domxml
from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    LibvirtConnectError,
    is_local_uri,
    libvirt,
    open_connection,
    run_bounded,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import (
    CONTROL_STATES,
    CRASHED,
    DISK_ERRORS,
    JOB_OPERATIONS,
    PAUSED,
    RUNNING,
    SHUTOFF,
    reason_name,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose, _evidence_io

STATUS_DIR = "/run/libvirt/qemu"
SCHEMA_VERSION = 1


def local_system_uri(uri: str) -> bool:
    """Status files (STATUS_DIR) are only meaningful for the local system QEMU daemon."""
    return is_local_uri(uri, "qemu:///system")


def read_status_dir(status_dir: str, host) -> dict:
    """name -> parsed status (+ 'mtime'); unreadable dir or files -> fewer entries, never an error."""
    out = {}
    try:
        names = sorted(os.listdir(status_dir))
    except OSError:
        return out
    for fname in names:
        if not fname.endswith(".xml"):
            continue
        path = os.path.join(status_dir, fname)
        try:
            st = _domxml.parse_status(host.read_text(path))
            st["mtime"] = host.mtime(path)
        except (OSError, _domxml.DomainXMLError):
            continue
        name = st["domain"].get("name") or fname[:-4]
        out[name] = st
    return out


def selected(name: str, patterns) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def status_job(st: dict | None) -> dict | None:
    job = (st or {}).get("job")
    if not job:
        return None
    kind = job["async"] if job.get("async") not in (None, "none") else job.get("type")
    return {
        "active": True,
        "kind": (kind or "unknown").replace(" ", "_").replace(".", "_"),
        "progress_percent": None,
        "elapsed_seconds": None,
        "started_ms": job.get("started_ms"),
        "source": "status_xml",
    }


def job_from_stats(stats: dict | None) -> dict | None:
    """virDomainGetJobStats dict -> our job dict; None when no job is active."""
    if not stats or stats.get("type", 0) in (0, 3, 4, 5):  # none, completed, failed, cancelled
        return None
    total, done = stats.get("data_total"), stats.get("data_processed")
    return {
        "active": True,
        "kind": JOB_OPERATIONS.get(stats.get("operation", 0), "unknown"),
        "progress_percent": round(100.0 * done / total, 1) if total and done is not None else None,
        "elapsed_seconds": round(stats["time_elapsed"] / 1000.0, 1) if stats.get("time_elapsed") else None,
        "started_ms": None,
        "source": "libvirt",
    }


class JobApiUnsupported(Exception):
    """The driver has neither jobStats nor jobInfo (known from an earlier domain of the same run)."""


def _job_stats(dom, support=None) -> dict:
    """jobStats(), or jobInfo() turned into the same keys where jobStats is not supported.

    ``support`` (one dict per connection) remembers what the driver lacks, so that only the first domain
    pays for the refused calls: ``stats`` False after jobStats was refused, ``info_error`` the message of
    jobInfo's refusal (later domains raise JobApiUnsupported with it, making no call at all).
    """
    support = {} if support is None else support
    if support.get("info_error"):
        raise JobApiUnsupported(support["info_error"])
    if support.get("stats", True):
        try:
            return dom.jobStats()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            support["stats"] = False
    try:
        info = dom.jobInfo()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            support["info_error"] = exc.get_error_message()
        raise
    return {"type": info[0], "time_elapsed": info[1], "data_total": info[3], "data_processed": info[4]}


def _block_stats(params: dict) -> list:
    out = []
    for i in range(int(params.get("block.count", 0))):
        p = f"block.{i}."
        out.append(
            {
                "target": params.get(p + "name"),
                "path": params.get(p + "path"),
                "capacity": params.get(p + "capacity"),
                "allocation": params.get(p + "allocation"),
                "physical": params.get(p + "physical"),
            }
        )
    return out


# ---- the worker (runs in the forked child) -------------------------------------------------------------

# Per-domain queries run in threads, at most this many at once on the worker's connection (libvirtd serves
# at most max_client_requests = 5 calls of one client at a time); a domain whose call has blocked longer
# than its bound no longer counts, so the next domains go on.
DOMAIN_THREADS = 4
# libvirt calls that need the domain's job (and, on QEMU, its monitor): for a domain on storage that does
# not answer they block in libvirtd (each pinning one of its worker threads until the storage answers),
# so they are never made for such a domain. XMLDesc, state and controlInfo take no job.
JOB_CALLS = ("block", "disk_errors", "job")


def probe_seconds(timeout: float) -> float:
    """How long a storage probe may take before its storage counts as not answering: a quarter of the
    timeout, at least 0.5 s and at most 3 s (a healthy mount answers statvfs in milliseconds)."""
    return round(min(3.0, max(0.5, timeout / 4.0)), 3)


def _evidence_for(
    name: str,
    dom: dict,
    host,
    mounts: list,
    pools: list,
    *,
    lvs_cache: dict,
    timeout: float,
    log_dir: str,
    status_dir: str,
    storage=None,
) -> dict:
    disks = [
        _evidence_io.gather_disk(x, host, mounts, pools, lvs_cache=lvs_cache, timeout=timeout, storage=storage)
        for x in dom.get("disks", [])
    ]
    status_path = os.path.join(status_dir, f"{name}.xml")
    try:
        mtime = host.mtime(status_path)
    except OSError:
        mtime = None
    return {
        "record": "evidence",
        "name": name,
        "disks": disks,
        "log": _evidence_io.log_evidence(name, host, log_dir),
        "status_mtime": mtime,
    }


def _storage_record(view, verdicts: dict, doms: dict) -> dict:
    """The storages that did not answer, each with the domains (and their disks) on it."""
    out = {}
    for name in sorted(doms):
        for disk in doms[name].get("disks") or []:
            found = view.for_disk(disk)
            if found is None or found["answered"]:
                continue
            un = found["unresponsive"]
            key = (un["kind"], un["target"])
            entry = out.setdefault(key, dict(un, domains={}))
            entry["domains"].setdefault(name, []).append(disk.get("target"))
    storages = []
    for entry in out.values():
        entry["domains"] = [{"name": n, "disks": t} for n, t in sorted(entry["domains"].items())]
        storages.append(entry)
    probed = [
        {
            "key": v["key"],
            "kind": v["kind"],
            "answered": v["answered"],
            "mount_point": v["mount"].get("mount_point"),
            "source": v["mount"].get("device"),
        }
        for v in verdicts.values()
    ]
    return {"record": "storage", "unresponsive": storages, "probed": probed}


def _query_domain(dom, name: str, xml_dom, dead: bool, job_support: dict, progress: dict) -> dict:
    """The libvirt facts of one paused/crashed domain (runs in a thread of its own)."""
    rec = {
        "record": "domain",
        "name": name,
        "dom": xml_dom,
        "block": None,
        "disk_errors": {},
        "job": None,
        "control": None,
        "errors": [],
        "skipped": list(JOB_CALLS) if dead else [],
    }
    block_flag = libvirt.VIR_DOMAIN_STATS_BLOCK
    nowait = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
    calls = []
    if xml_dom is None:
        calls.append(("xml", lambda: dom.XMLDesc(0)))
    if not dead:
        calls += [
            ("block", lambda: _block_stats(dom.connect().domainListGetStats([dom], block_flag, nowait)[0][1])),
            ("disk_errors", dom.diskErrors),
            ("job", lambda: _job_stats(dom, job_support)),
        ]
    calls.append(("control", dom.controlInfo))
    for key, call in calls:
        progress[name] = key
        try:
            value = call()
        except libvirt.libvirtError as exc:
            rec["errors"].append(f"{key}: {exc.get_error_message()}")
            continue
        except (JobApiUnsupported, IndexError) as exc:
            rec["errors"].append(f"{key}: {exc}")
            continue
        if key == "xml":
            # parsed once, here: the parent gets the facts, not the XML text
            try:
                rec["dom"] = _domxml.parse_domain(value)
            except _domxml.DomainXMLError:
                rec["dom"] = None
        else:
            rec[key] = value
    progress[name] = None
    return rec


def _run_domains(jobs: list, emit, bound: float, wall_deadline: float) -> dict:
    """Run ``jobs`` ([(name, fn)]) in threads, DOMAIN_THREADS at a time; each emits its record when done.

    A job still running ``bound`` seconds after it began is abandoned (its thread is left to the worker's
    end: a blocked libvirt call cannot be interrupted) and stops counting against the limit. Returns
    {name: seconds} of the abandoned jobs; returns at the latest just before ``wall_deadline``."""
    pending = list(jobs)
    active = {}  # name -> (thread, started)
    wake = threading.Event()

    def run(name, fn):
        try:
            rec = fn()
        except Exception as exc:  # one domain's failure is its record, never the others'
            rec = {"record": "domain_error", "name": name, "message": f"{type(exc).__name__}: {exc}"}
        emit(rec)
        wake.set()

    while True:
        now = time.time()
        fresh = [n for n, (t, t0) in active.items() if t.is_alive() and now - t0 < bound]
        while pending and len(fresh) < DOMAIN_THREADS:
            name, fn = pending.pop(0)
            t = threading.Thread(target=run, args=(name, fn), name=f"kvmops:{name}", daemon=True)
            active[name] = (t, time.time())
            t.start()
            fresh.append(name)
        if (not pending and not fresh) or now >= wall_deadline:
            break
        wake.wait(0.05)
        wake.clear()
    now = time.time()
    stuck = {n: round(now - t0, 1) for n, (t, t0) in active.items() if t.is_alive()}
    stuck.update((n, 0.0) for n, _fn in pending)
    return stuck


def _locked(emit):
    """``emit`` made safe to call from the domain threads."""
    lock = threading.Lock()

    def locked_emit(rec):
        with lock:
            emit(rec)

    return locked_emit


def worker(emit, uri: str, plan: dict, host=None) -> None:
    """Body of the forked worker; every result goes out through ``emit`` as soon as it is known.

    Order: storage probes for the disks the status files name start first (child processes, see
    _evidence_io.StorageProber), then one job-free listing of the domains' states, then the XML of
    paused domains the status files do not know (job-free; their storage is probed too), then the wait
    for the probes, then per paused/crashed domain a thread of its own: the job-taking calls (block
    stats, diskErrors, jobStats) only for domains whose storage answered. Host evidence never touches a
    storage that did not answer."""
    host = host or _evidence_io.Host()
    emit = _locked(emit)
    wall_deadline = plan["wall_deadline"]
    try:
        mounts = _evidence_io.parse_mountinfo(host.read_text("/proc/self/mountinfo"))
    except OSError:
        mounts = []
    lvs_cache = {}
    bound = plan.get("probe_seconds", 1.0)
    prober = _evidence_io.StorageProber(plan.get("probe_dir"))
    prober.sweep()
    known = dict(plan.get("status_disks") or {})  # name -> disks, from status files (no libvirt call)
    for name, dom in plan["busy"].items():
        known[name] = dom.get("disks", [])
    prober.start(_evidence_io.storage_groups([d for ds in known.values() for d in ds], mounts), bound)
    probe_deadline = time.time() + bound
    # DRBD health beside the pauses, read while the storage probes run: on a host without the DRBD module
    # this is one failed open of /proc/drbd and no command; the disks on DRBD devices reuse it below
    drbd = getattr(host, "drbd", None)
    if drbd is not None:
        lvs_cache["drbd"] = drbd(max(0.1, min(1.0, (wall_deadline - time.time()) / 8.0)))
        if lvs_cache["drbd"].get("loaded"):
            emit({"record": "drbd", "facts": lvs_cache["drbd"]})

    conn = open_connection(uri)
    emit({"record": "connected"})
    state_flag = libvirt.VIR_DOMAIN_STATS_STATE
    nowait = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
    if not plan.get("bulk", True):
        doms = []
        for uuid in plan["status_candidates"]:
            try:
                doms.append(conn.lookupByUUIDString(uuid))
            except libvirt.libvirtError:
                continue
        stats = conn.domainListGetStats(doms, state_flag, nowait) if doms else []
        via = "domainListGetStats"
    else:
        # the state of every domain: job-free. Block stats take a job: per paused domain, below
        stats = conn.getAllDomainStats(state_flag, nowait)
        via = "getAllDomainStats"
    domains, handles = [], {}
    for dom, params in stats:
        name = dom.name()
        if not selected(name, plan["patterns"]):
            continue
        entry = {
            "name": name,
            "uuid": dom.UUIDString(),
            "state": params.get("state.state"),
            "reason": params.get("state.reason"),
            "block": [],
        }
        domains.append(entry)
        if entry["state"] in (PAUSED, CRASHED):
            handles[name] = dom
    emit({"record": "stats", "via": via, "domains": domains})

    # paused domains the status files do not describe: their XML (job-free) names their disks
    parsed = {}
    for name, dom in handles.items():
        if name in known:
            continue
        try:
            parsed[name] = _domxml.parse_domain(dom.XMLDesc(0))
        except (libvirt.libvirtError, _domxml.DomainXMLError):
            continue
        known[name] = parsed[name].get("disks", [])
    if parsed:
        prober.start(_evidence_io.storage_groups([d for n in parsed for d in known[n]], mounts), bound)
        probe_deadline = time.time() + bound
    prober.wait(min(probe_deadline, wall_deadline - 0.2))
    verdicts = prober.verdicts()
    view = _evidence_io.StorageView(verdicts, mounts)
    for w in prober.warnings:
        emit({"record": "warning", "message": w})
    emit(_storage_record(view, verdicts, {n: {"disks": ds} for n, ds in known.items()}))

    def dead(name):
        return any((view.for_disk(d) or {"answered": True})["answered"] is False for d in known.get(name, []))

    job_support, progress, details = {}, {}, {}
    jobs = []
    for name, dom in handles.items():
        jobs.append(
            (
                name,
                lambda n=name, d=dom: details.setdefault(
                    n, _query_domain(d, n, parsed.get(n), dead(n), job_support, progress)
                ),
            )
        )
    abandoned = _run_domains(jobs, emit, max(1.0, (wall_deadline - time.time()) / 2.0), wall_deadline - 0.3)
    for name, secs in abandoned.items():
        emit({"record": "abandoned", "name": name, "call": progress.get(name), "seconds": secs})

    pools = []
    if handles:
        try:
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                info = pool.info()
                target = None
                try:
                    target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")  # noqa: S314 - libvirtd's own XML
                except (libvirt.libvirtError, ET.ParseError):
                    target = None
                pools.append(
                    {
                        "name": pool.name(),
                        "target_path": target,
                        "capacity": info[1],
                        "allocation": info[2],
                        "available": info[3],
                    }
                )
        except libvirt.libvirtError as exc:
            emit({"record": "warning", "message": f"storage pools: {exc.get_error_message()}"})
        emit({"record": "pools", "pools": pools})

    def evidence(name: str, dom: dict, pools: list) -> dict:
        return _evidence_for(
            name,
            dom,
            host,
            mounts,
            pools,
            lvs_cache=lvs_cache,
            timeout=max(0.1, min(1.0, (wall_deadline - time.time()) / 4.0)),
            log_dir=plan["log_dir"],
            status_dir=plan["status_dir"],
            storage=view,
        )

    for name in plan["busy"]:
        emit(evidence(name, plan["busy"][name], []))
    for name in handles:
        rec = details.get(name)
        if rec is not None and name not in abandoned:
            emit(evidence(name, rec["dom"] or {"disks": []}, pools))


# ---- the parent: plan, run, assemble --------------------------------------------------------------------


def collect(
    uri: str,
    timeout: float,
    patterns=None,
    include_running: bool = False,
    *,
    started=None,
    status_dir: str = STATUS_DIR,
    log_dir: str = _evidence_io.LOG_DIR,
    host=None,
    probe_dir=None,
) -> dict:
    """Return the kvm_pause facts. Raises LibvirtConnectError when libvirt refuses the connection.

    ``probe_dir``: where the storage probes' markers live (default: _evidence_io.default_probe_dir())."""
    host = host or _evidence_io.Host()
    started = time.monotonic() if started is None else started
    deadline = started + timeout
    wall_deadline = time.time() + (deadline - time.monotonic())
    patterns = list(patterns or [])
    status_all = read_status_dir(status_dir, host) if local_system_uri(uri) else {}
    # any busy domain, selected or not, makes the enumerating bulk call unsafe
    any_busy = any(s.get("job") for s in status_all.values())
    status = {n: s for n, s in status_all.items() if selected(n, patterns)}
    busy = {n: s["domain"] for n, s in status.items() if s.get("job")}
    candidates = [
        s["domain"].get("uuid")
        for n, s in status.items()
        if n not in busy and s["state"] in (PAUSED, CRASHED) and s["domain"].get("uuid")
    ]
    plan = {
        "busy": busy,
        "bulk": not any_busy,
        "status_candidates": candidates,
        "patterns": patterns,
        "wall_deadline": wall_deadline,
        "log_dir": log_dir,
        "status_dir": status_dir,
        # the disks of every selected active domain, running ones included (storage that does not answer
        # puts them at risk), known without asking libvirt
        "status_disks": {n: s["domain"].get("disks", []) for n, s in status.items() if n not in busy},
        "probe_seconds": probe_seconds(timeout),
        "probe_dir": probe_dir,
    }
    records, finished = run_bounded(worker, deadline, uri, plan)
    return assemble(
        uri,
        timeout,
        records,
        finished,
        status,
        include_running=include_running,
        elapsed=time.monotonic() - started,
        now=time.time(),
    )


def _iso(ts):
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def assemble(uri, timeout, records, finished, status, *, include_running, elapsed, now) -> dict:
    errors, warnings = [], []
    connected = any(r.get("record") == "connected" for r in records)
    stats = next((r for r in records if r.get("record") == "stats"), None)
    details = {r["name"]: r for r in records if r.get("record") == "domain"}
    evidence = {r["name"]: r for r in records if r.get("record") == "evidence"}
    abandoned = {r["name"]: r for r in records if r.get("record") == "abandoned"}
    storage = next((r for r in records if r.get("record") == "storage"), None)
    for r in records:
        if r.get("record") == "error":
            if r.get("kind") == "LibvirtConnectError":
                raise LibvirtConnectError(r["message"])
            errors.append(r["message"])
        elif r.get("record") == "domain_error":
            errors.append("domain {}: {}".format(r["name"], r["message"]))
        elif r.get("record") == "warning":
            warnings.append(r["message"])
    for name, r in sorted(abandoned.items()):
        errors.append(
            "libvirt did not answer within {}s while querying domain {}{}".format(
                r.get("seconds"), name, " ({})".format(r["call"]) if r.get("call") else ""
            )
        )
    if not finished:
        if not connected:
            errors.append(f"libvirt did not accept a connection to {uri} within {timeout}s")
        elif stats is None:
            errors.append(
                f"libvirt did not list the domains within {timeout}s: a domain is probably blocked in a job "
                "(domains known from status files are under unresponsive)"
            )
        else:
            errors.append(f"libvirt did not answer within {timeout}s")

    # the domain universe: libvirt's answer, else the status files
    universe = {}
    if stats is not None:
        for d in stats["domains"]:
            universe[d["name"]] = dict(d, source="libvirt")
    for name, st in status.items():
        if name not in universe and (stats is None or st.get("job") or stats.get("via") != "getAllDomainStats"):
            universe[name] = {
                "name": name,
                "uuid": st["domain"].get("uuid"),
                "state": st["state"],
                "reason": st["reason"],
                "block": [],
                "source": "status_xml",
            }

    dead_storage = _dead_storage(storage, universe, now)
    at_risk = {}
    for st in dead_storage:
        for d in st["domains"]:
            at_risk.setdefault(d["name"], []).append(st["target"])
    paused, unresponsive, running = [], [], []
    counts = {"total": 0, "running": 0, "paused": 0, "crashed": 0, "shutoff": 0, "other": 0}
    for name in sorted(universe):
        listed = universe[name]
        counts["total"] += 1
        state = listed.get("state")
        key = {RUNNING: "running", PAUSED: "paused", CRASHED: "crashed", SHUTOFF: "shutoff"}.get(state, "other")
        counts[key] += 1
        if state == RUNNING and include_running:
            running.append(
                {
                    "name": name,
                    "uuid": listed.get("uuid"),
                    "reason_code": listed.get("reason"),
                    "at_risk": name in at_risk,
                    "storage_unresponsive": at_risk.get(name, []),
                }
            )
        if state not in (PAUSED, CRASHED):
            continue
        entry = _paused_entry(
            name,
            listed,
            details.get(name),
            evidence.get(name),
            status.get(name),
            now=now,
            abandoned=abandoned.get(name),
        )
        paused.append(entry)
        if not entry["responsive"]:
            st = status.get(name)
            job = entry.get("job")
            unresponsive.append(
                {
                    "name": name,
                    "uuid": entry["uuid"],
                    "state": entry["state"],
                    "reason": entry["reason"],
                    "job": job["kind"] if job else None,
                    "job_seconds": entry.get("paused_for_seconds") if job and job.get("started_ms") else None,
                    "pid": st.get("pid") if st else None,
                    "queried": listed["source"] == "libvirt",
                    "message": entry["unresponsive_reason"],
                }
            )
    by_cause = {}
    for e in paused:
        by_cause[e["cause"]] = by_cause.get(e["cause"], 0) + 1
    summary = dict(
        counts,
        unresponsive=len(unresponsive),
        safe_to_resume=sum(1 for e in paused if e["safe_to_resume"]),
        by_cause=by_cause,
        storage_unresponsive=len(dead_storage),
        at_risk=sum(1 for n in at_risk if (universe.get(n) or {}).get("state") == RUNNING),
    )
    for st in dead_storage:
        warnings.append(
            "{} {} ({}{}) did not answer{}; domains on it: {}".format(
                "block device" if st["kind"] == "block" else "storage at",
                st["target"],
                st.get("fstype") or "block",
                f" from {st['source']}" if st.get("source") and st["kind"] != "block" else "",
                f" for {st['seconds']}s" if st.get("seconds") is not None else "",
                ", ".join(d["name"] for d in st["domains"]) or "none selected",
            )
        )
    facts = {
        "schema_version": SCHEMA_VERSION,
        "uri": uri,
        "collected_at": _iso(now),
        "duration_seconds": round(elapsed, 3),
        "complete": bool(finished) and not errors,
        "collection": stats["via"] if stats else "status_xml",
        "summary": summary,
        "paused": paused,
        "unresponsive": unresponsive,
        "storage_unresponsive": dead_storage,
        "errors": errors,
        "warnings": warnings,
    }
    if include_running:
        facts["running"] = running
    drbd = next((r for r in records if r.get("record") == "drbd"), None)
    if drbd is not None:
        # only where the DRBD module is loaded: the same shape drbd_facts returns
        facts["drbd"] = drbd["facts"]
        if drbd["facts"].get("errors"):
            warnings.extend(f"DRBD: {e}" for e in drbd["facts"]["errors"])
    return facts


def _dead_storage(storage, universe: dict, now: float) -> list:
    """The worker's "storage" record -> facts' storage_unresponsive: per storage that did not answer, what
    it is (mount point, filesystem type, server or device, options from mountinfo), since when, and the
    domains with disks on it (those libvirt or the status files know, with their state)."""
    out = []
    for st in (storage or {}).get("unresponsive") or []:
        domains = []
        for d in st.get("domains") or []:
            listed = universe.get(d["name"])
            if listed is None:
                continue
            code = listed.get("state")
            state = {RUNNING: "running", PAUSED: "paused", CRASHED: "crashed", SHUTOFF: "shutoff"}.get(code, "other")
            domains.append({"name": d["name"], "state": state, "disks": d.get("disks") or []})
        since = st.get("since")
        out.append(
            {
                "kind": st.get("kind"),
                "target": st.get("target"),
                "mount_point": st.get("mount_point"),
                "fstype": st.get("fstype"),
                "source": st.get("source"),
                "options": st.get("options") or "",
                "since": _iso(since),
                "seconds": round(now - since, 1) if since is not None else None,
                "probe_pid": st.get("probe_pid"),
                "domains": domains,
            }
        )
    return sorted(out, key=lambda x: (x["target"] or "", x["kind"] or ""))


def _paused_entry(name, listed, queried, evidence, status, *, now, abandoned=None) -> dict:
    """One paused[] entry: ``listed`` is the domain as the listing knew it (state, reason, block stats,
    source), ``queried`` the worker's "domain" record (None when libvirt did not answer for it),
    ``evidence`` its "evidence" record (host evidence per disk, QEMU log), ``status`` its parsed status file."""
    responsive = queried is not None
    dom = {}
    if queried and queried.get("dom"):
        dom = queried["dom"]  # parsed in the worker
    elif queried and queried.get("xml"):  # a record carrying the XML text itself
        try:
            dom = _domxml.parse_domain(queried["xml"])
        except _domxml.DomainXMLError:
            dom = {}
    if not dom and status:
        dom = status["domain"]
    job = job_from_stats(queried.get("job")) if queried else None
    if queried is None:
        job = status_job(status)
    blocks = {b.get("target"): b for b in (queried or {}).get("block") or listed.get("block") or []}
    ev_disks = (evidence or {}).get("disks") or []
    disk_errors = dict((queried or {}).get("disk_errors") or {})
    disks = []
    for i, disk in enumerate(dom.get("disks", [])):
        b = blocks.get(disk.get("target"), {})
        d = dict(
            disk,
            capacity=b.get("capacity"),
            allocation=b.get("allocation"),
            physical=b.get("physical"),
            evidence=ev_disks[i] if i < len(ev_disks) else {},
        )
        disks.append(d)
    status_mtime = (evidence or {}).get("status_mtime")
    if status_mtime is None and status:
        status_mtime = status.get("mtime")
    paused_info = _evidence_io.paused_since(status_mtime, job if (job or {}).get("started_ms") else None, now)
    log = (evidence or {}).get("log") or {"path": None, "lines": [], "error": "not collected"}
    diag_input = {
        "name": name,
        "state": listed.get("state"),
        "reason": listed.get("reason") or 0,
        "disk_errors": disk_errors,
        "disks": disks,
        "job": job,
        "watchdog": dom.get("watchdog"),
        "on_lockfailure": dom.get("on_lockfailure"),
        "on_crash": dom.get("on_crash"),
        "log_lines": log.get("lines") or [],
        "paused": paused_info,
        "responsive": responsive,
        "source": listed["source"] if responsive else "status_xml",
        "started_at": log.get("started_at"),
    }
    diag = _diagnose.diagnose(diag_input)
    if not responsive:
        why = (
            (
                "not queried: its status file shows a {} job in flight, which can hold the domain lock so that "
                "every libvirt call on it hangs".format(job["kind"])
            )
            if job
            else (
                "libvirt did not answer for this domain within {}s ({})".format(
                    abandoned.get("seconds"), abandoned.get("call") or "?"
                )
                if abandoned
                else "libvirt did not answer for this domain within the timeout"
            )
        )
    else:
        why = None
    state = listed.get("state")
    return {
        "name": name,
        "uuid": listed.get("uuid") or dom.get("uuid"),
        "state": "crashed" if state == CRASHED else "paused",
        "state_code": state,
        "reason": reason_name(state, listed.get("reason") or 0),
        "reason_code": listed.get("reason") or 0,
        "cause": diag["cause"],
        "severity": diag["severity"],
        "summary": diag["summary"],
        "findings": diag["findings"],
        "remediation": diag["remediation"],
        "safe_to_resume": diag["safe_to_resume"],
        "safe_to_resume_reason": diag["safe_to_resume_reason"],
        "responsive": responsive,
        "unresponsive_reason": why,
        "source": "libvirt" if responsive else "status_xml",
        "paused_since": _iso(paused_info["since"]),
        "paused_for_seconds": paused_info["seconds"],
        "paused_since_source": paused_info["source"],
        "disks": [_public_disk(x, disk_errors) for x in disks],
        "job": job,
        "control": _control(queried.get("control") if queried else None),
        "watchdog_action": (dom.get("watchdog") or {}).get("action"),
        "on_lockfailure": dom.get("on_lockfailure"),
        "on_crash": dom.get("on_crash"),
        "log": {"path": log.get("path"), "lines": log.get("lines") or []},
        "errors": list((queried or {}).get("errors") or []) + [e for x in ev_disks for e in x.get("errors", [])],
    }


def _public_unresponsive(un):
    if not un:
        return None
    out = {
        k: un.get(k) for k in ("kind", "target", "mount_point", "fstype", "source", "options", "seconds", "probe_pid")
    }
    out["since"] = _iso(un.get("since"))
    return out


def _control(ctl):
    if not ctl:
        return None
    return {
        "state": CONTROL_STATES.get(ctl[0], str(ctl[0])),
        "details": ctl[1],
        "seconds": round(ctl[2] / 1000.0, 3) if len(ctl) > 2 else None,
    }


def _public_disk(x: dict, disk_errors: dict) -> dict:
    ev = x.get("evidence") or {}
    code = disk_errors.get(x.get("target"), 0)
    if x.get("path"):
        source = x["path"]
    elif x.get("type") == "network":
        source = "{}://{}/{}".format(
            x.get("protocol"), ",".join(_evidence_io.endpoint_text(h) for h in x.get("hosts")), x.get("export") or ""
        )
    elif x.get("type") == "volume":
        source = "{}/{}".format(x.get("pool"), x.get("volume"))
    else:
        source = None
    return {
        "target": x.get("target"),
        "type": x.get("type"),
        "device": x.get("device"),
        "source": source,
        "format": x.get("format"),
        "error_policy": x.get("error_policy"),
        "rerror_policy": x.get("rerror_policy"),
        "error": DISK_ERRORS.get(code, str(code)),
        "error_code": code,
        "capacity": x.get("capacity"),
        "allocation": x.get("allocation"),
        "physical": x.get("physical"),
        "filesystem": ev.get("filesystem"),
        "block_device": ev.get("block_device"),
        "storage_unresponsive": _public_unresponsive(ev.get("unresponsive")),
        "endpoints": ev.get("endpoints") or [],
        "pool": ev.get("pool"),
        "thin_pool": ev.get("thin_pool"),
        "drbd": ev.get("drbd"),
    }
