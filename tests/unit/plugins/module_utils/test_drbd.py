"""drbd_facts' parsers and verdicts on what real DRBD 8.4.11 said in two real-kernel VMs in each state
(fixtures/drbd/<step>-<vm>.json, recorded by fixtures/drbd/record.py), on DRBD 9 texts written in the exact
layout of drbd-utils' drbdsetup.c (fixtures/drbd/status9-*.json: no DRBD 9 module exists here, see
fixtures/drbd/README.md), and the host side with a replaying runner: the exact argv of each command, a
command that times out, a module that is not loaded."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _command_io as cmd
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _status as st

FIX = Path(__file__).parent / "fixtures" / "drbd"
PROC = "cat /proc/drbd"
SHOW = "drbdsetup show"
DMESG = "dmesg | grep -i drbd | tail -n 40"


def rec(step, vm):
    return json.loads((FIX / f"{step}-{vm}.json").read_text())["commands"]


def res84(step, vm):
    c = rec(step, vm)
    return st.resources_84(c[PROC]["stdout"], c[SHOW]["stdout"], c[DMESG]["stdout"])


def res9(name, log=""):
    return st.resources_9((FIX / f"status9-{name}.json").read_text(), log, "9.2.12")


# ---- 8.4, recorded ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step,vm,verdict,role,peer_conn,local,peer_disk,oos", [
    ("connected-inconsistent", "vma", "degraded", "Secondary", "Connected", "Inconsistent", "Inconsistent",
     262100 * 1024),
    ("syncing", "vma", "syncing", "Primary", "Connected", "UpToDate", "Inconsistent", 248504 * 1024),
    ("syncing", "vmb", "syncing", "Secondary", "Connected", "Inconsistent", "UpToDate", None),
    ("connected-uptodate", "vma", "healthy", "Primary", "Connected", "UpToDate", "UpToDate", 0),
    ("connected-uptodate", "vmb", "healthy", "Secondary", "Connected", "UpToDate", "UpToDate", 0),
    ("disconnected", "vma", "disconnected", "Primary", "WFConnection", "UpToDate", "DUnknown", 8192 * 1024),
    ("disconnected", "vmb", "disconnected", "Secondary", "WFConnection", "UpToDate", "DUnknown", 0),
    ("resync-after-cut", "vma", "syncing", "Primary", "Connected", "UpToDate", "Inconsistent", 5488 * 1024),
    ("resync-after-cut", "vmb", "syncing", "Secondary", "Connected", "Inconsistent", "UpToDate", 4240 * 1024),
    ("split-brain", "vma", "split-brain", "Primary", "StandAlone", "UpToDate", "DUnknown", 2048 * 1024),
    ("split-brain", "vmb", "split-brain", "Primary", "StandAlone", "UpToDate", "DUnknown", 2048 * 1024),
    ("recovered", "vma", "healthy", "Primary", "Connected", "UpToDate", "UpToDate", 0),
    ("recovered", "vmb", "healthy", "Secondary", "Connected", "UpToDate", "UpToDate", 0),
    ("diskless", "vma", "degraded", "Primary", "Connected", "UpToDate", "Diskless", 0),
    ("diskless", "vmb", "diskless", "Secondary", "Connected", "Diskless", "UpToDate", 0),
])
def test_84_recorded_states(step, vm, verdict, role, peer_conn, local, peer_disk, oos):
    (r,) = res84(step, vm)
    assert r["name"] == "r0" and r["drbd_version"] == "8.4.11"
    assert (r["verdict"], r["role"]) == (verdict, role)
    (peer,) = r["peers"]
    assert peer["connection_state"] == peer_conn
    assert r["volumes"][0]["disk_state"] == local and peer["volumes"][0]["disk_state"] == peer_disk
    # a detached node's drbdsetup show has no disk line
    assert r["volumes"][0]["disk"] == (None if local == "Diskless" else "/dev/vdb") and r["volumes"][0]["minor"] == 0
    if oos is not None:
        assert r["out_of_sync_bytes"] == oos
    assert r["severity"] == st.SEVERITY[verdict]
    assert (r["remediation"] == []) == (verdict == "healthy")


def test_84_peer_address_from_drbdsetup_show():
    (a,) = res84("connected-uptodate", "vma")
    (b,) = res84("connected-uptodate", "vmb")
    assert {a["peers"][0]["address"], b["peers"][0]["address"]} == {"10.213.2.12:7789", "10.213.2.11:7789"}
    assert a["peers"][0]["address"] != b["peers"][0]["address"]


def test_84_sync_progress_exact():
    (a,) = res84("syncing", "vma")
    assert a["sync"] == {"percent": 6.3, "remaining_bytes": 248504 * 1024, "total_bytes": 262100 * 1024,
                         "eta_seconds": 54, "speed_kib_s": 4532}
    assert a["summary"] == "resynchronising (SyncSource): 6.3% done, 242.7 MiB to go, about 54 s left"
    (b,) = res84("resync-after-cut", "vmb")  # the SyncTarget's line also says "want: 1,024 K/sec"
    assert b["sync"] == {"percent": 66.7, "remaining_bytes": 4240 * 1024, "total_bytes": 8192 * 1024,
                         "eta_seconds": 3, "speed_kib_s": 1316}
    assert b["peers"][0]["volumes"][0]["replication_state"] == "SyncTarget"
    assert b["remediation"] == ["Wait for the resync to finish; do not promote a SyncTarget (Inconsistent) node"]


def test_84_disconnected_says_what_the_peer_lacks():
    (a,) = res84("disconnected", "vma")
    assert a["summary"] == ("not replicating: connection WFConnection (role Primary, disk UpToDate); 8.0 MiB changed "
                            "since the peer last saw it")
    assert a["remediation"][0].startswith("Check the replication link to the peer (10.213.2.12:7789)")
    assert not a["split_brain"]["detected"] and a["split_brain"]["evidence"] == []


def test_84_split_brain_evidence_and_steps():
    (a,) = res84("split-brain", "vma")
    assert a["split_brain"]["detected"]
    assert a["split_brain"]["evidence"] == [
        "[  109.887912] block drbd0: Split-Brain detected but unresolved, dropping connection!"]
    assert a["remediation"][1] == ("On the node whose changes are discarded (the victim): drbdadm disconnect r0; "
                                   "drbdadm secondary r0; drbdadm connect --discard-my-data r0")
    assert a["remediation"][2] == "On the surviving node, if it is StandAlone too: drbdadm connect r0"


def test_84_a_resolved_split_brain_is_no_longer_reported():
    """recovered: the log has "Split-Brain detected, manually solved" and a connection after it."""
    (a,) = res84("recovered", "vma")
    assert "manually solved" in rec("recovered", "vma")[DMESG]["stdout"]
    assert a["split_brain"] == {"detected": False, "evidence": []}
    # the unresolved line followed by a later connection: cleared too
    log = rec("split-brain", "vma")[DMESG]["stdout"] + "[  200.1] block drbd0: conn( WFBitMapS -> SyncSource )\n"
    assert st.split_brain_evidence(log, "r0", [0]) == []


def test_84_without_the_kernel_log_a_standalone_is_disconnected():
    c = rec("split-brain", "vma")
    (a,) = st.resources_84(c[PROC]["stdout"], c[SHOW]["stdout"], "")
    assert a["verdict"] == "disconnected" and "drbdadm connect r0" in a["remediation"][0]


def test_84_unconfigured_has_no_resources_and_unknown_minors_keep_a_name():
    assert res84("unconfigured", "vma") == []
    c = rec("connected-uptodate", "vma")
    (a,) = st.resources_84(c[PROC]["stdout"], "", "")
    assert a["name"] == "minor-0" and a["verdict"] == "healthy"


def test_84_standalone_line_without_protocol_parses():
    text = rec("split-brain", "vmb")[PROC]["stdout"]
    assert " ds:UpToDate/DUnknown   r-----" in text
    m = st.parse_proc_drbd(text)["minors"][0]
    got = (m["cs"], m["role"], m["peer_role"], m["protocol"], m["flags"])
    assert got == ("StandAlone", "Primary", "Unknown", None, "r-----")
    assert m["counters"]["oos"] == 2048 and m["counters"]["wo"] == "f"


def test_parse_proc_drbd_refuses_what_drbd_did_not_write():
    with pytest.raises(st.StatusError, match="no 'version:' line"):
        st.parse_proc_drbd("hello\n")


# ---- DRBD 9, from drbd-utils' output format -------------------------------------------------------------------


def test_9_healthy_with_a_diskless_tiebreaker():
    (r,) = res9("healthy")
    assert (r["verdict"], r["role"], r["out_of_sync_bytes"]) == ("healthy", "Primary", 0)
    assert [(p["name"], p["node_id"], p["connection_state"], p["volumes"][0]["disk_state"]) for p in r["peers"]] == [
        ("hvb", 1, "Connected", "UpToDate"), ("witness", 2, "Connected", "Diskless")]
    assert r["volumes"][0] == {"volume": 0, "minor": 1000, "disk_state": "UpToDate", "client": False, "quorum": True,
                               "size_bytes": 262100 * 1024, "disk": None}


def test_9_syncing_with_details():
    (r,) = res9("syncing")
    assert r["verdict"] == "syncing"
    assert r["sync"] == {"percent": 50.0, "remaining_bytes": 131050 * 1024, "total_bytes": 524200 * 512,
                         "eta_seconds": 26, "speed_kib_s": 4997}
    assert r["peers"][0]["volumes"][0]["sync_percent"] == 50.0


def test_9_split_brain_from_the_kernel_log():
    log = (FIX / "dmesg9-split-brain.txt").read_text()
    (r,) = res9("split-brain", log)
    assert r["verdict"] == "split-brain" and r["split_brain"]["evidence"] == [
        "[ 2210.104870] drbd vm1disk/0 drbd1000 hvb: Split-Brain detected but unresolved, dropping connection!"]
    assert "drbdadm connect --discard-my-data vm1disk" in r["remediation"][1]
    (r,) = res9("split-brain")  # the same status without the log: StandAlone, disconnected
    assert r["verdict"] == "disconnected"


def test_9_no_quorum():
    (r,) = res9("no-quorum")
    assert r["verdict"] == "no-quorum" and r["suspended"] is True
    assert r["out_of_sync_bytes"] == 512 * 1024


def test_9_two_resources_one_diskless():
    a, b = res9("two-resources")
    assert (a["name"], a["verdict"]) == ("vm1disk", "healthy")
    assert (b["name"], b["verdict"]) == ("vm2disk", "diskless")
    assert b["remediation"][0].endswith("drbdadm attach vm2disk; the resync from the peer starts by itself")
    assert st.summary([a, b]) == {"resources": 2, "verdicts": {"diskless": 1, "healthy": 1}, "worst": "diskless"}


def test_9_json_that_is_not_drbdsetup_s():
    with pytest.raises(st.StatusError, match="printed no JSON"):
        st.resources_9("USAGE: drbdsetup ...")
    with pytest.raises(st.StatusError, match="not a list"):
        st.resources_9("{}")


# ---- the host side, replaying the recorded answers --------------------------------------------------------------


class Replay:
    def __init__(self, step, vm, timeout_on=None):
        self.c = rec(step, vm)
        self.calls = []
        self.timeout_on = timeout_on

    def __call__(self, argv, timeout):
        self.calls.append((argv, timeout))
        if self.timeout_on and argv[0].endswith(self.timeout_on):
            raise cmd.ToolTimeout(timeout, "", "")
        if argv[0].endswith("dmesg"):
            return 0, self.c[DMESG]["stdout"], ""
        if argv[1:] == ["show"]:
            return 0, self.c[SHOW]["stdout"], ""
        if argv[1:] == ["--version"]:
            return 0, json.loads((FIX / "versions.json").read_text())["drbdadm --version"], ""
        raise AssertionError(argv)


TOOLS = {"drbdsetup": "/usr/sbin/drbdsetup", "drbdadm": "/usr/sbin/drbdadm", "dmesg": "/usr/bin/dmesg"}


def proc_root(tmp_path, step, vm):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "drbd").write_text(rec(step, vm)[PROC]["stdout"])
    return str(tmp_path)


def test_gather_84_runs_each_command_under_the_timeout(tmp_path):
    runner = Replay("split-brain", "vmb")
    f = _facts_io.gather(7, runner=runner, root=proc_root(tmp_path, "split-brain", "vmb"), tools=TOOLS)
    assert runner.calls == [(["/usr/sbin/drbdadm", "--version"], 7), (["/usr/bin/dmesg"], 7),
                            (["/usr/sbin/drbdsetup", "show"], 7)]
    assert (f["loaded"], f["kernel_version"], f["utils_version"], f["errors"]) == (True, "8.4.11", "9.22.0", [])
    assert f["summary"] == {"resources": 1, "verdicts": {"split-brain": 1}, "worst": "split-brain"}


def test_gather_a_command_that_hangs_is_an_error_not_a_hang(tmp_path):
    runner = Replay("disconnected", "vma", timeout_on="dmesg")
    f = _facts_io.gather(3, runner=runner, root=proc_root(tmp_path, "disconnected", "vma"), tools=TOOLS)
    assert f["errors"] == ["/usr/bin/dmesg: did not finish within 3 s (killed)"]
    assert f["resources"][0]["verdict"] == "disconnected"


def test_gather_names_and_missing_resources(tmp_path):
    f = _facts_io.gather(3, names=("r0", "vm9"), runner=Replay("recovered", "vmb"),
                         root=proc_root(tmp_path, "recovered", "vmb"), tools=TOOLS)
    assert [r["name"] for r in f["resources"]] == ["r0"]
    assert f["errors"] == ["resource vm9 is not up on this host"]


def test_gather_without_the_module_or_the_tools(tmp_path):
    f = _facts_io.gather(3, root=str(tmp_path), tools=TOOLS, runner=None)
    assert (f["loaded"], f["resources"], f["summary"]["worst"]) == (False, [], None)
    f = _facts_io.gather(3, runner=None, root=proc_root(tmp_path, "connected-uptodate", "vma"),
                         tools={"drbdsetup": None, "drbdadm": None, "dmesg": None})
    assert "drbdsetup not found on this host (PATH and the sbin directories): install drbd-utils" in f["errors"]


def test_gather_9_reads_status_json(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "drbd").write_text("version: 9.2.12 (api:2/proto:86-122)\nGIT-hash: 0\n")
    calls = []

    def runner(argv, timeout):
        calls.append(argv[1:])
        if argv[1:] == ["status", "--json"]:
            return 0, (FIX / "status9-two-resources.json").read_text(), ""
        return 0, "", ""

    f = _facts_io.gather(5, runner=runner, root=str(tmp_path), tools=TOOLS)
    assert ["status", "--json"] in calls and ["show"] not in calls
    assert [r["verdict"] for r in f["resources"]] == ["healthy", "diskless"]


def test_gather_with_the_real_runner_kills_a_hung_tool(tmp_path):
    """The real run_tool, a stand-in dmesg that sleeps: gather returns within the timeout plus a margin."""
    sleeper = tmp_path / "dmesg"
    sleeper.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    sleeper.chmod(0o755)
    root = proc_root(tmp_path, "connected-uptodate", "vma")
    t0 = time.monotonic()
    f = _facts_io.gather(1, root=root, tools={"drbdsetup": None, "drbdadm": None, "dmesg": str(sleeper)})
    assert time.monotonic() - t0 < 10
    assert f"{sleeper}: did not finish within 1 s (killed)" in f["errors"]
