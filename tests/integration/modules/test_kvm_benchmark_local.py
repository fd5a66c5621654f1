"""kvm_benchmark with the real tools (fio, stress-ng, blkid, wipefs) on this machine, run as a real ansible
process, as root on loop devices over sparse files in the test's tmp_path (no VM, no libvirt):

1. a loop device holding an ext4 filesystem (made with mkfs.ext4 -d from a directory with a known file, never
   mounted read-write) is refused naming ext4 and the device, and its image is byte-identical afterwards; mounted
   (read-only, no journal replay) it is refused even with force=true, naming the mount;
2. check mode on an empty loop device returns the command lines and changed=true, and touches nothing; the real
   run returns every repeat of every metric with fio's JSON, changed=true;
3. a directory target: check mode creates nothing; the real run leaves no file behind, changed=false.
"""

from __future__ import annotations

import contextlib
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
KNOWN = b"kvmops benchmark: this file must survive\n" * 100

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("fio", "stress-ng", "losetup", "mkfs.ext4")),
    reason="needs root, fio, stress-ng, losetup and mkfs.ext4 (hack/setup.sh installs them)",
)


def sh(*argv) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode:
        raise AssertionError(f"{' '.join(argv)}: rc {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def run_module(args: dict, *, check=False) -> dict:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PY}",
           "-m", "kvmops.fleet.kvm_benchmark", "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def loop(tmp_path):
    """``loop(image)`` -> a loop device over the image; every device (and mount) is gone after the test."""
    devices, mounts = [], []

    def attach(image: Path) -> str:
        dev = sh("losetup", "--find", "--show", str(image))
        devices.append(dev)
        return dev

    attach.mounts = mounts
    yield attach
    for mnt in reversed(mounts):
        subprocess.run(["umount", mnt], capture_output=True, timeout=60, check=False)
    for dev in devices:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60, check=False)


def sparse(path: Path, size=64 * MIB) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def test_a_filesystem_is_refused_and_left_alone(tmp_path, loop):
    src = tmp_path / "src"
    src.mkdir()
    (src / "known.txt").write_bytes(KNOWN)
    image = sparse(tmp_path / "ext4.img")
    sh("mkfs.ext4", "-q", "-F", "-L", "kvmops-data", "-d", str(src), str(image))
    before = sha256(image)
    dev = loop(image)
    out = run_module({"label": "before", "device": dev, "jobs": ["randwrite-4k-qd1", "seqwrite-1m"], "runtime": 1,
                      "repeats": 2, "var_prefix": "tuning_benchmark_"})
    assert out.get("failed") is True and out["changed"] is False
    assert out["msg"].startswith(f"tuning_benchmark_device: {dev} is not empty: ext4 signature (UUID=")
    assert "LABEL=kvmops-data" in out["msg"] and "set tuning_benchmark_force=true" in out["msg"]
    assert sha256(image) == before

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mount", "-t", "ext4", "-o", "ro,noload", dev, str(mnt))
    loop.mounts.append(str(mnt))
    assert (mnt / "known.txt").read_bytes() == KNOWN
    out = run_module({"label": "before", "device": dev, "jobs": ["randwrite-4k-qd1"], "runtime": 1, "repeats": 2,
                      "force": True})
    assert out.get("failed") is True and out["changed"] is False
    assert out["msg"].startswith(f"device: {dev} is in use and is never benchmarked, not even with force: mounted "
                                 f"at {mnt}; cannot be opened exclusively (EBUSY")
    assert "it also carries: ext4 signature" in out["msg"]
    sh("umount", str(mnt))
    loop.mounts.remove(str(mnt))
    assert sha256(image) == before


def test_an_empty_device_check_then_real(tmp_path, loop):
    image = sparse(tmp_path / "empty.img")
    dev = loop(image)
    args = {"label": "before", "device": dev, "jobs": ["randread-4k-qd1", "seqwrite-1m"], "runtime": 1, "repeats": 2}
    before = sha256(image)
    check = run_module(args, check=True)
    assert not check.get("failed"), check.get("msg")
    assert check["changed"] is True
    assert [line.split()[1] for line in check["would_run"]] == ["--name=randread-4k-qd1", "--name=seqwrite-1m"] * 2
    assert check["benchmark"]["metrics"] == {} and check["benchmark"]["raw"] == []
    assert sha256(image) == before and os.stat(image).st_blocks == 0  # nothing written, the file still all holes

    out = run_module(args)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    b = out["benchmark"]
    assert b["target"] == {"kind": "device", "path": dev, "size_bytes": 64 * MIB, "device": os.path.basename(dev)}
    assert sorted(b["metrics"]) == sorted(f"{j}.{q}" for j in ("randread-4k-qd1", "seqwrite-1m")
                                          for q in ("iops", "bw_mib_s", "lat_mean_us", "lat_p99_us"))
    for name, metric in b["metrics"].items():
        assert len(metric["values"]) == 2 and all(v > 0 for v in metric["values"]), name
    assert [(r["repeat"], r["job"]) for r in b["raw"]] == [(1, "randread-4k-qd1"), (1, "seqwrite-1m"),
                                                           (2, "randread-4k-qd1"), (2, "seqwrite-1m")]
    assert all(r["tool"] == "fio" and r["output"]["jobs"][0]["jobname"] == r["job"] for r in b["raw"])
    assert b["versions"]["fio"] and b["versions"]["stress-ng"] is None
    assert b["tuning"]["scheduler"] is not None and b["tuning"]["cmdline"]
    assert os.stat(image).st_blocks > 0  # seqwrite-1m wrote through the loop device


def test_a_directory_leaves_nothing_behind(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("kept\n")
    args = {"label": "after", "directory": str(work), "jobs": ["randwrite-4k-qd1", "cpu"], "runtime": 1,
            "repeats": 2, "file_size": "16M", "stress_workers": 1}
    check = run_module(args, check=True)
    assert not check.get("failed"), check.get("msg")
    assert check["changed"] is False and len(check["would_run"]) == 5  # the layout, then 2 x 2 runs
    assert "--create_only=1" in check["would_run"][0]
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]

    out = run_module(args)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is False
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]
    b = out["benchmark"]
    assert b["target"]["kind"] == "file" and b["target"]["path"] == str(work)
    assert len(b["metrics"]["cpu.bogo_ops_per_s"]["values"]) == 2
    assert len(b["metrics"]["randwrite-4k-qd1.iops"]["values"]) == 2
    [stress] = [r for r in b["raw"] if r["job"] == "cpu" and r["repeat"] == 1]
    assert stress["parsed"]["metrics"][0]["stressor"] == "cpu" and "bogo-ops" in stress["output_text"]
    for r in b["raw"]:
        with contextlib.suppress(ValueError):
            tmp = r["argv"][r["argv"].index("--temp-path") + 1]
            assert not os.path.exists(tmp)  # stress-ng's temporary directory went too
