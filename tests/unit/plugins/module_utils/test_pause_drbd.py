"""A paused VM whose disk is a DRBD device: the device found from the disk source (symlinks resolved), the state
read once per run with drbd/_facts_io from what real DRBD 8.4.11 said in the vmlab VMs (fixtures/drbd) or the
DRBD 9 status texts, and the diagnosis: drbd_diskless / drbd_no_quorum / drbd_suspended, not safe to resume,
until the device serves I/O again (disk re-attached, peer back), then safe. Hosts and disks without DRBD run no
DRBD command. States not recorded are derived from a recorded one by changing the one field named in the test."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _status as st
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose, _evidence_io
from kvmlab.testdriver import fleet_xml, uri_for

FIX = Path(__file__).parent / "fixtures" / "drbd"
PROC, SHOW, DMESG = "cat /proc/drbd", "drbdsetup show", "dmesg | grep -i drbd | tail -n 40"
TOOLS = {"drbdsetup": "/usr/sbin/drbdsetup", "drbdadm": "/usr/sbin/drbdadm", "dmesg": "/usr/bin/dmesg"}


def recorded(step, vm):
    return json.loads((FIX / f"{step}-{vm}.json").read_text())["commands"]


def facts84(tmp_path, step, vm):
    """drbd/_facts_io.gather replaying the recorded answers of one VM in one step (the real host side)."""
    c = recorded(step, vm)
    root = tmp_path / f"{step}-{vm}"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "drbd").write_text(c[PROC]["stdout"])

    def runner(argv, timeout):
        if argv[0].endswith("dmesg"):
            return 0, c[DMESG]["stdout"], ""
        if argv[1:] == ["show"]:
            return 0, c[SHOW]["stdout"], ""
        if argv[1:] == ["--version"]:
            return 0, json.loads((FIX / "versions.json").read_text())["drbdadm --version"], ""
        raise AssertionError(argv)
    return _facts_io.gather(2, runner=runner, root=str(root), tools=TOOLS)


def facts9(name):
    res = st.resources_9((FIX / f"status9-{name}.json").read_text(), "", "9.2.12")
    return {"loaded": True, "kernel_version": "9.2.12", "resources": res, "errors": []}


class DrbdHost(_evidence_io.Host):
    """Host I/O for gather_disk: /dev links resolved as udev makes them, DRBD state from the given facts."""

    LINKS = {"/dev/drbd/by-res/r0/0": "/dev/drbd0", "/dev/drbd/by-disk/vdb": "/dev/drbd0",
             "/dev/drbd/by-res/vm1disk/0": "/dev/drbd1000"}

    def __init__(self, facts):
        self.facts, self.drbd_calls = facts, []

    def realpath(self, path):
        return self.LINKS.get(path, path)

    def block_size(self, device):
        return 256 * 1024 * 1024

    def lvs(self, timeout):
        return []

    def drbd(self, timeout):
        self.drbd_calls.append(timeout)
        if self.facts is None:
            raise AssertionError("a DRBD command on a host whose disks are not DRBD devices")
        return self.facts


def block(path, target="vda"):
    return {"target": target, "type": "block", "path": path, "device": "disk", "readonly": False}


def disk_ev(host, disk, cache=None):
    return _evidence_io.gather_disk(disk, host, [], [], lvs_cache={} if cache is None else cache, timeout=1.5)


@pytest.mark.parametrize("path,real,expect", [
    ("/dev/drbd0", "/dev/drbd0", (0, None, None)),
    ("/dev/drbd/by-res/r0/0", "/dev/drbd0", (0, "r0", 0)),
    ("/dev/drbd/by-res/r0", "/dev/drbd/by-res/r0", (None, "r0", None)),   # 8.4 single volume, link not there
    ("/dev/drbd/by-disk/vdb", "/dev/drbd12", (12, None, None)),
    ("/dev/disk/by-id/virtio-x", "/dev/vdb", None),
    ("/dev/mapper/vg0-web", "/dev/dm-3", None),
    ("/dev/drbd0p1", "/dev/drbd0p1", None),
])
def test_drbd_device_from_the_disk_source(path, real, expect):
    assert _evidence_io.drbd_device(path, real) == expect


def test_disks_that_are_not_drbd_run_no_drbd_command():
    host = DrbdHost(None)
    cache = {}
    for d in (block("/dev/mapper/vg0-web"), block("/dev/vdb", "vdb"),
              {"target": "vdc", "type": "file", "path": "/var/lib/libvirt/images/a.img"}):
        ev = _evidence_io.gather_disk(d, host, [], [], lvs_cache=cache, timeout=1)
        assert "drbd" not in ev
    assert host.drbd_calls == [] and "drbd" not in cache


def test_drbd_state_is_read_once_per_run_and_matched_by_minor_or_resource(tmp_path):
    host = DrbdHost(facts84(tmp_path, "connected-uptodate", "vma"))
    cache = {}
    a = disk_ev(host, block("/dev/drbd/by-res/r0/0"), cache)["drbd"]
    b = disk_ev(host, block("/dev/drbd/by-disk/vdb", "vdb"), cache)["drbd"]
    assert host.drbd_calls == [1.5]
    assert a == b
    assert a == {"resource": "r0", "minor": 0, "volume": 0, "role": "Primary", "disk_state": "UpToDate",
                 "quorum": None, "suspended": False,
                 "peers": [{"name": None, "address": "10.213.2.12:7789", "connection_state": "Connected",
                            "role": "Secondary", "disk_state": "UpToDate"}],
                 "data_access": True, "verdict": "healthy",
                 "summary": "replicating, every disk UpToDate (role Primary)",
                 "remediation": [], "split_brain": False, "error": None}


def test_a_drbd_device_drbd_does_not_list(tmp_path):
    host = DrbdHost({"loaded": False, "resources": [], "errors": []})
    dr = disk_ev(host, block("/dev/drbd7"))["drbd"]
    assert dr["data_access"] is None and dr["minor"] == 7
    assert dr["error"] == ("the state of DRBD device minor 7 is unknown: the DRBD kernel module is not loaded "
                           "(no /proc/drbd)")
    d = _diagnose.diagnose(paused([dict(block("/dev/drbd7"), evidence={"drbd": dr})], reason=5, errors={"vda": 1}))
    assert d["cause"] == "storage_io_error" and d["safe_to_resume"] is False


def paused(disks, reason=5, errors=None):
    return {"name": "vm1", "state": 3, "reason": reason, "disks": disks, "disk_errors": errors or {}, "job": None,
            "responsive": True, "paused": {"since": time.time() - 60, "seconds": 60.0, "source": "x"}}


def drbd_disk(host, path="/dev/drbd/by-res/r0/0"):
    d = block(path)
    d["evidence"] = disk_ev(host, d)
    return d


def without_peer(facts):
    """The recorded state with the replication link cut: the peer as 8.4 shows it then (WFConnection, DUnknown,
    as recorded in disconnected-vmb)."""
    f = copy.deepcopy(facts)
    for p in f["resources"][0]["peers"]:
        p["connection_state"], p["role"] = "WFConnection", "Unknown"
        for pv in p["volumes"]:
            pv["disk_state"] = "DUnknown"
    return f


def test_diskless_without_a_peer_is_drbd_diskless_not_an_io_error_and_not_safe(tmp_path):
    # diskless-vmb: real DRBD 8.4 after `drbdadm detach r0` on vmb; the peer then cut
    host = DrbdHost(without_peer(facts84(tmp_path, "diskless", "vmb")))
    d = _diagnose.diagnose(paused([drbd_disk(host)], reason=5, errors={"vda": 1}))
    assert d["cause"] == "drbd_diskless" and d["severity"] == "critical"
    assert d["summary"] == ("disk vda is DRBD resource r0 volume 0 (/dev/drbd0), which has no up-to-date data: its "
                            "own disk is Diskless and no connected peer has UpToDate data")
    assert d["safe_to_resume"] is False
    assert "role Secondary, disk Diskless; peer 10.213.2.11:7789 WFConnection, Unknown, disk DUnknown" in \
        d["safe_to_resume_reason"]
    assert any(r.startswith("Give r0 up-to-date data again: re-attach the backing disk") for r in d["remediation"])
    assert "libvirt disk error on vda: unspecified (1)" in d["findings"]
    assert "libvirt's pause reason: ioerror" in d["findings"]


def test_diskless_with_the_peer_back_is_safe_to_resume(tmp_path):
    # diskless-vmb as recorded: Diskless here, connected to vma which is UpToDate: I/O goes to the peer
    host = DrbdHost(facts84(tmp_path, "diskless", "vmb"))
    disk = drbd_disk(host)
    assert disk["evidence"]["drbd"]["data_access"] is True and disk["evidence"]["drbd"]["verdict"] == "diskless"
    d = _diagnose.diagnose(paused([disk], reason=5, errors={"vda": 1}))
    assert d["cause"] == "storage_io_error" and d["safe_to_resume"] is True
    assert d["safe_to_resume_reason"] == "the DRBD device behind the failed disk serves up-to-date data again"
    assert d["summary"] == "disk vda got an I/O error from DRBD, which serves I/O again"
    assert d["remediation"][0] == "Resume the domain (virsh resume vm1) and watch for a new pause."
    assert d["remediation"][1].startswith("DRBD resource r0 volume 0 (/dev/drbd0) is diskless: Look for the backing")


@pytest.mark.parametrize("step,vm", [("connected-uptodate", "vma"), ("recovered", "vmb"), ("disconnected", "vma"),
                                     ("resync-after-cut", "vma")])
def test_after_the_disk_is_back_an_io_error_on_drbd_is_safe_to_resume(tmp_path, step, vm):
    d = _diagnose.diagnose(paused([drbd_disk(DrbdHost(facts84(tmp_path, step, vm)))], reason=5, errors={"vda": 1}))
    assert (d["cause"], d["safe_to_resume"]) == ("storage_io_error", True)


def test_resync_target_reads_from_the_peer_so_it_serves_io(tmp_path):
    # resync-after-cut-vmb: Inconsistent here, SyncTarget of vma (UpToDate, Connected)
    dr = drbd_disk(DrbdHost(facts84(tmp_path, "resync-after-cut", "vmb")))["evidence"]["drbd"]
    assert (dr["disk_state"], dr["data_access"]) == ("Inconsistent", True)


def test_split_brain_serves_io_but_is_not_safe_to_resume(tmp_path):
    d = _diagnose.diagnose(paused([drbd_disk(DrbdHost(facts84(tmp_path, "split-brain", "vma")))], reason=5,
                                  errors={"vda": 1}))
    assert d["cause"] == "storage_io_error" and d["safe_to_resume"] is False
    assert d["safe_to_resume_reason"] == ("DRBD resource r0 volume 0 (/dev/drbd0) is in split brain: resolve it "
                                          "first (which node's data survives)")
    assert any("--discard-my-data" in r for r in d["remediation"])


def test_drbd9_no_quorum_is_drbd_no_quorum(tmp_path):
    # status9-no-quorum: Primary UpToDate, both peers Connecting, quorum false, I/O suspended
    host = DrbdHost(facts9("no-quorum"))
    d = _diagnose.diagnose(paused([drbd_disk(host, "/dev/drbd/by-res/vm1disk/0")], reason=5, errors={"vda": 1}))
    assert d["cause"] == "drbd_no_quorum" and d["safe_to_resume"] is False
    assert d["summary"] == "disk vda is DRBD resource vm1disk volume 0 (/dev/drbd1000), which lost quorum"
    assert d["remediation"][0].startswith("Bring back the peers or the tiebreaker of vm1disk")
    assert "Once the peer is known to be outdated or down (or quorum is back), drbdadm resume-io vm1disk" in \
        d["remediation"]
    assert ", NO quorum, I/O suspended; peer hvb Connecting" in d["safe_to_resume_reason"]


def test_suspended_io_is_drbd_suspended_whatever_the_pause_reason(tmp_path):
    # connected-uptodate-vma with I/O suspended (what 8.4's fencing resource-and-stonith does while it fences)
    f = facts84(tmp_path, "connected-uptodate", "vma")
    f["resources"][0]["suspended"] = True
    disk = drbd_disk(DrbdHost(f))
    for reason in (0, 1, 5):
        d = _diagnose.diagnose(paused([disk], reason=reason))
        assert (d["cause"], d["safe_to_resume"]) == ("drbd_suspended", False)


def test_a_job_in_flight_still_comes_first(tmp_path):
    disk = drbd_disk(DrbdHost(without_peer(facts84(tmp_path, "diskless", "vmb"))))
    ev = paused([disk], reason=3)
    ev["job"] = {"active": True, "kind": "save", "source": "jobinfo"}
    assert _diagnose.diagnose(ev)["cause"] == "save_job"


def test_every_drbd_cause_has_a_severity():
    assert {"drbd_diskless", "drbd_no_quorum", "drbd_suspended"} <= set(_diagnose.CAUSES)


class FleetDrbdHost(DrbdHost):
    """The worker's host: the real files (status dir, logs, mountinfo) and the DRBD state given. The worker is a
    forked child: each DRBD read is counted as a line in ``log``."""

    def __init__(self, facts, log):
        super().__init__(facts)
        self.log = log

    def drbd(self, timeout):
        with open(self.log, "a", encoding="ascii") as fh:
            fh.write(f"{timeout}\n")
        return self.facts

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def realpath(self, path):
        return self.LINKS.get(path) or _evidence_io.Host.realpath(self, path)

    def block_size(self, device):
        return None


def drbd_fleet(tmp_path):
    """libvirt's test driver: 10 domains, vm0006 (paused, a block disk) has its second disk on DRBD r0."""
    p = tmp_path / "fleet.xml"
    xml = fleet_xml(10)
    assert "/dev/mapper/vg0-vm0006" in xml
    p.write_text(xml.replace("/dev/mapper/vg0-vm0006", "/dev/drbd/by-res/r0/0"))
    return uri_for(p)


def run_collect(tmp_path, host):
    """The collector's worker in this process (collect() forks it with the real Host), then the facts."""
    from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _collect_io  # noqa: PLC0415 (libvirt)
    recs = []
    plan = {"busy": {}, "bulk": True, "status_candidates": [], "patterns": [], "wall_deadline": time.time() + 10,
            "log_dir": str(tmp_path), "status_dir": str(tmp_path / "none"), "probe_dir": str(tmp_path / "probes")}
    _collect_io.worker(recs.append, drbd_fleet(tmp_path), plan, host=host)
    return _collect_io.assemble("test", 10, recs, True, {}, include_running=False, elapsed=1.0, now=time.time())


def test_collect_reads_drbd_once_and_diagnoses_the_domain_on_it(tmp_path):
    pytest.importorskip("libvirt")
    host = FleetDrbdHost(without_peer(facts84(tmp_path, "diskless", "vmb")), tmp_path / "drbd-reads")
    f = run_collect(tmp_path, host)
    assert len(host.calls()) == 1
    assert f["drbd"]["loaded"] is True
    assert f["drbd"]["summary"] == {"resources": 1, "verdicts": {"diskless": 1}, "worst": "diskless"}
    vm = next(p for p in f["paused"] if p["name"] == "vm0006")
    assert (vm["cause"], vm["safe_to_resume"]) == ("drbd_diskless", False)
    vdb = next(d for d in vm["disks"] if d["target"] == "vdb")
    assert vdb["drbd"]["resource"] == "r0" and vdb["drbd"]["data_access"] is False
    assert all(d["drbd"] is None for p in f["paused"] for d in p["disks"] if d["target"] != "vdb")
    assert f["summary"]["by_cause"]["drbd_diskless"] == 1


def test_collect_on_a_host_without_drbd_has_no_drbd_section(tmp_path):
    pytest.importorskip("libvirt")

    host = FleetDrbdHost({"loaded": False, "resources": [], "errors": []}, tmp_path / "drbd-reads")
    f = run_collect(tmp_path, host)
    assert "drbd" not in f and len(host.calls()) == 1
    vm = next(p for p in f["paused"] if p["name"] == "vm0006")
    assert vm["cause"] != "drbd_diskless"
    assert next(d for d in vm["disks"] if d["target"] == "vdb")["drbd"]["data_access"] is None


@pytest.mark.parametrize("cause", ["drbd_diskless", "drbd_no_quorum", "drbd_suspended"])
def test_kvm_resume_never_overrides_a_drbd_cause(cause):
    from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _resume  # noqa: PLC0415 (libvirt)
    entry = {"cause": cause, "safe_to_resume": False, "safe_to_resume_reason": "the DRBD device cannot serve I/O",
             "responsive": True, "job": None, "disks": []}
    min_free = _resume.parse_min_free("5%")
    d = _resume.judge("vm1", entry, min_free, override=[*_resume.OVERRIDABLE, cause])
    assert d["op"] is None
    assert d["reason"] == f"{cause}: the DRBD device cannot serve I/O (override cannot change this)"
