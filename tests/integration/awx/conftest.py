"""The AWX tests' own lab session: domains named kvmawx-<state>-<pid>-<n>, apart from other lab users."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from kvmlab import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        pytest.skip("the lab needs root and libvirt (libvirt-daemon-system, qemu-system-x86)")
    with Lab(prefix="kvmawx") as the_lab:
        yield the_lab
