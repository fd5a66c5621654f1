"""Black-box runs of kvm_host_facts (patch_module_args) on this machine, with the file readers faked
where a verdict depends on them."""

from __future__ import annotations

import os

from ansible_collections.kvmops.fleet.plugins.modules import kvm_host_facts

KEYS = {
    "kvm_capable",
    "cpu",
    "kvm_device",
    "nested",
    "iommu",
    "cgroups",
    "disk",
    "security_module",
    "validate",
    "validate_available",
    "problems",
    "warnings",
}


def test_facts_shape_and_read_only(tmp_path, run_module):
    args = {"images_dir": str(tmp_path / "not" / "yet"), "virt_host_validate": False, "_ansible_check_mode": True}
    out = run_module(kvm_host_facts, args)
    facts = out["ansible_facts"]["kvm_host"]
    assert out["changed"] is False
    assert set(facts) == KEYS
    assert facts["disk"]["path"] == str(tmp_path)  # nearest existing ancestor
    assert facts["disk"]["free_bytes"] > 0
    assert facts["validate"] == [] and facts["validate_available"] is False
    assert not (tmp_path / "not").exists()


def test_too_little_disk_is_a_problem(tmp_path, run_module):
    args = {"images_dir": str(tmp_path), "min_free_gib": 1024 * 1024, "virt_host_validate": False}
    out = run_module(kvm_host_facts, args)
    problems = out["ansible_facts"]["kvm_host"]["problems"]
    assert any(f"MiB free under {tmp_path}" in p for p in problems)


def test_no_virt_flags_no_device(monkeypatch, tmp_path, run_module):
    real_read = kvm_host_facts.read_text

    def fake_read(path):
        if path == "/proc/cpuinfo":
            return "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2\n"
        return real_read(path)

    monkeypatch.setattr(kvm_host_facts, "read_text", fake_read)
    monkeypatch.setattr(kvm_host_facts.os, "stat", _stat_without("/dev/kvm"))
    out = run_module(kvm_host_facts, {"images_dir": str(tmp_path), "virt_host_validate": False})
    facts = out["ansible_facts"]["kvm_host"]
    assert facts["kvm_capable"] is False
    assert facts["cpu"]["virt_extension"] is None
    assert facts["kvm_device"]["exists"] is False
    assert any("no virtualization extension" in p for p in facts["problems"])
    assert any("/dev/kvm does not exist" in p for p in facts["problems"])


def _stat_without(missing):
    real_stat = os.stat

    def fake_stat(path, *args, **kwargs):
        if path == missing:
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_stat(path, *args, **kwargs)

    return fake_stat


def test_virt_host_validate_is_parsed(monkeypatch, tmp_path, run_module):
    tool = tmp_path / "virt-host-validate"
    tool.write_text("#!/bin/sh\necho '  QEMU: Checking if device /dev/kvm exists      : PASS'\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    facts = run_module(kvm_host_facts, {"images_dir": str(tmp_path)})["ansible_facts"]["kvm_host"]
    assert facts["validate_available"] is True
    assert facts["validate"] == [
        {"driver": "QEMU", "check": "Checking if device /dev/kvm exists", "result": "PASS", "message": ""}
    ]
