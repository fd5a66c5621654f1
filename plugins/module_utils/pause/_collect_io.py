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
) -> dict:
    disks = [
        _evidence_io.gather_disk(x, host, mounts, pools, lvs_cache=lvs_cache, timeout=timeout)
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


def worker(emit, uri: str, plan: dict, host=None) -> None:
    """Body of the forked worker; every result goes out through ``emit`` as soon as it is known."""
    host = host or _evidence_io.Host()
    wall_deadline = plan["wall_deadline"]
    try:
        mounts = _evidence_io.parse_mountinfo(host.read_text("/proc/self/mountinfo"))
    except OSError:
        mounts = []
    lvs_cache = {}

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
        )

    for name in plan["busy"]:
        emit(evidence(name, plan["busy"][name], []))

    conn = open_connection(uri)
    emit({"record": "connected"})
    state_flag, block_flag = libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_DOMAIN_STATS_BLOCK
    nowait = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
    if not plan.get("bulk", True):
        doms = []
        for uuid in plan["status_candidates"]:
            try:
                doms.append(conn.lookupByUUIDString(uuid))
            except libvirt.libvirtError:
                continue
        stats = conn.domainListGetStats(doms, state_flag | block_flag, nowait) if doms else []
        via = "domainListGetStats"
    else:
        # the state of every domain; block stats (a monitor query per domain on QEMU) for paused ones only
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
            "block": _block_stats(params),
        }
        domains.append(entry)
        if entry["state"] in (PAUSED, CRASHED):
            handles[name] = (dom, entry)
    if via == "getAllDomainStats" and handles:
        try:
            for dom, params in conn.domainListGetStats([d for d, _e in handles.values()], block_flag, nowait):
                handles[dom.name()][1]["block"] = _block_stats(params)
        except libvirt.libvirtError as exc:  # the states are known: go on without block stats
            emit({"record": "warning", "message": f"block stats: {exc.get_error_message()}"})
    handles = {name: dom for name, (dom, _entry) in handles.items()}
    emit({"record": "stats", "via": via, "domains": domains})

    details = {}
    job_support = {}
    for name, dom in handles.items():
        emit({"record": "begin", "name": name})
        rec = {
            "record": "domain",
            "name": name,
            "dom": None,
            "disk_errors": {},
            "job": None,
            "control": None,
            "errors": [],
        }
        calls = (
            ("xml", lambda d=dom: d.XMLDesc(0)),
            ("disk_errors", dom.diskErrors),
            ("job", lambda d=dom: _job_stats(d, job_support)),
            ("control", dom.controlInfo),
        )
        for key, call in calls:
            try:
                value = call()
            except libvirt.libvirtError as exc:
                rec["errors"].append(f"{key}: {exc.get_error_message()}")
                continue
            except JobApiUnsupported as exc:
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
        emit(rec)
        details[name] = rec

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
    for name, rec in details.items():
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
) -> dict:
    """Return the kvm_pause facts. Raises LibvirtConnectError when libvirt refuses the connection."""
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
    begun = [r["name"] for r in records if r.get("record") == "begin"]
    for r in records:
        if r.get("record") == "error":
            if r.get("kind") == "LibvirtConnectError":
                raise LibvirtConnectError(r["message"])
            errors.append(r["message"])
        elif r.get("record") == "warning":
            warnings.append(r["message"])
    if not finished:
        if not connected:
            errors.append(f"libvirt did not accept a connection to {uri} within {timeout}s")
        elif stats is None:
            errors.append(
                f"libvirt did not list the domains within {timeout}s: a domain is probably blocked in a job "
                "(domains known from status files are under unresponsive)"
            )
        else:
            stuck = [n for n in begun if n not in details]
            errors.append(
                "libvirt did not answer within {}s{}".format(
                    timeout, f" while querying domain {stuck[0]}" if stuck else ""
                )
            )

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

    paused, unresponsive, running = [], [], []
    counts = {"total": 0, "running": 0, "paused": 0, "crashed": 0, "shutoff": 0, "other": 0}
    for name in sorted(universe):
        listed = universe[name]
        counts["total"] += 1
        state = listed.get("state")
        key = {RUNNING: "running", PAUSED: "paused", CRASHED: "crashed", SHUTOFF: "shutoff"}.get(state, "other")
        counts[key] += 1
        if state == RUNNING and include_running:
            running.append({"name": name, "uuid": listed.get("uuid"), "reason_code": listed.get("reason")})
        if state not in (PAUSED, CRASHED):
            continue
        entry = _paused_entry(name, listed, details.get(name), evidence.get(name), status.get(name), now=now)
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
                    "queried": name in begun or listed["source"] == "libvirt",
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
        "errors": errors,
        "warnings": warnings,
    }
    if include_running:
        facts["running"] = running
    return facts


def _paused_entry(name, listed, queried, evidence, status, *, now) -> dict:
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
    blocks = {b.get("target"): b for b in listed.get("block") or []}
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
            else "libvirt did not answer for this domain within the timeout"
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
        "endpoints": ev.get("endpoints") or [],
        "pool": ev.get("pool"),
        "thin_pool": ev.get("thin_pool"),
    }
