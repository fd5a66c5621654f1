"""Fixtures for all integration tests: the lab of real libvirt/QEMU domains (see tests/kvmlab)."""
# pytest finds fixtures and hooks by name in conftest.py: these imports are used by pytest
from kvmlab.pytest_plugin import (  # noqa: F401  # pylint: disable=unused-import
    lab,
    lab_domain,
    pytest_terminal_summary,
)
