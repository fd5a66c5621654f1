"""The cluster the dr role's entry point `cluster` formed in the scenario's containers: read back from corosync,
pacemaker and corosync-qnetd themselves (nothing here is the role's own output), plus one check-mode run of the
converge playbook on the formed cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

NODES = ["kvmops-cl-a", "kvmops-cl-b"]
QNETD = "kvmops-cl-q"


def is_node(host):
    return host.backend.get_hostname() in NODES


@pytest.fixture
def node(host):
    if not is_node(host):
        pytest.skip("a cluster node test")
    return host


def test_both_nodes_online_in_a_quorate_partition(node):
    root = ET.fromstring(node.check_output("crm_mon --one-shot --output-as=xml"))
    dc = root.find("./summary/current_dc")
    assert dc is not None and dc.get("present") == "true" and dc.get("with_quorum") == "true", ET.tostring(dc)
    online = sorted(n.get("name") for n in root.findall("./nodes/node") if n.get("online") == "true")
    assert online == NODES
    assert root.findall("./failures/failure") == []


def test_three_votes_with_the_qdevice(node):
    out = node.check_output("corosync-quorumtool -s")
    assert re.search(r"(?m)^Quorate:\s+Yes\s*$", out), out
    flags = re.search(r"(?m)^Flags:\s+(.*)$", out).group(1).split()
    assert {"Quorate", "Qdevice"} <= set(flags), out
    assert "2Node" not in flags, out  # pcs drops two_node when the qdevice is added
    assert re.search(r"(?m)^Total votes:\s+3\s*$", out), out
    assert re.search(r"(?m)^Expected votes:\s+3\s*$", out), out


def test_two_knet_links_connected(node):
    out = node.check_output("corosync-cfgtool -s")
    me = node.backend.get_hostname()
    peer = next(n for n in NODES if n != me)
    conf = node.file("/etc/corosync/corosync.conf").content_string
    assert re.search(r"(?m)^\s*transport:\s*knet$", conf), conf
    assert "cluster_name: kvmops-lab" in conf
    # corosync-cfgtool -s lists each LINK ID with every node's state on it: "nodeid: 2: connected"
    blocks = re.split(r"(?m)^LINK ID ", out)[1:]
    assert sorted(b.split()[0] for b in blocks) == ["0", "1"], out
    for block in blocks:
        states = dict(re.findall(r"nodeid:?\s*(\d+):?\s+(\w+)", block))
        assert len(states) == 2, (peer, block)
        assert sorted(states.values()) == ["connected", "localhost"], (peer, block)


def test_fencing_off_only_as_the_lab_acknowledged(node):
    value = node.check_output("crm_attribute --type crm_config --name stonith-enabled --query --quiet")
    assert value.strip() == "false"
    assert node.check_output(
        "crm_attribute --type crm_config --name cluster-recheck-interval --query --quiet").strip() == "5min"


def test_secrets_are_root_only(node):
    key = node.file("/etc/corosync/authkey")
    assert key.user == "root" and key.mode & 0o077 == 0, oct(key.mode)
    record = node.file("/var/lib/pcsd/kvmops-hacluster.sha256")
    assert record.mode == 0o600 and "lab-only" not in record.content_string


def test_services_enabled(node):
    for unit in ("corosync", "pacemaker", "pcsd", "corosync-qdevice"):
        svc = node.service(unit)
        assert svc.is_running and svc.is_enabled, unit


def test_qnetd_serves_both_nodes(host):
    if host.backend.get_hostname() != QNETD:
        pytest.skip("the qnetd host's test")
    assert host.service("corosync-qnetd").is_running
    out = host.check_output("corosync-qnetd-tool -l")
    assert "Cluster \"kvmops-lab\"" in out, out
    # each node connected, its last vote acknowledged ("Node ID 1:" ... "Vote: No change (ACK)" or "ACK (ACK)")
    assert sorted(set(re.findall(r"Node ID (\d+):", out))) == ["1", "2"], out
    assert len(re.findall(r"(?m)^\s+Vote:.*\(ACK\)\s*$", out)) == 2, out
    assert not host.package("pacemaker").is_installed


def test_check_mode_on_the_formed_cluster_changes_nothing_and_warns(host):
    if host.backend.get_hostname() != QNETD:
        pytest.skip("runs once")
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    play = Path(os.environ["KVMOPS_CONVERGE"])
    res = subprocess.run(["ansible-playbook", "-i", inventory, "--check", str(play)], capture_output=True, text=True,
                         timeout=600, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)  # molecule's environment forces colour
    assert res.returncode == 0, out
    assert "WARNING - kvmops-lab runs WITHOUT FENCING" in out, out
    recap = re.findall(r"(?m)^(kvmops-cl-\w+)\s+: ok=\d+\s+changed=(\d+)", out)
    changed = dict(recap)  # host -> changed count of the check run
    assert sorted(changed) == ["kvmops-cl-a", "kvmops-cl-b", "kvmops-cl-q"], out
    assert set(changed.values()) == {"0"}, recap


def test_cluster_facts_reads_the_same_cluster(host):
    """kvmops.fleet.cluster_facts on both nodes, through ansible (the module as a play runs it), against what the
    tools say above: quorate with the qdevice's vote, both links up, both nodes online, the lab's one problem."""
    if host.backend.get_hostname() != QNETD:
        pytest.skip("runs once")
    res = subprocess.run(["ansible", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "cluster_nodes",
                          "-m", "kvmops.fleet.cluster_facts", "-a", "timeout=20"], capture_output=True, text=True,
                         timeout=300, check=False,
                         env=dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"))
    assert res.returncode == 0, res.stdout + res.stderr
    hosts = json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"]
    assert sorted(hosts) == NODES
    for name, result in hosts.items():
        facts = result["ansible_facts"]["cluster"]
        assert facts["errors"] == [], facts
        assert facts["quorum"]["quorate"] and facts["quorum"]["qdevice"] and facts["quorum"]["total_votes"] == 3
        assert [m["name"] for m in facts["quorum"]["members"] if m["local"]] == [name]
        assert [link["id"] for link in facts["links"]["links"]] == [0, 1]
        assert all(link["down"] == [] for link in facts["links"]["links"]), facts["links"]
        assert facts["links"]["transport"] == "knet"
        pcmk = facts["pacemaker"]
        assert pcmk["quorate"] and pcmk["dc"] in NODES and pcmk["stonith_enabled"] is False
        assert sorted(n["name"] for n in pcmk["nodes"] if n["online"]) == NODES
        assert facts["problems"] == ["fencing is off (stonith-enabled=false): a lab cluster, not safe for VMs"]
