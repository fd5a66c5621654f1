#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_pause_risk
short_description: Forecast which running libvirt domains can pause, and why, before they do
version_added: 0.2.0
description:
  - For every running domain and each of its writable disks, reads the virtual capacity, what the disk occupies
    on the host now (C(st_blocks) of its file, or the data percent of a thin LV; never libvirt's block
    allocation, which is the highest written offset), and the storage it grows into (its filesystem, found by
    the file's device number, or the LVM thin pool of a thin LV).
  - Per storage, sums the growth its disks can still claim (capacity minus occupied) and compares it with the
    space free to QEMU (C(f_bavail) when QEMU runs unprivileged, C(f_bfree) when qemu.conf makes it root; the
    unused data of a thin pool, and what autoextend can add from the volume group). A storage is
    overcommitted when the growth exceeds the free space.
  - Names the domains that would pause when it fills (error_policy V(stop), V(enospace), or none, as QEMU's
    default is werror=enospc), those whose guest would see write errors instead (V(report)), and those whose
    writes would be dropped (V(ignore)). Without a growth rate the order in which they pause is not known; the
    forecast says so and names each domain that can fill the storage on its own.
  - Also reports pause risks in the configuration (watchdog action pause, on_lockfailure pause), memory
    overcommit of the host (the guests' memory against MemTotal and SwapTotal), and hugepage-backed domains
    whose NUMA nodes have fewer free huge pages than they need.
  - Each risk has a severity, the numbers it was computed from, the headroom in bytes and concrete actions.
  - Never hangs. libvirt work runs in a forked worker killed at 60% of O(timeout); storage is probed in child
    processes first and a storage that does not answer is not touched. Read-only (a read-only libvirt
    connection; nothing on the host is written).
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.FACTS
  - kvmops.fleet._attributes.FACTS_MODULE
  - kvmops.fleet._attributes.IDEMPOTENT
  - kvmops.fleet._libvirt
options:
  domains:
    description:
      - Limit the forecast to running domains whose names match one of these names or shell-style globs.
      - Empty means all running domains. An empty name or glob in the list is refused.
      - Memory overcommit is computed over the selected domains only.
    type: list
    elements: str
    default: []
  checks:
    description:
      - Which checks to run. V(storage) (disk growth against free space), V(config) (watchdog and
        on_lockfailure pause), V(memory) (host memory overcommit), V(hugepages) (free huge pages per NUMA node).
    type: list
    elements: str
    choices: [storage, config, memory, hugepages]
    default: [storage, config, memory, hugepages]
notes:
  - Reading the disks' files, qemu.conf and C(/run/libvirt/qemu) needs root.
  - A qcow2 disk also grows by its own metadata (about 1/6000 of its capacity with 64 KiB clusters); that is
    not counted, so its growth is a lower bound.
  - Thin LVs are read with C(lvs) and C(lvmconfig) (each bounded by the remaining time); without LVM tools
    thin LV disks are reported as plain block devices.
  - Network disks (NBD, iSCSI, RBD, ...) are listed with a note and not forecast; their endpoints are checked by
    M(kvmops.fleet.kvm_pause_facts).
  - Cost, measured by benchmarks/bench_pause_risk.py (1,000 test-driver domains, 900 running,
    in a private libvirtd; the performance guide has the table) - 3.796 s of module work,
    4.22 ms per running domain, beside 0.545 s for kvm_pause_facts
    alone; the two together took 7.95 x the module work and 6.53 x the process
    wall of kvm_pause_facts alone. Real storage adds a stat per disk.
seealso:
  - module: kvmops.fleet.kvm_pause_facts
  - name: QEMU block device options
    description: werror and rerror, and their defaults (werror=enospc, rerror=report).
    link: https://www.qemu.org/docs/master/system/invocation.html
"""

EXAMPLES = r"""
- name: Forecast pause risks of every running domain
  kvmops.fleet.kvm_pause_risk:
  become: true

- name: Only the storage of the web tier, with a tight bound
  kvmops.fleet.kvm_pause_risk:
    domains:
      - web-*
    checks:
      - storage
    timeout: 5
  become: true

- name: Fail before anything pauses
  ansible.builtin.assert:
    that:
      - ansible_facts.kvm_pause_risk.summary.overcommitted == 0
    fail_msg: >-
      {{ ansible_facts.kvm_pause_risk.risks | selectattr('kind', 'equalto', 'storage_overcommitted')
         | map(attribute='summary') | join('; ') }}
"""

RETURN = r"""
ansible_facts:
  description: Facts added by this module.
  returned: success
  type: dict
  contains:
    kvm_pause_risk:
      description: The pause-risk forecast of this host (schema version 1).
      returned: success
      type: dict
      contains:
        schema_version:
          description: Version of this schema; raised only on incompatible changes.
          returned: always
          type: int
          sample: 1
        uri:
          description: The libvirt URI that was used.
          returned: always
          type: str
          sample: qemu:///system
        collected_at:
          description: UTC time of the forecast (ISO 8601).
          returned: always
          type: str
          sample: '2026-12-05T23:40:00Z'
        duration_seconds:
          description: Wall time the forecast took.
          returned: always
          type: float
          sample: 0.35
        complete:
          description:
            - V(false) when something was not read within O(timeout); see RV(ansible_facts.kvm_pause_risk.errors).
          returned: always
          type: bool
          sample: true
        checks:
          description: The checks that ran.
          returned: always
          type: list
          elements: str
          sample: [storage, config, memory, hugepages]
        qemu_runs_as_root:
          description:
            - Whether QEMU writes as root (qemu.conf C(user)), which decides whether the root reserve is free to it.
          returned: always
          type: bool
          sample: false
        summary:
          description: Counts; C(at_risk_domains) names the domains with a risk.
          returned: always
          type: dict
          sample: {domains: 2, disks: 2, storages: 1, overcommitted: 1, at_risk_domains: [db-1, web-1], risks: 2,
                   by_severity: {warning: 2}}
        storages:
          description: One entry per storage the disks grow into, sorted by key.
          returned: always
          type: list
          elements: dict
          contains:
            key:
              description: V(fs:MAJOR:MINOR) for a filesystem (its device number), V(thin:VG/POOL) for a thin pool.
              returned: always
              type: str
              sample: 'fs:7:3'
            kind:
              description: V(filesystem) or V(thin_pool).
              returned: always
              type: str
              sample: filesystem
            name:
              description: The mount point, or V(VG/POOL).
              returned: always
              type: str
              sample: /var/lib/libvirt/images
            device:
              description: The filesystem's source device (from mountinfo), or the thin pool's device-mapper path.
              returned: always
              type: str
              sample: /dev/loop3
            fstype:
              description: The filesystem type; V(null) for a thin pool.
              returned: always
              type: str
              sample: ext4
            total_bytes:
              description: The filesystem's size (f_blocks) or the thin pool's size.
              returned: always
              type: int
              sample: 19980288
            data_percent:
              description: A thin pool's data fill.
              returned: for thin pools
              type: float
              sample: 62.5
            metadata_percent:
              description: A thin pool's metadata fill.
              returned: for thin pools
              type: float
              sample: 10.35
            vg:
              description: A thin pool's volume group.
              returned: for thin pools
              type: str
              sample: vg0
            vg_free_bytes:
              description: Free space of that volume group, which autoextend can add to the pool.
              returned: for thin pools
              type: int
              sample: 536870912
            autoextend_threshold:
              description: C(activation/thin_pool_autoextend_threshold) from C(lvmconfig) (V(100) means off).
              returned: for thin pools
              type: int
              sample: 80
            autoextend_percent:
              description: C(activation/thin_pool_autoextend_percent) from C(lvmconfig).
              returned: for thin pools
              type: int
              sample: 20
            unknown_growth:
              description: Disks on this storage whose growth could not be computed (V(domain:target)).
              returned: always
              type: list
              elements: str
              sample: []
            free_bytes:
              description: Bytes free to QEMU now.
              returned: always
              type: int
              sample: 18219008
            free_basis:
              description: V(f_bavail), V(f_bfree) (QEMU runs as root) or V(thin_pool_data_percent).
              returned: always
              type: str
              sample: f_bavail
            remaining_growth_bytes:
              description: What the disks on this storage can still claim in total.
              returned: always
              type: int
              sample: 33554432
            headroom_bytes:
              description:
                - RV(ansible_facts.kvm_pause_risk.storages[].free_bytes) minus the growth; negative when overcommitted.
              returned: always
              type: int
              sample: -15335424
            overcommitted:
              description: Whether the growth exceeds the free space.
              returned: always
              type: bool
              sample: true
            severity:
              description: The worst severity of this storage's risks (V(critical), V(warning), V(info)), or V(null).
              returned: always
              type: str
              sample: warning
            would_pause:
              description: Domains that pause when the storage fills (error_policy stop, enospace, or none).
              returned: always
              type: list
              elements: str
              sample: [db-1]
            would_see_errors:
              description: Domains whose guests see write errors instead (error_policy report).
              returned: always
              type: list
              elements: str
              sample: [web-1]
            would_drop_writes:
              description: Domains whose failed writes are dropped (error_policy ignore).
              returned: always
              type: list
              elements: str
              sample: []
            can_fill_alone:
              description: Domains with a disk that can claim more than the free space by itself.
              returned: always
              type: list
              elements: str
              sample: []
            disks:
              description: The disks on this storage (domain, target, path, capacity_bytes, occupied_bytes,
                remaining_bytes, error_policy, outcome, can_fill_alone).
              returned: always
              type: list
              elements: dict
              sample: [{domain: db-1, target: vda, path: /var/lib/libvirt/images/db-1.qcow2, capacity_bytes: 16777216,
                        occupied_bytes: 196608, remaining_bytes: 16580608, error_policy: stop, outcome: pause,
                        can_fill_alone: false}]
            actions:
              description: What to do about it.
              returned: always
              type: list
              elements: str
              sample: ['grow filesystem /var/lib/libvirt/images by 15 MiB (it has 17.4 MiB free for QEMU; its disks can
                       still claim 32.0 MiB), or move disks off it']
        risks:
          description:
            - Every risk found, worst first. Its C(kind) is one of
              V(storage_overcommitted), V(write_errors_in_guest), V(writes_dropped), V(thin_pool_metadata),
              V(watchdog_pause), V(lockfailure_pause), V(memory_overcommit), V(hugepages_short).
            - Each has V(severity), V(storage) (the storage key or V(null)), V(domains), V(summary), V(numbers) (what
              it was computed from), V(headroom_bytes) and V(actions); a V(storage_overcommitted) risk also has
              V(would_pause), V(would_see_errors), V(would_drop_writes), V(can_fill_alone) and V(first_to_pause).
          returned: always
          type: list
          elements: dict
          sample: [{kind: storage_overcommitted, severity: warning, storage: 'fs:7:3', domains: [db-1, web-1],
                    summary: 'filesystem /srv/images is overcommitted ...', numbers: {free_bytes: 18219008},
                    headroom_bytes: -15335424, would_pause: [db-1], would_see_errors: [web-1], would_drop_writes: [],
                    can_fill_alone: [], first_to_pause: 'any of db-1: ...', actions: ['grow filesystem ...']}]
        domains:
          description: Per selected running domain, its forecast disks (with a V(note) where a disk is not forecast),
            the kinds of risk it is in, its worst severity and whether it pauses when its storage fills.
          returned: always
          type: list
          elements: dict
          sample: [{name: db-1, uuid: b0cd9266-0d03-4c41-8ee4-2531531dc94c, disks: [], risks: [storage_overcommitted],
                    severity: warning, pauses_when_full: true}]
        errors:
          description: What could not be read (for example a timeout); empty when complete.
          returned: always
          type: list
          elements: str
          sample: []
        warnings:
          description: Non-fatal problems.
          returned: always
          type: list
          elements: str
          sample: []
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    LIBVIRT_COMMON_ARGS,
    KvmError,
    check_timeout,
    require_libvirt,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    LIBVIRT_COMMON_RULES,
    Text,
    check_module,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.forecast._collect_io import collect
from ansible_collections.kvmops.fleet.plugins.module_utils.forecast._plan import CHECKS

ARGUMENT_SPEC = {
    **LIBVIRT_COMMON_ARGS,
    "domains": {"type": "list", "elements": "str", "default": []},
    "checks": {"type": "list", "elements": "str", "choices": list(CHECKS), "default": list(CHECKS)},
}
# each option's rule (common/_validate.py), checked before libvirt is touched; checks has choices
RULES = {
    **LIBVIRT_COMMON_RULES,
    "domains[]": Text("an empty pattern matches no domain; leave domains empty for all of them"),
}


def main():
    started = time.monotonic()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    if not module.params["checks"]:
        module.fail_json(msg="checks: must name at least one check (" + ", ".join(CHECKS) + ")", changed=False)
    require_libvirt(module)
    try:
        check_timeout(module.params["timeout"])
        facts = collect(
            module.params["uri"],
            module.params["timeout"],
            module.params["domains"],
            [c for c in CHECKS if c in module.params["checks"]],
            started=started,
        )
    except KvmError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, ansible_facts={"kvm_pause_risk": facts})


if __name__ == "__main__":
    main()
