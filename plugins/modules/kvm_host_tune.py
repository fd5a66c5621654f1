#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_host_tune
short_description: Tune a KVM host's kernel (hugepages, I/O schedulers, KSM, THP, sysctls, tuned), live and persisted
version_added: 0.1.0
description:
  - Sets the host knobs a KVM hypervisor is usually tuned with, live and so that a reboot keeps them, and reads
    every one back afterwards.
  - Live values are written where the kernel takes them (C(/sys), C(/proc/sys)); what a reboot keeps goes to
    files the module owns, each written from this task's options (an option left out is not in them, and a
    file with nothing left to hold is removed)
    C(/etc/sysctl.d/90-kvmops-fleet.conf) (O(sysctls), O(numa_balancing)),
    C(/etc/udev/rules.d/90-kvmops-fleet-io.rules) (O(io_schedulers)) and the boot-time unit
    C(kvmops-host-tune.service) (2M hugepages per node, O(ksm), O(thp)), enabled for C(multi-user.target).
  - 1G hugepages are set live; only the kernel command line keeps them across a reboot, which the module does not
    edit. What it needs there is returned in RV(reboot_required). The module never reboots.
  - Every option is checked before anything changes, first against its own range, then against the host (NUMA
    nodes that exist, hugepages within a node's memory, schedulers each matched disk offers, tuned profiles the
    host has).
  - After the apply every knob is read back. The task fails naming the knob, the wanted and the actual value, and
    the file that overrides it when one does (a C(sysctl.d) file or C(/etc/sysctl.conf) read after the module's
    file, a udev rule read after the module's rule, or the tuned profile; tuned starts after udev at boot, so
    its C([disk]) C(readahead) and C(elevator) and its C([sysfs]) queue values win over the udev rule, and its
    C([sysctl]) values win when C(reapply_sysctl) is off in C(/etc/tuned/tuned-main.conf)). The profile checked
    is O(tuned_profile), or when that is not given the one tuned applies at boot if C(tuned.service) is enabled.
  - If a write fails after others were made, the task fails with V(changed=true); RV(changes) lists what was
    applied and the message says what was not.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Predicts the same changes and diff as the real run (and fails on a file that overrides a knob), changes
        nothing.
  diff_mode:
    support: full
    details:
      - The diff shows every file that would change and the live values before and after.
options:
  hugepages:
    description:
      - Hugepages to reserve, per NUMA node and page size. Each node and size at most once.
    type: list
    elements: dict
    suboptions:
      node:
        description:
          - NUMA node (from V(0) to V(1023)); it must exist on the host. Not given means every node of the host,
            each with O(hugepages[].count) pages.
        type: int
      size:
        description:
          - Page size. V(1G) needs a CPU with the C(pdpe1gb) flag and is persisted only by the kernel command line
            (see RV(reboot_required)).
        type: str
        choices: [2M, 1G]
        default: 2M
      count:
        description:
          - Pages to reserve on the node (from V(0) to V(4294967295)); all sizes of one node together must fit in the
            node's memory.
        type: int
        required: true
  numa_balancing:
    description:
      - Automatic NUMA balancing (C(kernel.numa_balancing)). Turn it off on hosts whose guests are pinned to NUMA
        nodes. Not given leaves it alone.
    type: bool
  sysctls:
    description:
      - Sysctls to set, by name, each an integer within the kernel's range. Known names
        C(vm.swappiness) (0 to 200), C(vm.dirty_ratio), C(vm.dirty_background_ratio) (0 to 100),
        C(vm.dirty_bytes), C(vm.dirty_background_bytes) (0 to 2^63-1; not together with the matching ratio),
        C(vm.dirty_expire_centisecs), C(vm.dirty_writeback_centisecs), C(vm.vfs_cache_pressure),
        C(vm.min_free_kbytes), C(vm.max_map_count) (0 to 2^31-1), C(vm.zone_reclaim_mode) (0 to 7),
        C(vm.overcommit_memory) (0 to 2), C(kernel.sched_autogroup_enabled) (0 or 1).
    type: dict
  io_schedulers:
    description:
      - I/O queue settings per disk match, set live in C(/sys/block/DEV/queue) and kept by one udev rule file. Every
        entry that matches a disk applies, in order; a later entry's setting wins (as udev applies the lines).
      - Only disks with a device behind them are matched (not loop, device-mapper, md or zram).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Kernel name glob, such as V(vd*) or V(nvme*n1) (1 to 64 characters of letters, digits, V(*?[]!_.:-)).
        type: str
        default: '*'
      rotational:
        description: Match only rotational (V(true)) or only non-rotational (V(false)) disks.
        type: bool
      transport:
        description: Match only disks on this transport.
        type: str
        choices: [nvme, virtio, scsi]
      scheduler:
        description:
          - I/O scheduler, such as V(none), V(mq-deadline), V(bfq), V(kyber). Every matched disk must offer it.
        type: str
      read_ahead_kb:
        description: Read-ahead in KiB (from V(0) to V(4294967295)).
        type: int
      nr_requests:
        description: Request queue depth (from V(4) to V(65536)); the disk's own limit is checked by the kernel.
        type: int
  tuned_profile:
    description:
      - tuned profile to activate with C(tuned-adm), such as V(virtual-host). It must be one the host has. Not
        given leaves tuned alone.
      - C(tuned.service) is enabled and started first when it is not (the daemon applies the profile at every
        boot; RV(changes) says V(enabled and started tuned.service)), then the profile is activated, and only then
        are the other knobs written, so the values given here win over the profile's where tuned has already
        applied it; where tuned would apply its own value again at its next start, the task fails naming the
        profile file (see the description).
    type: str
  tuned_isolated_cores:
    description:
      - Host CPUs (cpuset, such as V(2-7)) that tuned's V(cpu-partitioning) profile isolates for pinned vCPUs;
        only with O(tuned_profile=cpu-partitioning). Every CPU must exist and at least one must stay with the host.
      - Written as C(isolated_cores) to C(/etc/tuned/cpu-partitioning-variables.conf) (its other lines kept), then the
        profile is applied again. tuned puts the isolation on the kernel command line, so it takes effect at the
        next boot; until the kernel isolates these CPUs, RV(reboot_required) says so.
    type: str
  tuned_missing:
    description:
      - What to do when O(tuned_profile) is given but tuned is not installed; V(skip) returns it in RV(not_done).
    type: str
    choices: [fail, skip]
    default: fail
  ksm:
    description: Kernel same-page merging (C(/sys/kernel/mm/ksm)). Options not given are left alone.
    type: dict
    suboptions:
      run:
        description:
          - V(merge) runs the merging thread (C(run) 1), V(stop) stops it and keeps merged pages (C(run) 0),
            V(unmerge) stops it and unmerges every merged page (C(run) 2).
        type: str
        choices: [stop, merge, unmerge]
      pages_to_scan:
        description: Pages scanned per wake-up (from V(1) to V(4294967295)).
        type: int
      sleep_millisecs:
        description: Milliseconds between wake-ups (from V(0) to V(4294967295)).
        type: int
      merge_across_nodes:
        description:
          - Merge pages of different NUMA nodes. Changing it unmerges every merged page first (C(run) 2), as the
            kernel refuses the change while pages are merged.
        type: bool
  thp:
    description: Transparent hugepages (C(/sys/kernel/mm/transparent_hugepage)). Options not given are left alone.
    type: dict
    suboptions:
      enabled:
        description: When the kernel backs memory with transparent hugepages.
        type: str
        choices: [always, madvise, never]
      defrag:
        description: How hard the kernel compacts memory for them.
        type: str
        choices: [always, defer, defer+madvise, madvise, never]
  var_prefix:
    description:
      - Put before the option names in messages, so that they name the caller's variables (the
        P(kvmops.fleet.tuning#role) role passes V(tuning_), and a message starts with C(tuning_hugepages[0].node)).
        Lower-case letters, digits and V(_), at most 32.
    type: str
  _root:
    description:
      - Private, for tests; do not set. The directory the module takes as C(/) for every file it reads or writes and
        every tool it runs (an absolute path).
    type: str
    default: /
notes:
  - Nothing is rebooted; RV(reboot_required) says what needs a reboot (or the kernel command line) to last.
  - The P(kvmops.fleet.tuning#role) role calls this module; the tuning guide says what each knob does for KVM and
    when not to use it.
seealso:
  - name: Hugetlbfs pages
    description: The kernel's documentation of hugepages per NUMA node.
    link: https://docs.kernel.org/admin-guide/mm/hugetlbpage.html
  - name: sysctl.d
    description: The order in which sysctl files are read.
    link: https://www.freedesktop.org/software/systemd/man/latest/sysctl.d.html
  - module: kvmops.fleet.kvm_tune
"""

EXAMPLES = r"""
- name: Hugepages on both nodes, deadline for virtio disks, NUMA balancing and KSM off
  kvmops.fleet.kvm_host_tune:
    hugepages:
      - node: 0
        count: 512
      - node: 1
        count: 512
    numa_balancing: false
    io_schedulers:
      - transport: virtio
        scheduler: mq-deadline
        read_ahead_kb: 128
    ksm:
      run: stop
    thp:
      enabled: madvise
    sysctls:
      vm.swappiness: 10
    tuned_profile: virtual-host
    tuned_missing: skip
  register: host_tune

- name: Say what needs a reboot
  ansible.builtin.debug:
    var: host_tune.reboot_required
"""

RETURN = r"""
changed:
  description: Whether the host was (or in check mode would be) changed.
  returned: always
  type: bool
  sample: true
changes:
  description: What was (or would be) changed, in order.
  returned: always
  type: list
  elements: str
  sample: ["wrote /etc/sysctl.d/90-kvmops-fleet.conf", "sysctl vm.swappiness = 10"]
files:
  description: The files the module keeps the settings in that exist after the run.
  returned: always
  type: list
  elements: str
  sample: ["/etc/sysctl.d/90-kvmops-fleet.conf", "/etc/systemd/system/kvmops-host-tune.service"]
reboot_required:
  description: What is set now but kept across a reboot only after a step the module does not take.
  returned: always
  type: list
  elements: str
  sample: ["hugepages 1G: set now, but kept across a reboot only by the kernel command line: add ..."]
not_done:
  description: What was not done, and why (tuned not installed with O(tuned_missing=skip)).
  returned: always
  type: list
  elements: str
  sample: ["tuned_profile: tuned-adm is not installed"]
knobs:
  description: Every knob the task sets, as read back after the run (before it, in check mode).
  returned: success
  type: dict
  sample: {"hugepages node0 2M": "512", "sysctl vm.swappiness": "10", "vdb queue/scheduler": "mq-deadline"}
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    UINT_MAX,
    Cpuset,
    Custom,
    Int,
    OptionError,
    Text,
    check,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_plan
from ansible_collections.kvmops.fleet.plugins.module_utils.host._tune_io import (
    ApplyError,
    apply,
    read_host,
    tuned_active,
    tuned_apply,
    tuned_enabled_profiles,
    tuned_profiles_read,
    tuned_service,
    tuned_service_start,
    tuned_state,
)

ARGUMENT_SPEC = {
    "hugepages": {
        "type": "list",
        "elements": "dict",
        "options": {
            "node": {"type": "int"},
            "size": {"type": "str", "choices": ["2M", "1G"], "default": "2M"},
            "count": {"type": "int", "required": True},
        },
    },
    "numa_balancing": {"type": "bool"},
    "sysctls": {"type": "dict"},
    "io_schedulers": {
        "type": "list",
        "elements": "dict",
        "options": {
            "name": {"type": "str", "default": "*"},
            "rotational": {"type": "bool"},
            "transport": {"type": "str", "choices": ["nvme", "virtio", "scsi"]},
            "scheduler": {"type": "str"},
            "read_ahead_kb": {"type": "int"},
            "nr_requests": {"type": "int"},
        },
    },
    "tuned_profile": {"type": "str"},
    "tuned_isolated_cores": {"type": "str"},
    "tuned_missing": {"type": "str", "choices": ["fail", "skip"], "default": "fail"},
    "ksm": {
        "type": "dict",
        "options": {
            "run": {"type": "str", "choices": ["stop", "merge", "unmerge"]},
            "pages_to_scan": {"type": "int"},
            "sleep_millisecs": {"type": "int"},
            "merge_across_nodes": {"type": "bool"},
        },
    },
    "thp": {
        "type": "dict",
        "options": {
            "enabled": {"type": "str", "choices": ["always", "madvise", "never"]},
            "defrag": {"type": "str", "choices": ["always", "defer", "defer+madvise", "madvise", "never"]},
        },
    },
    "var_prefix": {"type": "str"},
    "_root": {"type": "str", "default": "/"},
}
_PREFIX = r"^[a-z0-9_]{1,32}$"
# every option's rule (common/_validate.py), checked before anything is read; what depends on the host (nodes,
# node memory, offered schedulers, tuned profiles) follows in _tune_plan.validate, still before any change
RULES = {
    "hugepages": Custom(_tune_plan.check_hugepages, "each NUMA node and page size once"),
    "hugepages[].node": Int(0, _tune_plan.MAX_NUMNODES - 1, "Linux's MAX_NUMNODES; then a node the host has"),
    "hugepages[].count": Int(0, UINT_MAX, "pages; then within the node's memory"),
    "sysctls": Custom(_tune_plan.check_sysctls, "the known sysctls, each within the kernel's range"),
    "io_schedulers": Custom(_tune_plan.check_io_schedulers, "each match once, each entry setting something"),
    "io_schedulers[].name": Text("a kernel device name glob", pattern=r"^[A-Za-z0-9*?\[\]!_.:-]{1,64}$", example="vd*"),
    "io_schedulers[].scheduler": Text("an I/O scheduler name", pattern=r"^[a-z0-9-]{1,32}$", example="mq-deadline"),
    "io_schedulers[].read_ahead_kb": Int(0, UINT_MAX, "KiB, the kernel stores it as an unsigned long of pages"),
    "io_schedulers[].nr_requests": Int(4, 65536, "BLKDEV_MIN_RQ is 4; the disk's tag depth bounds it further"),
    "tuned_profile": Text("a tuned profile name", pattern=r"^[A-Za-z0-9_.+-]{1,64}$", example="virtual-host"),
    "tuned_isolated_cores": Cpuset(),
    "ksm.pages_to_scan": Int(1, UINT_MAX, "the kernel refuses 0 and stores an unsigned int"),
    "ksm.sleep_millisecs": Int(0, UINT_MAX, "milliseconds, an unsigned int"),
    "var_prefix": Text("the prefix of the caller's variable names", pattern=_PREFIX, example="tuning_", max_chars=32),
    "_root": Text("an absolute directory", pattern=r"^/", example="/"),
}


def desired_from_params(p):
    return {
        "hugepages": p["hugepages"],
        "numa_balancing": p["numa_balancing"],
        "sysctls": p["sysctls"],
        "io_schedulers": p["io_schedulers"],
        "ksm": p["ksm"],
        "thp": p["thp"],
    }


def _tuned(module, root, runner, host):
    """-> (tuned state or None, change (before, after) or None, not_done, isolated plan or None)."""
    p = module.params
    if p["tuned_profile"] is None:
        if p["tuned_isolated_cores"] is not None:
            raise _tune_plan.HostTuneError("tuned_isolated_cores: only used with tuned_profile=cpu-partitioning")
        return None, None, [], None
    isolated = None
    if p["tuned_isolated_cores"] is not None:
        isolated = _tune_plan.plan_isolated(p["tuned_isolated_cores"], p["tuned_profile"], host)
    state = tuned_state(root, runner)
    if state is None:
        if p["tuned_missing"] == "skip":
            return None, None, ["tuned_profile: tuned-adm is not installed"], None
        raise _tune_plan.HostTuneError(
            "tuned_profile: tuned-adm is not installed on this host (install tuned, or set tuned_missing=skip)"
        )
    if p["tuned_profile"] not in state["profiles"]:
        raise _tune_plan.HostTuneError(
            f"tuned_profile: unknown profile {p['tuned_profile']!r} (this host has: {', '.join(state['profiles'])})"
        )
    vars_changed = isolated is not None and isolated["text"] != host["tuned_vars"]
    change = (state["active"], p["tuned_profile"]) if state["active"] != p["tuned_profile"] or vars_changed else None
    return state, change, [], isolated


def run(module):
    p = module.params
    root = p["_root"]
    desired = desired_from_params(p)

    def runner(argv):
        return module.run_command(argv)

    host = read_host(root, sorted(p["sysctls"] or {}))
    result = _tune_plan.plan(desired, host)
    tuned, tuned_change, not_done, isolated = _tuned(module, root, runner, host)
    if isolated is not None:
        result["reboot_required"] += isolated["reboot"]
        if isolated["text"] != host["tuned_vars"]:
            result["files"][_tune_plan.TUNED_VARS_FILE] = isolated["text"]
            result["files_changed"].append(_tune_plan.TUNED_VARS_FILE)
            host["files"][_tune_plan.TUNED_VARS_FILE] = host["tuned_vars"]
    for warning in result["warnings"]:
        module.warn(warning)
    live = list(result["live"])
    service = tuned_service(root, runner) if tuned is not None else None
    start_tuned = service is not None and not (service["enabled"] and service["active"])
    if start_tuned:
        before = "/".join(
            ("enabled" if service["enabled"] else "disabled", "active" if service["active"] else "inactive")
        )
        live.insert(0, ("tuned.service", "systemctl", before, "enabled/active"))
    if tuned_change:
        live.insert(int(start_tuned), ("tuned profile", "tuned-adm", tuned_change[0], tuned_change[1]))
    changes = [f"{'removed' if result['files'][f] is None else 'wrote'} {f}" for f in result["files_changed"]]
    changes += [f"enabled {_tune_plan.UNIT_NAME}"] * result["enable"] + [f"disabled {_tune_plan.UNIT_NAME}"] * result[
        "disable"
    ]
    changes += ["enabled and started tuned.service"] * start_tuned
    changes += [f"{knob} = {after}" for knob, _p, _b, after in live if knob != "tuned.service"]
    out = {
        "changed": bool(changes),
        "changes": changes,
        "files": sorted(f for f, text in result["files"].items() if text is not None),
        "reboot_required": result["reboot_required"],
        "not_done": not_done,
    }
    if module._diff:
        diff = [
            {
                "before_header": f,
                "after_header": f,
                "before": host["files"].get(f) or "",
                "after": result["files"][f] or "",
            }
            for f in result["files_changed"]
        ]
        if live:
            diff.append(_tune_plan.live_diff(live))
        out["diff"] = diff
    if module.check_mode or not out["changed"]:
        after = _tune_plan.with_files(host, result["files"]) if module.check_mode else host
    else:
        try:
            done = []
            # tuned first: starting it or switching its profile rewrites read-ahead, sysctls and more, and the
            # knobs declared here are meant to win over the profile's
            if start_tuned:
                tuned_service_start(root, runner, done)
            if tuned_change:
                tuned_apply(tuned["tool"], runner, p["tuned_profile"], done)
            if start_tuned or tuned_change:
                result = dict(result, live=_reassert(result, read_host(root, sorted(p["sysctls"] or {}))))
            apply(root, result, runner, done)
        except ApplyError as exc:
            exc.not_done = [c for c in changes if c not in exc.done]
            raise
        after = read_host(root, sorted(p["sysctls"] or {}))
        if isolated is not None:
            after["files"][_tune_plan.TUNED_VARS_FILE] = after["tuned_vars"]
    problems = _tune_plan.verify(desired, after, result["wanted"], result["files"], live=not module.check_mode)
    if tuned is not None and not module.check_mode:
        active = tuned_active(tuned["tool"], runner)
        if active != p["tuned_profile"]:
            problems.append(f"tuned profile: wanted {p['tuned_profile']}, actual {active or '(none active)'}")
        service = tuned_service(root, runner)
        if service is not None and not (service["enabled"] and service["active"]):
            problems.append(
                f"tuned.service: wanted enabled and active, actual {'enabled' if service['enabled'] else 'disabled'}"
                f" and {'active' if service['active'] else 'inactive'} (the profile would not be applied at boot)"
            )
    problems += _tuned_overrides(root, desired, after, result["wanted"], [p["tuned_profile"]] if tuned else None)
    out["knobs"] = {knob: _tune_plan.current_value(after, knob, path) for knob, path, _v in result["wanted"]}
    if problems:
        out["msg"] = "verify after apply: " + "; ".join(problems)
        out["failed"] = True
    return out


def _reassert(result, host):
    """The plan's live values, plus every wanted knob that tuned changed when it started or switched profile (in
    the plan's order, after the planned ones), so that the declared values are what stays live."""
    planned = {knob for knob, _p, _b, _a in result["live"]}
    extra = []
    for knob, path, value in result["wanted"]:
        now = _tune_plan.current_value(host, knob, path)
        if knob not in planned and now != value:
            extra.append((knob, path, now, value))
    return list(result["live"]) + extra


def _tuned_overrides(root, desired, host, wanted, names):
    """Knobs that the tuned profile sets otherwise when tuned applies it (it starts after udev at boot): the
    profile set here, or (none set) the ones tuned applies at boot when it is enabled."""
    names = names if names is not None else tuned_enabled_profiles(root)
    if not names:
        return []
    settings, reapply = tuned_profiles_read(root, names)
    per_dev = _tune_plan.device_settings(desired, host)
    wants = {knob: value for knob, _p, value in wanted}
    return [
        f"{knob}: wanted {wants[knob]}, actual {_tune_plan.current_value(host, knob, '') or '(missing)'} now but "
        f"{theirs} when tuned applies profile {' '.join(names)} (at its start and after a reboot): {path} sets {spec}"
        for knob, theirs, path, spec in _tune_plan.tuned_overrides(settings, per_dev, wanted, reapply)
        if knob in wants
    ]


def _named(module, msg):
    """A message that starts with an option's path names the caller's variable (O(var_prefix))."""
    prefix = module.params["var_prefix"]
    if not prefix or not re.match(_PREFIX, prefix) or msg.startswith("var_prefix"):
        return msg
    return prefix + msg if re.match(r"^[a-z_]+[\[.:]", msg) else msg


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:  # check_module(), with the caller's variable names (O(var_prefix)) in the message
        check(module.params, ARGUMENT_SPEC, RULES)
        out = run(module)
    except (OptionError, _tune_plan.HostTuneError) as exc:  # refused before anything changed
        module.fail_json(msg=_named(module, str(exc)), changed=False, changes=[], reboot_required=[])
    except ApplyError as exc:
        if exc.done:
            why = f". Applied: {', '.join(exc.done)}; not applied: {', '.join(getattr(exc, 'not_done', [])) or '-'}"
        else:
            why = "; nothing was changed"
        module.fail_json(msg=f"applying the host tuning: {exc}{why}", changed=bool(exc.done), changes=exc.done)
    if out.pop("failed", False):
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
