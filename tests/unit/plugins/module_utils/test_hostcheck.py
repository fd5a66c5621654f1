"""Pure pre-flight parsers and the verdict (plugins/module_utils/host/_check.py)."""

from __future__ import annotations

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.host import _check as hc

CPUINFO_INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu vme de pse tsc msr vmx ept vpid
processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu
"""


def test_cpuinfo_first_cpu():
    parsed = hc.parse_cpuinfo(CPUINFO_INTEL)
    assert parsed["vendor"] == "GenuineIntel"
    assert parsed["model_name"].startswith("Intel(R) Xeon")
    assert "vmx" in parsed["flags"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(["fpu", "vmx"], "vmx"), (["svm", "fpu"], "svm"), (["fpu", "hypervisor"], None), ([], None)],
)
def test_virt_extension(flags, expected):
    assert hc.virt_extension(flags) == expected


@pytest.mark.parametrize(("text", "expected"), [("Y\n", True), ("1", True), ("N\n", False), ("0", False), (None, None)])
def test_bool_param(text, expected):
    assert hc.parse_bool_param(text) is expected


def test_iommu_state():
    cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt quiet"
    assert hc.iommu_state(cmdline, 12, 1) == {
        "enabled": True,
        "groups": 12,
        "units": 1,
        "cmdline": {"intel_iommu": "on", "iommu": "pt"},
    }
    assert hc.iommu_state("root=/dev/sda1", 0, 0)["enabled"] is False
    assert hc.iommu_state("intel_iommu=off", 3, 1)["enabled"] is False


MOUNTS_HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
"""
MOUNTS_V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"
PROC_CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t2\t1\t1
cpuacct\t4\t1\t1
blkio\t5\t1\t1
memory\t6\t1\t1
devices\t7\t1\t1
pids\t8\t1\t0
"""


@pytest.mark.parametrize(
    ("mounts", "layout"),
    [(MOUNTS_HYBRID, "hybrid"), (MOUNTS_V2, "v2"), ("cgroup /a cgroup rw 0 0", "v1"), ("", "none")],
)
def test_cgroup_layout(mounts, layout):
    assert hc.parse_mounts_cgroup(mounts) == layout


def test_cgroup_v1_missing_controller():
    state = hc.cgroup_state(MOUNTS_HYBRID, PROC_CGROUPS, None)
    assert state["layout"] == "hybrid"
    assert state["missing"] == ["pids"]


def test_cgroup_v2_controllers():
    state = hc.cgroup_state(MOUNTS_V2, "", "cpuset cpu io memory pids")
    assert state["missing"] == []
    assert {"cpuacct", "devices", "blkio"} <= set(state["controllers"])


VHV = "\n".join(
    [
        "  QEMU: Checking for hardware virtualization                   : FAIL (Only emulated CPUs are available,"
        " performance will be significantly limited)",
        "  QEMU: Checking if device /dev/vhost-net exists                : PASS",
        "  QEMU: Checking for cgroup 'cpu' controller support            : PASS",
        "  QEMU: Checking for secure guest support                       : WARN (Unknown if this platform has"
        " Secure Guest support)",
        "garbage line",
    ]
)


def test_parse_virt_host_validate():
    verdicts = hc.parse_virt_host_validate(VHV)
    assert [v["result"] for v in verdicts] == ["FAIL", "PASS", "PASS", "WARN"]
    assert verdicts[0] == {
        "driver": "QEMU",
        "check": "Checking for hardware virtualization",
        "result": "FAIL",
        "message": "Only emulated CPUs are available, performance will be significantly limited",
    }


GOOD = {
    "cpu": {"virt_extension": "vmx"},
    "kvm_device": {"exists": True, "usable": True, "qemu_user_access": True},
    "cgroups": {"missing": []},
    "disk": {"path": "/var/lib", "free_bytes": 50 * 1024**3},
    "validate": [],
}


def test_assess_good_host():
    assert hc.assess(GOOD, 10 * 1024**3) == ([], [])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"cpu": {"virt_extension": None}}, "no virtualization extension"),
        ({"kvm_device": {"exists": False}}, "/dev/kvm does not exist"),
        ({"kvm_device": {"exists": True, "usable": False, "error": "Permission denied"}}, "Permission denied"),
        ({"disk": {"path": "/srv", "free_bytes": 1024**3}}, "only 1024 MiB free under /srv, 10240 MiB required"),
    ],
)
def test_assess_problems(change, fragment):
    problems, _warnings = hc.assess({**GOOD, **change}, 10 * 1024**3)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_assess_warnings():
    facts = {
        **GOOD,
        "kvm_device": {"exists": True, "usable": True, "qemu_user_access": False, "group": "kvm", "mode": "0660"},
        "cgroups": {"missing": ["pids"]},
        "validate": hc.parse_virt_host_validate(VHV),
    }
    problems, warnings = hc.assess(facts, 0)
    assert problems == []
    assert any("cannot open /dev/kvm" in w for w in warnings)
    assert any("cgroup controllers missing: pids" in w for w in warnings)
    assert any("hardware virtualization" in w for w in warnings)
