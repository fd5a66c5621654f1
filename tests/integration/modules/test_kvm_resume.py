"""kvm_resume against real libvirt/QEMU domains of the lab, run as a real ansible process.

Each case shows the refusal while the cause holds (domain untouched), then check mode (would_resume,
domain untouched), the real run (resumed, the guest carries on) and the second run (already_running).
Overrides are exercised where they act: a watchdog pause is resumed, a crashed domain is restarted, and
an EIO domain forced while its export still fails is reported as paused again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import libvirt
import pytest

from kvmlab.proc import wait_for

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
PLAYBOOK = str(Path(PY).with_name("ansible-playbook"))
RUNNING, PAUSED, CRASHED = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_CRASHED


def resume(d_or_name, check: bool = False, **args) -> dict:
    """ansible-playbook running kvmops.fleet.kvm_resume [--check]; -> the registered result (+ 'task_seconds').

    The result is read back through a registered variable: ansible.posix's json callback would print the
    task's module name in place of the module's own ``action`` key."""
    name = d_or_name if isinstance(d_or_name, str) else d_or_name.name
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "resume", "kvmops.fleet.kvm_resume": dict(args, name=name), "register": "r", "ignore_errors": True},
        {"name": "result", "ansible.builtin.debug": {"var": "r"}},
    ]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="kvres-", delete=False) as f:
        json.dump(play, f)
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    cmd = [PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PY}", f.name]
    try:
        proc = subprocess.run(cmd + (["--check"] if check else []), env=env, capture_output=True, text=True,
                              timeout=180, check=False)
    finally:
        os.unlink(f.name)
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    d = tasks[0]["task"]["duration"]
    res = tasks[1]["hosts"]["localhost"]["r"]
    res["task_seconds"] = (datetime.fromisoformat(d["end"].rstrip("Z"))
                           - datetime.fromisoformat(d["start"].rstrip("Z"))).total_seconds()
    assert "Traceback (most recent call last)" not in json.dumps(res)
    print(f"  kvm_resume {name}{' --check' if check else ''} {args or ''}: {res.get('action')} "
          f"in {res['task_seconds']:.2f}s (task)")
    return res


def refused(res: dict, name: str, cause: str) -> str:
    assert res.get("failed") is True and res["action"] == "refused", res
    assert res["changed"] is False and res["resumed"] is False
    assert res["msg"] == f"refused to resume {name}: {res['reason']}"
    assert res["reason"].startswith(f"{cause}: ") and res["diagnosis"]["cause"] == cause
    return res["reason"]


def check_then_resume(d, action: str = "resumed", **args) -> dict:
    """Check mode predicts and changes nothing; the real run does it and the domain runs."""
    before = d.state()
    chk = resume(d, check=True, **args)
    would = "would_restart" if action == "restarted" else "would_resume"
    assert (chk.get("failed", False), chk["changed"], chk["action"], chk["resumed"]) == (False, True, would, False), chk
    assert d.state() == before, "check mode must not change the domain"
    real = resume(d, **args)
    got = (real.get("failed", False), real["changed"], real["action"], real["resumed"])
    assert got == (False, True, action, True), real
    assert real["state"] == "running" and d.state()[0] == RUNNING
    assert chk["diff"] == real["diff"] == {"before": {"state": chk["state"]}, "after": {"state": "running"}}
    return real


def stays_running(d):
    """Second check and second real run: nothing to do."""
    for check in (True, False):
        again = resume(d, check=check)
        assert (again.get("failed", False), again["changed"], again["action"]) == (False, False, "already_running")
        assert again["state"] == "running" and again["diagnosis"] is None


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


# -- ENOSPC --------------------------------------------------------------------------------------------------

def test_enospc_stays_paused_while_full_then_resumes_and_the_guest_writes_on(lab_domain):
    d = lab_domain("enospc")
    reason = refused(resume(d), d.name, "storage_full")
    assert f"{d.mount_point} (ext4 on {d.loop_device}) has" in reason and "min_free=5% requires" in reason
    assert d.state() == d.expected and "records out" not in d.console()
    written = allocated(d.disk_path)

    d.clear()                                               # deletes the ballast: ~10 MiB free again
    reason = refused(resume(d, min_free="64M"), d.name, "storage_full")   # the diagnosis is content, min_free not
    assert "less than min_free=64M requires: 64 MiB" in reason and str(d.mount_point) in reason
    assert d.state() == d.expected

    real = check_then_resume(d)
    assert real["diagnosis"]["safe_to_resume"] is True
    assert f"{d.mount_point} (ext4 on {d.loop_device}) has" in real["reason"]
    wait_for(lambda: "KVMLAB: dd done" in d.console(), 60, "the guest to finish writing its disk")
    assert "12+0 records out" in d.console()                # every MiB of the 12 MiB disk was written
    assert allocated(d.disk_path) >= 12 * 1024 * 1024 > written
    stays_running(d)
    print(f"\nenospc: refused {d.name}, then resumed in {real['task_seconds']:.2f}s (task)")


# -- EIO and a lost NBD server ---------------------------------------------------------------------------------

def test_eio_refused_while_the_fault_persists_forced_repauses_then_resumes_once_replaced(lab_domain):
    d = lab_domain("eio")
    reason = refused(resume(d), d.name, "storage_io_error")
    assert f"endpoint unix:{d.nbd_socket} answers" in reason and "list storage_io_error in override" in reason
    assert d.state() == d.expected

    # forcing it while the export still fails every write: QEMU retries the write and pauses at once
    forced = resume(d, override=["storage_io_error"])
    assert forced["failed"] and forced["action"] == "paused_again" and forced["changed"] is True, forced
    assert forced["state"] == "paused (ioerror)" and forced["resumed"] is False
    assert "paused again" in forced["msg"] and d.state() == d.expected

    d.clear()                                               # a healthy export on the same socket, QEMU reconnected
    real = check_then_resume(d)
    assert real["diagnosis"]["cause"] == "storage_io_error" and real["diagnosis"]["safe_to_resume"] is True
    assert "replaced since the failure and answers" in real["reason"]
    wait_for(lambda: "KVMLAB: dd done rc=" in d.console(), 60, "the guest to finish its dd on the new export")
    stays_running(d)


def test_nbd_gone_refused_naming_the_endpoint_then_resumes(lab_domain):
    d = lab_domain("nbd_gone")
    reason = refused(resume(d), d.name, "storage_unreachable")
    assert f"endpoint unix:{d.nbd_socket} does not answer" in reason
    assert d.state() == d.expected
    d.clear()
    before = d.dom.blockStats("vda")[3]
    check_then_resume(d)
    wait_for(lambda: d.dom.blockStats("vda")[3] > before + 5, 30, "guest writes through the restarted export")
    stays_running(d)


# -- the other causes --------------------------------------------------------------------------------------------

def test_user_pause_resumes(lab_domain):
    d = lab_domain("user")
    real = check_then_resume(d)
    assert real["reason"].startswith("user_paused: paused on request")
    stays_running(d)


def test_watchdog_refused_unless_overridden(lab_domain):
    d = lab_domain("watchdog")
    reason = refused(resume(d), d.name, "watchdog")
    assert "list watchdog in override" in reason and d.state() == d.expected
    real = check_then_resume(d, override=["watchdog"])
    assert "overridden (override: watchdog)" in real["reason"]


def test_crashed_refused_unless_overridden_then_restarted(lab_domain):
    d = lab_domain("crashed")
    reason = refused(resume(d), d.name, "crashed")
    assert "list crashed in override to restart the domain (destroy, then start" in reason and d.state() == d.expected
    old_id = d.lab.conn.lookupByName(d.name).ID()      # virDomainGetID answers from the handle: look up again
    check_then_resume(d, action="restarted", override=["crashed"])
    assert d.lab.conn.lookupByName(d.name).ID() != old_id, "a new QEMU process runs the domain"
    # the guest boots again; this guest's only job is to panic, so it does, and is refused again
    wait_for(lambda: d.state()[0] == CRASHED, 90, "the restarted guest to boot and panic again")
    assert "KVMLAB: ready; panicking" in d.console()
    refused(resume(d), d.name, "crashed")


def test_postcopy_source_is_never_touched_while_its_job_exists(lab_domain):
    """libvirt holds a resume of a post-copy source for 30 s behind the migration job and then refuses it;
    the module does not even ask, with or without override, and names the risk."""
    d = lab_domain("postcopy")
    for override in ([], ["postcopy"]):
        reason = refused(resume(d, override=override), d.name, "postcopy")
        assert "never resume the source" in reason and "migration_out job in flight" in reason
        assert "override cannot change this" in reason
        assert d.state() == d.expected


# -- failures ----------------------------------------------------------------------------------------------------

def test_unknown_domain():
    res = resume("kvres-no-such-domain")
    assert res["failed"] and res["action"] == "error"
    assert res["msg"] == "name: no domain named 'kvres-no-such-domain' exists on this host (qemu:///system)"


@pytest.mark.parametrize("args,msg", [
    ({"uri": "bogus:///x"}, "Cannot use libvirt URI 'bogus:///x'"),
    ({"uri": "qemu+unix:///system?socket=/nonexistent/libvirt-sock"}, "libvirtd is not running on this host"),
    ({"min_free": "lots"}, "min_free: 'lots' is neither a size"),
    ({"override": ["everything"]}, "value of override must be one or more of"),
])
def test_failure_messages(args, msg):
    res = resume("kvres-any", **args)
    assert res["failed"] and res["msg"].startswith(msg), res["msg"]
