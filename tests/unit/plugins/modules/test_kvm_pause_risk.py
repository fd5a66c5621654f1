"""Black-box runs of kvm_pause_risk (patch_module_args) on libvirt's test driver: what it returns matches its
RETURN documentation, the options select what they say, check mode is the same read, failures are named.
The storage numbers themselves are proven on real files (module_utils/test_forecast.py) and real QEMU
domains (tests/integration/modules/test_kvm_pause_risk.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _libvirt_io
from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import _plan
from ansible_collections.kvmops.fleet.plugins.modules import kvm_pause_risk
from kvmlab.testdriver import write_fleet


def run(run_module, args):
    out = run_module(kvm_pause_risk, args)
    assert not out.get("failed"), out.get("msg")
    return out


def test_running_domains_only_and_the_filter(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 20)      # 12 running, 4 paused, 2 shut off, 2 crashed
    f = run(run_module, {"uri": uri, "timeout": 10})["ansible_facts"]["kvm_pause_risk"]
    assert f["schema_version"] == 1 and f["complete"] is True and f["errors"] == []
    assert f["summary"]["domains"] == 12 and len(f["domains"]) == 12
    assert all(d["name"][-1] in "012345" for d in f["domains"])
    # the test driver's disk paths do not exist on this machine: each disk is listed with the reason
    notes = {(d["name"], x["target"]): x["note"] for d in f["domains"] for x in d["disks"]}
    assert notes[("vm0000", "vda")] == "stat /var/lib/libvirt/images/vm0000.qcow2: No such file or directory"
    assert notes[("vm0010", "vdc")].startswith("network disk (nbd): its growth is the server's")
    assert len(notes) == 12 + 4 + 4          # running 0-5, 10-15: vda each; vdb on 0, 3, 12, 15; vdc on 0, 5, 10, 15
    # every 4th domain has a watchdog with action pause: running ones are 0, 4, 12
    wd = [r["domains"][0] for r in f["risks"] if r["kind"] == "watchdog_pause"]
    assert wd == ["vm0000", "vm0004", "vm0012"]
    f = run(run_module, {"uri": uri, "domains": ["vm000[0-1]", "vm0006"]})["ansible_facts"]["kvm_pause_risk"]
    assert [d["name"] for d in f["domains"]] == ["vm0000", "vm0001"]


def test_checks_select_what_runs(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 10)
    f = run(run_module, {"uri": uri, "checks": ["config"]})["ansible_facts"]["kvm_pause_risk"]
    assert f["checks"] == ["config"] and f["storages"] == [] and all(d["disks"] == [] for d in f["domains"])


def test_check_mode_is_the_same_read(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 10)
    real = run(run_module, {"uri": uri, "domains": ["vm0000"]})
    check = run(run_module, {"uri": uri, "domains": ["vm0000"], "_ansible_check_mode": True})
    assert real["changed"] is False and check["changed"] is False
    strip = ("collected_at", "duration_seconds")
    a, b = ({k: v for k, v in x["ansible_facts"]["kvm_pause_risk"].items() if k not in strip}
            for x in (real, check))
    assert a == b


def test_failures_are_named(run_module, tmp_path, monkeypatch):
    out = run_module(kvm_pause_risk, {"uri": "bogus:///nothing"})
    assert out["failed"] and out["msg"].startswith("Cannot use libvirt URI 'bogus:///nothing'")
    out = run_module(kvm_pause_risk, {"uri": "qemu+unix:///system?socket=%s" % (tmp_path / "no.sock")})
    assert out["failed"] and "libvirtd is not running" in out["msg"]
    out = run_module(kvm_pause_risk, {"checks": []})
    assert out["failed"] and out["msg"].startswith("checks: must name at least one check")
    out = run_module(kvm_pause_risk, {"checks": ["disks"]})
    assert out["failed"] and "checks" in out["msg"] and "disks" in out["msg"]
    monkeypatch.setattr(_libvirt_io, "HAS_LIBVIRT", False)
    out = run_module(kvm_pause_risk, {})
    assert out["failed"] and "libvirt-python" in out["msg"]


def _doc(name):
    tree = ast.parse(Path(kvm_pause_risk.__file__).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return yaml.safe_load(node.value.value)


def test_return_documents_every_key_and_docs_match_the_spec(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 10)
    f = run(run_module, {"uri": uri})["ansible_facts"]["kvm_pause_risk"]
    documented = _doc("RETURN")["ansible_facts"]["contains"]["kvm_pause_risk"]["contains"]
    assert set(f) == set(documented)
    doc_opts = _doc("DOCUMENTATION")["options"]
    own = {k for k in kvm_pause_risk.ARGUMENT_SPEC if k not in _libvirt_io.LIBVIRT_COMMON_ARGS}
    assert set(doc_opts) == own
    assert doc_opts["checks"]["choices"] == kvm_pause_risk.ARGUMENT_SPEC["checks"]["choices"]
    assert doc_opts["checks"]["default"] == kvm_pause_risk.ARGUMENT_SPEC["checks"]["default"]
    yaml.safe_load(kvm_pause_risk.EXAMPLES)


def test_return_documents_every_storage_key():
    storages = {"fs:7:3": {"kind": "filesystem", "name": "/srv", "device": "/dev/loop3", "fstype": "ext4",
                           "total_bytes": 100, "available_bytes": 10, "root_free_bytes": 20},
                "thin:vg0/p": {"kind": "thin_pool", "name": "vg0/p", "size_bytes": 100, "data_percent": 50.0,
                               "metadata_percent": 1.0, "vg": "vg0", "vg_free_bytes": 0, "autoextend_threshold": 100,
                               "autoextend_percent": 20}}
    doms = [{"name": "d", "disks": [{"target": t, "capacity_bytes": 50, "occupied_bytes": 0, "storage": k}
                                    for t, k in (("vda", "fs:7:3"), ("vdb", "thin:vg0/p"))]}]
    f = _plan.forecast({"domains": doms, "storages": storages})
    documented = _doc("RETURN")["ansible_facts"]["contains"]["kvm_pause_risk"]["contains"]
    assert set(f["storages"][0]) | set(f["storages"][1]) == set(documented["storages"]["contains"])
