# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report: per-host kvm_pause_facts results -> one report (schema version 1). Controller side, pure.

``build_report`` takes ``{host: registered result of kvm_pause_facts or None}`` and returns the report the
diagnostics role writes as JSON, Markdown and HTML; ``fleet_summary`` condenses a report into the
``kvmops_fleet_summary`` set_stats artifact. Everything is sorted, so the same input gives the same report.

A ``state_digest`` (SHA-256 over the report without the measurements that change on every run while the
fleet stands still: run and collection times, durations, "paused for", job progress, free bytes) lets the role
keep the previous report when the fleet's state is the same (``previous``), so the report files change only
when the fleet does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd._status import SEVERITY as DRBD_SEVERITY
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd._status import VERDICTS as DRBD_VERDICTS
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._diagnose import SEVERITY

SCHEMA_VERSION = 1
STATUSES = ("diagnosed", "unreachable", "libvirt_failed", "not_diagnosed")
SEVERITY_ORDER = ("critical", "warning", "info")
# Measurements that change between two runs over a fleet whose state did not change (times, durations, and
# the raw fill levels of live filesystems and pools): left out of the state digest. The diagnosis texts
# (summary, findings, remediation, safe_to_resume_reason) stay in, with the figures they quote.
# how the domains were listed depends on other domains of the host being busy at that moment, not on them
VOLATILE_HOST_KEYS = ("collected_at", "duration_seconds", "collection")
VOLATILE_VM_KEYS = ("paused_for_seconds",)
VOLATILE_VM_SUBKEYS = {
    "job": ("elapsed_seconds", "progress_percent"),
    "control": ("seconds",),
}
VOLATILE_DISK_KEYS = ("allocation", "physical")
VOLATILE_DISK_SUBKEYS = {
    "filesystem": ("available_bytes", "free_bytes", "used_percent"),
    "pool": ("allocation", "available"),
    "thin_pool": ("data_percent", "metadata_percent"),
}
VOLATILE_UNRESPONSIVE_KEYS = ("job_seconds",)
COUNT_KEYS = (
    "hosts",
    "hosts_diagnosed",
    "hosts_unreachable",
    "hosts_libvirt_failed",
    "hosts_not_diagnosed",
    "hosts_incomplete",
    "domains_total",
    "running",
    "paused",
    "crashed",
    "unresponsive",
    "safe_to_resume",
)


class FleetReportError(ValueError):
    """Input the report cannot be built from; the message names what is wrong."""


def plain(value):
    """Copy of ``value`` made of dict/list/str/int/float/bool/None only (drops Ansible's tagged/lazy types)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise FleetReportError(f"unexpected value of type {type(value).__name__} in the results: {value!r}")


def severity_of(cause: str, given: str | None = None) -> str:
    if given in SEVERITY_ORDER:
        return given
    return SEVERITY.get(cause, "warning")


def severity_rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean_message(msg) -> str:
    text = str(msg or "").strip()
    for prefix in ("Task failed: ", "Module failed: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def host_entry(name: str, result) -> dict:
    """One host of the report from its registered kvm_pause_facts result (None: the task never ran there)."""
    entry = {
        "name": name,
        "status": "not_diagnosed",
        "message": "",
        "complete": False,
        "errors": [],
        "warnings": [],
        "uri": None,
        "collected_at": None,
        "duration_seconds": None,
        "collection": None,
        "summary": None,
        "paused": [],
        "unresponsive": [],
        "drbd": None,
    }
    if result is None:
        entry["message"] = "not diagnosed: the host left the play before the diagnosis (failed or unreachable earlier)"
        return entry
    if not isinstance(result, Mapping):
        raise FleetReportError(f"the result for host {name} is a {type(result).__name__}, not a task result")
    if result.get("unreachable"):
        entry["status"] = "unreachable"
        entry["message"] = _clean_message(result.get("msg")) or "unreachable"
        return entry
    if result.get("failed"):
        entry["status"] = "libvirt_failed"
        entry["message"] = _clean_message(result.get("msg")) or "kvm_pause_facts failed without a message"
        return entry
    if result.get("skipped"):
        entry["message"] = "not diagnosed: the diagnosis was skipped ({})".format(
            _clean_message(result.get("skip_reason")) or "no reason given"
        )
        return entry
    facts = (result.get("ansible_facts") or {}).get("kvm_pause")
    if not isinstance(facts, Mapping):
        entry["message"] = "not diagnosed: the result has no ansible_facts.kvm_pause"
        return entry
    if facts.get("schema_version") != SCHEMA_VERSION:
        raise FleetReportError(
            f"host {name}: kvm_pause schema_version {facts.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    summary = dict(facts.get("summary") or {})
    summary["by_cause"] = dict(sorted((summary.get("by_cause") or {}).items()))
    paused = sorted(facts.get("paused") or [], key=lambda p: str(p.get("name")))
    for p in paused:
        p["severity"] = severity_of(p.get("cause", "unknown"), p.get("severity"))
    entry.update(
        status="diagnosed",
        complete=bool(facts.get("complete")),
        errors=list(facts.get("errors") or []),
        warnings=list(facts.get("warnings") or []),
        uri=facts.get("uri"),
        collected_at=facts.get("collected_at"),
        duration_seconds=facts.get("duration_seconds"),
        collection=facts.get("collection"),
        summary=summary,
        paused=paused,
        unresponsive=sorted(facts.get("unresponsive") or [], key=lambda u: str(u.get("name"))),
        drbd=drbd_entry(facts.get("drbd")),
    )
    counts = "{} domains: {} running, {} paused, {} crashed, {} unresponsive, {} safe to resume".format(
        summary.get("total", 0),
        summary.get("running", 0),
        summary.get("paused", 0),
        summary.get("crashed", 0),
        summary.get("unresponsive", 0),
        summary.get("safe_to_resume", 0),
    )
    if entry["complete"]:
        entry["message"] = counts
    else:
        entry["message"] = "INCOMPLETE: {} ({})".format("; ".join(entry["errors"]) or "no reason given", counts)
    return entry


def drbd_resource(r: Mapping) -> dict:
    """One DRBD resource of a host as the report shows it (drbd_facts' record, without per-run figures)."""
    verdict = r.get("verdict")
    return {
        "name": r.get("name"),
        "verdict": verdict,
        "severity": r.get("severity") or DRBD_SEVERITY.get(verdict, "warning"),
        "role": r.get("role"),
        "minors": [v.get("minor") for v in r.get("volumes") or []],
        "disk_states": [v.get("disk_state") for v in r.get("volumes") or []],
        "quorum": None
        if all(v.get("quorum") is None for v in r.get("volumes") or [])
        else all(v.get("quorum") is not False for v in r.get("volumes") or []),
        "suspended": bool(r.get("suspended")),
        "peers": [
            {
                "name": p.get("name") or p.get("address"),
                "connection_state": p.get("connection_state"),
                "role": p.get("role"),
                "disk_states": [pv.get("disk_state") for pv in p.get("volumes") or []],
            }
            for p in r.get("peers") or []
        ],
        "out_of_sync_bytes": r.get("out_of_sync_bytes"),
        "split_brain": bool((r.get("split_brain") or {}).get("detected")),
        "summary": r.get("summary") or "",
        "remediation": list(r.get("remediation") or []),
    }


def drbd_entry(drbd) -> dict | None:
    """A host's DRBD health (kvm_pause_facts' ``drbd``, present where the DRBD module is loaded), or None."""
    if not isinstance(drbd, Mapping) or not drbd.get("loaded"):
        return None
    resources = [drbd_resource(r) for r in drbd.get("resources") or [] if isinstance(r, Mapping)]
    return {
        "kernel_version": drbd.get("kernel_version"),
        "resources": sorted(resources, key=lambda r: (_drbd_rank(r["verdict"]), str(r["name"]))),
        "summary": dict(drbd.get("summary") or {}),
        "errors": list(drbd.get("errors") or []),
    }


def _drbd_rank(verdict) -> int:
    return DRBD_VERDICTS.index(verdict) if verdict in DRBD_VERDICTS else len(DRBD_VERDICTS)


def _drbd_rows(hosts: list) -> list:
    """Every DRBD resource of the fleet, worst verdict first: the report's DRBD table."""
    rows = [dict(r, host=h["name"]) for h in hosts if h.get("drbd") for r in h["drbd"]["resources"]]
    return sorted(rows, key=lambda r: (_drbd_rank(r["verdict"]), r["host"], str(r["name"])))


def _drop(entry: dict, keys: tuple, subkeys: dict) -> None:
    for k in keys:
        entry.pop(k, None)
    for sub, inner in subkeys.items():
        if isinstance(entry.get(sub), dict):
            for k in inner:
                entry[sub].pop(k, None)


# Per-run names inside connection errors ("... mkdir .../ansible-tmp-1795685177.07-4752-1234 ... exited with
# result 255"): the same unreachable host must give the same digest on every run.
VOLATILE_MESSAGE_PARTS = (re.compile(r"ansible-tmp-[0-9.]+-[0-9]+-[0-9]+"), "ansible-tmp-*")


def _strip_volatile(report: dict) -> dict:
    r = copy.deepcopy(report)
    r.pop("generated_at", None)
    r.pop("state_digest", None)
    for h in r.get("hosts") or []:
        if isinstance(h.get("message"), str):
            h["message"] = VOLATILE_MESSAGE_PARTS[0].sub(VOLATILE_MESSAGE_PARTS[1], h["message"])
        for k in VOLATILE_HOST_KEYS:
            h.pop(k, None)
        for p in h.get("paused") or []:
            _drop(p, VOLATILE_VM_KEYS, VOLATILE_VM_SUBKEYS)
            for d in p.get("disks") or []:
                if isinstance(d, dict):
                    _drop(d, VOLATILE_DISK_KEYS, VOLATILE_DISK_SUBKEYS)
        for u in h.get("unresponsive") or []:
            for k in VOLATILE_UNRESPONSIVE_KEYS:
                u.pop(k, None)
    if isinstance(r.get("pause_risks"), dict):
        _strip_volatile_risks(r["pause_risks"])
    return r


# The forecast (pause_risks) changes with every guest write while nobody is at more risk: its figures and the
# texts that quote them stay out of the digest; who is at risk, where and how badly stays in.
VOLATILE_RISK_STORAGE_KEYS = ("total_bytes", "free_bytes", "remaining_growth_bytes", "headroom_bytes", "actions")
VOLATILE_RISK_KEYS = ("summary", "headroom_bytes", "actions")
VOLATILE_RISK_HOST_KEYS = ("collected_at", "message")


def _strip_volatile_risks(section: dict) -> None:
    for row in section.get("storages") or []:
        for k in VOLATILE_RISK_STORAGE_KEYS:
            row.pop(k, None)
    for row in section.get("risks") or []:
        for k in VOLATILE_RISK_KEYS:
            row.pop(k, None)
    for row in section.get("hosts") or []:
        for k in VOLATILE_RISK_HOST_KEYS:
            row.pop(k, None)


def state_digest(report: dict) -> str:
    """SHA-256 of the report's fleet state: everything except times, durations and live fill levels."""
    text = json.dumps(_strip_volatile(report), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _summary(hosts: list) -> dict:
    s = dict.fromkeys(COUNT_KEYS, 0)
    s["hosts"] = len(hosts)
    by_cause: dict = {}
    by_severity = dict.fromkeys(SEVERITY_ORDER, 0)
    for h in hosts:
        s["hosts_" + h["status"]] += 1
        if h["status"] == "diagnosed" and not h["complete"]:
            s["hosts_incomplete"] += 1
        hs = h["summary"] or {}
        s["domains_total"] += int(hs.get("total", 0))
        for k in ("running", "paused", "crashed", "unresponsive"):
            s[k] += int(hs.get(k, 0))
        for p in h["paused"]:
            by_cause[p["cause"]] = by_cause.get(p["cause"], 0) + 1
            by_severity[p["severity"]] = by_severity.get(p["severity"], 0) + 1
            s["safe_to_resume"] += 1 if p.get("safe_to_resume") else 0
    s["by_cause"] = dict(sorted(by_cause.items()))
    s["by_severity"] = by_severity
    return s


def _causes(hosts: list) -> list:
    groups: dict = {}
    for h in hosts:
        for p in h["paused"]:
            g = groups.setdefault(
                p["cause"],
                {"cause": p["cause"], "severity": p["severity"], "count": 0, "safe_to_resume": 0, "domains": []},
            )
            if severity_rank(p["severity"]) < severity_rank(g["severity"]):
                g["severity"] = p["severity"]
            g["count"] += 1
            g["safe_to_resume"] += 1 if p.get("safe_to_resume") else 0
            g["domains"].append(
                {
                    "host": h["name"],
                    "name": p.get("name"),
                    "state": p.get("state"),
                    "safe_to_resume": bool(p.get("safe_to_resume")),
                    "summary": p.get("summary", ""),
                }
            )
    for g in groups.values():
        g["domains"].sort(key=lambda d: (d["host"], str(d["name"])))
    return sorted(groups.values(), key=lambda g: (severity_rank(g["severity"]), -g["count"], g["cause"]))


def _parse_previous(previous):
    """The previous report as a dict, from a dict or from the JSON text of the file; None when unusable."""
    if isinstance(previous, (str, bytes)):
        try:
            previous = json.loads(previous)
        except ValueError:
            return None
    if not isinstance(previous, Mapping):
        return None
    try:
        return plain(previous)
    except FleetReportError:
        return None


RISK_STATUSES = ("forecast", "unreachable", "failed", "not_forecast")


def _not_forecast_row(name: str, message: str) -> dict:
    """A host's row in pause_risks.hosts before (or without) its forecast."""
    return {
        "name": name,
        "status": "not_forecast",
        "complete": False,
        "message": message,
        "errors": [],
        "collected_at": None,
    }


def _risk_host(name: str, result) -> tuple:
    """One host's forecast -> (its row in pause_risks.hosts, its forecast facts or None)."""
    row = _not_forecast_row(name, "")
    if result is None:
        row["message"] = "not forecast: the host left the play before the forecast"
        return row, None
    if result.get("unreachable"):
        row.update(status="unreachable", message=_clean_message(result.get("msg")) or "unreachable")
        return row, None
    if result.get("failed"):
        row.update(
            status="failed", message=_clean_message(result.get("msg")) or "kvm_pause_risk failed without a message"
        )
        return row, None
    if result.get("skipped"):
        reason = _clean_message(result.get("skip_reason")) or "no reason given"
        row["message"] = f"not forecast: skipped ({reason})"
        return row, None
    facts = (result.get("ansible_facts") or {}).get("kvm_pause_risk")
    if not isinstance(facts, Mapping):
        row["message"] = "not forecast: the result has no ansible_facts.kvm_pause_risk"
        return row, None
    s = facts.get("summary") or {}
    row.update(
        status="forecast",
        complete=bool(facts.get("complete", True)),
        errors=list(facts.get("errors") or []),
        collected_at=facts.get("collected_at"),
        message="{} running domain(s), {} storage(s), {} overcommitted, {} at risk".format(
            s.get("domains", 0), s.get("storages", 0), s.get("overcommitted", 0), len(s.get("at_risk_domains") or [])
        ),
    )
    if not row["complete"]:
        row["message"] = "INCOMPLETE: {} ({})".format("; ".join(row["errors"]) or "no reason given", row["message"])
    return row, facts


def pause_risks(risks: Mapping, hosts: list) -> dict:
    """The report's ``pause_risks`` section from ``{host: registered kvm_pause_risk result or None}``.

    ``storages``: every storage with a risk (severity set), worst first, with its figures, who would pause or
    see write errors, and the actions; ``risks``: every other risk (write errors in a guest, dropped writes,
    thin pool metadata, watchdog or lock-failure pause, memory overcommit, huge pages); ``paused_now``: the
    domains of that host the diagnosis found paused right now, beside them."""
    paused_now = {h["name"]: sorted(str(p.get("name")) for p in h.get("paused") or []) for h in hosts}
    rows, storages, others = [], [], []
    counts = dict.fromkeys(RISK_COUNT_KEYS, 0)
    by_severity = dict.fromkeys(SEVERITY_ORDER, 0)
    for name in sorted(risks):
        row, facts = _risk_host(name, risks[name])
        rows.append(row)
        counts["hosts"] += 1
        if facts is None:
            continue
        counts["hosts_forecast"] += 1
        counts["at_risk_domains"] += len((facts.get("summary") or {}).get("at_risk_domains") or [])
        first = {
            r.get("storage"): r.get("first_to_pause")
            for r in facts.get("risks") or []
            if r.get("kind") == "storage_overcommitted"
        }
        for st in facts.get("storages") or []:
            counts["storages"] += 1
            counts["overcommitted"] += 1 if st.get("overcommitted") else 0
            if not st.get("severity"):
                continue
            storages.append(
                {
                    "host": name,
                    "key": st["key"],
                    "kind": st.get("kind"),
                    "name": st["name"],
                    "severity": st["severity"],
                    "overcommitted": bool(st.get("overcommitted")),
                    "total_bytes": st.get("total_bytes"),
                    "free_bytes": st.get("free_bytes"),
                    "remaining_growth_bytes": st.get("remaining_growth_bytes"),
                    "headroom_bytes": st.get("headroom_bytes"),
                    "would_pause": list(st.get("would_pause") or []),
                    "would_see_errors": list(st.get("would_see_errors") or []),
                    "would_drop_writes": list(st.get("would_drop_writes") or []),
                    "can_fill_alone": list(st.get("can_fill_alone") or []),
                    "first_to_pause": first.get(st["key"]),
                    "actions": list(st.get("actions") or []),
                    "paused_now": paused_now.get(name, []),
                }
            )
        for r in facts.get("risks") or []:
            by_severity[r["severity"]] = by_severity.get(r["severity"], 0) + 1
            if r.get("kind") == "storage_overcommitted":
                continue
            others.append(
                {
                    "host": name,
                    "kind": r["kind"],
                    "severity": r["severity"],
                    "storage": r.get("storage"),
                    "domains": list(r.get("domains") or []),
                    "summary": r.get("summary") or "",
                    "headroom_bytes": r.get("headroom_bytes"),
                    "actions": list(r.get("actions") or []),
                }
            )
    return _risk_section(counts, by_severity, rows, storages, others)


RISK_COUNT_KEYS = ("hosts", "hosts_forecast", "storages", "overcommitted", "at_risk_domains")


def _risk_section(counts: dict, by_severity: dict, rows: list, storages: list, others: list) -> dict:
    rows.sort(key=lambda r: r["name"])
    storages.sort(key=lambda r: (severity_rank(r["severity"]), r["host"], r["key"]))
    others.sort(key=lambda r: (severity_rank(r["severity"]), r["host"], r["kind"], r["storage"] or "", r["domains"]))
    return {"summary": dict(counts, by_severity=by_severity), "hosts": rows, "storages": storages, "risks": others}


def merge_pause_risks(sections: list) -> dict:
    """One ``pause_risks`` section from those of disjoint slices: ``[(section or None, host names of the slice)]``.

    A slice that ran without the forecast (None) contributes a ``not_forecast`` row per host, so the merged
    section still says which hosts were not forecast; counts add up, rows are sorted as :func:`pause_risks` sorts
    them. The sections are plain data already checked for shape by the caller."""
    counts = dict.fromkeys(RISK_COUNT_KEYS, 0)
    by_severity = dict.fromkeys(SEVERITY_ORDER, 0)
    rows, storages, others = [], [], []
    for section, names in sections:
        if section is None:
            for name in names:
                counts["hosts"] += 1
                rows.append(_not_forecast_row(name, "not forecast: its slice ran without the forecast"))
            continue
        for key in RISK_COUNT_KEYS:
            counts[key] += section["summary"][key]
        for sev, n in section["summary"]["by_severity"].items():
            by_severity[sev] = by_severity.get(sev, 0) + n
        rows += section["hosts"]
        storages += section["storages"]
        others += section["risks"]
    return _risk_section(counts, by_severity, rows, storages, others)


def build_report(results, generated_at: str | None = None, previous=None, risks=None) -> dict:
    """The fleet report (schema version 1) from ``{host: registered kvm_pause_facts result or None}``.

    ``risks``: ``{host: registered kvm_pause_risk result or None}`` when the forecast ran (the report then has
    a ``pause_risks`` section), else None.

    ``previous``: the report read back from the last run's JSON file (parsed, or its text). When it is a
    valid schema 1 report of the same fleet state (same ``state_digest``, and its own content still matches
    its digest), it is returned unchanged, so the files written from it are byte-identical and the role
    reports no change.
    """
    if not isinstance(results, Mapping):
        raise FleetReportError(
            f"the input must be a mapping of host name to the registered kvm_pause_facts result, not a "
            f"{type(results).__name__}"
        )
    results = plain(results)
    if generated_at is None:
        generated_at = utc_now()
    elif not isinstance(generated_at, str) or not generated_at:
        raise FleetReportError(f"generated_at must be an ISO 8601 time string, not {generated_at!r}")
    hosts = [host_entry(name, results[name]) for name in sorted(results)]
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": str(generated_at),
        "summary": _summary(hosts),
        "hosts": hosts,
        "causes": _causes(hosts),
        "drbd": _drbd_rows(hosts),
    }
    if risks is not None:
        if not isinstance(risks, Mapping):
            raise FleetReportError(f"risks must be a mapping of host name to the kvm_pause_risk result, not {risks!r}")
        report["pause_risks"] = pause_risks(plain(risks), hosts)
    report["state_digest"] = state_digest(report)
    if previous:
        prev = _parse_previous(previous)
        if (
            prev is not None
            and prev.get("schema_version") == SCHEMA_VERSION
            and prev.get("state_digest") == report["state_digest"]
            and state_digest(prev) == report["state_digest"]
            and isinstance(prev.get("generated_at"), str)
        ):
            return prev
    return report


def fleet_summary(report, generated_at: str | None = None) -> dict:
    """The ``kvmops_fleet_summary`` artifact (set_stats) of a fleet report."""
    if not isinstance(report, Mapping) or report.get("schema_version") != SCHEMA_VERSION:
        raise FleetReportError("the input must be a fleet report (schema_version 1) made by kvmops.fleet.fleet_report")
    report = plain(report)
    s = report["summary"]
    out = {"schema_version": SCHEMA_VERSION, "generated_at": generated_at or report["generated_at"]}
    for k in COUNT_KEYS:
        out[k] = s.get(k, 0)
    out["by_cause"] = dict(s.get("by_cause") or {})
    out["by_severity"] = dict(s.get("by_severity") or {})
    out["report_generated_at"] = report["generated_at"]
    out["state_digest"] = report.get("state_digest")
    out["unreachable_hosts"] = [h["name"] for h in report["hosts"] if h["status"] == "unreachable"]
    out["libvirt_failed_hosts"] = [h["name"] for h in report["hosts"] if h["status"] == "libvirt_failed"]
    out["not_diagnosed_hosts"] = [h["name"] for h in report["hosts"] if h["status"] == "not_diagnosed"]
    out["incomplete_hosts"] = [h["name"] for h in report["hosts"] if h["status"] == "diagnosed" and not h["complete"]]
    out["safe_to_resume_domains"] = [
        {"host": h["name"], "name": p["name"], "cause": p["cause"]}
        for h in report["hosts"]
        for p in h["paused"]
        if p.get("safe_to_resume")
    ]
    out["pause_risks"] = _risk_summary(report.get("pause_risks"))
    return out


def _risk_summary(section) -> dict | None:
    """The forecast's part of kvmops_fleet_summary, or None when the report has no forecast."""
    if not isinstance(section, Mapping):
        return None
    s = section.get("summary") or {}
    return {
        **{k: s.get(k, 0) for k in RISK_COUNT_KEYS if k != "hosts"},
        "by_severity": dict(s.get("by_severity") or {}),
        "not_forecast_hosts": [h["name"] for h in section.get("hosts") or [] if h.get("status") != "forecast"],
        "overcommitted_storages": [
            {k: st.get(k) for k in ("host", "name", "severity", "would_pause", "would_see_errors")}
            for st in section.get("storages") or []
            if st.get("overcommitted")
        ],
    }
