"""The lab proves itself: each state is brought up and checked against what libvirt itself reports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from kvmlab import STATES, Lab, LabError, LabTimeout, leftovers, state_text
from kvmlab.proc import wait_for

pytestmark = pytest.mark.lab
SHUTOFF, RUNNING, PAUSED = libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


def wait(cond, timeout: float, what: str):
    return wait_for(cond, timeout, what)


@pytest.mark.parametrize("state", list(STATES))
def test_state_as_libvirt_reports_it(lab_domain, state):
    spec = STATES[state]
    d = lab_domain(state)
    print(f"\n{state}: {state_text(d.expected)} after {d.time_to_state:.2f}s")
    assert d.time_to_state <= spec.timeout
    assert d.expected == spec.expected and d.state_name == state
    if spec.libvirt_blocked:
        # every API call on the domain hangs; libvirtd's own status file carries the state
        assert d.status_file_state() == spec.expected
        with pytest.raises(LabTimeout):
            d.state(timeout=1.0)
        return
    assert d.state() == spec.expected, d.details()
    errors = d.disk_errors()
    if spec.disk_error is None:
        assert errors == {}
    else:
        assert errors == {"vda": spec.disk_error}


def test_enospc_is_the_root_reserve_and_clears(lab_domain):
    d = lab_domain("enospc")
    assert d.loop_device and d.loop_device.startswith("/dev/loop")
    assert os.path.ismount(d.mount_point)
    st = os.statvfs(d.mount_point)
    # QEMU (libvirt-qemu) has no space left; root still has the reserved blocks
    assert st.f_bavail * st.f_frsize < 1024 * 1024
    assert (st.f_bfree - st.f_bavail) * st.f_frsize >= 512 * 1024
    d.clear()
    assert os.statvfs(d.mount_point).f_bavail * st.f_frsize > 4 * 1024 * 1024
    assert d.state() == d.expected, "clear() must not resume"
    d.dom.resume()
    wait(lambda: "KVMLAB: idle" in d.console(), 60, "guest to finish its dd")
    assert "KVMLAB: dd done" in d.console() and d.state()[0] == RUNNING


def test_eio_stays_until_the_export_is_fixed(lab_domain):
    d = lab_domain("eio")
    d.dom.resume()                              # the export still fails every write: pauses again
    wait(lambda: d.state() == d.expected, 30, "re-pause on the still failing export")
    assert d.disk_errors() == {"vda": libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC}
    d.clear()
    assert d.state() == d.expected, "clear() must not resume"
    d.dom.resume()
    wait(lambda: "KVMLAB: idle" in d.console(), 60, "guest to finish its dd on the healthy export")
    assert "KVMLAB: dd done" in d.console() and d.state()[0] == RUNNING


def test_nbd_gone_recovers_when_the_server_is_back(lab_domain):
    d = lab_domain("nbd_gone")
    assert (d.nbd_socket and not d.nbd_socket.exists()) or not d.nbd.alive()
    d.clear()
    assert d.nbd.alive() and d.nbd_socket.exists()
    assert d.state() == d.expected, "clear() must not resume"
    before = d.dom.blockStats("vda")[3]          # write requests
    d.dom.resume()
    wait(lambda: d.state()[0] == RUNNING and d.dom.blockStats("vda")[3] > before + 5, 30,
         "guest writes going through the restarted export")


@pytest.mark.parametrize("state,after", [
    ("saving", (SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SAVED)),
    ("dumping", (RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED)),   # libvirt resumes after a dump
])
def test_blocked_job_unblocks_when_the_fifo_is_read(lab_domain, state, after):
    d = lab_domain(state)
    d.clear()
    assert d.job_error is None
    assert d.state(timeout=5) == after


def test_teardown_runs_after_a_failure_and_leaves_nothing(lab):
    """A second Lab session in this process: an exception inside it still tears everything down."""
    session = f"{os.getpid()}-fail"
    with pytest.raises(RuntimeError, match="boom"), Lab(session=session) as other:
        made = [other.create("enospc"), other.create("eio")]
        assert leftovers(other.root, other.prefix, session)
        raise RuntimeError("boom")
    assert leftovers(other.root, other.prefix, session) == []
    assert not other.dir.exists()
    for d in made:
        d.destroy()                              # idempotent


def test_destroy_is_idempotent_and_complete(lab):
    d = lab.create("nbd_gone")
    d.destroy()
    d.destroy()
    with pytest.raises(libvirt.libvirtError):
        lab.conn.lookupByName(d.name)
    assert not any(d.name in item for item in leftovers(lab.root, lab.prefix, lab.session))


def test_create_failure_raises_laberror_with_details(lab, monkeypatch):
    monkeypatch.setitem(STATES, "running", STATES["running"].__class__(
        "running", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_WATCHDOG), None, "idle", 3))
    with pytest.raises(LabError, match="console tail"):
        lab.create("running")
    assert not [x for x in leftovers(lab.root, lab.prefix, lab.session) if "-running-" in x]


def test_cli_up_status_down_from_other_processes(lab, tmp_path):
    workdir = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def cli(*args: str) -> str:
        cp = subprocess.run([sys.executable, "-m", "kvmlab", "--workdir", str(workdir), "--prefix", "kvmlabcli",
                             *args], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert cp.returncode == 0, cp.stderr
        return cp.stdout

    try:
        out = cli("up", "user", "saving")
        assert "paused (user)" in out and "paused (save)" in out
        status = cli("status")
        assert "paused (user)" in status and "paused (save) (status file; libvirt calls on it hang)" in status
        assert leftovers(workdir, "kvmlabcli")
    finally:
        cli("down")
    assert leftovers(workdir, "kvmlabcli") == []


# -- migration: a second libvirtd in a podman container (see kvmlab/peer.py) --

def test_migrating_clears_by_abort(lab_domain):
    d = lab_domain("migrating")
    assert d.dom.jobStats()["type"] != libvirt.VIR_DOMAIN_JOB_NONE
    d.clear()
    assert d.state() == (RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED)


def test_postcopy_source_and_destination(lab_domain, lab):
    d = lab_domain("postcopy")
    dest = lab.peer_conn.lookupByName(d.name)
    assert tuple(dest.state()) == (RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY)
    d.clear()                                    # lets post-copy complete
    assert d.state() == (SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)
    assert tuple(dest.state()) == (RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED)


def test_postcopy_failed_cannot_be_cleared(lab_domain):
    d = lab_domain("postcopy_failed")
    d.clear()
    assert d.state() == d.expected


def test_next_lab_cleans_up_after_a_killed_run(lab):
    """A run that died (kill -9) leaves domains and mounts; the next Lab removes them when it opens."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    session = f"{os.getpid()}-killed"
    crashed = Lab(session=session)
    crashed.open()
    crashed.create("enospc")
    crashed.create("eio")
    crashed.state.data["pid"] = int(dead.stdout)     # as if its process had died
    crashed.detach()
    assert leftovers(crashed.root, crashed.prefix, session)
    with Lab(session=f"{os.getpid()}-next"):
        assert leftovers(crashed.root, crashed.prefix, session) == []
    assert not crashed.dir.exists()
