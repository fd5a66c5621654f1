"""The dr role's entry point cluster: kvmops.fleet.cluster_problems (module_utils/cluster/_config.problems), the
rules only the variables together can say, table-driven; then real ansible-playbook runs of the entry point on
the controller: a bad declaration stops at the check naming the variable with nothing else run, and a lab
cluster without fencing is accepted only with dr_cluster_fencing_lab_ack and then warned about loudly."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.filter import cluster_problems as plugin
from ansible_collections.kvmops.fleet.plugins.module_utils.cluster import _config

f = plugin.FilterModule().filters()["cluster_problems"]
HOSTS = ["hva", "hvb", "hvc", "qn"]
PASSWORD = "s3cret-hacluster"  # noqa: S105 (a test value)
VIRSH = {"name": "fence-lab", "type": "fence_virsh", "ip": "192.0.2.1", "username": "fence", "password": "fencepass1",
         "host_map": {"hva": "vm-a", "hvb": "vm-b"}}


def decl(**kw):
    d = {"name": "kvmops", "transport": "knet", "tiebreaker": "qdevice", "qnetd_host": "qn",
         "qnetd_address": "192.0.2.30", "qdevice_algorithm": "ffsplit", "password": PASSWORD,
         "fencing": [copy.deepcopy(VIRSH)], "fencing_lab_ack": False, "properties": {},
         "nodes": [{"host": "hva", "addresses": ["192.0.2.11", "198.51.100.11"]},
                   {"host": "hvb", "addresses": ["192.0.2.12", "198.51.100.12"]}]}
    d.update(kw)
    return d


def with_(path, value, **kw):
    """decl() with one nested value replaced: path like 'nodes.1.addresses.0' or 'fencing.0.ip'."""
    d = decl(**kw)
    *head, last = path.split(".")
    cur = d
    for p in head:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if value is KeyError:
        del cur[int(last) if isinstance(cur, list) else last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


IPMI = [{"name": f"ipmi-{n}", "type": "fence_ipmilan", "ip": f"192.0.2.{40 + i}", "username": "admin",
         "password": "ipmi-pass-1", "node": n} for i, n in enumerate(["hva", "hvb"])]
GOOD = [
    decl(),
    decl(tiebreaker="two_node", qnetd_host="", qnetd_address=""),
    decl(fencing=[], fencing_lab_ack=True),
    decl(fencing=[], fencing_lab_ack=True, properties={"stonith-enabled": False}),
    decl(fencing=IPMI),
    decl(fencing=[with_("fencing.0.password", KeyError)["fencing"][0] | {"identity_file": "/root/.ssh/fence"}]),
    decl(nodes=[{"host": "hva", "name": "node-a", "addresses": ["fd00::11"]},
                {"host": "hvb", "name": "node-b", "addresses": ["fd00::12"]}],
         fencing=[VIRSH | {"host_map": {"node-a": "a", "node-b": "b"}}]),
    decl(qdevice_algorithm="lms",
         nodes=decl()["nodes"] + [{"host": "hvc", "addresses": ["192.0.2.13", "198.51.100.13"]}],
         fencing=[VIRSH | {"host_map": {"hva": "a", "hvb": "b", "hvc": "c"}}]),
    decl(properties={"no-quorum-policy": "stop", "cluster-recheck-interval": "5min", "stonith-enabled": True}),
    decl(fencing=[{"name": "sbd", "type": "sbd", "devices": ["/dev/disk/by-id/virtio-sbd"]}]),
]


@pytest.mark.parametrize("cfg", GOOD, ids=range(len(GOOD)))
def test_good_declarations_pass(cfg):
    assert f(cfg, HOSTS) == []


THREE = decl()["nodes"] + [{"host": "hvc", "addresses": ["192.0.2.13", "198.51.100.13"]}]
BAD = [
    # (declaration, the variable the message must name, a fragment of the message)
    (decl(nodes=decl()["nodes"][:1]), "dr_cluster_nodes", "has 1 nodes; a cluster has 2 to 16"),
    (decl(nodes=[]), "dr_cluster_nodes", "has 0 nodes"),
    (decl(nodes=[{"host": f"h{i}", "addresses": [f"10.0.0.{i + 1}"]} for i in range(17)]), "dr_cluster_nodes",
     "2 to 16"),
    (with_("nodes.1.host", "hvz"), "dr_cluster_nodes[1].host", "hvz is not in the inventory"),
    (with_("nodes.1.host", "hva"), "dr_cluster_nodes[1].host", "also dr_cluster_nodes[0]; each host once"),
    (with_("nodes.1.name", "hva"), "dr_cluster_nodes[1].name", "node names are unique"),
    (with_("nodes.0.name", "bad_name"), "dr_cluster_nodes[0].name", "is not a node name"),
    (with_("nodes.0.addresses", []), "dr_cluster_nodes[0].addresses", "one or two knet link addresses"),
    (with_("nodes.0.addresses", ["192.0.2.11", "198.51.100.11", "203.0.113.11"]), "dr_cluster_nodes[0].addresses",
     "one or two"),
    (with_("nodes.1.addresses", ["192.0.2.12"]), "dr_cluster_nodes[1].addresses", "every node has the same links"),
    (with_("nodes.1.addresses.0", "hvb.example.net"), "dr_cluster_nodes[1].addresses[0]", "is not an IP address"),
    (with_("nodes.1.addresses.0", "0.0.0.0"), "dr_cluster_nodes[1].addresses[0]", "not a unicast address"),  # noqa: S104
    (with_("nodes.1.addresses.0", "192.0.2.11"), "dr_cluster_nodes[1].addresses[0]", "also dr_cluster_nodes[0]"),
    (with_("nodes.1.addresses.1", "fd00::12"), "dr_cluster_nodes[1].addresses[1]", "one address family per link"),
    (decl(transport="udpu"), "dr_cluster_transport", "knet only"),
    (decl(tiebreaker="two_node", qnetd_host="", nodes=THREE,
          fencing=[VIRSH | {"host_map": {"hva": "a", "hvb": "b", "hvc": "c"}}]), "dr_cluster_tiebreaker",
     "two nodes (there are 3)"),
    (decl(tiebreaker="two_node"), "dr_cluster_qnetd_host", "two_node (no qdevice)"),
    (decl(qnetd_host=""), "dr_cluster_qnetd_host", "required with dr_cluster_tiebreaker qdevice"),
    (decl(qnetd_host="nowhere"), "dr_cluster_qnetd_host", "nowhere is not in the inventory"),
    (decl(qnetd_host="hvb"), "dr_cluster_qnetd_host", "is a cluster node; the tiebreaker must be a third host"),
    (decl(qnetd_address=""), "dr_cluster_qnetd_address", "required"),
    (decl(qnetd_address="qn.example.net"), "dr_cluster_qnetd_address", "is not an IP address"),
    (decl(nodes=THREE, fencing=[VIRSH | {"host_map": {"hva": "a", "hvb": "b", "hvc": "c"}}]),
     "dr_cluster_qdevice_algorithm", "ffsplit is for an even number of nodes (there are 3); use lms"),
    (decl(password=""), "dr_cluster_password", "required"),
    (decl(password="short"), "dr_cluster_password", "8 to 128 characters"),  # noqa: S106 (a test value)
    (decl(fencing=[]), "dr_cluster_fencing", "empty: a cluster without fencing"),
    (decl(fencing=[], properties={}, fencing_lab_ack="yes"), "dr_cluster_fencing", "dr_cluster_fencing_lab_ack: true"),
    (decl(properties={"stonith-enabled": "false"}), "dr_cluster_properties.stonith-enabled", "turns fencing off"),
    (decl(properties={"stonith-enabled": False}), "dr_cluster_properties.stonith-enabled", "lab_ack"),
    (decl(properties={"no-quorum-policy": ["stop"]}), "dr_cluster_properties.no-quorum-policy", "text, a number"),
    (with_("fencing.0.type", "fence_xvm"), "dr_cluster_fencing[0].type", "is not one of sbd, fence_virsh"),
    (with_("fencing.0.name", "1bad"), "dr_cluster_fencing[0].name", "is not a resource name"),
    (decl(fencing=[VIRSH, VIRSH]), "dr_cluster_fencing[1].name", "also dr_cluster_fencing[0]"),
    (with_("fencing.0.ip", "hv.example.net"), "dr_cluster_fencing[0].ip", "of the libvirt host"),
    (with_("fencing.0.ip", KeyError), "dr_cluster_fencing[0].ip", "is not an IP address"),
    (with_("fencing.0.username", KeyError), "dr_cluster_fencing[0].username", "required"),
    (with_("fencing.0.password", KeyError), "dr_cluster_fencing[0].password", "required"),
    (with_("fencing.0.identity_file", "/root/key"), "dr_cluster_fencing[0]", "password or identity_file, not both"),
    (with_("fencing.0.password", KeyError) | {"fencing": [with_("fencing.0.password", KeyError)["fencing"][0]
                                                          | {"identity_file": "key"}]},
     "dr_cluster_fencing[0].identity_file", "is not an absolute path"),
    (with_("fencing.0.host_map", {}), "dr_cluster_fencing[0].host_map", "required"),
    (with_("fencing.0.host_map", {"hva": "a", "hvx": "x"}), "dr_cluster_fencing[0].host_map",
     "'hvx' is not a node of dr_cluster_nodes"),
    (with_("fencing.0.host_map", {"hva": "a", "hvb": "b;reboot"}), "dr_cluster_fencing[0].host_map.hvb",
     "is not a libvirt domain name"),
    (with_("fencing.0.host_map", {"hva": "a"}), "dr_cluster_fencing", "no device reaches hvb; every node needs one"),
    (with_("fencing.0.node", "hva"), "dr_cluster_fencing[0]", "node is not a field of fence_virsh"),
    (decl(fencing=IPMI[:1]), "dr_cluster_fencing", "no device reaches hvb"),
    (decl(fencing=[IPMI[0] | {"node": "hvq"}, IPMI[1]]), "dr_cluster_fencing[0].node", "the node this BMC powers off"),
    (decl(fencing=[IPMI[0] | {"lanplus": "yes"}, IPMI[1]]), "dr_cluster_fencing[0].lanplus", "true or false"),
    (decl(fencing=[IPMI[0] | {"password": ""}, IPMI[1]]), "dr_cluster_fencing[0].password", "required"),
    (decl(fencing=[{"name": "sbd", "type": "sbd", "devices": ["/dev/sdb"]}]), "dr_cluster_fencing[0].devices[0]",
     "is not a stable path"),
    (decl(fencing=[{"name": "sbd", "type": "sbd", "devices": []}]), "dr_cluster_fencing[0].devices",
     "one to 3 shared disks"),
    (decl(fencing=[{"name": "sbd", "type": "sbd", "devices": ["/dev/disk/by-id/a"], "watchdog": "/dev/null"}]),
     "dr_cluster_fencing[0].watchdog", "is not a watchdog device"),
    (decl(fencing=[{"name": "sbd", "type": "sbd", "devices": ["/dev/disk/by-id/a"]},
                   {"name": "sbd2", "type": "sbd", "devices": ["/dev/disk/by-id/b"]}]), "dr_cluster_fencing[1]",
     "one sbd entry holds every device"),
]


@pytest.mark.parametrize("cfg,name,fragment", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_a_bad_declaration_is_named(cfg, name, fragment):
    problems = f(cfg, HOSTS)
    mine = [p for p in problems if p.startswith(f"{name}: ") or (p.startswith(f"{name}.") and name.endswith("]"))]
    assert mine, problems
    assert any(fragment in p for p in mine), (fragment, problems)
    for p in problems:  # no secret in any message
        for secret in (PASSWORD, VIRSH["password"], "ipmi-pass-1"):
            assert secret not in p, p


def test_the_inventory_check_is_skipped_without_hosts_and_input_must_be_a_mapping():
    moved = with_("nodes.1", {"host": "hvz", "name": "hvb", "addresses": ["192.0.2.12", "198.51.100.12"]})
    assert f(moved, None) == []
    assert f(moved, HOSTS) == ["dr_cluster_nodes[1].host: hvz is not in the inventory"]
    with pytest.raises(AnsibleFilterError, match="must be a mapping"):
        f(["x"])
    assert _config.problems({"nodes": "x", "fencing": "y", "properties": [], "password": PASSWORD,
                             "tiebreaker": "two_node"}) == [
        "dr_cluster_nodes: must be a list of nodes", "dr_cluster_tiebreaker: two_node is for a cluster of two nodes "
        "(there are 0); use qdevice", "dr_cluster_fencing: must be a list of fencing devices",
        "dr_cluster_properties: must be a mapping of pacemaker cluster properties"]


def test_fencing_off_is_what_the_role_warns_about():
    assert _config.fencing_off(decl(fencing=[]))
    assert _config.fencing_off(decl(properties={"stonith-enabled": False}))
    assert not _config.fencing_off(decl())


# ---- real runs of the entry point on the controller --------------------------------------------------------

LAB_VARS = {"dr_cluster_nodes": [{"host": "hva", "addresses": ["192.0.2.11"]},
                                 {"host": "hvb", "addresses": ["192.0.2.12"]}],
            "dr_cluster_tiebreaker": "two_node", "dr_cluster_password": PASSWORD}


def run_entry(tmp_path, extra):
    """The cluster entry point over an inventory of two nodes that are not reachable (SSH to a closed port of the
    loopback: any task that touched a host fails the run at once): only the controller-side checks may run."""
    unreachable = {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh",
                   "ansible_ssh_timeout": 2}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump({"all": {
        "hosts": dict.fromkeys(("hva", "hvb"), unreachable),
        "vars": {"ansible_python_interpreter": sys.executable}}}))
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(LAB_VARS | extra))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "Cluster", "hosts": "all", "gather_facts": False, "vars_files": ["vars.yml"],
        "tasks": [{"name": "Role",
                   "ansible.builtin.include_role": {"name": "kvmops.fleet.dr", "tasks_from": "cluster"}}],
    }], sort_keys=False))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inv.yml", "play.yml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def tasks_run(out):
    return re.findall(r"TASK \[kvmops\.fleet\.dr : ([^\]]+)\]", out)


def test_no_fencing_without_the_lab_acknowledgement_stops_before_any_host(tmp_path):
    res = run_entry(tmp_path, {})
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out
    assert tasks_run(res.stdout)[-1] == "Check the cluster as a whole", tasks_run(res.stdout)
    assert "dr_cluster_fencing: empty: a cluster without fencing" in out
    assert "dr_cluster_fencing_lab_ack: true if this is a lab" in out
    assert PASSWORD not in out
    assert "UNREACHABLE" not in out


def test_bad_ranges_stop_first_naming_each_variable(tmp_path):
    res = run_entry(tmp_path, {"dr_cluster_token": 100, "dr_cluster_name": "a b", "dr_cluster_password": "x y"})
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert tasks_run(res.stdout)[-1] == "Check the role variables against their ranges"
    for name in ("dr_cluster_token: 100", "dr_cluster_name: 'a b'", "dr_cluster_password: (value hidden)"):
        assert name in out, (name, out)
    assert "x y" not in out


def test_a_lab_cluster_is_warned_about_loudly_and_sbd_is_not_built_yet(tmp_path):
    res = run_entry(tmp_path, {"dr_cluster_fencing_lab_ack": True, "dr_cluster_install": False})
    out = res.stdout + res.stderr
    # the run goes on to the hosts (unreachable here) only after the warning
    assert "WARNING - kvmops runs WITHOUT FENCING (dr_cluster_fencing_lab_ack is true)" in out, out
    assert "Never in production" not in out and "never in production" in out
    assert tasks_run(res.stdout).index("WARNING: this cluster runs WITHOUT FENCING") < len(tasks_run(res.stdout))
    assert "UNREACHABLE" in out and res.returncode != 0
    res = run_entry(tmp_path, {"dr_cluster_fencing": [{"name": "sbd", "type": "sbd",
                                                       "devices": ["/dev/disk/by-id/virtio-sbd"]}]})
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert tasks_run(res.stdout)[-1] == "Refuse what the role does not set up yet"
    assert "sbd is validated but not configured by the role yet" in out
    assert "UNREACHABLE" not in out
