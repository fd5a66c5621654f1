# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_text import ReportTextError
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_text import pause_table as _pause_table

DOCUMENTATION = r"""
name: pause_table
short_description: One host's pause diagnosis as a table for the console
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Turns one host's RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause) into the lines the
    C(kvmops.fleet.diagnostics) role prints per host.
  - A header, then for every paused or crashed domain a row (name, cause, severity, C(yes) or C(NO) for safe to
    resume, how long it has been paused or C(?), the one-line summary), a line with why resuming is or is not safe,
    and a line per remediation step; last, the host's counts, with C(INCOMPLETE:) and the errors when the
    diagnosis did not finish within its timeout.
  - Columns are padded to fixed widths (28, 20, 8, 5 and 8 characters); longer values push the row wider.
  - Runs on the controller.
positional: _input
options:
  _input:
    description:
      - The C(kvm_pause) facts of one host, as returned by M(kvmops.fleet.kvm_pause_facts).
    type: dict
    required: true
seealso:
  - module: kvmops.fleet.kvm_pause_facts
  - plugin: kvmops.fleet.fleet_report_text
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Diagnose the host
  kvmops.fleet.kvm_pause_facts:

- name: Print the per-VM table
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kvm_pause | kvmops.fleet.pause_table }}"

# TASK [Print the per-VM table] *************************************************
# ok: [hv1] => {
#     "msg": [
#         "VM                           CAUSE                SEVERITY SAFE    PAUSED  SUMMARY",
#         "web-1                        user_paused          info     yes        31s  paused by a user ...",
#         "    safe to resume: nothing on the host prevents it",
#         "12 domains: 10 running, 1 paused, 0 crashed, 0 unresponsive, 1 safe to resume"
#     ]
# }
"""

RETURN = r"""
_value:
  description:
    - The table, one string per line (a value that itself holds a newline spans several lines).
  type: list
  elements: str
  sample:
    - "VM                           CAUSE                SEVERITY SAFE    PAUSED  SUMMARY"
    - "vm1                          storage_full         critical NO         25s  disk vda ran out of space on /srv"
    - "    safe to resume: the storage is still full: resuming would pause the domain again at once"
    - "    -> /srv is full for QEMU (0 B available of 17.4 MiB): free space or grow it, then resume."
    - "3 domains: 2 running, 1 paused, 0 crashed, 0 unresponsive, 0 safe to resume"
"""


def pause_table(facts):
    try:
        return _pause_table(facts)
    except ReportTextError as e:
        raise AnsibleFilterError(f"kvmops.fleet.pause_table: {e}") from e


class FilterModule:
    def filters(self):
        return {"pause_table": pause_table}
