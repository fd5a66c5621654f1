"""Evidence parsers and gatherers with an injected fake host."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _states
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _evidence_io

MOUNTINFO = """22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k
88 22 7:3 / /var/lib/libvirt/images rw,relatime shared:40 - ext4 /dev/loop3 rw
89 88 7:4 / /var/lib/libvirt/images/with\\040space rw - xfs /dev/loop4 rw
"""


def test_parse_mountinfo_and_longest_match():
    m = _evidence_io.parse_mountinfo(MOUNTINFO)
    assert [x["mount_point"] for x in m][-1] == "/var/lib/libvirt/images/with space"
    assert _evidence_io.mount_for("/var/lib/libvirt/images/a.img", m)["device"] == "/dev/loop3"
    assert _evidence_io.mount_for("/var/lib/libvirt/images/with space/b.img", m)["fstype"] == "xfs"
    assert _evidence_io.mount_for("/etc/passwd", m)["mount_point"] == "/"
    assert _evidence_io.mount_for("/var/lib/libvirt/imagesX/c", m)["mount_point"] == "/"


def test_fs_usage_uses_f_bavail():
    st = SimpleNamespace(f_frsize=1024, f_bsize=4096, f_blocks=20480, f_bavail=0, f_bfree=1024)
    u = _evidence_io.fs_usage(st)
    assert u == {"total_bytes": 20 * 1024 * 1024, "available_bytes": 0, "free_bytes": 1024 * 1024,
                 "used_percent": 100.0}


@pytest.mark.parametrize("num,text", [(None, "unknown"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                      (20 * 1024 ** 2, "20 MiB"), (3 * 1024 ** 4, "3 TiB")])
def test_fmt_bytes(num, text):
    assert _states.fmt_bytes(num) == text


LVS = """{"report": [{"lv": [
  {"lv_name": "pool0", "vg_name": "vg0", "lv_dm_path": "/dev/mapper/vg0-pool0", "pool_lv": "",
   "data_percent": "99.80", "metadata_percent": "12.00", "lv_attr": "twi-aotz--"},
  {"lv_name": "web", "vg_name": "vg0", "lv_dm_path": "/dev/mapper/vg0-web", "pool_lv": "pool0",
   "data_percent": "50.00", "metadata_percent": "", "lv_attr": "Vwi-aotz--"},
  {"lv_name": "root", "vg_name": "vg0", "lv_dm_path": "/dev/mapper/vg0-root", "pool_lv": "",
   "data_percent": "", "metadata_percent": "", "lv_attr": "-wi-ao----"}]}]}"""


def test_parse_lvs_and_thin_pool():
    lvs = _evidence_io.parse_lvs(LVS)
    assert _evidence_io.thin_pool_for("/dev/mapper/vg0-web", lvs) == {
        "name": "vg0/pool0", "data_percent": 99.8, "metadata_percent": 12.0}
    assert _evidence_io.thin_pool_for("/dev/mapper/vg0-root", lvs) is None
    assert _evidence_io.parse_lvs("not json") == []


LOG = """2026-11-26 05:00:00.000+0000: starting up libvirt version: 9.0.0
LC_ALL=C PATH=/usr/bin \\
/usr/bin/qemu-system-x86_64 -name guest=old \\
2026-11-26T05:00:10.0Z qemu-system-x86_64: old run error, must not show
2026-11-26 05:04:39.115+0000: starting up libvirt version: 9.0.0
-blockdev '{"driver":"file"}' \\
2026-11-26 05:04:40.185+0000: Domain id=35 is tainted: custom-monitor
2026-11-26T05:04:41.0Z qemu-system-x86_64: nbd: Connection reset by peer
2026-11-26T05:04:42.0Z qemu-system-x86_64: some harmless line
"""


def test_relevant_log_lines_current_run_only():
    lines = _evidence_io.relevant_log_lines(LOG)
    assert lines == ["2026-11-26 05:04:40.185+0000: Domain id=35 is tainted: custom-monitor",
                     "2026-11-26T05:04:41.0Z qemu-system-x86_64: nbd: Connection reset by peer"]


def test_last_start():
    assert _evidence_io.last_start(LOG) == 1795669479.115
    assert _evidence_io.last_start("nothing") is None


def test_pool_for_path_longest_target():
    pools = [{"name": "a", "target_path": "/var/lib"}, {"name": "b", "target_path": "/var/lib/libvirt/images/"}]
    assert _evidence_io.pool_for_path("/var/lib/libvirt/images/x.img", pools)["name"] == "b"
    assert _evidence_io.pool_for_path("/srv/x.img", pools) is None


def test_paused_since_sources():
    assert _evidence_io.paused_since(None, {"started_ms": 1000_000}, 1100.0) == {
        "since": 1000.0, "seconds": 100.0, "source": "status_xml_job_started"}
    assert _evidence_io.paused_since(1050.0, None, 1100.0)["source"] == "status_xml_mtime"
    assert _evidence_io.paused_since(None, None, 1100.0)["source"] == "unknown"


class FakeHost(_evidence_io.Host):
    def __init__(self, avail=0, refused=False):
        self.avail, self.refused, self.connects = avail, refused, []

    def statvfs(self, path):
        return SimpleNamespace(f_frsize=4096, f_bsize=4096, f_blocks=5120, f_bavail=self.avail, f_bfree=256)

    def realpath(self, path):
        return path

    def exists(self, path):
        return not path.endswith("gone.img")

    def connect(self, host, timeout):
        self.connects.append((host, timeout))
        return "Connection refused" if self.refused else None

    def ctime(self, path):
        return 123.0

    def block_size(self, device):
        return 8 * 1024 ** 3

    def lvs(self, timeout):
        return _evidence_io.parse_lvs(LVS)


def test_gather_disk_file_block_network():
    mounts = _evidence_io.parse_mountinfo(MOUNTINFO)
    host = FakeHost(avail=0)
    ev = _evidence_io.gather_disk({"type": "file", "path": "/var/lib/libvirt/images/gone.img"}, host, mounts, [],
                                  lvs_cache={}, timeout=1)
    assert ev["filesystem"]["mount_point"] == "/var/lib/libvirt/images"
    assert ev["filesystem"]["device"] == "/dev/loop3" and ev["filesystem"]["available_bytes"] == 0
    ev = _evidence_io.gather_disk({"type": "block", "path": "/dev/mapper/vg0-web"}, host, mounts, [],
                                  lvs_cache={}, timeout=1)
    assert ev["thin_pool"]["name"] == "vg0/pool0"
    assert ev["block_device"] == {"path": "/dev/mapper/vg0-web", "device": "/dev/mapper/vg0-web",
                                  "total_bytes": 8 * 1024 ** 3}
    host = FakeHost(refused=True)
    ev = _evidence_io.gather_disk({"type": "network", "hosts": [{"transport": "unix", "socket": "/run/n.sock"},
                                                                {"transport": "tcp", "name": "127.0.0.1",
                                                                 "port": 1}]}, host, mounts, [],
                                  lvs_cache={}, timeout=0.5)
    assert [e["endpoint"] for e in ev["endpoints"]] == ["unix:/run/n.sock", "127.0.0.1:1"]
    assert not any(e["reachable"] for e in ev["endpoints"]) and ev["endpoints"][0]["created"] == 123.0
    assert all(t == 0.5 for _endpoint, t in host.connects)


def test_real_connect_is_bounded_and_reports(tmp_path):
    err = _evidence_io.Host().connect({"transport": "unix", "socket": str(tmp_path / "none.sock")}, 0.2)
    assert "No such file" in err
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "ok.sock"))
    srv.listen(1)
    try:
        assert _evidence_io.Host().connect({"transport": "unix", "socket": str(tmp_path / "ok.sock")}, 0.2) is None
    finally:
        srv.close()


def test_log_evidence_missing_file(tmp_path):
    ev = _evidence_io.log_evidence("nope", _evidence_io.Host(), str(tmp_path))
    assert ev["lines"] == [] and ev["error"] and ev["path"] == os.path.join(str(tmp_path), "nope.log")


# ---- storage that stops answering (issue 25) ---------------------------------------------------------------

DEAD_MOUNTINFO = MOUNTINFO + (
    "120 22 0:52 / /srv/nfs rw,relatime shared:70 - nfs4 nfs1.example.net:/export/vm "
    "rw,vers=4.2,rsize=1048576,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5\n"
    "121 22 0:53 / /srv/fuse\\040dir rw,nosuid,nodev shared:71 - fuse /srv/src rw,user_id=0,group_id=0,allow_other\n"
)


def test_parse_mountinfo_names_server_fstype_and_super_options():
    m = {x["mount_point"]: x for x in _evidence_io.parse_mountinfo(DEAD_MOUNTINFO)}
    nfs = m["/srv/nfs"]
    assert (nfs["fstype"], nfs["device"], nfs["options"]) == ("nfs4", "nfs1.example.net:/export/vm", "rw,relatime")
    assert "hard" in nfs["super_options"].split(",") and "timeo=600" in nfs["super_options"]
    assert m["/srv/fuse dir"]["fstype"] == "fuse" and m["/srv/fuse dir"]["device"] == "/srv/src"
    assert _evidence_io.parse_mountinfo("garbage\n1 2 3\n") == []


def test_storage_groups_one_probe_per_mount_and_block_device():
    mounts = _evidence_io.parse_mountinfo(DEAD_MOUNTINFO)
    disks = [{"type": "file", "path": "/srv/nfs/a.img"}, {"type": "file", "path": "/srv/nfs/b.img"},
             {"type": "file", "path": "/srv/nfs/a.img"}, {"type": "block", "path": "/dev/sdb"},
             {"type": "network", "path": None}, {"type": "file", "path": "relative.img"},
             {"type": "file", "path": "/var/lib/libvirt/images/c.img"}]
    groups = _evidence_io.storage_groups(disks, mounts)
    assert set(groups) == {"mount:/srv/nfs:nfs1.example.net:/export/vm", "block:/dev/sdb",
                           "mount:/var/lib/libvirt/images:/dev/loop3"}
    assert groups["mount:/srv/nfs:nfs1.example.net:/export/vm"]["steps"] == [
        ["mount", "/srv/nfs"], ["path", "/srv/nfs/a.img"], ["path", "/srv/nfs/b.img"]]
    assert groups["block:/dev/sdb"]["steps"] == [["block", "/dev/sdb"]]


def verdict(key, kind, mount, records, answered, since=100.0):
    return {key: {"key": key, "kind": kind, "mount": mount, "answered": answered, "error": None,
                  "since": None if answered else since, "seconds": None if answered else 20.0,
                  "probe_pid": None if answered else 4321, "adopted": False,
                  "records": {r["target"]: r for r in records}}}


def test_storage_view_tells_a_dead_mount_from_a_dead_path_and_a_live_one():
    mounts = _evidence_io.parse_mountinfo(DEAD_MOUNTINFO)
    nfs = next(m for m in mounts if m["mount_point"] == "/srv/nfs")
    key = "mount:/srv/nfs:nfs1.example.net:/export/vm"
    disk = {"type": "file", "path": "/srv/nfs/a.img", "target": "vda"}
    dead = _evidence_io.StorageView(verdict(key, "mount", nfs, [], False), mounts).for_disk(disk)
    assert dead["answered"] is False
    un = dead["unresponsive"]
    assert (un["kind"], un["target"], un["fstype"], un["source"], un["probe_pid"]) == (
        "mount", "/srv/nfs", "nfs4", "nfs1.example.net:/export/vm", 4321)
    assert "hard" in un["options"]
    # the mount answered, this path did not (e.g. a symlink into other storage): the path is named
    half = verdict(key, "mount", nfs, [{"step": "mount", "target": "/srv/nfs", "statvfs": {}}], False)
    un = _evidence_io.StorageView(half, mounts).for_disk(disk)["unresponsive"]
    assert (un["kind"], un["target"]) == ("path", "/srv/nfs/a.img")
    rec = {"step": "path", "target": "/srv/nfs/a.img", "real": "/srv/nfs/a.img", "exists": True,
           "statvfs": {"f_frsize": 4096, "f_bsize": 4096, "f_blocks": 100, "f_bavail": 50, "f_bfree": 60}}
    live = _evidence_io.StorageView(verdict(key, "mount", nfs, [rec], True), mounts)
    assert live.for_disk(disk) == {"answered": True, "record": rec, "mount": nfs}
    assert live.for_disk({"type": "file", "path": "/elsewhere/x.img"}) is None       # not probed


def test_gather_disk_never_touches_storage_that_did_not_answer():
    class Untouchable(FakeHost):
        def statvfs(self, path):
            raise AssertionError(f"statvfs {path} on a dead mount")

        def realpath(self, path):
            raise AssertionError(f"realpath {path} on a dead mount")

        exists = realpath

    mounts = _evidence_io.parse_mountinfo(DEAD_MOUNTINFO)
    nfs = next(m for m in mounts if m["mount_point"] == "/srv/nfs")
    view = _evidence_io.StorageView(verdict("mount:/srv/nfs:nfs1.example.net:/export/vm", "mount", nfs, [], False),
                                    mounts)
    ev = _evidence_io.gather_disk({"type": "file", "path": "/srv/nfs/a.img"}, Untouchable(), mounts, [],
                                  lvs_cache={}, timeout=1, storage=view)
    assert ev["unresponsive"]["mount_point"] == "/srv/nfs"
    assert ev["filesystem"] == {"mount_point": "/srv/nfs", "device": "nfs1.example.net:/export/vm",
                                "fstype": "nfs4", "responsive": False, "total_bytes": None,
                                "available_bytes": None, "free_bytes": None, "used_percent": None}


def test_probe_script_answers_for_real_paths(tmp_path):
    """The real probe program on this machine's tmp dir: statvfs of the mount, realpath of a symlink."""
    (tmp_path / "disk.img").write_bytes(b"\0" * 4096)
    (tmp_path / "link.img").symlink_to(tmp_path / "disk.img")
    mounts = _evidence_io.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    groups = _evidence_io.storage_groups([{"type": "file", "path": str(tmp_path / "link.img")},
                                          {"type": "file", "path": str(tmp_path / "gone.img")}], mounts)
    prober = _evidence_io.StorageProber(str(tmp_path / "probes"))
    prober.start(groups, 5.0)
    prober.wait(time.time() + 10)
    [v] = list(prober.verdicts().values())
    assert v["answered"] and v["since"] is None
    rec = v["records"][str(tmp_path / "link.img")]
    assert rec["real"] == str(tmp_path / "disk.img") and rec["exists"] and rec["statvfs"]["f_blocks"] > 0
    assert v["records"][str(tmp_path / "gone.img")]["exists"] is False
    assert os.listdir(tmp_path / "probes") == [".lock"]                       # the marker went with the answer


def blocking_python(tmp_path):
    """A stand-in interpreter whose probe never answers (as one blocked on a dead mount): sleeps, and counts
    how often it was started."""
    starts = tmp_path / "starts"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho x >> {starts}\nexec sleep 60\n")
    fake.chmod(0o755)
    return str(fake), starts


def test_a_blocked_probe_is_abandoned_and_reused_never_piled_up(tmp_path):
    python, starts = blocking_python(tmp_path)
    mounts = _evidence_io.parse_mountinfo(DEAD_MOUNTINFO)
    groups = _evidence_io.storage_groups([{"type": "file", "path": "/srv/nfs/a.img"}], mounts)
    probe_dir = str(tmp_path / "probes")
    pids = []
    try:
        t0 = time.monotonic()
        first = _evidence_io.StorageProber(probe_dir, python=python)
        first.start(groups, 0.3)
        first.wait(time.time() + 0.3)
        [v] = list(first.verdicts().values())
        pids.append(v["probe_pid"])
        assert not v["answered"] and v["probe_pid"] and not v["adopted"]
        assert time.monotonic() - t0 < 1.5                                   # its bound, not the probe's end
        time.sleep(0.35)                                                     # older than the bound: stale
        for _run in range(3):                                                # later runs adopt it
            t0 = time.monotonic()
            again = _evidence_io.StorageProber(probe_dir, python=python)
            again.sweep()
            again.start(groups, 0.3)
            again.wait(time.time() + 0.3)
            [w] = list(again.verdicts().values())
            assert (w["answered"], w["adopted"], w["probe_pid"], w["since"]) == (False, True, v["probe_pid"],
                                                                                 v["since"])
            assert time.monotonic() - t0 < _evidence_io.STALE_GRACE + 0.2
        assert starts.read_text().count("x") == 1                           # one probe for four runs
        os.kill(v["probe_pid"], signal.SIGKILL)                              # the storage answers again
        os.waitpid(v["probe_pid"], 0)
        fresh = _evidence_io.StorageProber(probe_dir, python=python)
        fresh.sweep()
        assert os.listdir(probe_dir) == [".lock"]                            # the dead probe's marker is swept
        fresh.start(groups, 0.3)
        pids.append(fresh.verdicts()[next(iter(groups))]["probe_pid"])
        deadline = time.monotonic() + 5
        while starts.read_text().count("x") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert starts.read_text().count("x") == 2 and pids[1] != pids[0]
    finally:
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)


def test_a_young_probe_of_a_concurrent_run_is_waited_for(tmp_path):
    """A live probe younger than the bound belongs to a run still waiting for it: this run waits too and,
    when that probe ends, asks the storage itself."""
    python, _starts = blocking_python(tmp_path)
    mounts = _evidence_io.parse_mountinfo(MOUNTINFO)
    groups = _evidence_io.storage_groups([{"type": "file", "path": "/etc/hostname"}], mounts)
    probe_dir = str(tmp_path / "probes")
    other = _evidence_io.StorageProber(probe_dir, python=python)
    other.start(groups, 5.0)
    pid = other.verdicts()[next(iter(groups))]["probe_pid"]
    try:
        mine = _evidence_io.StorageProber(probe_dir)
        mine.start(groups, 5.0)
        assert mine.probes[next(iter(groups))]["adopted"]
        threading.Timer(0.3, lambda: os.kill(pid, signal.SIGKILL)).start()
        mine.wait(time.time() + 5)
        [v] = list(mine.verdicts().values())
        assert v["answered"] and not v["adopted"] and v["records"]["/"]["statvfs"]
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
