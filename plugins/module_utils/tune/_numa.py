# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: host NUMA topology, cpuset syntax and the NUMA placement planner (no I/O, no ansible).

The topology is a plain dict built from libvirt's capabilities XML (``parse_capabilities``) or, when the
driver lists no cells (libvirt's test driver), from ``virConnectGetInfo`` (``topology_from_info``)::

    {"cells": [{"id": 0, "memory_kib": 8388608, "pages": {4: 2097152, 2048: 0},
                "cpus": [{"id": 0, "core": 0, "socket": 0, "siblings": [0, 4]}, ...]}, ...]}
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# cpuset syntax (and its CpusetError) lives with the option checks every module shares (common/_validate.py)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import format_cpuset, parse_cpuset


class PlacementError(ValueError):
    """The planner cannot place the domain."""


# ---- topology ----------------------------------------------------------------------------------------


def parse_capabilities(text: str) -> dict:
    """libvirt capabilities XML -> topology dict (cells may be empty)."""
    root = ET.fromstring(text)  # noqa: S314 - libvirt's own capabilities XML
    cells = []
    for cell in root.findall("./host/topology/cells/cell"):
        mem = cell.find("memory")
        pages = {}
        for page in cell.findall("pages"):
            pages[int(page.get("size", "4"))] = int(page.text or 0)
        cpus = []
        for cpu in cell.findall("./cpus/cpu"):
            cid = int(cpu.get("id"))
            sib = cpu.get("siblings")
            cpus.append(
                {
                    "id": cid,
                    "socket": int(cpu.get("socket_id", "0")),
                    "core": int(cpu.get("core_id", str(cid))),
                    "siblings": parse_cpuset(sib) if sib else [cid],
                }
            )
        cells.append(
            {
                "id": int(cell.get("id")),
                "memory_kib": int(mem.text) if mem is not None and mem.text else 0,
                "pages": pages,
                "cpus": sorted(cpus, key=lambda c: c["id"]),
            }
        )
    return {"cells": sorted(cells, key=lambda c: c["id"])}


def topology_from_info(info) -> dict:
    """virConnectGetInfo [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads] -> topology.

    Used when the capabilities list no cells (libvirt's test driver). CPUs are numbered cell by cell,
    core by core, with the threads of one core consecutive (they are each other's siblings).
    """
    memory_mib, nodes, sockets, cores, threads = info[1], info[4], info[5], info[6], info[7]
    nodes, sockets, cores, threads = max(nodes, 1), max(sockets, 1), max(cores, 1), max(threads, 1)
    cells, cpu_id = [], 0
    for node in range(nodes):
        cpus = []
        for sock in range(sockets):
            for core in range(cores):
                sibs = list(range(cpu_id, cpu_id + threads))
                for tid in sibs:
                    cpus.append({"id": tid, "socket": node * sockets + sock, "core": core, "siblings": sibs})
                cpu_id += threads
        mem = memory_mib * 1024 // nodes
        cells.append({"id": node, "memory_kib": mem, "pages": {4: mem // 4}, "cpus": cpus})
    return {"cells": cells}


def all_cpus(topology: dict) -> list:
    return sorted(c["id"] for cell in topology["cells"] for c in cell["cpus"])


def all_nodes(topology: dict) -> list:
    return sorted(cell["id"] for cell in topology["cells"])


def hugepages_total_kib(topology: dict, size_kib: int, nodes=None) -> int:
    """Reserved hugepage memory of one page size (optionally only on ``nodes``)."""
    total = 0
    for cell in topology["cells"]:
        if nodes is None or cell["id"] in nodes:
            total += cell["pages"].get(size_kib, 0) * size_kib
    return total


# ---- planner -----------------------------------------------------------------------------------------


def _core_groups(cell: dict, usable: set) -> list:
    """Sibling groups (sorted tuples of usable CPUs) of one cell, ordered by first CPU."""
    seen, groups = set(), []
    for cpu in cell["cpus"]:
        if cpu["id"] in seen:
            continue
        group = tuple(sorted(s for s in cpu["siblings"] if s in usable))
        seen.update(cpu["siblings"])
        if group:
            groups.append(group)
    return sorted(groups)


def plan_placement(
    topology: dict,
    vcpus: int,
    memory_kib: int,
    *,
    pinned=None,
    housekeeping=None,
    hugepage_kib=None,
    cell_free_kib=None,
) -> dict:
    """Place a domain in one NUMA cell when it fits; deterministic for the same input.

    ``pinned``: host CPUs already pinned by other domains (avoided). ``housekeeping``: host CPUs never
    given to vCPUs (emulator threads go there). ``cell_free_kib``: {cell id: free KiB}; defaults to the
    cell's memory. With ``hugepage_kib`` the cell's reserved pages of that size must hold the memory.

    Returns {"cell": id or None, "nodeset": "0", "vcpupin": {vcpu: "cpu,sibling"}, "emulatorpin": cpuset,
    "spans_cells": bool}. vCPUs 2k and 2k+1 share one core's sibling pair when the host has SMT.
    Raises PlacementError when the domain cannot be placed at all.
    """
    if vcpus < 1:
        raise PlacementError("the domain has no vCPUs")
    pinned = set(pinned or ())
    housekeeping = set(housekeeping or ())
    candidates = []
    for cell in topology["cells"]:
        ids = {c["id"] for c in cell["cpus"]}
        usable = ids - pinned - housekeeping
        groups = _core_groups(cell, usable)
        if hugepage_kib:
            free_mem = cell["pages"].get(hugepage_kib, 0) * hugepage_kib
        else:
            free_mem = (cell_free_kib or {}).get(cell["id"], cell["memory_kib"])
        fits = len(usable) >= vcpus and free_mem >= memory_kib
        if fits:
            # prefer the cell that keeps most free whole cores, then most memory, then the lowest id
            candidates.append((-(len(usable) - vcpus), -free_mem, cell["id"], cell, groups))
    if candidates:
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        cell, groups = candidates[0][3], candidates[0][4]
        # whole cores: vCPUs 2k and 2k+1 share the sibling pair of one core (SMT); no other domain gets
        # the core's other thread
        taken, slots = [], []
        for group in groups:
            if len(slots) >= vcpus:
                break
            taken.extend(group)
            slots.extend([group] * len(group))
        vcpupin = {i: format_cpuset(slots[i]) for i in range(vcpus)}
        cpus = sorted(taken)
        hk_here = sorted(housekeeping & {c["id"] for c in cell["cpus"]})
        emulator = hk_here or sorted(housekeeping) or cpus
        return {
            "cell": cell["id"],
            "nodeset": str(cell["id"]),
            "vcpupin": vcpupin,
            "emulatorpin": format_cpuset(emulator),
            "spans_cells": False,
        }
    # does not fit one cell: spread over all cells by id, still avoiding pinned + housekeeping CPUs
    usable_all = [c for c in all_cpus(topology) if c not in pinned and c not in housekeeping]
    if len(usable_all) < vcpus:
        raise PlacementError(
            f"placement: {vcpus} vCPUs do not fit: only {len(usable_all)} host CPUs are neither housekeeping "
            f"({format_cpuset(housekeeping) or 'none'}) nor pinned by other domains"
        )
    cpus = usable_all[:vcpus]
    nodes = sorted({cell["id"] for cell in topology["cells"] for c in cell["cpus"] if c["id"] in cpus})
    return {
        "cell": None,
        "nodeset": format_cpuset(nodes),
        "vcpupin": {i: str(cpu) for i, cpu in enumerate(cpus)},
        "emulatorpin": format_cpuset(sorted(housekeeping) or cpus),
        "spans_cells": True,
    }


def pinned_cpus_from_domain_xml(text: str) -> set:
    """Host CPUs a domain's <cputune><vcpupin> entries claim (for ``plan_placement(pinned=...)``)."""
    root = ET.fromstring(text)  # noqa: S314 - libvirt's own domain XML
    out = set()
    for pin in root.findall("./cputune/vcpupin"):
        cs = pin.get("cpuset")
        if cs:
            out.update(parse_cpuset(cs))
    return out
