"""NUMA topology parsing, cpuset syntax and the placement planner (capabilities literals, testdriver topologies)."""
from __future__ import annotations

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import CpusetError
from ansible_collections.kvmops.fleet.plugins.module_utils.tune import _numa

CAPS_2CELL = """<capabilities><host><topology><cells num='2'>
  <cell id='0'><memory unit='KiB'>8388608</memory>
    <pages unit='KiB' size='4'>2097152</pages><pages unit='KiB' size='2048'>512</pages>
    <cpus num='4'>
      <cpu id='0' socket_id='0' core_id='0' siblings='0,2'/><cpu id='1' socket_id='0' core_id='1' siblings='1,3'/>
      <cpu id='2' socket_id='0' core_id='0' siblings='0,2'/><cpu id='3' socket_id='0' core_id='1' siblings='1,3'/>
    </cpus></cell>
  <cell id='1'><memory unit='KiB'>8388608</memory>
    <pages unit='KiB' size='4'>2097152</pages><pages unit='KiB' size='2048'>0</pages>
    <cpus num='4'>
      <cpu id='4' socket_id='1' core_id='0' siblings='4,6'/><cpu id='5' socket_id='1' core_id='1' siblings='5,7'/>
      <cpu id='6' socket_id='1' core_id='0' siblings='4,6'/><cpu id='7' socket_id='1' core_id='1' siblings='5,7'/>
    </cpus></cell>
</cells></topology></host></capabilities>"""


@pytest.mark.parametrize("text,expected", [
    ("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-3,^2", [0, 1, 3]), ("1, 5-6", [1, 5, 6]), ("7,0-1", [0, 1, 7]),
])
def test_parse_cpuset(text, expected):
    assert _numa.parse_cpuset(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1-", "3-1", "-1", "0,,1", "^0", "0-2,^1-2", "1.5"])
def test_parse_cpuset_errors_name_the_option(text):
    with pytest.raises(CpusetError, match=r"^vcpupin: "):
        _numa.parse_cpuset(text, "vcpupin")


@pytest.mark.parametrize("values,text", [([0], "0"), ([0, 1, 2, 5], "0-2,5"), ([3, 1], "1,3"), ([], "")])
def test_format_cpuset(values, text):
    assert _numa.format_cpuset(values) == text


def test_parse_capabilities():
    topo = _numa.parse_capabilities(CAPS_2CELL)
    assert _numa.all_nodes(topo) == [0, 1] and _numa.all_cpus(topo) == list(range(8))
    assert topo["cells"][0]["cpus"][0]["siblings"] == [0, 2]
    assert _numa.hugepages_total_kib(topo, 2048) == 512 * 2048
    assert _numa.hugepages_total_kib(topo, 2048, {1}) == 0


def test_topology_from_testdriver_info():
    # the testdriver's default host: 2 nodes x 2 sockets x 4 cores x 2 threads, 64 GiB
    topo = _numa.topology_from_info(["x86_64", 65536, 32, 2600, 2, 2, 4, 2])
    assert len(topo["cells"]) == 2 and _numa.all_cpus(topo) == list(range(32))
    assert [c["id"] for c in topo["cells"][1]["cpus"]][:2] == [16, 17]
    assert topo["cells"][1]["cpus"][0]["siblings"] == [16, 17]
    assert topo["cells"][0]["memory_kib"] == 32 * 1024 * 1024


def test_plan_fits_one_cell_on_sibling_pairs():
    topo = _numa.parse_capabilities(CAPS_2CELL)
    plan = _numa.plan_placement(topo, 2, 1024 * 1024, housekeeping=[0])
    # cell 0 loses CPU 0 to housekeeping, cell 1 keeps all four: cell 1 wins, vCPUs share core 4/6
    assert plan == {"cell": 1, "nodeset": "1", "vcpupin": {0: "4,6", 1: "4,6"}, "emulatorpin": "0",
                    "spans_cells": False}


def test_plan_avoids_pinned_and_is_deterministic():
    topo = _numa.parse_capabilities(CAPS_2CELL)
    first = _numa.plan_placement(topo, 2, 1024, pinned={4, 6})
    assert first == _numa.plan_placement(topo, 2, 1024, pinned=[6, 4])
    assert first["cell"] == 0 and first["vcpupin"] == {0: "0,2", 1: "0,2"}
    odd = _numa.plan_placement(topo, 3, 1024)
    assert odd["vcpupin"] == {0: "0,2", 1: "0,2", 2: "1,3"} and odd["cell"] == 0


def test_plan_hugepages_pick_the_cell_with_pages():
    topo = _numa.parse_capabilities(CAPS_2CELL)
    plan = _numa.plan_placement(topo, 2, 512 * 1024, hugepage_kib=2048)
    assert plan["cell"] == 0
    with pytest.raises(_numa.PlacementError):
        _numa.plan_placement(_numa.topology_from_info(["x", 1024, 2, 1, 1, 1, 2, 1]), 3, 1)


def test_plan_spans_cells_when_too_big():
    topo = _numa.parse_capabilities(CAPS_2CELL)
    plan = _numa.plan_placement(topo, 6, 1024, housekeeping=[0, 4])
    assert plan["spans_cells"] and plan["cell"] is None and plan["nodeset"] == "0-1"
    assert sorted(plan["vcpupin"].values()) == ["1", "2", "3", "5", "6", "7"]
    with pytest.raises(_numa.PlacementError, match="placement: 8 vCPUs"):
        _numa.plan_placement(topo, 8, 1024, housekeeping=[0])


def test_plan_on_testdriver_fleet_topology():
    topo = _numa.topology_from_info(["x86_64", 65536, 32, 2600, 4, 1, 4, 2])
    plan = _numa.plan_placement(topo, 4, 4 * 1024 * 1024, housekeeping=[0, 1])
    assert plan["cell"] == 1 and plan["vcpupin"] == {0: "8-9", 1: "8-9", 2: "10-11", 3: "10-11"}
    assert _numa.plan_placement(topo, 4, 4 * 1024 * 1024, housekeeping=[0, 1]) == plan


def test_pinned_from_domain_xml():
    xml = "<domain><cputune><vcpupin vcpu='0' cpuset='2-3'/><vcpupin vcpu='1' cpuset='5'/></cputune></domain>"
    assert _numa.pinned_cpus_from_domain_xml(xml) == {2, 3, 5}
