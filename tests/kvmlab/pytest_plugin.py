"""pytest fixtures for the lab: ``lab`` (one Lab per session) and ``lab_domain`` (per-test factory).

Use from a conftest: ``from kvmlab.pytest_plugin import lab, lab_domain, pytest_terminal_summary``.
Domains made through ``lab_domain`` are torn down after the test, also when it failed; the session's
Lab tears down everything else when the session ends. Times to state are listed at the end of the run.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from .lab import Lab, LabDomain
from .proc import LabError

TIMINGS: list[tuple[str, str, float]] = []     # (state, domain, seconds from define to state)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        pytest.skip("the lab needs root and libvirt (libvirt-daemon-system, qemu-system-x86)")
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def lab_domain(lab: Lab) -> Iterator[Callable[[str], LabDomain]]:
    made: list[LabDomain] = []

    def create(state: str) -> LabDomain:
        d = lab.create(state)
        made.append(d)
        assert d.time_to_state is not None
        TIMINGS.append((state, d.name, d.time_to_state))
        return d

    yield create
    errors = []
    for d in reversed(made):
        try:
            d.destroy()
        except LabError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("lab_domain teardown failed:\n" + "\n".join(errors))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("kvmlab: seconds from define to state")
    for state, name, secs in TIMINGS:
        terminalreporter.write_line(f"{state:15} {secs:6.2f}s  {name}")
