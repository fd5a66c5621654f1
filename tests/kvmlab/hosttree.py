"""Fixture trees of a KVM host's /sys, /proc and /etc for kvm_host_tune (its private ``_root`` option), and a
stand-in for the kernel's side of a sysfs write.

A tree holds what the module reads: NUMA nodes with their memory and hugepage counters, block devices with
their queue files and transport (a ``device/subsystem`` link as the kernel has it), KSM, transparent hugepages,
the sysctls, /proc/cpuinfo and /proc/cmdline, and empty configuration directories. Plain files stand in for the
kernel's: ``kernel_write`` makes a write behave as the kernel's (the bracketed choice files keep their list and
move the brackets, a value the file does not offer fails with EINVAL), so a second run reads back what the
kernel would show.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_plan

SYSCTL_DEFAULTS = {
    "vm.swappiness": 60, "vm.dirty_ratio": 20, "vm.dirty_background_ratio": 10, "vm.dirty_bytes": 0,
    "vm.dirty_background_bytes": 0, "vm.dirty_expire_centisecs": 3000, "vm.dirty_writeback_centisecs": 500,
    "vm.vfs_cache_pressure": 100, "vm.min_free_kbytes": 67584, "vm.zone_reclaim_mode": 0,
    "vm.overcommit_memory": 0, "vm.max_map_count": 65530, "kernel.sched_autogroup_enabled": 1,
    "kernel.numa_balancing": 1,
}
# name -> (transport, rotational, schedulers file)
DISKS = {
    "vda": ("virtio", False, "[mq-deadline] none"),
    "vdb": ("virtio", False, "[mq-deadline] none"),
    "sda": ("scsi", True, "mq-deadline kyber [bfq] none"),
    "nvme0n1": ("nvme", False, "[none] mq-deadline"),
}


def _put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build(root, nodes: int = 2, node_mem_mb: int = 1024, disks=None, pdpe1gb: bool = True, cmdline: str = "",
          ksm: bool = True, thp: bool = True, numa_balancing: bool = True, cpus: int = 4) -> Path:
    """A host tree under ``root`` with ``nodes`` NUMA nodes of ``node_mem_mb`` each, ``cpus`` CPUs (none isolated)
    and ``disks`` (DISKS' names)."""
    root = Path(root)
    _put(root / "sys/devices/system/cpu/present", f"0-{cpus - 1}\n")
    _put(root / "sys/devices/system/cpu/isolated", "\n")
    for n in range(nodes):
        d = root / f"sys/devices/system/node/node{n}"
        _put(d / "meminfo", f"Node {n} MemTotal:       {node_mem_mb * 1024} kB\nNode {n} MemFree:  1 kB\n")
        for kb in (2048, 1048576):
            _put(d / f"hugepages/hugepages-{kb}kB/nr_hugepages", "0\n")
    flags = "fpu vme de pse tsc msr pae" + (" pdpe1gb" if pdpe1gb else "") + " lm"
    _put(root / "proc/cpuinfo", "".join(f"processor\t: {i}\nflags\t\t: {flags}\n\n" for i in range(max(nodes, 1))))
    _put(root / "proc/cmdline", cmdline + "\n")
    for key, value in SYSCTL_DEFAULTS.items():
        if key == "kernel.numa_balancing" and not numa_balancing:
            continue
        _put(root / ("proc/sys/" + key.replace(".", "/")), f"{value}\n")
    for i, name in enumerate(disks if disks is not None else ("vda", "vdb")):
        transport, rotational, schedulers = DISKS[name]
        dev = root / f"sys/devices/pci0000:00/0000:00:0{i}.0/{transport}{i}"
        dev.mkdir(parents=True, exist_ok=True)
        (root / f"sys/bus/{transport}").mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(root / f"sys/bus/{transport}", dev), dev / "subsystem")
        block = root / f"sys/block/{name}"
        block.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dev, block), block / "device")
        _put(block / "queue/scheduler", schedulers + "\n")
        _put(block / "queue/rotational", ("1" if rotational else "0") + "\n")
        _put(block / "queue/read_ahead_kb", "128\n")
        _put(block / "queue/nr_requests", "256\n")
    _put(root / "sys/block/loop0/queue/scheduler", "[none]\n")  # virtual: no device, never matched
    if ksm:
        for key, value in (("run", 0), ("pages_to_scan", 100), ("sleep_millisecs", 20), ("merge_across_nodes", 1)):
            _put(root / f"sys/kernel/mm/ksm/{key}", f"{value}\n")
    if thp:
        _put(root / "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
        _put(root / "sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never\n")
    for d in ("etc/sysctl.d", "etc/udev/rules.d", "etc/systemd/system", "usr/lib/sysctl.d", "usr/lib/udev/rules.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def kernel_write(path, value) -> None:
    """A sysfs write as the kernel takes it: a choice file ('a [b] c') keeps its list and moves the brackets
    (EINVAL for a value it does not offer); other files hold the value."""
    path = str(path)
    with open(path, encoding="utf-8") as fh:
        current = fh.read()
    if "[" in current:
        _active, offered = _tune_plan.parse_choice(current)
        if value not in offered:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        current = " ".join(f"[{w}]" if w == value else w for w in offered)
        value = current
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")


def tuned_adm(root, profiles=("balanced", "cpu-partitioning", "throughput-performance", "virtual-host"),
              active="balanced") -> Path:
    """A stand-in tuned-adm under ``root``/usr/sbin: ``list``, ``active`` and ``profile NAME`` over a state file
    (argv of every call appended to ``tuned-adm.log`` beside it)."""
    root = Path(root)
    state = root / "var/lib/tuned-fake"
    _put(state / "active", active + "\n")
    _put(state / "profiles", "".join(f"- {p:<24} - {p} profile\n" for p in profiles))
    script = root / "usr/sbin/tuned-adm"
    _put(script, f"""#!/bin/sh
echo "$@" >> {state}/tuned-adm.log
case "$1" in
  list) echo "Available profiles:"; cat {state}/profiles; echo "Current active profile: $(cat {state}/active)";;
  active) echo "Current active profile: $(cat {state}/active)";;
  profile) grep -q -- "- $2 " {state}/profiles || {{ echo "Requested profile '$2' doesn't exist." >&2; exit 1; }}
           echo "$2" > {state}/active;;
  *) exit 2;;
esac
""")
    script.chmod(0o755)
    return state


def systemctl(root, enabled=(), active=()) -> Path:
    """A stand-in systemctl under ``root``/bin: ``is-enabled``/``is-active`` [--quiet] UNIT answer from state
    files, ``enable --now UNIT`` sets both, anything else succeeds (argv of every call in ``systemctl.log``)."""
    root = Path(root)
    state = root / "var/lib/systemctl-fake"
    _put(state / "enabled", "".join(f"{u}\n" for u in enabled))
    _put(state / "active", "".join(f"{u}\n" for u in active))
    script = root / "bin/systemctl"
    _put(script, f"""#!/bin/sh
echo "$@" >> {state}/systemctl.log
unit=""; for a in "$@"; do case "$a" in -*) ;; *) unit="$a";; esac; done
case "$1" in
  is-enabled) grep -qx "$unit" {state}/enabled;;
  is-active) grep -qx "$unit" {state}/active;;
  enable) echo "$unit" >> {state}/enabled; [ "$2" = --now ] && echo "$unit" >> {state}/active; exit 0;;
  *) exit 0;;
esac
""")
    script.chmod(0o755)
    return state
