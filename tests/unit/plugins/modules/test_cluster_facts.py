"""Black-box runs of cluster_facts (patch_module_args): on this machine (no cluster stack: each tool named as
missing, the module still returns), and on the recorded outputs of the molecule cluster with the host side's
commands replayed (argv and timeout checked), a command that hangs and one that fails."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ansible_collections.kvmops.fleet.plugins.module_utils.cluster import _facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout
from ansible_collections.kvmops.fleet.plugins.modules import cluster_facts

FIX = Path(__file__).parents[1] / "module_utils" / "fixtures" / "cluster"
TOOLS = {"crm_mon": "/usr/sbin/crm_mon", "corosync-quorumtool": "/usr/sbin/corosync-quorumtool",
         "corosync-cfgtool": "/usr/sbin/corosync-cfgtool"}


def replay(monkeypatch, state, seen, override=None):
    texts = {"crm_mon": f"{state}.crm_mon_fencing.xml", "corosync-quorumtool": f"{state}.quorumtool.txt",
             "corosync-cfgtool": f"{state}.cfgtool.txt"}

    def runner(argv, timeout):
        seen.append((argv, timeout))
        tool = Path(argv[0]).name
        if override and tool in override:
            return override[tool](argv, timeout)
        return 0, (FIX / texts[tool]).read_text(), ""

    real = _facts_io.gather
    monkeypatch.setattr(_facts_io, "gather", lambda timeout: real(timeout, runner=runner, tools=TOOLS))


def test_on_this_machine_read_only_in_check_mode_too(run_module):
    for check in (False, True):
        out = run_module(cluster_facts, {"_ansible_check_mode": check})
        assert out["changed"] is False and not out.get("failed"), out
        facts = out["ansible_facts"]["cluster"]
        if not shutil.which("crm_mon"):
            assert facts["pacemaker"] is None and facts["problems"] == []
            assert any(e.startswith("crm_mon not found on this host") for e in facts["errors"]), facts


def test_a_bad_option_names_it(run_module):
    out = run_module(cluster_facts, {"timeout": 0})
    assert out["failed"] and out["msg"].startswith("timeout: ")
    out = run_module(cluster_facts, {"timeout": 301})
    assert out["failed"] and out["msg"].startswith("timeout: ")


def test_recorded_healthy_cluster_through_the_module(run_module, monkeypatch):
    seen = []
    replay(monkeypatch, "healthy", seen)
    out = run_module(cluster_facts, {"timeout": 7})
    facts = out["ansible_facts"]["cluster"]
    assert [a for a, _t in seen] == [
        ["/usr/sbin/crm_mon", "--one-shot", "--output-as=xml", "--include=fencing"],
        ["/usr/sbin/corosync-quorumtool", "-s"],
        ["/usr/sbin/corosync-cfgtool", "-s"],
    ]
    assert {t for _a, t in seen} == {7}
    assert facts["errors"] == [] and facts["quorum"]["qdevice"] and facts["pacemaker"]["quorate"]
    assert facts["problems"] == ["fencing is off (stonith-enabled=false): a lab cluster, not safe for VMs"]


def test_a_hung_and_a_failing_command_are_errors_not_a_failure(run_module, monkeypatch):
    def hang(argv, timeout):
        raise ToolTimeout(timeout, "", "")

    def fail(argv, timeout):
        return 1, "", "Could not initialize corosync configuration API error 2"

    seen = []
    replay(monkeypatch, "node_lost", seen, {"crm_mon": hang, "corosync-cfgtool": fail})
    out = run_module(cluster_facts, {"timeout": 3})
    assert not out.get("failed"), out
    facts = out["ansible_facts"]["cluster"]
    assert facts["pacemaker"] is None and facts["links"] is None and facts["quorum"]["quorate"]
    assert facts["errors"] == [
        "/usr/sbin/crm_mon --one-shot --output-as=xml --include=fencing: did not finish within 3 s (killed)",
        "/usr/sbin/corosync-cfgtool -s: rc 1: Could not initialize corosync configuration API error 2",
    ]


def test_a_node_without_quorum_is_still_read(run_module, monkeypatch):
    """corosync-quorumtool -s exits 2 when the partition is not quorate: its output is still the answer."""
    text = (FIX / "node_lost.quorumtool.txt").read_text()
    lost = re.sub(r"(?m)^Quorate:(\s+)Yes", r"Quorate:\1No", text)
    assert lost != text

    def not_quorate(argv, timeout):
        return 2, lost, ""

    replay(monkeypatch, "node_lost", [], {"corosync-quorumtool": not_quorate})
    facts = run_module(cluster_facts, {})["ansible_facts"]["cluster"]
    assert facts["errors"] == [] and facts["quorum"]["quorate"] is False
    assert "not quorate: 2 of 3 expected votes, 2 needed" in facts["problems"]
