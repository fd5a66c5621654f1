# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: a kvm_pause report and the previous run's state -> Prometheus text format and the new state.

Used by the host collector (kvmops-pause-collector, installed by the diagnostics role's ``collector``
entry point), which runs the same ``pause._collect_io.collect()`` as kvm_pause_facts every N seconds and writes
the text for node_exporter's textfile collector. No I/O here: the caller reads and writes the state
file and passes the clock.

The state keeps what one run cannot know by itself:

* ``paused``: per paused domain (by UUID, else name), since when it has been paused. libvirt keeps no
  pause timestamp; the report's ``paused_since`` is the mtime of libvirtd's status file (rewritten on
  every state change) or the start of the job in flight. A pause that continues (same state and reason
  as in the previous run) keeps the earliest ``since`` seen, so the duration survives status file
  rewrites and collector restarts. A domain seen paused for the first time counts one pause.
* ``pauses``: the pause counters (domain, cause), kept until ``retention`` seconds after the last pause.
* ``last_success``: when the last complete collection ended.

A run without a report (libvirt refused the connection, the program failed) or an incomplete report
(libvirt did not answer everything in time) never forgets a pause: domains the report does not show are
carried over in the state (not exported) until a complete report says they are no longer paused.
"""

from __future__ import annotations

import calendar
import math
import time

STATE_VERSION = 1
DOMAIN_STATES = ("running", "paused", "crashed", "shutoff", "other")
DEFAULT_RETENTION = 7 * 24 * 3600.0
TEXTFILE_NAME = "kvmops_pause.prom"

# name -> (type, help); the order here is the order of the output
METRICS = (
    (
        "kvmops_collector_success",
        "gauge",
        "1 if the last run collected a complete report from libvirt within its timeout, else 0.",
    ),
    (
        "kvmops_collector_last_run_timestamp_seconds",
        "gauge",
        "Unix time the last run of kvmops-pause-collector ended.",
    ),
    (
        "kvmops_collector_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last run with kvmops_collector_success 1 (0: never).",
    ),
    ("kvmops_collector_duration_seconds", "gauge", "Wall time of the last run's collection."),
    (
        "kvmops_collector_errors",
        "gauge",
        "Number of errors of the last run (libvirt timeouts, refused connections); details in the journal.",
    ),
    ("kvmops_collector_interval_seconds", "gauge", "Seconds between two runs of the collector (its systemd timer)."),
    (
        "kvmops_collector_stale_threshold_seconds",
        "gauge",
        "Alert KvmopsCollectorStale fires once the last success is at least this old.",
    ),
    (
        "kvmops_paused_alert_threshold_seconds",
        "gauge",
        "Alert KvmopsDomainPausedTooLong fires once a domain has been paused for at least this long.",
    ),
    ("kvmops_domains", "gauge", "Domains of this host by state (the domains the collector looks at)."),
    (
        "kvmops_domains_unresponsive",
        "gauge",
        "Paused or crashed domains libvirt did not answer for (blocked in a job); known from status files.",
    ),
    (
        "kvmops_domains_safe_to_resume",
        "gauge",
        "Paused domains whose diagnosis says resuming is safe now.",
    ),
    (
        "kvmops_paused_domains",
        "gauge",
        "Paused and crashed domains by state, libvirt reason and diagnosed cause.",
    ),
    (
        "kvmops_domain_paused_info",
        "gauge",
        "One series per paused or crashed domain carrying its diagnosis as labels; the value is always 1.",
    ),
    (
        "kvmops_domain_paused_since_timestamp_seconds",
        "gauge",
        "Unix time since when the domain has been paused (earliest evidence, kept across runs).",
    ),
    (
        "kvmops_domain_disk_error",
        "gauge",
        "1 for each disk of a paused domain with a libvirt disk error (error: no_space or unspecified).",
    ),
    (
        "kvmops_storage_unresponsive",
        "gauge",
        "1 per storage under this host's domains that did not answer (dead hard NFS mount, hung FUSE daemon, "
        "block device whose I/O hangs); the value of _domains is how many domains have disks on it.",
    ),
    (
        "kvmops_storage_unresponsive_domains",
        "gauge",
        "Domains (paused, crashed or running) with a disk on a storage that did not answer.",
    ),
    (
        "kvmops_domain_storage_unresponsive",
        "gauge",
        "1 per domain and storage that did not answer under its disks (running domains there are at risk).",
    ),
    (
        "kvmops_domain_pauses_total",
        "counter",
        "Pauses of a domain seen by the collector, by diagnosed cause (a pause is counted once, when first seen).",
    ),
    # DRBD, only on hosts where the DRBD module is loaded (the report's "drbd", drbd_facts' shape)
    (
        "kvmops_drbd_resource_verdict",
        "gauge",
        "1 for the DRBD resource's current verdict (split-brain, diskless, no-quorum, suspended, disconnected, "
        "degraded, syncing, healthy), 0 for the others.",
    ),
    ("kvmops_drbd_resource_role", "gauge", "1 per DRBD resource with its role on this host as a label."),
    (
        "kvmops_drbd_volume_disk_state",
        "gauge",
        "1 per DRBD volume with this host's disk state as a label (UpToDate, Diskless, Inconsistent, ...).",
    ),
    (
        "kvmops_drbd_peer_connection_state",
        "gauge",
        "1 per DRBD resource and peer with the connection state, the peer's role and disk state as labels.",
    ),
    ("kvmops_drbd_out_of_sync_bytes", "gauge", "Bytes of the DRBD resource its peers lack (the most of any peer)."),
    (
        "kvmops_drbd_split_brain",
        "gauge",
        "1 when the DRBD resource is in split brain (seen in the kernel log, connection dropped), else 0.",
    ),
    ("kvmops_drbd_errors", "gauge", "DRBD state this run could not read (a drbdsetup or dmesg that failed)."),
)
METRIC_NAMES = tuple(m[0] for m in METRICS)


def escape_label(value) -> str:
    """Label value escaping of the text format: backslash, double quote, line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def fmt_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 3))


def sample(name: str, labels: dict | None, value) -> str:
    if labels:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {fmt_value(value)}"
    return f"{name} {fmt_value(value)}"


def parse_iso(text) -> float | None:
    """'2026-11-26T08:00:00Z' (the report's format) -> Unix time; anything else -> None."""
    if not text or not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _number(value, default=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def clean_state(state) -> dict:
    """Whatever the state file held -> a state of the current shape (unknown or broken parts dropped)."""
    out = {"version": STATE_VERSION, "last_success": None, "last_run": None, "paused": {}, "pauses": []}
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return out
    out["last_success"] = _number(state.get("last_success"))
    out["last_run"] = _number(state.get("last_run"))
    paused = state.get("paused")
    if isinstance(paused, dict):
        for key, entry in paused.items():
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and _number(entry.get("since")) is not None
            ):
                out["paused"][str(key)] = dict(entry, since=float(entry["since"]))
    pauses = state.get("pauses")
    if isinstance(pauses, list):
        for entry in pauses:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("domain"), str)
                and isinstance(entry.get("cause"), str)
                and _number(entry.get("count")) is not None
            ):
                out["pauses"].append(
                    {
                        "domain": entry["domain"],
                        "cause": entry["cause"],
                        "count": int(entry["count"]),
                        "last": _number(entry.get("last"), 0.0),
                    }
                )
    return out


def domain_key(entry: dict) -> str:
    return entry.get("uuid") or entry["name"]


def update_state(report, state, now: float, retention: float = DEFAULT_RETENTION) -> dict:
    """The new state after a run; ``report`` is the kvm_pause facts dict, or None when the run failed."""
    prev = clean_state(state)
    new = {
        "version": STATE_VERSION,
        "last_success": prev["last_success"],
        "last_run": now,
        "paused": {},
        "pauses": [],
    }
    counters = {(p["domain"], p["cause"]): dict(p) for p in prev["pauses"]}
    if report is None:
        new["paused"] = prev["paused"]
    else:
        for entry in report.get("paused") or []:
            key = domain_key(entry)
            old = prev["paused"].get(key)
            evidence = parse_iso(entry.get("paused_since"))
            if evidence is not None and evidence > now:
                evidence = now  # clock skew between libvirtd's files and this run: never in the future
            continuing = (
                old is not None and old.get("state") == entry.get("state") and old.get("reason") == entry.get("reason")
            )
            if continuing:
                since = min(old["since"], evidence) if evidence is not None else old["since"]
                first_cause = old.get("counted_cause") or entry.get("cause")
            else:
                since = evidence if evidence is not None else now
                first_cause = entry.get("cause") or "unknown"
                counter = counters.setdefault(
                    (entry["name"], first_cause), {"domain": entry["name"], "cause": first_cause, "count": 0}
                )
                counter["count"] += 1
            counter = counters.get((entry["name"], first_cause))
            if counter is not None:
                counter["last"] = now
            new["paused"][key] = {
                "name": entry["name"],
                "uuid": entry.get("uuid"),
                "state": entry.get("state"),
                "reason": entry.get("reason"),
                "cause": entry.get("cause"),
                "since": since,
                "counted_cause": first_cause,
                "last_seen": now,
            }
        if not report.get("complete"):
            for key, old in prev["paused"].items():
                new["paused"].setdefault(key, old)
        else:
            new["last_success"] = now
    for counter in counters.values():
        if now - (counter.get("last") or 0.0) <= retention:
            new["pauses"].append(counter)
    new["pauses"].sort(key=lambda c: (c["domain"], c["cause"]))
    return new


# every verdict drbd/_status can give, worst first (kept here: this module imports nothing)
DRBD_VERDICTS = ("split-brain", "diskless", "no-quorum", "suspended", "disconnected", "degraded", "syncing", "healthy")


def drbd_samples(drbd, fams: dict) -> None:
    """The DRBD families from the report's ``drbd`` (absent where the DRBD module is not loaded: no sample)."""
    if not drbd or not drbd.get("loaded"):
        return
    fams["kvmops_drbd_errors"].append((None, len(drbd.get("errors") or [])))
    for r in sorted(drbd.get("resources") or [], key=lambda r: str(r.get("name"))):
        res = {"resource": str(r.get("name") or "")}
        for verdict in DRBD_VERDICTS:
            fams["kvmops_drbd_resource_verdict"].append((dict(res, verdict=verdict), r.get("verdict") == verdict))
        fams["kvmops_drbd_resource_role"].append((dict(res, role=r.get("role") or "Unknown"), 1))
        for v in r.get("volumes") or []:
            fams["kvmops_drbd_volume_disk_state"].append(
                (
                    dict(
                        res,
                        volume=str(v.get("volume")),
                        minor=str(v.get("minor")),
                        disk_state=v.get("disk_state") or "Unknown",
                    ),
                    1,
                )
            )
        for p in r.get("peers") or []:
            fams["kvmops_drbd_peer_connection_state"].append(
                (
                    dict(
                        res,
                        peer=str(p.get("name") or p.get("address") or ""),
                        connection_state=p.get("connection_state") or "Unknown",
                        peer_role=p.get("role") or "Unknown",
                        peer_disk_state="/".join(str(pv.get("disk_state")) for pv in p.get("volumes") or []),
                    ),
                    1,
                )
            )
        if r.get("out_of_sync_bytes") is not None:
            fams["kvmops_drbd_out_of_sync_bytes"].append((res, int(r["out_of_sync_bytes"])))
        fams["kvmops_drbd_split_brain"].append((res, bool((r.get("split_brain") or {}).get("detected"))))


def render(
    report,
    state,
    *,
    now: float,
    duration: float,
    interval: float,
    paused_alert_seconds: float,
    stale_alert_seconds: float,
    errors=None,
    retention: float = DEFAULT_RETENTION,
):
    """Return ``(text, new_state)``.

    ``report``: ``ansible_facts.kvm_pause`` as ``pause._collect_io.collect()`` returns it, or None when the run
    got none (``errors`` then says why). The text is complete Prometheus text format (HELP and TYPE for
    every family that has samples), sorted, ending in a newline.
    """
    new_state = update_state(report, state, now, retention)
    success = report is not None and bool(report.get("complete"))
    n_errors = len(errors or []) + (len(report.get("errors") or []) if report is not None else 0)
    if report is None and not n_errors:
        n_errors = 1
    fams = {name: [] for name in METRIC_NAMES}
    fams["kvmops_collector_success"].append((None, success))
    fams["kvmops_collector_last_run_timestamp_seconds"].append((None, now))
    fams["kvmops_collector_last_success_timestamp_seconds"].append((None, new_state["last_success"] or 0))
    fams["kvmops_collector_duration_seconds"].append((None, duration))
    fams["kvmops_collector_errors"].append((None, n_errors))
    fams["kvmops_collector_interval_seconds"].append((None, interval))
    fams["kvmops_collector_stale_threshold_seconds"].append((None, stale_alert_seconds))
    fams["kvmops_paused_alert_threshold_seconds"].append((None, paused_alert_seconds))
    if report is not None:
        summary = report.get("summary") or {}
        for st in DOMAIN_STATES:
            fams["kvmops_domains"].append(({"state": st}, int(summary.get(st) or 0)))
        fams["kvmops_domains_unresponsive"].append((None, int(summary.get("unresponsive") or 0)))
        fams["kvmops_domains_safe_to_resume"].append((None, int(summary.get("safe_to_resume") or 0)))
        groups = {}
        for entry in sorted(report.get("paused") or [], key=lambda e: (e["name"], e.get("uuid") or "")):
            group = (entry.get("state") or "paused", entry.get("reason") or "unknown", entry.get("cause") or "unknown")
            groups[group] = groups.get(group, 0) + 1
            ident = {"domain": entry["name"], "uuid": entry.get("uuid") or ""}
            fams["kvmops_domain_paused_info"].append(
                (
                    dict(
                        ident,
                        state=group[0],
                        reason=group[1],
                        cause=group[2],
                        severity=entry.get("severity") or "warning",
                        safe_to_resume=str(bool(entry.get("safe_to_resume"))).lower(),
                        responsive=str(bool(entry.get("responsive", True))).lower(),
                    ),
                    1,
                )
            )
            fams["kvmops_domain_paused_since_timestamp_seconds"].append(
                (ident, new_state["paused"][domain_key(entry)]["since"])
            )
            for disk in entry.get("disks") or []:
                if disk.get("error_code"):
                    fams["kvmops_domain_disk_error"].append(
                        (dict(ident, disk=disk.get("target") or "", error=disk.get("error") or "unspecified"), 1)
                    )
        for dead in report.get("storage_unresponsive") or []:
            where = {
                "kind": dead.get("kind") or "mount",
                "mount_point": dead.get("mount_point") or "",
                "fstype": dead.get("fstype") or "",
                "source": dead.get("source") or "",
            }
            fams["kvmops_storage_unresponsive"].append((where, 1))
            fams["kvmops_storage_unresponsive_domains"].append((where, len(dead.get("domains") or [])))
            for d in dead.get("domains") or []:
                fams["kvmops_domain_storage_unresponsive"].append(
                    (
                        {
                            "domain": d.get("name") or "",
                            "state": d.get("state") or "",
                            "mount_point": where["mount_point"],
                            "source": where["source"],
                        },
                        1,
                    )
                )
        for (st, reason, cause), count in sorted(groups.items()):
            fams["kvmops_paused_domains"].append(({"state": st, "reason": reason, "cause": cause}, count))
        drbd_samples(report.get("drbd"), fams)
    for counter in new_state["pauses"]:
        fams["kvmops_domain_pauses_total"].append(
            ({"domain": counter["domain"], "cause": counter["cause"]}, counter["count"])
        )
    lines = []
    for name, mtype, help_text in METRICS:
        if not fams[name]:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {mtype}")
        lines.extend(sample(name, labels, value) for labels, value in fams[name])
    return "\n".join(lines) + "\n", new_state
