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


# ---- bonds and VLANs ---------------------------------------------------------------------------------------------

NICS = {
    "links": dict(
        HOST["links"],
        eth4={"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 9000, "mac": "52:54:00:00:04:01",
              "addresses": [], "up": False},
        eth5={"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 9000, "mac": "52:54:00:00:05:01",
              "addresses": [], "up": False},
        eth6={"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 65535, "mac": "52:54:00:00:06:01",
              "addresses": []},
        vlan99={"kind": "vlan", "master": None, "mtu": 1500, "vlan_id": 99, "vlan_link": "eth6", "addresses": []},
        bondx={"kind": "bond", "master": None, "mtu": 1500, "bond_mode": "balance-rr", "addresses": []},
    ),
    "routes": HOST["routes"],
}
BOND = {"name": "bond0", "interfaces": ["eth4", "eth5"], "mode": "active-backup", "miimon": 100, "primary": "eth4"}
VLAN = {"name": "vlan10", "id": 10, "link": "bond0"}
BRV = {"name": "brv10", "ports": ["vlan10"], "addresses": ["10.213.10.11/24"]}


def decl(bridges=(), bonds=(), vlans=(), **kw):
    return _plan.validate_all(list(bridges), NICS, "bridge_bridges", bonds=bonds if isinstance(bonds, dict) else
                              list(bonds), vlans=list(vlans), **kw)


def test_a_bond_with_a_vlan_under_a_bridge_is_normalized():
    d = decl([BRV], [{"name": "bond0", "interfaces": ["eth4", "eth5"]}], [VLAN])
    assert d["bonds"] == [{"name": "bond0", "interfaces": ["eth4", "eth5"], "mode": "active-backup", "miimon": 100,
                           "primary": None, "mtu": None}]
    assert d["vlans"] == [{"name": "vlan10", "id": 10, "link": "bond0", "mtu": None}]
    assert d["bridges"][0]["ports"] == ["vlan10"]
    # a VLAN on a NIC, and on a declared bridge
    assert decl([{"name": "br1"}], vlans=[{"name": "eth6.7", "id": 7, "link": "eth6"},
                                          {"name": "br1.8", "id": 8, "link": "br1"}])["vlans"][1]["link"] == "br1"


B = "bridge_bonds"
V = "bridge_vlans"
BAD_LINKS = [
    ({"bonds": [dict(BOND, interfaces=["eth4", "eth9"])]}, f"{B}[0].interfaces[1]: eth9 does not exist on this host"),
    ({"bonds": [dict(BOND, interfaces=[])]}, f"{B}[0].interfaces: a bond needs at least one NIC"),
    ({"bridges": [{"name": "br5", "ports": ["eth4"]}], "bonds": [BOND]},
     f"{B}[0].interfaces[0]: eth4 is already a port of bridge_bridges[0] (br5); a NIC joins one bridge or bond"),
    ({"bonds": [BOND, {"name": "bond1", "interfaces": ["eth5"]}]},
     f"{B}[1].interfaces[0]: eth5 is already an interface of {B}[0] (bond0)"),
    ({"bonds": [dict(BOND, interfaces=["eth4", "eth4"])]}, f"{B}[0].interfaces[1]: eth4 is already an interface"),
    ({"bonds": [dict(BOND, interfaces=["eth4", "brx"])]}, f"{B}[0].interfaces[1]: brx is a bridge, not a NIC"),
    ({"bonds": [dict(BOND, interfaces=["eth3"])]}, f"{B}[0].interfaces[0]: eth3 is already enslaved to brx"),
    ({"bonds": [dict(BOND, interfaces=["eth2"], primary=None)]},
     f"{B}[0].interfaces[0]: eth2 holds 198.51.100.5/24, which it would lose in bond bond0"),
    ({"bonds": [dict(BOND, interfaces=["eth0"], primary=None)]},
     f"{B}[0].interfaces[0]: eth0 holds 192.0.2.10/24, the default route via 192.0.2.1, which it would lose"),
    ({"bonds": [dict(BOND, primary="eth6")]}, f"{B}[0].primary: eth6 is not one of {B}[0].interfaces (eth4, eth5)"),
    ({"bonds": [dict(BOND, mode="802.3ad")]},
     f"{B}[0].primary: only active-backup, balance-tlb, balance-alb use a primary interface (the mode is 802.3ad)"),
    ({"bonds": [dict(BOND, mode="round-robin")]}, f"{B}[0].mode: 'round-robin' is not a bonding mode"),
    ({"bonds": [dict(BOND, miimon=0)]}, f"{B}[0].miimon: 0 is out of range 1-2147483647 ms"),
    ({"bonds": [dict(BOND, mtu=67)]}, f"{B}[0].mtu: 67 is out of range 68-65535"),
    ({"bonds": [dict(BOND, mtu=9100)]}, f"{B}[0].mtu: 9100 is outside what eth4 ({B}[0].interfaces[0]) can carry"),
    ({"bonds": [dict(BOND, name="a-very-long-bond")]}, f"{B}[0].name: 'a-very-long-bond' is 16 characters long"),
    ({"bonds": [dict(BOND, name="bond 0")]}, f"{B}[0].name: 'bond 0' is not a valid interface name"),
    ({"bonds": [dict(BOND, name="eth6", interfaces=["eth4"], primary=None)]},
     f"{B}[0].name: eth6 exists on this host and is not a bond (kind ether)"),
    ({"bonds": [dict(BOND, name="bondx")]},
     f"{B}[0].mode: bondx runs balance-rr on this host; the kernel changes a bond's mode only"),
    ({"bonds": [BOND, dict(BOND, interfaces=["eth6"], primary=None)]}, f"{B}[1].name: bond bond0 is declared twice"),
    ({"bridges": [{"name": "bond0"}], "bonds": [BOND]},
     "bridge_bridges[0].name: bond0 is also declared in bridge_bonds[0]; names are unique across bridges, bonds and"),
    ({"bonds": [BOND], "vlans": [dict(VLAN, name="bond0")]}, f"{V}[0].name: bond0 is also declared in {B}[0]"),
    ({"bonds": [{"name": "bond0", "interfaces": ["eth4"], "lacp": "fast"}]}, f"{B}[0]: unknown keys lacp"),
    ({"bonds": {"name": "bond0"}}, f"{B}: a list of bonds is expected"),
    ({"vlans": [{"name": "vlan10", "id": 10}]}, f"{V}[0]: each of the VLANs needs at least name and id and link"),
    ({"vlans": [dict(VLAN, id=4095, link="eth6")]}, f"{V}[0].id: 4095 is out of range 1-4094"),
    ({"vlans": [dict(VLAN, id=0, link="eth6")]}, f"{V}[0].id: 0 is out of range 1-4094"),
    ({"vlans": [dict(VLAN, link="eth9")]},
     f"{V}[0].link: eth9 does not exist on this host and is no declared bond or bridge"),
    ({"vlans": [dict(VLAN, link="brx")]}, f"{V}[0].link: brx is a bridge this declaration does not manage"),
    ({"vlans": [dict(VLAN, link="eth3")]}, f"{V}[0].link: eth3 is enslaved to brx; put the VLAN on brx instead"),
    ({"vlans": [dict(VLAN, link="eth2")]}, f"{V}[0].link: eth2 holds 198.51.100.5/24, which it would lose"),
    ({"bonds": [BOND], "vlans": [dict(VLAN, link="eth4")]},
     f"{V}[0].link: eth4 is an interface of {B}[0] (bond0): frames of a bridge port or bond member are not its own; "
     "put the VLAN on bond0 instead"),
    ({"bridges": [{"name": "br5", "ports": ["eth6"]}], "vlans": [dict(VLAN, link="eth6")]},
     f"{V}[0].link: eth6 is a port of bridge_bridges[0] (br5)"),
    ({"bonds": [BOND], "vlans": [VLAN, dict(VLAN, name="vlan11")]},
     f"{V}[1].id: VLAN 10 on bond0 is also {V}[0] (vlan10)"),
    ({"vlans": [{"name": "vlan20", "id": 20, "link": "eth6"}, {"name": "vlan30", "id": 30, "link": "vlan20"}]},
     f"{V}[1].link: vlan20 is a VLAN; VLANs on VLANs (802.1ad, QinQ) are not supported here"),
    ({"vlans": [dict(VLAN, name="vlan10", link="vlan10")]}, f"{V}[0].link: a VLAN cannot be its own link"),
    ({"bridges": [{"name": "br5", "ports": ["vlan7"]}], "vlans": [{"name": "vlan7", "id": 7, "link": "br5"}]},
     f"{V}[0].link: the declaration loops: br5 -> vlan7 -> br5"),
    ({"bridges": [{"name": "br5", "ports": ["vlan7"]}, {"name": "br6", "ports": ["vlan8"]}],
      "vlans": [{"name": "vlan7", "id": 7, "link": "br6"}, {"name": "vlan8", "id": 8, "link": "br5"}]},
     f"{V}[0].link: the declaration loops: br5 -> vlan7 -> br6 -> vlan8 -> br5"),
    ({"vlans": [dict(VLAN, name="vlan99", id=98, link="eth6")]},
     f"{V}[0].id: vlan99 exists on this host with id 99; a VLAN's id cannot change"),
    ({"bonds": [BOND], "vlans": [dict(VLAN, name="vlan99", id=99)]},
     f"{V}[0].link: vlan99 exists on this host on eth6; a VLAN's link cannot change"),
    ({"vlans": [dict(VLAN, name="eth6", link="eth4")]}, f"{V}[0].name: eth6 exists on this host and is not a VLAN"),
    ({"bonds": [BOND], "vlans": [dict(VLAN, mtu=9000)]},
     f"{V}[0].mtu: 9000 is above the MTU of its link bond0 (1500); a VLAN carries at most its link's MTU"),
    ({"bonds": [dict(BOND, mtu=9000)], "vlans": [dict(VLAN, mtu=9001)]}, f"{V}[0].mtu: 9001 is above the MTU of"),
    ({"vlans": [dict(VLAN, link="eth6", mtu=70000)]}, f"{V}[0].mtu: 70000 is out of range 68-65535"),
    ({"bridges": [dict(BRV, mtu=9000)], "bonds": [BOND], "vlans": [VLAN]},
     "bridge_bridges[0].mtu: 9000 is outside what port vlan10 (bridge_bridges[0].ports[0]) can carry (68-1500)"),
    ({"bridges": [{"name": "br5", "ports": ["bond0"], "mtu": 9100}], "bonds": [BOND]},
     "bridge_bridges[0].mtu: 9100 is outside what port bond0 (bridge_bridges[0].ports[0]) can carry (68-9000)"),
    ({"bridges": [{"name": "br5", "ports": ["bond0"]}, {"name": "br6", "ports": ["bond0"]}], "bonds": [BOND]},
     "bridge_bridges[1].ports[0]: bond0 is already a port of bridge_bridges[0] (br5)"),
    ({"bridges": [{"name": "br5", "ports": ["vlan9"]}]},
     "bridge_bridges[0].ports[0]: vlan9 does not exist on this host and is no declared bond or VLAN"),
    ({"bridges": [{"name": "br5", "ports": ["br6"]}, {"name": "br6"}]},
     "bridge_bridges[0].ports[0]: br6 does not exist on this host"),
]


@pytest.mark.parametrize("kw, message", BAD_LINKS, ids=[m.split(":")[0] + f"#{i}" for i, (_k, m) in
                                                        enumerate(BAD_LINKS)])
def test_bad_bonds_and_vlans_are_refused_naming_the_variable(kw, message):
    with pytest.raises(_plan.BridgeError) as err:
        decl(kw.get("bridges", ()), kw.get("bonds", ()), kw.get("vlans", ()))
    assert message in str(err.value)


def test_a_bond_member_or_vlan_link_holding_an_address_passes_with_force():
    d = decl(bonds=[dict(BOND, interfaces=["eth2"], primary=None)], force=True)
    assert d["bonds"][0]["interfaces"] == ["eth2"]
    assert decl(vlans=[dict(VLAN, link="eth2")], force=True)["vlans"][0]["link"] == "eth2"


def test_an_existing_bond_and_vlan_are_taken_as_they_are():
    d = decl([{"name": "br5", "ports": ["bondx"]}], [{"name": "bondx", "interfaces": ["eth4"], "mode": "balance-rr"}],
             [{"name": "vlan99", "id": 99, "link": "eth6"}])
    assert [b["name"] for b in d["bonds"]] == ["bondx"] and d["vlans"][0]["name"] == "vlan99"


def test_the_variable_names_follow_the_bridges_variable():
    assert _plan.sibling("bridge_bridges", "bonds") == "bridge_bonds"
    assert _plan.sibling("bridges", "vlans") == "vlans" and _plan.sibling("mine", "vlans") == "vlans"
    with pytest.raises(_plan.BridgeError, match=r"^bonds\[0\]\.interfaces\[1\]: eth9 does not exist"):
        _plan.validate_all([], NICS, "bridges", bonds=[dict(BOND, interfaces=["eth4", "eth9"])])


def test_networkd_files_of_a_bond_with_a_vlan_under_a_bridge_exactly():
    d = decl([BRV], [BOND], [VLAN])
    files = _plan.render_networkd(d["bridges"], NICS, d["bonds"], d["vlans"])
    n = "/etc/systemd/network/05-kvmops-"
    head = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n\n"
    assert files == {
        f"{n}brv10.netdev": head + "[NetDev]\nName=brv10\nKind=bridge\nMACAddress=52:54:00:00:04:01\n\n"
                                   "[Bridge]\nSTP=no\nVLANFiltering=no\n",
        f"{n}brv10.network": head + "[Match]\nName=brv10\n\n[Link]\nRequiredForOnline=no\n\n[Network]\nDHCP=no\n"
                                    "ConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
                                    "Address=10.213.10.11/24\n",
        f"{n}bond0.netdev": head + "[NetDev]\nName=bond0\nKind=bond\nMACAddress=52:54:00:00:04:01\n\n"
                                   "[Bond]\nMode=active-backup\nMIIMonitorSec=100ms\n",
        f"{n}bond0.network": head + "[Match]\nName=bond0\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n"
                                    "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\nVLAN=vlan10\n",
        f"{n}bond0-member-eth4.network": head + "[Match]\nName=eth4\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n"
                                                "Bond=bond0\nPrimarySlave=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        f"{n}bond0-member-eth5.network": head + "[Match]\nName=eth5\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n"
                                                "Bond=bond0\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        f"{n}vlan10.netdev": head + "[NetDev]\nName=vlan10\nKind=vlan\n\n[VLAN]\nId=10\n",
        f"{n}vlan10.network": head + "[Match]\nName=vlan10\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n"
                                     "Bridge=brv10\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n",
    }


def test_networkd_vlans_on_a_nic_and_on_a_bridge_and_a_bond_port_with_mtus():
    d = decl([{"name": "br1", "ports": ["bond0"], "mtu": 9000}, {"name": "br2"}],
             [dict(BOND, mtu=9000, mode="balance-rr", primary=None, miimon=250)],
             [{"name": "eth6.7", "id": 7, "link": "eth6", "mtu": 1400}, {"name": "br2.8", "id": 8, "link": "br2"}])
    files = _plan.render_networkd(d["bridges"], NICS, d["bonds"], d["vlans"])
    n = "/etc/systemd/network/05-kvmops-"
    assert sorted(files) == sorted(f"{n}{x}" for x in (
        "br1.netdev", "br1.network", "br2.netdev", "br2.network", "bond0.netdev", "bond0.network",
        "bond0-member-eth4.network", "bond0-member-eth5.network", "eth6.7.netdev", "eth6.7.network", "br2.8.netdev",
        "br2.8.network", "vlanlink-eth6.network"))
    assert "MTUBytes=9000\n\n[Bond]\nMode=balance-rr\nMIIMonitorSec=250ms\n" in files[f"{n}bond0.netdev"]
    assert "[Link]\nRequiredForOnline=no\nMTUBytes=9000\n\n[Network]\nBridge=br1\n" in files[f"{n}bond0.network"]
    assert "PrimarySlave" not in files[f"{n}bond0-member-eth4.network"]
    assert "MACAddress=52:54:00:00:04:01" in files[f"{n}br1.netdev"]  # the bond's first NIC, through the bond
    assert "Address=" not in files[f"{n}br2.network"] and files[f"{n}br2.network"].endswith("VLAN=br2.8\n")
    assert "Kind=vlan\nMTUBytes=1400\n\n[VLAN]\nId=7\n" in files[f"{n}eth6.7.netdev"]
    assert files[f"{n}vlanlink-eth6.network"].endswith(
        "[Match]\nName=eth6\n\n[Link]\nRequiredForOnline=no\n\n[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        "ConfigureWithoutCarrier=yes\nVLAN=eth6.7\n")


def test_networkd_refuses_two_links_in_one_file():
    d = decl([{"name": "br0", "ports": ["eth6"]}], vlans=[{"name": "br0-port-eth6", "id": 5, "link": "br0"}])
    with pytest.raises(_plan.BridgeError, match=r"two declared links would share the file .*05-kvmops-br0-port-eth6"):
        _plan.render_networkd(d["bridges"], NICS, d["bonds"], d["vlans"])


def test_live_differences_of_bonds_and_vlans():
    d = decl([BRV], [BOND], [VLAN])
    assert _plan.live_differences(d["bridges"], NICS, d["bonds"], d["vlans"]) == [
        "bond bond0 does not exist", "VLAN vlan10 does not exist", "bridge brv10 does not exist"]
    links = {"bond0": {"kind": "bond", "mtu": 1500}, "eth4": {"master": "bond0"}, "eth5": {"master": None},
             "vlan10": {"kind": "vlan", "mtu": 1500, "master": "brv10"},
             "brv10": {"kind": "bridge", "mtu": 1500, "addresses": ["10.213.10.11/24"]}}
    missing = _plan.live_differences(d["bridges"], {"links": links}, d["bonds"], d["vlans"])
    assert missing == ["eth5 is not in bond bond0"]
    links["eth5"]["master"] = "bond0"
    assert _plan.live_differences(d["bridges"], {"links": links}, d["bonds"], d["vlans"]) == []


def test_mac_of_follows_the_declaration_down_to_a_nic():
    d = decl([BRV], [BOND], [VLAN])
    args = (NICS, d["bridges"], d["bonds"], d["vlans"])
    assert _plan.mac_of("brv10", *args) == _plan.mac_of("vlan10", *args) == _plan.mac_of("bond0", *args) == \
        "52:54:00:00:04:01"
    assert _plan.mac_of("eth9", *args) is None


def test_the_networkd_revert_deletes_new_bonds_and_vlans_and_sets_members_down_again():
    manifest = {"files": {"/etc/systemd/network/05-kvmops-bond0.netdev": None}, "new_bridges": ["brv10"],
                "new_links": ["vlan10", "bond0"], "free_ports": ["eth4", "eth5"], "down_links": ["eth4", "eth5"],
                "reconfigure": ["eth4", "eth5"]}
    text = _plan.revert_script("t1", "/var/lib/kvmops-bridge", manifest, 45)
    assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0
    assert _plan.networkd_revert_lines(manifest) == [
        "networkctl reload",
        "ip link delete dev 'brv10' 2>/dev/null",
        "ip link delete dev 'vlan10' 2>/dev/null",
        "ip link delete dev 'bond0' 2>/dev/null",
        "ip link set dev 'eth4' nomaster 2>/dev/null",
        "ip link set dev 'eth5' nomaster 2>/dev/null",
        "ip link set dev 'eth4' down 2>/dev/null",
        "ip link set dev 'eth5' down 2>/dev/null",
        "networkctl reconfigure 'eth4' 'eth5'",
    ]
