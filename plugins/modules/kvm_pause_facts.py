#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_pause_facts
short_description: Say why every paused or crashed libvirt domain is paused, what to do, and whether resuming is safe
version_added: 0.1.0
description:
  - Collects, for every paused or crashed domain of a KVM/libvirt host, the evidence that explains the pause
    (disk error codes, where each disk lives and how full it is for QEMU, storage endpoints, watchdog and
    crash policies, jobs in flight, QEMU log lines, how long it has been paused) and diagnoses it.
  - Each diagnosis names a cause (for example V(storage_full), V(storage_unreachable), V(watchdog),
    V(save_job), V(postcopy), V(drbd_diskless)), concrete remediation steps naming the real path, device, pool
    or endpoint, and whether resuming is safe now, with the reason.
  - A disk on a DRBD device (C(/dev/drbdN), C(/dev/drbd/by-res/...), C(/dev/drbd/by-disk/...), symlinks resolved)
    gets its resource's state (the same readers as M(kvmops.fleet.drbd_facts), each command under the timeout);
    where the DRBD kernel module is loaded the host's DRBD health is returned beside the pauses. A host without
    DRBD runs no DRBD command (one failed open of C(/proc/drbd)).
  - Collection costs one libvirt round trip for all domains plus a few calls per paused domain.
  - Never hangs. All libvirt work runs in a forked worker that is killed at O(timeout). A domain blocked in a
    job (whose libvirt calls would hang) is reported from libvirtd's status file under C(/run/libvirt/qemu).
  - Read-only. Uses a read-only libvirt connection.
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
      - Limit the report to domains whose names match one of these names or shell-style globs.
      - Empty means all domains. An empty name or glob in the list is refused.
    type: list
    elements: str
    default: []
  include_running:
    description:
      - Also return RV(ansible_facts.kvm_pause.running), the list of running domains.
      - Counts of running domains are always in RV(ansible_facts.kvm_pause.summary).
    type: bool
    default: false
notes:
  - Domains with a job in flight in their status file are not queried through libvirt at all, because a
    blocked job holds the domain lock and each call would pin one of libvirtd's worker threads until the job
    ends. They are reported from the status file with RV(ansible_facts.kvm_pause.paused[].responsive=false).
  - Reading C(/run/libvirt/qemu) and C(/var/log/libvirt/qemu) needs root; without it that evidence is missing.
  - The disk free space is what an unprivileged writer sees (C(statvfs) f_bavail), as QEMU runs as
    C(libvirt-qemu); a filesystem with only its root reserve left counts as full.
seealso:
  - name: Diagnostics guide
    description: What the causes mean, safe_to_resume semantics and the schema.
    link: https://github.com/kvmops/fleet/blob/main/docs/docsite/rst/guide_diagnostics.rst
  - name: libvirt domain states and reasons
    description: The reason codes the diagnosis is built on.
    link: https://libvirt.org/html/libvirt-libvirt-domain.html#virDomainPausedReason
"""

EXAMPLES = r"""
- name: Diagnose paused domains
  kvmops.fleet.kvm_pause_facts:
  become: true

- name: Diagnose only the web tier, with a tight bound
  kvmops.fleet.kvm_pause_facts:
    domains:
      - web-*
    timeout: 5
  become: true

- name: Fail when a paused domain is not safe to resume
  ansible.builtin.assert:
    that:
      - ansible_facts.kvm_pause.paused | rejectattr('safe_to_resume') | list | length == 0
    fail_msg: >-
      {{ ansible_facts.kvm_pause.paused | rejectattr('safe_to_resume')
         | map(attribute='name') | join(', ') }} need attention

- name: Show causes
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.cause }} - {{ item.summary }}"
  loop: "{{ ansible_facts.kvm_pause.paused }}"
  loop_control:
    label: "{{ item.name }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added by this module.
  returned: success
  type: dict
  contains:
    kvm_pause:
      description: The pause report of this host (schema version 1).
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
          description: UTC time of the collection (ISO 8601).
          returned: always
          type: str
          sample: '2026-11-26T05:04:39Z'
        duration_seconds:
          description: Wall time the collection took.
          returned: always
          type: float
          sample: 0.21
        complete:
          description:
            - V(false) when libvirt did not answer everything within O(timeout).
            - See RV(ansible_facts.kvm_pause.errors).
          returned: always
          type: bool
          sample: true
        collection:
          description:
            - How the domain list was obtained. V(getAllDomainStats) (one round trip), V(domainListGetStats) (a
              domain was busy, so the paused domains named by the status files were looked up), or V(status_xml)
              (libvirt did not answer).
          returned: always
          type: str
          sample: getAllDomainStats
        summary:
          description: Counts over the selected domains.
          returned: always
          type: dict
          sample: {total: 12, running: 8, paused: 3, crashed: 1, shutoff: 0, other: 0, unresponsive: 1,
                   safe_to_resume: 1, by_cause: {storage_full: 1, save_job: 1, user_paused: 1, crashed: 1},
                   storage_unresponsive: 0, at_risk: 0}
        paused:
          description: One entry per paused or crashed domain, sorted by name.
          returned: always
          type: list
          elements: dict
          contains:
            name:
              description: Domain name.
              returned: always
              type: str
              sample: web-01
            uuid:
              description: Domain UUID.
              returned: always
              type: str
              sample: b0cd9266-0d03-4c41-8ee4-2531531dc94c
            state:
              description: V(paused) or V(crashed).
              returned: always
              type: str
              sample: paused
            state_code:
              description: virDomainState number.
              returned: always
              type: int
              sample: 3
            reason:
              description: Reason name (for example V(ioerror), V(user), V(save), V(panicked)).
              returned: always
              type: str
              sample: ioerror
            reason_code:
              description: virDomainPausedReason (or virDomainCrashedReason) number.
              returned: always
              type: int
              sample: 5
            cause:
              description:
                - Diagnosed cause. One of V(storage_full), V(storage_io_error), V(storage_unreachable),
                  V(storage_unresponsive) (the storage under a disk does not answer, so nothing else can be judged
                  while it does not, and the domain is never safe to resume), V(user_paused), V(lock_failure),
                  V(watchdog), V(migration), V(postcopy), V(postcopy_failed),
                  V(save_job), V(dump_job), V(snapshot_job), V(backup_job), V(job_in_flight), V(from_snapshot),
                  V(shutting_down), V(crashed), V(starting_up), V(api_error), V(emulation_failure), V(unknown),
                  V(drbd_diskless) (a disk's DRBD device has no UpToDate data, neither its own disk nor a connected
                  peer's), V(drbd_no_quorum) (DRBD 9 lost quorum), V(drbd_suspended) (DRBD suspended its I/O);
                  the three DRBD causes are never safe to resume. After an I/O error on a DRBD device that serves
                  I/O again (disk re-attached, peer back) the cause is V(storage_io_error) and resuming is safe,
                  unless the resource is in split brain.
              returned: always
              type: str
              sample: storage_full
            severity:
              description: V(info), V(warning) or V(critical).
              returned: always
              type: str
              sample: critical
            summary:
              description: One line for people.
              returned: always
              type: str
              sample: disk vda ran out of space on /var/lib/libvirt/images/web-01.qcow2
            findings:
              description: The evidence that led to the cause, as sentences.
              returned: always
              type: list
              elements: str
              sample: ['libvirt disk error on vda: no_space (2)']
            remediation:
              description: What to do, naming the real path, device, pool or endpoint.
              returned: always
              type: list
              elements: str
              sample:
                - >-
                  /var/lib/libvirt/images is full for QEMU (0 B available of 20 MiB): free space or grow it,
                  then resume.
            safe_to_resume:
              description:
                - Whether resuming now is safe. Never V(true) for post-copy, jobs in flight, or an I/O error whose
                  cause is still present or cannot be shown to be gone.
              returned: always
              type: bool
              sample: false
            safe_to_resume_reason:
              description: Why RV(ansible_facts.kvm_pause.paused[].safe_to_resume) has its value.
              returned: always
              type: str
              sample: 'the storage is still full: resuming would pause the domain again at once'
            responsive:
              description: V(false) when libvirt was not (or could not be) asked about this domain.
              returned: always
              type: bool
              sample: true
            unresponsive_reason:
              description: Why the domain was not queried or did not answer; V(null) when responsive.
              returned: always
              type: str
              sample: null
            source:
              description: V(libvirt) or V(status_xml) (libvirtd's status file under C(/run/libvirt/qemu)).
              returned: always
              type: str
              sample: libvirt
            paused_since:
              description: Best known UTC time the pause began, or V(null).
              returned: always
              type: str
              sample: '2026-11-26T05:04:39Z'
            paused_for_seconds:
              description: Seconds since RV(ansible_facts.kvm_pause.paused[].paused_since), or V(null).
              returned: always
              type: float
              sample: 42.5
            paused_since_source:
              description:
                - How the time was known. V(status_xml_mtime) (libvirt rewrites the status file on every state
                  change, so the domain has been paused at least this long), V(status_xml_job_started) (start of
                  the job in flight), or V(unknown).
              returned: always
              type: str
              sample: status_xml_mtime
            disks:
              description:
                - Every disk of the domain with its storage evidence.
                - V(drbd) is V(null) unless the disk is a DRBD device; then resource, minor, volume, role,
                  disk_state, quorum, suspended, peers (name, address, connection_state, role, disk_state),
                  data_access (the device serves I/O now; V(null) when its state could not be read), verdict,
                  summary and remediation (as M(kvmops.fleet.drbd_facts) says), split_brain, and error.
              returned: always
              type: list
              elements: dict
              sample: [{target: vda, type: file, device: disk, source: /var/lib/libvirt/images/web-01.qcow2,
                        format: qcow2, error_policy: stop, rerror_policy: stop, error: no_space, error_code: 2,
                        capacity: 12582912, allocation: 9437184, physical: 9437184,
                        filesystem: {mount_point: /var/lib/libvirt/images, device: /dev/loop3, fstype: ext4,
                                     total_bytes: 20971520, available_bytes: 0, free_bytes: 1048576,
                                     used_percent: 100.0},
                        block_device: null, endpoints: [], pool: null, thin_pool: null, storage_unresponsive: null,
                        drbd: null}]
            job:
              description: The job in flight (kind, progress_percent, elapsed_seconds, source), or V(null).
              returned: always
              type: dict
              sample: {active: true, kind: save, progress_percent: null, elapsed_seconds: null,
                       started_ms: 1795669479115, source: status_xml}
            control:
              description: libvirt's control channel state (state, details, seconds), or V(null).
              returned: always
              type: dict
              sample: {state: ok, details: 0, seconds: 0.0}
            watchdog_action:
              description: Action of the domain's watchdog device, or V(null) without one.
              returned: always
              type: str
              sample: pause
            on_lockfailure:
              description: The domain's on_lockfailure policy, or V(null).
              returned: always
              type: str
              sample: null
            on_crash:
              description: The domain's on_crash policy.
              returned: always
              type: str
              sample: destroy
            log:
              description: Relevant lines of the domain's QEMU log from its current run.
              returned: always
              type: dict
              sample: {path: /var/log/libvirt/qemu/web-01.log, lines: []}
            errors:
              description: Evidence that could not be collected for this domain.
              returned: always
              type: list
              elements: str
              sample: []
        unresponsive:
          description: Domains libvirt was not asked about or did not answer for, with what is known.
          returned: always
          type: list
          elements: dict
          sample: [{name: db-02, uuid: 6c1f9e0a-2a51-4c7e-9d33-0e5f2f1d8a11, state: paused, reason: save, job: save,
                    job_seconds: 3600.0, pid: 5070, queried: false,
                    message: 'not queried: its status file shows a save job in flight'}]
        storage_unresponsive:
          description:
            - Storage under the selected domains' disks that did not answer (a dead hard NFS mount, a hung FUSE
              daemon or iSCSI session, a block device whose I/O hangs), one entry per mount or block device, with
              what /proc/self/mountinfo says about it (mount point, filesystem type, server or device, options),
              since when it has not answered, the PID of the probe still waiting for it, and the domains (paused,
              crashed and running) with disks on it.
            - Each storage is probed in a child process of its own, bounded to a quarter of O(timeout) (0.5 to 3 s);
              a probe that does not answer is abandoned, and later runs reuse it instead of starting another.
          returned: always
          type: list
          elements: dict
          sample: [{kind: mount, target: /srv/nfs, mount_point: /srv/nfs, fstype: nfs4,
                    source: 'nfs1:/export/vm', options: 'rw,vers=4.2,hard,proto=tcp,timeo=600,retrans=2',
                    since: '2026-12-04T10:00:00Z', seconds: 240.0, probe_pid: 31337,
                    domains: [{name: app-5, state: paused, disks: [vda]}, {name: web-6, state: running, disks: [vda]}]}]
        running:
          description:
            - Running domains (name, uuid, reason_code); V(at_risk) is true when storage under their disks does not
              answer (V(storage_unresponsive) names it).
          returned: when O(include_running=true)
          type: list
          elements: dict
          sample: [{name: web-02, uuid: 2f0c4a57-3b7e-4f59-9a53-0d2cde0fb0c1, reason_code: 1, at_risk: false,
                    storage_unresponsive: []}]
        errors:
          description: What could not be collected (for example a timeout); empty when complete.
          returned: always
          type: list
          elements: str
          sample: []
        warnings:
          description: Non-fatal problems (for example storage pools that could not be read).
          returned: always
          type: list
          elements: str
          sample: []
        drbd:
          description:
            - The host's DRBD health, in the shape of
              RV(kvmops.fleet.drbd_facts#module:ansible_facts.drbd) (loaded,
              kernel_version, utils_version, resources with their verdict and remediation, summary, errors,
              seconds).
          returned: when the DRBD kernel module is loaded (C(/proc/drbd) exists)
          type: dict
          sample: {loaded: true, kernel_version: 8.4.11, utils_version: 9.22.0, resources: [],
                   summary: {resources: 0, verdicts: {}, worst: null}, errors: [], seconds: 0.02}
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
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._collect_io import collect

ARGUMENT_SPEC = {
    **LIBVIRT_COMMON_ARGS,
    "domains": {"type": "list", "elements": "str", "default": []},
    "include_running": {"type": "bool", "default": False},
}
# each option's rule (common/_validate.py), checked before libvirt is touched
RULES = {
    **LIBVIRT_COMMON_RULES,
    "domains[]": Text("an empty pattern matches no domain; leave domains empty for all of them"),
}


def main():
    started = time.monotonic()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    require_libvirt(module)
    try:
        check_timeout(module.params["timeout"])
        facts = collect(
            module.params["uri"],
            module.params["timeout"],
            module.params["domains"],
            module.params["include_running"],
            started=started,
        )
    except KvmError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, ansible_facts={"kvm_pause": facts})


if __name__ == "__main__":
    main()
