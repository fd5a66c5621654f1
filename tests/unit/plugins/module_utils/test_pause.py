"""Table tests for the pure diagnosis: every reason code 0-14 x disk error code 0-2, jobs, crashed, storage."""
from __future__ import annotations

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _states
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose

MIB = 1024 * 1024
NOW = 1_800_000_000.0


def file_disk(avail=0, total=20 * MIB, capacity=12 * MIB, physical=9 * MIB, path="/srv/vm/mnt/disk.img"):
    return {"target": "vda", "type": "file", "path": path, "device": "disk", "readonly": False,
            "capacity": capacity, "allocation": physical, "physical": physical,
            "evidence": {"filesystem": {"mount_point": "/srv/vm/mnt", "device": "/dev/loop3", "fstype": "ext4",
                                        "total_bytes": total, "available_bytes": avail}, "endpoints": []}}


def nbd_disk(reachable=True, created=None):
    return {"target": "vda", "type": "network", "protocol": "nbd", "export": "disk0", "device": "disk",
            "hosts": [{"transport": "unix", "socket": "/run/nbd.sock"}], "readonly": False,
            "evidence": {"endpoints": [{"endpoint": "unix:/run/nbd.sock", "reachable": reachable,
                                        "error": None if reachable else "Connection refused",
                                        "created": created}]}}


def ev(reason, code=None, disks=None, job=None, state=3, **kw):
    e = {"name": "vm1", "state": state, "reason": reason, "disks": disks if disks is not None else [file_disk(0)],
         "disk_errors": {} if code is None else {"vda": code}, "job": job, "responsive": True,
         "paused": {"since": NOW - 60, "seconds": 60.0, "source": "status_xml_mtime"}}
    e.update(kw)
    return e


# reason -> (cause, safe) with no job in flight and no disk fault for reasons other than 5
EXPECTED = {
    0: ("unknown", False), 1: ("user_paused", True), 2: ("migration", False), 3: ("save_job", True),
    4: ("dump_job", True), 6: ("watchdog", False), 7: ("from_snapshot", True), 8: ("shutting_down", False),
    9: ("snapshot_job", True), 10: ("crashed", False), 11: ("starting_up", False), 12: ("postcopy", False),
    13: ("postcopy_failed", False), 14: ("api_error", False),
}
# (disk error code, storage full?) -> (cause, safe) for reason 5 on a file disk
IOERROR = {
    (0, True): ("storage_full", False), (0, False): ("storage_io_error", False),
    (1, True): ("storage_io_error", False), (1, False): ("storage_io_error", False),
    (2, True): ("storage_full", False), (2, False): ("storage_full", True),
}


@pytest.mark.parametrize("code", [0, 1, 2])
@pytest.mark.parametrize("reason", list(range(15)))
def test_every_reason_and_disk_error_code(reason, code):
    if reason == 5:
        for full in (True, False):
            d = _diagnose.diagnose(ev(reason, code, [file_disk(0 if full else 10 * MIB)]))
            assert (d["cause"], d["safe_to_resume"]) == IOERROR[(code, full)], (code, full, d)
            assert d["severity"] == "critical"
            assert d["remediation"] and d["safe_to_resume_reason"]
        return
    # outside ioerror, a plain disk with space does not change the cause
    d = _diagnose.diagnose(ev(reason, code, [file_disk(10 * MIB)]))
    assert (d["cause"], d["safe_to_resume"]) == EXPECTED[reason], d
    assert d["severity"] in ("info", "warning", "critical")
    assert d["remediation"], d
    assert d["safe_to_resume_reason"]
    assert d["cause"] in _diagnose.CAUSES


@pytest.mark.parametrize("reason", list(range(15)))
@pytest.mark.parametrize("kind,cause", [("save", "save_job"), ("dump", "dump_job"), ("snapshot", "snapshot_job"),
                                        ("migration_out", "migration"), ("backup", "backup_job"),
                                        ("weird", "job_in_flight")])
def test_job_in_flight_is_never_safe(reason, kind, cause):
    d = _diagnose.diagnose(ev(reason, 2, [file_disk(10 * MIB)], job={"active": True, "kind": kind,
                                                                     "source": "libvirt"}))
    assert d["safe_to_resume"] is False
    assert d["cause"] == ({12: "postcopy", 13: "postcopy_failed"}.get(reason, cause))
    assert "job" in d["safe_to_resume_reason"] or "post-copy" in d["safe_to_resume_reason"]


@pytest.mark.parametrize("reason", [0, 1])
def test_crashed_state(reason):
    d = _diagnose.diagnose(ev(reason, state=6, on_crash="preserve"))
    assert d["cause"] == "crashed" and d["safe_to_resume"] is False
    assert "virsh dump --memory-only vm1" in d["remediation"][0]


def test_enospc_remediation_names_mount_device_and_sizes():
    d = _diagnose.diagnose(ev(5, 2, [file_disk(0)]))
    text = " ".join(d["remediation"])
    assert "/srv/vm/mnt is full for QEMU (0 B available of 20 MiB)" in text
    assert "/srv/vm/mnt/disk.img" in text
    assert any("/dev/loop3" in f for f in d["findings"])
    assert "still full" in d["safe_to_resume_reason"]


def test_enospc_needs_headroom_not_just_one_byte():
    # 12 MiB image with 9 MiB allocated may grow 3 MiB: 1 MiB free is not enough, 3 MiB is
    assert _diagnose.diagnose(ev(5, 2, [file_disk(1 * MIB)]))["safe_to_resume"] is False
    assert _diagnose.diagnose(ev(5, 2, [file_disk(3 * MIB)]))["safe_to_resume"] is True


def test_enospc_unknown_space_is_not_safe():
    disk = dict(file_disk(), evidence={})
    d = _diagnose.diagnose(ev(5, 2, [disk]))
    assert d["cause"] == "storage_full" and d["safe_to_resume"] is False
    assert "cannot be verified" in d["safe_to_resume_reason"]


def test_thin_pool_and_storage_pool():
    lv = {"target": "vda", "type": "block", "path": "/dev/mapper/vg0-vm1", "capacity": None, "physical": None,
          "evidence": {"thin_pool": {"name": "vg0/pool0", "data_percent": 100.0, "metadata_percent": 10.0}}}
    d = _diagnose.diagnose(ev(5, 2, [lv]))
    assert d["safe_to_resume"] is False and "vg0/pool0" in " ".join(d["remediation"])
    lv["evidence"]["thin_pool"]["data_percent"] = 50.0
    assert _diagnose.diagnose(ev(5, 2, [lv]))["safe_to_resume"] is True
    vol = {"target": "vda", "type": "volume", "pool": "default", "volume": "vm1.qcow2",
           "evidence": {"pool": {"name": "default", "available": 0, "capacity": 10 * MIB}}}
    d = _diagnose.diagnose(ev(5, 2, [vol]))
    assert d["safe_to_resume"] is False and "default" in " ".join(d["remediation"])


def test_nbd_unreachable_then_restarted():
    d = _diagnose.diagnose(ev(5, 1, [nbd_disk(reachable=False)]))
    assert d["cause"] == "storage_unreachable" and d["safe_to_resume"] is False
    assert "unix:/run/nbd.sock" in " ".join(d["remediation"])
    # same server still serving (socket older than the pause): the fault may persist
    d = _diagnose.diagnose(ev(5, 1, [nbd_disk(True, created=NOW - 3600)]))
    assert d["cause"] == "storage_io_error" and d["safe_to_resume"] is False
    # a new server came up after the pause
    d = _diagnose.diagnose(ev(5, 1, [nbd_disk(True, created=NOW - 10)]))
    assert d["cause"] == "storage_io_error" and d["safe_to_resume"] is True
    # status file rewritten after the fix (e.g. a taint): the server still postdates the domain's start
    d = _diagnose.diagnose(ev(5, 1, [nbd_disk(True, created=NOW - 100)], started_at=NOW - 200))
    assert d["safe_to_resume"] is True and "replaced" in " ".join(d["findings"])
    d = _diagnose.diagnose(ev(5, 1, [nbd_disk(True, created=NOW - 300)], started_at=NOW - 200))
    assert d["safe_to_resume"] is False


def test_lock_failure_and_user():
    d = _diagnose.diagnose(ev(1, on_lockfailure="pause", log_lines=["sanlock: lease lost, lock failure"]))
    assert d["cause"] == "lock_failure" and d["safe_to_resume"] is False
    d = _diagnose.diagnose(ev(1, on_lockfailure="pause"))
    assert d["cause"] == "user_paused" and d["safe_to_resume"] is False


def test_unknown_with_emulation_failure_and_custom_monitor():
    d = _diagnose.diagnose(ev(0, log_lines=["KVM internal error. Suberror: 1", "emulation failure"]))
    assert d["cause"] == "emulation_failure" and d["safe_to_resume"] is False
    d = _diagnose.diagnose(ev(0, log_lines=["Domain id=3 is tainted: custom-monitor"]))
    assert d["cause"] == "unknown" and any("custom-monitor" in f for f in d["findings"])


def test_unresponsive_is_never_safe():
    d = _diagnose.diagnose(ev(1, responsive=False))
    assert d["safe_to_resume"] is False


def test_unknown_reason_code():
    d = _diagnose.diagnose(ev(99))
    assert d["cause"] == "unknown" and d["safe_to_resume"] is False


def test_reason_names():
    assert _states.reason_name(3, 5) == "ioerror"
    assert _states.reason_name(6, 1) == "panicked"
    assert _states.reason_name(3, 42) == "42"


# ---- storage that does not answer (issue 25) ---------------------------------------------------------------

def dead_disk(kind="mount", options="rw,vers=4.2,hard,proto=tcp,timeo=600,retrans=2", fstype="nfs4"):
    un = {"kind": kind, "target": "/srv/nfs" if kind == "mount" else "/dev/sdb", "mount_point": "/srv/nfs",
          "fstype": fstype, "source": "nfs1:/export/vm" if kind == "mount" else "/dev/sdb", "options": options,
          "since": NOW - 240, "seconds": 240.0, "probe_pid": 4321}
    return {"target": "vda", "type": "file" if kind == "mount" else "block", "device": "disk",
            "path": "/srv/nfs/vm1.img" if kind == "mount" else "/dev/sdb",
            "evidence": {"filesystem": {"mount_point": "/srv/nfs", "responsive": False}, "unresponsive": un}}


@pytest.mark.parametrize("reason", [1, 5, 0, 6])
def test_storage_that_does_not_answer_wins_over_the_pause_reason(reason):
    d = _diagnose.diagnose(ev(reason, disks=[dead_disk(), file_disk(avail=10 * MIB)]))
    assert (d["cause"], d["severity"], d["safe_to_resume"]) == ("storage_unresponsive", "critical", False)
    assert d["summary"] == "the storage under disk vda does not answer: /srv/nfs (nfs4 from nfs1:/export/vm)"
    text = " ".join(d["findings"])
    assert "has not answered for 240s (a probe, PID 4321, is still waiting for it)" in text
    assert "mounted hard (timeo=600, retrans=2): I/O waits for the server for ever" in text
    assert f"pause reason: {_states.reason_name(3, reason)}" in text
    assert "nfs1:/export/vm (nfs4)" in d["remediation"][0] and "hard/soft, timeo" in d["remediation"][0]
    assert "stat /srv/nfs" in d["remediation"][-1]


def test_soft_mount_fuse_and_block_device_are_told_apart():
    soft = _diagnose.diagnose(ev(1, disks=[dead_disk(options="rw,soft,timeo=30,retrans=3")]))
    assert "mounted soft (timeo=30, retrans=3): I/O fails with EIO" in " ".join(soft["findings"])
    fuse = _diagnose.diagnose(ev(1, disks=[dead_disk(options="", fstype="fuse")]))
    assert "a FUSE filesystem" in " ".join(fuse["findings"])
    block = _diagnose.diagnose(ev(5, code=1, disks=[dead_disk(kind="block")]))
    assert block["cause"] == "storage_unresponsive" and "block device /dev/sdb" in block["summary"]
    assert "multipath -ll" in block["remediation"][0]


def test_a_crashed_domain_stays_crashed_with_the_dead_storage_as_a_finding():
    d = _diagnose.diagnose(ev(1, state=6, disks=[dead_disk()]))
    assert d["cause"] == "crashed" and any("/srv/nfs" in f and "does not answer" in f for f in d["findings"])
