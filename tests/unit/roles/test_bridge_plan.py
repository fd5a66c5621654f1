"""kvmops.fleet.bridge's pure planner (plugins/module_utils/bridge/_plan.py) on literals: every bad input of the
role refused naming the variable, the uplink guard, the systemd-networkd files, what the kernel lacks, and the
revert script. The real host behaviour is proven in tests/integration/vm/test_bridge_networkd.py."""
from __future__ import annotations

import subprocess

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _validate
from ansible_collections.kvmops.fleet.plugins.modules import kvm_bridge_apply as mod

HOST = {
    "links": {
        "lo": {"kind": None, "master": None, "mtu": 65536, "addresses": ["127.0.0.1/8"]},
        "eth0": {"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 9000, "mac": "52:54:00:00:00:01",
                 "addresses": ["192.0.2.10/24", "fe80::1/64"]},
        "eth1": {"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 65535, "addresses": []},
        "eth2": {"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 65535,
                 "addresses": ["198.51.100.5/24"]},
        "eth3": {"kind": None, "master": "brx", "mtu": 1500, "addresses": []},
        "brx": {"kind": "bridge", "master": None, "mtu": 1500, "addresses": []},
    },
    "routes": [{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}],
}
UPLINK = {"name": "br0", "ports": ["eth0"], "addresses": ["192.0.2.10/24"], "gateway4": "192.0.2.1"}


def check(bridges, **kw):
    return _plan.validate(bridges, HOST, var="bridge_bridges", **kw)


def test_a_valid_uplink_conversion_is_normalized():
    (b,) = check([UPLINK])
    assert b["ports"] == ["eth0"] and b["dhcp4"] is False and b["mtu"] is None and b["routes"] == []
    assert set(b) == set(_plan.KEYS)


@pytest.mark.parametrize("bridges, message", [
    ([{"name": "br0", "ports": ["eth9"]}], "bridge_bridges[0].ports[0]: eth9 does not exist on this host"),
    ([{"name": "br0", "ports": ["eth1"]}, {"name": "br1", "ports": ["eth1"]}],
     "bridge_bridges[1].ports[0]: eth1 is already a port of bridge_bridges[0] (br0)"),
    ([{"name": "br0", "ports": ["eth1", "eth1"]}], "bridge_bridges[0].ports[1]: eth1 is already a port"),
    ([{"name": "br0", "ports": ["eth3"]}], "bridge_bridges[0].ports[0]: eth3 is already enslaved to brx"),
    ([{"name": "br0", "ports": ["brx"]}], "bridge_bridges[0].ports[0]: brx is a bridge"),
    ([{"name": "eth1"}], "bridge_bridges[0].name: eth1 exists on this host and is not a bridge"),
    ([{"name": "br0"}, {"name": "br0"}], "bridge_bridges[1].name: bridge br0 is declared twice"),
    ([{"name": "a-very-long-name"}], "bridge_bridges[0].name: 'a-very-long-name' is 16 characters long"),
    ([{"name": "br 0"}], "bridge_bridges[0].name: 'br 0' is not a valid interface name"),
    ([{"name": "br0", "addresses": ["10.0.0.1/24"]}, {"name": "br1", "addresses": ["10.0.0.200/16"]}],
     "bridge_bridges[1].addresses[0]: 10.0.0.200/16 overlaps 10.0.0.1/24"),
    ([{"name": "br0", "addresses": ["10.0.0.1/24", "10.0.0.1/25"]}], "10.0.0.1 is declared twice"),
    ([{"name": "br0", "addresses": ["198.51.100.9/24"]}],
     "bridge_bridges[0].addresses[0]: 198.51.100.9/24 overlaps 198.51.100.5/24 on eth2"),
    ([{"name": "br0", "addresses": ["10.0.0.1"]}], "bridge_bridges[0].addresses[0]: '10.0.0.1' has no prefix"),
    ([{"name": "br0", "addresses": ["10.0.0.0/24"]}], "is the network or broadcast address"),
    ([{"name": "br0", "addresses": ["bogus/24"]}], "bridge_bridges[0].addresses[0]: 'bogus/24' is not an address"),
    ([{"name": "br0", "mtu": 67}], "bridge_bridges[0].mtu: 67 is out of range 68-65535"),
    ([{"name": "br0", "mtu": 65536}], "bridge_bridges[0].mtu: 65536 is out of range 68-65535"),
    ([{"name": "br0", "mtu": 1000, "addresses": ["2001:db8::1/64"]}], "out of range 1280-65535 (IPv6 needs"),
    ([dict(UPLINK, mtu=9100)], "bridge_bridges[0].mtu: 9100 is outside what port eth0 (bridge_bridges[0].ports[0]) "
                               "can carry (68-9000)"),
    ([{"name": "br0", "forward_delay": 1}], "bridge_bridges[0].forward_delay: 1 is out of range 2-30"),
    ([{"name": "br0", "forward_delay": 31}], "bridge_bridges[0].forward_delay: 31 is out of range 2-30"),
    ([dict(UPLINK, gateway4="203.0.113.1")], "bridge_bridges[0].gateway4: 203.0.113.1 is in none of"),
    ([dict(UPLINK, gateway4="2001:db8::1")], "bridge_bridges[0].gateway4: 2001:db8::1 is not an IPv4 address"),
    ([dict(UPLINK, routes=[{"to": "10.1.0.1/16"}])], "bridge_bridges[0].routes[0].to: '10.1.0.1/16' is not a network"),
    ([dict(UPLINK, routes=[{"to": "10.1.0.0/16", "via": "2001:db8::1"}])], "routes[0].via: 2001:db8::1 is not an IPv4"),
    ([dict(UPLINK, dns=["dns.example"])], "bridge_bridges[0].dns[0]: 'dns.example' is not an IP address"),
    ([{"name": "br0", "vlan": 5}], "bridge_bridges[0]: unknown keys vlan"),
    ({"name": "br0"}, "bridge_bridges: a list of bridges is expected"),
])
def test_bad_input_is_refused_naming_the_variable(bridges, message):
    with pytest.raises(_plan.BridgeError) as err:
        check(bridges)
    assert message in str(err.value)


def test_an_uplink_that_would_lose_its_address_or_default_route_is_refused_unless_forced():
    with pytest.raises(_plan.BridgeError, match=r"ports\[0\]: eth0 holds 192.0.2.10/24, which br0 would not keep"):
        check([{"name": "br0", "ports": ["eth0"]}])
    with pytest.raises(_plan.BridgeError, match=r"gateway4: the default route via 192.0.2.1 leaves through eth0"):
        check([{"name": "br0", "ports": ["eth0"], "addresses": ["192.0.2.10/24"]}])
    assert check([{"name": "br0", "ports": ["eth0"]}], force=True)[0]["ports"] == ["eth0"]
    assert check([{"name": "br0", "ports": ["eth0"], "dhcp4": True}])  # DHCP brings them back
    assert check([UPLINK])


def test_networkd_files_of_an_uplink_bridge():
    (b,) = check([dict(UPLINK, mtu=9000, stp=True, forward_delay=4, dns=["192.0.2.53"],
                       routes=[{"to": "10.9.0.0/16", "via": "192.0.2.254", "metric": 50}])])
    files = _plan.render_networkd([b], HOST)
    d = "/etc/systemd/network/05-kvmops-br0"
    assert sorted(files) == [f"{d}-port-eth0.network", f"{d}.netdev", f"{d}.network"]
    netdev = files[f"{d}.netdev"].splitlines()
    assert netdev[1:] == ["", "[NetDev]", "Name=br0", "Kind=bridge", "MACAddress=52:54:00:00:00:01", "MTUBytes=9000",
                          "", "[Bridge]", "STP=yes",
                          "ForwardDelaySec=4", "VLANFiltering=no"]
    net = files[f"{d}.network"]
    for line in ("Name=br0", "MTUBytes=9000", "DHCP=no", "LinkLocalAddressing=no", "Address=192.0.2.10/24",
                 "Gateway=192.0.2.1", "DNS=192.0.2.53", "[Route]\nDestination=10.9.0.0/16\nGateway=192.0.2.254\n"
                 "Metric=50"):
        assert line in net
    port = files[f"{d}-port-eth0.network"]
    assert "Name=eth0" in port and "Bridge=br0" in port and "MTUBytes=9000" in port and "\nAddress=" not in port


def test_networkd_dhcp_and_ipv6():
    (b,) = check([{"name": "br0", "dhcp4": True, "dhcp6": True, "addresses": ["2001:db8::5/64"],
                   "gateway6": "2001:db8::1"}])
    net = _plan.render_networkd([b], HOST)["/etc/systemd/network/05-kvmops-br0.network"]
    assert "DHCP=yes" in net and "LinkLocalAddressing=ipv6" in net and "IPv6AcceptRA=yes" in net
    assert "Gateway=2001:db8::1" in net


def test_live_differences():
    (b,) = check([UPLINK])
    assert _plan.live_differences([b], HOST) == ["bridge br0 does not exist"]
    links = {"eth0": {"master": "br0"}, "br0": {"kind": "bridge", "mtu": 1500, "addresses": ["192.0.2.10/24"]}}
    assert _plan.live_differences([b], {"links": links}) == []
    links["eth0"]["master"] = None
    links["br0"]["addresses"] = []
    assert _plan.live_differences([b], {"links": links}) == ["eth0 is not a port of br0", "192.0.2.10/24 is not on br0"]


def test_diff_files():
    assert _plan.diff_files({"a": "1", "b": None}, {"a": "1", "b": "x", "c": "y"}) == ["b", "c"]


def test_revert_script_is_valid_shell_and_restores_every_file():
    manifest = {"files": {"/etc/systemd/network/05-kvmops-br0.netdev": None,
                          "/etc/systemd/network/05-kvmops-br 0's.network": "1"},
                "new_bridges": ["br0"], "free_ports": ["eth1"], "reconfigure": ["eth1"]}
    text = _plan.revert_script("t1", "/var/lib/kvmops-bridge", manifest, 45)
    assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0
    assert "rm -f -- '/etc/systemd/network/05-kvmops-br0.netdev'" in text
    assert "cp -p -- \"$dir/files/1\" '/etc/systemd/network/05-kvmops-br 0'\"'\"'s.network'" in text
    assert text.index("networkctl reload") < text.index("ip link delete dev 'br0'")
    assert "networkctl reconfigure 'eth1'" in text and "within 45 s" in text
    switch = _plan.switch_script("t1", "/var/lib/kvmops-bridge", ["eth1"])
    assert subprocess.run(["sh", "-n"], input=switch, text=True, check=False).returncode == 0


def test_every_module_option_has_a_rule_and_range_errors_name_the_role_variable():
    assert _validate.unruled(mod.ARGUMENT_SPEC, mod.RULES) == ([], [])
    params = {k: v.get("default") for k, v in mod.ARGUMENT_SPEC.items()}
    params["bridges"] = [{"name": "br0", "mtu": 70000}]
    with pytest.raises(_validate.OptionError, match=r"^bridges\[0\]\.mtu: must be from 68 to 65535, got 70000"):
        _validate.check(params, mod.ARGUMENT_SPEC, mod.RULES)
