# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_text import ReportTextError
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_text import (
    fleet_report_text as _fleet_report_text,
)

DOCUMENTATION = r"""
name: fleet_report_text
short_description: The fleet pause report's summary as lines for the console
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Turns a report made by P(kvmops.fleet.fleet_report#filter) into the summary the C(kvmops.fleet.diagnostics)
    role prints once per run.
  - The host counts (diagnosed, unreachable, libvirt failed, not diagnosed, incomplete) at the time of the run, the
    domain counts, one row per cause (severity, cause, count, the C(host/domain) names) in the report's order, a
    line per host that was not diagnosed or whose diagnosis is incomplete, and whether and where the report files
    were written.
  - Runs on the controller.
positional: _input
options:
  _input:
    description: A fleet report (schema version 1).
    type: dict
    required: true
  run_at:
    description:
      - Time of the current run (ISO 8601 UTC), printed on the first line.
    type: str
    required: true
  files:
    description:
      - The report files requested, in the order to list them.
    type: list
    elements: str
    default: []
  written:
    description:
      - The results registered from the tasks that write the report files. Skipped results are ignored.
      - When none is left, the text says that no report file was requested. When any of them is C(changed), the
        files are listed as written (V(would be written) in check mode); otherwise as unchanged since the report's
        RV(kvmops.fleet.fleet_report#filter:_value.generated_at).
    type: list
    elements: dict
    default: []
  check_mode:
    description:
      - Whether the play runs in check mode (pass C(ansible_check_mode)).
    type: bool
    default: false
seealso:
  - plugin: kvmops.fleet.fleet_report
    plugin_type: filter
  - plugin: kvmops.fleet.pause_table
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Write the JSON report
  run_once: true
  delegate_to: localhost
  ansible.builtin.copy:
    content: "{{ fleet_report | ansible.builtin.to_nice_json }}\n"
    dest: /srv/reports/kvm-pause-report.json
    mode: "0644"
  register: written_json

- name: Print the fleet summary
  run_once: true
  ansible.builtin.debug:
    msg: >-
      {{ fleet_report | kvmops.fleet.fleet_report_text(run_at=now(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ'),
                                                       files=['/srv/reports/kvm-pause-report.json'],
                                                       written=[written_json], check_mode=ansible_check_mode) }}
"""

RETURN = r"""
_value:
  description:
    - The summary, one string per line (a host message that holds a newline spans several lines).
  type: list
  elements: str
  sample:
    - "Fleet at 2026-11-26T05:04:39Z: 3 hosts (2 diagnosed, 1 unreachable, 0 libvirt failed, 0 not diagnosed,
      0 incomplete)"
    - "14 domains: 2 paused, 1 crashed, 0 unresponsive, 1 safe to resume"
    - "  critical storage_full           1  hv1/db-1"
    - "  critical crashed                1  hv2/build-7"
    - "  info     user_paused            1  hv1/web-1"
    - "  hv3 unreachable: Failed to connect to the host via ssh: Connection refused"
    - "Report written:"
    - "  /srv/reports/kvm-pause-report.json"
"""


def fleet_report_text(report, run_at, files=None, written=None, check_mode=False):
    try:
        return _fleet_report_text(report, run_at, files=files or [], written=written or [], check_mode=check_mode)
    except ReportTextError as e:
        raise AnsibleFilterError(f"kvmops.fleet.fleet_report_text: {e}") from e


class FilterModule:
    def filters(self):
        return {"fleet_report_text": fleet_report_text}
