#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster_facts
short_description: Read-only health of a corosync/pacemaker cluster node, with the problems in it
version_added: 0.2.0
description:
  - Reads what the cluster stack of the host says about its cluster and returns the quorum and votes (with the
    qdevice's), each knet link's state to every node, the nodes, the resources and where they run, the failed
    actions, the fencing history, and one sentence per problem.
  - Reads C(crm_mon --one-shot --output-as=xml --include=fencing) (pacemaker 2.1), C(corosync-quorumtool -s) and
    C(corosync-cfgtool -s) (corosync 3). Every command runs under O(timeout) and is killed with its process group
    when it does not answer; what could not be read is listed in RV(ansible_facts.cluster.errors) and its part is
    V(null), the module still returns.
  - Read-only; it never changes the cluster. The P(kvmops.fleet.dr#role) role's entry point C(cluster) sets such
    a cluster up.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.FACTS
  - kvmops.fleet._attributes.FACTS_MODULE
  - kvmops.fleet._attributes.IDEMPOTENT
options:
  timeout:
    description:
      - Seconds each command may take before it is killed, from V(1) to V(300).
    type: int
    default: 10
seealso:
  - name: Pacemaker Explained
    description: Cluster properties, resources and fencing.
    link: https://clusterlabs.org/projects/pacemaker/doc/2.1/Pacemaker_Explained/html/
"""

EXAMPLES = r"""
- name: Read the cluster's health
  kvmops.fleet.cluster_facts:

- name: Stop unless the cluster is quorate and has no problem
  ansible.builtin.assert:
    that:
      - ansible_facts['cluster']['quorum']['quorate']
      - ansible_facts['cluster']['problems'] | length == 0
    fail_msg: "{{ ansible_facts['cluster']['problems'] | join('; ') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    cluster:
      description: The cluster as this node sees it.
      returned: always
      type: dict
      contains:
        pacemaker:
          description: >-
            From crm_mon (V(null) when it could not be read) - dc, quorate, stonith_enabled, nodes (name, id,
            online, standby, maintenance, unclean, is_dc, resources_running), resources (id, parent, agent, role,
            target_role, active, failed, managed, blocked, nodes), failed_actions (op, task, node, exit_status,
            exit_code, exit_reason, status, last_rc_change), fencing_history (action, target, status, origin,
            delegate, client, exit_reason, completed).
          type: dict
          returned: always
          sample: {"dc": "hv1", "quorate": true, "stonith_enabled": true, "nodes": [], "resources": [],
                   "failed_actions": [], "fencing_history": []}
        quorum:
          description: >-
            From corosync-quorumtool (V(null) when it could not be read) - quorate, node_id, nodes, expected_votes,
            total_votes, quorum, flags, qdevice, two_node, members (node_id, votes, qdevice, name, local).
          type: dict
          returned: always
          sample: {"quorate": true, "node_id": 1, "nodes": 2, "expected_votes": 3, "total_votes": 3, "quorum": 2,
                   "flags": ["Quorate", "Qdevice"], "qdevice": true, "two_node": false, "members": []}
        links:
          description: >-
            From corosync-cfgtool (V(null) when it could not be read) - node_id, transport, links (id, transport,
            address, nodes with node_id and state, down - the node ids not connected on that link).
          type: dict
          returned: always
          sample: {"node_id": 1, "transport": "knet", "links": [{"id": 0, "transport": "udp",
                   "address": "10.0.0.11", "nodes": [{"node_id": 1, "state": "localhost"},
                   {"node_id": 2, "state": "connected"}], "down": []}]}
        problems:
          description: One sentence per thing an operator must look at; empty when the cluster is healthy.
          type: list
          elements: str
          returned: always
          sample: ["knet link 1 down to node id 2", "failed action vm1_start_0 on hv1: error"]
        errors:
          description: What could not be read, naming the command.
          type: list
          elements: str
          returned: always
          sample: []
        seconds:
          description: How long the reading took.
          type: float
          returned: always
          sample: 0.31
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.cluster import _facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import Int, check_module

ARGUMENT_SPEC = {"timeout": {"type": "int", "default": 10}}
RULES = {"timeout": Int(1, 300, "seconds per command; a stuck crm_mon or corosync tool is killed after it")}


def gather(module):
    return _facts_io.gather(module.params["timeout"])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    module.exit_json(changed=False, ansible_facts={"cluster": gather(module)})


if __name__ == "__main__":
    main()
