#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drbd_facts
short_description: Read-only DRBD health of a host, with a verdict and what to do per resource
version_added: 0.2.0
description:
  - Reads what DRBD says about every resource that is up on the host and returns, per resource, its role, the
    disk state of each volume, each peer's connection, role and disk states, the resync progress, the bytes out
    of sync, the evidence of a split brain from the kernel log, and a verdict with the steps that remedy it.
  - DRBD 8.4 (the in-kernel module of Debian and Ubuntu) is read from C(/proc/drbd), C(drbdsetup show) (resource
    names and the peer's address) and the kernel log (C(dmesg)), the only place 8.4 tells that it dropped a
    connection for a split brain. DRBD 9 is read from C(drbdsetup status --json) and the kernel log.
  - Every command runs under O(timeout) and is killed with its process group when it does not answer; what
    could not be read is listed in RV(ansible_facts.drbd.errors) and the module still returns.
  - Read-only; it never changes DRBD.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.FACTS
  - kvmops.fleet._attributes.FACTS_MODULE
  - kvmops.fleet._attributes.IDEMPOTENT
options:
  resources:
    description:
      - Report only these resources (names as in the DRBD configuration, up to 128 characters, no C(/) or
        blanks). A name that is not up on the host is listed in RV(ansible_facts.drbd.errors).
      - Empty (the default) reports every resource that is up.
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds each command (C(drbdsetup), C(drbdadm), C(dmesg)) may take before it is killed, from V(1) to
        V(300).
    type: int
    default: 10
notes:
  - The verdicts, worst first, are V(split-brain), V(diskless), V(no-quorum), V(suspended), V(disconnected),
    V(degraded), V(syncing) and V(healthy).
  - A split brain is reported from the kernel log line C(Split-Brain detected but unresolved) for the resource or
    one of its minors while a peer is not connected; a later successful connection clears it. A kernel log that
    was cleared or rotated away loses that evidence; the resource is then reported as V(disconnected) with the
    advice for a StandAlone connection.
seealso:
  - name: DRBD 8.4 user's guide, resolving split brain
    description: The manual recovery the remediation steps follow.
    link: https://linbit.com/drbd-user-guide/users-guide-drbd-8-4/#s-resolve-split-brain
  - name: DRBD 9 user's guide
    description: drbdsetup status and quorum.
    link: https://linbit.com/drbd-user-guide/drbd-guide-9_0-en/
"""

EXAMPLES = r"""
- name: Read the DRBD health of every hypervisor
  kvmops.fleet.drbd_facts:

- name: Stop when a replicated disk is in split brain
  ansible.builtin.assert:
    that: ansible_facts['drbd']['summary']['verdicts']['split-brain'] | default(0) == 0
    fail_msg: "{{ ansible_facts['drbd']['resources'] | selectattr('verdict', '==', 'split-brain')
      | map(attribute='remediation') | flatten | join('; ') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    drbd:
      description: DRBD's state on this host.
      returned: always
      type: dict
      contains:
        loaded:
          description: Whether the drbd kernel module is loaded (C(/proc/drbd) exists).
          type: bool
          returned: always
          sample: true
        kernel_version:
          description: The kernel module's version, from C(/proc/drbd).
          type: str
          returned: always
          sample: 8.4.11
        utils_version:
          description: drbd-utils' version (C(drbdadm --version)).
          type: str
          returned: always
          sample: 9.22.0
        resources:
          description: One entry per resource that is up (and named in O(resources) when given).
          type: list
          elements: dict
          returned: always
          contains:
            name:
              description: The resource's name.
              type: str
              returned: always
              sample: r0
            drbd_version:
              description: The kernel module's version the entry was read from.
              type: str
              returned: always
              sample: 8.4.11
            role:
              description: This node's role (V(Primary), V(Secondary)).
              type: str
              returned: always
              sample: Primary
            volumes:
              description: This node's volumes (volume, minor, disk_state, client, quorum, size_bytes, disk).
              type: list
              elements: dict
              returned: always
              sample: [{"volume": 0, "minor": 0, "disk_state": "UpToDate", "client": false, "quorum": null,
                        "size_bytes": null, "disk": "/dev/vdb"}]
            peers:
              description: >-
                The peers (name, node_id, address, connection_state, role, and per volume replication_state,
                disk_state, out_of_sync_bytes, sync_percent).
              type: list
              elements: dict
              returned: always
              sample: [{"name": null, "node_id": null, "address": "10.213.2.12:7789",
                        "connection_state": "WFConnection", "role": "Unknown",
                        "volumes": [{"volume": 0, "replication_state": "Off", "disk_state": "DUnknown",
                                     "out_of_sync_bytes": 8388608, "sync_percent": null}]}]
            out_of_sync_bytes:
              description: The most any peer lacks of this node's data, in bytes (V(null) when DRBD does not say).
              type: int
              returned: always
              sample: 8388608
            sync:
              description: >-
                The running resync (percent, remaining_bytes, total_bytes, eta_seconds, speed_kib_s), or
                V(null).
              type: dict
              returned: always
              sample: {"percent": 66.7, "remaining_bytes": 5619712, "total_bytes": 8388608, "eta_seconds": 3,
                       "speed_kib_s": 1352}
            suspended:
              description: Whether I/O on the resource is suspended.
              type: bool
              returned: always
              sample: false
            split_brain:
              description: Whether a split brain is detected, and the kernel log lines that say so.
              type: dict
              returned: always
              sample: {"detected": true,
                       "evidence": ["[  109.887912] block drbd0: Split-Brain detected but unresolved, dropping
                                     connection!"]}
            verdict:
              description: >-
                V(split-brain), V(diskless), V(no-quorum), V(suspended), V(disconnected), V(degraded), V(syncing)
                or V(healthy).
              type: str
              returned: always
              sample: disconnected
            severity:
              description: V(critical), V(warning), V(info) or V(ok).
              type: str
              returned: always
              sample: warning
            summary:
              description: The verdict in one sentence.
              type: str
              returned: always
              sample: >-
                not replicating: connection WFConnection (role Primary, disk UpToDate); 8.0 MiB changed since the
                peer last saw it
            remediation:
              description: What to do, in order (empty when healthy).
              type: list
              elements: str
              returned: always
              sample: ["Check the replication link to the peer (10.213.2.12:7789): addresses, firewall, cables; DRBD
                        reconnects by itself when it answers"]
        summary:
          description: The number of resources, the count per verdict and the worst verdict (V(null) without resources).
          type: dict
          returned: always
          sample: {"resources": 1, "verdicts": {"disconnected": 1}, "worst": "disconnected"}
        errors:
          description: What could not be read (a command that failed or timed out, a named resource that is not up).
          type: list
          elements: str
          returned: always
          sample: []
        seconds:
          description: How long the module took.
          type: float
          returned: always
          sample: 0.084
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import Int, Text, check_module
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io

RESOURCE_NAME = r"^[A-Za-z0-9_.+:-]{1,128}$"
ARGUMENT_SPEC = {
    "resources": {"type": "list", "elements": "str", "default": []},
    "timeout": {"type": "int", "default": 10},
}
RULES = {
    "resources[]": Text("a DRBD resource name", pattern=RESOURCE_NAME, example="r0", max_chars=128),
    "timeout": Int(1, 300, "seconds per command; a stuck drbdsetup is killed after it"),
}


def gather(module):
    p = module.params
    return _facts_io.gather(p["timeout"], names=tuple(p["resources"]))


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    module.exit_json(changed=False, ansible_facts={"drbd": gather(module)})


if __name__ == "__main__":
    main()
