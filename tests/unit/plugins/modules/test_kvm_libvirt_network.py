"""Black-box runs of kvm_libvirt_network (patch_module_args) on libvirt's test driver, and its failures.

The test driver parses its node file again at every connection, so each run (and each worker of a run) starts
from the file: a run's own read-back happens on the apply worker's connection, and idempotence across runs is
the integration test's job (tests/integration/modules/test_kvm_libvirt_network.py, a real libvirtd).
"""
from __future__ import annotations

import time

import pytest
import yaml

from ansible_collections.kvmops.fleet.plugins.module_utils.network import _libvirt_net_io, _plan
from ansible_collections.kvmops.fleet.plugins.modules import kvm_libvirt_network as mod

libvirt = pytest.importorskip("libvirt")

OLD_UUID = "6a1f0c1e-0000-4000-8000-000000000001"
NODE = f"""<node>
  <network><name>default</name><uuid>6a1f0c1e-0000-4000-8000-000000000002</uuid><bridge name='virbr0'/><forward/>
    <ip address='192.168.122.1' netmask='255.255.255.0'/></network>
  <network><name>old</name><uuid>{OLD_UUID}</uuid><forward mode='bridge'/><bridge name='brold'/></network>
</node>
"""


@pytest.fixture
def uri(tmp_path):
    path = tmp_path / "node.xml"
    path.write_text(NODE)
    return f"test://{path}"


def args(uri, networks, **kw):
    return dict({"uri": uri, "networks": networks, "_ansible_diff": True}, **kw)


def test_new_network_defined_started_autostarted(uri, run_module, libvirt_writes):
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}]))
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert out["changes"] == ["defined network br0", "started network br0", "autostart of network br0 on"]
    assert libvirt_writes() == ["networkDefineXML", "create", "setAutostart"]
    assert out["diff"] == [{"before_header": "network br0", "after_header": "network br0", "before": "",
                            "after": _plan.render("br0", "br0")}]
    assert out["networks"][0]["active"] is True and out["networks"][0]["autostart"] is True


def test_check_mode_predicts_and_writes_nothing(uri, run_module, libvirt_writes):
    networks = [{"name": "br0", "bridge": "br0"}, {"name": "old", "state": "absent"}]
    check = run_module(mod, args(uri, networks, _ansible_check_mode=True))
    assert libvirt_writes() == []
    real = run_module(mod, args(uri, networks))
    for key in ("changed", "changes", "diff", "networks"):
        assert check[key] == real[key], key
    assert libvirt_writes() == ["networkDefineXML", "create", "setAutostart", "destroy", "undefine"]


def test_matching_network_is_left_alone(uri, run_module, libvirt_writes):
    # the test driver's networks from a file are active, without autostart
    out = run_module(mod, args(uri, [{"name": "old", "bridge": "brold", "autostart": False}]))
    assert out["changed"] is False and out["changes"] == [] and out["diff"] == []
    assert libvirt_writes() == []


def test_mismatch_refused_then_forced(uri, run_module, libvirt_writes, monkeypatch):
    # libvirt's test driver keeps an active network's old definition through destroy and create on the same
    # connection (a real libvirtd starts it with the new one: the integration test reads that back): the
    # read-back is left out here
    monkeypatch.setattr(_plan, "verify", lambda *_a: [])
    net = [{"name": "old", "bridge": "brnew", "autostart": False}]
    out = run_module(mod, args(uri, net))
    assert out["failed"] and out["changed"] is False and libvirt_writes() == []
    assert out["msg"].startswith("networks[0]: network 'old' exists and its definition differs: bridge is 'brold', "
                                 "declared 'brnew'. Refusing to change it")
    out = run_module(mod, args(uri, net, force=True))
    assert not out.get("failed"), out.get("msg")
    assert out["changes"] == ["redefined network old", "stopped network old", "started network old"]
    assert libvirt_writes() == ["networkDefineXML", "destroy", "create"]
    assert OLD_UUID in out["diff"][0]["after"] and "<bridge name='brnew'/>" in out["diff"][0]["after"]


@pytest.mark.parametrize("force", [False, True])
def test_nat_network_never_removed(uri, run_module, libvirt_writes, force):
    absent = [{"name": "default", "state": "absent"}]
    out = run_module(mod, args(uri, absent, force=force, var_prefix="bridge_libvirt_"))
    assert out["failed"] and out["changed"] is False and libvirt_writes() == []
    assert out["msg"].startswith("bridge_libvirt_networks[0]: network 'default' has forward mode nat, not bridge: "
                                 "refusing to remove it")


def test_one_refusal_stops_every_change(uri, run_module, libvirt_writes):
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}, {"name": "default", "state": "absent"}]))
    assert out["failed"] and out["changed"] is False and libvirt_writes() == []
    assert out["msg"].startswith("networks[1]: network 'default'")


@pytest.mark.parametrize("networks,msg", [
    ([{"name": "a", "bridge": "br0"}, {"name": "b", "bridge": "br0"}],
     "bridge_networks[1].bridge: 'br0' is also the bridge of bridge_networks[0]"),
    ([{"name": "a", "bridge": "x" * 16}], "bridge_networks[0].bridge: is 16 characters long, at most 15"),
    ([{"name": "a/b", "bridge": "br0"}], "bridge_networks[0].name: 'a/b' is not valid"),
    ([{"name": "a"}], "bridge_networks[0].bridge: required with state present"),
])
def test_bad_input_names_the_callers_variable(uri, run_module, libvirt_writes, monkeypatch, networks, msg):
    monkeypatch.setattr(mod, "read_networks", lambda *_a: pytest.fail("libvirt read despite a bad option"))
    out = run_module(mod, args(uri, networks, var_prefix="bridge_"))
    assert out["failed"] and out["changed"] is False and out["changes"] == []
    assert out["msg"].startswith(msg), out["msg"]
    assert libvirt_writes() == []


def test_partial_failure_reports_what_was_applied(uri, run_module, libvirt_writes, monkeypatch):
    def refuse(self, *_a):
        raise libvirt.libvirtError("spy: create refused")

    monkeypatch.setattr(libvirt.virNetwork, "create", refuse)
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}]))
    assert out["failed"] is True and out["changed"] is True
    assert out["changes"] == ["defined network br0"]
    assert out["msg"] == ("changing the libvirt networks: started network br0: libvirt refused: spy: create refused. "
                          "Applied: defined network br0; not applied: started network br0, autostart of network br0 "
                          "on")


def test_first_operation_refused_is_no_change(uri, run_module, monkeypatch):
    def refuse(self, *_a):
        raise libvirt.libvirtError("spy: define refused")

    monkeypatch.setattr(libvirt.virConnect, "networkDefineXML", refuse)
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}]))
    assert out["failed"] is True and out["changed"] is False and out["changes"] == []
    assert "nothing was changed" in out["msg"]


def test_hanging_call_is_bounded(uri, run_module, monkeypatch):
    def hang(self, *_a):
        time.sleep(60)

    monkeypatch.setattr(libvirt.virNetwork, "setAutostart", hang)
    start = time.monotonic()
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}], timeout=1))
    assert time.monotonic() - start < 5
    assert out["failed"] is True and out["changed"] is True
    assert out["changes"] == ["defined network br0", "started network br0"]
    assert out["msg"].startswith("changing the libvirt networks: libvirt did not answer within ")


def test_read_back_that_differs_fails(uri, run_module, monkeypatch):
    monkeypatch.setattr(libvirt.virNetwork, "setAutostart", lambda self, *_a: 0)  # says yes, does nothing
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}]))
    assert out["failed"] is True and out["changed"] is True
    assert out["msg"].endswith("but read back from libvirt afterwards: network br0: autostart is off")


def test_another_network_on_the_same_bridge_warns(uri, run_module, monkeypatch):
    # caught at the call: ansible-core keeps warnings process-wide and returns each text once per process
    warnings = []
    monkeypatch.setattr(mod.AnsibleModule, "warn", lambda _self, msg: warnings.append(msg))
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "brold"}], _ansible_check_mode=True))
    assert not out.get("failed"), out.get("msg")
    assert warnings == ["network old (forward mode bridge, not declared here) also uses bridge brold, the bridge of "
                        "network br0"]


def test_bridge_missing(tmp_path):
    (tmp_path / "sys/class/net/br0/bridge").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    assert _libvirt_net_io.bridge_missing("qemu:///system", "br0", str(tmp_path)) is False
    assert _libvirt_net_io.bridge_missing("qemu:///system", "eth0", str(tmp_path)) is True
    assert _libvirt_net_io.bridge_missing("qemu:///system", "br9", str(tmp_path)) is True
    assert _libvirt_net_io.bridge_missing("qemu+ssh://hv1/system", "br9", str(tmp_path)) is False
    assert _libvirt_net_io.bridge_missing("test:///default", "br9", str(tmp_path)) is False


def test_bad_uri(run_module):
    out = run_module(mod, {"uri": "bogus:///nothing", "networks": [{"name": "a", "bridge": "br0"}]})
    assert out["failed"] and out["msg"].startswith("Cannot use libvirt URI 'bogus:///nothing'")


def test_returned_keys_are_documented(uri, run_module):
    out = run_module(mod, args(uri, [{"name": "br0", "bridge": "br0"}], _ansible_check_mode=True))
    documented = yaml.safe_load(mod.RETURN)
    assert set(documented) == {k for k in out if k not in ("changed", "diff", "invocation", "warnings")}
    assert set(documented["networks"]["contains"]) == set(out["networks"][0])


def test_docs_match_argspec():
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert set(doc["options"]) | {"uri", "timeout"} == set(mod.ARGUMENT_SPEC)
    assert set(doc["options"]["networks"]["suboptions"]) == set(mod.ARGUMENT_SPEC["networks"]["options"])
