"""drbd_resource in check mode with the real tools of this machine (drbd-utils' drbdadm and drbdadm-84, blkid,
wipefs), run as a real ansible process, as root on loop devices over sparse files (no DRBD kernel module here:
the version is given): the configuration rendered for 8.4 and for 9 passes the real drbdadm and is shown with the
secret masked, an empty device gets "create-md", a device holding ext4 with a file is refused naming the variable,
the device and ext4 (and stays byte-identical), with force the same device is predicted to be written over, and
check mode writes no file. The real runs are in tests/integration/vm/test_dr_drbd.py (a DRBD kernel)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
ANSIBLE = str(Path(PY).with_name("ansible"))
MIB = 1024 * 1024
SECRET = "kvmops-local-0123456789"  # noqa: S105 (a test value)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("drbdadm", "losetup", "mkfs.ext4", "blkid", "wipefs"))
    or not Path("/usr/lib/drbd/drbdadm-84").exists(),
    reason="needs root, drbd-utils, losetup and mkfs.ext4 (hack/setup.sh installs them)",
)


def sh(*argv) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode:
        raise AssertionError(f"{' '.join(argv)}: rc {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture
def loop(tmp_path):
    devices = []

    def attach(image: Path) -> str:
        dev = sh("losetup", "--find", "--show", str(image))
        devices.append(dev)
        return dev

    yield attach
    for dev in devices:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60, check=False)


def image(path: Path, ext4: bool = False) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(64 * MIB)
    if ext4:
        src = path.parent / "src"
        src.mkdir()
        (src / "keep").write_text("kvmops-keep\n")
        sh("mkfs.ext4", "-q", "-F", "-d", str(src), str(path))
    return path


def run(args: dict) -> dict:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PY}",
           "-m", "kvmops.fleet.drbd_resource", "-a", json.dumps(args), "--check", "--diff"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert SECRET not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def args(dev, tmp_path, version, **kw):
    a = {"name": "vm1disk", "host": "hva", "port": 7789, "secret": SECRET, "version": version,
         "config_dir": str(tmp_path / "drbd.d"), "var_name": "dr_drbd_resources[0]", "initial_primary": "hva",
         "nodes": [{"host": "hva", "address": "10.213.2.11", "disk": dev, "minor": 0},
                   {"host": "hvb", "address": "10.213.2.12", "disk": "/dev/disk/by-id/peer", "minor": 0}]}
    a.update(kw)
    return a


@pytest.mark.parametrize("version", ["8.4", "9"])
def test_an_empty_device_is_predicted_and_nothing_is_written(version, loop, tmp_path):
    dev = loop(image(tmp_path / "disk.img"))
    res = run(args(dev, tmp_path, version))
    assert not res.get("failed"), res
    assert res["changed"] is True and res["version"] == version
    assert res["actions"] == [f"write {tmp_path}/drbd.d/vm1disk.res", f"create-md on {dev} (empty)", "up"]
    assert res["device"]["empty"] is True
    after = res["diff"]["after"]
    assert 'shared-secret "********";' in after and f"DRBD {version} syntax" in after
    assert ("node-id 0;" in after) is (version == "9")
    assert not (tmp_path / "drbd.d").exists()


def test_a_device_with_a_filesystem_is_refused_and_left_alone(loop, tmp_path):
    img = image(tmp_path / "disk.img", ext4=True)
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    dev = loop(img)
    res = run(args(dev, tmp_path, "8.4"))
    assert res["failed"] is True and res["changed"] is False, res
    assert res["msg"].startswith(f"dr_drbd_resources[0].nodes[0].disk: {dev} is not empty: ext4 signature"), res["msg"]
    assert "set the resource's force: true" in res["msg"]
    forced = run(args(dev, tmp_path, "8.4", force=True))
    assert forced["changed"] is True and forced["actions"][1].startswith(f"create-md on {dev} (ext4 signature"), forced
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before
    assert not (tmp_path / "drbd.d").exists()


def test_a_missing_device_and_a_resource_8_4_cannot_run(loop, tmp_path):
    res = run(args("/dev/disk/by-id/kvmops-no-such-disk", tmp_path, "8.4"))
    assert res["failed"] and res["msg"] == ("dr_drbd_resources[0].nodes[0].disk: /dev/disk/by-id/kvmops-no-such-disk "
                                            "does not exist"), res["msg"]
    dev = loop(image(tmp_path / "disk.img"))
    three = args(dev, tmp_path, "8.4")
    three["nodes"].append({"host": "hvc", "address": "10.213.2.13", "diskless": True, "minor": 0})
    res = run(three)
    assert res["failed"] and res["msg"] == ("dr_drbd_resources[0]: 3 nodes (DRBD 8.4 replicates between two) needs "
                                            "DRBD 9; this host's DRBD is 8.4"), res["msg"]
