"""The shared pool proves itself: a fleet is booted once per session however many test modules lease it, a reset
undoes what a scenario changed (in the VMs and on this machine's side of their links) and proves it, a reset
that did not restore is caught, and a test process that crashes or is killed leaves nothing behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmlab.fleet import proc_starttime
from vmlab.fleets import HV2
from vmlab.pool import ResetError
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

TESTS = Path(__file__).resolve().parents[2]

# What a scenario leaves behind, one of each kind a reset must undo.
CHANGE = """set -e
echo scenario > /etc/vmlab-scenario-marker
mkdir -p /srv/scenario && touch /srv/scenario/data
sysctl -qw vm.swappiness=7 net.ipv4.ip_forward=1
ip link add scen0 type dummy && ip addr add 10.250.0.1/24 dev scen0 && ip link set scen0 up
ip addr add 10.213.1.99/24 dev eth1
modprobe sch_netem
echo disk-changed | dd of=/dev/vdb bs=512 count=1 conv=fsync status=none
echo shared-changed | dd of=/dev/vdd bs=512 count=1 oflag=direct status=none
"""
CHECK = """
test -e /etc/vmlab-scenario-marker && echo marker || echo -
test -e /srv/scenario && echo srv || echo -
sysctl -n vm.swappiness net.ipv4.ip_forward | tr '\\n' ' '; echo
echo "$(ip -br link show scen0 2>/dev/null | cut -d' ' -f1)"
ip -4 -o addr show dev eth1 | awk '{print $4}' | tr '\\n' ' '; echo
grep -c '^sch_netem ' /proc/modules || true
head -c 12 /dev/vdb | tr -d '\\0'; echo
dd if=/dev/vdd bs=512 count=1 iflag=direct status=none | tr -d '\\0' | head -c 14; echo
date +%s
"""


def state(vm) -> list[str]:
    """One line per kind of change (9 lines, the last the guest's clock)."""
    lines = vm.ssh(CHECK).stdout.split("\n")
    assert len(lines) >= 9, lines
    return lines


def test_a_reset_undoes_what_a_scenario_changed(vmlab_pool):
    pool = vmlab_pool.pool
    with vmlab_pool.lease(HV2, who=f"{__name__}:scenario-1") as fleet:
        entry = pool.entry(fleet)
        boots, resets = pool.boots[entry.key], pool.resets[entry.key]
        a = fleet["vma"]
        clean = state(a)
        a.ssh(CHANGE)
        subprocess.run(fleet.netns_argv(["ip", "link", "add", "scenveth0", "type", "veth", "peer", "name",
                                         "scenveth1"]), check=True)
        fleet.cut("repl", how="carrier")
        fleet.cut("bond1", how="drop")
        changed = state(a)
        assert changed[:8] == ["marker", "srv", "7 1 ", "scen0", f"{a.nic('lan').address} 10.213.1.99/24 ", "1",
                               "disk-changed", "shared-changed"], changed
        # the fingerprint sees every kind of change (so a reset that misses one fails)
        now = fleet.fingerprints()["vma"]
        for seen in ("/etc/vmlab-scenario-marker", "/srv/scenario/data", "vm.swappiness = 7", "scen0", "10.213.1.99",
                     "\nsch_netem\n", "netns scenveth0"):
            assert seen in now and seen not in entry.fingerprints["vma"], seen
    with vmlab_pool.lease(HV2, who=f"{__name__}:scenario-2") as again:
        assert again is fleet
        assert pool.boots[entry.key] == boots and pool.resets[entry.key] == resets + 1
        after = state(a)
        assert after[:8] == clean[:8], (clean, after)
        assert abs(int(after[8]) - time.time()) < 10, "the guest clock was not set after the revert"
        assert "scenveth0" not in subprocess.run(fleet.netns_argv(["ip", "-o", "link"]), capture_output=True,
                                                 text=True, check=True).stdout
        b = fleet["vmb"]
        for link in ("lan", "repl"):  # the cut links carry traffic again
            assert a.ssh(f"ping -c1 -W5 {b.addr(link)}", check=False).returncode == 0, link
        assert a.ssh("cat /sys/class/net/eth2/carrier").stdout.strip() == "1"


def test_a_reset_that_does_not_restore_is_caught(vmlab_pool, monkeypatch):
    pool = vmlab_pool.pool
    with vmlab_pool.lease(HV2, who=f"{__name__}:dirty") as fleet:
        fleet["vmb"].ssh("echo left-behind > /root/left-behind")
    monkeypatch.setattr(fleet, "revert", lambda tag: fleet._all_qmp("cont"))  # a reset that forgets the disks
    with pytest.raises(ResetError, match=r"vmb is not in its snapshot state(.|\n)*/root/left-behind"):
        pool.acquire(HV2, "hypervisor", f"{__name__}:broken-reset")
    monkeypatch.undo()
    with vmlab_pool.lease(HV2, who=f"{__name__}:after") as again:
        assert again.vms["vmb"].ssh("test -e /root/left-behind", check=False).returncode == 1


def test_every_module_of_the_session_shared_one_boot(vmlab_pool, request):
    """Two test modules asking for the same fleet get one boot: counted over the whole session."""
    pool = vmlab_pool.pool
    with vmlab_pool.lease(HV2, who=__name__) as fleet:
        entry = pool.entry(fleet)
    assert pool.boots[entry.key] == 1
    modules = {item.module.__name__ for item in request.session.items}
    users = {m for m in modules if m.endswith(("test_vm_fixture", "test_kvm_tune_live"))}
    leased = {who.split(":")[0] for who in entry.leases}
    assert users <= leased, (users, entry.leases)
    report(f"pool: HV2 booted {pool.boots[entry.key]} time(s) for {len(entry.leases)} leases by "
           f"{', '.join(sorted(leased))}")


CHILD = """
import signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from vmlab.fleet import Fleet, FleetSpec, LinkSpec, VMSpec
from vmlab.image import BaseImage
if sys.argv[3] == "interrupt":  # as the pytest fixtures do: SIGTERM (a CI timeout) -> KeyboardInterrupt -> teardown
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signum)
    signal.signal(signal.SIGTERM, interrupt)
spec = FleetSpec([VMSpec("crashvm", memory_mb=256, disks=["64M"])], [LinkSpec("lan")])
Fleet(spec, BaseImage.load(Path(sys.argv[2]))).up()
"""


def _child_run(proc: subprocess.Popen, runs: Path, timeout: float = 120) -> dict:
    """The child's run state once its QEMU is running."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        for st in runs.glob("*/state.json"):
            state = json.loads(st.read_text())
            pid = state["vms"]["crashvm"]["pid"]
            if pid and proc_starttime(pid) is not None:
                return state
        time.sleep(0.2)
    raise AssertionError("the child's QEMU did not start")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_crashed_test_process_leaves_nothing_behind(vmlab_pool, tmp_path, how):
    """Killed (SIGKILL: its QEMU dies with it, the next session sweeps the rest) or interrupted (SIGTERM, as a CI
    timeout: torn down at once) while booting: afterwards no VM, namespace, run or loop device of it is left."""
    image = vmlab_pool.pool._image_for("hypervisor")
    runs = tmp_path / "runs"
    env = dict(os.environ, VMLAB_RUNS=str(runs))
    mode = "interrupt" if how == "SIGTERM" else "plain"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(TESTS), str(image.path), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = _child_run(proc, runs)
    qemu = state["vms"]["crashvm"]["pid"]
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    t0 = time.monotonic()
    while proc_starttime(qemu) is not None:  # SIGKILL: PR_SET_PDEATHSIG; SIGTERM: the teardown
        assert time.monotonic() - t0 < 30, f"QEMU {qemu} outlived its test process"
        time.sleep(0.2)
    vmlab = [sys.executable, "-m", "vmlab"]
    env["PYTHONPATH"] = str(TESTS)
    if how == "SIGKILL":  # the namespace and files are left for the next session's sweep
        assert Path(f"/run/netns/{state['netns']}").exists()
        swept = subprocess.run([*vmlab, "down", "--orphans"], env=env, capture_output=True, text=True, check=True)
        assert f"orphan run {state['run_id']}" in swept.stdout
    status = subprocess.run([*vmlab, "status"], env=env, capture_output=True, text=True, check=True).stdout
    assert state["run_id"] not in status and state["netns"] not in status, status
    assert not Path(f"/run/netns/{state['netns']}").exists()
    assert not (runs / state["run_id"]).exists()
