# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_render import ReportRenderError, render_report

DOCUMENTATION = r"""
name: fleet_report_render
short_description: Render a fleet pause report page (Markdown or HTML) from one of the diagnostics role's templates
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Renders the page of a report made by P(kvmops.fleet.fleet_report#filter) from a Jinja2 template file, in this
    process and on plain data, and returns the text for O(ansible.builtin.copy#module:content).
  - "Why not M(ansible.builtin.template): a 1,000-domain fleet of 100 hosts makes pages of 10 to 23 MB, and every
    value the template module reads goes through the controller's templating of task variables; this filter reads the
    same template with Jinja2 directly. The output is byte for byte what M(ansible.builtin.template) writes (its
    defaults: O(ansible.builtin.template#module:trim_blocks=true), no trailing newline kept), which the collection's
    tests check on the role's own templates."
  - The template sees the report as C(__diagnostics_report) and the names in O(variables); the Ansible filters it may
    use are C(regex_replace) and C(hash) (SHA-1, SHA-256) beside Jinja2's own. Anything else undefined fails with the
    template's name and line.
positional: _input, template
options:
  _input:
    description: A fleet report (schema version 1).
    type: dict
    required: true
  template:
    description: Path of the Jinja2 template file, for example C({{ role_path }}/templates/kvm-pause-report.md.j2).
    type: path
    required: true
  variables:
    description: More names the template reads (for example C(diagnostics_report_formats)).
    type: dict
    default: {}
seealso:
  - plugin: kvmops.fleet.fleet_report
    plugin_type: filter
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Write the Markdown report
  ansible.builtin.copy:
    content: "{{ fleet_report | kvmops.fleet.fleet_report_render(role_path ~ '/templates/kvm-pause-report.md.j2') }}"
    dest: /var/tmp/kvm-pause-report.md
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The rendered page.
  type: str
"""


def fleet_report_render(report, template, variables=None):
    if not isinstance(report, dict):
        raise AnsibleFilterError(
            f"fleet_report_render: the input must be a fleet report (a dict), not {type(report).__name__}"
        )
    if not isinstance(template, str) or not template:
        raise AnsibleFilterError("fleet_report_render: template must be the path of a template file")
    if variables is not None and not isinstance(variables, dict):
        raise AnsibleFilterError(f"fleet_report_render: variables must be a dict, not {type(variables).__name__}")
    try:
        return render_report(report, template, variables or {})
    except ReportRenderError as e:
        raise AnsibleFilterError(f"fleet_report_render: {e}") from e


class FilterModule:
    def filters(self):
        return {"fleet_report_render": fleet_report_render}
