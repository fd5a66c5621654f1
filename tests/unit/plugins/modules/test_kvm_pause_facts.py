"""Black-box runs of the module (patch_module_args) on libvirt's test driver, and its failure messages."""
from __future__ import annotations

import libvirt
import yaml

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _libvirt_io
from ansible_collections.kvmops.fleet.plugins.modules import kvm_pause_facts
from kvmlab.testdriver import write_fleet


def test_facts_on_test_driver(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 20)
    out = run_module(kvm_pause_facts, {"uri": uri, "timeout": 10, "include_running": True})
    f = out["ansible_facts"]["kvm_pause"]
    assert out["changed"] is False and f["schema_version"] == 1
    assert f["summary"]["paused"] == 4 and f["summary"]["crashed"] == 2 and len(f["running"]) == 12


def test_check_mode_same_result(tmp_path, run_module):
    uri = write_fleet(tmp_path / "f.xml", 10)
    out = run_module(kvm_pause_facts, {"uri": uri, "_ansible_check_mode": True, "domains": ["vm0006"]})
    assert out["changed"] is False
    assert [p["name"] for p in out["ansible_facts"]["kvm_pause"]["paused"]] == ["vm0006"]


def test_bad_uri(run_module):
    out = run_module(kvm_pause_facts, {"uri": "bogus:///nothing"})
    assert out["failed"] and out["msg"].startswith("Cannot use libvirt URI 'bogus:///nothing'")


def test_daemon_down(tmp_path, run_module):
    out = run_module(kvm_pause_facts, {"uri": "qemu+unix:///system?socket=%s" % (tmp_path / "no.sock")})
    assert out["failed"] and "libvirtd is not running" in out["msg"]


def test_permission_denied(monkeypatch, run_module):
    def denied(uri):
        err = libvirt.libvirtError("Failed to connect socket to '/run/libvirt/libvirt-sock-ro': Permission denied")
        raise err
    monkeypatch.setattr(_libvirt_io.libvirt, "openReadOnly", denied)
    out = run_module(kvm_pause_facts, {})
    assert out["failed"] and out["msg"].startswith("Permission denied connecting to qemu:///system")


def test_libvirt_missing(monkeypatch, run_module):
    monkeypatch.setattr(_libvirt_io, "HAS_LIBVIRT", False)
    out = run_module(kvm_pause_facts, {})
    assert out["failed"] and "libvirt-python" in out["msg"] and "exception" not in out


def test_bad_timeout(run_module):
    out = run_module(kvm_pause_facts, {"timeout": 0})
    assert out["failed"] and out["msg"].startswith("timeout: must be more than 0 and at most 3600, got 0.0")


def _documented(contains: dict) -> set:
    return set(contains)


def test_return_schema_matches_documentation(tmp_path, run_module):
    """Every key the module returns is documented in RETURN, and every documented key is returned."""

    doc = yaml.safe_load(kvm_pause_facts.RETURN)["ansible_facts"]["contains"]["kvm_pause"]["contains"]
    uri = write_fleet(tmp_path / "f.xml", 20)
    f = run_module(kvm_pause_facts, {"uri": uri, "include_running": True})["ansible_facts"]["kvm_pause"]
    assert set(f) == _documented(doc) - {"drbd"}        # drbd: only where the DRBD module is loaded
    entry_doc = _documented(doc["paused"]["contains"])
    for p in f["paused"]:
        assert set(p) == entry_doc
    assert set(f["summary"]) == set(doc["summary"]["sample"])
    assert set(f["paused"][0]["disks"][0]) == set(doc["paused"]["contains"]["disks"]["sample"][0])
    assert set(f["running"][0]) == set(doc["running"]["sample"][0])
    unresp = set(doc["unresponsive"]["sample"][0])
    assert unresp == {"name", "uuid", "state", "reason", "job", "job_seconds", "pid", "queried", "message"}
