"""kvm_bridge_apply's host side with a fake runner: the exact argv it runs, how it reads ip's JSON into the
planner's host shape, which provider it detects, and the refusals before anything is armed. The transaction
itself (timer, files, switch, revert) is proven on a real kernel in tests/integration/vm/test_bridge_networkd.py."""
from __future__ import annotations

import json

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _apply_io

LINKS = [
    {"ifindex": 1, "ifname": "lo", "mtu": 65536, "operstate": "UNKNOWN", "link_type": "loopback",
     "address": "00:00:00:00:00:00", "min_mtu": 0, "max_mtu": 0},
    {"ifindex": 3, "ifname": "eth1", "mtu": 1500, "operstate": "UP", "link_type": "ether", "master": "br0",
     "address": "52:54:00:01:01:01", "min_mtu": 68, "max_mtu": 65535},
    {"ifindex": 7, "ifname": "br0", "mtu": 1500, "operstate": "UP", "link_type": "ether",
     "address": "52:54:00:01:01:01", "linkinfo": {"info_kind": "bridge"}, "min_mtu": 68, "max_mtu": 65535},
]
ADDRS = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
    {"ifname": "br0", "addr_info": [{"family": "inet", "local": "10.213.1.11", "prefixlen": 24, "scope": "global"},
                                    {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
]
ROUTES4 = [{"dst": "default", "gateway": "10.213.1.1", "dev": "br0"}, {"dst": "10.213.1.0/24", "dev": "br0"}]


class Fake:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __call__(self, argv):
        self.calls.append(argv)
        return self.answers.get(tuple(argv), (0, "", ""))


def test_read_host_runs_ip_json_and_builds_the_planner_shape():
    run = Fake({("ip", "-j", "-d", "link", "show"): (0, json.dumps(LINKS), ""),
                ("ip", "-j", "addr", "show"): (0, json.dumps(ADDRS), ""),
                ("ip", "-j", "-4", "route", "show"): (0, json.dumps(ROUTES4), ""),
                ("ip", "-j", "-6", "route", "show"): (0, "[]", "")})
    host = _apply_io.read_host(run)
    assert run.calls == [["ip", "-j", "-d", "link", "show"], ["ip", "-j", "addr", "show"],
                         ["ip", "-j", "-4", "route", "show"], ["ip", "-j", "-6", "route", "show"]]
    assert host["links"]["br0"]["kind"] == "bridge" and host["links"]["eth1"]["master"] == "br0"
    assert host["links"]["br0"]["addresses"] == ["10.213.1.11/24", "fe80::1/64"]
    assert host["links"]["lo"]["addresses"] == [] and host["links"]["lo"]["mac"] is None
    assert host["links"]["eth1"]["mac"] == "52:54:00:01:01:01"
    assert host["routes"][0] == {"dst": "default", "gateway": "10.213.1.1", "dev": "br0"}


def test_an_ip_failure_is_an_error_naming_the_command():
    run = Fake({("ip", "-j", "-d", "link", "show"): (1, "", "Cannot open netlink socket")})
    with pytest.raises(_apply_io.ApplyError, match=r"ip -j -d link show failed \(rc 1\): Cannot open netlink"):
        _apply_io.read_host(run)


@pytest.mark.parametrize("active, want", [
    ({"NetworkManager.service"}, "nm"),
    ({"systemd-networkd.service"}, "networkd"),
    ({"NetworkManager.service", "systemd-networkd.service"}, "nm"),
    (set(), None),
])
def test_detect_provider(active, want):
    def run(argv):
        assert argv[:2] == ["systemctl", "is-active"]
        return (0, "active\n", "") if argv[2] in active else (3, "inactive\n", "")
    assert _apply_io.detect_provider(run) == want


def test_a_pending_change_is_refused_before_anything_is_armed(tmp_path, monkeypatch):
    monkeypatch.setattr(_apply_io, "STATE_DIR", str(tmp_path))
    run = Fake({("systemctl", "is-active", "kvmops-bridge-revert.timer"): (0, "active\n", "")})
    with pytest.raises(_apply_io.ApplyError, match="already pending"):
        _apply_io.begin(run, "t1", {}, {"links": {}}, [], 30)
    assert run.calls == [["systemctl", "is-active", "kvmops-bridge-revert.timer"]]
    assert list(tmp_path.iterdir()) == []


def test_rollback_without_a_pending_change_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(_apply_io, "STATE_DIR", str(tmp_path))
    with pytest.raises(_apply_io.ApplyError, match="nothing to roll back"):
        _apply_io.rollback(Fake({}), "why")


def test_describe_names_files_bridges_links_and_reason():
    text = _apply_io.describe({"txn": "t1", "files": {"/etc/a": None}, "new_bridges": ["br0"],
                               "reconfigure": ["eth1"], "reason": "probes failed"})
    assert text == ("files /etc/a; bridges br0 removed; links eth1 reconfigured "
                    "(transaction t1, reason: probes failed)")


def test_read_host_reads_bonds_vlans_permanent_macs_and_admin_state():
    links = [
        {"ifindex": 4, "ifname": "eth3", "flags": ["BROADCAST", "MULTICAST", "SLAVE", "UP", "LOWER_UP"], "mtu": 1500,
         "master": "bond0", "link_type": "ether", "address": "52:54:00:00:03:01", "min_mtu": 68, "max_mtu": 65535,
         "linkinfo": {"info_slave_kind": "bond", "info_slave_data": {"state": "ACTIVE"}}},
        {"ifindex": 5, "ifname": "eth4", "flags": ["BROADCAST", "MULTICAST", "SLAVE", "UP", "LOWER_UP"], "mtu": 1500,
         "master": "bond0", "link_type": "ether", "address": "52:54:00:00:03:01", "permaddr": "52:54:00:00:04:01",
         "linkinfo": {"info_slave_kind": "bond", "info_slave_data": {"state": "BACKUP"}}},
        {"ifindex": 6, "ifname": "eth5", "flags": ["BROADCAST", "MULTICAST"], "mtu": 1500, "link_type": "ether",
         "address": "52:54:00:00:05:01"},
        {"ifindex": 8, "ifname": "bond0", "flags": ["BROADCAST", "MULTICAST", "MASTER", "UP", "LOWER_UP"],
         "mtu": 1500, "link_type": "ether", "address": "52:54:00:00:03:01",
         "linkinfo": {"info_kind": "bond", "info_data": {"mode": "active-backup", "miimon": 100,
                                                         "active_slave": "eth3"}}},
        {"ifindex": 9, "ifname": "vlan10", "link": "bond0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
         "mtu": 1500, "master": "brv10", "link_type": "ether", "address": "52:54:00:00:03:01",
         "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": 10, "flags": ["REORDER_HDR"]}}},
    ]
    run = Fake({("ip", "-j", "-d", "link", "show"): (0, json.dumps(links), ""),
                ("ip", "-j", "addr", "show"): (0, "[]", ""),
                ("ip", "-j", "-4", "route", "show"): (0, "[]", ""),
                ("ip", "-j", "-6", "route", "show"): (0, "[]", "")})
    host = _apply_io.read_host(run)["links"]
    assert host["eth4"]["mac"] == "52:54:00:00:04:01" and host["eth3"]["mac"] == "52:54:00:00:03:01"
    assert host["eth3"]["up"] is True and host["eth5"]["up"] is False and host["eth3"]["kind"] is None
    assert (host["bond0"]["kind"], host["bond0"]["bond_mode"], host["bond0"]["bond_active"]) == \
        ("bond", "active-backup", "eth3")
    assert (host["vlan10"]["kind"], host["vlan10"]["vlan_id"], host["vlan10"]["vlan_link"], host["vlan10"]["master"]) \
        == ("vlan", 10, "bond0", "brv10")
