"""The pause-risk forecast (issue 23): the pure plan on literals with exact numbers, and what a disk occupies
read from real sparse raw and qcow2 files, checked against du."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import _collect_io, _plan

FIXTURES = Path(__file__).parent / "fixtures" / "forecast"
MiB = 1024 * 1024
GiB = 1024 * MiB


# ---- error policy: what a full storage does ------------------------------------------------------------------------

@pytest.mark.parametrize("policy,outcome", [
    (None, "pause"),           # no policy: QEMU's default werror=enospc pauses on ENOSPC
    ("default", "pause"),
    ("stop", "pause"),
    ("enospace", "pause"),
    ("report", "guest_error"),
    ("ignore", "ignored"),
])
def test_write_error_outcome(policy, outcome):
    assert _plan.write_error_outcome(policy) == outcome


@pytest.mark.parametrize("conf,uri,root", [
    (None, "qemu:///system", False),
    ('#user = "root"\n', "qemu:///system", False),
    ('user = "root"\n', "qemu:///system", True),
    ('user = "+0"  # comment\n', "qemu:///system", True),
    ('user = "root"\nuser = "libvirt-qemu"\n', "qemu:///system", False),   # the last setting wins
    ('user = "qemu"\n', "qemu:///system", False),
    ('user = "root"\n', "qemu:///session", False),
])
def test_qemu_runs_as_root(conf, uri, root):
    assert _plan.qemu_runs_as_root(conf, uri) is root


# ---- a filesystem shared by two thin disks -------------------------------------------------------------------------

def fs_facts(avail, bfree, disks, qemu_root=False):
    storage = {"kind": "filesystem", "name": "/srv/images", "device": "/dev/loop3", "fstype": "ext4",
               "total_bytes": 20 * MiB, "available_bytes": avail, "root_free_bytes": bfree}
    doms = []
    for name, policy, cap, occ in disks:
        doms.append({"name": name, "uuid": None, "memory_kib": 131072, "disks": [
            {"target": "vda", "device": "disk", "readonly": False, "path": f"/srv/images/{name}.img", "format": "raw",
             "error_policy": policy, "capacity_bytes": cap, "occupied_bytes": occ, "occupied_source": "st_blocks",
             "storage": "fs:7:3", "note": None}]})
    return {"qemu_root": qemu_root, "domains": doms, "storages": {"fs:7:3": storage}, "meminfo": {},
            "hugepages": {}}


def test_two_thin_disks_overcommit_a_filesystem():
    # 16 MiB each, 4 KiB and 1 MiB occupied: 16 MiB - 4 KiB + 15 MiB may still come; 17 MiB free to QEMU
    f = _plan.forecast(fs_facts(17 * MiB, 18 * MiB, [("a", "stop", 16 * MiB, 4096), ("b", "report", 16 * MiB, MiB)]))
    (s,) = f["storages"]
    assert s["remaining_growth_bytes"] == 31 * MiB - 4096
    assert s["free_bytes"] == 17 * MiB and s["free_basis"] == "f_bavail"
    assert s["headroom_bytes"] == 17 * MiB - (31 * MiB - 4096) == -14 * MiB + 4096
    assert s["overcommitted"] is True and s["severity"] == "warning"
    assert s["would_pause"] == ["a"] and s["would_see_errors"] == ["b"] and s["can_fill_alone"] == []
    over = [r for r in f["risks"] if r["kind"] == "storage_overcommitted"]
    assert len(over) == 1
    r = over[0]
    assert r["numbers"]["shortfall_bytes"] == 14 * MiB - 4096
    assert r["first_to_pause"].startswith("any of a: the first whose write finds the storage full pauses first")
    assert r["actions"] == ["grow filesystem /srv/images by 14 MiB (it has 17.0 MiB free for QEMU; its disks can "
                            "still claim 31.0 MiB), or move disks off it"]
    (guest,) = [x for x in f["risks"] if x["kind"] == "write_errors_in_guest"]
    assert guest["domains"] == ["b"] and guest["severity"] == "warning"
    assert "set error_policy='stop'" in guest["actions"][0] and "of b" in guest["actions"][0]
    assert f["summary"]["overcommitted"] == 1 and f["summary"]["at_risk_domains"] == ["a", "b"]
    assert [d["pauses_when_full"] for d in f["domains"]] == [True, False]


def test_root_reserve_counts_only_when_qemu_runs_as_root():
    facts = fs_facts(15 * MiB, 16 * MiB, [("a", None, 16 * MiB, MiB)])
    user = _plan.forecast(facts)["storages"][0]
    assert (user["free_bytes"], user["free_basis"], user["overcommitted"]) == (15 * MiB, "f_bavail", False)
    root = _plan.forecast(dict(facts, qemu_root=True))["storages"][0]
    assert (root["free_bytes"], root["free_basis"], root["headroom_bytes"]) == (16 * MiB, "f_bfree", MiB)


def test_one_disk_that_can_fill_it_alone_is_critical_and_named():
    f = _plan.forecast(fs_facts(10 * MiB, 11 * MiB, [("big", "enospace", 64 * MiB, 0), ("small", "stop", 2 * MiB, 0)]))
    s = f["storages"][0]
    assert s["severity"] == "critical" and s["can_fill_alone"] == ["big"] and s["would_pause"] == ["big", "small"]
    assert "big (vda, 64.0 MiB) can fill it alone" in f["risks"][0]["summary"]
    assert f["risks"][0]["actions"][0].startswith("grow filesystem /srv/images by 56 MiB")


def test_within_free_space_is_no_risk_and_ignore_is_silent_data_loss_only_when_over():
    f = _plan.forecast(fs_facts(20 * MiB, 20 * MiB, [("a", "ignore", 8 * MiB, 0)]))
    s = f["storages"][0]
    assert f["risks"] == [] and s["overcommitted"] is False and s["headroom_bytes"] == 12 * MiB
    f = _plan.forecast(fs_facts(4 * MiB, 4 * MiB, [("a", "ignore", 8 * MiB, 0)]))
    kinds = {r["kind"]: r["severity"] for r in f["risks"]}
    assert kinds == {"storage_overcommitted": "critical", "writes_dropped": "critical"}
    assert f["storages"][0]["would_drop_writes"] == ["a"] and f["storages"][0]["would_pause"] == []


def test_fully_allocated_and_readonly_disks_claim_nothing():
    facts = fs_facts(MiB, MiB, [("a", "stop", 8 * MiB, 8 * MiB + 4096)])    # st_blocks can exceed the size
    facts["domains"][0]["disks"].append(dict(facts["domains"][0]["disks"][0], target="hdc", device="cdrom",
                                             occupied_bytes=0))
    f = _plan.forecast(facts)
    assert f["storages"][0]["remaining_growth_bytes"] == 0 and f["risks"] == []
    assert [d["target"] for d in f["domains"][0]["disks"]] == ["vda"]


# ---- thin LVM, from lvs JSON in lvm2's layout -----------------------------------------------------------------------

def recorded(prefix: str) -> str:
    """stdout of the recorded command starting with ``prefix`` (fixtures/forecast/record.py, real LVM 2.03.16)."""
    cmds = json.loads((FIXTURES / "lvs-recorded.json").read_text())["commands"]
    return next(v["stdout"] for k, v in cmds.items() if k.startswith(prefix))


LVS = recorded("lvs ")
LVMCONFIG = recorded("lvmconfig ")


def test_parse_lvs_and_thin_pool_forecast():
    # recorded in a vmlab VM: a 128 MiB pool at 50.00 % (48 + 16 MiB written), vm1 256 MiB at 18.75 % (48 MiB),
    # vm2 128 MiB at 12.50 % (16 MiB), 116 MiB free in vg0; dmsetup agrees: 1024 of 2048 64 KiB data blocks used
    assert "1024/2048" in recorded("dmsetup status")
    lvs = _plan.parse_lvs(LVS)
    assert [(x["lv_name"], x["thin"], x["thin_pool"], x["size"], x["data_percent"]) for x in lvs] == [
        ("pool0", False, True, 128 * MiB, 50.0), ("vm1", True, False, 256 * MiB, 18.75),
        ("vm2", True, False, 128 * MiB, 12.5)]
    config = _plan.parse_lvmconfig(LVMCONFIG)
    assert config == {"threshold": 100, "percent": 20}          # lvm.conf's defaults: autoextend off
    doms = []
    storages = {}
    for name, path in (("d1", "/dev/vg0/vm1"), ("d2", "/dev/mapper/vg0-vm2")):
        lv = _plan.find_lv(lvs, path)
        disk, (key, storage) = _plan.thin_disk({"target": "vda", "device": "disk", "path": path, "error_policy": None},
                                               lv, lvs, config)
        disk["storage"] = key
        storages[key] = storage
        doms.append({"name": name, "disks": [disk]})
    assert [d["disks"][0]["occupied_bytes"] for d in doms] == [48 * MiB, 16 * MiB]
    f = _plan.forecast({"domains": doms, "storages": storages})
    (s,) = f["storages"]
    assert s["key"] == "thin:vg0/pool0" and s["free_basis"] == "thin_pool_data_percent"
    assert s["free_bytes"] == 64 * MiB                        # 128 MiB at 50.00 %
    assert s["remaining_growth_bytes"] == 208 * MiB + 112 * MiB
    assert s["headroom_bytes"] == 64 * MiB - 320 * MiB
    assert s["severity"] == "critical" and s["can_fill_alone"] == ["d1", "d2"] and s["would_pause"] == ["d1", "d2"]
    r = f["risks"][0]
    assert r["numbers"]["autoextend_reach_bytes"] == 0 and r["numbers"]["shortfall_bytes"] == 256 * MiB
    assert r["actions"][0] == ("grow thin pool vg0/pool0 by 256 MiB (lvextend -L +256 MiB vg0/pool0; the volume "
                               "group has 116.0 MiB free)")
    assert r["actions"][1].startswith("enable autoextend for vg0/pool0: activation/thin_pool_autoextend_threshold")
    # autoextend on: the VG's 116 MiB can be added, still short of 256 MiB -> critical stays
    storages["thin:vg0/pool0"].update(autoextend_threshold=80)
    r = _plan.forecast({"domains": doms, "storages": storages})["risks"][0]
    assert r["numbers"]["autoextend_reach_bytes"] == 116 * MiB and r["severity"] == "critical"
    assert len(r["actions"]) == 1
    # a growth autoextend can cover is a warning (it relies on dmeventd), not critical
    doms[0]["disks"][0]["capacity_bytes"] = 48 * MiB + 100 * MiB
    doms.pop()
    r = _plan.forecast({"domains": doms, "storages": storages})["risks"][0]
    assert r["numbers"]["shortfall_bytes"] == 36 * MiB and r["severity"] == "warning"


def test_thin_pool_metadata_risk():
    storages = {"thin:vg0/pool0": {"kind": "thin_pool", "name": "vg0/pool0", "size_bytes": GiB, "data_percent": 10.0,
                                   "metadata_percent": 96.5}}
    doms = [{"name": "d", "disks": [{"target": "vda", "capacity_bytes": MiB, "occupied_bytes": 0,
                                     "storage": "thin:vg0/pool0"}]}]
    (r,) = _plan.forecast({"domains": doms, "storages": storages})["risks"]
    assert (r["kind"], r["severity"], r["numbers"]["metadata_percent"]) == ("thin_pool_metadata", "critical", 96.5)


# ---- configuration, memory, hugepages --------------------------------------------------------------------------------

DOMXML = """<domain type='qemu'><name>{name}</name><uuid>00000000-0000-0000-0000-00000000000{n}</uuid>
<memory unit='GiB'>{gib}</memory>{backing}{numa}<on_lockfailure>{lock}</on_lockfailure>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2' error_policy='report'/>
<source file='/x/{name}.qcow2'/><target dev='vda'/></disk>
<disk type='file' device='cdrom'><source file='/x/cd.iso'/><target dev='hdc'/><readonly/></disk>
<watchdog model='i6300esb' action='{wd}'/></devices></domain>"""


def dom(name, n, gib=4, wd="reset", lock="poweroff", backing="", numa=""):
    return _plan.parse_domain(DOMXML.format(name=name, n=n, gib=gib, wd=wd, lock=lock, backing=backing, numa=numa))


def test_parse_domain_memory_hugepages_numa():
    d = dom("h", 1, gib=2, backing="<memoryBacking><hugepages><page size='2' unit='M'/></hugepages></memoryBacking>",
            numa="<numatune><memory mode='strict' nodeset='0-1,^1,3'/></numatune>")
    assert d["memory_kib"] == 2 * 1024 * 1024 and d["hugepages"] == {"page_kib": 2048} and d["numa_nodes"] == [0, 1, 3]
    assert [(x["target"], x["error_policy"], _plan.writable(x)) for x in d["disks"]] == [
        ("vda", "report", True), ("hdc", None, False)]
    with pytest.raises(_plan.ForecastError):
        _plan.parse_domain("<domain")


def test_config_memory_and_hugepage_risks():
    doms = [dom("a", 1, gib=16, wd="pause"), dom("b", 2, gib=16, lock="pause"),
            dom("h", 3, gib=1, backing="<memoryBacking><hugepages/></memoryBacking>",
                numa="<numatune><memory nodeset='1'/></numatune>")]
    meminfo = _plan.parse_meminfo("MemTotal:       24576000 kB\nSwapTotal:       1024000 kB\n"
                                  "Hugepagesize:       2048 kB\n")
    assert meminfo == {"MemTotal": 24576000 * 1024, "SwapTotal": 1024000 * 1024, "Hugepagesize": 2048 * 1024}
    pages = {"0": {"2048": {"total": 1024, "free": 1024}}, "1": {"2048": {"total": 600, "free": 100}}}
    f = _plan.forecast({"domains": doms, "storages": {}, "meminfo": meminfo, "hugepages": pages})
    by = {r["kind"]: r for r in f["risks"]}
    assert set(by) == {"watchdog_pause", "lockfailure_pause", "memory_overcommit", "hugepages_short"}
    assert by["watchdog_pause"]["domains"] == ["a"] and by["lockfailure_pause"]["domains"] == ["b"]
    mem = by["memory_overcommit"]
    assert mem["numbers"] == {"guest_memory_bytes": 33 * GiB, "mem_total_bytes": 24576000 * 1024,
                              "swap_total_bytes": 1024000 * 1024}
    assert mem["severity"] == "warning" and mem["headroom_bytes"] == (24576000 + 1024000) * 1024 - 33 * GiB
    hp = by["hugepages_short"]
    assert hp["numbers"] == {"pages_needed": 512, "pages_free": 100, "page_kib": 2048}
    assert hp["summary"].startswith("h needs 512 huge pages of 2048 KiB; node(s) 1 have 100 free")
    only = _plan.forecast({"domains": doms, "storages": {}, "meminfo": meminfo, "hugepages": pages}, ("config",))
    assert {r["kind"] for r in only["risks"]} == {"watchdog_pause", "lockfailure_pause"}


def test_mountinfo_by_device_number():
    text = ("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
            "88 22 7:3 / /srv/my\\040images rw - ext4 /dev/loop3 rw\n"
            "89 22 7:3 /sub /mnt/bind rw - ext4 /dev/loop3 rw\n")
    mounts = _plan.parse_mountinfo_devs(text)
    assert _plan.mount_by_dev(mounts, "7:3", "/srv/my images/a.img")["mount_point"] == "/srv/my images"
    assert _plan.mount_by_dev(mounts, "7:3", "/mnt/bind/a.img")["mount_point"] == "/mnt/bind"
    assert _plan.mount_by_dev(mounts, "254:1", "/var/lib/x")["source"] == "/dev/vda1"
    assert _plan.mount_by_dev(mounts, "0:99", "/x") is None


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1536, "1.5 KiB"), (17 * MiB, "17.0 MiB"), (-2 * GiB, "-2.0 GiB")])
def test_size_text(n, text):
    assert _plan.size_text(n) == text


@pytest.mark.parametrize("n,text", [(1, "1 MiB"), (MiB + 1, "2 MiB"), (GiB, "1 GiB"), (GiB + 1, "2 GiB")])
def test_grow_text_rounds_up(n, text):
    assert _plan.grow_text(n) == text


# ---- real files: what they occupy, against du ------------------------------------------------------------------------

def du_bytes(path) -> int:
    out = subprocess.run(["du", "--block-size=1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


class NoProbe:
    """disk_facts without the storage probes: every storage answered, nothing recorded."""

    def for_disk(self, _disk):
        return None


def facts_of(path, fmt):
    mounts = _plan.parse_mountinfo_devs(Path("/proc/self/mountinfo").read_text())
    disk = {"target": "vda", "type": "file", "device": "disk", "format": fmt, "path": str(path), "error_policy": "stop"}
    return _collect_io.disk_facts(disk, _collect_io.Host(), mounts, NoProbe(), {}, lambda: 5.0)


def test_sparse_raw_occupies_what_du_says(tmp_path):
    img = tmp_path / "sparse.raw"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
        f.seek(5 * MiB)
        f.write(b"\xa5" * (MiB + 4096))
        os.fsync(f.fileno())
    facts, (key, storage) = facts_of(img, "raw")
    st = os.stat(img)
    assert facts["capacity_bytes"] == 16 * MiB
    assert facts["occupied_bytes"] == du_bytes(img) == st.st_blocks * 512
    assert MiB + 4096 <= facts["occupied_bytes"] < 2 * MiB        # sparse: far below its 16 MiB
    assert key == f"fs:{os.major(st.st_dev)}:{os.minor(st.st_dev)}" and storage["kind"] == "filesystem"
    assert storage["name"] == "/" or str(img).startswith(storage["name"].rstrip("/") + "/")


@pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io")),
                    reason="qemu-img and qemu-io (qemu-utils) are not installed (the Python 3.9 container)")
def test_qcow2_capacity_from_its_header_and_occupied_from_du(tmp_path):
    img = tmp_path / "thin.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    empty = facts_of(img, "qcow2")[0]
    assert empty["capacity_bytes"] == 16 * MiB and empty["occupied_bytes"] == du_bytes(img)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", str(img)], check=True,
                   capture_output=True)
    written = facts_of(img, "qcow2")[0]
    assert written["capacity_bytes"] == 16 * MiB
    assert written["occupied_bytes"] == du_bytes(img)
    assert written["occupied_bytes"] - empty["occupied_bytes"] >= 3 * MiB
    # libvirt's "allocation" of a qcow2 would be its highest written offset; the file's size says the same here
    assert os.path.getsize(img) >= 3 * MiB


def test_a_raw_file_that_is_not_qcow2_is_named(tmp_path):
    img = tmp_path / "raw-but-said-qcow2.img"
    img.write_bytes(b"\0" * 4096)
    facts, storage = facts_of(img, "qcow2")
    assert storage is None and facts["note"] == f"{img} has no qcow2 header"


class FakeHost:
    """The recorded VM's thin LVs (/dev/vg0/vm1 -> /dev/dm-4, vm2 -> /dev/dm-5); records every tool's argv."""

    def __init__(self, lvs_text, config_text):
        self.lvs_text, self.config_text, self.argv = lvs_text, config_text, []

    links = {"/dev/vg0/vm1": "/dev/dm-4", "/dev/mapper/vg0-vm1": "/dev/dm-4", "/dev/disk/by-id/dm-name-vg0-vm1":
             "/dev/dm-4", "/dev/vg0/vm2": "/dev/dm-5", "/dev/mapper/vg0-vm2": "/dev/dm-5"}

    def realpath(self, path):
        return self.links.get(path, path)

    def stat(self, path):
        return SimpleNamespace(st_mode=stat.S_IFBLK | 0o660, st_blocks=0, st_size=0, st_dev=5)

    def block_size(self, device):
        return {"/dev/dm-4": 256 * MiB, "/dev/vdc": 256 * MiB}[device]

    def tool(self, argv, timeout):
        self.argv.append(list(argv))
        return self.lvs_text if argv[0] == "lvs" else self.config_text


@pytest.mark.parametrize("path", ["/dev/vg0/vm1", "/dev/disk/by-id/dm-name-vg0-vm1"])
def test_thin_lv_disk_read_through_lvs_and_lvmconfig(path):
    host = FakeHost(LVS, LVMCONFIG)
    disk = {"target": "vdb", "type": "block", "device": "disk", "path": path, "error_policy": "stop"}
    lvm = {}
    facts, (key, pool) = _collect_io.disk_facts(disk, host, [], NoProbe(), lvm, lambda: 4.5)
    # the same command lines the recording ran
    ran = json.loads((FIXTURES / "lvs-recorded.json").read_text())["commands"]
    assert sorted(" ".join(a) for a in host.argv) == sorted(k for k in ran if k.startswith(("lvs ", "lvmconfig ")))
    assert host.argv[0][:2] == ["lvs", "--reportformat"] and host.argv[1][0] == "lvmconfig"
    assert (facts["capacity_bytes"], facts["occupied_bytes"], facts["occupied_source"]) == (
        256 * MiB, 48 * MiB, "thin_lv_data_percent")
    assert key == "thin:vg0/pool0"
    assert pool == {"kind": "thin_pool", "name": "vg0/pool0", "device": "/dev/mapper/vg0-pool0", "fstype": None,
                    "size_bytes": 128 * MiB, "data_percent": 50.0, "metadata_percent": 11.62, "vg": "vg0",
                    "vg_free_bytes": 116 * MiB, "autoextend_threshold": 100, "autoextend_percent": 20}
    # a second disk reuses what lvs said: no second run; a device that is no LV is fully provisioned
    plain = dict(disk, path="/dev/vdc")
    facts, storage = _collect_io.disk_facts(plain, host, [], NoProbe(), lvm, lambda: 4.5)
    assert len(host.argv) == 2 and storage is None
    assert (facts["capacity_bytes"], facts["occupied_bytes"]) == (256 * MiB, 256 * MiB)
    assert facts["note"] == "block device: all of it is provisioned, it cannot grow"


def test_without_lvm_tools_a_thin_lv_is_a_plain_block_device():
    host = FakeHost(None, None)
    disk = {"target": "vdb", "type": "block", "device": "disk", "path": "/dev/vg0/vm1"}
    facts, storage = _collect_io.disk_facts(disk, host, [], NoProbe(), {}, lambda: 1.0)
    assert storage is None and facts["occupied_source"] == "device_size"
