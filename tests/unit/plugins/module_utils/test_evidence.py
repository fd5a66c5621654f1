"""Evidence parsers and gatherers with an injected fake host."""
from __future__ import annotations

import os
import socket
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
