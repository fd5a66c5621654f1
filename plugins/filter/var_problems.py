# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._role_vars import RuleError, problems

DOCUMENTATION = r"""
name: var_problems
short_description: Check variables against ranges, paths, modes and patterns that argument_specs cannot express
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - "Returns one sentence per variable that breaks its rule, naming the variable, its value (hidden for a rule with
    C(secret=true)) and what is allowed, for example
    C(diagnostics_timeout: -1 is out of range; allowed: a number above 0 and at most 3600 (seconds ...)).
    An empty list means every variable is fine."
  - The roles of this collection call it first, in their C(validate.yml) pre-flight task (an M(ansible.builtin.assert)
    on the controller), with the rules of their C(vars/main.yml), so bad input fails before any change.
  - "Rule kinds: C(int) and C(float) (C(min), C(above), C(max); text of a number is accepted, as argument_specs
    accepts it; bools, NaN and infinities are not), C(path) (C(absolute)), C(mode) (four octal digits with a leading
    0, C(deny) the bits that must be clear; an unquoted YAML 0660 is the number 432 and is refused with that hint),
    C(str) (C(pattern) the whole value must match, C(pattern_text), C(max_length)), C(list) (C(elements),
    C(max_items)), C(dict) (C(keys), C(values), C(max_items)), C(conf_value) (a value of a libvirt configuration
    file). Every rule takes C(why) (added to the message) and C(secret)."
  - Runs on the controller.
positional: _input
options:
  _input:
    description: Variable name to value.
    type: dict
    required: true
  rules:
    description:
      - Variable name to its rule, a mapping with C(kind) and the keys of that kind. A variable of O(_input) without a
        rule is an error (a rule forgotten in the role).
    type: dict
    required: true
seealso:
  - plugin: kvmops.fleet.fleet_report
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Refuse out-of-range variables before any change
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
    quiet: true
  vars:
    problems: >-
      {{ {'my_port': my_port, 'my_dir': my_dir, 'my_timeout': my_timeout}
         | kvmops.fleet.var_problems({'my_port': {'kind': 'int', 'min': 1, 'max': 65535, 'why': 'a TCP port'},
                                      'my_dir': {'kind': 'path', 'absolute': true},
                                      'my_timeout': {'kind': 'float', 'above': 0, 'max': 3600}}) }}
"""

RETURN = r"""
_value:
  description: One sentence per variable that breaks its rule, sorted by variable name; empty when all are fine.
  type: list
  elements: str
  sample:
    - "my_port: 70000 is out of range; allowed: an integer at least 1 and at most 65535 (a TCP port)"
"""


def var_problems(values, rules):
    try:
        return problems(values, rules)
    except RuleError as e:
        raise AnsibleFilterError(f"kvmops.fleet.var_problems: {e}") from e


class FilterModule:
    def filters(self):
        return {"var_problems": var_problems}
