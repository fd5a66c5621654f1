# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils import _fleet_report as fr
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_input import (
    ReportInputError,
    check,
    check_report,
    kind,
)

DOCUMENTATION = r"""
name: fleet_merge
short_description: Merge the fleet pause reports of job slices into one fleet report
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Takes the fleet reports written by the slices of one sliced job (AWX job slicing, or any split of the
    inventory into disjoint parts), each made by P(kvmops.fleet.fleet_report#filter), and returns the one fleet
    report of the whole fleet, as if one job had diagnosed every host. Its summary, causes, DRBD table and
    state digest are computed again over all hosts; P(kvmops.fleet.fleet_summary#filter) of the result is the
    merged C(kvmops_fleet_summary).
  - Each report may be given parsed or as the text of its JSON file.
  - A host in two reports (slices that overlap), a report of another schema version or one without the
    schema's shape fails the task with an error naming the report and the field.
  - "Forecast sections (C(pause_risks)) merge too: counts add up, rows are sorted as in one report, and the hosts of
    a slice that ran without the forecast are listed as not forecast."
positional: _input
options:
  _input:
    description: The slices' fleet reports (schema version 1), at least one.
    type: list
    elements: raw
    required: true
  generated_at:
    description:
      - Time of the merge (ISO 8601 UTC). Default is the latest RV(kvmops.fleet.fleet_report#filter:_value.generated_at)
        of the reports.
    type: str
seealso:
  - plugin: kvmops.fleet.fleet_report
    plugin_type: filter
  - plugin: kvmops.fleet.fleet_summary
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Merge the slices' reports
  ansible.builtin.set_fact:
    merged: >-
      {{ slice_files | map('ansible.builtin.file') | list | kvmops.fleet.fleet_merge }}

- name: Publish the merged summary to AWX
  ansible.builtin.set_stats:
    data:
      kvmops_fleet_summary: "{{ merged | kvmops.fleet.fleet_summary }}"
    per_host: false
"""

RETURN = r"""
_value:
  description: One fleet report (schema version 1) over the hosts of every report, sorted by name.
  type: dict
"""


def merge_reports(reports, generated_at=None) -> dict:
    """One fleet report from the fleet reports of disjoint slices. Raises ReportInputError."""
    if not isinstance(reports, (list, tuple)) or not reports:
        raise ReportInputError(f"the input must be a non-empty list of fleet reports, not {kind(reports)}")
    if generated_at is not None and (not isinstance(generated_at, str) or not generated_at):
        raise ReportInputError(f"generated_at: expected an ISO 8601 time string, got {kind(generated_at)}")
    parsed, owner, hosts = [], {}, []
    for i, given in enumerate(reports):
        report = given
        if isinstance(given, (str, bytes)):
            try:
                report = json.loads(given)
            except ValueError as e:
                raise ReportInputError(f"report {i}: not JSON ({e})") from None
        try:
            check_report(report, fr.COUNT_KEYS)
        except ReportInputError as e:
            raise ReportInputError(f"report {i}: {e}") from None
        if report.get("pause_risks") is not None:
            _check_risk_section(report["pause_risks"], i)
        report = fr.plain(report)
        for host in report["hosts"]:
            if host["name"] in owner:
                raise ReportInputError(
                    f"report {i}: host {host['name']} is also in report {owner[host['name']]}: the slices overlap"
                )
            owner[host["name"]] = i
            hosts.append(host)
        parsed.append(report)
    hosts.sort(key=lambda h: h["name"])
    merged = {
        "schema_version": fr.SCHEMA_VERSION,
        "generated_at": generated_at or max(r["generated_at"] for r in parsed),
        "summary": fr._summary(hosts),
        "hosts": hosts,
        "causes": fr._causes(hosts),
        "drbd": fr._drbd_rows(hosts),
    }
    if any(r.get("pause_risks") is not None for r in parsed):
        merged["pause_risks"] = fr.merge_pause_risks(
            [(r.get("pause_risks"), [h["name"] for h in r["hosts"]]) for r in parsed]
        )
    merged["state_digest"] = fr.state_digest(merged)
    return merged


# What merge_pause_risks reads of a slice's forecast section, in the shape language of _report_input.check.
PAUSE_RISKS = {
    "summary": {**dict.fromkeys(fr.RISK_COUNT_KEYS, "int"), "by_severity": ("map", "int")},
    "hosts": [{"name": "str"}],
    "storages": [{"host": "str", "key": "str", "severity": "str"}],
    "risks": [{"host": "str", "kind": "str", "severity": "str", "storage": "str?", "domains": ["str"]}],
}


def _check_risk_section(section, i: int) -> None:
    """The forecast section of slice report ``i`` has the shape the merge reads, or ReportInputError names the field."""
    where = f"report {i}: pause_risks"
    check(section, PAUSE_RISKS, where)
    counts = [(f"summary.{key}", section["summary"][key]) for key in fr.RISK_COUNT_KEYS]
    counts += [(f"summary.by_severity.{sev}", n) for sev, n in section["summary"]["by_severity"].items()]
    for field, n in counts:
        if n < 0:
            raise ReportInputError(f"{where}.{field}: expected a count (an integer >= 0), got {n}")
    for part in ("storages", "risks"):
        for j, row in enumerate(section[part]):
            if row["severity"] not in fr.SEVERITY_ORDER:
                raise ReportInputError(
                    f"{where}.{part}[{j}].severity: {row['severity']!r} is not one of {', '.join(fr.SEVERITY_ORDER)}"
                )


def fleet_merge(reports, generated_at=None):
    try:
        return merge_reports(reports, generated_at=generated_at)
    except (fr.FleetReportError, ReportInputError) as e:
        raise AnsibleFilterError(f"kvmops.fleet.fleet_merge: {e}") from e


class FilterModule:
    def filters(self):
        return {"fleet_merge": fleet_merge}
