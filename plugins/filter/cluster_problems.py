# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.module_utils.cluster._config import problems

DOCUMENTATION = r"""
name: cluster_problems
short_description: What refuses a declared corosync/pacemaker cluster, each problem naming the variable
version_added: 0.2.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Returns one sentence per problem of the cluster declared by the P(kvmops.fleet.dr#role) role's C(dr_cluster_*)
    variables, naming the variable with its index, for example C(dr_cluster_nodes[1].addresses[0]) for an address
    used twice. An empty list means the declaration is fine.
  - Checks two to 16 nodes that are in the inventory, one or two knet links on every node (the same count, one
    address family per link, no address twice), the tiebreaker (two_node only on two nodes, a qnetd host that is a
    third host of the inventory, ffsplit only on an even number of nodes), the hacluster password, fencing devices
    with their required fields that together reach every node, and no cluster without fencing unless
    C(fencing_lab_ack) is V(true).
  - Runs on the controller; secrets never appear in its messages.
positional: _input
options:
  _input:
    description:
      - The declaration, the role's variables without their C(dr_cluster_) prefix (C(name), C(nodes), C(transport),
        C(tiebreaker), C(qnetd_host), C(qnetd_address), C(qdevice_algorithm), C(password), C(fencing),
        C(fencing_lab_ack), C(properties)).
    type: dict
    required: true
  hosts:
    description: The inventory's host names (C(groups['all'])); V(null) skips that check.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Refuse a bad cluster before any change
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
    quiet: true
  vars:
    problems: >-
      {{ {'name': dr_cluster_name, 'nodes': dr_cluster_nodes, 'password': dr_cluster_password,
          'tiebreaker': 'two_node', 'fencing': dr_cluster_fencing}
         | kvmops.fleet.cluster_problems(groups['all']) }}
  run_once: true
"""

RETURN = r"""
_value:
  description: One sentence per problem; empty when there is none.
  type: list
  elements: str
  sample:
    - "dr_cluster_fencing: no device reaches hv2; every node needs one"
"""


def cluster_problems(cfg, hosts=None):
    if not isinstance(cfg, dict):
        raise AnsibleFilterError("kvmops.fleet.cluster_problems: the declaration must be a mapping")
    return problems(cfg, list(hosts) if hosts is not None else None)


class FilterModule:
    def filters(self):
        return {"cluster_problems": cluster_problems}
