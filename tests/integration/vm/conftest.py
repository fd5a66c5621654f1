"""Fixtures for the nested-VM tier: the vmlab fixtures plus ``vm_pair``, two booted VMs."""
from __future__ import annotations

import pytest

from vmlab.fleet import FleetSpec, LinkSpec, VMSpec

# pytest finds fixtures and hooks by name in conftest.py: these imports are used by pytest
from vmlab.pytest_plugin import (  # noqa: F401  # pylint: disable=unused-import
    pytest_terminal_summary,
    vmlab_fleet_factory,
    vmlab_image,
)

# eth1 = lan, eth2 = repl (DRBD replication / corosync ring 2), eth3 + eth4 = unaddressed links
# for bonds and VLANs the tests build themselves.
PAIR_SPEC = FleetSpec(
    vms=[VMSpec("vma", memory_mb=512, disks=["256M"]), VMSpec("vmb", memory_mb=512, disks=["256M"])],
    links=[LinkSpec("lan"), LinkSpec("repl"), LinkSpec("bond1", addressed=False),
           LinkSpec("bond2", addressed=False)],
)


@pytest.fixture(scope="module")
def vm_pair(vmlab_fleet_factory):  # noqa: F811
    return vmlab_fleet_factory(PAIR_SPEC)
