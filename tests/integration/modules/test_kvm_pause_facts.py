"""kvm_pause_facts against real libvirt/QEMU domains in every lab state, run as a real ansible process.

Each case asserts the cause, the named path / device / endpoint and safe_to_resume (false while the
cause holds, true once the lab clears it), plus the hung-job case: one domain blocked in a save into a
FIFO nobody reads, several other paused domains, and the task must end within timeout + 2 s.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.pause._collect_io import collect
from kvmlab.testdriver import write_fleet

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
ANSIBLE = str(Path(PY).with_name("ansible"))


def run_module(args: dict, *, env_extra: dict | None = None, interpreter: str = PY, user: str | None = None):
    """ansible localhost -m kvmops.fleet.kvm_pause_facts; -> (host result, task seconds, process seconds)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_HOST_KEY_CHECKING="0",
               **(env_extra or {}))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={interpreter}",
           "-m", "kvmops.fleet.kvm_pause_facts"] + (["-a", json.dumps(args)] if args else [])
    if user:
        keep = [f"{k}={v}" for k, v in env.items() if k.startswith(("ANSIBLE_", "PATH", "HOME"))]
        cmd = ["runuser", "-u", user, "--", "env", *keep, *cmd]
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.monotonic() - t
    out = json.loads(proc.stdout)
    task = out["plays"][0]["tasks"][0]
    d = task["task"]["duration"]
    secs = (datetime.fromisoformat(d["end"].rstrip("Z")) - datetime.fromisoformat(d["start"].rstrip("Z"))
            ).total_seconds()
    return task["hosts"]["localhost"], secs, wall


def facts_for(d, timeout=10, **kw):
    res = run_module(dict({"domains": [d.name], "timeout": timeout}, **kw))[0]
    assert not res.get("failed"), res.get("msg")
    f = res["ansible_facts"]["kvm_pause"]
    return f, next((p for p in f["paused"] if p["name"] == d.name), None)


def text(entry) -> str:
    return json.dumps(entry)


def module_leftovers() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], stdout=subprocess.PIPE, text=True, check=True).stdout
    # not this pytest process itself (its command line may name this file)
    return [line for line in out.splitlines() if "kvm_pause_facts" in line and "ps -eo" not in line
            and line.split()[0] != str(os.getpid())]


# -- one test per lab state --------------------------------------------------------------------------------

def test_running_is_not_paused(lab_domain):
    d = lab_domain("running")
    f, p = facts_for(d, include_running=True)
    assert p is None and [r["name"] for r in f["running"]] == [d.name]
    assert f["summary"]["running"] == 1 and f["complete"]


def test_user(lab_domain):
    d = lab_domain("user")
    p = facts_for(d)[1]
    assert (p["cause"], p["reason"], p["safe_to_resume"]) == ("user_paused", "user", True)
    assert p["paused_since_source"] == "status_xml_mtime" and p["paused_for_seconds"] >= 0


def test_enospc_names_mount_and_loop_device_then_clears(lab_domain):
    d = lab_domain("enospc")
    p = facts_for(d)[1]
    assert p["cause"] == "storage_full" and p["safe_to_resume"] is False
    disk = p["disks"][0]
    assert (disk["error"], disk["error_policy"], disk["source"]) == ("no_space", "stop", str(d.disk_path))
    assert disk["filesystem"]["mount_point"] == str(d.mount_point)
    assert disk["filesystem"]["device"] == d.loop_device
    assert disk["filesystem"]["available_bytes"] < 1024 * 1024            # root reserve counts as full
    assert disk["capacity"] > 0 and disk["physical"] is not None          # block stats, asked for paused only
    assert f"{d.mount_point} is full for QEMU" in text(p["remediation"])
    d.clear()
    p = facts_for(d)[1]
    assert p["cause"] == "storage_full" and p["safe_to_resume"] is True, p["safe_to_resume_reason"]


def test_eio_names_the_export_and_stays_unsafe_until_replaced(lab_domain):
    d = lab_domain("eio")
    p = facts_for(d)[1]
    assert p["cause"] == "storage_io_error" and p["safe_to_resume"] is False
    assert p["disks"][0]["error"] == "unspecified"
    assert str(d.nbd_socket) in text(p["disks"][0]["endpoints"]) and str(d.nbd_socket) in text(p["remediation"])
    d.clear()
    p = facts_for(d)[1]
    assert p["safe_to_resume"] is True, p["safe_to_resume_reason"]


def test_nbd_gone_unreachable_then_back(lab_domain):
    d = lab_domain("nbd_gone")
    p = facts_for(d)[1]
    assert p["cause"] == "storage_unreachable" and p["safe_to_resume"] is False
    ep = p["disks"][0]["endpoints"][0]
    assert ep["endpoint"] == f"unix:{d.nbd_socket}" and ep["reachable"] is False
    assert f"unix:{d.nbd_socket}" in text(p["remediation"])
    d.clear()
    p = facts_for(d)[1]
    assert p["disks"][0]["endpoints"][0]["reachable"] is True
    assert p["safe_to_resume"] is True, p["safe_to_resume_reason"]


def test_watchdog(lab_domain):
    d = lab_domain("watchdog")
    p = facts_for(d)[1]
    assert (p["cause"], p["watchdog_action"], p["safe_to_resume"]) == ("watchdog", "pause", False)


def test_crashed(lab_domain):
    d = lab_domain("crashed")
    p = facts_for(d)[1]
    assert (p["state"], p["cause"], p["on_crash"], p["safe_to_resume"]) == ("crashed", "crashed", "preserve", False)


@pytest.mark.parametrize("state,cause", [("saving", "save_job"), ("dumping", "dump_job")])
def test_blocked_job_reported_from_status_file(lab_domain, state, cause):
    d = lab_domain(state)
    f, p = facts_for(d, timeout=3)
    assert (p["cause"], p["responsive"], p["source"], p["safe_to_resume"]) == (cause, False, "status_xml", False)
    assert p["job"]["kind"] == cause.split("_")[0] and p["paused_since_source"] == "status_xml_job_started"
    assert f["unresponsive"][0]["name"] == d.name and f["unresponsive"][0]["queried"] is False
    d.clear()                                                       # the job completes
    f, p = facts_for(d)
    assert p is None or p["safe_to_resume"] is True


def test_from_snapshot(lab_domain):
    d = lab_domain("from_snapshot")
    p = facts_for(d)[1]
    assert (p["cause"], p["safe_to_resume"]) == ("from_snapshot", True)


def test_unknown(lab_domain):
    d = lab_domain("unknown")
    p = facts_for(d)[1]
    assert (p["cause"], p["reason"], p["safe_to_resume"]) == ("unknown", "unknown", False)
    assert "custom-monitor" in text(p["findings"])


# -- never hang --------------------------------------------------------------------------------------------

def test_hung_job_does_not_hang_the_task(lab_domain):
    blocked = lab_domain("saving")
    others = {"user": lab_domain("user"), "enospc": lab_domain("enospc"), "watchdog": lab_domain("watchdog")}
    timeout = 3
    names = [blocked.name] + [o.name for o in others.values()]
    res, task_s, wall = run_module({"timeout": timeout, "domains": names})
    f = res["ansible_facts"]["kvm_pause"]
    print(f"\nhung-job run: task {task_s:.2f}s, process {wall:.2f}s, collection {f['duration_seconds']}s")
    assert task_s <= timeout + 2
    by = {p["name"]: p for p in f["paused"]}
    assert by[others["user"].name]["cause"] == "user_paused"
    assert by[others["enospc"].name]["cause"] == "storage_full"
    assert by[others["watchdog"].name]["cause"] == "watchdog"
    assert all(by[o.name]["responsive"] for o in others.values())
    b = by[blocked.name]
    assert (b["cause"], b["responsive"], b["safe_to_resume"]) == ("save_job", False, False)
    assert [u["name"] for u in f["unresponsive"]] == [blocked.name]
    assert not module_leftovers()


def test_worker_is_killed_when_libvirt_itself_hangs(lab_domain, forked_children):
    """Without the status files the one bulk call hangs on the blocked domain: the worker is killed."""
    lab_domain("saving")
    t = time.monotonic()
    f = collect("qemu:///system", 2, status_dir="/nonexistent")
    assert time.monotonic() - t < 2 + 3     # cut at the 2 s deadline; the blocked job itself never ends
    assert not f["complete"] and "did not list the domains" in f["errors"][0]
    forked_children.assert_reaped()


# -- the test driver and the failure messages ----------------------------------------------------------------

def test_module_on_test_driver(tmp_path):
    uri = write_fleet(tmp_path / "fleet.xml", 200)
    res = run_module({"uri": uri, "include_running": True})[0]
    f = res["ansible_facts"]["kvm_pause"]
    assert f["summary"]["total"] == 200 and len(f["paused"]) == 60 and len(f["running"]) == 120
    assert f["collection"] == "getAllDomainStats"


@pytest.mark.parametrize("args,msg", [
    ({"uri": "bogus:///x"}, "Cannot use libvirt URI 'bogus:///x'"),
    ({"uri": "qemu+unix:///system?socket=/nonexistent/libvirt-sock"}, "libvirtd is not running on this host"),
])
def test_failure_messages(args, msg):
    res = run_module(args)[0]
    assert res["failed"] and res["msg"].startswith(msg)
    assert_no_traceback(res)


def assert_no_traceback(res):
    # ansible-core 2.19 itself adds exception="(traceback unavailable)" to every failed result
    assert "Traceback (most recent call last)" not in json.dumps(res)
    assert res.get("exception", "(traceback unavailable)") == "(traceback unavailable)"


def test_libvirt_python_missing():
    res = run_module({}, interpreter="/usr/bin/python3")[0]
    assert res["failed"] and "libvirt-python" in res["msg"]
    assert_no_traceback(res)


def test_permission_denied():
    priv = Path("/tmp") / f"kpf-priv-{os.getpid()}"
    priv.mkdir(mode=0o700)
    home = Path("/tmp") / f"kpf-home-{os.getpid()}"
    home.mkdir()
    os.chown(home, 65534, 65534)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(priv / "sock"))
        res = run_module({"uri": f"qemu+unix:///system?socket={priv}/sock"}, user="nobody",
                         env_extra={"HOME": str(home), "ANSIBLE_REMOTE_TMP": f"{home}/r",
                                    "ANSIBLE_LOCAL_TEMP": f"{home}/l"})[0]
        assert res["failed"] and res["msg"].startswith("Permission denied connecting to")
        assert_no_traceback(res)
    finally:
        sock.close()
        subprocess.run(["rm", "-rf", str(priv), str(home)], check=False)


def test_diagnose_playbook_prints_the_table(tmp_path):
    uri = write_fleet(tmp_path / "fleet.xml", 12)
    inv = tmp_path / "inv.ini"
    inv.write_text(f"localhost ansible_connection=local ansible_python_interpreter={PY}\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    proc = subprocess.run([str(Path(PY).with_name("ansible-playbook")), "-i", str(inv), "kvmops.fleet.diagnose",
                           "-e", f"diagnostics_uri={uri}", "-e", "kvmops_diagnose_hosts=localhost",
                           "-e", f"diagnostics_report_dir={tmp_path / 'report'}"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout
    assert "VM                           CAUSE" in proc.stdout
    assert "vm0009                       crashed" in proc.stdout
    assert "12 domains: 8 running, 2 paused, 1 crashed, 0 unresponsive, 0 safe to resume" in proc.stdout
    assert (tmp_path / "report" / "kvm-pause-report.html").is_file()


@pytest.mark.parametrize("state,cause", [("migrating", "migration"), ("postcopy", "postcopy"),
                                         ("postcopy_failed", "postcopy_failed")])
def test_migration_states_are_never_safe(lab_domain, state, cause):
    d = lab_domain(state)
    p = facts_for(d, timeout=5)[1]
    assert p["cause"] == cause and p["safe_to_resume"] is False, p
    assert p["severity"] in ("warning", "critical")
    if state == "postcopy_failed":
        assert "split between two hosts" in p["safe_to_resume_reason"]
        return                                      # nothing can clear this one
    d.clear()                                       # migration aborted (source runs) or completed (source gone)
    p = facts_for(d)[1]
    assert p is None
