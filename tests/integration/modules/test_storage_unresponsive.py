"""Storage that stops answering (issue 25), on real FUSE, libvirtd and QEMU domains.

A bindfs mount whose daemon is frozen (SIGSTOP) stands in for a dead hard NFS mount: every stat, statvfs or
read under it blocks. One user-paused and one running domain have their disk there, one user-paused and one
running domain live on local disk. While the mount is frozen, kvm_pause_facts must diagnose the healthy ones
fully and right within the timeout, name the mount for the others (storage_unresponsive), keep at most one
storage probe alive however often it runs, and kvm_resume must refuse; once the daemon continues, the
diagnosis is back to normal. One set of domains serves the module (module-scoped fixtures); the mount is
always thawed and unmounted, also when a test fails. A block device whose I/O hangs is proven at the probe (a
loop device over a frozen direct_io bindfs file), without a domain.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _evidence_io
from kvmlab.proc import pid_alive, run, wait_for
from kvmlab.storage import BindFs, detach_loop

from .test_kvm_pause_facts import run_module
from .test_kvm_resume import resume

pytestmark = pytest.mark.lab
PROBE_TAG = b"kvmops-fleet-storage-probe"
TIMEOUT = 5


def probe_processes(mount: str) -> list[int]:
    """Live storage probes of ``mount`` (by their command line; zombies do not count)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if PROBE_TAG in cmd and mount.encode() in cmd and pid_alive(int(p.name)):
            pids.append(int(p.name))
    return pids


@pytest.fixture(scope="module")
def nfs(lab):
    with BindFs(lab.dir / "dead-nfs-src", lab.dir / "dead-nfs", lab.dir / "bindfs.log") as fs:
        fs.mount_point.chmod(0o755)
        yield fs


@pytest.fixture(scope="module")
def domains(lab, nfs):
    made = {"dead_paused": lab.create("user", disk_dir=nfs.mount_point),
            "dead_running": lab.create("running", disk_dir=nfs.mount_point),
            "ok_paused": lab.create("user", disk_dir=lab.dir),
            "ok_running": lab.create("running", disk_dir=lab.dir)}
    yield made
    nfs.thaw()                                  # QEMU's I/O on the mount must end before it is destroyed
    for d in made.values():
        d.destroy()


def pause_facts(domains) -> tuple[dict, float]:
    res, task_s, _wall = run_module({"timeout": TIMEOUT, "include_running": True,
                                     "domains": [d.name for d in domains.values()]})
    assert not res.get("failed"), res.get("msg")
    return res["ansible_facts"]["kvm_pause"], task_s


def test_dead_mount_is_named_and_the_other_domains_stay_right(nfs, domains):
    mp = str(nfs.mount_point)
    f, _s = pause_facts(domains)                            # the storage answers: all normal
    assert f["complete"] and f["storage_unresponsive"] == []
    assert {p["name"]: p["cause"] for p in f["paused"]} == {
        domains["dead_paused"].name: "user_paused", domains["ok_paused"].name: "user_paused"}

    with nfs.frozen_for():
        f, task_s = pause_facts(domains)
        print(f"\nfrozen mount, first run: task {task_s:.2f}s, collection {f['duration_seconds']}s")
        assert task_s < TIMEOUT
        assert f["complete"] and f["errors"] == [], f["errors"]
        by = {p["name"]: p for p in f["paused"]}
        ok = by[domains["ok_paused"].name]
        assert (ok["cause"], ok["responsive"], ok["safe_to_resume"], ok["errors"]) == ("user_paused", True, True, [])
        assert ok["disks"][0]["filesystem"]["responsive"] is True
        dead = by[domains["dead_paused"].name]
        assert (dead["cause"], dead["severity"], dead["safe_to_resume"]) == ("storage_unresponsive", "critical", False)
        assert mp in dead["summary"] and "fuse" in dead["summary"]
        assert dead["disks"][0]["storage_unresponsive"]["mount_point"] == mp
        assert any("hard/soft" in r and "timeo" in r for r in dead["remediation"])
        (st,) = f["storage_unresponsive"]
        assert (st["kind"], st["mount_point"], st["source"]) == ("mount", mp, str(nfs.source))
        assert st["fstype"].startswith("fuse") and st["probe_pid"] in probe_processes(mp)
        assert {(d["name"], d["state"]) for d in st["domains"]} == {
            (domains["dead_paused"].name, "paused"), (domains["dead_running"].name, "running")}
        running = {r["name"]: r for r in f["running"]}
        assert running[domains["dead_running"].name]["at_risk"] is True
        assert running[domains["dead_running"].name]["storage_unresponsive"] == [mp]
        assert running[domains["ok_running"].name]["at_risk"] is False
        assert (f["summary"]["storage_unresponsive"], f["summary"]["at_risk"]) == (1, 1)

        refused = resume(domains["dead_paused"])
        assert refused["failed"] and refused["action"] == "refused"
        assert "storage_unresponsive" in refused["msg"] and mp in refused["msg"]
        assert "override cannot change this" in refused["msg"]

        first_probe = st["probe_pid"]
        for _run in range(3):                               # the collector runs every 30 s: nothing piles up
            f, _s = pause_facts(domains)
            assert f["storage_unresponsive"][0]["probe_pid"] == first_probe, "the waiting probe is reused"
        assert probe_processes(mp) == [first_probe]
    # thawed: the abandoned probe gets its answer and ends; the diagnosis is back to normal
    wait_for(lambda: not probe_processes(mp), 10, "the abandoned storage probe to end")
    f, _s = pause_facts(domains)
    assert f["complete"] and f["storage_unresponsive"] == [] and f["summary"]["at_risk"] == 0
    dead = next(p for p in f["paused"] if p["name"] == domains["dead_paused"].name)
    assert (dead["cause"], dead["safe_to_resume"]) == ("user_paused", True)
    assert dead["disks"][0]["filesystem"]["mount_point"] == mp
    assert probe_processes(mp) == []


def test_a_block_device_whose_io_hangs_is_named(tmp_path):
    """A loop device whose backing file sits on a frozen FUSE mount (direct_io: no page cache answers for it)
    stands in for a block device whose I/O hangs (a dead iSCSI or NBD session): the real probe's O_DIRECT read
    blocks, the run gives it up within its bound and names the device; after the thaw the same probe ends."""
    mounts_text = Path("/proc/self/mountinfo")
    with BindFs(tmp_path / "src", tmp_path / "mnt", options=("direct_io",)) as fs:
        with open(tmp_path / "src" / "disk.img", "wb") as f:
            f.truncate(4 * 1024 * 1024)
        loop = run(["losetup", "--find", "--show", str(tmp_path / "mnt" / "disk.img")]).stdout.strip()
        disks = [{"type": "block", "path": loop}]
        probe_dir = str(tmp_path / "probes")
        try:
            mounts = _evidence_io.parse_mountinfo(mounts_text.read_text())
            groups = _evidence_io.storage_groups(disks, mounts)
            alive = _evidence_io.StorageProber(probe_dir)
            alive.start(groups, 2.0)
            alive.wait(time.time() + 10)
            [v] = list(alive.verdicts().values())
            assert v["answered"] and v["records"][loop].get("error") is None, v
            with fs.frozen_for():
                dead = _evidence_io.StorageProber(probe_dir)
                t0 = time.monotonic()
                dead.start(groups, 1.0)
                dead.wait(time.time() + 1.0)
                [v] = list(dead.verdicts().values())
                assert time.monotonic() - t0 < TIMEOUT, "the run waits for its bound, not for the hung read"
                assert not v["answered"] and pid_alive(v["probe_pid"]), v
                seen = _evidence_io.StorageView(dead.verdicts(), mounts).for_disk(disks[0])
                assert not seen["answered"]
                assert (seen["unresponsive"]["kind"], seen["unresponsive"]["target"]) == ("block", loop)
                again = _evidence_io.StorageProber(probe_dir)                  # a later run adopts the hung probe
                again.start(groups, 1.0)
                again.wait(time.time() + 1.0)
                [w] = list(again.verdicts().values())
                assert (w["answered"], w["adopted"], w["probe_pid"]) == (False, True, v["probe_pid"])
            wait_for(lambda: not pid_alive(v["probe_pid"]), 10, "the hung block probe to end after the thaw")
            after = _evidence_io.StorageProber(probe_dir)
            after.sweep()
            after.start(groups, 2.0)
            after.wait(time.time() + 10)
            [v] = list(after.verdicts().values())
            assert v["answered"] and not v["adopted"], v
        finally:
            fs.thaw()
            detach_loop(loop, str(tmp_path / "mnt" / "disk.img"))
