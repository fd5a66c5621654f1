#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_tune
short_description: Declare one libvirt domain's CPU, NUMA, memory, disk and NIC tuning, applied idempotently
version_added: 0.1.0
description:
  - Declares the tuning of one domain (vCPU and emulator pinning, I/O threads, NUMA memory policy, memory
    backing, per-disk driver settings and I/O limits, per-interface multiqueue and bandwidth) and applies
    only what differs.
  - Changes go to the persistent definition and, on a running domain, live where libvirt can change them
    (O(apply)). What libvirt can only change at the next boot is written to the persistent definition and
    returned in RV(pending_restart). The module never restarts a domain.
  - Every option is checked before anything changes, first against its own range (below), then against the
    domain and the host (host CPUs and NUMA nodes, reserved hugepages, disk targets, interface MACs, vCPU
    numbers). A cpuset is checked against these bounds before any of its ranges is expanded. Each vCPU, I/O
    thread, disk and interface may be listed once; entries are never merged.
  - If a live change fails after the persistent definition was written (or after other live changes), the task
    fails with V(changed=true); RV(changes) lists what was applied and the message names what was applied and
    what was not. The definition is not restored, as it takes effect at the next boot, and the next run retries
    the live changes that still differ.
  - With O(placement=auto) a deterministic NUMA planner places the domain in one NUMA cell when it fits,
    pins vCPUs to sibling pairs and keeps O(housekeeping_cpus) and CPUs pinned by other domains free.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.IDEMPOTENT
  - kvmops.fleet._libvirt
attributes:
  check_mode:
    support: full
    details:
      - Predicts the same changes, diff and RV(pending_restart) as the real run and changes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows before and after XML of each changed section (persistent and live).
options:
  domain:
    description: Name of the domain.
    type: str
    required: true
    aliases: [name]
  apply:
    description:
      - Where to apply the tuning.
      - V(both) changes the persistent definition and, if the domain runs, the running domain where libvirt
        allows it; the rest is returned in RV(pending_restart).
      - V(config) changes only the persistent definition.
      - V(live) changes only the running domain, and fails before changing anything when a requested change
        cannot be made live or the domain is not running.
    type: str
    choices: [both, config, live]
    default: both
  placement:
    description:
      - V(auto) asks the NUMA planner for O(vcpupin), O(emulatorpin) and O(numatune) (mode V(strict), the
        chosen cell). The plan only depends on the host topology, the domain's vCPU count and memory and the
        CPUs other domains pin, so a second run plans the same.
      - V(manual) uses the options as given.
      - With V(auto), O(vcpupin), O(emulatorpin) and O(numatune.nodeset) must not be given.
    type: str
    choices: [manual, auto]
    default: manual
  housekeeping_cpus:
    description:
      - Host CPUs (cpuset) the planner never gives to vCPUs; the emulator threads are pinned there.
      - Only used with O(placement=auto).
    type: str
  vcpupin:
    description:
      - Pin vCPUs to host CPUs. vCPUs not listed keep their pinning.
    type: list
    elements: dict
    suboptions:
      vcpu:
        description: vCPU number, from 0 to the domain's vCPU count - 1. Each vCPU at most once.
        type: int
        required: true
      cpuset:
        description:
          - Host CPUs in libvirt cpuset syntax, for example V(2-3) or V(0-7,^4) (ASCII digits, V(N), V(N-M),
            V(^N), commas). Every CPU must exist on the host.
        type: str
        required: true
  emulatorpin:
    description: Host CPUs (cpuset) for the QEMU emulator threads.
    type: str
  iothreads:
    description: I/O threads of the domain.
    type: dict
    suboptions:
      count:
        description:
          - Number of I/O threads (IDs 1..count). Live changes add or remove threads.
          - From 0 to the host's CPU count (more threads only compete for the same CPUs); a domain that already
            has more may keep them.
        type: int
      pin:
        description: Pin I/O threads to host CPUs.
        type: list
        elements: dict
        suboptions:
          iothread:
            description: I/O thread ID, from 1 to O(iothreads.count) (or the domain's count). Each ID at most once.
            type: int
            required: true
          cpuset:
            description: Host CPUs (cpuset).
            type: str
            required: true
  numatune:
    description:
      - NUMA memory policy. On a running domain libvirt changes only the nodeset, and only in mode V(strict)
        or V(restrictive) when the mode stays the same; everything else is pending until the next boot.
    type: dict
    suboptions:
      mode:
        description: Memory policy mode.
        type: str
        choices: [strict, preferred, interleave, restrictive]
      nodeset:
        description: Host NUMA nodes (cpuset syntax).
        type: str
  memory_backing:
    description: Memory backing. Takes effect at the next boot.
    type: dict
    suboptions:
      hugepages:
        description:
          - Back guest memory with hugepages of O(memory_backing.page_size). The pages must be reserved on the
            host (on the O(numatune.nodeset) nodes when given), else the task fails before changing anything.
        type: bool
      page_size:
        description:
          - Hugepage size in KiB (V(2048) or V(1048576) on x86_64). A power of two from V(64) to V(16777216)
            (16 GiB); with O(memory_backing.hugepages) also one of the host's hugepage sizes.
        type: int
        default: 2048
      nosharepages:
        description: Keep KSM from merging this domain's memory.
        type: bool
      locked:
        description: Lock guest memory in host RAM (no swapping).
        type: bool
  disks:
    description:
      - Per-disk settings, matched by target device. Driver settings take effect at the next boot; O(disks[].iotune)
        is changed live. Each target at most once.
    type: list
    elements: dict
    suboptions:
      target:
        description: Target device, for example V(vda).
        type: str
        required: true
      cache:
        description: Host page cache mode.
        type: str
        choices: [none, writethrough, writeback, directsync, unsafe, default]
      io:
        description: Asynchronous I/O backend.
        type: str
        choices: [native, threads, io_uring]
      discard:
        description: Pass guest discard requests to the storage (V(unmap)) or not (V(ignore)).
        type: str
        choices: [unmap, ignore]
      error_policy:
        description:
          - What QEMU does on a write error. V(stop) pauses the domain so that nothing is lost and the cause
            (for example ENOSPC) can be fixed and the domain resumed; see the tuning guide.
        type: str
        choices: [stop, report, ignore, enospace]
      rerror_policy:
        description: What QEMU does on a read error.
        type: str
        choices: [stop, report, ignore]
      iothread:
        description: I/O thread (ID) that serves the disk; one the domain has (or O(iothreads.count) gives).
        type: int
      iotune:
        description:
          - I/O limits (as C(virsh blkdeviotune)); keys such as V(total_bytes_sec), V(read_iops_sec),
            V(write_bytes_sec_max), V(size_iops_sec). V(0) removes a limit. Keys not given are kept.
          - Values are integers from V(0) to V(1000000000000000) (libvirt's limit for QEMU). A C(total_*) limit
            beside its C(read_*) or C(write_*) limit, and a C(*_max) below its rate, are refused (libvirt would
            refuse them only when applying).
        type: dict
  interfaces:
    description:
      - Per-interface settings, matched by O(interfaces[].mac) or O(interfaces[].target) (the host tap device of a
        running domain). Each interface at most once (MACs compare case-insensitively).
    type: list
    elements: dict
    suboptions:
      mac:
        description: MAC address of the interface, for example V(52:54:00:12:34:56).
        type: str
      target:
        description: Host target device of a running domain's interface (for example V(vnet3)).
        type: str
      queues:
        description:
          - virtio multiqueue queue count, from V(1) to V(256) (one tap queue each; Linux allows 256). Takes effect
            at the next boot.
          - Not for interfaces of type V(user).
        type: int
      bandwidth:
        description:
          - Bandwidth limits (as C(virsh domiftune)), in the persistent definition and, on a running domain, live.
            Only for interfaces of type V(network), V(bridge), V(direct), V(ethernet).
          - libvirt sets them with C(tc) on the host side device. Before any live call the module checks that the
            kernel of a local libvirt has what that needs (C(sch_htb), C(sch_sfq), C(cls_fw) for inbound limits;
            C(sch_ingress), C(cls_u32), C(act_police) for outbound limits). Where something is missing, O(apply=live)
            fails naming it, and O(apply=both) writes the definition, returns the limit in RV(pending_restart) and
            warns; a domain with such a limit in its definition does not start on that host.
          - A direction given is replaced whole (a peak or burst left out is removed). An
            O(interfaces[].bandwidth.inbound.average) of V(0) removes that direction's limit.
          - Every value is an integer from V(0) to V(4294967295) (libvirt takes them as unsigned int).
        type: dict
        suboptions:
          inbound:
            description: Traffic into the guest.
            type: dict
            suboptions:
              average:
                description: Average rate in KiB/s.
                type: int
                required: true
              peak:
                description: Peak rate in KiB/s.
                type: int
              burst:
                description: Burst size in KiB.
                type: int
          outbound:
            description: Traffic out of the guest.
            type: dict
            suboptions:
              average:
                description: Average rate in KiB/s.
                type: int
                required: true
              peak:
                description: Peak rate in KiB/s.
                type: int
              burst:
                description: Burst size in KiB.
                type: int
notes:
  - The planner uses each cell's total memory (or reserved hugepages), not its momentary free memory, so that
    it plans the same on every run.
  - Interface target devices exist only while a domain runs; use O(interfaces[].mac) for shut-off domains.
seealso:
  - name: Tuning guide
    description: When to use which knob, and why error_policy=stop matters.
    link: https://github.com/kvmops/fleet/blob/main/docs/docsite/rst/guide_tuning.rst
  - name: libvirt domain XML, CPU tuning
    description: The elements this module manages.
    link: https://libvirt.org/formatdomain.html#cpu-tuning
"""

EXAMPLES = r"""
- name: Pin a database VM by hand
  kvmops.fleet.kvm_tune:
    domain: db-01
    vcpupin:
      - {vcpu: 0, cpuset: "2"}
      - {vcpu: 1, cpuset: "3"}
    emulatorpin: "0-1"
    numatune:
      mode: strict
      nodeset: "0"
  become: true

- name: Let the planner place the VM in one NUMA cell, keeping CPUs 0-1 for the host
  kvmops.fleet.kvm_tune:
    domain: web-01
    placement: auto
    housekeeping_cpus: "0-1"
  become: true

- name: Disks that pause on ENOSPC instead of corrupting, with an I/O limit; 2 virtio queues
  kvmops.fleet.kvm_tune:
    domain: web-01
    iothreads:
      count: 1
    disks:
      - target: vda
        cache: none
        io: native
        discard: unmap
        error_policy: stop
        rerror_policy: stop
        iothread: 1
        iotune:
          total_iops_sec: 2000
    interfaces:
      - mac: "52:54:00:12:34:56"
        queues: 2
        bandwidth:
          inbound: {average: 10240, peak: 20480, burst: 1024}
  become: true

- name: Hugepage backing (applied at the next boot)
  kvmops.fleet.kvm_tune:
    domain: db-01
    memory_backing:
      hugepages: true
      page_size: 2048
  become: true
  register: tune

- name: Say what waits for a reboot
  ansible.builtin.debug:
    msg: "db-01 needs a restart for {{ tune.pending_restart | join(', ') }}"
  when: tune.pending_restart | length > 0
"""

RETURN = r"""
changes:
  description:
    - What was (or in check mode would be) changed, as C(config:KIND[KEY]) and C(live:KIND[KEY]).
    - When the task fails after part of the tuning was applied, what was applied (the task then has
      V(changed=true)).
  returned: always
  type: list
  elements: str
  sample: ['config:vcpupin[0]', 'live:vcpupin[0]', 'config:disk_driver[vda]']
pending_restart:
  description:
    - Differences between the running domain and the requested tuning that only take effect at the next boot
      (the persistent definition already has them). Empty for a domain that is not running.
  returned: always
  type: list
  elements: str
  sample: ['memory_backing', 'disk_driver[vda]']
placement:
  description: The planner's plan with O(placement=auto), else V(null).
  returned: always
  type: dict
  sample: {cell: 1, nodeset: '1', vcpupin: {'0': '8,12', '1': '8,12'}, emulatorpin: '0-1', spans_cells: false}
state:
  description: Domain state (virDomainState number) when the task read it.
  returned: always
  type: int
  sample: 1
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
    CPUMASK_LEN,
    LIBVIRT_COMMON_RULES,
    UINT_MAX,
    Cpuset,
    Int,
    Keys,
    OptionError,
    Text,
    Unique,
    check_module,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.tune import _numa, _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.tune._apply_io import (
    DEFINE,
    PartialApply,
    apply_changes,
    bandwidth_blocker,
    read_host,
)

_RATE_DICT = {
    "type": "dict",
    "options": {"average": {"type": "int", "required": True}, "peak": {"type": "int"}, "burst": {"type": "int"}},
}
ARGUMENT_SPEC = {
    "domain": {"type": "str", "required": True, "aliases": ["name"]},
    **LIBVIRT_COMMON_ARGS,
    "apply": {"type": "str", "choices": ["both", "config", "live"], "default": "both"},
    "placement": {"type": "str", "choices": ["manual", "auto"], "default": "manual"},
    "housekeeping_cpus": {"type": "str"},
    "vcpupin": {
        "type": "list",
        "elements": "dict",
        "options": {"vcpu": {"type": "int", "required": True}, "cpuset": {"type": "str", "required": True}},
    },
    "emulatorpin": {"type": "str"},
    "iothreads": {
        "type": "dict",
        "options": {
            "count": {"type": "int"},
            "pin": {
                "type": "list",
                "elements": "dict",
                "options": {"iothread": {"type": "int", "required": True}, "cpuset": {"type": "str", "required": True}},
            },
        },
    },
    "numatune": {
        "type": "dict",
        "options": {
            "mode": {"type": "str", "choices": ["strict", "preferred", "interleave", "restrictive"]},
            "nodeset": {"type": "str"},
        },
    },
    "memory_backing": {
        "type": "dict",
        "options": {
            "hugepages": {"type": "bool"},
            "page_size": {"type": "int", "default": 2048},
            "nosharepages": {"type": "bool"},
            "locked": {"type": "bool"},
        },
    },
    "disks": {
        "type": "list",
        "elements": "dict",
        "options": {
            "target": {"type": "str", "required": True},
            "cache": {
                "type": "str",
                "choices": ["none", "writethrough", "writeback", "directsync", "unsafe", "default"],
            },
            "io": {"type": "str", "choices": ["native", "threads", "io_uring"]},
            "discard": {"type": "str", "choices": ["unmap", "ignore"]},
            "error_policy": {"type": "str", "choices": ["stop", "report", "ignore", "enospace"]},
            "rerror_policy": {"type": "str", "choices": ["stop", "report", "ignore"]},
            "iothread": {"type": "int"},
            "iotune": {"type": "dict"},
        },
    },
    "interfaces": {
        "type": "list",
        "elements": "dict",
        "options": {
            "mac": {"type": "str"},
            "target": {"type": "str"},
            "queues": {"type": "int"},
            "bandwidth": {"type": "dict", "options": {"inbound": _RATE_DICT, "outbound": _RATE_DICT}},
        },
    },
}


# Every option's rule (plugins/module_utils/common/_validate.py), checked before anything is read or allocated;
# what depends on the host or the domain is checked by _plan.validate() after reading them, before any change.
_CPUMASK = f"below libvirt's VIR_DOMAIN_CPUMASK_LEN ({CPUMASK_LEN})"
_RATE = "KiB/s or KiB: virDomainSetInterfaceParameters takes an unsigned int (virsh domiftune too)"
_MAC = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
RULES = {
    "domain": Text("the domain's name"),
    **LIBVIRT_COMMON_RULES,
    "housekeeping_cpus": Cpuset(),
    "vcpupin": Unique(("vcpu",)),
    "vcpupin[].vcpu": Int(0, CPUMASK_LEN - 1, f"vCPU numbers {_CPUMASK}; the domain's own count is checked next"),
    "vcpupin[].cpuset": Cpuset(),
    "emulatorpin": Cpuset(),
    "iothreads.count": Int(0, CPUMASK_LEN, f"{_CPUMASK}; then at most the host's CPUs"),
    "iothreads.pin": Unique(("iothread",)),
    "iothreads.pin[].iothread": Int(1, CPUMASK_LEN, "I/O thread IDs start at 1; then at most iothreads.count"),
    "iothreads.pin[].cpuset": Cpuset(),
    "numatune.nodeset": Cpuset("NUMA node"),
    # Linux hugetlb sizes: 64 KiB (arm64 contiguous PTEs) to 16 GiB (ppc64, arm64 with 64 KiB pages), powers of 2
    "memory_backing.page_size": Int(64, 16777216, "hugepage sizes Linux has, in KiB", power_of_two=True),
    "disks": Unique(("target",)),
    "disks[].target": Text("a disk's target device, e.g. vda", pattern=r"^[A-Za-z0-9_-]+$", example="vda"),
    "disks[].iothread": Int(1, CPUMASK_LEN, "I/O thread IDs start at 1; then one the domain has"),
    # QEMU_BLOCK_IOTUNE_MAX (libvirt src/qemu/qemu_command.h): libvirt refuses a larger limit at apply time
    "disks[].iotune": Keys(_plan.IOTUNE_KEYS, Int(0, 10**15, "libvirt's QEMU_BLOCK_IOTUNE_MAX; 0 removes the limit")),
    "interfaces": Unique(("mac", "target"), fold=True),
    "interfaces[].mac": Text("a MAC address", pattern=_MAC, example="52:54:00:12:34:56"),
    "interfaces[].target": Text("a host tap device", pattern=r"^[^/\s]{1,15}$", example="vnet3"),
    # libvirt opens one tap or macvtap queue per virtio queue: Linux MAX_TAP_QUEUES (drivers/net/tun.c, tap.c)
    "interfaces[].queues": Int(1, 256, "Linux's MAX_TAP_QUEUES"),
    **{
        f"interfaces[].bandwidth.{d}.{k}": Int(0, UINT_MAX, _RATE)
        for d in ("inbound", "outbound")
        for k in ("average", "peak", "burst")
    },
}


def desired_from_params(p: dict) -> dict:
    """Module params -> _tune's desired dict (None = leave alone)."""
    io = p.get("iothreads") or {}
    mb = p.get("memory_backing")
    where = {
        "vcpupin": {e["vcpu"]: f"vcpupin[{i}]" for i, e in enumerate(p.get("vcpupin") or [])},
        "iothreadpin": {e["iothread"]: f"iothreads.pin[{i}]" for i, e in enumerate(io.get("pin") or [])},
    }
    return {
        "where": where,
        "vcpupin": {e["vcpu"]: e["cpuset"] for e in p.get("vcpupin") or []},
        "emulatorpin": p.get("emulatorpin"),
        "iothreads": io.get("count"),
        "iothreadpin": {e["iothread"]: e["cpuset"] for e in io.get("pin") or []},
        "numatune": p.get("numatune"),
        "memory_backing": None
        if mb is None
        else {
            "hugepages": mb.get("hugepages"),
            "page_size_kib": mb.get("page_size"),
            "nosharepages": mb.get("nosharepages"),
            "locked": mb.get("locked"),
        },
        "disks": [dict(d, iotune=d.get("iotune")) for d in p.get("disks") or []],
        "interfaces": [dict(i) for i in p.get("interfaces") or []],
    }


# ---- main -------------------------------------------------------------------------------------------


def run(module):
    p = module.params
    check_timeout(p["timeout"])
    auto = p["placement"] == "auto"
    if auto and (p["vcpupin"] or p["emulatorpin"] or (p["numatune"] or {}).get("nodeset")):
        raise _plan.TuneError("placement=auto plans vcpupin, emulatorpin and numatune.nodeset: do not give them")
    started = time.monotonic()
    host = read_host(p["uri"], p["domain"], p["timeout"], auto)
    dom = host["dom"]
    topo = _numa.parse_capabilities(host["caps"])
    if not topo["cells"]:
        topo = _numa.topology_from_info(host["info"])
    config_xml = dom["inactive"]
    if config_xml is None:
        if p["apply"] != "live":
            raise _plan.TuneError(f"apply={p['apply']}: domain {p['domain']} is transient (no persistent definition)")
        config_xml = dom["live"]
    desired = desired_from_params(p)
    facts = _plan.domain_facts(config_xml)
    live_facts = _plan.domain_facts(dom["live"]) if dom["live"] else None
    placement = None
    if auto:
        housekeeping = []
        if p["housekeeping_cpus"]:
            host_cpus = _numa.all_cpus(topo)
            housekeeping = _numa.parse_cpuset(
                p["housekeeping_cpus"], "housekeeping_cpus", limit=max(host_cpus, default=0) + 1, existing=host_cpus
            )
            missing = [c for c in housekeeping if c not in host_cpus]
            if missing:
                raise _plan.TuneError(f"housekeeping_cpus: host CPU(s) {_numa.format_cpuset(missing)} do not exist")
        mb = desired["memory_backing"] or {}
        try:
            placement = _numa.plan_placement(
                topo,
                facts["vcpus"],
                facts["memory_kib"],
                pinned=host["pinned"],
                housekeeping=housekeeping,
                hugepage_kib=mb.get("page_size_kib") if mb.get("hugepages") else None,
            )
        except _numa.PlacementError as exc:
            raise _plan.TuneError(str(exc)) from None
        desired["vcpupin"] = dict(placement["vcpupin"])
        desired["emulatorpin"] = placement["emulatorpin"]
        desired["numatune"] = {"mode": (p["numatune"] or {}).get("mode") or "strict", "nodeset": placement["nodeset"]}
    _plan.validate(desired, facts, topo, live_facts)
    macs = {
        i: _plan.find_interface(spec, facts, live_facts, f"interfaces[{i}]")
        for i, spec in enumerate(desired["interfaces"])
    }
    blockers = {}

    def why_not_live(change):
        key = _plan.describe(change)
        if key not in blockers:
            blockers[key] = bandwidth_blocker(change, p["uri"])
        return blockers[key]

    result = _plan.plan(
        desired, config_xml if dom["inactive"] is not None else None, dom["live"], p["apply"], macs, why_not_live
    )
    warnings = [
        f"{key}: not changed live ({why}); it is in the persistent definition and pending_restart"
        for key, why in sorted(result["not_live"].items())
    ]
    for change in result["config_changes"]:
        why = why_not_live(change)
        if why and _plan.describe(change) not in result["not_live"]:
            warnings.append(
                f"{_plan.describe(change)}: written to the persistent definition, but {why}: libvirt will refuse to "
                "start the domain on this host with this limit"
            )
    if result["changed"] and not module.check_mode:
        left = p["timeout"] - (time.monotonic() - started)
        try:
            apply_changes(p["uri"], p["domain"], result["config_xml"], result["live_changes"], max(left, 1.0))
        except PartialApply as exc:
            # changed=true: what was applied is named in the message and returned in changes
            exc.changes = [f"config:{_plan.describe(c)}" for c in result["config_changes"] if DEFINE in exc.done]
            exc.changes += [
                f"live:{_plan.describe(c)}" for c in result["live_changes"] if f"live {_plan.describe(c)}" in exc.done
            ]
            exc.state = dom["state"]
            raise
    if (desired["memory_backing"] or {}).get("hugepages") and not _hugetlbfs_mounted():
        warnings.append(
            "memory_backing.hugepages: no hugetlbfs is mounted on this host; libvirt will refuse to start the domain "
            "until one is (e.g. /dev/hugepages) and libvirtd has been restarted to see it"
        )
    changes = [f"config:{_plan.describe(c)}" for c in result["config_changes"]]
    changes += [f"live:{_plan.describe(c)}" for c in result["live_changes"]]
    if placement is not None:
        placement = dict(placement, vcpupin={str(k): v for k, v in placement["vcpupin"].items()})
    return {
        "changed": result["changed"],
        "changes": changes,
        "pending_restart": result["pending_restart"],
        "placement": placement,
        "state": dom["state"],
        "diff": result["diff"],
        "warnings": warnings,
    }


def _hugetlbfs_mounted():
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            return any(line.split()[2:3] == ["hugetlbfs"] for line in fh)
    except OSError:
        return True  # cannot tell: no warning


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    require_libvirt(module)
    try:
        out = run(module)
    except PartialApply as exc:
        module.fail_json(msg=str(exc), changed=True, changes=exc.changes, state=exc.state)
    except (KvmError, _plan.TuneError, OptionError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    warnings = out.pop("warnings")
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
