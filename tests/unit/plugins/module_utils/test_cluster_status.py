"""cluster_facts' parsers (module_utils/cluster/_status, pure) on what a real corosync 3.1 + pacemaker 2.1 cluster
printed: the molecule scenario tests/molecule/cluster (two nodes, a qnetd host, two knet links), recorded healthy,
with a resource whose start fails on both nodes and a fencing request that could not succeed (no device), with
node b's link 1 cut, and with node b's cluster stack stopped (fixtures/cluster/, README there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.cluster import _status

FIX = Path(__file__).parent / "fixtures" / "cluster"
NODES = ["kvmops-cl-a", "kvmops-cl-b"]


def read(name):
    return (FIX / name).read_text()


def facts(state):
    return {
        "pacemaker": _status.crm_mon(read(f"{state}.crm_mon_fencing.xml")),
        "quorum": _status.quorum(read(f"{state}.quorumtool.txt")),
        "links": _status.links(read(f"{state}.cfgtool.txt")),
    }


def test_healthy():
    f = facts("healthy")
    q, k, p = f["quorum"], f["links"], f["pacemaker"]
    assert (q["quorate"], q["qdevice"], q["two_node"], q["total_votes"], q["expected_votes"], q["quorum"]) == (
        True, True, False, 3, 3, 2)
    assert [(m["name"], m["votes"], m["local"]) for m in q["members"] if m["node_id"]] == [
        ("kvmops-cl-a", 1, True), ("kvmops-cl-b", 1, False)]
    assert k["transport"] == "knet" and [link["id"] for link in k["links"]] == [0, 1]
    assert [link["address"] for link in k["links"]] == ["10.89.80.11", "10.89.81.11"]
    assert all(link["down"] == [] and len(link["nodes"]) == 2 for link in k["links"])
    assert p["quorate"] and p["dc"] in NODES and p["stonith_enabled"] is False
    assert sorted(n["name"] for n in p["nodes"] if n["online"]) == NODES
    assert p["resources"] == [] and p["failed_actions"] == [] and p["fencing_history"] == []
    assert _status.problems(f) == ["fencing is off (stonith-enabled=false): a lab cluster, not safe for VMs"]


def test_failed_start_and_failed_fencing():
    f = facts("failures")
    p = f["pacemaker"]
    ok = [r for r in p["resources"] if r["id"] == "kvmops-ok"]
    assert len(ok) == 1 and ok[0]["active"] and ok[0]["role"] == "Started" and len(ok[0]["nodes"]) == 1
    assert ok[0]["nodes"][0] in NODES and ok[0]["agent"] == "ocf:heartbeat:Dummy"
    fails = [a for a in p["failed_actions"] if a["op"].startswith("kvmops-fail_start")]
    assert sorted(a["node"] for a in fails) == NODES, p["failed_actions"]
    assert all(a["task"] == "start" and a["exit_code"] != 0 for a in fails)
    assert any(e["target"] == "kvmops-cl-b" and e["status"] == "failed" for e in p["fencing_history"]), p
    probs = _status.problems(f)
    assert sum(pr.startswith("failed action kvmops-fail_start_0 on ") for pr in probs) == 2, probs
    assert any(pr.startswith("fencing ") and "kvmops-cl-b failed" in pr for pr in probs), probs


def test_link_1_cut():
    f = facts("link1_down")
    links = {link["id"]: link for link in f["links"]["links"]}
    assert links[0]["down"] == [] and links[1]["down"] == [2], f["links"]
    assert f["quorum"]["quorate"]
    assert "knet link 1 down to node id 2" in _status.problems(f)


def test_node_lost_quorate_with_the_qdevice():
    f = facts("node_lost")
    q = f["quorum"]
    assert q["quorate"] and q["qdevice"] and q["total_votes"] == 2 and q["expected_votes"] == 3
    assert [m["name"] for m in q["members"] if m["node_id"]] == ["kvmops-cl-a"]
    assert f["pacemaker"]["quorate"]
    assert all(link["down"] == [2] for link in f["links"]["links"]), f["links"]
    probs = _status.problems(f)
    assert "node kvmops-cl-b is offline" in probs, probs
    assert not any(pr.startswith("not quorate") for pr in probs)


def test_not_quorate_and_bad_outputs():
    text = re.sub(r"(?m)^Quorate:(\s+)Yes", r"Quorate:\1No", read("node_lost.quorumtool.txt"))
    assert _status.quorum(text)["quorate"] is False
    with pytest.raises(_status.StatusError, match="no 'Quorate:' line"):
        _status.quorum("Cannot initialize QUORUM service\n")
    with pytest.raises(_status.StatusError, match="no 'Local node ID'"):
        _status.links("Could not initialize corosync configuration API error 2\n")
    with pytest.raises(_status.StatusError, match="crm_mon wrote no XML"):
        _status.crm_mon("crm_mon: Error: cluster is not available on this node\n")
    with pytest.raises(_status.StatusError, match="not <pacemaker-result>"):
        _status.crm_mon("<cib/>")
    bad = '<pacemaker-result><status code="102" message="Not connected"/></pacemaker-result>'
    with pytest.raises(_status.StatusError, match="Not connected"):
        _status.crm_mon(bad)
