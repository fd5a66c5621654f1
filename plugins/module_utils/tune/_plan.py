# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: desired tuning of one domain + its XML + the host topology -> validation, patched XML, live plan.

No I/O and no ansible imports: unit-tested on XML literals (Python 3.9 without ansible). The module
feeds it the persistent (inactive) XML, the live XML of a running domain and the host topology, and
applies what ``plan()`` returns.

Desired tuning (``None`` everywhere means "leave as it is")::

    {"vcpupin": {0: "2-3"}, "emulatorpin": "0", "iothreads": 2, "iothreadpin": {1: "1"},
     "numatune": {"mode": "strict", "nodeset": "0"},
     "memory_backing": {"hugepages": True, "page_size_kib": 2048, "nosharepages": None, "locked": None},
     "disks": [{"target": "vda", "cache": "none", "io": "native", "discard": "unmap",
                "error_policy": "stop", "rerror_policy": "stop", "iothread": 1,
                "iotune": {"total_bytes_sec": 10485760}}],
     "interfaces": [{"mac": "52:54:00:00:00:01", "target": None, "queues": 2,
                     "bandwidth": {"inbound": {"average": 1000, "peak": 2000, "burst": 1024},
                                   "outbound": None}}]}
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.common._domxml import parse_xml
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import CpusetError
from ansible_collections.kvmops.fleet.plugins.module_utils.tune._numa import (
    all_cpus,
    all_nodes,
    format_cpuset,
    hugepages_total_kib,
    parse_cpuset,
)

NUMA_MODES = ("strict", "preferred", "interleave", "restrictive")
DISK_DRIVER_ATTRS = ("cache", "io", "discard", "error_policy", "rerror_policy", "iothread")
IOTUNE_KEYS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
    "total_bytes_sec_max",
    "read_bytes_sec_max",
    "write_bytes_sec_max",
    "total_iops_sec_max",
    "read_iops_sec_max",
    "write_iops_sec_max",
    "size_iops_sec",
)
BANDWIDTH_KEYS = ("average", "peak", "burst")
BANDWIDTH_TYPES = ("network", "bridge", "direct", "ethernet")
QUEUES_TYPES = ("network", "bridge", "direct", "ethernet", "vhostuser")
# what libvirt can change on a running domain (everything else waits for the next boot). Interface bandwidth is
# live only where the host can do it: plan()'s ``why_not_live`` (the module asks _tuneapply.bandwidth_blocker)
# keeps it off a kernel without the qdiscs libvirt's tc commands need (libvirt 9.0 crashed on that path).
LIVE_KINDS = ("vcpupin", "emulatorpin", "iothreads", "iothreadpin", "numatune", "iotune", "bandwidth")


class TuneError(ValueError):
    """Bad input: the message names the option."""


def _child(parent: ET.Element, tag: str) -> ET.Element:
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    return el


def _text(el) -> str:
    return "" if el is None else ET.tostring(el, encoding="unicode").strip()


def _cpuset_eq(a, b) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return parse_cpuset(a) == parse_cpuset(b)
    except CpusetError:
        return a == b


# ---- reading ------------------------------------------------------------------------------------------


def domain_facts(text: str) -> dict:
    """The facts validation needs: name, vcpus, memory, disk targets, interfaces (mac, target)."""
    root = parse_xml(text, TuneError, "domain")
    vcpu = root.find("vcpu")
    mem = root.find("memory")
    mem_kib = 0
    if mem is not None and mem.text:
        unit = (mem.get("unit") or "KiB").lower()
        factor = {
            "b": 1 / 1024,
            "bytes": 1 / 1024,
            "k": 1,
            "kib": 1,
            "m": 1024,
            "mib": 1024,
            "g": 1 << 20,
            "gib": 1 << 20,
        }.get(unit, 1)
        mem_kib = int(int(mem.text) * factor)
    disks, interfaces = [], []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            disks.append(target.get("dev"))
    for iface in root.findall("./devices/interface"):
        mac = iface.find("mac")
        target = iface.find("target")
        interfaces.append(
            {
                "mac": (mac.get("address") or "").lower() if mac is not None else None,
                "target": target.get("dev") if target is not None else None,
                "type": iface.get("type"),
            }
        )
    iothreads = root.find("iothreads")
    return {
        "name": root.findtext("name"),
        "iothreads": int(iothreads.text) if iothreads is not None and iothreads.text else 0,
        "vcpus": int(vcpu.text) if vcpu is not None and vcpu.text else 1,
        "memory_kib": mem_kib,
        "disks": disks,
        "interfaces": interfaces,
    }


# ---- validation ---------------------------------------------------------------------------------------


def _check_cpus(value, option: str, host_cpus: list) -> None:
    # bounded by the host's highest CPU before any range is expanded: "0-99999999" costs nothing
    cpus = parse_cpuset(value, option, limit=max(host_cpus, default=0) + 1, existing=host_cpus)
    missing = [c for c in cpus if c not in host_cpus]
    if missing:
        raise TuneError(
            f"{option}: host CPU(s) {format_cpuset(missing)} do not exist on this host "
            f"(host CPUs: {format_cpuset(host_cpus) or 'none'})"
        )


def _iotune_conflicts(values: dict, option: str) -> None:
    """libvirt refuses a total limit together with its read or write limit (only at apply time)."""
    for what in ("bytes_sec", "iops_sec", "bytes_sec_max", "iops_sec_max"):
        given = [k for k in (f"total_{what}", f"read_{what}", f"write_{what}") if values.get(k)]
        if given and given[0] == f"total_{what}" and len(given) > 1:
            raise TuneError(
                f"{option}.{given[1]}: cannot be set together with {option}.total_{what} (libvirt refuses a total "
                "limit beside a read or write limit; set the other to 0 to remove it)"
            )
    for key in IOTUNE_KEYS:
        if key.endswith("_max") and values.get(key) and values.get(key[:-4]) and values[key] < values[key[:-4]]:
            raise TuneError(
                f"{option}.{key}: {values[key]} is below {option}.{key[:-4]} ({values[key[:-4]]}); libvirt refuses a "
                "burst limit lower than its rate"
            )


def validate(desired: dict, facts: dict, topology: dict, live_facts=None) -> None:
    """Refuse bad input before anything changes. Raises TuneError naming the option."""
    host_cpus = all_cpus(topology)
    host_nodes = all_nodes(topology)
    # option paths as the user wrote them (vcpupin[2]); the module passes them, literals fall back to keys
    where = desired.get("where") or {}

    def path(kind, key):
        if kind == "iothreadpin":
            return (where.get(kind) or {}).get(key) or f"iothreads.pin[iothread={key}]"
        return (where.get(kind) or {}).get(key) or f"{kind}[vcpu={key}]"

    try:
        for vcpu, cpuset in sorted((desired.get("vcpupin") or {}).items()):
            if vcpu < 0 or vcpu >= facts["vcpus"]:
                raise TuneError(
                    f"{path('vcpupin', vcpu)}.vcpu: vCPU {vcpu} does not exist: domain {facts['name']} has "
                    f"{facts['vcpus']} vCPU(s)"
                )
            _check_cpus(cpuset, f"{path('vcpupin', vcpu)}.cpuset", host_cpus)
        if desired.get("emulatorpin") is not None:
            _check_cpus(desired["emulatorpin"], "emulatorpin", host_cpus)
        count = desired.get("iothreads")
        if count is not None and count < 0:
            raise TuneError(f"iothreads.count: must be >= 0, got {count}")
        # an I/O thread per host CPU is the most that can run at once (more only compete for the same CPUs);
        # a domain that already has more keeps them
        most = max(len(host_cpus), facts.get("iothreads", 0))
        if count is not None and count > most:
            raise TuneError(
                f"iothreads.count: {count} I/O threads is more than this host's {len(host_cpus)} CPUs"
                + (f" and the domain's {facts['iothreads']} I/O threads" if facts.get("iothreads") else "")
                + f" (at most {most})"
            )
        for tid, cpuset in sorted((desired.get("iothreadpin") or {}).items()):
            limit = count if count is not None else facts.get("iothreads", 0)
            if not 1 <= tid <= limit:
                raise TuneError(
                    f"{path('iothreadpin', tid)}.iothread: iothread {tid} is not within 1..{limit} "
                    + ("(iothreads.count)" if count is not None else f"(domain {facts['name']} has {limit})")
                )
            _check_cpus(cpuset, f"{path('iothreadpin', tid)}.cpuset", host_cpus)
        numa = desired.get("numatune")
        if numa:
            if numa.get("mode") is not None and numa["mode"] not in NUMA_MODES:
                raise TuneError(f"numatune.mode: must be one of {', '.join(NUMA_MODES)}, got {numa['mode']!r}")
            if numa.get("nodeset") is not None:
                nodes = parse_cpuset(
                    numa["nodeset"],
                    "numatune.nodeset",
                    limit=max(host_nodes, default=0) + 1,
                    unit="NUMA node",
                    existing=host_nodes,
                )
                missing = [n for n in nodes if n not in host_nodes]
                if missing:
                    raise TuneError(
                        f"numatune.nodeset: NUMA node(s) {format_cpuset(missing)} do not exist on this host "
                        f"(nodes: {format_cpuset(host_nodes) or 'none'})"
                    )
        mb = desired.get("memory_backing") or {}
        if mb.get("hugepages"):
            size = mb.get("page_size_kib")
            if size is None:
                size = 2048
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size & (size - 1):
                raise TuneError(f"memory_backing.page_size: must be a power of two in KiB, got {size!r}")
            sizes = sorted({s for cell in topology["cells"] for s in cell.get("pages", {})})
            if len(sizes) > 1 and size not in sizes[1:]:
                raise TuneError(
                    f"memory_backing.page_size: {size} KiB is not a hugepage size of this host "
                    f"(sizes: {', '.join(str(s) for s in sizes[1:])} KiB)"
                )
            nodes = None
            if numa and numa.get("nodeset") is not None and numa.get("mode") in (None, "strict"):
                nodes = set(parse_cpuset(numa["nodeset"]))
            reserved = hugepages_total_kib(topology, size, nodes)
            if reserved < facts["memory_kib"]:
                where = f" on NUMA node(s) {format_cpuset(nodes)}" if nodes else ""
                raise TuneError(
                    f"memory_backing.hugepages: the domain needs {facts['memory_kib']} KiB of {size} KiB hugepages "
                    f"but only {reserved} KiB are reserved{where} on this host "
                    f"(reserve them, e.g. vm.nr_hugepages or /sys/kernel/mm/hugepages)"
                )
        seen_disks = {}
        for i, disk in enumerate(desired.get("disks") or []):
            if disk["target"] in seen_disks:
                raise TuneError(
                    f"disks[{i}].target: {disk['target']!r} is also given in disks[{seen_disks[disk['target']]}]: "
                    "give each disk once (entries are not merged; the last would silently win)"
                )
            seen_disks[disk["target"]] = i
            if disk["target"] not in facts["disks"]:
                raise TuneError(
                    f"disks[{i}].target: domain {facts['name']} has no disk {disk['target']!r} "
                    f"(disks: {', '.join(facts['disks']) or 'none'})"
                )
            tid = disk.get("iothread")
            if tid is not None:
                limit = count
                if limit is None:
                    limit = facts.get("iothreads", 0)
                if not 1 <= tid <= limit:
                    raise TuneError(f"disks[{i}].iothread: iothread {tid} does not exist (the domain has {limit})")
            for key, value in (disk.get("iotune") or {}).items():
                if key not in IOTUNE_KEYS:
                    raise TuneError(f"disks[{i}].iotune: unknown key {key!r} (known: {', '.join(IOTUNE_KEYS)})")
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise TuneError(f"disks[{i}].iotune.{key}: must be a non-negative integer, got {value!r}")
            _iotune_conflicts(disk.get("iotune") or {}, f"disks[{i}].iotune")
        seen_macs = {}
        for i, iface in enumerate(desired.get("interfaces") or []):
            mac = find_interface(iface, facts, live_facts, f"interfaces[{i}]")
            if mac in seen_macs:
                raise TuneError(
                    f"interfaces[{i}]: is the same interface ({mac}) as interfaces[{seen_macs[mac]}]: give each "
                    "interface once (entries are not merged; the last would silently win)"
                )
            seen_macs[mac] = i
            itype = next((x["type"] for x in facts["interfaces"] if x["mac"] == mac), None)
            if (iface.get("queues") or 1) > 1 and itype not in QUEUES_TYPES:
                raise TuneError(
                    f"interfaces[{i}].queues: libvirt supports virtio multiqueue only on interfaces of type "
                    f"{', '.join(QUEUES_TYPES)}; {mac} is of type {itype!r}"
                )
            if iface.get("queues") is not None and iface["queues"] < 1:
                raise TuneError(f"interfaces[{i}].queues: must be >= 1, got {iface['queues']}")
            if iface.get("bandwidth") and itype not in BANDWIDTH_TYPES:
                raise TuneError(
                    f"interfaces[{i}].bandwidth: libvirt supports bandwidth limits only on interfaces of type "
                    f"{', '.join(BANDWIDTH_TYPES)}; {mac} is of type {itype!r}"
                )
    except CpusetError as exc:
        raise TuneError(str(exc)) from None


def find_interface(spec: dict, facts: dict, live_facts=None, option: str = "interfaces") -> str:
    """Interface spec (mac or target) -> its MAC (lower case). Raises TuneError naming the option."""
    macs = [i["mac"] for i in facts["interfaces"]]
    if spec.get("mac"):
        mac = spec["mac"].lower()
        if mac not in macs:
            raise TuneError(
                f"{option}.mac: domain {facts['name']} has no interface with MAC {spec['mac']} "
                f"(MACs: {', '.join(m for m in macs if m) or 'none'})"
            )
        return mac
    target = spec.get("target")
    if not target:
        raise TuneError(f"{option}: give mac or target")
    for source in (live_facts, facts):
        for iface in (source or {}).get("interfaces", []):
            if iface["target"] == target:
                return iface["mac"]
    raise TuneError(
        f"{option}.target: domain {facts['name']} has no interface with target device {target!r}"
        " (target devices exist only while the domain runs; use mac for a shut-off domain)"
    )


# ---- patching -----------------------------------------------------------------------------------------


class _Patch:
    """Patch one parsed domain; record (kind, key, before section, after section) for every change."""

    def __init__(self, root: ET.Element):
        self.root = root
        self.changes = []

    def record(self, kind: str, key, before_el, after_el, detail=None) -> None:
        self.changes.append({"kind": kind, "key": key, "before": before_el, "after": after_el, "detail": detail or {}})

    def cputune(self, desired: dict) -> None:
        root = self.root
        cputune = root.find("cputune")
        before = _text(cputune)
        want_vcpu = desired.get("vcpupin") or {}
        want_io = desired.get("iothreadpin") or {}
        want_emu = desired.get("emulatorpin")
        if not want_vcpu and not want_io and want_emu is None:
            return
        cputune = _child(root, "cputune")
        for vcpu, cpuset in sorted(want_vcpu.items()):
            pin = next((p for p in cputune.findall("vcpupin") if p.get("vcpu") == str(vcpu)), None)
            if pin is not None and _cpuset_eq(pin.get("cpuset"), cpuset):
                continue
            if pin is None:
                pin = ET.SubElement(cputune, "vcpupin", {"vcpu": str(vcpu)})
            old = pin.get("cpuset")
            pin.set("cpuset", cpuset)
            self.record("vcpupin", vcpu, None, None, {"cpuset": cpuset, "old": old})
        if want_emu is not None:
            pin = cputune.find("emulatorpin")
            if pin is None or not _cpuset_eq(pin.get("cpuset"), want_emu):
                if pin is None:
                    pin = ET.SubElement(cputune, "emulatorpin")
                pin.set("cpuset", want_emu)
                self.record("emulatorpin", None, None, None, {"cpuset": want_emu})
        for tid, cpuset in sorted(want_io.items()):
            pin = next((p for p in cputune.findall("iothreadpin") if p.get("iothread") == str(tid)), None)
            if pin is not None and _cpuset_eq(pin.get("cpuset"), cpuset):
                continue
            if pin is None:
                pin = ET.SubElement(cputune, "iothreadpin", {"iothread": str(tid)})
            pin.set("cpuset", cpuset)
            self.record("iothreadpin", tid, None, None, {"cpuset": cpuset})
        if not len(cputune):
            root.remove(cputune)
        self._section("cputune", before)

    def _section(self, tag: str, before: str) -> None:
        """Attach the section's before/after text to the changes just recorded without one."""
        after = _text(self.root.find(tag))
        for change in self.changes:
            if change["before"] is None and change["after"] is None:
                change["before"], change["after"] = before, after

    def iothreads(self, desired: dict) -> None:
        count = desired.get("iothreads")
        if count is None:
            return
        el = self.root.find("iothreads")
        ids_el = self.root.find("iothreadids")
        have = int(el.text) if el is not None and el.text else 0
        if ids_el is not None:
            have_ids = sorted(int(i.get("id")) for i in ids_el.findall("iothread"))
        else:
            have_ids = list(range(1, have + 1))
        if have == count and have_ids == list(range(1, count + 1)):
            return
        before = _text(el) + _text(ids_el)
        if count == 0:
            if el is not None:
                self.root.remove(el)
            if ids_el is not None:
                self.root.remove(ids_el)
        else:
            el = _child(self.root, "iothreads")
            el.text = str(count)
            if ids_el is not None:
                for thread in list(ids_el.findall("iothread")):
                    if int(thread.get("id")) > count:
                        ids_el.remove(thread)
                present = {int(t.get("id")) for t in ids_el.findall("iothread")}
                for tid in range(1, count + 1):
                    if tid not in present:
                        ET.SubElement(ids_el, "iothread", {"id": str(tid)})
        after = _text(self.root.find("iothreads")) + _text(self.root.find("iothreadids"))
        self.record(
            "iothreads",
            None,
            before,
            after,
            {
                "add": [i for i in range(1, count + 1) if i not in have_ids],
                "remove": [i for i in have_ids if i > count],
                "count": count,
            },
        )

    def numatune(self, desired: dict) -> None:
        want = desired.get("numatune")
        if not want:
            return
        el = self.root.find("numatune")
        mem = el.find("memory") if el is not None else None
        old_mode = mem.get("mode", "strict") if mem is not None else None
        old_nodeset = mem.get("nodeset") if mem is not None else None
        mode = want.get("mode") or old_mode or "strict"
        nodeset = want.get("nodeset") if want.get("nodeset") is not None else old_nodeset
        if mem is not None and old_mode == mode and _cpuset_eq(old_nodeset, nodeset):
            return
        if nodeset is None and mem is not None and mem.get("placement") == "auto" and old_mode == mode:
            return
        before = _text(el)
        el = _child(self.root, "numatune")
        mem = _child(el, "memory")
        mem.set("mode", mode)
        if nodeset is not None:
            mem.set("nodeset", nodeset)
            mem.attrib.pop("placement", None)
        self.record(
            "numatune",
            None,
            before,
            _text(el),
            {"mode": mode, "nodeset": nodeset, "old_mode": old_mode, "old_nodeset": old_nodeset},
        )

    def memory_backing(self, desired: dict) -> None:
        want = desired.get("memory_backing")
        if not want:
            return
        el = self.root.find("memoryBacking")
        before = _text(el)
        el = _child(self.root, "memoryBacking")
        if want.get("hugepages") is not None:
            hp = el.find("hugepages")
            size = str(2048 if want.get("page_size_kib") is None else want["page_size_kib"])
            if want["hugepages"]:
                if hp is None:
                    hp = ET.SubElement(el, "hugepages")
                pages = hp.findall("page")
                ok = (
                    len(pages) == 1
                    and pages[0].get("size") == size
                    and pages[0].get("unit", "KiB") == "KiB"
                    and not pages[0].get("nodeset")
                )
                if not ok:
                    for page in pages:
                        hp.remove(page)
                    ET.SubElement(hp, "page", {"size": size, "unit": "KiB"})
            elif hp is not None:
                el.remove(hp)
        for flag, tag in (("nosharepages", "nosharepages"), ("locked", "locked")):
            if want.get(flag) is None:
                continue
            cur = el.find(tag)
            if want[flag] and cur is None:
                ET.SubElement(el, tag)
            elif not want[flag] and cur is not None:
                el.remove(cur)
        if not len(el) and not el.attrib:
            self.root.remove(el)
        after = _text(self.root.find("memoryBacking"))
        if _canon(before) != _canon(after):
            self.record("memory_backing", None, before, after)

    def disk(self, spec: dict) -> None:
        disk = _find_disk(self.root, spec["target"])
        if disk is None:
            return
        before = _text(disk)
        drv_changed = False
        wanted = {a: spec.get(a) for a in DISK_DRIVER_ATTRS if spec.get(a) is not None}
        if wanted:
            drv = disk.find("driver")
            if drv is None:
                drv = ET.Element("driver", {"name": "qemu"})
                disk.insert(0, drv)
            for attr, value in wanted.items():
                if drv.get(attr) != str(value):
                    drv.set(attr, str(value))
                    drv_changed = True
        if drv_changed:
            self.record("disk_driver", spec["target"], before, _text(disk))
        iotune = spec.get("iotune")
        if iotune:
            before2 = _text(disk)
            el = disk.find("iotune")
            changed = False
            values = {}
            for key in IOTUNE_KEYS:
                if key not in iotune:
                    continue
                value = int(iotune[key])
                values[key] = value
                cur = el.find(key) if el is not None else None
                cur_val = int(cur.text) if cur is not None and cur.text else 0
                if cur_val == value:
                    continue
                changed = True
                if el is None:
                    el = ET.SubElement(disk, "iotune")
                if value == 0:
                    if cur is not None:
                        el.remove(cur)
                else:
                    if cur is None:
                        cur = ET.SubElement(el, key)
                    cur.text = str(value)
            if el is not None and not len(el):
                disk.remove(el)
            if changed:
                self.record("iotune", spec["target"], before2, _text(disk), {"values": values})

    def interface(self, spec: dict, mac: str) -> None:
        iface = _find_interface(self.root, mac)
        if iface is None:
            return
        before = _text(iface)
        if spec.get("queues") is not None:
            drv = iface.find("driver")
            if drv is None:
                drv = ET.SubElement(iface, "driver")
            if drv.get("queues", "1") != str(spec["queues"]):
                drv.set("queues", str(spec["queues"]))
                self.record("queues", mac, before, _text(iface))
                before = _text(iface)
        bw = spec.get("bandwidth")
        if bw:
            el = iface.find("bandwidth")
            changed = False
            values = {}
            for direction in ("inbound", "outbound"):
                want = bw.get(direction)
                if want is None:
                    continue
                cur = el.find(direction) if el is not None else None
                cur_vals = {k: int(cur.get(k, 0)) for k in BANDWIDTH_KEYS} if cur is not None else {}
                new_vals = {k: int(want.get(k) or 0) for k in BANDWIDTH_KEYS}
                for k in BANDWIDTH_KEYS:
                    values[f"{direction}.{k}"] = new_vals[k]
                if not new_vals["average"]:
                    if cur is not None:
                        el.remove(cur)
                        changed = True
                    continue
                if {k: cur_vals.get(k, 0) for k in BANDWIDTH_KEYS} == new_vals and cur is not None:
                    continue
                changed = True
                if el is None:
                    el = ET.SubElement(iface, "bandwidth")
                if cur is None:
                    cur = ET.SubElement(el, direction)
                cur.attrib.clear()
                for k in BANDWIDTH_KEYS:
                    if new_vals[k]:
                        cur.set(k, str(new_vals[k]))
            if el is not None and not len(el):
                iface.remove(el)
            if changed:
                self.record("bandwidth", mac, before, _text(iface), {"values": values, "type": iface.get("type")})


def _canon(text: str) -> str:
    return "".join(text.split())


def _find_disk(root: ET.Element, target: str):
    for disk in root.findall("./devices/disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return disk
    return None


def _find_interface(root: ET.Element, mac: str):
    for iface in root.findall("./devices/interface"):
        m = iface.find("mac")
        if m is not None and (m.get("address") or "").lower() == mac:
            return iface
    return None


def patch(text: str, desired: dict, macs=None) -> tuple:
    """Domain XML + desired tuning -> (new XML text, changes). ``macs``: interface index -> MAC.

    No change -> the very same input text comes back, so "changed" is ``new != text``.
    """
    root = parse_xml(text, TuneError, "domain")
    p = _Patch(root)
    p.iothreads(desired)  # before cputune: live, threads must exist before they are pinned
    p.cputune(desired)
    p.numatune(desired)
    p.memory_backing(desired)
    for spec in desired.get("disks") or []:
        p.disk(spec)
    for i, spec in enumerate(desired.get("interfaces") or []):
        mac = (macs or {}).get(i) or (spec.get("mac") or "").lower()
        if mac:
            p.interface(spec, mac)
    if not p.changes:
        return text, []
    return ET.tostring(root, encoding="unicode"), p.changes


def is_live(change: dict, why_not_live=None) -> bool:
    """Can libvirt apply this change to a running domain (on this host: ``why_not_live(change)`` returns
    a reason when the host cannot)?"""
    if why_not_live is not None and why_not_live(change):
        return False
    kind = change["kind"]
    if kind == "numatune":
        d = change["detail"]
        # libvirt changes only the nodeset of a running domain, and only in strict/restrictive mode
        return d["old_mode"] == d["mode"] and d["mode"] in ("strict", "restrictive") and d["old_nodeset"] is not None
    return kind in LIVE_KINDS


def describe(change: dict) -> str:
    """One line per change, for pending_restart and the changes list."""
    key = change["key"]
    return change["kind"] if key is None else f"{change['kind']}[{key}]"


def diff_text(changes: list, scope: str) -> tuple:
    """(before, after) texts of the changed sections, each under a comment naming scope and change."""
    before, after, seen = [], [], set()
    for change in changes:
        sig = (change["before"], change["after"])
        if sig in seen:
            continue
        seen.add(sig)
        head = f"<!-- {scope}: {describe(change)} -->"
        before.append(head + "\n" + (change["before"] or "<!-- absent -->"))
        after.append(head + "\n" + (change["after"] or "<!-- absent -->"))
    return "\n".join(before) + ("\n" if before else ""), "\n".join(after) + ("\n" if after else "")


def plan(desired: dict, config_xml: str, live_xml, apply: str, macs=None, why_not_live=None) -> dict:
    """-> {"config_xml": new or None, "config_changes", "live_changes" (to apply live),
    "pending_restart" (differences the running domain keeps until its next boot), "not_live" ({change: why}
    for changes libvirt could make live but this host cannot), "changed", "diff"}.

    ``live_xml`` is None for a domain that is not running. ``why_not_live(change)`` -> reason or None.
    Raises TuneError for ``apply=live`` requests that cannot be applied to the running domain (naming the
    host's reason where there is one), or for a domain that is not running.
    """
    if apply == "live" and live_xml is None:
        raise TuneError("apply=live: the domain is not running; use apply=config or apply=both")
    config_changes = []
    new_config = None
    if apply in ("config", "both"):
        new_config, config_changes = patch(config_xml, desired, macs)
        if not config_changes:
            new_config = None
    live_changes, pending, not_live = [], [], {}
    live_all = []
    if live_xml is not None:
        _new_live, live_all = patch(live_xml, desired, macs)
        for change in live_all:
            why = why_not_live(change) if why_not_live is not None and apply in ("live", "both") else None
            if why:
                not_live[describe(change)] = why
            if is_live(change, why_not_live) and apply in ("live", "both"):
                live_changes.append(change)
            else:
                pending.append(describe(change))
        if apply == "live" and pending:
            reasons = "".join(f" ({key}: {why})" for key, why in not_live.items())
            raise TuneError(
                f"apply=live: {', '.join(pending)} cannot be changed on a running domain{reasons}; "
                "use apply=config or apply=both (it then takes effect at the next boot)"
            )
    cb, ca = diff_text(config_changes, "config")
    lb, la = diff_text(live_changes, "live")
    return {
        "config_xml": new_config,
        "config_changes": config_changes,
        "live_changes": live_changes,
        "pending_restart": sorted(set(pending)),
        "not_live": not_live,
        "changed": bool(config_changes or live_changes),
        "diff": {"before": cb + lb, "after": ca + la},
    }


def copy_desired(desired: dict) -> dict:
    return copy.deepcopy(desired)
