# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read what the pause-risk forecast needs, within the task's timeout, and hand it to the pure _plan.

1. parent, no libvirt: libvirtd's status files (/run/libvirt/qemu, root, qemu:///system only). A domain with a
   job in flight can make every enumerating call hang (see pause/_collect_io): with one present, the running
   domains the status files name are looked up one by one instead of listed.
2. forked worker (common/_libvirt_io.run_bounded), ONE read-only connection, at most 60 % of the timeout:
   the state of every domain in one round trip (getAllDomainStats(STATE, NOWAIT), job-free), then XMLDesc of
   each selected running domain (job-free; no block stats: they cost a monitor query per domain), and the
   path of each ``type='volume'`` disk (storage pool look-up).
3. parent: the storage under the disks is probed in child processes first (pause/_evidence_io.StorageProber:
   a storage that does not answer blocks stat/statvfs in uninterruptible sleep, so it is never touched here);
   for storages that answered: stat of each file (st_blocks, st_size, st_dev), the qcow2 header (virtual
   size), the filesystem by st_dev from /proc/self/mountinfo, its statvfs (from the probe); block devices:
   their size, and for LVs ``lvs`` and ``lvmconfig`` (each bounded, killed as a process group). Plus
   qemu.conf (which user QEMU writes as), /proc/meminfo and the free huge pages per NUMA node.

Nothing is written anywhere but the probe markers the pause collector also uses.
"""

from __future__ import annotations

import glob
import os
import stat
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout, find_tool, run_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    KvmError,
    libvirt,
    open_connection,
    raise_worker_error,
    run_bounded,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import RUNNING
from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _evidence_io
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._collect_io import (
    STATUS_DIR,
    local_system_uri,
    probe_seconds,
    read_status_dir,
    selected,
)

SCHEMA_VERSION = 1
QEMU_CONF = "/etc/libvirt/qemu.conf"
NODE_DIR = "/sys/devices/system/node"


class Host:
    """Real host I/O of the forecast; tests pass a subclass or a fake with the same methods."""

    def read_text(self, path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stat(self, path):
        return os.stat(path)

    def head(self, path, size=32):
        with open(path, "rb") as f:
            return f.read(size)

    def realpath(self, path):
        return os.path.realpath(path)

    def block_size(self, device):
        return _evidence_io.Host().block_size(device)

    def hugepages(self) -> dict:
        """{node: {page_kib: {total, free}}} from sysfs."""
        out = {}
        for d in sorted(glob.glob(os.path.join(NODE_DIR, "node[0-9]*", "hugepages", "hugepages-*kB"))):
            node = d.split(os.sep)[-3][4:]
            size = d.rsplit("-", 1)[1][:-2]
            try:
                total = int(self.read_text(os.path.join(d, "nr_hugepages")).strip())
                free = int(self.read_text(os.path.join(d, "free_hugepages")).strip())
            except (OSError, ValueError):
                continue
            out.setdefault(node, {})[size] = {"total": total, "free": free}
        return out

    def tool(self, argv, timeout):
        """-> stdout, or None when the tool is missing, fails or times out."""
        path = find_tool(argv[0])
        if path is None:
            return None
        try:
            rc, out, _err = run_tool([path, *argv[1:]], timeout)
        except (OSError, ToolTimeout):
            return None
        return out if rc == 0 else None


# ---- the libvirt worker (forked) ---------------------------------------------------------------------------------


def worker(emit, uri: str, plan: dict) -> None:
    conn = open_connection(uri)
    emit({"record": "connected"})
    state_flag = libvirt.VIR_DOMAIN_STATS_STATE
    nowait = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
    if plan["bulk"]:
        doms = [d for d, params in conn.getAllDomainStats(state_flag, nowait) if params.get("state.state") == RUNNING]
    else:
        doms = []
        for name in plan["candidates"]:
            try:
                doms.append(conn.lookupByName(name))
            except libvirt.libvirtError:
                continue
    for dom in doms:
        name = dom.name()
        if not selected(name, plan["patterns"]):
            continue
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            emit({"record": "warning", "message": f"{name}: XMLDesc: {exc.get_error_message()}"})
            continue
        volumes = {}
        try:
            facts = _plan.parse_domain(xml)
        except _plan.ForecastError:
            facts = {"disks": []}
        for disk in facts["disks"]:
            if disk.get("type") == "volume" and disk.get("pool") and disk.get("volume"):
                try:
                    pool = conn.storagePoolLookupByName(disk["pool"])
                    volumes[disk["target"]] = pool.storageVolLookupByName(disk["volume"]).path()
                except libvirt.libvirtError as exc:
                    emit(
                        {
                            "record": "warning",
                            "message": f"{name}: volume {disk['pool']}/{disk['volume']}: {exc.get_error_message()}",
                        }
                    )
        emit({"record": "domain", "name": name, "uuid": dom.UUIDString(), "xml": xml, "volumes": volumes})


# ---- host side (parent) --------------------------------------------------------------------------------------------


def _storage_for_file(real: str, st, mounts: list, probe_rec: dict):
    """A file's filesystem as the forecast's storage: key by st_dev, named by its mount point."""
    majmin = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    mount = _plan.mount_by_dev(mounts, majmin, real)
    vfs = (probe_rec or {}).get("statvfs")
    key = f"fs:{majmin}"
    storage = {
        "kind": "filesystem",
        "name": mount["mount_point"] if mount else None,
        "device": mount["source"] if mount else None,
        "fstype": mount["fstype"] if mount else None,
    }
    if vfs:
        frsize = vfs.get("f_frsize") or vfs.get("f_bsize")
        storage.update(
            total_bytes=vfs["f_blocks"] * frsize,
            available_bytes=vfs["f_bavail"] * frsize,
            root_free_bytes=vfs["f_bfree"] * frsize,
        )
    return key, storage


def disk_facts(disk: dict, host, mounts: list, view, lvm: dict, tool_timeout) -> tuple:
    """One writable disk -> (its forecast facts, (storage key, storage) or None). ``lvm`` caches lvs/lvmconfig."""
    out = {
        k: disk.get(k)
        for k in ("target", "type", "device", "format", "path", "readonly", "error_policy", "rerror_policy")
    }
    out.update(capacity_bytes=None, occupied_bytes=None, occupied_source=None, storage=None, note=None)
    path = disk.get("path")
    if disk.get("type") == "network":
        out["note"] = f"network disk ({disk.get('protocol')}): its growth is the server's; not forecast here"
        return out, None
    if not path:
        out["note"] = "no host path (an empty drive or an unresolved volume)"
        return out, None
    found = view.for_disk(dict(disk, type="block" if disk.get("type") == "block" else "file")) if view else None
    if found is not None and not found["answered"]:
        un = found["unresponsive"]
        out["note"] = f"storage {un.get('mount_point') or un.get('target')} did not answer: not touched"
        return out, None
    rec = (found or {}).get("record") or {}
    try:
        real = rec.get("real") or host.realpath(path)
        st = host.stat(real)
    except OSError as exc:
        out["note"] = f"stat {path}: {exc.strerror or exc}"
        return out, None
    if stat.S_ISBLK(st.st_mode):
        size = host.block_size(real)
        if "lvs" not in lvm:
            text = host.tool(
                ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", _plan.LVS_FIELDS], tool_timeout()
            )
            lvm["lvs"] = _plan.parse_lvs(text) if text else []
            conf = host.tool(
                [
                    "lvmconfig",
                    "--type",
                    "full",
                    "activation/thin_pool_autoextend_threshold",
                    "activation/thin_pool_autoextend_percent",
                ],
                tool_timeout(),
            )
            lvm["config"] = _plan.parse_lvmconfig(conf or "")
        lv = _plan.find_lv(lvm["lvs"], path, real)
        if lv is None:  # another name of the same device (/dev/disk/by-id/dm-name-..., /dev/dm-N)
            lv = next((x for x in lvm["lvs"] if x.get("lv_dm_path") and host.realpath(x["lv_dm_path"]) == real), None)
        if lv is not None and lv["thin"] and lv.get("pool_lv"):
            return _plan.thin_disk(out, lv, lvm["lvs"], lvm["config"])
        out.update(
            capacity_bytes=size,
            occupied_bytes=size,
            occupied_source="device_size",
            note="block device: all of it is provisioned, it cannot grow",
        )
        return out, None
    if not stat.S_ISREG(st.st_mode):
        out["note"] = f"{real} is neither a regular file nor a block device"
        return out, None
    capacity = st.st_size
    if disk.get("format") == "qcow2":
        try:
            capacity = _plan.qcow2_virtual_size(host.head(real))
        except OSError as exc:
            out["note"] = f"read qcow2 header of {real}: {exc.strerror or exc}"
            return out, None
        if capacity is None:
            out["note"] = f"{real} has no qcow2 header"
            return out, None
    elif disk.get("format") not in (None, "raw"):
        out["note"] = f"format {disk.get('format')}: its virtual size is not read here"
        capacity = None
    out.update(capacity_bytes=capacity, occupied_bytes=st.st_blocks * 512, occupied_source="st_blocks")
    return out, _storage_for_file(real, st, mounts, rec if rec.get("statvfs") else None)


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def collect(
    uri: str,
    timeout: float,
    patterns=None,
    checks=_plan.CHECKS,
    *,
    started=None,
    host=None,
    status_dir: str = STATUS_DIR,
    probe_dir=None,
) -> dict:
    """-> the kvm_pause_risk facts. Raises LibvirtConnectError / LibvirtOperationError (common/_libvirt_io)."""
    host = host or Host()
    started = time.monotonic() if started is None else started
    deadline = started + timeout
    patterns = list(patterns or [])
    errors, warnings = [], []
    status = read_status_dir(status_dir, _evidence_io.Host()) if local_system_uri(uri) else {}
    busy = sorted(n for n, s in status.items() if s.get("job"))
    plan = {
        "bulk": not busy,
        "candidates": [n for n, s in status.items() if n not in busy and s["state"] == RUNNING],
        "patterns": patterns,
    }
    if busy:
        warnings.append("a job is in flight on " + ", ".join(busy) + ": running domains were looked up by name")
    records, finished = run_bounded(worker, started + 0.6 * timeout, uri, plan)
    domains = [r for r in records if r.get("record") == "domain"]
    warnings += [r["message"] for r in records if r.get("record") == "warning"]
    try:
        raise_worker_error(records, finished, "reading the running domains", round(0.6 * timeout, 2))
    except KvmError as exc:  # a timeout keeps what came; a refused connection is fatal
        if not domains and not any(r.get("record") == "connected" for r in records):
            raise
        errors.append(str(exc))
    parsed = []
    for rec in sorted(domains, key=lambda r: r["name"]):
        try:
            dom = _plan.parse_domain(rec["xml"])
        except _plan.ForecastError as exc:
            errors.append(f"{rec['name']}: {exc}")
            continue
        for disk in dom["disks"]:
            if disk.get("type") == "volume" and disk.get("target") in rec["volumes"]:
                disk["path"] = rec["volumes"][disk["target"]]
        dom["uuid"] = rec["uuid"]
        parsed.append(dom)
    try:
        mounts_text = host.read_text("/proc/self/mountinfo")
    except OSError:
        mounts_text = ""
    mounts = _evidence_io.parse_mountinfo(mounts_text)
    dev_mounts = _plan.parse_mountinfo_devs(mounts_text)
    file_disks = [
        dict(d, type="block" if d.get("type") == "block" else "file")
        for dom in parsed
        for d in dom["disks"]
        if _plan.writable(d) and d.get("path") and d.get("type") != "network"
    ]
    view = None
    if "storage" in checks and file_disks:
        bound = probe_seconds(timeout)
        prober = _evidence_io.StorageProber(probe_dir)
        prober.sweep()
        prober.start(_evidence_io.storage_groups(file_disks, mounts), bound)
        prober.wait(time.time() + min(bound, max(0.1, deadline - time.monotonic() - 0.5)))
        view = _evidence_io.StorageView(prober.verdicts(), mounts)
        warnings += list(prober.warnings)

    def tool_timeout():
        return max(0.2, min(5.0, deadline - time.monotonic() - 0.3))

    storages, lvm, fdomains = {}, {}, []
    for dom in parsed:
        disks = []
        for disk in dom["disks"]:
            if not _plan.writable(disk) or "storage" not in checks:
                continue
            facts, storage = disk_facts(disk, host, dev_mounts, view, lvm, tool_timeout)
            if storage is not None:
                facts["storage"] = storage[0]
                storages.setdefault(storage[0], storage[1])
            disks.append(facts)
        fdomains.append(dict(dom, disks=disks))
    try:
        qemu_root = _plan.qemu_runs_as_root(host.read_text(QEMU_CONF), uri)
    except OSError:
        qemu_root = _plan.qemu_runs_as_root(None, uri)
    meminfo, pages = {}, {}
    if "memory" in checks or "hugepages" in checks:
        try:
            meminfo = _plan.parse_meminfo(host.read_text("/proc/meminfo"))
        except OSError as exc:
            errors.append(f"/proc/meminfo: {exc.strerror or exc}")
    if "hugepages" in checks:
        pages = host.hugepages()
    result = _plan.forecast(
        {"qemu_root": qemu_root, "domains": fdomains, "storages": storages, "meminfo": meminfo, "hugepages": pages},
        checks,
    )
    elapsed = time.monotonic() - started
    if elapsed > timeout:
        errors.append(f"the forecast took {elapsed:.2f} s, more than the timeout of {timeout} s")
    return dict(
        result,
        schema_version=SCHEMA_VERSION,
        uri=uri,
        collected_at=_iso(time.time()),
        duration_seconds=round(elapsed, 3),
        complete=finished and not errors,
        checks=list(checks),
        qemu_runs_as_root=qemu_root,
        errors=errors,
        warnings=warnings,
    )
