"""kvm_bridge_apply's NetworkManager and ifupdown providers on literals: the exact files each renders, the port
takeover in ifupdown's own files, the provider detection, the checks before anything goes live (with a fake runner:
the exact argv), and the switch and revert scripts. The real hosts are in
tests/integration/vm/test_bridge_providers.py."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _apply_io, _ifupdown, _nm, _plan

HOST = {
    "links": {
        "eth0": {"kind": None, "master": None, "mtu": 1500, "mac": "52:54:00:00:00:01", "addresses": ["10.0.2.15/24"]},
        "eth1": {"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 9000, "mac": "52:54:00:aa:01:0b",
                 "addresses": ["10.213.1.11/24"]},
        "eth2": {"kind": None, "master": None, "mtu": 1500, "mac": "52:54:00:aa:02:0b", "addresses": []},
    },
    "routes": [],
}
LAN = {"name": "br0", "ports": ["eth1"], "addresses": ["10.213.1.11/24"]}
FULL = dict(LAN, addresses=["10.213.1.11/24", "2001:db8::11/64"], gateway4="10.213.1.1", gateway6="2001:db8::1",
            dns=["10.213.1.53", "2001:db8::53"], mtu=9000, stp=True, forward_delay=4, vlan_filtering=True,
            routes=[{"to": "10.9.0.0/16", "via": "10.213.1.254", "metric": 50}, {"to": "10.10.0.0/16"},
                    {"to": "2001:db8:9::/48", "via": "2001:db8::fe"}])
NMDIR = "/etc/NetworkManager/system-connections"
DEBIAN = ("# interfaces(5) file used by ifup(8) and ifdown(8)\n"
          "source /etc/network/interfaces.d/*\n\n"
          "auto lo\niface lo inet loopback\n\n"
          "auto eth0 eth1\n"
          "iface eth0 inet static\n    address 10.0.2.15/24\n\n"
          "iface eth1 inet static\n    address 10.213.1.11/24\n    # the lab's link\n    mtu 1500\n\n"
          "iface eth1 inet6 auto\n\n"
          "allow-hotplug eth2\n")


def valid(*bridges):
    return _plan.validate(list(bridges), HOST, var="bridge_bridges", force=True)


# ---- NetworkManager -------------------------------------------------------------------------------------------

def test_nm_keyfiles_of_an_uplink_bridge_exactly():
    files = _nm.render(valid(LAN), HOST)
    bridge_uuid, port_uuid = _nm.conn_uuid("kvmops-br0"), _nm.conn_uuid("kvmops-br0-port-eth1")
    assert files == {
        f"{NMDIR}/kvmops-br0.nmconnection": (
            "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
            "[connection]\nid=kvmops-br0\n"
            f"uuid={bridge_uuid}\n"
            "type=bridge\ninterface-name=br0\nautoconnect=true\n\n"
            "[ethernet]\ncloned-mac-address=52:54:00:aa:01:0b\n\n"
            "[bridge]\nstp=false\nvlan-filtering=false\n\n"
            "[ipv4]\nmethod=manual\naddress1=10.213.1.11/24\n\n"
            "[ipv6]\nmethod=disabled\n"),
        f"{NMDIR}/kvmops-br0-port-eth1.nmconnection": (
            "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
            "[connection]\nid=kvmops-br0-port-eth1\n"
            f"uuid={port_uuid}\n"
            "type=ethernet\ninterface-name=eth1\nmaster=br0\nslave-type=bridge\nautoconnect=true\n"
            "autoconnect-priority=100\n\n"
            "[bridge-port]\n"),
    }


def test_nm_keyfile_with_every_option():
    files = _nm.render(valid(FULL), HOST)
    text = files[f"{NMDIR}/kvmops-br0.nmconnection"]
    assert text.split("[ethernet]\n", 1)[1] == (
        "cloned-mac-address=52:54:00:aa:01:0b\nmtu=9000\n\n"
        "[bridge]\nforward-delay=4\nstp=true\nvlan-filtering=true\n\n"
        "[ipv4]\nmethod=manual\naddress1=10.213.1.11/24\ngateway=10.213.1.1\ndns=10.213.1.53;\n"
        "route1=10.9.0.0/16,10.213.1.254,50\nroute2=10.10.0.0/16\n\n"
        "[ipv6]\nmethod=manual\naddress1=2001:db8::11/64\ngateway=2001:db8::1\ndns=2001:db8::53;\n"
        "route1=2001:db8:9::/48,2001:db8::fe\n")
    port = files[f"{NMDIR}/kvmops-br0-port-eth1.nmconnection"]
    assert port.endswith("autoconnect-priority=100\n\n[ethernet]\nmtu=9000\n\n[bridge-port]\n")


def test_nm_dhcp_a_metric_without_next_hop_and_a_bridge_without_ports():
    b = valid({"name": "br1", "dhcp4": True, "dhcp6": True, "routes": [{"to": "10.8.0.0/16", "metric": 7}]})
    text = _nm.render(b, HOST)[f"{NMDIR}/kvmops-br1.nmconnection"]
    assert "[ipv4]\nmethod=auto\nroute1=10.8.0.0/16,0.0.0.0,7\n\n[ipv6]\nmethod=auto\n" in text
    assert "[ethernet]" not in text and list(_nm.render(b, HOST)) == [f"{NMDIR}/kvmops-br1.nmconnection"]


def test_nm_uuids_are_stable_and_distinct():
    assert _nm.conn_uuid("kvmops-br0") == _nm.conn_uuid("kvmops-br0") != _nm.conn_uuid("kvmops-br1")
    assert _nm.render(valid(FULL), HOST) == _nm.render(valid(FULL), HOST)


def test_nm_rendered_keyfiles_pass_the_keyfile_check():
    for path, text in _nm.render(valid(FULL), HOST).items():
        assert _nm.check_keyfile(text, path) == []


@pytest.mark.parametrize("text, problem", [
    ("[connection]\nid=a\n", "[connection] has no uuid"),
    ("[connection]\nid=a\nuuid=nope\ntype=bridge\ninterface-name=br0\n", "uuid 'nope' is not a UUID"),
    ("[connection]\nid=a\nuuid=6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11\ntype=vpn\ninterface-name=x\n",
     "type 'vpn' is none of bridge, ethernet, bond, vlan"),
    ("id=a\n", "line 1: 'id=a' is neither a [section] nor key=value inside one"),
    ("[connection]\nid=a\n[connection]\n", "section [connection] appears twice"),
    ("[connection]\nid=a\nuuid=6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11\ntype=ethernet\ninterface-name=eth1\n"
     "slave-type=bridge\n", "a bridge port without master"),
    ("[connection]\nid=a\nuuid=6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11\ntype=bridge\ninterface-name=br0\n"
     "[ipv4]\naddress1=bogus\n", "[ipv4] address1=bogus is not an address"),
])
def test_nm_keyfile_check_names_the_problem(text, problem):
    problems = _nm.check_keyfile(text, "/x.nmconnection")
    assert any(problem in p for p in problems), problems


def test_nm_switch_and_revert_lines():
    manifest = {"bridges": ["br0"], "ports": [["br0", "eth1"]], "new_bridges": ["br0"], "free_ports": ["eth1"],
                "reconfigure": ["eth1"], "nm_active": {"eth1": "1f0e-uuid"}}
    assert _nm.switch_lines(manifest) == [
        "nmcli connection reload",
        "nmcli -w 30 connection up id 'kvmops-br0'",
        "nmcli -w 30 connection up id 'kvmops-br0-port-eth1'",
    ]
    assert _nm.revert_lines(manifest) == [
        "nmcli connection reload",
        "nmcli device delete 'br0' 2>/dev/null",
        "ip link delete dev 'br0' 2>/dev/null",
        "ip link set dev 'eth1' nomaster 2>/dev/null",
        "nmcli -w 30 connection up uuid '1f0e-uuid'",
    ]
    # an existing bridge comes back before its ports
    manifest.update(new_bridges=[], reconfigure=["eth1", "br0"], nm_active={"eth1": "u1", "br0": "u0"})
    assert _nm.revert_lines(manifest)[-2:] == ["nmcli -w 30 connection up uuid 'u0'",
                                               "nmcli -w 30 connection up uuid 'u1'"]


# ---- ifupdown -------------------------------------------------------------------------------------------------

def test_ifupdown_bridge_file_and_port_takeover_exactly():
    files = _ifupdown.render(valid(LAN), HOST, {"/etc/network/interfaces": DEBIAN})
    assert files == {
        "/etc/network/interfaces.d/kvmops-br0": (
            "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
            "auto br0\n"
            "iface br0 inet static\n"
            "    address 10.213.1.11/24\n"
            "    bridge_ports eth1\n"
            "    bridge_hw 52:54:00:aa:01:0b\n"
            "    bridge_stp off\n"
            "    bridge_maxwait 0\n"
            "    bridge_vlan_aware no\n"),
        "/etc/network/interfaces": (
            "# interfaces(5) file used by ifup(8) and ifdown(8)\n"
            "source /etc/network/interfaces.d/*\n\n"
            "auto lo\niface lo inet loopback\n\n"
            "# kvmops.fleet.bridge: eth1 is a port of br0\n"
            "#auto eth0 eth1\nauto eth0\n"
            "iface eth0 inet static\n    address 10.0.2.15/24\n\n"
            "# kvmops.fleet.bridge: eth1 is a port of br0 (/etc/network/interfaces.d/kvmops-br0)\n"
            "#iface eth1 inet static\n#    address 10.213.1.11/24\n    # the lab's link\n#    mtu 1500\n\n"
            "# kvmops.fleet.bridge: eth1 is a port of br0 (/etc/network/interfaces.d/kvmops-br0)\n"
            "#iface eth1 inet6 auto\n\n"
            "allow-hotplug eth2\n"),
    }


def test_ifupdown_second_render_changes_nothing():
    first = _ifupdown.render(valid(LAN), HOST, {"/etc/network/interfaces": DEBIAN})
    sources = {"/etc/network/interfaces": first["/etc/network/interfaces"],
               "/etc/network/interfaces.d/kvmops-br0": first["/etc/network/interfaces.d/kvmops-br0"]}
    assert _ifupdown.render(valid(LAN), HOST, sources) == {
        "/etc/network/interfaces.d/kvmops-br0": first["/etc/network/interfaces.d/kvmops-br0"]}


def test_ifupdown_bridge_file_with_every_option():
    files = _ifupdown.render(valid(FULL), HOST, {"/etc/network/interfaces": DEBIAN})
    assert files["/etc/network/interfaces.d/kvmops-br0"] == (
        "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
        "auto br0\n"
        "iface br0 inet static\n"
        "    address 10.213.1.11/24\n"
        "    gateway 10.213.1.1\n"
        "    dns-nameservers 10.213.1.53 2001:db8::53\n"
        "    mtu 9000\n"
        "    bridge_ports eth1\n"
        "    bridge_hw 52:54:00:aa:01:0b\n"
        "    bridge_stp on\n"
        "    bridge_fd 4\n"
        "    bridge_maxwait 0\n"
        "    bridge_vlan_aware yes\n"
        "    up ip route replace 10.9.0.0/16 via 10.213.1.254 metric 50 dev br0\n"
        "    up ip route replace 10.10.0.0/16 dev br0\n"
        "\n"
        "iface br0 inet6 static\n"
        "    address 2001:db8::11/64\n"
        "    gateway 2001:db8::1\n"
        "    up ip -6 route replace 2001:db8:9::/48 via 2001:db8::fe dev br0\n")


def test_ifupdown_dhcp_and_a_bridge_without_ports():
    files = _ifupdown.render(valid({"name": "br1", "dhcp4": True, "dhcp6": True}), HOST,
                             {"/etc/network/interfaces": DEBIAN})
    assert files == {"/etc/network/interfaces.d/kvmops-br1": (
        "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
        "auto br1\niface br1 inet dhcp\n    bridge_ports none\n    bridge_stp off\n    bridge_maxwait 0\n"
        "    bridge_vlan_aware no\n\niface br1 inet6 auto\n    dhcp 1\n")}


def test_ifupdown_refuses_dhcp_beside_static_addresses_and_a_bridge_defined_elsewhere():
    with pytest.raises(_plan.BridgeError, match=r"^bridge_bridges\[0\]: ifupdown cannot combine DHCP with static "
                                                r"IPv4 addresses on one bridge \(10.213.1.11/24\)"):
        _ifupdown.render(valid(dict(LAN, dhcp4=True)), HOST, {}, "bridge_bridges")
    sources = {"/etc/network/interfaces": DEBIAN + "\niface br0 inet manual\n    bridge_ports eth2\n"}
    with pytest.raises(_plan.BridgeError, match=r"^bridge_bridges\[0\]\.name: br0 is defined in "
                                                r"/etc/network/interfaces \(iface br0\)"):
        _ifupdown.render(valid(LAN), HOST, sources, "bridge_bridges")


def test_ifupdown_adds_a_source_line_only_when_nothing_reads_the_bridge_file():
    bare = "auto lo\niface lo inet loopback\n"
    files = _ifupdown.render(valid({"name": "br1"}), HOST, {"/etc/network/interfaces": bare})
    assert files["/etc/network/interfaces"] == (
        bare + "\n# kvmops.fleet.bridge: its bridges' files\nsource /etc/network/interfaces.d/kvmops-*\n")
    # source-directory reads only run-parts names: br1 yes, br.1 no
    directory = "source-directory /etc/network/interfaces.d\n"
    assert list(_ifupdown.render(valid({"name": "br1"}), HOST, {"/etc/network/interfaces": directory})) == [
        "/etc/network/interfaces.d/kvmops-br1"]
    assert "/etc/network/interfaces" in _ifupdown.render(valid({"name": "br.1"}), HOST,
                                                         {"/etc/network/interfaces": directory})
    # a relative source glob is read relative to the file that names it
    assert _ifupdown.is_read("/etc/network/interfaces.d/kvmops-br1",
                             {"/etc/network/interfaces": "source interfaces.d/*\n"})


def test_ifupdown_port_stanzas_are_the_old_definitions():
    text = _ifupdown.port_stanzas({"/etc/network/interfaces": DEBIAN}, {"eth1"})
    assert text == ("# from /etc/network/interfaces\n"
                    "iface eth1 inet static\n    address 10.213.1.11/24\n    # the lab's link\n    mtu 1500\n"
                    "# from /etc/network/interfaces\niface eth1 inet6 auto\n")


def test_ifupdown_switch_and_revert_lines():
    manifest = {"bridges": ["br0"], "new_bridges": ["br0"], "ports_all": ["eth1"], "free_ports": ["eth1"],
                "reconfigure": ["eth1"], "addrgenmode": {"eth1": "0", "eth9": "7"}}
    assert _ifupdown.switch_lines(manifest, "/p/before.interfaces") == [
        "ifdown --force -i '/p/before.interfaces' 'eth1' 2>/dev/null",
        "ifup --force 'br0'",
    ]
    assert _ifupdown.revert_pre_lines(manifest) == ["ifdown --force 'br0' 2>/dev/null"]
    assert _ifupdown.revert_lines(manifest) == [
        "ip link delete dev 'br0' 2>/dev/null",
        "ip link set dev 'eth1' nomaster 2>/dev/null",
        "ip link set dev 'eth1' addrgenmode eui64 2>/dev/null",
        "ifdown --force 'eth1' 2>/dev/null; ifup 'eth1'",
    ]


@pytest.mark.parametrize("provider", ["networkd", "nm", "ifupdown"])
def test_every_provider_s_scripts_are_valid_shell_in_order(provider):
    manifest = {"files": {"/etc/a": None, "/etc/b": "1"}, "bridges": ["br0"], "new_bridges": ["br0"],
                "ports": [["br0", "eth1"]], "ports_all": ["eth1"], "free_ports": ["eth1"], "reconfigure": ["eth1"],
                "nm_active": {"eth1": "u1"}}
    pre, post, switch = (), None, None
    if provider == "nm":
        post, switch = _nm.revert_lines(manifest), _nm.switch_lines(manifest)
    elif provider == "ifupdown":
        pre, post = _ifupdown.revert_pre_lines(manifest), _ifupdown.revert_lines(manifest)
        switch = _ifupdown.switch_lines(manifest, "/p/before.interfaces")
    revert = _plan.revert_script("t1", "/var/lib/kvmops-bridge", manifest, 30, pre, post)
    go = _plan.switch_script("t1", "/var/lib/kvmops-bridge", ["eth1"], switch)
    for text in (revert, go):
        assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0
    # the provider's own lines come before (pre) and after (post) the files are put back
    restore = revert.index("rm -f -- '/etc/a'")
    first = {"networkd": "networkctl reload", "nm": "nmcli connection reload", "ifupdown": "ip link delete"}
    assert revert.index(first[provider]) > restore
    if provider == "ifupdown":
        assert revert.index("ifdown --force 'br0'") < restore
    assert go.index("sleep 1") < go.index({"networkd": "networkctl", "nm": "nmcli", "ifupdown": "ifdown"}[provider])


# ---- the host side: detection and the checks before anything goes live ----------------------------------------

class Fake:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        return self.answers.get(tuple(argv), (0, "", ""))


def systemctl(active):
    return {("systemctl", "is-active", u): (0, "active\n", "") if u in active else (3, "inactive\n", "")
            for u in ("NetworkManager.service", "systemd-networkd.service", "networking.service")}


@pytest.mark.parametrize("active, defined, want", [
    ({"networking.service"}, set(), "ifupdown"),
    ({"NetworkManager.service"}, set(), "nm"),
    ({"NetworkManager.service", "networking.service"}, set(), "nm"),
    ({"NetworkManager.service", "networking.service"}, {"eth1"}, "ifupdown"),
    ({"systemd-networkd.service", "networking.service"}, set(), "networkd"),
])
def test_detect_provider_from_the_active_services_and_the_ports(monkeypatch, active, defined, want):
    monkeypatch.setattr(_apply_io.os.path, "exists", lambda path: path == "/etc/network/interfaces")
    answers = systemctl(active)
    answers.update({("ifquery", p): (0, "", "") if p in defined else (1, "", "unknown interface")
                    for p in ("eth1", "eth2")})
    run = Fake(answers)
    assert _apply_io.detect_provider(run, ["eth2", "eth1"]) == want
    asked = [argv for argv, _data in run.calls if argv[0] == "ifquery"]
    both = len(active) > 1 and "networking.service" in active
    assert asked == ([["ifquery", "eth2"], ["ifquery", "eth1"]] if both else [])


def test_ifupdown_without_its_interfaces_file_is_not_a_provider(monkeypatch):
    monkeypatch.setattr(_apply_io.os.path, "exists", lambda path: False)
    assert _apply_io.detect_provider(Fake(systemctl({"networking.service"}))) is None


def test_nm_active_connections_by_device():
    out = "eth0:5b6c-0\neth1:7f1d-1\nodd\\:name:u2\neth2:\n"
    run = Fake({("nmcli", "-t", "-f", "DEVICE,UUID", "connection", "show", "--active"): (0, out, "")})
    assert _apply_io.nm_active(run) == {"eth0": "5b6c-0", "eth1": "7f1d-1", "odd:name": "u2"}
    failing = Fake({("nmcli", "-t", "-f", "DEVICE,UUID", "connection", "show", "--active"): (8, "", "not running")})
    with pytest.raises(_apply_io.ApplyError, match=r"nmcli connection show --active failed \(rc 8\): not running"):
        _apply_io.nm_active(failing)


def test_nm_files_go_through_nmcli_offline_with_the_keyfile_on_stdin():
    files = _nm.render(valid(LAN), HOST)
    run = Fake({})
    assert _apply_io.validate_files(run, "nm", files) == []
    assert run.calls == [(["nmcli", "--offline", "connection", "modify"], files[p]) for p in sorted(files)]
    refusing = Fake({("nmcli", "--offline", "connection", "modify"):
                     (1, "", "Error: Error writing connection: bridge.forward-delay: value '1' is out of range")})
    problems = _apply_io.validate_files(refusing, "nm", files)
    assert problems[0] == (f"{NMDIR}/kvmops-br0-port-eth1.nmconnection: nmcli --offline refuses it: Error: Error "
                           "writing connection: bridge.forward-delay: value '1' is out of range")
    # an nmcli without --offline: the keyfile checks stand in, and they still catch a broken file
    old = Fake({("nmcli", "--offline", "connection", "modify"): (2, "", "Error: Option '--offline' is unknown")})
    assert _apply_io.validate_files(old, "nm", files) == []
    assert _apply_io.validate_files(old, "nm", {"/x.nmconnection": "[connection]\nid=a\n"})


def test_ifupdown_files_go_through_ifup_no_act_on_the_configuration_as_it_would_be():
    sources = {"/etc/network/interfaces": DEBIAN, "/etc/network/interfaces.d/other": "iface eth2 inet manual\n"}
    files = _ifupdown.render(valid(LAN), HOST, sources)
    seen = {}

    def run(argv, data=None):
        seen["argv"] = argv
        with open(argv[4], encoding="utf-8") as fh:
            seen["text"] = fh.read()
        return (1, "", "ifup: /tmp/x:3: misplaced option")

    problems = _apply_io.validate_files(run, "ifupdown", files, sources, ["br0"])
    assert seen["argv"][:4] == ["ifup", "--no-act", "--force", "-i"] and seen["argv"][5:] == ["br0"]
    assert not os.path.exists(seen["argv"][4])  # the merged file is removed
    text = seen["text"]
    assert "#source /etc/network/interfaces.d/*" in text and "iface eth2 inet manual" in text
    assert "#iface eth1 inet static" in text and "bridge_ports eth1" in text
    assert problems == ["ifup --no-act br0 refuses the new configuration: ifup: /tmp/x:3: misplaced option"]


def test_read_ifupdown_sources_follows_source_lines(tmp_path):
    (tmp_path / "interfaces.d").mkdir()
    (tmp_path / "interfaces.d" / "b").write_text("iface eth2 inet manual\n")
    (tmp_path / "interfaces.d" / "a.conf").write_text("iface eth3 inet manual\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "x").write_text("iface eth4 inet manual\n")
    (tmp_path / "more" / "y.txt").write_text("ignored by run-parts names\n")
    main = tmp_path / "interfaces"
    main.write_text(f"source {tmp_path}/interfaces.d/*\nsource-directory {tmp_path}/more\nauto lo\n")
    got = _apply_io.read_ifupdown_sources(str(main))
    assert list(got) == [str(main), f"{tmp_path}/interfaces.d/a.conf", f"{tmp_path}/interfaces.d/b",
                         f"{tmp_path}/more/x"]


def test_nm_keyfiles_are_written_0600_and_others_0644():
    assert _apply_io.file_mode("nm", f"{NMDIR}/kvmops-br0.nmconnection") == 0o600
    assert _apply_io.file_mode("ifupdown", "/etc/network/interfaces.d/kvmops-br0") == 0o644
    assert _apply_io.file_mode("networkd", "/etc/systemd/network/05-kvmops-br0.netdev") == 0o644


def test_begin_arms_the_provider_s_revert_before_writing(tmp_path, monkeypatch):
    """begin() on a fake runner with the state directory and the target files under tmp_path: NetworkManager's
    active connections go into the manifest, revert.sh reactivates them, the keyfile is written 0600 after the
    timer is armed."""
    monkeypatch.setattr(_apply_io, "STATE_DIR", str(tmp_path / "state"))
    target = tmp_path / "kvmops-br0.nmconnection"
    monkeypatch.setattr(_nm, "NM_DIR", str(tmp_path))
    order = []

    def run(argv, data=None):
        order.append((argv[0], target.exists()))
        if argv[:2] == ["nmcli", "-t"]:
            return (0, "eth0:u0\neth1:u1\n", "")
        if argv[:2] == ["systemctl", "is-active"]:
            return (3, "inactive\n", "")
        return (0, "", "")

    bridges = valid(LAN)
    manifest = _apply_io.begin(run, "t1", {str(target): "x\n"}, HOST, bridges, 30, "nm")
    assert manifest["nm_active"] == {"eth1": "u1"} and manifest["provider"] == "nm"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    arm = [i for i, (cmd, _exists) in enumerate(order) if cmd == "systemd-run"]
    assert order[arm[0]] == ("systemd-run", False) and order[arm[1]] == ("systemd-run", True)
    revert = (tmp_path / "state" / "pending" / "revert.sh").read_text()
    assert f"rm -f -- '{target}'" in revert and "nmcli -w 30 connection up uuid 'u1'" in revert
    saved = json.loads((tmp_path / "state" / "pending" / "manifest.json").read_text())
    assert saved["ports_all"] == ["eth1"] and saved["bridges"] == ["br0"]


# ---- bonds and VLANs ---------------------------------------------------------------------------------------------

LINKS = {"links": dict(
    HOST["links"],
    eth3={"kind": None, "master": None, "mtu": 1500, "mac": "52:54:00:aa:03:0b", "addresses": [], "up": False},
    eth4={"kind": None, "master": None, "mtu": 1500, "mac": "52:54:00:aa:04:0b", "addresses": [], "up": False},
), "routes": []}
BOND = {"name": "bond0", "interfaces": ["eth3", "eth4"], "mode": "active-backup", "miimon": 100, "primary": "eth3"}
VLAN = {"name": "vlan10", "id": 10, "link": "bond0"}
BRV = {"name": "brv10", "ports": ["vlan10"], "addresses": ["10.213.10.11/24"]}
HEAD = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"


def stack(bridges=(BRV,), bonds=(BOND,), vlans=(VLAN,)):
    d = _plan.validate_all(list(bridges), LINKS, "bridge_bridges", bonds=list(bonds), vlans=list(vlans))
    return d["bridges"], d["bonds"], d["vlans"]


def test_nm_keyfiles_of_a_bond_with_a_vlan_under_a_bridge_exactly():
    bridges, bonds, vlans = stack()
    files = _nm.render(bridges, LINKS, bonds, vlans)
    u = _nm.conn_uuid
    assert files == {
        f"{NMDIR}/kvmops-bond0.nmconnection": (
            f"{HEAD}[connection]\nid=kvmops-bond0\nuuid={u('kvmops-bond0')}\ntype=bond\ninterface-name=bond0\n"
            "autoconnect=true\n\n[ethernet]\ncloned-mac-address=52:54:00:aa:03:0b\n\n"
            "[bond]\nmiimon=100\nmode=active-backup\nprimary=eth3\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=disabled\n"),
        f"{NMDIR}/kvmops-bond0-port-eth3.nmconnection": (
            f"{HEAD}[connection]\nid=kvmops-bond0-port-eth3\nuuid={u('kvmops-bond0-port-eth3')}\ntype=ethernet\n"
            "interface-name=eth3\nmaster=bond0\nslave-type=bond\nautoconnect=true\nautoconnect-priority=100\n"),
        f"{NMDIR}/kvmops-bond0-port-eth4.nmconnection": (
            f"{HEAD}[connection]\nid=kvmops-bond0-port-eth4\nuuid={u('kvmops-bond0-port-eth4')}\ntype=ethernet\n"
            "interface-name=eth4\nmaster=bond0\nslave-type=bond\nautoconnect=true\nautoconnect-priority=100\n"),
        f"{NMDIR}/kvmops-vlan10.nmconnection": (
            f"{HEAD}[connection]\nid=kvmops-vlan10\nuuid={u('kvmops-vlan10')}\ntype=vlan\ninterface-name=vlan10\n"
            "master=brv10\nslave-type=bridge\nautoconnect=true\n\n[vlan]\nid=10\nparent=bond0\n\n[bridge-port]\n"),
        f"{NMDIR}/kvmops-brv10.nmconnection": (
            f"{HEAD}[connection]\nid=kvmops-brv10\nuuid={u('kvmops-brv10')}\ntype=bridge\ninterface-name=brv10\n"
            "autoconnect=true\n\n[ethernet]\ncloned-mac-address=52:54:00:aa:03:0b\n\n"
            "[bridge]\nstp=false\nvlan-filtering=false\n\n[ipv4]\nmethod=manual\naddress1=10.213.10.11/24\n\n"
            "[ipv6]\nmethod=disabled\n"),
    }
    for path, text in files.items():
        assert _nm.check_keyfile(text, path) == []


def test_nm_a_bond_as_a_bridge_port_and_a_vlan_with_its_own_mtu():
    bridges, bonds, vlans = stack([{"name": "br1", "ports": ["bond0"]}], [dict(BOND, mtu=1500, mode="balance-alb")],
                                  [{"name": "vlan20", "id": 20, "link": "eth2", "mtu": 1400}])
    files = _nm.render(bridges, LINKS, bonds, vlans)
    bond = files[f"{NMDIR}/kvmops-bond0.nmconnection"]
    assert "master=br1\nslave-type=bridge\n" in bond
    assert bond.endswith("mode=balance-alb\nprimary=eth3\n\n[bridge-port]\n")
    assert "mtu=1500" in bond
    assert f"{NMDIR}/kvmops-br1-port-bond0.nmconnection" not in files
    assert files[f"{NMDIR}/kvmops-vlan20.nmconnection"].endswith(
        "autoconnect=true\n\n[ethernet]\nmtu=1400\n\n[vlan]\nid=20\nparent=eth2\n\n[ipv4]\nmethod=disabled\n\n"
        "[ipv6]\nmethod=disabled\n")


def test_nm_keyfile_check_knows_bonds_and_vlans():
    assert any("a bond port without master" in p for p in _nm.check_keyfile(
        "[connection]\nid=a\nuuid=6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11\ntype=ethernet\ninterface-name=eth3\n"
        "slave-type=bond\n", "/x"))
    assert any("a VLAN without id or parent" in p for p in _nm.check_keyfile(
        "[connection]\nid=a\nuuid=6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11\ntype=vlan\ninterface-name=v\n[vlan]\nid=3\n",
        "/x"))


def test_nm_switch_and_revert_lines_with_bonds_and_vlans():
    manifest = {"bridges": ["brv10"], "ports": [["brv10", "vlan10"], ["brv10", "eth1"]],
                "bonds": [["bond0", ["eth3", "eth4"]]], "vlans": [["vlan10", "bond0"]], "new_bridges": ["brv10"],
                "new_links": ["vlan10", "bond0"], "free_ports": ["eth1", "eth3", "eth4"], "down_links": ["eth3"],
                "reconfigure": ["eth1", "eth3", "eth4"],
                "nm_active": {"eth1": "u1"}}
    up = "nmcli -w 30 connection up id "
    assert _nm.switch_lines(manifest) == [
        "nmcli connection reload", up + "'kvmops-bond0'", up + "'kvmops-bond0-port-eth3'",
        up + "'kvmops-bond0-port-eth4'", up + "'kvmops-brv10'", up + "'kvmops-vlan10'", up + "'kvmops-brv10-port-eth1'"]
    assert _nm.revert_lines(manifest) == [
        "nmcli connection reload",
        "nmcli device delete 'brv10' 2>/dev/null", "ip link delete dev 'brv10' 2>/dev/null",
        "nmcli device delete 'vlan10' 2>/dev/null", "ip link delete dev 'vlan10' 2>/dev/null",
        "nmcli device delete 'bond0' 2>/dev/null", "ip link delete dev 'bond0' 2>/dev/null",
        "ip link set dev 'eth1' nomaster 2>/dev/null", "ip link set dev 'eth3' nomaster 2>/dev/null",
        "ip link set dev 'eth4' nomaster 2>/dev/null", "ip link set dev 'eth3' down 2>/dev/null",
        "nmcli -w 30 connection up uuid 'u1'",
    ]


MEMBERS = DEBIAN + "\nauto eth3\niface eth3 inet manual\n"


def test_ifupdown_files_of_a_bond_with_a_vlan_under_a_bridge_exactly():
    bridges, bonds, vlans = stack()
    files = _ifupdown.render(bridges, LINKS, {"/etc/network/interfaces": MEMBERS}, "bridge_bridges", bonds, vlans)
    d = "/etc/network/interfaces.d/"
    assert files == {
        f"{d}kvmops--bond-bond0": (f"{HEAD}auto bond0\niface bond0 inet manual\n    bond-slaves eth3 eth4\n"
                                   "    bond-mode active-backup\n    bond-miimon 100\n    bond-primary eth3\n"),
        f"{d}kvmops--vlan-vlan10": f"{HEAD}auto vlan10\niface vlan10 inet manual\n    vlan-raw-device bond0\n",
        f"{d}kvmops-brv10": (f"{HEAD}auto brv10\niface brv10 inet static\n    address 10.213.10.11/24\n"
                             "    bridge_ports vlan10\n    bridge_hw 52:54:00:aa:03:0b\n    bridge_stp off\n"
                             "    bridge_maxwait 0\n    bridge_vlan_aware no\n"),
        "/etc/network/interfaces": DEBIAN + (
            "\n# kvmops.fleet.bridge: eth3 is a port of bond0\n#auto eth3\n"
            "# kvmops.fleet.bridge: eth3 is a port of bond0 (/etc/network/interfaces.d/kvmops--bond-bond0)\n"
            "#iface eth3 inet manual\n"),
    }
    # bonds and VLANs sort before every bridge's file: ifup -a brings them up first
    assert sorted(files)[1:] == [f"{d}kvmops--bond-bond0", f"{d}kvmops--vlan-vlan10", f"{d}kvmops-brv10"]


def test_ifupdown_a_vlan_on_a_bridge_goes_into_its_file_after_it():
    bridges, bonds, vlans = stack([{"name": "br1", "ports": ["eth3"]}], [],
                                  [{"name": "br1.5", "id": 5, "link": "br1", "mtu": 1400}])
    files = _ifupdown.render(bridges, LINKS, {"/etc/network/interfaces": DEBIAN}, "bridge_bridges", bonds, vlans)
    assert files["/etc/network/interfaces.d/kvmops-br1"].endswith(
        "    bridge_vlan_aware no\n\nauto br1.5\niface br1.5 inet manual\n    vlan-raw-device br1\n    mtu 1400\n")
    assert not any("--vlan-" in p for p in files)


@pytest.mark.parametrize("bridges, vlans, message", [
    ([], [{"name": "tagged", "id": 10, "link": "eth3"}],
     r"^bridge_vlans\[0\]\.name: ifupdown takes a VLAN's id and link from its name: name it vlan10 or eth3\.10 "
     r"\(not tagged\)"),
    ([{"name": "br1"}, {"name": "br2", "ports": ["br1.5"]}], [{"name": "br1.5", "id": 5, "link": "br1"}],
     r"^bridge_vlans\[0\]\.link: with ifupdown, a VLAN on a bridge \(br1\) cannot be a port of another bridge"),
])
def test_ifupdown_refuses_what_it_cannot_bring_up(bridges, vlans, message):
    b, bo, v = stack(bridges, [], vlans)
    with pytest.raises(_plan.BridgeError, match=message):
        _ifupdown.render(b, LINKS, {"/etc/network/interfaces": DEBIAN}, "bridge_bridges", bo, v)


def test_ifupdown_refuses_a_bond_defined_elsewhere():
    b, bo, v = stack()
    sources = {"/etc/network/interfaces": DEBIAN + "\niface bond0 inet manual\n    bond-slaves eth3\n"}
    with pytest.raises(_plan.BridgeError,
                       match=r"^bridge_bonds\[0\]\.name: bond0 is defined in /etc/network/interfaces"):
        _ifupdown.render(b, LINKS, sources, "bridge_bridges", bo, v)


def test_ifupdown_switch_and_revert_lines_with_bonds_and_vlans():
    manifest = {"bridges": ["brv10", "br1"], "new_bridges": ["brv10"], "new_links": ["vlan10", "bond0"],
                "bonds": [["bond0", ["eth3", "eth4"]]], "vlans": [["vlan10", "bond0"], ["br1.5", "br1"]],
                "ports_all": ["eth1"], "members_all": ["eth3", "eth4"], "free_ports": ["eth3", "eth4"],
                "down_links": ["eth3", "eth4"], "reconfigure": ["br1", "eth1", "eth3", "eth4"]}
    assert _ifupdown.switch_lines(manifest, "/p/b") == [
        "ifdown --force -i '/p/b' 'eth1' 2>/dev/null", "ifdown --force -i '/p/b' 'eth3' 2>/dev/null",
        "ifdown --force -i '/p/b' 'eth4' 2>/dev/null", "ifdown --force -i '/p/b' 'br1' 2>/dev/null",
        "ifdown --force -i '/p/b' 'br1.5' 2>/dev/null",
        "ifup --force 'bond0'", "ifup --force 'vlan10'", "ifup --force 'brv10'", "ifup --force 'br1'",
        "ifup --force 'br1.5'",
    ]
    assert _ifupdown.revert_pre_lines(manifest) == [
        f"ifdown --force '{x}' 2>/dev/null" for x in ("br1.5", "br1", "brv10", "vlan10", "bond0")]
    assert _ifupdown.revert_lines(manifest) == [
        "ip link delete dev 'brv10' 2>/dev/null", "ip link delete dev 'vlan10' 2>/dev/null",
        "ip link delete dev 'bond0' 2>/dev/null", "ip link set dev 'eth3' nomaster 2>/dev/null",
        "ip link set dev 'eth4' nomaster 2>/dev/null", "ip link set dev 'eth3' down 2>/dev/null",
        "ip link set dev 'eth4' down 2>/dev/null",
        "ifdown --force 'br1' 2>/dev/null; ifup 'br1'", "ifdown --force 'br1.5' 2>/dev/null; ifup 'br1.5'",
        "ifdown --force 'eth1' 2>/dev/null; ifup 'eth1'", "ifdown --force 'eth3' 2>/dev/null; ifup 'eth3'",
        "ifdown --force 'eth4' 2>/dev/null; ifup 'eth4'",
    ]


def test_ifupdown_checks_every_declared_link_in_up_order():
    seen = []

    def run(argv, data=None):
        seen.append(argv[-1])
        return (0, "", "")

    assert _apply_io.validate_files(run, "ifupdown", {"/etc/network/interfaces.d/kvmops-brv10": "x\n"}, {},
                                    ["bond0", "vlan10", "brv10"]) == []
    assert seen == ["bond0", "vlan10", "brv10"]


def test_begin_records_bonds_and_vlans_and_the_revert_deletes_what_it_created(tmp_path, monkeypatch):
    """begin() with a bond and a VLAN under a new bridge (networkd, fake runner): the manifest names the new links
    (VLANs before bonds), the members to free and to set down again; revert.sh deletes them after the bridge and
    before networkd reconfigures the members; the switch reconfigures the members."""
    monkeypatch.setattr(_apply_io, "STATE_DIR", str(tmp_path / "state"))
    target = tmp_path / "05-kvmops-bond0.netdev"

    def run(argv, data=None):
        return (3, "inactive\n", "") if argv[:2] == ["systemctl", "is-active"] else (0, "", "")

    bridges, bonds, vlans = stack()
    manifest = _apply_io.begin(run, "t1", {str(target): "x\n"}, LINKS, bridges, 30, "networkd", None, bonds, vlans)
    assert manifest["new_bridges"] == ["brv10"] and manifest["new_links"] == ["vlan10", "bond0"]
    assert manifest["bonds"] == [["bond0", ["eth3", "eth4"]]] and manifest["vlans"] == [["vlan10", "bond0"]]
    assert manifest["ports_all"] == [] and manifest["members_all"] == ["eth3", "eth4"]
    assert manifest["free_ports"] == ["eth3", "eth4"] and manifest["down_links"] == ["eth3", "eth4"]
    revert = (tmp_path / "state" / "pending" / "revert.sh").read_text()
    assert subprocess.run(["sh", "-n"], input=revert, text=True, check=False).returncode == 0
    order = [revert.index(x) for x in (f"rm -f -- '{target}'", "ip link delete dev 'brv10'",
                                       "ip link delete dev 'vlan10'", "ip link delete dev 'bond0'",
                                       "ip link set dev 'eth3' down", "networkctl reconfigure 'eth3' 'eth4'")]
    assert order == sorted(order)
    switch = (tmp_path / "state" / "pending" / "switch.sh").read_text()
    assert "networkctl reconfigure 'eth3' 'eth4'" in switch
    assert _apply_io.describe(dict(manifest, reason="probes failed")) == (
        f"files {target}; bridges brv10 removed; bonds and VLANs vlan10, bond0 removed; links eth3, eth4 "
        "reconfigured (transaction t1, reason: probes failed)")
