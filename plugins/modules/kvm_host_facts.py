#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_host_facts
short_description: Pre-flight facts about a host's ability to run KVM guests
version_added: 0.1.0
description:
  - Reads the CPU virtualization flags, C(/dev/kvm) (and whether it answers the KVM API), nested
    virtualization, the IOMMU state, the cgroup layout and controllers, the free space under the
    images directory, the Linux security module in force and, when the tool is installed,
    the verdicts of C(virt-host-validate qemu).
  - Returns them as RV(ansible_facts.kvm_host), with a list of RV(ansible_facts.kvm_host.problems)
    (hardware KVM cannot run) and RV(ansible_facts.kvm_host.warnings).
  - Read-only; it never changes the host and works before libvirt or QEMU are installed.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.FACTS
  - kvmops.fleet._attributes.FACTS_MODULE
  - kvmops.fleet._attributes.IDEMPOTENT
options:
  images_dir:
    description:
      - Directory the guest images will live in, an absolute path. Its free space is measured on the nearest
        existing ancestor when it does not exist yet.
    type: path
    default: /var/lib/libvirt/images
  min_free_gib:
    description:
      - Free space required under O(images_dir), in GiB, from V(0) to V(17179869184) (16 EiB). Less is
        reported as a problem. V(0) disables the check.
    type: int
    default: 0
  qemu_user:
    description:
      - The account QEMU runs as. When given, the module reports whether that account may open
        C(/dev/kvm) (by mode and group membership). An account name (up to 32 letters, digits, V(_), V(-),
        V(.)); an empty string is refused.
    type: str
  virt_host_validate:
    description:
      - Run C(virt-host-validate qemu) when it is installed and parse its verdicts.
    type: bool
    default: true
  timeout:
    description:
      - Seconds C(virt-host-validate) may take, from V(1) to V(3600).
    type: int
    default: 60
notes:
  - The module never loads kernel modules or changes permissions; the P(kvmops.fleet.hypervisor#role)
    role decides whether a problem is fatal (O(kvmops.fleet.hypervisor#role:main:hypervisor_preflight_mode=strict))
    or only a warning.
seealso:
  - name: virt-host-validate
    description: libvirt's own host validation tool.
    link: https://libvirt.org/manpages/virt-host-validate.html
"""

EXAMPLES = r"""
- name: Read the pre-flight facts
  kvmops.fleet.kvm_host_facts:
    images_dir: /srv/images
    min_free_gib: 20
    qemu_user: libvirt-qemu

- name: Stop when this host cannot run KVM
  ansible.builtin.assert:
    that: ansible_facts['kvm_host']['problems'] | length == 0
    fail_msg: "{{ ansible_facts['kvm_host']['problems'] | join('; ') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    kvm_host:
      description: The pre-flight facts.
      returned: always
      type: dict
      contains:
        kvm_capable:
          description: True when the CPU has VT-x/AMD-V and C(/dev/kvm) answers the KVM API.
          type: bool
          returned: always
          sample: true
        cpu:
          description: CPU vendor, model and the virtualization extension (V(vmx), V(svm) or V(null)).
          type: dict
          returned: always
          sample: {"vendor": "GenuineIntel", "model_name": "Intel Xeon", "virt_extension": "vmx"}
        kvm_device:
          description: C(/dev/kvm) existence, mode, owner group, KVM API answer and QEMU user access.
          type: dict
          returned: always
          sample: {"exists": true, "usable": true, "api_version": 12, "group": "kvm", "mode": "0660",
                   "qemu_user_access": true, "error": null}
        nested:
          description: Whether nested virtualization is enabled in kvm_intel/kvm_amd (V(null) when not loaded).
          type: bool
          returned: always
          sample: false
        iommu:
          description: IOMMU groups and units found and the IOMMU options on the kernel command line.
          type: dict
          returned: always
          sample: {"enabled": true, "groups": 42, "units": 1, "cmdline": {"intel_iommu": "on"}}
        cgroups:
          description: cgroup layout (V(v1), V(v2), V(hybrid)), controllers, and wanted controllers that are missing.
          type: dict
          returned: always
          sample: {"layout": "v2", "controllers": ["cpu", "memory"], "missing": []}
        disk:
          description: Free and total bytes on the filesystem that holds O(images_dir).
          type: dict
          returned: always
          sample: {"path": "/var/lib", "free_bytes": 10737418240, "total_bytes": 53687091200}
        security_module:
          description: Linux security module in force, V(selinux), V(apparmor) or V(none), and whether SELinux enforces.
          type: dict
          returned: always
          sample: {"name": "selinux", "enforcing": true}
        validate:
          description: The verdicts of C(virt-host-validate qemu); empty when the tool is missing or disabled.
          type: list
          elements: dict
          returned: always
          sample: [{"driver": "QEMU", "check": "Checking for hardware virtualization", "result": "PASS", "message": ""}]
        validate_available:
          description: Whether C(virt-host-validate) was found and run.
          type: bool
          returned: always
          sample: true
        problems:
          description: Why hardware KVM cannot run here, one sentence each.
          type: list
          elements: str
          returned: always
          sample: ["/dev/kvm does not exist: the kvm module (kvm_intel/kvm_amd) is not loaded"]
        warnings:
          description: What may limit guests without stopping them.
          type: list
          elements: str
          returned: always
          sample: ["cgroup controllers missing: blkio"]
"""

import fcntl
import glob
import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import TIMEOUT_MAX, Int, Text, check_module
from ansible_collections.kvmops.fleet.plugins.module_utils.host import _check

KVM_GET_API_VERSION = 0xAE00


def _kvm_device(qemu_user):
    info = {
        "exists": False,
        "usable": False,
        "api_version": None,
        "group": None,
        "mode": None,
        "qemu_user_access": None,
        "error": None,
    }
    try:
        st = os.stat("/dev/kvm")
    except OSError as exc:
        info["error"] = exc.strerror
        return info
    info["exists"] = True
    info["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    try:
        info["group"] = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        info["group"] = str(st.st_gid)
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        try:
            info["api_version"] = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        finally:
            os.close(fd)
        info["usable"] = info["api_version"] == _check.KVM_API_VERSION
    except OSError as exc:
        info["error"] = exc.strerror
    if qemu_user:
        try:
            account = pwd.getpwnam(qemu_user)
        except KeyError:
            return info  # not created yet (package not installed): unknown
        groups = {g.gr_gid for g in grp.getgrall() if qemu_user in g.gr_mem} | {account.pw_gid}
        mode = stat.S_IMODE(st.st_mode)
        info["qemu_user_access"] = bool(
            account.pw_uid == 0
            or (account.pw_uid == st.st_uid and mode & 0o600 == 0o600)
            or (st.st_gid in groups and mode & 0o060 == 0o060)
            or mode & 0o006 == 0o006
        )
    return info


def _nested():
    for name in ("kvm_intel", "kvm_amd"):
        value = read_text(f"/sys/module/{name}/parameters/nested")
        if value is not None:
            return _check.parse_bool_param(value)
    return None


def _disk(images_dir):
    path = images_dir
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        st = os.statvfs(path)
    except OSError:
        return {"path": path, "free_bytes": None, "total_bytes": None}
    return {"path": path, "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize}


def _security_module():
    if os.path.exists("/sys/fs/selinux/enforce"):
        return {"name": "selinux", "enforcing": (read_text("/sys/fs/selinux/enforce") or "0").strip() == "1"}
    if _check.parse_bool_param(read_text("/sys/module/apparmor/parameters/enabled")):
        return {"name": "apparmor", "enforcing": None}
    return {"name": "none", "enforcing": None}


def gather(module):
    params = module.params
    cpu = _check.parse_cpuinfo(read_text("/proc/cpuinfo") or "")
    cpu["virt_extension"] = _check.virt_extension(cpu.pop("flags"))
    facts = {
        "cpu": cpu,
        "kvm_device": _kvm_device(params["qemu_user"]),
        "nested": _nested(),
        "iommu": _check.iommu_state(
            read_text("/proc/cmdline") or "",
            len(glob.glob("/sys/kernel/iommu_groups/*")),
            len(glob.glob("/sys/class/iommu/*")),
        ),
        "cgroups": _check.cgroup_state(
            read_text("/proc/self/mounts") or "",
            read_text("/proc/cgroups"),
            read_text("/sys/fs/cgroup/cgroup.controllers"),
        ),
        "disk": _disk(params["images_dir"]),
        "security_module": _security_module(),
        "validate": [],
        "validate_available": False,
    }
    tool = module.get_bin_path("virt-host-validate") if params["virt_host_validate"] else None
    if tool:
        # it exits non-zero when a check fails: the verdicts are the answer, not the exit code
        _rc, out, _err = module.run_command(
            ["timeout", str(params["timeout"]), tool, "qemu"], environ_update={"LC_ALL": "C"}
        )
        facts["validate"] = _check.parse_virt_host_validate(out)
        facts["validate_available"] = True
    facts["kvm_capable"] = bool(cpu["virt_extension"]) and facts["kvm_device"]["usable"]
    facts["problems"], facts["warnings"] = _check.assess(facts, params["min_free_gib"] * 1024**3)
    return facts


ARGUMENT_SPEC = {
    "images_dir": {"type": "path", "default": "/var/lib/libvirt/images"},
    "min_free_gib": {"type": "int", "default": 0},
    "qemu_user": {"type": "str"},
    "virt_host_validate": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 60},
}
# each option's rule (common/_validate.py), checked before the host is read
RULES = {
    "images_dir": Text("a directory", pattern=r"^/", example="/var/lib/libvirt/images"),
    # a filesystem's size is a 64-bit byte count: 16 EiB = 2**34 GiB
    "min_free_gib": Int(0, 2**34, "GiB; 0 disables the check; 16 EiB is the most a filesystem can have"),
    # useradd's limit (32 characters) and its characters: letters, digits, '_', '-', '.', a trailing '$'
    "qemu_user": Text("an account name", pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?$", example="libvirt-qemu"),
    "timeout": Int(1, TIMEOUT_MAX, "seconds virt-host-validate may take; 0 or less would run it not at all"),
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    module.exit_json(changed=False, ansible_facts={"kvm_host": gather(module)})


if __name__ == "__main__":
    main()
