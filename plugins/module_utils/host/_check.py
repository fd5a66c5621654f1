# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parsers and the verdict for a hypervisor's pre-flight check (no I/O, no ansible imports).

Everything here takes the text of a /proc or /sys file (or a tool's output) and returns plain data,
so the facts module stays a thin reader and the logic is tested without a host.
"""

from __future__ import annotations

import re

VIRT_FLAGS = {"vmx": "intel", "svm": "amd"}
# libvirt's QEMU driver needs these controllers for resource limits and device ACLs
CGROUP_CONTROLLERS_WANTED = ("cpu", "cpuacct", "cpuset", "memory", "devices", "blkio", "pids")
KVM_API_VERSION = 12


def parse_cpuinfo(text):
    """Return {'vendor': str|None, 'model_name': str|None, 'flags': sorted list} of the first CPU."""
    vendor = model = None
    flags = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"vendor": vendor, "model_name": model, "flags": sorted(flags)}


def virt_extension(flags):
    """'vmx' (Intel VT-x), 'svm' (AMD-V) or None."""
    for flag in ("vmx", "svm"):
        if flag in flags:
            return flag
    return None


def parse_bool_param(text):
    """A kernel module parameter such as kvm_intel's nested: 'Y', 'y', '1' -> True."""
    if text is None:
        return None
    return text.strip() in ("Y", "y", "1")


def parse_cmdline_iommu(cmdline):
    """IOMMU-related kernel command line options, e.g. {'intel_iommu': 'on', 'iommu': 'pt'}."""
    found = {}
    for token in cmdline.split():
        key, _sep, value = token.partition("=")
        if key in ("intel_iommu", "amd_iommu", "iommu"):
            found[key] = value
    return found


def iommu_state(cmdline, groups, units):
    """Summarise IOMMU state from the command line, /sys/kernel/iommu_groups and /sys/class/iommu."""
    options = parse_cmdline_iommu(cmdline)
    disabled = options.get("intel_iommu") == "off" or options.get("amd_iommu") == "off"
    return {
        "enabled": groups > 0 and not disabled,
        "groups": groups,
        "units": units,
        "cmdline": options,
    }


def parse_mounts_cgroup(mounts_text):
    """cgroup layout from /proc/self/mounts: 'v2' (unified), 'v1', 'hybrid' or 'none'."""
    v1 = v2 = False
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        if fields[2] == "cgroup2":
            v2 = True
        elif fields[2] == "cgroup":
            v1 = True
    if v1 and v2:
        return "hybrid"
    if v2:
        return "v2"
    if v1:
        return "v1"
    return "none"


def parse_proc_cgroups(text):
    """Enabled controllers from /proc/cgroups (v1 view: name, hierarchy, num_cgroups, enabled)."""
    enabled = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "1":
            enabled.append(fields[0])
    return sorted(enabled)


def cgroup_state(mounts_text, proc_cgroups_text, v2_controllers_text):
    """Layout, available controllers and the ones libvirt wants but cannot have."""
    layout = parse_mounts_cgroup(mounts_text)
    if layout == "v2" and v2_controllers_text is not None:
        controllers = set(v2_controllers_text.split())
        # on v2, cpuacct is part of cpu and devices is a BPF program, not a controller
        if "cpu" in controllers:
            controllers.add("cpuacct")
        controllers.add("devices")
        if "io" in controllers:
            controllers.add("blkio")
    else:
        controllers = set(parse_proc_cgroups(proc_cgroups_text or ""))
    missing = [name for name in CGROUP_CONTROLLERS_WANTED if name not in controllers]
    return {"layout": layout, "controllers": sorted(controllers), "missing": missing}


_VHV_LINE = re.compile(
    r"^\s*(?P<driver>[A-Z]+):\s*(?P<check>.+?)\s*:\s*(?P<result>PASS|WARN|FAIL)\b\s*(?:\((?P<msg>.*)\))?\s*$"
)


def parse_virt_host_validate(text):
    """virt-host-validate's lines -> [{'driver', 'check', 'result', 'message'}]."""
    verdicts = []
    for line in text.splitlines():
        match = _VHV_LINE.match(line)
        if match:
            verdicts.append(
                {
                    "driver": match.group("driver"),
                    "check": re.sub(r"\s+", " ", match.group("check")),
                    "result": match.group("result"),
                    "message": (match.group("msg") or "").strip(),
                }
            )
    return verdicts


def assess(facts, min_free_bytes=0):
    """Turn the gathered facts into (problems, warnings): problems mean hardware KVM cannot run.

    ``facts`` is the dict the facts module builds (cpu, kvm_device, nested, iommu, cgroups, disk,
    validate). Problems and warnings are sentences a person can act on.
    """
    problems = []
    warnings = []
    cpu = facts.get("cpu") or {}
    device = facts.get("kvm_device") or {}
    if not cpu.get("virt_extension"):
        problems.append(
            "the CPU advertises no virtualization extension (vmx/svm): enable VT-x/AMD-V in the firmware, "
            "or on a nested host expose it to this VM"
        )
    if not device.get("exists"):
        problems.append("/dev/kvm does not exist: the kvm module (kvm_intel/kvm_amd) is not loaded")
    elif not device.get("usable"):
        problems.append(
            f"/dev/kvm exists but does not answer KVM_GET_API_VERSION: {device.get('error') or 'unknown error'}"
        )
    elif device.get("qemu_user_access") is False:
        warnings.append(
            f"the QEMU user cannot open /dev/kvm (owner group {device.get('group')}, mode {device.get('mode')}): "
            "add it to that group or fix the udev rule"
        )
    cgroups = facts.get("cgroups") or {}
    if cgroups.get("missing"):
        warnings.append(f"cgroup controllers missing: {', '.join(cgroups['missing'])}")
    disk = facts.get("disk") or {}
    free = disk.get("free_bytes")
    if free is not None and min_free_bytes and free < min_free_bytes:
        problems.append(
            f"only {free // 1048576} MiB free under {disk.get('path')}, {min_free_bytes // 1048576} MiB required"
        )
    for verdict in facts.get("validate") or []:
        if verdict["driver"] == "QEMU" and verdict["result"] == "FAIL":
            warnings.append(f"virt-host-validate: {verdict['check']}: FAIL {verdict['message']}")
    return problems, warnings
