"""kvm_tune's host checks: which kernels can take libvirt's live bandwidth limits, on fake /sys, /lib/modules,
/proc and /boot trees laid out like the real ones (the real kernels are in the lab and vm tiers)."""
from __future__ import annotations

import gzip

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import is_local_uri
from ansible_collections.kvmops.fleet.plugins.module_utils.tune import _apply_io
from ansible_collections.kvmops.fleet.plugins.module_utils.tune._apply_io import (
    bandwidth_blocker,
    bandwidth_params,
    kernel_objects,
)

REL = "6.1.0-99-amd64"
ALL = list(_apply_io.KCONFIG)


def tree(tmp_path, *, sys_modules=(), builtin=None, dep=None, config=None, proc_config=None, tc=True):
    root = tmp_path / "root"
    for name in sys_modules:
        (root / "sys/module" / name).mkdir(parents=True)
    moddir = root / "lib/modules" / REL
    if builtin is not None or dep is not None:
        moddir.mkdir(parents=True)
        (moddir / "modules.builtin").write_text("".join(f"kernel/{p}\n" for p in builtin or ()))
        (moddir / "modules.dep").write_text("".join(f"kernel/{p}: \n" for p in dep or ()))
    if config is not None:
        (root / "boot").mkdir(parents=True)
        (root / "boot" / f"config-{REL}").write_text(config)
    if proc_config is not None:
        (root / "proc").mkdir(parents=True)
        with gzip.open(root / "proc/config.gz", "wt") as fh:
            fh.write(proc_config)
    if tc:
        (root / "usr/sbin").mkdir(parents=True)
        (root / "usr/sbin/tc").write_text("")
    return str(root)


DEBIAN_DEP = [f"net/sched/{n}.ko.xz" for n in ALL]
# this machine's kernel: no module lists, /proc/config.gz only, htb/ingress/u32 built in, the rest not set
LAB_CONFIG = """CONFIG_NET_SCH_HTB=y
# CONFIG_NET_SCH_SFQ is not set
CONFIG_NET_SCH_INGRESS=y
# CONFIG_NET_CLS_FW is not set
CONFIG_NET_CLS_U32=y
# CONFIG_NET_ACT_POLICE is not set
"""


def change(kind="bandwidth", iftype="network", **values):
    full = {f"{d}.{k}": 0 for d in ("inbound", "outbound") for k in ("average", "peak", "burst")}
    full.update({k.replace("_", "."): v for k, v in values.items()})
    return {"kind": kind, "key": "52:54:00:00:00:01", "detail": {"values": full, "type": iftype}}


def test_debian_module_lists_are_authoritative(tmp_path):
    root = tree(tmp_path, dep=[p for p in DEBIAN_DEP if "sfq" not in p], builtin=[],
                config="CONFIG_NET_SCH_SFQ=m\n")
    have = kernel_objects(ALL, root, REL)
    assert have == {n: n != "sch_sfq" for n in ALL}


def test_builtin_and_loaded_modules(tmp_path):
    root = tree(tmp_path, sys_modules=["act_police"], builtin=["net/sched/sch_htb.ko"], dep=[])
    assert kernel_objects(["sch_htb", "act_police", "cls_fw"], root, REL) == {
        "sch_htb": True, "act_police": True, "cls_fw": False}


def test_config_only_kernel(tmp_path):
    root = tree(tmp_path, proc_config=LAB_CONFIG)
    assert kernel_objects(ALL, root, REL) == {
        "sch_htb": True, "sch_sfq": False, "cls_fw": False, "sch_ingress": True, "cls_u32": True,
        "act_police": False}
    # =m without any module list: nothing to load it from
    root2 = tree(tmp_path / "b", config="CONFIG_NET_SCH_SFQ=m\nCONFIG_NET_SCH_HTB=y\n")
    assert kernel_objects(["sch_sfq", "sch_htb"], root2, REL) == {"sch_sfq": False, "sch_htb": True}


def test_unknown_when_nothing_tells(tmp_path):
    assert kernel_objects(["sch_sfq"], tree(tmp_path), REL) == {"sch_sfq": None}


def test_blocker_names_what_the_lab_kernel_lacks_per_direction(tmp_path):
    root = tree(tmp_path, proc_config=LAB_CONFIG)
    uri = "qemu:///system"
    why = bandwidth_blocker(change(inbound_average=100), uri, root, REL)
    assert why == ("this host's kernel lacks sch_sfq (CONFIG_NET_SCH_SFQ), cls_fw (CONFIG_NET_CLS_FW), "
                   "which libvirt's tc limits need")
    assert "act_police" in bandwidth_blocker(change(outbound_average=100), uri, root, REL)
    # macvtap: the host side sees the guest's traffic the other way round
    assert "act_police" in bandwidth_blocker(change(iftype="direct", inbound_average=100), uri, root, REL)
    # removing limits needs no qdisc; other kinds and remote or test URIs are not checked
    assert bandwidth_blocker(change(), uri, root, REL) is None
    assert bandwidth_blocker(change(kind="iotune", inbound_average=1), uri, root, REL) is None
    assert bandwidth_blocker(change(inbound_average=100), "qemu+ssh://hv2/system", root, REL) is None
    assert bandwidth_blocker(change(inbound_average=100), "test:///default", root, REL) is None


def test_full_kernel_has_no_blocker_but_tc_is_needed(tmp_path):
    root = tree(tmp_path, dep=DEBIAN_DEP, builtin=[])
    assert bandwidth_blocker(change(inbound_average=1, outbound_average=1), "qemu:///system", root, REL) is None
    root = tree(tmp_path / "notc", dep=DEBIAN_DEP, builtin=[], tc=False)
    assert bandwidth_blocker(change(inbound_average=1), "qemu:///system", root, REL) == (
        "tc (iproute2) is not installed on this host")


@pytest.mark.parametrize("uri,local", [
    ("qemu:///system", True), ("qemu+unix:///system", True), ("qemu:///session", True),
    ("qemu+ssh://root@hv2/system", False), ("qemu+tcp://hv2/system", False), ("qemu://hv2/system", False),
    ("test:///default", False),
])
def test_is_local_uri(uri, local):
    assert is_local_uri(uri) is local


def test_bandwidth_params_pass_every_key_of_a_direction():
    assert bandwidth_params({"inbound.average": 100, "inbound.peak": 0, "inbound.burst": 8}) == {
        "inbound.average": 100, "inbound.burst": 8, "inbound.peak": 0}
