# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import (
    COUNT_KEYS,
    FleetReportError,
    build_report,
)
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_input import (
    ReportInputError,
    check_report,
    check_results,
)
from ansible_collections.kvmops.fleet.plugins.plugin_utils._risk_input import check_risk_results

DOCUMENTATION = r"""
name: fleet_report
short_description: Build the fleet pause report from every host's kvm_pause_facts result
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Turns the registered results of M(kvmops.fleet.kvm_pause_facts), one per host, into one fleet report
    (schema version 1) with the counts, every host with its status, and the paused and crashed domains grouped
    by cause in severity order.
  - A host whose result says C(unreachable) gets status V(unreachable); a failed result (libvirtd not running,
    permission denied, ...) gets V(libvirt_failed); a host without a result (it left the play earlier) or with a
    skipped result gets V(not_diagnosed); every other host is V(diagnosed), with C(complete=false) when its
    libvirt did not answer in time.
  - The output is sorted (hosts and domains by name, causes by severity, count and name), so the same results
    give the same report.
  - Runs on the controller. The C(kvmops.fleet.diagnostics) role writes it as JSON and renders it as Markdown and HTML.
  - "Input that does not have the shape M(kvmops.fleet.kvm_pause_facts) returns (a result that is not a mapping, a
    paused entry without its C(cause), a string where a list belongs, ...) fails the task with an error naming the host
    and the field, for example C(host hv1: ansible_facts.kvm_pause.paused[0].cause: missing (domain web-01))."
positional: _input
options:
  _input:
    description:
      - Mapping of inventory host name to the result registered from M(kvmops.fleet.kvm_pause_facts) on that
        host, or V(null) for a host the task never ran on.
      - Register the task with C(ignore_unreachable=true) and C(ignore_errors=true), so that every host has a result.
    type: dict
    required: true
  generated_at:
    description:
      - Time of the run, an ISO 8601 UTC string such as V(2026-11-26T05:04:39Z). Default is now.
    type: str
  previous:
    description:
      - The report of the previous run (the parsed JSON file). When it describes the same fleet state (its
        RV(_value.state_digest) equals the new one and still matches its own content), it is returned unchanged
        instead of the new report, so report files written from it stay byte-identical while the fleet's state
        does not change.
      - The parsed report or the text of the JSON file. Anything else (V(null), text that is not JSON, another
        schema, a report of a different state, an edited file) is ignored.
    type: raw
  risks:
    description:
      - Mapping of inventory host name to the result registered from M(kvmops.fleet.kvm_pause_risk) on that host
        (V(null) for a host the task never ran on), when the pause-risk forecast ran. The report then has a
        RV(_value.pause_risks) section; without it (V(null), the default) it has none.
      - A forecast that does not have the module's shape fails the task with an error naming the host and the field.
    type: dict
    version_added: 0.2.0
notes:
  - "The state digest leaves out the measurements that change on every run while nothing happens in the fleet:
    C(generated_at); each host's C(collected_at), C(duration_seconds) and C(collection) (the listing method
    changes while another domain of the host is busy in a job); each domain's C(paused_for_seconds),
    C(job.elapsed_seconds), C(job.progress_percent) and C(control.seconds); each disk's C(allocation),
    C(physical), C(filesystem.available_bytes), C(filesystem.free_bytes), C(filesystem.used_percent),
    C(pool.allocation), C(pool.available), C(thin_pool.data_percent) and C(thin_pool.metadata_percent);
    C(job_seconds) of unresponsive domains."
  - "In RV(_value.pause_risks) the digest leaves out each storage's C(total_bytes), C(free_bytes),
    C(remaining_growth_bytes), C(headroom_bytes) and C(actions), each other risk's C(summary),
    C(headroom_bytes) and C(actions), and each host's C(collected_at) and C(message): running guests change
    them with every write. Who is at risk, on which storage, how badly, and whether it is overcommitted stay in."
  - The diagnosis texts stay in the digest with the figures they quote (for example C(running for 80s) in the
    summary of a domain whose job is in flight, or the available space in a storage finding), so a change
    visible in those texts is a change of state.
seealso:
  - plugin: kvmops.fleet.fleet_summary
    plugin_type: filter
  - module: kvmops.fleet.kvm_pause_facts
  - module: kvmops.fleet.kvm_pause_risk
"""

EXAMPLES = r"""
- name: Diagnose every host
  kvmops.fleet.kvm_pause_facts:
  ignore_unreachable: true
  ignore_errors: true
  register: pause

- name: Build the fleet report once, on the controller
  run_once: true
  ansible.builtin.set_fact:
    fleet_report: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all
              | map('extract', hostvars, 'pause') | map('default', none)))
         | kvmops.fleet.fleet_report }}

- name: Name the causes
  run_once: true
  ansible.builtin.debug:
    msg: "{{ item.cause }} ({{ item.severity }}): {{ item.domains | map(attribute='name') | join(', ') }}"
  loop: "{{ fleet_report.causes }}"
  loop_control:
    label: "{{ item.cause }}"
"""

RETURN = r"""
_value:
  description: The fleet report, schema version 1.
  type: dict
  contains:
    schema_version:
      description: Version of this schema; raised only on incompatible changes. New keys may appear within a version.
      type: int
      sample: 1
    generated_at:
      description:
        - UTC time (ISO 8601) of the run that produced this report.
        - When O(previous) was returned, the time of the earlier run that first saw this fleet state.
      type: str
      sample: '2026-11-26T05:04:39Z'
    state_digest:
      description: SHA-256 (hex) of the report without its volatile fields (see the notes).
      type: str
      sample: 3f1c0a8e5b0e4d3c9a7f2b6d1e8c4a5f9b2d7e6c1a3f5b8d0e2c4a6b8d0f2e4a
    summary:
      description: Counts over the whole fleet.
      type: dict
      contains:
        hosts:
          description: Hosts in the report.
          type: int
        hosts_diagnosed:
          description: Hosts whose kvm_pause_facts ran (status V(diagnosed)), complete or not.
          type: int
        hosts_unreachable:
          description: Hosts Ansible could not connect to (status V(unreachable)).
          type: int
        hosts_libvirt_failed:
          description: Hosts where kvm_pause_facts failed, for example libvirtd not running (status V(libvirt_failed)).
          type: int
        hosts_not_diagnosed:
          description: Hosts without a result (status V(not_diagnosed)).
          type: int
        hosts_incomplete:
          description: Diagnosed hosts whose libvirt did not answer everything within the timeout (C(complete=false)).
          type: int
        domains_total:
          description: Domains on the diagnosed hosts, in any state.
          type: int
        running:
          description: Running domains.
          type: int
        paused:
          description: Paused domains (state paused; crashed ones are counted in RV(_value.summary.crashed)).
          type: int
        crashed:
          description: Crashed domains.
          type: int
        unresponsive:
          description: Paused or crashed domains libvirt did not answer for (reported from libvirtd's status files).
          type: int
        safe_to_resume:
          description: Paused or crashed domains whose diagnosis says C(safe_to_resume).
          type: int
        by_cause:
          description: Number of paused or crashed domains per cause, sorted by cause.
          type: dict
          sample: {storage_full: 2, user_paused: 1}
        by_severity:
          description:
            - Number of paused or crashed domains per severity (V(critical), V(warning), V(info); all three keys
              always).
          type: dict
          sample: {critical: 2, warning: 0, info: 1}
    hosts:
      description: Every host, sorted by name.
      type: list
      elements: dict
      contains:
        name:
          description: Inventory host name.
          type: str
        status:
          description: How far the diagnosis got on this host.
          type: str
          choices: [diagnosed, unreachable, libvirt_failed, not_diagnosed]
        message:
          description:
            - One line for people. Diagnosed hosts, the domain counts (prefixed C(INCOMPLETE:) and the errors when
              incomplete); other hosts, the connection error or the module's failure message.
          type: str
          sample: "12 domains: 8 running, 2 paused, 1 crashed, 0 unresponsive, 1 safe to resume"
        complete:
          description:
            - V(true) when kvm_pause_facts got an answer for everything within its timeout.
            - V(false) for hosts not diagnosed.
          type: bool
        errors:
          description: The module's errors (what did not answer), empty when complete.
          type: list
          elements: str
        warnings:
          description: The module's warnings.
          type: list
          elements: str
        uri:
          description: libvirt URI used (V(null) unless diagnosed).
          type: str
        collected_at:
          description: UTC time the host's evidence was collected (V(null) unless diagnosed).
          type: str
        duration_seconds:
          description: Time the collection took on the host (V(null) unless diagnosed).
          type: float
        collection:
          description: How the domains were listed (V(getAllDomainStats), V(domainListGetStats) or V(status_xml)).
          type: str
        summary:
          description:
            - The module's RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause.summary) (total, running,
              paused, crashed, shutoff, other, unresponsive, safe_to_resume, by_cause); V(null) unless diagnosed.
          type: dict
        paused:
          description:
            - The module's RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause.paused) entries, sorted by
              name, unchanged (each with name, uuid, state, reason, cause, severity, summary, findings, remediation,
              safe_to_resume, safe_to_resume_reason, responsive, unresponsive_reason, paused_since,
              paused_for_seconds, paused_since_source, disks with their filesystem, block device, endpoints and
              pool, job, control, watchdog_action, on_lockfailure, on_crash, log, errors).
            - See the module's documentation for each field.
          type: list
          elements: dict
        unresponsive:
          description:
            - The module's RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause.unresponsive) entries,
              sorted by name.
          type: list
          elements: dict
        drbd:
          description:
            - The host's DRBD health, where kvm_pause_facts found the DRBD module loaded, else V(null)
              (C(kernel_version), C(resources) as in the report's top-level C(drbd), without C(host), C(summary)
              with the count per verdict and the worst one, C(errors)).
          type: dict
    causes:
      description:
        - The paused and crashed domains of the fleet grouped by cause; critical causes first, then by count and
          name.
      type: list
      elements: dict
      contains:
        cause:
          description: The cause, for example V(storage_full) (the causes are listed in the diagnostics guide).
          type: str
        severity:
          description: V(critical), V(warning) or V(info).
          type: str
        count:
          description: Domains with this cause.
          type: int
        safe_to_resume:
          description: How many of them are safe to resume.
          type: int
        domains:
          description: The domains, sorted by host and name.
          type: list
          elements: dict
          contains:
            host:
              description: Inventory host name.
              type: str
            name:
              description: Domain name.
              type: str
            state:
              description: V(paused) or V(crashed).
              type: str
            safe_to_resume:
              description: Whether the diagnosis says it is safe to resume.
              type: bool
            summary:
              description: The diagnosis in one line.
              type: str
    drbd:
      description:
        - Every DRBD resource of the fleet's hosts (from kvm_pause_facts, where the DRBD module is loaded), worst
          verdict first (V(split-brain), V(diskless), V(no-quorum), V(suspended), V(disconnected), V(degraded),
          V(syncing), V(healthy)), then by host and name. Empty without DRBD.
      type: list
      elements: dict
      contains:
        host:
          description: Inventory host name.
          type: str
        name:
          description: The DRBD resource.
          type: str
        verdict:
          description: What kvmops.fleet.drbd_facts says about it (see the DR guide).
          type: str
        severity:
          description: V(critical), V(warning), V(info) or V(ok).
          type: str
        role:
          description: This host's role (V(Primary), V(Secondary)).
          type: str
        minors:
          description: The DRBD minors of its volumes (C(/dev/drbdN)).
          type: list
          elements: int
        disk_states:
          description: This host's disk state per volume (V(UpToDate), V(Diskless), ...).
          type: list
          elements: str
        quorum:
          description: DRBD 9, whether every volume has quorum; V(null) on DRBD 8.4.
          type: bool
        suspended:
          description: Whether DRBD suspended its I/O.
          type: bool
        peers:
          description: Each peer's name (or address), connection state, role and disk state per volume.
          type: list
          elements: dict
        out_of_sync_bytes:
          description: Bytes the peers lack (the most of any peer), or V(null) when DRBD does not say.
          type: int
        split_brain:
          description: Whether a split brain is detected (evidence in drbd_facts).
          type: bool
        summary:
          description: The verdict in one line.
          type: str
        remediation:
          description: What to do, as drbd_facts says.
          type: list
          elements: str
    pause_risks:
      description:
        - The pause-risk forecast beside the pauses, present only when O(risks) was given (the diagnostics role's
          C(diagnostics_forecast=true)).
      type: dict
      version_added: 0.2.0
      contains:
        summary:
          description:
            - C(hosts), C(hosts_forecast), C(storages) (forecast storages), C(overcommitted), C(at_risk_domains)
              (counts) and C(by_severity) (risks per severity, all three keys always).
          type: dict
          sample: {hosts: 2, hosts_forecast: 1, storages: 1, overcommitted: 1, at_risk_domains: 2,
                   by_severity: {critical: 0, warning: 2, info: 0}}
        hosts:
          description:
            - Every host, sorted by name, with C(name), C(status) (V(forecast), V(unreachable), V(failed),
              V(not_forecast)), C(complete), C(message), C(errors) and C(collected_at).
          type: list
          elements: dict
        storages:
          description:
            - Every storage with a risk, worst first, then by host and key. C(host), C(key), C(kind), C(name),
              C(severity), C(overcommitted), C(total_bytes), C(free_bytes) (free to QEMU now),
              C(remaining_growth_bytes) (what its disks can still claim), C(headroom_bytes) (free minus growth),
              C(would_pause), C(would_see_errors), C(would_drop_writes), C(can_fill_alone), C(first_to_pause),
              C(actions), and C(paused_now) (the host's domains paused right now).
          type: list
          elements: dict
        risks:
          description:
            - Every other risk (V(write_errors_in_guest), V(writes_dropped), V(thin_pool_metadata), V(watchdog_pause),
              V(lockfailure_pause), V(memory_overcommit), V(hugepages_short)), worst first, each with C(host), C(kind),
              C(severity), C(storage), C(domains), C(summary), C(headroom_bytes), C(actions).
          type: list
          elements: dict
"""


def _usable_previous(previous):
    """The previous report when it has the report's shape; None otherwise (it is then ignored, as documented)."""
    if isinstance(previous, (str, bytes)):
        try:
            previous = json.loads(previous)
        except ValueError:
            return None
    try:
        check_report(previous, COUNT_KEYS)
    except ReportInputError:
        return None
    return previous


def fleet_report(results, generated_at=None, previous=None, risks=None):
    try:
        check_results(results)
        if risks is not None:
            check_risk_results(risks)
        return build_report(results, generated_at=generated_at, previous=_usable_previous(previous), risks=risks)
    except (FleetReportError, ReportInputError) as e:
        raise AnsibleFilterError(f"kvmops.fleet.fleet_report: {e}") from e


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report}
