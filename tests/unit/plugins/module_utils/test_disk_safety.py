"""The collection's one data-safety verdict (common/_disk_safety + _disk_safety_io), on the blkid and wipefs
answers recorded from real devices (fixtures/bench/probe-*.json, recorded by fixtures/bench/record.py). The
benchmark's wording of it is tested in test_bench.py; DRBD's in test_drbd.py."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _command_io as cmd
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety as ds
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety_io as dsio

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
DEV = "/dev/loop7"
KINDS = ("ext4", "dos", "gpt", "lvm2", "md", "drbd", "swap", "ext4_and_md", "ambivalent")


def facts(kind="clean", **kw):
    rec = json.loads((FIXTURES / f"probe-{kind}.json").read_text())
    out = {"path": DEV, "real": DEV, "exists": True, "is_block": True, "holders": [], "partitions": [],
           "mounts": [], "swap": False, "openers": [], "excl_error": None}
    for tool in ("blkid", "wipefs"):
        out[f"{tool}_rc"], out[f"{tool}_out"], out[f"{tool}_err"] = (rec[tool]["rc"], rec[tool]["stdout"],
                                                                     rec[tool]["stderr"])
    out.update(kw)
    return out


def test_a_clean_device_is_empty():
    assert ds.examine(facts()) == {"device": DEV, "exists": True, "is_block": True, "in_use": [], "signatures": [],
                                   "empty": True}


@pytest.mark.parametrize("kind", KINDS)
def test_every_recorded_signature_makes_it_not_empty(kind):
    v = ds.examine(facts(kind))
    assert not v["empty"] and v["signatures"] and v["in_use"] == []


def test_drbd_metadata_is_named():
    assert ds.examine(facts("drbd"))["signatures"] == ["drbd signature (UUID=123456789abcdef, VERSION=v09)"]


@pytest.mark.parametrize("kw,found", [
    ({"holders": ["drbd0 (DRBD)"]}, ["held by drbd0 (DRBD)"]),
    ({"mounts": ["/srv"], "swap": True}, ["mounted at /srv", "in use as swap (/proc/swaps)"]),
    ({"partitions": ["vdb1"], "openers": ["qemu (pid 9)"]}, ["has partitions (vdb1)", "open by qemu (pid 9)"]),
    ({"excl_error": "EBUSY: Device or resource busy"},
     ["cannot be opened exclusively (EBUSY: Device or resource busy): something else claims it"]),
])
def test_in_use(kw, found):
    v = ds.examine(facts(**kw))
    assert v["in_use"] == found and not v["empty"]


def test_missing_and_not_a_block_device():
    assert ds.examine({"path": DEV, "exists": False}) == {
        "device": DEV, "exists": False, "is_block": False, "in_use": [], "signatures": [], "empty": False}
    v = ds.examine({"path": "/dev/disk/by-id/x", "real": "/tmp/x", "exists": True, "is_block": False})
    assert v["device"] == "/dev/disk/by-id/x (/tmp/x)" and not v["empty"]


def test_a_probe_that_does_not_answer_is_not_empty():
    v = ds.examine(facts(blkid_rc=-1, blkid_out="", blkid_err="no answer within 60 s"))
    assert v["signatures"] == ["no answer from blkid (rc -1: no answer within 60 s)"] and not v["empty"]


def test_device_facts_runs_blkid_and_wipefs_with_their_timeout():
    """On a real block device of this machine when there is one readable (the runner is a recorder: the device
    is never probed for real here)."""
    candidates = [f"/dev/{n}" for n in sorted(os.listdir("/sys/class/block"))] if os.path.isdir(
        "/sys/class/block") else []
    dev = next((d for d in candidates if os.path.exists(d) and stat.S_ISBLK(os.stat(d).st_mode)), None)
    if dev is None:
        pytest.skip("no block device node on this machine")
    calls = []

    def runner(argv, timeout):
        calls.append((argv, timeout))
        return 2, "", ""

    f = dsio.device_facts(dev, {"blkid": "/sbin/blkid", "wipefs": "/sbin/wipefs"}, runner=runner)
    real = os.path.realpath(dev)
    assert calls == [(["/sbin/blkid", "-p", "-o", "export", real], 60),
                     (["/sbin/wipefs", "--no-act", "--json", real], 60)]
    assert f["is_block"] and f["blkid_rc"] == 2 and isinstance(f["holders"], list)


def test_device_facts_turns_a_probe_timeout_into_no_answer(tmp_path):
    def runner(argv, timeout):
        raise cmd.ToolTimeout(timeout, "", "")

    dev = next((f"/dev/{n}" for n in sorted(os.listdir("/sys/class/block"))
                if os.path.exists(f"/dev/{n}")), None) if os.path.isdir("/sys/class/block") else None
    if dev is None:
        pytest.skip("no block device node on this machine")
    f = dsio.device_facts(dev, {"blkid": "blkid", "wipefs": "wipefs"}, runner=runner)
    assert (f["blkid_rc"], f["blkid_err"]) == (-1, "no answer within 60 s")
    assert "no answer from wipefs (rc -1: no answer within 60 s)" in ds.examine(f)["signatures"]


def test_run_tool_feeds_stdin():
    rc, out, _err = cmd.run_tool([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], 30,
                                 stdin_text="abc")
    assert (rc, out) == (0, "ABC\n")
