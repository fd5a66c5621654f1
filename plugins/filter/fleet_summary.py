# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import COUNT_KEYS, FleetReportError
from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import fleet_summary as _fleet_summary
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_input import ReportInputError, check_report, kind

DOCUMENTATION = r"""
name: fleet_summary
short_description: Condense a fleet pause report into the kvmops_fleet_summary artifact
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Takes a report made by P(kvmops.fleet.fleet_report#filter) and returns the flat summary the
    C(kvmops.fleet.diagnostics) role publishes with M(ansible.builtin.set_stats) as C(kvmops_fleet_summary),
    for AWX workflows and ansible-runner artifacts.
  - "A report that does not have the schema's shape fails the task with an error naming the host and the field, for
    example C(host hv1: paused[0].cause: missing (domain web-01))."
positional: _input
options:
  _input:
    description: A fleet report (schema version 1).
    type: dict
    required: true
  generated_at:
    description:
      - Time of the current run (ISO 8601 UTC).
      - Default is the report's own RV(kvmops.fleet.fleet_report#filter:_value.generated_at), which is older when the
        report was kept from an earlier run with the same fleet state.
    type: str
seealso:
  - plugin: kvmops.fleet.fleet_report
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Publish the summary to AWX
  run_once: true
  ansible.builtin.set_stats:
    data:
      kvmops_fleet_summary: "{{ fleet_report | kvmops.fleet.fleet_summary }}"
    per_host: false
"""

RETURN = r"""
_value:
  description: The fleet summary, schema version 1.
  type: dict
  contains:
    schema_version:
      description: Version of this schema (the report's).
      type: int
      sample: 1
    generated_at:
      description: Time of the run (O(generated_at), else the report's time).
      type: str
      sample: '2026-11-26T05:04:39Z'
    report_generated_at:
      description: The report's own RV(kvmops.fleet.fleet_report#filter:_value.generated_at).
      type: str
      sample: '2026-11-26T04:04:39Z'
    state_digest:
      description:
        - The report's RV(kvmops.fleet.fleet_report#filter:_value.state_digest); equal digests mean an equal fleet
          state.
      type: str
    hosts:
      description: Hosts in the report.
      type: int
    hosts_diagnosed:
      description: Hosts with status V(diagnosed).
      type: int
    hosts_unreachable:
      description: Hosts with status V(unreachable).
      type: int
    hosts_libvirt_failed:
      description: Hosts with status V(libvirt_failed).
      type: int
    hosts_not_diagnosed:
      description: Hosts with status V(not_diagnosed).
      type: int
    hosts_incomplete:
      description: Diagnosed hosts whose diagnosis is incomplete.
      type: int
    domains_total:
      description: Domains on the diagnosed hosts.
      type: int
    running:
      description: Running domains.
      type: int
    paused:
      description: Paused domains.
      type: int
    crashed:
      description: Crashed domains.
      type: int
    unresponsive:
      description: Domains libvirt did not answer for.
      type: int
    safe_to_resume:
      description: Paused or crashed domains safe to resume.
      type: int
    by_cause:
      description: Paused or crashed domains per cause.
      type: dict
      sample: {storage_full: 2, user_paused: 1}
    by_severity:
      description: Paused or crashed domains per severity.
      type: dict
      sample: {critical: 2, warning: 0, info: 1}
    unreachable_hosts:
      description: Names of the unreachable hosts.
      type: list
      elements: str
    libvirt_failed_hosts:
      description: Names of the hosts whose libvirt failed.
      type: list
      elements: str
    not_diagnosed_hosts:
      description: Names of the hosts without a result.
      type: list
      elements: str
    incomplete_hosts:
      description: Names of the diagnosed hosts whose diagnosis is incomplete.
      type: list
      elements: str
    safe_to_resume_domains:
      description: Every domain safe to resume, sorted by host and name.
      type: list
      elements: dict
      contains:
        host:
          description: Inventory host name.
          type: str
        name:
          description: Domain name.
          type: str
        cause:
          description: Its cause.
          type: str
    pause_risks:
      description:
        - The forecast's counts when the run had it (C(diagnostics_forecast)), else null. A gate can stop a workflow
          on C(kvmops_fleet_summary.pause_risks.overcommitted > 0) before any VM pauses.
      type: dict
      returned: always (null without the forecast)
      contains:
        hosts_forecast:
          description: Hosts whose forecast succeeded.
          type: int
        storages:
          description: Storages the running domains' writable disks grow into.
          type: int
        overcommitted:
          description: Storages whose disks can still claim more than is free.
          type: int
        at_risk_domains:
          description: Running domains with at least one risk.
          type: int
        by_severity:
          description: Risks per severity.
          type: dict
        not_forecast_hosts:
          description: Hosts without a forecast (unreachable, failed, skipped or left the play).
          type: list
          elements: str
        overcommitted_storages:
          description: Every overcommitted storage, worst first.
          type: list
          elements: dict
          contains:
            host:
              description: Inventory host name.
              type: str
            name:
              description: The storage (mount point, thin pool, libvirt pool).
              type: str
            severity:
              description: critical, warning or info.
              type: str
            would_pause:
              description: Domains that would pause when it fills (error_policy stop or enospace).
              type: list
              elements: str
            would_see_errors:
              description: Domains whose guests would see write errors instead (error_policy report or ignore).
              type: list
              elements: str
"""


def fleet_summary(report, generated_at=None):
    try:
        check_report(report, COUNT_KEYS)
        if generated_at is not None and not isinstance(generated_at, str):
            raise ReportInputError(f"generated_at: expected an ISO 8601 time string, got {kind(generated_at)}")
        return _fleet_summary(report, generated_at=generated_at)
    except (FleetReportError, ReportInputError) as e:
        raise AnsibleFilterError(f"kvmops.fleet.fleet_summary: {e}") from e


class FilterModule:
    def filters(self):
        return {"fleet_summary": fleet_summary}
