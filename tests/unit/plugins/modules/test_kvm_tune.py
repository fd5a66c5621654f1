"""Black-box runs of kvm_tune (patch_module_args) on libvirt's test driver (multi-cell host), and its failures."""
from __future__ import annotations

import pytest
import yaml

from ansible_collections.kvmops.fleet.plugins.modules import kvm_tune
from kvmlab.testdriver import write_fleet

pytest.importorskip("libvirt")


@pytest.fixture
def uri(tmp_path):
    # 2 NUMA cells x 2 sockets x 4 cores x 2 threads = 32 CPUs; vm0000 runs, 1 vCPU, 64 MiB
    return write_fleet(tmp_path / "f.xml", 10)


def test_placement_auto_on_two_cells_check_mode(uri, run_module):
    args = {"uri": uri, "domain": "vm0000", "placement": "auto", "housekeeping_cpus": "0-1",
            "_ansible_check_mode": True, "_ansible_diff": True}
    out = run_module(kvm_tune, args)
    assert out["changed"] and out["placement"] == {"cell": 1, "nodeset": "1", "vcpupin": {"0": "16-17"},
                                                   "emulatorpin": "0-1", "spans_cells": False}
    assert out["changes"] == ["config:vcpupin[0]", "config:emulatorpin", "config:numatune", "live:vcpupin[0]",
                              "live:emulatorpin"]
    assert out["pending_restart"] == ["numatune"]
    assert "<vcpupin vcpu=\"0\" cpuset=\"16-17\" />" in out["diff"]["after"]
    assert run_module(kvm_tune, args)["placement"] == out["placement"]          # deterministic


def test_config_apply_on_shutoff_domain(uri, run_module):
    # vm0008 is shut off in the default mix
    out = run_module(kvm_tune, {"uri": uri, "domain": "vm0008", "apply": "config",
                                "vcpupin": [{"vcpu": 0, "cpuset": "3"}],
                                "disks": [{"target": "vda", "cache": "none", "error_policy": "stop"}]})
    assert out["changed"] and out["pending_restart"] == [] and not out.get("failed"), out.get("msg")
    assert out["state"] == 5


@pytest.mark.parametrize("args,msg", [
    ({"domain": "nope"}, "domain: no domain named 'nope' exists on this host"),
    ({"vcpupin": [{"vcpu": 0, "cpuset": "64"}]},
     "vcpupin[0].cpuset: host CPU(s) 64 do not exist on this host (host CPUs: 0-31)"),
    ({"vcpupin": [{"vcpu": 0, "cpuset": "1-x"}]}, "vcpupin[0].cpuset: '1-x' is not a valid cpuset"),
    ({"numatune": {"nodeset": "2"}}, "numatune.nodeset: NUMA node(s) 2 do not exist on this host (nodes: 0-1)"),
    ({"memory_backing": {"hugepages": True}}, "memory_backing.hugepages: the domain needs 65536 KiB"),
    ({"disks": [{"target": "sdq"}]}, "disks[0].target: domain vm0008 has no disk 'sdq' (disks: vda)"),
    ({"interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]}, "interfaces[0].mac: domain vm0008 has no interface"),
    ({"placement": "auto", "vcpupin": [{"vcpu": 0, "cpuset": "1"}]}, "placement=auto plans vcpupin"),
    ({"apply": "live", "emulatorpin": "1"}, "apply=live: the domain is not running"),
    ({"timeout": 0}, "timeout: must be more than 0 and at most 3600, got 0.0"),
])
def test_bad_input(uri, run_module, args, msg):
    out = run_module(kvm_tune, dict({"uri": uri, "domain": "vm0008"}, **args))
    assert out["failed"] and msg in out["msg"], out["msg"]


def test_bad_uri(run_module):
    out = run_module(kvm_tune, {"uri": "bogus:///nothing", "domain": "x"})
    assert out["failed"] and out["msg"].startswith("Cannot use libvirt URI 'bogus:///nothing'")


def test_returned_keys_are_documented(uri, run_module):
    out = run_module(kvm_tune, {"uri": uri, "domain": "vm0008", "_ansible_check_mode": True})
    documented = set(yaml.safe_load(kvm_tune.RETURN))
    assert documented == {k for k in out if k not in ("changed", "diff", "invocation", "warnings")}


def test_docs_match_argspec():
    doc = yaml.safe_load(kvm_tune.DOCUMENTATION)
    assert set(doc["options"]) | {"uri", "timeout"} == set(kvm_tune.ARGUMENT_SPEC)
