# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: which running domains can pause, and why, before they do (issue 23).

Input is plain data read by ``_collect_io`` (or written by a test): per running domain its parsed XML facts
and, per writable disk, the virtual capacity and what the disk occupies on the host NOW; per storage the
disks grow into (a filesystem, a thin pool), its size and free space. Output: per storage the growth the
disks sharing it can still claim against what is free to QEMU, the domains that would pause and those whose
guest would see write errors instead, and a list of risks, each with a severity, the numbers it was computed
from, a headroom in bytes and concrete actions.

What a disk occupies is ``st_blocks * 512`` of its file (what the filesystem really gave it: a sparse raw
file or a thin qcow2 occupies less than it may grow to), or a thin LV's ``data_percent`` of its size. Never
libvirt's block ``allocation``, which is the highest written offset of a qcow2 (a qcow2 whose only cluster
sits at its end reports all of it). A disk's remaining growth is ``capacity - occupied`` (at least 0). A
qcow2 also grows by its own metadata (L2 and refcount tables, about 1/6000 of the capacity at 64 KiB
clusters); that is left out, so the growth is a lower bound.

Free space is what QEMU's user may write: ``f_bavail`` when QEMU runs as an unprivileged user (Debian's
libvirt-qemu, RHEL's qemu: the root reserve is not theirs), ``f_bfree`` when qemu.conf makes it root.

The write error policy decides what a full storage does to a domain. libvirt's ``error_policy`` is QEMU's
``werror``; without it libvirt passes none and QEMU's default applies, ``werror=enospc`` (QEMU's
qemu-options.hx: "The default setting is werror=enospc and rerror=report"): the domain pauses on ENOSPC.
``stop`` and ``enospace`` pause too; ``report`` hands the error to the guest (its filesystem may go
read-only or lose data: a data-safety risk of its own); ``ignore`` drops the error and the write with it.

Which domain pauses first cannot be known from one look: it is the first one whose write finds the storage
full, and without a growth rate (the collector's history) that order is unknown. The forecast says so, and
names each domain that can pause and each that can fill the storage on its own.

No I/O, no ansible imports: unit-tested on literals (Python 3.9 without ansible).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _domxml

KIB = 1024
MIB = 1024**2
GIB = 1024**3

CHECKS = ("storage", "config", "memory", "hugepages")
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
# a thin pool whose metadata is this full is a risk: when metadata runs out the pool fails every write
METADATA_WARN_PERCENT = 80.0
METADATA_CRITICAL_PERCENT = 95.0
# libvirt's default huge page size when <hugepages/> names none: the host's default (x86_64: 2 MiB)
DEFAULT_HUGEPAGE_KIB = 2048


class ForecastError(ValueError):
    """Input the forecast cannot use (for example a domain XML that does not parse)."""


# ---- sizes ------------------------------------------------------------------------------------------------------


def size_text(n) -> str:
    """Bytes -> a short text rounded to one decimal (B, KiB, MiB, GiB, TiB)."""
    if n is None:
        return "?"
    n = int(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{sign}{n / size:.1f} {unit}"
    return f"{sign}{n} B"


def grow_text(n: int) -> str:
    """A shortfall in bytes -> how much to add, rounded UP to a whole GiB (MiB below 1 GiB)."""
    if n >= GIB:
        return f"{math.ceil(n / GIB)} GiB"
    return f"{max(1, math.ceil(n / MIB))} MiB"


# ---- parsers (plain text in, plain data out) ---------------------------------------------------------------------


def qcow2_virtual_size(header: bytes):
    """The first 32 bytes of a qcow2 file -> its virtual size in bytes (big-endian u64 at offset 24), or None
    when the magic is not ``QFI\\xfb``."""
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        return None
    return int.from_bytes(header[24:32], "big")


def qemu_runs_as_root(qemu_conf: str | None, uri: str = "qemu:///system") -> bool:
    """Whether QEMU writes as root: ``user = "root"`` / ``"+0"`` in qemu.conf (the last setting wins), or
    a session URI run by root. Debian's default is libvirt-qemu (not root)."""
    if uri.endswith("/session"):
        return False
    user = None
    for line in (qemu_conf or "").splitlines():
        s = line.strip()
        if s.startswith("#") or "=" not in s:
            continue
        key, _sep, value = s.partition("=")
        if key.strip() == "user":
            user = value.split("#", 1)[0].strip().strip('"').strip("'")
    return user in ("root", "+0", "0")


def parse_meminfo(text: str) -> dict:
    """/proc/meminfo -> {MemTotal, MemAvailable, SwapTotal, SwapFree, Hugepagesize} in bytes (those present)."""
    out = {}
    for line in text.splitlines():
        key, _sep, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "Hugepagesize") and parts:
            try:
                out[key] = int(parts[0]) * (KIB if len(parts) > 1 and parts[1] == "kB" else 1)
            except ValueError:
                continue
    return out


def _pct(value):
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _num(value):
    if value in (None, ""):
        return None
    try:
        return int(str(value).rstrip("B"))
    except ValueError:
        return None


# the columns _collect_io asks lvs for (``--units b --nosuffix``: sizes are plain byte counts)
LVS_FIELDS = "lv_name,vg_name,lv_path,lv_dm_path,pool_lv,lv_size,data_percent,metadata_percent,lv_attr,segtype,vg_free"


def parse_lvs(text: str) -> list:
    """``lvs --reportformat json --units b --nosuffix -o LVS_FIELDS`` -> [{lv_name, vg_name, lv_path,
    lv_dm_path, pool_lv, size, data_percent, metadata_percent, segtype, thin_pool, vg_free}]."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    out = []
    for report in data.get("report", []) if isinstance(data, dict) else []:
        for lv in report.get("lv", []):
            attr = lv.get("lv_attr") or ""
            out.append(
                {
                    "lv_name": lv.get("lv_name"),
                    "vg_name": lv.get("vg_name"),
                    "lv_path": lv.get("lv_path") or None,
                    "lv_dm_path": lv.get("lv_dm_path") or None,
                    "pool_lv": lv.get("pool_lv") or None,
                    "size": _num(lv.get("lv_size")),
                    "data_percent": _pct(lv.get("data_percent")),
                    "metadata_percent": _pct(lv.get("metadata_percent")),
                    "segtype": lv.get("segtype"),
                    # lv_attr's first character: t = thin pool, V = thin volume
                    "thin_pool": lv.get("segtype") == "thin-pool" or attr[:1] == "t",
                    "thin": lv.get("segtype") == "thin" or attr[:1] == "V",
                    "vg_free": _num(lv.get("vg_free")),
                }
            )
    return out


def parse_lvmconfig(text: str) -> dict:
    """``lvmconfig --type full activation/thin_pool_autoextend_threshold activation/thin_pool_autoextend_percent``
    (lines ``name=value``) -> {threshold, percent} (ints, None when absent)."""
    out = {"threshold": None, "percent": None}
    for line in (text or "").splitlines():
        key, _sep, value = line.strip().partition("=")
        key = key.strip().rsplit("/", 1)[-1]
        try:
            number = int(value.strip())
        except ValueError:
            continue
        if key == "thin_pool_autoextend_threshold":
            out["threshold"] = number
        elif key == "thin_pool_autoextend_percent":
            out["percent"] = number
    return out


def find_lv(lvs: list, path: str, real: str | None = None):
    """The LV a block disk's path (``/dev/VG/LV``, ``/dev/mapper/VG-LV`` or its realpath's dm path) names."""
    for lv in lvs:
        if path in (lv.get("lv_path"), lv.get("lv_dm_path")) or (real and real == lv.get("lv_dm_path")):
            return lv
    return None


def parse_mountinfo_devs(text: str) -> list:
    """/proc/self/mountinfo -> [{majmin, mount_point, fstype, source}]: the device number (field 3) ties a file's
    st_dev to its mount without touching the mount."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        unesc = lf[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        out.append({"majmin": lf[2], "mount_point": unesc, "fstype": rf[0], "source": rf[1]})
    return out


def mount_by_dev(mounts: list, majmin: str, path: str):
    """The mount of device ``majmin`` that holds ``path`` (longest mount point; later mounts shadow earlier)."""
    best = None
    for m in mounts:
        if m["majmin"] != majmin:
            continue
        mp = m["mount_point"]
        inside = mp in (path, "/") or path.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best["mount_point"])):
            best = m
    if best is None:
        best = next((m for m in mounts if m["majmin"] == majmin), None)
    return best


def thin_disk(out: dict, lv: dict, lvs: list, config: dict) -> tuple:
    """A thin LV disk: occupied = data_percent of its size; it grows into its thin pool. -> (disk, (key, pool))."""
    size = lv.get("size")
    pct = lv.get("data_percent")
    out = dict(
        out,
        capacity_bytes=size,
        occupied_source="thin_lv_data_percent",
        occupied_bytes=int(size * pct / 100.0) if size is not None and pct is not None else None,
    )
    pool = next(
        (x for x in lvs if x.get("vg_name") == lv.get("vg_name") and x.get("lv_name") == lv.get("pool_lv")), None
    )
    name = f"{lv.get('vg_name')}/{lv.get('pool_lv')}"
    storage = {
        "kind": "thin_pool",
        "name": name,
        "device": (pool or {}).get("lv_dm_path"),
        "fstype": None,
        "size_bytes": (pool or {}).get("size"),
        "data_percent": (pool or {}).get("data_percent"),
        "metadata_percent": (pool or {}).get("metadata_percent"),
        "vg": lv.get("vg_name"),
        "vg_free_bytes": (pool or lv).get("vg_free"),
        "autoextend_threshold": config.get("threshold"),
        "autoextend_percent": config.get("percent"),
    }
    return out, (f"thin:{name}", storage)


def _node_set(text):
    if not text:
        return None
    nodes = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part or part.startswith("^"):
            continue
        lo, _sep, hi = part.partition("-")
        try:
            nodes.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return None
    return sorted(nodes)


def _kib(elem, default_unit="KiB"):
    if elem is None or elem.text is None:
        return None
    units = {
        "b": 1,
        "bytes": 1,
        "k": KIB,
        "kib": KIB,
        "kb": 1000,
        "m": MIB,
        "mib": MIB,
        "mb": 10**6,
        "g": GIB,
        "gib": GIB,
        "gb": 10**9,
        "t": 1024**4,
        "tib": 1024**4,
        "tb": 10**12,
    }
    try:
        value = int(elem.text.strip())
    except ValueError:
        return None
    mult = units.get((elem.get("unit") or default_unit).lower(), KIB)
    return value * mult // KIB


def parse_domain(xml_text: str) -> dict:
    """A running domain's live XML -> what the forecast needs: the disk facts of common/_domxml (disks,
    watchdog, on_lockfailure) plus maximum memory (KiB), hugepage backing and its NUMA nodes."""
    try:
        facts = _domxml.parse_domain(xml_text)
        root = _domxml.parse_xml(xml_text)
    except _domxml.DomainXMLError as exc:
        raise ForecastError(str(exc)) from exc
    if root.tag == "domstatus":
        root = root.find("domain")
    memory = _kib(root.find("memory"))
    maxmem = _kib(root.find("maxMemory"))
    hugepages = None
    backing = root.find("memoryBacking")
    if backing is not None and backing.find("hugepages") is not None:
        pages = backing.find("hugepages").findall("page")
        size = None
        if pages and pages[0].get("size"):
            elem = ET.Element("size", unit=pages[0].get("unit") or "KiB")
            elem.text = pages[0].get("size")
            size = _kib(elem)
        hugepages = {"page_kib": size}
    nodes = None
    numatune = root.find("numatune")
    if numatune is not None and numatune.find("memory") is not None:
        mem = numatune.find("memory")
        if mem.get("mode", "strict") in ("strict", "restrictive"):
            nodes = _node_set(mem.get("nodeset"))
    facts.update({"memory_kib": memory, "max_memory_kib": maxmem, "hugepages": hugepages, "numa_nodes": nodes})
    return facts


# ---- the write error outcome ---------------------------------------------------------------------------------------


def write_error_outcome(error_policy) -> str:
    """libvirt error_policy (QEMU werror) -> what a full storage does: ``pause`` (stop, enospace, or no policy:
    QEMU's default werror=enospc), ``guest_error`` (report), ``ignored`` (ignore: the write is dropped)."""
    if error_policy in (None, "", "default", "stop", "enospace"):
        return "pause"
    if error_policy == "report":
        return "guest_error"
    if error_policy == "ignore":
        return "ignored"
    return "pause"


def writable(disk: dict) -> bool:
    return disk.get("device", "disk") in ("disk", "lun") and not disk.get("readonly")


# ---- the forecast --------------------------------------------------------------------------------------------------


def storage_free(storage: dict, qemu_root: bool):
    """(bytes free to QEMU now, basis). Filesystem: f_bavail (f_bfree when QEMU runs as root). Thin pool: the
    data not yet used, ``size * (100 - data_percent) / 100``."""
    if storage.get("kind") == "thin_pool":
        size, pct = storage.get("size_bytes"), storage.get("data_percent")
        if size is None or pct is None:
            return None, "thin_pool_data_percent"
        return int(size * (100.0 - pct) / 100.0), "thin_pool_data_percent"
    if qemu_root:
        return storage.get("root_free_bytes"), "f_bfree"
    return storage.get("available_bytes"), "f_bavail"


def autoextend_reach(storage: dict):
    """Bytes LVM can still add to a thin pool by itself (the VG's free space), or 0 when autoextend is off
    (threshold 100, the lvm.conf default, or percent 0)."""
    threshold, percent = storage.get("autoextend_threshold"), storage.get("autoextend_percent")
    if threshold is None or threshold >= 100 or not percent:
        return 0
    return int(storage.get("vg_free_bytes") or 0)


def _severity_worst(items):
    sev = [i["severity"] for i in items if i.get("severity")]
    return min(sev, key=lambda s: SEVERITY_ORDER[s]) if sev else None


def _storage_forecast(key: str, storage: dict, entries: list, qemu_root: bool) -> tuple:
    """One storage -> (its public entry, its risks)."""
    free, basis = storage_free(storage, qemu_root)
    remaining = sum(e["remaining_bytes"] for e in entries if e["remaining_bytes"] is not None)
    unknown = [e for e in entries if e["remaining_bytes"] is None]
    reach = autoextend_reach(storage) if storage.get("kind") == "thin_pool" else 0
    name = storage.get("name") or key
    what = "thin pool" if storage.get("kind") == "thin_pool" else "filesystem"
    headroom = None if free is None else free - remaining
    over = free is not None and remaining > free
    pausing = sorted({e["domain"] for e in entries if e["outcome"] == "pause" and (e["remaining_bytes"] or 0) > 0})
    erroring = sorted(
        {e["domain"] for e in entries if e["outcome"] == "guest_error" and (e["remaining_bytes"] or 0) > 0}
    )
    dropping = sorted({e["domain"] for e in entries if e["outcome"] == "ignored" and (e["remaining_bytes"] or 0) > 0})
    alone = []
    for e in entries:
        e["can_fill_alone"] = free is not None and (e["remaining_bytes"] or 0) > free
        if e["can_fill_alone"]:
            alone.append(e)
    numbers = {
        "free_bytes": free,
        "free_basis": basis,
        "remaining_growth_bytes": remaining,
        "total_bytes": storage.get("total_bytes") if what == "filesystem" else storage.get("size_bytes"),
        "autoextend_reach_bytes": reach if what == "thin pool" else None,
        "disks": len(entries),
    }
    risks = []
    severity = None
    actions = []
    if over:
        shortfall = remaining - free
        covered = reach >= shortfall
        severity = "critical" if alone or free <= 0 else "warning"
        if what == "thin pool" and covered:
            severity = "warning" if severity == "critical" else "info"
        if what == "thin pool":
            vg, _sep, pool = name.partition("/")
            actions.append(
                f"grow thin pool {name} by {grow_text(shortfall)} (lvextend -L +{grow_text(shortfall)} "
                f"{vg}/{pool}; the volume group has {size_text(storage.get('vg_free_bytes'))} free)"
            )
            if not reach:
                actions.append(
                    f"enable autoextend for {name}: activation/thin_pool_autoextend_threshold below 100 (e.g. 80) "
                    "and thin_pool_autoextend_percent (e.g. 20) in lvm.conf, with dmeventd monitoring the pool"
                )
        else:
            actions.append(
                f"grow filesystem {name} by {grow_text(shortfall)} (it has {size_text(free)} free for "
                f"QEMU; its disks can still claim {size_text(remaining)}), or move disks off it"
            )
        if pausing:
            first = (
                "any of " + ", ".join(pausing) + ": the first whose write finds the storage full pauses first; "
                "without a growth rate that order is unknown"
            )
        else:
            first = None
        summary = (
            f"{what} {name} is overcommitted: its {len(entries)} disk(s) can still claim {size_text(remaining)}, "
            f"{size_text(free)} is free to QEMU ({basis}); short by {size_text(shortfall)}"
        )
        if what == "thin pool" and reach:
            summary += f"; autoextend can add up to {size_text(reach)} from the volume group"
        if alone:
            summary += (
                "; "
                + ", ".join(f"{e['domain']} ({e['target']}, {size_text(e['remaining_bytes'])})" for e in alone)
                + " can fill it alone"
            )
        risks.append(
            {
                "kind": "storage_overcommitted",
                "severity": severity,
                "storage": key,
                "domains": sorted({e["domain"] for e in entries}),
                "summary": summary,
                "numbers": dict(numbers, shortfall_bytes=shortfall),
                "headroom_bytes": headroom,
                "would_pause": pausing,
                "would_see_errors": erroring,
                "would_drop_writes": dropping,
                "first_to_pause": first,
                "can_fill_alone": [e["domain"] for e in alone],
                "actions": list(actions),
            }
        )
        for e in entries:
            if e["outcome"] == "pause" or not (e["remaining_bytes"] or 0):
                continue
            sev = "critical" if e["outcome"] == "ignored" else "warning"
            consequence = (
                "the guest sees write errors instead of a pause (its filesystem may turn read-only or lose data)"
                if e["outcome"] == "guest_error"
                else "failed writes are dropped and the guest is told they succeeded: silent data loss"
            )
            risks.append(
                {
                    "kind": "write_errors_in_guest" if e["outcome"] == "guest_error" else "writes_dropped",
                    "severity": sev,
                    "storage": key,
                    "domains": [e["domain"]],
                    "summary": f"{e['domain']} disk {e['target']} (error_policy {e['error_policy']}) is on "
                    f"overcommitted {what} {name}: when it fills, {consequence}",
                    "numbers": dict(numbers, remaining_bytes=e["remaining_bytes"]),
                    "headroom_bytes": headroom,
                    "actions": [
                        f"set error_policy='stop' (or 'enospace') on disk {e['target']} of {e['domain']} so the guest "
                        "pauses instead, then give the storage the space it lacks"
                    ],
                }
            )
    if what == "thin pool":
        meta = storage.get("metadata_percent")
        if meta is not None and meta >= METADATA_WARN_PERCENT:
            msev = "critical" if meta >= METADATA_CRITICAL_PERCENT else "warning"
            risks.append(
                {
                    "kind": "thin_pool_metadata",
                    "severity": msev,
                    "storage": key,
                    "domains": sorted({e["domain"] for e in entries}),
                    "summary": f"thin pool {name} metadata is {meta:.1f}% full: when it is full the pool fails "
                    "every write of every thin LV in it",
                    "numbers": dict(numbers, metadata_percent=meta),
                    "headroom_bytes": None,
                    "actions": [f"grow the metadata of {name} (lvextend --poolmetadatasize +N {name})"],
                }
            )
    entry = {
        "key": key,
        "kind": storage.get("kind"),
        "name": name,
        "device": storage.get("device"),
        "fstype": storage.get("fstype"),
        "total_bytes": numbers["total_bytes"],
        "free_bytes": free,
        "free_basis": basis,
        "remaining_growth_bytes": remaining,
        "headroom_bytes": headroom,
        "overcommitted": over,
        "severity": _severity_worst(risks),
        "would_pause": pausing,
        "would_see_errors": erroring,
        "would_drop_writes": dropping,
        "can_fill_alone": [e["domain"] for e in alone],
        "unknown_growth": [f"{e['domain']}:{e['target']}" for e in unknown],
        "disks": [
            {
                k: e[k]
                for k in (
                    "domain",
                    "target",
                    "path",
                    "capacity_bytes",
                    "occupied_bytes",
                    "remaining_bytes",
                    "error_policy",
                    "outcome",
                    "can_fill_alone",
                )
            }
            for e in entries
        ],
    }
    for k in ("data_percent", "metadata_percent", "vg", "vg_free_bytes", "autoextend_threshold", "autoextend_percent"):
        if k in storage:
            entry[k] = storage[k]
    entry["actions"] = actions
    return entry, risks


def _config_risks(dom: dict) -> list:
    out = []
    wd = dom.get("watchdog") or {}
    if wd.get("action") == "pause":
        out.append(
            {
                "kind": "watchdog_pause",
                "severity": "warning",
                "storage": None,
                "domains": [dom["name"]],
                "summary": f"{dom['name']} has a {wd.get('model')} watchdog with action pause: a guest that stops "
                "feeding it is paused (and stays paused) instead of being reset",
                "numbers": {},
                "headroom_bytes": None,
                "actions": [f"set <watchdog action='reset'/> on {dom['name']} unless someone watches for the pause"],
            }
        )
    if dom.get("on_lockfailure") == "pause":
        out.append(
            {
                "kind": "lockfailure_pause",
                "severity": "info",
                "storage": None,
                "domains": [dom["name"]],
                "summary": f"{dom['name']} has on_lockfailure=pause: losing its disk lease (lock manager) pauses it",
                "numbers": {},
                "headroom_bytes": None,
                "actions": ["keep the lock manager's lease storage healthy, or choose on_lockfailure poweroff/restart"],
            }
        )
    return out


def _memory_risk(domains: list, meminfo: dict):
    total, swap = meminfo.get("MemTotal"), meminfo.get("SwapTotal") or 0
    if not total:
        return None
    claimed = sum((d.get("memory_kib") or 0) * KIB for d in domains)
    if claimed <= total:
        return None
    over_all = claimed > total + swap
    names = sorted(d["name"] for d in domains)
    return {
        "kind": "memory_overcommit",
        "severity": "warning" if over_all else "info",
        "storage": None,
        "domains": names,
        "summary": (
            f"the running guests may claim {size_text(claimed)} of memory; the host has {size_text(total)} "
            f"and {size_text(swap)} swap"
            + (": the kernel's OOM killer can kill a QEMU" if over_all else ": guests rely on swap")
        ),
        "numbers": {"guest_memory_bytes": claimed, "mem_total_bytes": total, "swap_total_bytes": swap},
        "headroom_bytes": total + swap - claimed,
        "actions": [
            f"add {grow_text(claimed - total - swap if over_all else claimed - total)} of memory or swap, "
            "lower the guests' memory, or move domains to another host"
        ],
    }


def _hugepage_risks(domains: list, host_pages: dict, meminfo: dict) -> list:
    """Per hugepage-backed domain: its pages against the free pages of the NUMA nodes it may use. Its own pages
    are held while it runs; when free pages cannot hold it again, a restart after a stop races the other users of
    the pool and a second copy (a migration in, a clone) cannot start."""
    out = []
    default_kib = (meminfo.get("Hugepagesize") or DEFAULT_HUGEPAGE_KIB * KIB) // KIB
    for dom in domains:
        hp = dom.get("hugepages")
        if not hp or not dom.get("memory_kib"):
            continue
        page_kib = hp.get("page_kib") or default_kib
        need = math.ceil(dom["memory_kib"] / page_kib)
        nodes = dom.get("numa_nodes")
        per_node = {
            n: (host_pages.get(str(n)) or host_pages.get(n) or {}).get(str(page_kib))
            for n in (nodes if nodes is not None else sorted(host_pages, key=int))
        }
        free = sum((v or {}).get("free", 0) for v in per_node.values())
        if free >= need:
            continue
        where = "node(s) " + ",".join(str(n) for n in per_node) if nodes is not None else "all nodes"
        out.append(
            {
                "kind": "hugepages_short",
                "severity": "info",
                "storage": None,
                "domains": [dom["name"]],
                "summary": f"{dom['name']} needs {need} huge pages of {page_kib} KiB; {where} have {free} free: "
                "it could not be started again if another user takes the pages it holds now",
                "numbers": {"pages_needed": need, "pages_free": free, "page_kib": page_kib},
                "headroom_bytes": (free - need) * page_kib * KIB,
                "actions": [
                    f"reserve {need - free} more {page_kib} KiB pages on {where} (kvmops.fleet.kvm_host_tune hugepages)"
                ],
            }
        )
    return out


def forecast(facts: dict, checks=CHECKS) -> dict:
    """facts -> {storages, risks, domains, summary}.

    ``facts``: {"qemu_root": bool, "domains": [{name, uuid, memory_kib, hugepages, numa_nodes, watchdog,
    on_lockfailure, disks: [{target, device, readonly, path, format, error_policy, capacity_bytes,
    occupied_bytes, storage, note}]}], "storages": {key: {kind: filesystem|thin_pool, name, ...}},
    "meminfo": {...}, "hugepages": {node: {page_kib: {total, free}}}}. A disk with ``storage`` None is not
    forecast (network disks, storage not found); its ``note`` says why."""
    qemu_root = bool(facts.get("qemu_root"))
    storages = facts.get("storages") or {}
    by_storage = {}
    dom_out = []
    for dom in sorted(facts.get("domains") or [], key=lambda d: d["name"]):
        disks = []
        for disk in dom.get("disks") or []:
            if not writable(disk):
                continue
            cap, occ = disk.get("capacity_bytes"), disk.get("occupied_bytes")
            remaining = max(0, cap - occ) if cap is not None and occ is not None else None
            entry = {
                "domain": dom["name"],
                "target": disk.get("target"),
                "path": disk.get("path"),
                "format": disk.get("format"),
                "capacity_bytes": cap,
                "occupied_bytes": occ,
                "occupied_source": disk.get("occupied_source"),
                "remaining_bytes": remaining,
                "error_policy": disk.get("error_policy"),
                "outcome": write_error_outcome(disk.get("error_policy")),
                "storage": disk.get("storage"),
                "note": disk.get("note"),
                "can_fill_alone": False,
            }
            disks.append(entry)
            if entry["storage"] is not None and "storage" in checks:
                by_storage.setdefault(entry["storage"], []).append(entry)
        dom_out.append({"name": dom["name"], "uuid": dom.get("uuid"), "disks": disks})
    storage_out, risks = [], []
    if "storage" in checks:
        for key in sorted(by_storage):
            entry, found = _storage_forecast(key, storages.get(key) or {"name": key}, by_storage[key], qemu_root)
            storage_out.append(entry)
            risks += found
    doms = facts.get("domains") or []
    if "config" in checks:
        for dom in sorted(doms, key=lambda d: d["name"]):
            risks += _config_risks(dom)
    if "memory" in checks:
        mem = _memory_risk(doms, facts.get("meminfo") or {})
        if mem:
            risks.append(mem)
    if "hugepages" in checks:
        risks += _hugepage_risks(doms, facts.get("hugepages") or {}, facts.get("meminfo") or {})
    risks.sort(key=lambda r: (SEVERITY_ORDER[r["severity"]], r["kind"], r.get("storage") or "", r["domains"]))
    for d in dom_out:
        mine = [r for r in risks if d["name"] in r["domains"]]
        d["risks"] = sorted({r["kind"] for r in mine})
        d["severity"] = _severity_worst(mine)
        d["pauses_when_full"] = any(x["outcome"] == "pause" for x in d["disks"])
    by_sev = {}
    for r in risks:
        by_sev[r["severity"]] = by_sev.get(r["severity"], 0) + 1
    summary = {
        "domains": len(dom_out),
        "disks": sum(len(d["disks"]) for d in dom_out),
        "storages": len(storage_out),
        "overcommitted": sum(1 for s in storage_out if s["overcommitted"]),
        "at_risk_domains": sorted(d["name"] for d in dom_out if d["risks"]),
        "risks": len(risks),
        "by_severity": by_sev,
    }
    return {"storages": storage_out, "risks": risks, "domains": dom_out, "summary": summary}
