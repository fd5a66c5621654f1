"""kvm_pause_risk forecasts a pause before it happens (issue 23), on real libvirtd + QEMU (TCG) domains.

Two thin 14 MiB images on one 20 MiB loop-mounted ext4, about 16 MiB free to QEMU's user (libvirt-qemu) after
the root reserve and ext4's own reserved clusters (with 16 MiB images the raw one alone could fill it, which
the forecast rightly called critical on the first run): a qcow2 with error_policy stop (domain A) and a sparse
raw with error_policy report (domain B). Their guests have not written anything yet (kvmlab program
fill-on-go idles until the host writes 'G' into the first byte of a read-only second disk, a file in the lab
directory). The forecast, run as a real ansible process, must say the filesystem is overcommitted with the
numbers statvfs and du give, that A would pause and B would see write errors. Then a writer on the host fills
the filesystem up to 2 MiB of what QEMU's user may use, both guests start writing, and what was forecast
happens: A pauses with ENOSPC (libvirt's diskErrors: no space), B keeps running and its guest sees the write
error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from kvmlab.proc import wait_for
from kvmlab.storage import LoopExt4, file_disk_xml

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
ANSIBLE = str(Path(PY).with_name("ansible"))
MiB = 1024 * 1024


def forecast(args: dict) -> dict:
    """ansible localhost -m kvmops.fleet.kvm_pause_risk -> ansible_facts.kvm_pause_risk."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PY}",
           "-m", "kvmops.fleet.kvm_pause_risk", "-a", json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    res = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False
    return res["ansible_facts"]["kvm_pause_risk"]


def du(path: Path) -> int:
    out = subprocess.run(["du", "--block-size=1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def go_disk(d) -> str:
    """A read-only 4 KiB raw disk (vdb) in the lab directory: the guest's start signal (kvmlab fill-on-go)."""
    path = d.lab.dir / f"{d.name}.go"
    path.write_bytes(b"\0" * 4096)
    d.record({"kind": "path", "path": str(path)})
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{path}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>"""


def go(d) -> None:
    """Write 'G' into the first byte of the guest's start disk: its program starts filling vda."""
    with open(d.lab.dir / f"{d.name}.go", "r+b") as f:
        f.write(b"G")
        os.fsync(f.fileno())
    wait_for(lambda: "KVMLAB: go" in d.console(), 30, f"{d.name} to start writing")


def test_overcommitted_filesystem_is_forecast_then_happens(lab):
    t0 = time.monotonic()
    made = {}

    def on_loop(d):
        fs = LoopExt4(lab.dir / f"{d.name}.ext4", lab.dir / f"{d.name}.mnt", size_mib=20, ballast_mib=0)
        fs.create(d.record)
        made["fs"] = fs
        img = made["a_img"] = fs.mount_point / "a.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "14M"], check=True)
        return file_disk_xml(img, "qcow2", "stop") + go_disk(d)

    def on_same_fs(d):
        img = made["b_img"] = made["fs"].mount_point / "b.raw"
        with open(img, "wb") as f:
            f.truncate(14 * MiB)
        d.record({"kind": "path", "path": str(img)})
        return file_disk_xml(img, "raw", "report") + go_disk(d)

    a = lab.create_running(on_loop, program="fill-on-go", label="risk-stop")
    try:
        b = lab.create_running(on_same_fs, program="fill-on-go", label="risk-report")
        try:
            run_scenario(lab, made, a, b, t0)
        finally:
            b.destroy()
    finally:
        a.destroy()


def run_scenario(lab, made, a, b, t0):
    fs: LoopExt4 = made["fs"]
    boot = time.monotonic() - t0
    # ---- before any guest writes: the forecast -----------------------------------------------------------------
    vfs = os.statvfs(fs.mount_point)
    occupied = {a.name: du(made["a_img"]), b.name: du(made["b_img"])}
    f = forecast({"domains": [a.name, b.name], "timeout": 10})
    vfs_after = os.statvfs(fs.mount_point)
    assert (vfs.f_bavail, vfs.f_bfree) == (vfs_after.f_bavail, vfs_after.f_bfree), "the filesystem changed meanwhile"
    assert f["complete"] is True and f["errors"] == [] and f["qemu_runs_as_root"] is False
    assert [d["name"] for d in f["domains"]] == sorted([a.name, b.name])
    (s,) = [x for x in f["storages"] if x["name"] == str(fs.mount_point)]
    st = os.stat(made["a_img"])
    assert s["key"] == f"fs:{os.major(st.st_dev)}:{os.minor(st.st_dev)}" and s["kind"] == "filesystem"
    assert s["device"] == fs.loop_device and s["fstype"] == "ext4"
    free = vfs.f_bavail * vfs.f_frsize
    assert (s["free_bytes"], s["free_basis"]) == (free, "f_bavail")
    assert free < vfs.f_bfree * vfs.f_frsize           # the root reserve is not QEMU's
    disks = {x["domain"]: x for x in s["disks"]}
    for d in (a, b):
        assert disks[d.name]["capacity_bytes"] == 14 * MiB
        assert disks[d.name]["occupied_bytes"] == occupied[d.name]
    growth = 2 * 14 * MiB - occupied[a.name] - occupied[b.name]
    assert s["remaining_growth_bytes"] == growth and s["headroom_bytes"] == free - growth < 0
    assert s["overcommitted"] is True and s["severity"] == "warning"
    assert s["would_pause"] == [a.name] and s["would_see_errors"] == [b.name] and s["can_fill_alone"] == []
    over = next(r for r in f["risks"] if r["kind"] == "storage_overcommitted")
    assert over["first_to_pause"].startswith(f"any of {a.name}: the first whose write finds the storage full")
    assert over["actions"][0].startswith(f"grow filesystem {fs.mount_point} by ")
    guest = next(r for r in f["risks"] if r["kind"] == "write_errors_in_guest")
    assert guest["domains"] == [b.name] and "set error_policy='stop'" in guest["actions"][0]
    forecast_at = time.monotonic()

    # ---- then a writer fills it, and the guests write -----------------------------------------------------------
    leave = 2 * MiB
    filler = fs.mount_point / "filler"
    with open(filler, "wb") as out:
        chunk = b"\x5a" * MiB
        while True:
            v = os.statvfs(fs.mount_point)
            room = v.f_bavail * v.f_frsize - leave
            if room <= 0:
                break
            out.write(chunk[: min(MiB, room)])
            out.flush()
            os.fsync(out.fileno())
    assert a.state() == (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED)
    go(a)
    go(b)

    def a_paused():
        return a.state() == (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)

    wait_for(a_paused, 60, f"{a.name} to pause with an I/O error")
    assert a.disk_errors() == {"vda": libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE}
    wait_for(lambda: "KVMLAB: dd done" in b.console(), 60, f"{b.name}'s dd to end")
    console = b.console()
    assert "KVMLAB: go" in console and "rc=0" not in console.split("KVMLAB: dd done", 1)[1].splitlines()[0]
    assert "error" in console.split("KVMLAB: go", 1)[1].lower(), console[-2000:]
    time.sleep(1.0)
    assert b.state()[0] == libvirt.VIR_DOMAIN_RUNNING and b.disk_errors() == {}
    # the forecast now: A is paused (kvm_pause_facts' business), B is still at risk on a full filesystem
    after = forecast({"domains": [a.name, b.name], "timeout": 10})
    assert [d["name"] for d in after["domains"]] == [b.name]
    (s2,) = [x for x in after["storages"] if x["name"] == str(fs.mount_point)]
    assert s2["free_bytes"] < 2 * MiB and s2["would_see_errors"] == [b.name]
    print(f"\nkvm_pause_risk lab: boot {boot:.1f} s, forecast {forecast_at - t0 - boot:.1f} s, "
          f"fill to pause {time.monotonic() - forecast_at:.1f} s")
