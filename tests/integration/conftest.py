"""Fixtures for all integration tests: the lab of real libvirt/QEMU domains (see tests/kvmlab)."""
from kvmlab.pytest_plugin import lab, lab_domain, pytest_terminal_summary  # noqa: F401 - pytest fixtures/hook
