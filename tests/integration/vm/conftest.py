"""Fixtures for the nested-VM tier: the shared vmlab pool and ``vm_pair``, the standard two-hypervisor fleet."""
from __future__ import annotations

import pytest

from vmlab.fleets import HV2

# pytest finds fixtures and hooks by name in conftest.py: these imports are used by pytest
from vmlab.pytest_plugin import (  # noqa: F401  # pylint: disable=unused-import
    pytest_terminal_summary,
    vmlab_fleet_factory,
    vmlab_image,
    vmlab_pool,
    vmlab_variant_image,
)


@pytest.fixture(scope="module")
def vm_pair(vmlab_pool, request):  # noqa: F811
    """vmlab.fleets.HV2 from the shared pool, in its first-boot state, for this test module."""
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        yield fleet
