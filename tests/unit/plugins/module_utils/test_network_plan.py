"""network/_plan.py: forward-mode-bridge networks declared -> libvirt operations, diffs and refusals (pure)."""
from __future__ import annotations

import re

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import OptionError
from ansible_collections.kvmops.fleet.plugins.module_utils.network import _plan

UUID = "0b0c8f5e-6b2e-4a57-8f0e-3f0b7d8e1a01"
# as libvirt 9.0 formats a forward-mode-bridge network (inactive and live are the same, bar connections)
BR0 = f"""<network>
  <name>br0</name>
  <uuid>{UUID}</uuid>
  <forward mode='bridge'/>
  <bridge name='br0'/>
</network>
"""
BR0_LIVE_IN_USE = BR0.replace("<network>", "<network connections='2'>")
# libvirt's default NAT network, as libvirt 9.0 formats it
DEFAULT = """<network>
  <name>default</name>
  <uuid>5f1e7e2c-9a8b-4a5b-8c6d-0e1f2a3b4c5d</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:0a:0b:0c'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
"""
ISOLATED = "<network><name>iso</name><bridge name='virbr9'/></network>"


def want(name="br0", bridge="br0", autostart=True, state="present"):
    return {"name": name, "bridge": bridge, "autostart": autostart, "state": state}


def have(xml=BR0, active=True, persistent=True, autostart=True, live=None):
    return {"exists": True, "active": active, "persistent": persistent, "autostart": autostart,
            "inactive_xml": xml if persistent else None, "live_xml": (live or xml) if active else None}


def kinds(result):
    return [(op["op"], op["name"]) for op in result["ops"]]


# ---- rendering and comparing -----------------------------------------------------------------------------------


def test_render_is_the_minimal_definition_as_libvirt_formats_it():
    assert _plan.render("br0", "br0", UUID) == BR0
    assert "<uuid>" not in _plan.render("br0", "br0")
    assert _plan.differences(_plan.render("x", "br0"), "br0") == []


def test_render_escapes():
    xml = _plan.render("a'b&", "br0")
    assert _plan.parse(xml)["name"] == "a'b&"


def test_parse():
    net = _plan.parse(DEFAULT)
    assert (net["name"], net["forward_mode"], net["bridge"], net["connections"]) == ("default", "nat", "virbr0", 0)
    assert _plan.parse(BR0_LIVE_IN_USE)["connections"] == 2
    assert _plan.parse(ISOLATED)["forward_mode"] is None
    assert _plan.parse("<network><forward/></network>")["forward_mode"] == "nat"


@pytest.mark.parametrize("xml", ["<network", "<domain/>"])
def test_parse_refuses_what_is_not_a_network(xml):
    with pytest.raises(_plan.NetworkError, match="cannot read the network XML"):
        _plan.parse(xml)


@pytest.mark.parametrize("xml,bridge,expected", [
    (BR0, "br0", []),
    (BR0_LIVE_IN_USE, "br0", []),
    (BR0, "br1", ["bridge is 'br0', declared 'br1'"]),
    (DEFAULT, "virbr0", ["forward mode is nat, declared bridge", "<forward> has <nat>, not declared",
                         "<bridge delay='0'> is not declared", "<bridge stp='on'> is not declared",
                         "it has <mac>, not declared", "it has <ip>, not declared"]),
    (ISOLATED, "virbr9", ["forward mode is none (isolated), declared bridge"]),
    ("<network><name>x</name><forward mode='bridge'/></network>", "br0", ["it names no bridge"]),
    ("<network><name>x</name><forward mode='route'/><bridge name='br0'/></network>", "br0",
     ["forward mode is route, declared bridge"]),
    ("<network><name>x</name><forward mode='bridge'><interface dev='eth0'/></forward><bridge name='br0'/></network>",
     "br0", ["<forward> has <interface>, not declared"]),
    ("<network><name>x</name><forward mode='bridge'/><bridge name='br0'/><virtualport type='openvswitch'/>"
     "</network>", "br0", ["it has <virtualport>, not declared"]),
    ("<network ipv6='yes'><name>x</name><forward mode='bridge'/><bridge name='br0' macTableManager='libvirt'/>"
     "<portgroup name='pg'/></network>", "br0",
     ["<network ipv6='yes'> is not declared", "<bridge macTableManager='libvirt'> is not declared",
      "it has <portgroup>, not declared"]),
])
def test_differences(xml, bridge, expected):
    assert _plan.differences(xml, bridge) == expected


# ---- present ---------------------------------------------------------------------------------------------------


def test_new_network_is_defined_started_and_autostarted():
    result = _plan.plan([want()], {})
    assert kinds(result) == [("define", "br0"), ("start", "br0"), ("autostart", "br0")]
    assert result["changes"] == ["defined network br0", "started network br0", "autostart of network br0 on"]
    assert result["ops"][0]["xml"] == _plan.render("br0", "br0")
    assert result["diff"] == [{"before_header": "network br0", "after_header": "network br0", "before": "",
                               "after": _plan.render("br0", "br0")}]
    assert result["refusals"] == []
    assert result["networks"] == [{"name": "br0", "state": "present", "bridge": "br0", "exists": True,
                                   "active": True, "autostart": True, "changes": result["changes"],
                                   "refused": False}]


def test_new_network_without_autostart():
    assert kinds(_plan.plan([want(autostart=False)], {})) == [("define", "br0"), ("start", "br0")]


def test_matching_network_is_left_alone():
    result = _plan.plan([want()], {"br0": have(live=BR0_LIVE_IN_USE)})
    assert result["ops"] == [] and result["diff"] == [] and result["changes"] == []
    assert result["networks"][0]["exists"] and result["networks"][0]["changes"] == []


@pytest.mark.parametrize("state,expected", [
    ({"active": False}, [("start", "br0")]),
    ({"autostart": False}, [("autostart", "br0")]),
    ({"active": False, "autostart": False}, [("start", "br0"), ("autostart", "br0")]),
])
def test_matching_network_gets_only_what_it_lacks(state, expected):
    result = _plan.plan([want()], {"br0": have(**state)})
    assert kinds(result) == expected and result["diff"] == []


def test_autostart_off():
    result = _plan.plan([want(autostart=False)], {"br0": have()})
    assert result["changes"] == ["autostart of network br0 off"]
    assert result["networks"][0]["autostart"] is False


def test_transient_matching_network_is_defined_with_its_uuid_not_restarted():
    result = _plan.plan([want()], {"br0": have(persistent=False, autostart=False)})
    assert kinds(result) == [("define", "br0"), ("autostart", "br0")]
    assert result["ops"][0]["xml"] == BR0 and result["changes"][0] == "redefined network br0"


def test_differing_network_is_refused_naming_every_difference():
    result = _plan.plan([want(), want("default", "virbr0")], {"br0": have(), "default": have(DEFAULT)})
    assert len(result["refusals"]) == 1
    msg = result["refusals"][0]
    assert msg.startswith("networks[1]: network 'default' exists and its definition differs: forward mode is nat, "
                          "declared bridge; ")
    assert "it has <ip>, not declared" in msg and "with force it is redefined" in msg
    assert result["networks"][1]["refused"] is True


def test_refusal_says_the_network_is_in_use():
    result = _plan.plan([want(bridge="br1")], {"br0": have(live=BR0_LIVE_IN_USE)}, label="bridge_libvirt_networks")
    assert result["refusals"] == [
        "bridge_libvirt_networks[0]: network 'br0' exists and its definition differs: bridge is 'br0', declared "
        "'br1'; 2 domain interface(s) use it now. Refusing to change it; with force it is redefined as declared "
        "and, if active, stopped and started again"]


def test_force_redefines_keeping_the_uuid_and_restarts_an_active_network():
    result = _plan.plan([want(bridge="br1")], {"br0": have()}, force=True)
    assert kinds(result) == [("define", "br0"), ("stop", "br0"), ("start", "br0")]
    assert result["ops"][0]["xml"] == BR0.replace("'br0'/>", "'br1'/>")
    assert result["changes"] == ["redefined network br0", "stopped network br0", "started network br0"]
    assert result["diff"][0]["before"] == BR0 and "<bridge name='br1'/>" in result["diff"][0]["after"]


def test_force_on_an_inactive_network_starts_it():
    result = _plan.plan([want(bridge="br1")], {"br0": have(active=False)}, force=True)
    assert kinds(result) == [("define", "br0"), ("start", "br0")]


def test_force_replaces_a_nat_network():
    result = _plan.plan([want("default", "virbr0")], {"default": have(DEFAULT)}, force=True)
    assert result["refusals"] == []
    assert kinds(result) == [("define", "default"), ("stop", "default"), ("start", "default")]
    assert "5f1e7e2c-9a8b-4a5b-8c6d-0e1f2a3b4c5d" in result["ops"][0]["xml"]


def test_running_network_that_differs_from_its_matching_definition():
    live = BR0.replace("'br0'/>", "'brX'/>")
    result = _plan.plan([want()], {"br0": have(live=live)})
    assert result["refusals"][0].startswith(
        "networks[0]: network 'br0' exists and the running network (its definition matches; it was not restarted) "
        "differs: bridge is 'brX', declared 'br0'")
    forced = _plan.plan([want()], {"br0": have(live=live)}, force=True)
    assert kinds(forced) == [("stop", "br0"), ("start", "br0")]


# ---- absent ----------------------------------------------------------------------------------------------------


def test_absent_stops_and_undefines_a_bridge_network():
    result = _plan.plan([want(bridge=None, state="absent")], {"br0": have()})
    assert kinds(result) == [("stop", "br0"), ("undefine", "br0")]
    assert result["diff"][0]["before"] == BR0 and result["diff"][0]["after"] == ""
    assert result["networks"][0]["exists"] is False


@pytest.mark.parametrize("state,expected", [
    ({"active": False}, [("undefine", "br0")]),
    ({"persistent": False, "autostart": False}, [("stop", "br0")]),
])
def test_absent_inactive_or_transient(state, expected):
    assert kinds(_plan.plan([want(bridge=None, state="absent")], {"br0": have(**state)})) == expected


def test_absent_and_missing_is_nothing():
    result = _plan.plan([want(state="absent")], {})
    assert result["ops"] == [] and result["diff"] == [] and result["refusals"] == []


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("xml,mode", [(DEFAULT, "nat"), (ISOLATED, "none (isolated)"),
                                      ("<network><name>r</name><forward mode='route'/></network>", "route")])
def test_absent_refuses_other_forward_modes_even_with_force(xml, mode, force):
    result = _plan.plan([want("default", None, state="absent")], {"default": have(xml)}, force=force)
    assert result["ops"] == []
    assert result["refusals"] == [
        f"networks[0]: network 'default' has forward mode {mode}, not bridge: refusing to remove it (this module "
        "removes only networks of forward mode bridge, never a NAT, routed, isolated or other network, even with "
        "force)"]


def test_absent_refuses_a_network_on_another_bridge_than_given():
    result = _plan.plan([want(bridge="br1", state="absent")], {"br0": have()})
    assert result["refusals"] == [
        "networks[0].bridge: network 'br0' is on bridge br0, not 'br1': refusing to remove it (leave out bridge to "
        "remove it whatever its bridge)"]
    same = _plan.plan([want(bridge="br0", state="absent")], {"br0": have()})
    assert kinds(same) == [("stop", "br0"), ("undefine", "br0")]


def test_absent_in_use_needs_force():
    current = {"br0": have(live=BR0_LIVE_IN_USE)}
    result = _plan.plan([want(state="absent")], current)
    assert result["refusals"] == [
        "networks[0]: network 'br0' is in use by 2 domain interface(s): refusing to remove it (their domains would "
        "not start again); with force it is removed anyway"]
    assert kinds(_plan.plan([want(state="absent")], current, force=True)) == [("stop", "br0"), ("undefine", "br0")]


def test_declared_order_is_kept_and_one_refusal_is_reported_with_the_plan():
    result = _plan.plan([want("a", "br0"), want("default", None, state="absent"), want("b", "br1")],
                        {"default": have(DEFAULT)})
    assert [name for _op, name in kinds(result)] == ["a", "a", "a", "b", "b", "b"]
    assert result["refusals"][0].startswith("networks[1]: network 'default' has forward mode nat")


# ---- verify ----------------------------------------------------------------------------------------------------


def test_verify():
    assert _plan.verify([want()], {"br0": have()}) == []
    assert _plan.verify([want(state="absent")], {"br0": {"exists": False}}) == []
    assert _plan.verify([want(), want("gone", state="absent")],
                        {"br0": have(active=False, autostart=False), "gone": have()}) == [
        "network br0 is not active", "network br0: autostart is off", "network gone still exists"]
    assert _plan.verify([want(bridge="br1")], {"br0": have()}) == [
        "network br0: its definition differs: bridge is 'br0', declared 'br1'",
        "network br0: its running network differs: bridge is 'br0', declared 'br1'"]
    assert _plan.verify([want()], {}) == ["network br0 does not exist"]
    assert _plan.verify([want()], {"br0": have(persistent=False, autostart=False)}) == [
        "network br0 is not defined (transient)", "network br0: autostart is off"]


# ---- the rule between entries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,msg", [
    ([want("a", "br0"), want("a", "br1")], "networks[1].name: 'a' is also given in networks[0]"),
    ([want("a", "br0"), want("b", "br0")], "networks[1].bridge: 'br0' is also the bridge of networks[0]: one libvirt "
                                           "network per bridge"),
    ([want("a", None)], "networks[0].bridge: required with state present"),
    ([want("a", "br0"), "x"], "networks[1]: must be a dictionary"),
    ("x", "networks: must be a list"),
])
def test_check_networks_refuses(value, msg):
    with pytest.raises(OptionError) as err:
        _plan.check_networks(value, "networks")
    assert str(err.value).startswith(msg)


def test_check_networks_accepts():
    _plan.check_networks([want("a", "br0"), want("b", "br0", state="absent"), want("c", None, state="absent"),
                          want("d", "br1")], "networks")
    _plan.check_networks([], "networks")


@pytest.mark.parametrize("name,ok", [("br0", True), ("host-bridge", True), ("a.b+c_d", True), ("x" * 64, True),
                                     ("x" * 65, False), ("-a", False), (".a", False), ("a/b", False), ("a b", False),
                                     ("é", False), ("", False)])
def test_name_pattern(name, ok):
    assert bool(re.match(_plan.NAME, name)) is ok


@pytest.mark.parametrize("name,ok", [("br0", True), ("br-vm.10", True), ("x" * 15, True), ("x" * 16, False),
                                     ("a:b", False), ("a/b", False), ("a b", False), ("-x", False), (".", False)])
def test_bridge_pattern(name, ok):
    assert bool(re.match(_plan.IFNAME, name)) is ok
