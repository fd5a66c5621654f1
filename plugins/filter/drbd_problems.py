# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd._config import problems

DOCUMENTATION = r"""
name: drbd_problems
short_description: What refuses a list of declared DRBD resources, each problem naming the variable
version_added: 0.2.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Returns one sentence per problem of the resources, naming the variable with its index, for example
    C(dr_drbd_resources[1].nodes[0].minor) for a minor used twice on a host. An empty list means the declaration is
    fine as far as it goes; what only a host can know (its DRBD version, its devices) is checked by
    M(kvmops.fleet.drbd_resource) on the host.
  - Checks the same minor or port twice on a host, nodes that are not in the inventory, secrets shorter than 16 or
    longer than 64 characters, kernel device names that change between boots, quorum on two nodes without a
    tiebreaker, an initial primary that is not a node with a disk, handlers DRBD does not know.
  - The P(kvmops.fleet.dr#role) role calls it on the controller before anything changes. Runs on the controller;
    secrets never appear in its messages.
positional: _input
options:
  _input:
    description: The resources (the items of C(dr_drbd_resources)).
    type: list
    elements: dict
    required: true
  hosts:
    description: The inventory's host names (C(groups['all'])); V(null) skips that check.
    type: list
    elements: str
  var:
    description: How messages name the list.
    type: str
    default: dr_drbd_resources
"""

EXAMPLES = r"""
- name: Refuse bad resources before any change
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
    quiet: true
  vars:
    problems: "{{ dr_drbd_resources | kvmops.fleet.drbd_problems(groups['all']) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: One sentence per problem; empty when there is none.
  type: list
  elements: str
  sample:
    - "dr_drbd_resources[1].nodes[0].minor: minor 0 on hv1 is also dr_drbd_resources[0].nodes[0].minor (vm1disk): one
      device per minor"
"""


def drbd_problems(resources, hosts=None, var="dr_drbd_resources"):
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise AnsibleFilterError(f"kvmops.fleet.drbd_problems: {var} must be a list of mappings")
    return problems(resources, list(hosts) if hosts is not None else None, var)


class FilterModule:
    def filters(self):
        return {"drbd_problems": drbd_problems}
