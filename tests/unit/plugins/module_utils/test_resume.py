"""The pure resume decision: real diagnoses (_diagnose.diagnose) in, resume / restart / refuse and the exact why out."""

from __future__ import annotations

import fnmatch

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose, _resume

MIB = 1024 * 1024
NOW = 1_800_000_000.0
FIVE_PCT = _resume.parse_min_free("5%")


def fs(avail, total=20 * MIB, mount="/srv/vm/mnt", device="/dev/loop3"):
    return {"mount_point": mount, "device": device, "fstype": "ext4", "total_bytes": total, "available_bytes": avail}


def file_disk(avail=0, target="vda", code=2, device="disk", filesystem=None, capacity=12 * MIB):
    f = filesystem or fs(avail)
    return {"target": target, "type": "file", "path": f"{f['mount_point']}/{target}.img", "device": device,
            "readonly": device != "disk", "capacity": capacity, "allocation": 9 * MIB, "physical": 9 * MIB,
            "error_code": code, "evidence": {"filesystem": f, "endpoints": []}}


def nbd_disk(reachable=True, created=None, code=1):
    return {"target": "vda", "type": "network", "protocol": "nbd", "export": "disk0", "device": "disk",
            "hosts": [{"transport": "unix", "socket": "/run/nbd.sock"}], "readonly": False, "error_code": code,
            "evidence": {"endpoints": [{"endpoint": "unix:/run/nbd.sock", "reachable": reachable,
                                        "error": None if reachable else "Connection refused", "created": created}]}}


def entry(reason, disks=(), job=None, state=3, responsive=True, **kw):
    """The paused[] entry _collect builds around _diagnose.diagnose, with the keys the decision reads."""
    disks = list(disks)
    ev = {"name": "vm1", "state": state, "reason": reason, "disks": disks, "job": job, "responsive": responsive,
          "disk_errors": {d["target"]: d["error_code"] for d in disks if d.get("error_code")},
          "paused": {"since": NOW - 60, "seconds": 60.0, "source": "status_xml_mtime"}}
    ev.update(kw)
    diag = _diagnose.diagnose(ev)
    public = [{"target": d["target"], "device": d["device"], "type": d["type"],
               "source": d.get("path") or "nbd://unix:/run/nbd.sock/disk0",
               "error_code": d.get("error_code", 0), "error": _diagnose.DISK_ERRORS[d.get("error_code", 0)],
               "filesystem": d["evidence"].get("filesystem"), "endpoints": d["evidence"].get("endpoints") or [],
               "block_device": None} for d in disks]
    return dict(diag, name="vm1", state_code=state, reason_code=reason, job=job, responsive=responsive,
                unresponsive_reason=None if responsive else "not queried: its status file shows a save job in flight",
                disks=public)


def judge(e, min_free=None, override=()):
    return _resume.judge("vm1", e, min_free or FIVE_PCT, list(override))


# -- option parsing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("0", (0, None)), ("512", (512, None)), ("4K", (4096, None)), ("10M", (10 * MIB, None)),
    ("1.5G", (int(1.5 * 1024 ** 3), None)), ("2T", (2 * 1024 ** 4, None)), ("64MiB", (64 * MIB, None)),
    ("64mb", (64 * MIB, None)), (" 8 M ", (8 * MIB, None)), ("5%", (None, 5.0)), ("0.5 %", (None, 0.5)),
    ("100%", (None, 100.0)),
])
def test_min_free_syntax(text, expected):
    got = _resume.parse_min_free(text)
    assert (got["bytes"], got["percent"]) == expected and got["text"] == text.strip()


@pytest.mark.parametrize("text", ["", "lots", "-5M", "5X", "5%%", "M", "101%", "1e6", None,
                                  "9" * 400, "9" * 60 + "T", "16777217T", "1" + "0" * 70 + "%"])
def test_min_free_errors_name_the_option(text):
    with pytest.raises(_resume.ResumeError, match=r"^min_free: "):
        _resume.parse_min_free(text)


def test_min_free_bounds_are_inclusive():
    assert _resume.parse_min_free("16777216T")["bytes"] == 2 ** 64          # 16 EiB, the largest filesystem
    assert _resume.parse_min_free("9" * 19)["bytes"] == int(float("9" * 19))  # 10 EB: allowed
    with pytest.raises(_resume.ResumeError, match=r"^min_free: .* more than 16 EiB"):
        _resume.parse_min_free("9" * 20)                                      # 100 EB: not


def test_required_bytes():
    assert _resume.required_bytes(FIVE_PCT, 20 * MIB) == MIB
    assert _resume.required_bytes(_resume.parse_min_free("1%"), 1001) == 11        # rounds up, never down
    assert _resume.required_bytes(FIVE_PCT, None) is None
    assert _resume.required_bytes(_resume.parse_min_free("3M"), None) == 3 * MIB


@pytest.mark.parametrize("name", ["web-01", "a*b", "x?[y]", "[abc]", "we[b]-*"])
def test_glob_escape_matches_only_the_name(name):
    pattern = _resume.glob_escape(name)
    assert fnmatch.fnmatchcase(name, pattern)
    for other in ("web-0x", "aXb", "xZ[y]", "a", "web-01x"):
        if other != name:
            assert not fnmatch.fnmatchcase(other, pattern)


@pytest.mark.parametrize("state,text", [
    ((1, 5), "running"), ((3, 5), "paused (ioerror)"), ((3, 13), "paused (postcopy_failed)"),
    ((6, 1), "crashed (panicked)"), ((5, 2), "shutoff (destroyed)"), ((7, 0), "pmsuspended (0)"),
    ((None, None), "unknown"),
])
def test_state_text(state, text):
    assert _resume.state_text(*state) == text


# -- every reason, with and without override --------------------------------------------------------------------

# reason -> (op without override, op when its own cause is overridden); no job, no disk fault
TABLE = {
    0: (None, "resume"), 1: ("resume", "resume"), 2: (None, "resume"), 3: ("resume", "resume"),
    4: ("resume", "resume"), 6: (None, "resume"), 7: ("resume", "resume"), 8: (None, None),
    9: ("resume", "resume"), 10: (None, "restart"), 11: (None, None), 12: (None, "resume"),
    13: (None, "resume"), 14: (None, "resume"),
}


@pytest.mark.parametrize("reason", sorted(TABLE))
def test_every_reason(reason):
    e = entry(reason, [file_disk(10 * MIB, code=0)])
    plain, forced = TABLE[reason]
    d = judge(e)
    assert d["op"] == plain and d["overridden"] is None
    assert d["reason"].startswith(e["cause"] + ": " + e["safe_to_resume_reason"])
    if plain is None:
        hint = f"list {e['cause']} in override to " if e["cause"] in _resume.OVERRIDABLE else "override cannot"
        assert hint in d["reason"]
    o = judge(e, override=sorted(_resume.OVERRIDABLE))
    assert o["op"] == forced
    assert (o["overridden"] == e["cause"]) is (plain is None and forced is not None)
    if o["overridden"]:
        assert f"overridden (override: {e['cause']}): {_resume.OVERRIDABLE[e['cause']]}" in o["reason"]
    other = [c for c in _resume.OVERRIDABLE if c != e["cause"]]
    assert judge(e, override=other)["op"] == plain, "only the domain's own cause can be overridden"


def test_postcopy_reasons_say_split_brain():
    for reason in (12, 13):
        d = judge(entry(reason))
        assert d["op"] is None and "split brain" in d["reason"]


def test_crashed_state_restarts_only_with_override():
    e = entry(1, state=6, on_crash="preserve")
    assert e["cause"] == "crashed"
    d = judge(e)
    assert d["op"] is None and "list crashed in override to restart the domain (destroy, then start" in d["reason"]
    assert judge(e, override=["crashed"])["op"] == "restart"
    assert judge(e, override=["watchdog"])["op"] is None


# -- never: jobs in flight, unresponsive domains, causes nobody knows ----------------------------------------------

@pytest.mark.parametrize("kind,cause", [("save", "save_job"), ("dump", "dump_job"), ("backup", "backup_job"),
                                        ("migration_out", "migration"), ("snapshot", "snapshot_job")])
def test_job_in_flight_is_never_resumed(kind, cause):
    e = entry(3, job={"active": True, "kind": kind, "source": "libvirt"})
    assert e["cause"] == cause
    d = judge(e, override=sorted(_resume.OVERRIDABLE))
    assert d["op"] is None and f"a {kind.replace('_', ' ')} job is in flight" in d["reason"]
    assert "virsh domjobabort vm1" in d["reason"] and "override cannot change this" in d["reason"]


def test_postcopy_job_only_with_its_override():
    e = entry(12, job={"active": True, "kind": "migration_out", "source": "libvirt"})
    assert e["cause"] == "postcopy"
    assert judge(e)["op"] is None
    assert judge(e, override=["migration"])["op"] is None
    assert judge(e, override=["postcopy"])["op"] == "resume"


def test_unresponsive_is_never_touched():
    e = entry(1, responsive=False)
    d = judge(e, override=sorted(_resume.OVERRIDABLE))
    assert d["op"] is None and "not queried" in d["reason"] and "override cannot change this" in d["reason"]


def test_unknown_cause_string():
    e = dict(entry(1), cause="martian_invasion", safe_to_resume=True)
    d = judge(e, override=sorted(_resume.OVERRIDABLE))
    assert d["op"] is None and d["reason"].startswith("martian_invasion: a cause this module does not know")


# -- ENOSPC: the diagnosis and min_free -------------------------------------------------------------------------

def test_enospc_still_full_names_mount_device_and_min_free():
    d = judge(entry(5, [file_disk(100 * 1024)]))
    assert d["op"] is None
    assert d["reason"].startswith("storage_full: the storage is still full")
    assert ("/srv/vm/mnt (ext4 on /dev/loop3) has 100 KiB available for QEMU (f_bavail), less than "
            "min_free=5% requires: 1 MiB (5% of 20 MiB)") in d["reason"]
    assert "list storage_full in override" in d["reason"]


def test_enospc_space_back_resumes_and_says_how_much():
    d = judge(entry(5, [file_disk(10 * MIB)]))
    assert d["op"] == "resume"
    assert "/srv/vm/mnt (ext4 on /dev/loop3) has 10 MiB available for QEMU, at least 1 MiB (5% of 20 MiB)" \
        in d["reason"]


def test_enospc_min_free_is_stricter_than_the_diagnosis():
    e = entry(5, [file_disk(10 * MIB)])
    assert e["safe_to_resume"] is True
    d = judge(e, min_free=_resume.parse_min_free("64M"))
    assert d["op"] is None and "less than min_free=64M requires: 64 MiB" in d["reason"]
    assert judge(e, min_free=_resume.parse_min_free("60%"))["op"] is None
    assert judge(e, min_free=_resume.parse_min_free("50%"))["op"] == "resume"  # exactly enough is enough
    assert judge(e, min_free=_resume.parse_min_free("10M"))["op"] == "resume"
    forced = judge(e, min_free=_resume.parse_min_free("64M"), override=["storage_full"])
    assert forced["op"] == "resume" and forced["overridden"] == "storage_full"


def test_every_filesystem_holding_a_disk_counts_once():
    roomy, tight = fs(10 * MIB), fs(1536 * 1024, total=100 * MIB, mount="/srv/b", device="/dev/sdb1")
    disks = [file_disk(filesystem=roomy), file_disk(target="vdb", code=0, filesystem=tight),
             file_disk(target="vdc", code=0, filesystem=roomy),
             file_disk(target="hdc", code=0, device="cdrom", filesystem=fs(0, mount="/iso", device="/dev/sr0"))]
    e = entry(5, disks)
    assert e["safe_to_resume"] is True
    assert [f["mount_point"] for f in _resume.filesystems(e)] == ["/srv/vm/mnt", "/srv/b"]   # not the CD-ROM
    assert _resume.filesystems(e)[0]["disks"] == ["vda", "vdc"]
    d = judge(e)
    assert d["op"] is None and "/srv/b (ext4 on /dev/sdb1) has 1.5 MiB available" in d["reason"]
    assert "/srv/vm/mnt" not in d["reason"]


def test_unknown_free_space_refuses():
    e = entry(5, [file_disk(10 * MIB)])
    e["disks"][0]["filesystem"] = dict(e["disks"][0]["filesystem"], total_bytes=None)
    d = judge(e)
    assert d["op"] is None and "free space on /srv/vm/mnt (ext4 on /dev/loop3) is unknown" in d["reason"]


def test_disks_not_on_a_filesystem_leave_it_to_the_diagnosis():
    e = dict(entry(5, [file_disk(10 * MIB)]), disks=[{"target": "vda", "device": "disk", "filesystem": None}])
    d = judge(e)
    assert d["op"] == "resume" and "min_free=5% does not apply" in d["reason"]


# -- EIO and unreachable storage -----------------------------------------------------------------------------------

def test_eio_names_the_endpoint_that_still_answers():
    d = judge(entry(5, [nbd_disk(reachable=True, created=NOW - 600)]))
    assert d["op"] is None and d["reason"].startswith("storage_io_error: an I/O error whose cause cannot be shown")
    assert "disk vda (nbd://unix:/run/nbd.sock/disk0) has a unspecified error: endpoint unix:/run/nbd.sock answers" \
        in d["reason"]
    assert judge(entry(5, [nbd_disk(True, NOW - 600)]), override=["storage_io_error"])["op"] == "resume"


def test_eio_endpoint_replaced_after_the_failure_resumes():
    d = judge(entry(5, [nbd_disk(reachable=True, created=NOW - 5)]))
    assert d["op"] == "resume" and "replaced since the failure and answers" in d["reason"]


def test_unreachable_names_the_endpoint():
    e = entry(5, [nbd_disk(reachable=False)])
    assert e["cause"] == "storage_unreachable"
    d = judge(e)
    assert d["op"] is None and "endpoint unix:/run/nbd.sock does not answer (Connection refused)" in d["reason"]


# -- before and after acting --------------------------------------------------------------------------------------

def test_changed_since_the_diagnosis():
    e = entry(5, [file_disk(10 * MIB)])
    assert _resume.changed_since(e, (3, 5)) is None
    assert "(paused (ioerror) -> paused (user))" in _resume.changed_since(e, (3, 1))


@pytest.mark.parametrize("state,action,failed,text", [
    ((1, 1), "already_running", False, "vm1 is already running"),
    ((5, 2), "refused", True, "vm1 is shutoff (destroyed), not paused: kvm_resume does not start domains"),
    ((7, 0), "refused", True, "virsh dompmwakeup vm1"),
    ((4, 1), "refused", True, "not paused or crashed"),
])
def test_not_paused(state, action, failed, text):
    out = _resume.not_paused("vm1", state)
    assert (out["action"], out["failed"]) == (action, failed) and text in out["reason"]


@pytest.mark.parametrize("op,after,action,failed,text", [
    ("resume", (1, 5), "resumed", False, "resumed vm1; it is running"),
    ("restart", (1, 1), "restarted", False, "restarted vm1; it is running"),
    ("resume", (3, 5), "paused_again", True, "resumed vm1, but it paused again within 1 s: now paused (ioerror)"),
    ("restart", (6, 1), "error", True, "restarted vm1, but it did not stay running: now crashed (panicked)"),
    ("resume", None, "error", True, "now unknown"),
])
def test_outcome(op, after, action, failed, text):
    out = _resume.outcome("vm1", op, after, 1.0)
    assert (out["action"], out["failed"]) == (action, failed) and text in out["reason"]


def test_overridable_causes_are_diagnosed_causes():
    assert set(_resume.OVERRIDABLE) <= set(_diagnose.CAUSES)
    never = {"save_job", "dump_job", "snapshot_job", "backup_job", "job_in_flight", "shutting_down", "starting_up"}
    assert not never & set(_resume.OVERRIDABLE)


# -- storage that does not answer (issue 25) -----------------------------------------------------------------

def test_storage_unresponsive_is_refused_even_with_override():
    un = {"kind": "mount", "target": "/srv/nfs", "mount_point": "/srv/nfs", "fstype": "nfs4",
          "source": "nfs1:/export/vm", "options": "hard", "since": NOW - 90, "seconds": 90.0, "probe_pid": 7}
    disk = {"target": "vda", "device": "disk", "type": "file", "path": "/srv/nfs/vm1.img",
            "evidence": {"filesystem": {"mount_point": "/srv/nfs", "responsive": False}, "unresponsive": un}}
    e = entry(1, disks=[disk])
    e["disks"][0]["storage_unresponsive"] = un
    assert e["cause"] == "storage_unresponsive"
    for override in ((), ("user_paused", "storage_io_error", "storage_unreachable")):
        d = judge(e, override=override)
        assert d["op"] is None and d["overridden"] is None
        assert d["reason"].startswith("storage_unresponsive: the storage under its disks does not answer")
        assert "/srv/nfs (nfs4 from nfs1:/export/vm) has not answered for 90s (disks vda)" in d["reason"]
        assert "override cannot change this" in d["reason"]
