"""Black-box runs of drbd_facts (patch_module_args): on this machine for real (no drbd module: nothing loaded,
nothing fails), and on the recorded DRBD 8.4 split brain with the host side's reads replayed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io
from ansible_collections.kvmops.fleet.plugins.modules import drbd_facts

FIX = Path(__file__).parents[1] / "module_utils" / "fixtures" / "drbd"


def test_on_this_machine_read_only_in_check_mode_too(run_module):
    for check in (False, True):
        out = run_module(drbd_facts, {"_ansible_check_mode": check})
        assert out["changed"] is False and not out.get("failed"), out
        facts = out["ansible_facts"]["drbd"]
        assert facts["loaded"] is os.path.exists("/proc/drbd")
        if not facts["loaded"]:
            assert facts["resources"] == [] and facts["summary"] == {"resources": 0, "verdicts": {}, "worst": None}


def test_a_bad_option_names_it(run_module):
    out = run_module(drbd_facts, {"timeout": 0})
    assert out["failed"] and out["msg"].startswith("timeout: ")
    out = run_module(drbd_facts, {"resources": ["r0", "a b"]})
    assert out["failed"] and out["msg"].startswith("resources[1]: ")


def test_recorded_split_brain_through_the_module(run_module, monkeypatch, tmp_path):
    rec = json.loads((FIX / "split-brain-vma.json").read_text())["commands"]
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "drbd").write_text(rec["cat /proc/drbd"]["stdout"])

    def runner(argv, timeout):
        assert timeout == 4
        if argv[-1] == "show":
            return 0, rec["drbdsetup show"]["stdout"], ""
        if argv[-1] == "--version":
            return 0, "DRBDADM_VERSION=9.22.0\n", ""
        return 0, rec["dmesg | grep -i drbd | tail -n 40"]["stdout"], ""

    real = _facts_io.gather
    monkeypatch.setattr(_facts_io, "gather", lambda timeout, names=(): real(
        timeout, names, runner=runner, root=str(tmp_path),
        tools={"drbdsetup": "/sbin/drbdsetup", "drbdadm": "/sbin/drbdadm", "dmesg": "/bin/dmesg"}))
    out = run_module(drbd_facts, {"timeout": 4, "resources": ["r0"]})
    facts = out["ansible_facts"]["drbd"]
    (r,) = facts["resources"]
    assert (r["verdict"], r["severity"], facts["summary"]["worst"]) == ("split-brain", "critical", "split-brain")
    assert r["remediation"][1].endswith("drbdadm connect --discard-my-data r0")
