# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The diagnostics role's console text: one host's per-VM table and the fleet summary. Controller side, pure.

``pause_table`` turns one host's ``ansible_facts.kvm_pause`` into the lines the role prints per host (a row per
paused or crashed domain, why resuming is or is not safe, the remediation steps, the host's counts);
``fleet_report_text`` turns a fleet report (``_fleet_report.build_report``) into the summary printed once per run
(fleet counts, one line per cause, hosts that were not fully diagnosed, where the report files are).

Both return a list of lines, as ``ansible.builtin.debug`` prints a list one item per line. A value that itself
holds a newline (a host's message, say) becomes several lines, as it did when the role built the text in Jinja.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import COUNT_KEYS


def _row(name, cause, severity, safe, paused, summary) -> str:
    """A row of the per-VM table (the header too): name, cause, severity, safe, paused padded to their columns."""
    return f"{name!s:<28} {cause!s:<20} {severity!s:<8} {safe!s:<5} {paused!s:>8}  {summary!s}"


HOST_COUNTS = ("total", "running", "paused", "crashed", "unresponsive", "safe_to_resume")
# the fleet summary's counts, as the report builder names them ("running" is not printed)
FLEET_COUNTS = tuple(key for key in COUNT_KEYS if key != "running")


class ReportTextError(ValueError):
    """Input the text cannot be made from; the message names what is missing."""


def _get(mapping, key, what):
    if not isinstance(mapping, Mapping):
        raise ReportTextError(f"{what} must be a mapping, got {type(mapping).__name__}")
    try:
        return mapping[key]
    except KeyError:
        raise ReportTextError(f"{what} has no {key!r}") from None


def _seconds(value) -> int:
    """Whole seconds, as Jinja's ``int`` filter makes them (a float is truncated; anything else is 0)."""
    try:
        if isinstance(value, str):
            return int(value, 10)
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _lines(text: str) -> list[str]:
    return text.split("\n")


def pause_table(facts) -> list[str]:
    """One host's ``kvm_pause`` facts -> the per-VM table and the host's counts, one string per line."""
    summary = _get(facts, "summary", "kvm_pause")
    counts = [int(_get(summary, key, "kvm_pause.summary")) for key in HOST_COUNTS]
    out = [_row("VM", "CAUSE", "SEVERITY", "SAFE", "PAUSED", "SUMMARY")]
    for vm in _get(facts, "paused", "kvm_pause") or []:
        seconds = _get(vm, "paused_for_seconds", "a paused entry")
        out.append(
            _row(
                _get(vm, "name", "a paused entry"),
                _get(vm, "cause", "a paused entry"),
                _get(vm, "severity", "a paused entry"),
                "yes" if _get(vm, "safe_to_resume", "a paused entry") else "NO",
                f"{_seconds(seconds)}s" if seconds is not None else "?",
                _get(vm, "summary", "a paused entry"),
            )
        )
        out.append(f"    safe to resume: {_get(vm, 'safe_to_resume_reason', 'a paused entry')!s}")
        out.extend(f"    -> {step!s}" for step in _get(vm, "remediation", "a paused entry") or [])
    incomplete = ""
    if not _get(facts, "complete", "kvm_pause"):
        incomplete = " (INCOMPLETE: " + "; ".join(str(e) for e in facts.get("errors") or []) + ")"
    total, running, paused, crashed, unresponsive, safe = counts
    out.append(
        f"{total} domains: {running} running, {paused} paused, {crashed} crashed, {unresponsive} unresponsive, "
        f"{safe} safe to resume{incomplete}"
    )
    return _lines("\n".join(out))


def _plural(count) -> str:
    return "" if count == 1 else "s"


def _risk_lines(section) -> list[str]:
    """The forecast's lines: its counts, each storage at risk and each other risk, worst first."""
    if not isinstance(section, Mapping):
        return []
    n = _get(section, "summary", "the report's pause_risks")
    out = [
        f"Pause risks: {int(n['overcommitted'])} overcommitted of {int(n['storages'])} "
        f"storage{_plural(n['storages'])}, "
        f"{int(n['at_risk_domains'])} domain{_plural(n['at_risk_domains'])} at risk on {int(n['hosts_forecast'])} of "
        f"{int(n['hosts'])} host{_plural(n['hosts'])}"
    ]
    for st in _get(section, "storages", "the report's pause_risks"):
        who = []
        if st["would_pause"]:
            who.append("would pause: " + ", ".join(st["would_pause"]))
        if st["would_see_errors"]:
            who.append("write errors: " + ", ".join(st["would_see_errors"]))
        if st["would_drop_writes"]:
            who.append("writes dropped: " + ", ".join(st["would_drop_writes"]))
        out.append(f"  {st['severity']!s:<8} {st['host']!s} {st['name']!s}: " + "; ".join(who or ["no domain"]))
    out.extend(
        f"  {r['severity']!s:<8} {r['host']!s} {r['kind']!s}: {', '.join(r['domains'])}"
        for r in _get(section, "risks", "the report's pause_risks")
    )
    out.extend(
        f"  {h['name']!s} forecast {h['status'] if h['status'] != 'forecast' else 'incomplete'!s}: {h['message']!s}"
        for h in _get(section, "hosts", "the report's pause_risks")
        if h["status"] != "forecast" or not h["complete"]
    )
    return out


def fleet_report_text(report, run_at, files: Sequence[str] = (), written: Sequence = (), check_mode=False):
    """A fleet report -> the run's summary lines.

    ``run_at``: the run's time; ``files``: the report files requested, in order (empty: none requested);
    ``written``: the registered results of the tasks that wrote them (skipped ones are ignored; any
    ``changed`` one means the files were (or, in check mode, would be) written).
    """
    s = _get(report, "summary", "the fleet report")
    n = {key: int(_get(s, key, "the report's summary")) for key in FLEET_COUNTS}
    out = [
        f"Fleet at {run_at!s}: {n['hosts']} host{_plural(n['hosts'])} ({n['hosts_diagnosed']} diagnosed, "
        f"{n['hosts_unreachable']} unreachable, {n['hosts_libvirt_failed']} libvirt failed, "
        f"{n['hosts_not_diagnosed']} not diagnosed, {n['hosts_incomplete']} incomplete)",
        f"{n['domains_total']} domain{_plural(n['domains_total'])}: {n['paused']} paused, {n['crashed']} crashed, "
        f"{n['unresponsive']} unresponsive, {n['safe_to_resume']} safe to resume",
    ]
    for c in _get(report, "causes", "the fleet report"):
        domains = ", ".join(f"{d['host']!s}/{d['name']!s}" for d in _get(c, "domains", "a cause"))
        out.append(f"  {c['severity']!s:<8} {c['cause']!s:<20} {int(c['count']):>3}  {domains}")
    drbd = report.get("drbd") or []
    if drbd:
        verdicts: dict = {}
        for r in drbd:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        out.append(
            f"DRBD: {len(drbd)} resource{_plural(len(drbd))} ("
            + ", ".join(f"{count} {verdict!s}" for verdict, count in verdicts.items())
            + ")"
        )
        out.extend(
            f"  DRBD {r['verdict']!s:<12} {r['host']!s}/{r['name']!s}: {r['summary']!s}"
            for r in drbd
            if r["verdict"] != "healthy"
        )
    out.extend(_risk_lines(report.get("pause_risks")))
    for h in _get(report, "hosts", "the fleet report"):
        if h["status"] == "diagnosed" and h["complete"]:
            continue
        if h["status"] == "diagnosed":
            out.append(f"  {h['name']!s} {h['message']!s}")
        else:
            out.append(f"  {h['name']!s} {h['status']!s}: {h['message']!s}")
    writes = [w for w in written or [] if not (isinstance(w, Mapping) and "skipped" in w)]
    if not writes:
        out.append("No report file requested (diagnostics_report_formats is empty).")
    else:
        if any(isinstance(w, Mapping) and w.get("changed") for w in writes):
            state = "would be written" if check_mode else "written"
        else:
            first_seen = _get(report, "generated_at", "the fleet report")
            state = f"unchanged, the fleet state is the one first seen at {first_seen!s}"
        out.append(f"Report {state}:")
        out.extend(f"  {f!s}" for f in files or [])
    return _lines("\n".join(out).strip())
