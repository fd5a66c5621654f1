# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host evidence for a paused domain: where its disks live and how full that is, endpoints, QEMU log.

The parsers (``parse_mountinfo``, ``mount_for``, ``fs_usage``, ``parse_lvs``, ``relevant_log_lines``)
are pure. ``gather_disk`` / ``gather_domain`` do the I/O through an injected ``Host`` so
tests can hand in fakes. No ansible imports: this runs inside the module's forked worker.

Storage that stops answering (a dead hard NFS mount, a FUSE daemon that hangs, a block device whose I/O
hangs) blocks every stat, statvfs, open or read under it, in uninterruptible sleep: no timeout and no
signal ends such a call. So nothing here touches a disk source in the calling process: ``StorageProber``
runs each storage's checks (statvfs of the mount point, realpath/exists/statvfs of each disk source, an
O_DIRECT read of a block device) in a child process of its own (``PROBE_SCRIPT``), waits for it until a
deadline, and then abandons it. A marker file per storage (``probe-<hash>.json`` in the probe directory,
/run/kvmops-fleet/storage-probes for root) names the probe's PID and start time; a later run that finds
that probe still alive reports the storage as still not answering without starting another one, so at
most one probe per storage exists whatever the number of runs. Which mount a path lives on comes from
/proc/self/mountinfo, which never touches the mount.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io as _drbd_facts_io

LOG_DIR = "/var/log/libvirt/qemu"
LOG_TAIL_BYTES = 64 * 1024
LOG_LINES = 8

# Lines of a QEMU domain log worth showing next to a pause diagnosis.
_RELEVANT = re.compile(
    r"(error|fail|no space|enospc|i/o|eio|nbd|watchdog|panic|terminat|shutting down|migrat|postcopy|"
    r"post-copy|lock|emulation|internal|abort|signal|block|disk|reconnect|connection|tainted)",
    re.IGNORECASE,
)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list:
    """/proc/self/mountinfo -> [{mount_point, fstype, device, options, super_options}] in file order.

    ``device`` is the mount source: the server and export of a network filesystem (``srv:/export``), the
    block device, or what a FUSE daemon named itself. ``super_options`` are the filesystem's own options
    (for NFS: hard/soft, timeo, retrans, proto, the server's address)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split(" - ", 1)
        if len(parts) != 2:
            continue
        left, right = parts[0].split(), parts[1].split()
        if len(left) < 5 or len(right) < 2:
            continue
        mounts.append(
            {
                "mount_point": _unescape(left[4]),
                "fstype": right[0],
                "device": _unescape(right[1]),
                "options": left[5] if len(left) > 5 else "",
                "super_options": right[2] if len(right) > 2 else "",
            }
        )
    return mounts


def mount_for(path: str, mounts: list):
    """The mount a path lives on: longest matching mount point, later mounts shadowing earlier ones."""
    best = None
    for m in mounts:
        mp = m["mount_point"]
        inside = path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best["mount_point"])):
            best = m
    return best


def fs_usage(st) -> dict:
    """statvfs result -> bytes. ``available`` is f_bavail: what an unprivileged writer (QEMU runs as
    libvirt-qemu) may still use, so ext4's root reserve already counts as full."""
    frsize = st.f_frsize or st.f_bsize
    total = st.f_blocks * frsize
    available = st.f_bavail * frsize
    return {
        "total_bytes": total,
        "available_bytes": available,
        "free_bytes": st.f_bfree * frsize,
        "used_percent": round(100.0 * (total - available) / total, 1) if total else None,
    }


def parse_lvs(text: str) -> list:
    """``lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_dm_path,pool_lv,
    data_percent,metadata_percent,lv_attr`` -> list of dicts with float percents."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    out = []
    for report in data.get("report", []):
        for lv in report.get("lv", []):
            entry = dict(lv)
            for key in ("data_percent", "metadata_percent"):
                try:
                    entry[key] = float(lv.get(key)) if lv.get(key) not in (None, "") else None
                except ValueError:
                    entry[key] = None
            out.append(entry)
    return out


def thin_pool_for(dm_path: str, lvs: list):
    """For a thin LV's /dev/mapper path: its thin pool's {name, vg, data_percent, metadata_percent}."""
    lv = next((x for x in lvs if x.get("lv_dm_path") == dm_path), None)
    if lv is None or not lv.get("pool_lv"):
        return None
    pool = next((x for x in lvs if x.get("lv_name") == lv["pool_lv"] and x.get("vg_name") == lv.get("vg_name")), None)
    if pool is None:
        return None
    return {
        "name": "{}/{}".format(pool.get("vg_name"), pool["lv_name"]),
        "data_percent": pool.get("data_percent"),
        "metadata_percent": pool.get("metadata_percent"),
    }


_STARTING = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)?\+0000: starting up libvirt")


def last_start(text: str):
    """Epoch seconds of the last 'starting up libvirt' line libvirt wrote into a QEMU log (UTC), or None."""
    found = None
    for line in text.splitlines():
        m = _STARTING.match(line)
        if m:
            found = m
    if found is None:
        return None
    secs = calendar.timegm(time.strptime(f"{found.group(1)} {found.group(2)}", "%Y-%m-%d %H:%M:%S"))
    return secs + (float(found.group(3)) if found.group(3) else 0.0)


def relevant_log_lines(text: str, limit: int = LOG_LINES) -> list:
    """The last ``limit`` lines of a QEMU log that say something about errors, storage, jobs or the guest
    dying, from the domain's current run only (after the last 'starting up' line); the qemu command line
    block libvirt writes at each start is skipped."""
    lines = []
    all_lines = text.splitlines()
    for i in range(len(all_lines) - 1, -1, -1):
        if "starting up libvirt" in all_lines[i]:
            all_lines = all_lines[i + 1 :]
            break
    for line in all_lines:
        s = line.strip()
        if not s or s.startswith(("-", "LC_ALL=")) or s.endswith("\\") or "/usr/bin/qemu" in s:
            continue
        if _RELEVANT.search(s):
            lines.append(s[:400])
    return lines[-limit:]


def pool_for_path(path: str, pools: list):
    """The libvirt storage pool whose target directory holds ``path`` (longest target wins)."""
    best = None
    for p in pools:
        target = (p.get("target_path") or "").rstrip("/")
        inside = bool(target) and path.startswith(target + "/")
        if inside and (best is None or len(target) > len(best["target_path"].rstrip("/"))):
            best = p
    return best


def endpoint_text(host: dict) -> str:
    if host.get("transport") == "unix":
        return "unix:{}".format(host.get("socket"))
    port = host.get("port")
    return "{}:{}".format(host.get("name"), port if port is not None else "default")


class Host:
    """Real host I/O; tests pass a subclass or a fake with the same methods."""

    def statvfs(self, path):
        return os.statvfs(path)

    def realpath(self, path):
        return os.path.realpath(path)

    def exists(self, path):
        return os.path.exists(path)

    def read_text(self, path, tail=None):
        with open(path, "rb") as f:
            if tail:
                try:
                    f.seek(-tail, os.SEEK_END)
                except OSError:
                    f.seek(0)
            return f.read().decode("utf-8", "replace")

    def mtime(self, path):
        return os.stat(path).st_mtime

    def ctime(self, path):
        return os.stat(path).st_ctime

    def block_size(self, device):
        """Size in bytes of a block device (from /sys/class/block/NAME/size, 512-byte sectors), or None."""
        try:
            with open(f"/sys/class/block/{os.path.basename(device)}/size", encoding="ascii") as f:
                return int(f.read().strip()) * 512
        except (OSError, ValueError):
            return None

    def now(self):
        return time.time()

    def drbd(self, timeout: float) -> dict:
        """What DRBD says on this host (drbd/_facts_io.gather: /proc/drbd, then drbdsetup and dmesg, each under
        ``timeout``); without the DRBD module only the failed open of /proc/drbd, no command."""
        return _drbd_facts_io.gather(timeout)

    def connect(self, host: dict, timeout: float):
        """Bounded connect to the endpoint the domain XML names; returns None or an error text."""
        if host.get("transport") == "unix":
            family, addr = socket.AF_UNIX, host.get("socket")
        else:
            family, addr = None, (host.get("name"), host.get("port") or 10809)
        try:
            if family is None:
                sock = socket.create_connection(addr, timeout=timeout)
            else:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(addr)
            sock.close()
            return None
        except (OSError, ValueError) as exc:
            return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)

    def lvs(self, timeout: float):
        # Not AnsibleModule.run_command: it has no timeout (a stuck LVM must cost at most its bound), and this
        # module also runs outside Ansible, in the collector program.
        try:
            proc = subprocess.run(  # pylint: disable=ansible-bad-function
                [
                    "lvs",
                    "--reportformat",
                    "json",
                    "--units",
                    "b",
                    "--nosuffix",
                    "-o",
                    "lv_name,vg_name,lv_dm_path,pool_lv,data_percent,metadata_percent,lv_attr",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return []
        return parse_lvs(proc.stdout.decode("utf-8", "replace")) if proc.returncode == 0 else []


# a DRBD device: /dev/drbdN (what /dev/drbd/by-res/RES/VOL and /dev/drbd/by-disk/... link to), or the by-res
# name itself when it does not resolve
_DRBD_MINOR = re.compile(r"^/dev/drbd(\d+)$")
_DRBD_BY_RES = re.compile(r"^/dev/drbd/by-res/([^/]+)(?:/(\d+))?$")
# local disk states whose data a volume can use
_DRBD_DATA = ("UpToDate",)


def drbd_device(path, real):
    """(minor, resource, volume) of a block disk source that is a DRBD device (each None when its path does not
    say), or None when it is not one. ``real`` is the path with its symlinks resolved."""
    minor = name = volume = None
    for p in (real, path):
        m = _DRBD_MINOR.match(p or "")
        if m:
            minor = int(m.group(1))
            break
    m = _DRBD_BY_RES.match(path or "")
    if m:
        name, volume = m.group(1), int(m.group(2)) if m.group(2) is not None else None
    if minor is None and name is None:
        return None
    return minor, name, volume


def drbd_evidence(device, facts: dict) -> dict:
    """PURE: the DRBD state of one disk's device from the host's DRBD facts (drbd/_facts_io.gather).

    -> {resource, minor, volume, role, disk_state, quorum, suspended, peers [{name, address, connection_state,
    role, disk_state}], data_access, verdict, summary, remediation, split_brain, error}. ``data_access``: the
    device can serve I/O now (its own disk UpToDate or a connected peer's, quorum not lost, I/O not
    suspended). A device the facts do not know (DRBD not loaded, a command that failed) gets ``error`` and
    ``data_access`` None."""
    minor, name, volume = device
    for r in (facts or {}).get("resources") or []:
        for v in r.get("volumes") or []:
            if minor is not None:
                hit = v.get("minor") == minor
            else:
                hit = r.get("name") == name and (volume is None or v.get("volume") == volume)
            if hit:
                return _drbd_view(r, v)
    errors = list((facts or {}).get("errors") or [])
    if facts is None or not facts.get("loaded"):
        why = "the DRBD kernel module is not loaded (no /proc/drbd)"
    else:
        why = "DRBD does not list it" + (f" ({'; '.join(errors)})" if errors else "")
    return {
        "resource": name,
        "minor": minor,
        "volume": volume,
        "data_access": None,
        "verdict": None,
        "error": f"the state of DRBD device {_drbd_label(name, minor)} is unknown: {why}",
    }


def _drbd_label(name, minor):
    return " ".join(x for x in (name and f"resource {name}", minor is not None and f"minor {minor}") if x) or "?"


def _drbd_view(r: dict, v: dict) -> dict:
    peers = []
    for p in r.get("peers") or []:
        pv = next((x for x in p.get("volumes") or [] if x.get("volume") == v.get("volume")), {})
        peers.append(
            {
                "name": p.get("name"),
                "address": p.get("address"),
                "connection_state": p.get("connection_state"),
                "role": p.get("role"),
                "disk_state": pv.get("disk_state"),
            }
        )
    local = v.get("disk_state")
    served_by = [p for p in peers if p["connection_state"] == "Connected" and p["disk_state"] in _DRBD_DATA]
    data = local in _DRBD_DATA or bool(served_by)
    return {
        "resource": r.get("name"),
        "minor": v.get("minor"),
        "volume": v.get("volume"),
        "role": r.get("role"),
        "disk_state": local,
        "quorum": v.get("quorum"),
        "suspended": bool(r.get("suspended")),
        "peers": peers,
        "data_access": bool(data and v.get("quorum") is not False and not r.get("suspended")),
        "verdict": r.get("verdict"),
        "summary": r.get("summary"),
        "remediation": list(r.get("remediation") or []),
        "split_brain": bool((r.get("split_brain") or {}).get("detected")),
        "error": None,
    }


def _drbd_for(path, real, host, cache: dict, timeout: float):
    """The DRBD evidence of a block disk, or None when it is not a DRBD device; the host's DRBD state is read
    once per run (``cache``), and only when a disk is a DRBD device."""
    device = drbd_device(path, real)
    if device is None:
        return None
    if "drbd" not in cache:
        cache["drbd"] = host.drbd(timeout)
    return drbd_evidence(device, cache["drbd"])


def probe_direct(host: Host, path: str) -> dict:
    """What a storage probe finds for a file disk's ``path``, asked in this process through ``host``
    (tests hand in fakes; the collector asks ``StorageProber``, whose child process may block instead)."""
    real = host.realpath(path)
    exists = host.exists(real)
    try:
        st = host.statvfs(real if exists else os.path.dirname(real))
    except OSError as exc:
        return {"step": "path", "target": path, "real": real, "exists": exists, "error": exc.strerror or str(exc)}
    return {"step": "path", "target": path, "real": real, "exists": exists, "statvfs": statvfs_dict(st)}


def statvfs_dict(st) -> dict:
    return {k: getattr(st, k) for k in ("f_frsize", "f_bsize", "f_blocks", "f_bavail", "f_bfree")}


def _mount_fields(mount) -> dict:
    return {
        "mount_point": mount["mount_point"] if mount else None,
        "device": mount["device"] if mount else None,
        "fstype": mount["fstype"] if mount else None,
    }


def gather_disk(
    disk: dict, host: Host, mounts: list, pools: list, *, lvs_cache: dict, timeout: float, storage=None
) -> dict:
    """Evidence for one disk of the domain's XML (see _domxml._disk): filesystem/device, fill, endpoint.

    ``storage`` (a ``StorageView``) holds what the storage probes found; a disk whose storage did not
    answer gets ``unresponsive`` (which mount or device, since when) and nothing under it is touched.
    Without it the checks run here, through ``host`` (tests with a fake host)."""
    ev = {"filesystem": None, "block_device": None, "endpoints": [], "pool": None, "thin_pool": None, "errors": []}
    path = disk.get("path")
    found = storage.for_disk(disk) if storage is not None and path else None
    if disk.get("type") == "volume" and disk.get("pool"):
        ev["pool"] = next((p for p in pools if p.get("name") == disk["pool"]), {"name": disk["pool"]})
    if found is not None and not found["answered"]:
        # the storage did not answer: nothing under it may be touched (stat, realpath, statvfs all block)
        ev["unresponsive"] = found["unresponsive"]
        if disk.get("type") == "block":
            ev["block_device"] = {"path": path, "device": path, "total_bytes": host.block_size(path)}
            # a DRBD device whose I/O is frozen (suspended, no quorum) does not answer either; which one it is
            # comes from /dev's links (devtmpfs, never the device) and DRBD's own status
            if path.startswith("/dev/drbd"):
                drbd = _drbd_for(path, host.realpath(path), host, lvs_cache, timeout)
                if drbd is not None:
                    ev["drbd"] = drbd
        else:
            # the same keys as a filesystem that answered; its fill is unknown
            ev["filesystem"] = dict(
                dict.fromkeys(("total_bytes", "available_bytes", "free_bytes", "used_percent")),
                **_mount_fields(found["mount"]),
                responsive=False,
            )
        ev["pool"] = ev["pool"] or pool_for_path(path, pools)
        return ev
    if path and disk.get("type") in ("file", "dir"):
        rec = found["record"] if found is not None else probe_direct(host, path)
        real = rec.get("real") or path
        usage = None
        if rec.get("statvfs"):
            usage = fs_usage(_Statvfs(rec["statvfs"]))
        else:
            ev["errors"].append("statvfs {}: {}".format(real, rec.get("error") or "no answer"))
        mount = mount_for(real, mounts)
        if usage is not None or mount is not None:
            ev["filesystem"] = dict(usage or {}, **_mount_fields(mount))
            if found is not None:
                ev["filesystem"]["responsive"] = True
        ev["pool"] = ev["pool"] or pool_for_path(real, pools)
    elif path and disk.get("type") == "block":
        real = (found or {}).get("record", {}).get("real") or host.realpath(path)
        ev["block_device"] = {"path": path, "device": real, "total_bytes": host.block_size(real)}
        if found is not None:
            ev["block_device"]["responsive"] = True
        drbd = _drbd_for(path, real, host, lvs_cache, timeout)
        if drbd is not None:
            ev["drbd"] = drbd
        if "/dev/mapper/" in path or real.startswith("/dev/dm-"):
            if "lvs" not in lvs_cache:
                lvs_cache["lvs"] = host.lvs(timeout)
            dm_path = path if path.startswith("/dev/mapper/") else None
            if dm_path:
                ev["thin_pool"] = thin_pool_for(dm_path, lvs_cache["lvs"])
        ev["pool"] = ev["pool"] or pool_for_path(path, pools)
    elif disk.get("type") == "network":
        for h in disk.get("hosts") or []:
            if h.get("transport") == "unix" and not h.get("socket"):
                continue
            err = host.connect(h, timeout)
            created = None
            if h.get("transport") == "unix":
                try:
                    created = host.ctime(h["socket"])
                except OSError:
                    created = None
            ev["endpoints"].append(
                {"endpoint": endpoint_text(h), "reachable": err is None, "error": err, "created": created}
            )
    return ev


def log_evidence(name: str, host: Host, log_dir: str = LOG_DIR) -> dict:
    path = os.path.join(log_dir, f"{name}.log")
    try:
        text = host.read_text(path, tail=LOG_TAIL_BYTES)
    except OSError as exc:
        return {"path": path, "lines": [], "error": exc.strerror or str(exc), "started_at": None}
    return {"path": path, "lines": relevant_log_lines(text), "error": None, "started_at": last_start(text)}


def paused_since(status_mtime, job: dict | None, now: float) -> dict:
    """How long the domain has been paused, and how that is known.

    libvirt keeps no pause timestamp. Its status XML is rewritten on every state change, so its mtime is
    when the domain last changed state (an upper bound of the pause start: the domain has been paused
    at least this long). An async job in the status XML carries its own start time (asyncStarted, ms)."""
    if job and job.get("started_ms"):
        start = job["started_ms"] / 1000.0
        return {"since": start, "seconds": max(0.0, round(now - start, 1)), "source": "status_xml_job_started"}
    if status_mtime is not None:
        return {"since": status_mtime, "seconds": max(0.0, round(now - status_mtime, 1)), "source": "status_xml_mtime"}
    return {"since": None, "seconds": None, "source": "unknown"}


class _Statvfs:
    """A statvfs result carried as a dict (from a probe's JSON line), with the attributes fs_usage reads."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


# ---- storage probes: the checks that can block, each storage in a process of its own --------------------

PROBE_TAG = "kvmops-fleet-storage-probe"
# how long a run waits for a probe adopted from an earlier run that has blocked for longer than a probe may
# take: its storage still does not answer unless the probe ends right now
STALE_GRACE = 0.25
# Run as ``python -I -S -c PROBE_SCRIPT kvmops-fleet-storage-probe '<json steps>'``: one JSON line per step
# as soon as it is done, then {"step": "done"}. Stdlib only; it touches nothing but what the steps name.
PROBE_SCRIPT = r"""
import json, mmap, os, sys
def out(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()
def vfs(st):
    return {k: getattr(st, k) for k in ("f_frsize", "f_bsize", "f_blocks", "f_bavail", "f_bfree")}
for kind, target in json.loads(sys.argv[2]):
    rec = {"step": kind, "target": target}
    try:
        if kind == "mount":
            rec["statvfs"] = vfs(os.statvfs(target))
        elif kind == "path":
            real = os.path.realpath(target)
            rec["real"], rec["exists"] = real, os.path.exists(real)
            rec["statvfs"] = vfs(os.statvfs(real if rec["exists"] else os.path.dirname(real)))
        elif kind == "block":
            real = rec["real"] = os.path.realpath(target)
            try:
                fd = os.open(real, os.O_RDONLY | os.O_DIRECT)
            except OSError:
                fd = os.open(real, os.O_RDONLY)
            try:
                buf = mmap.mmap(-1, 4096)
                try:
                    os.preadv(fd, [buf], 0)
                except OSError:
                    os.pread(fd, 512, 0)
            finally:
                os.close(fd)
    except OSError as exc:
        rec["error"] = exc.strerror or str(exc)
    out(rec)
out({"step": "done"})
"""


def default_probe_dir() -> str:
    """Where probe markers live: /run/kvmops-fleet/storage-probes for root, else a per-user temp dir."""
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/kvmops-fleet/storage-probes"
    return os.path.join(tempfile.gettempdir(), f"kvmops-fleet-{os.geteuid()}", "storage-probes")


def proc_identity(pid: int):
    """(state letter, start time in clock ticks) of a PID from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def probe_alive(marker: dict) -> bool:
    """Whether the probe a marker names still exists (not a zombie, same start time: no PID reuse)."""
    try:
        ident = proc_identity(int(marker["pid"]))
    except (KeyError, TypeError, ValueError):
        return False
    return ident is not None and ident[0] not in ("Z", "X") and ident[1] == marker.get("starttime")


def storage_key(disk: dict, mounts: list):
    """(key, kind, mount) of the storage a disk source lives on, or None (no local path).

    File and dir sources belong to the mount their path names (mountinfo only: resolving the path would
    touch the storage); each block device is a storage of its own."""
    path = disk.get("path")
    if not path or not path.startswith("/"):
        return None
    if disk.get("type") in ("file", "dir"):
        mount = mount_for(path, mounts)
        if mount is None:
            return None
        return "mount:{}:{}".format(mount["mount_point"], mount["device"]), "mount", mount
    if disk.get("type") == "block":
        return f"block:{path}", "block", {"mount_point": None, "device": path, "fstype": None, "super_options": ""}
    return None


def storage_groups(disks: list, mounts: list) -> dict:
    """Disk sources -> one probe per storage: {key: {"kind", "mount", "steps": [[kind, target], ...]}}; a
    mount's probe asks the mount point first, then each path on it."""
    groups = {}
    for disk in disks:
        found = storage_key(disk, mounts)
        if found is None:
            continue
        key, kind, mount = found
        if kind == "mount":
            group = groups.setdefault(key, {"kind": kind, "mount": mount, "steps": [["mount", mount["mount_point"]]]})
            step = ["path", disk["path"]]
        else:
            group = groups.setdefault(key, {"kind": kind, "mount": mount, "steps": []})
            step = ["block", disk["path"]]
        if step not in group["steps"]:
            group["steps"].append(step)
    return groups


class StorageView:
    """PURE: the probes' verdicts, per disk. ``for_disk(disk)`` -> None when the disk's storage was not
    probed, else {"answered": True, "record": the probe's record for the path, "mount"} or
    {"answered": False, "mount", "unresponsive": {kind, mount_point, fstype, source, options, target,
    since, seconds, probe_pid, adopted}}."""

    def __init__(self, verdicts: dict, mounts: list):
        self.verdicts, self.mounts = verdicts, mounts

    def for_disk(self, disk: dict):
        found = storage_key(disk, self.mounts)
        if found is None or found[0] not in self.verdicts:
            return None
        v = self.verdicts[found[0]]
        mount = v["mount"]
        path = disk["path"]
        rec = v["records"].get(path)
        if v["answered"]:
            return {"answered": True, "record": rec or {"error": v.get("error") or "no answer"}, "mount": mount}
        mount_dead = v["kind"] == "mount" and mount["mount_point"] not in v["records"]
        if rec is not None and not mount_dead:
            return {"answered": True, "record": rec, "mount": mount}
        return {
            "answered": False,
            "mount": mount,
            "unresponsive": {
                "kind": "mount" if mount_dead else ("block" if v["kind"] == "block" else "path"),
                "mount_point": mount.get("mount_point"),
                "fstype": mount.get("fstype"),
                "source": mount.get("device"),
                "options": mount.get("super_options") or "",
                "target": mount["mount_point"] if mount_dead else path,
                "since": v.get("since"),
                "seconds": v.get("seconds"),
                "probe_pid": v.get("probe_pid"),
                "adopted": v.get("adopted"),
            },
        }


class StorageProber:
    """Probe storages in child processes within a deadline; abandon the ones that block; never two at once.

    ``start(groups, bound)`` starts (or adopts) one probe per storage; ``wait(deadline)`` reads their
    answers until ``deadline`` (time.time()); ``verdicts()`` says per storage whether it answered, since
    when it has not, and which probe is waiting on it. A probe that has not answered by the deadline is
    left running (a process blocked in uninterruptible sleep cannot be killed anyway) and its marker
    stays, so the next run adopts it instead of starting another: at most one probe per storage.
    """

    def __init__(self, probe_dir=None, python=None, clock=time.time):
        self.dir = probe_dir or default_probe_dir()
        self.python = python or sys.executable
        self.clock = clock
        self.probes = {}  # key -> {"group", "proc", "records", "buf", "since", "pid", "adopted", "done", "error"}
        self.warnings = []
        self._dir_ok = None

    # -- markers --
    def _marker(self, key: str) -> str:
        return os.path.join(self.dir, f"probe-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json")

    def _ensure_dir(self) -> bool:
        if self._dir_ok is None:
            try:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                self._dir_ok = os.access(self.dir, os.W_OK)
            except OSError as exc:
                self._dir_ok = False
                self.warnings.append(
                    f"storage probes: cannot use {self.dir} ({exc.strerror or exc}): "
                    "probes of storage that does not answer may pile up"
                )
        return self._dir_ok

    @contextlib.contextmanager
    def _locked(self):
        if not self._ensure_dir():
            yield
            return
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_marker(self, key: str):
        try:
            with open(self._marker(key), encoding="utf-8") as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) else None

    def _write_marker(self, key: str, marker: dict) -> None:
        if not self._dir_ok:
            return
        path = self._marker(key)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(marker, f)
        os.replace(tmp, path)

    def _drop_marker(self, key: str, pid: int) -> None:
        with self._locked():
            marker = self._read_marker(key)
            if marker is not None and marker.get("pid") == pid:
                with contextlib.suppress(OSError):
                    os.unlink(self._marker(key))

    def sweep(self) -> None:
        """Remove markers whose probe has ended (left behind by a run that did not see its probe answer)."""
        if not self._ensure_dir():
            return
        with self._locked():
            for name in os.listdir(self.dir):
                if not (name.startswith("probe-") and name.endswith(".json")):
                    continue
                path = os.path.join(self.dir, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        marker = json.load(f)
                except (OSError, ValueError):
                    marker = {}
                if not probe_alive(marker if isinstance(marker, dict) else {}):
                    with contextlib.suppress(OSError):
                        os.unlink(path)

    # -- probes --
    def start(self, groups: dict, bound: float) -> None:
        """Start a probe per storage not probed yet in this run; adopt a live one from an earlier run.

        An earlier probe older than ``bound`` has blocked longer than any probe may take: the storage
        still does not answer, and no new probe is started. A younger one (a concurrent run's) is
        waited for like an own probe."""
        now = self.clock()
        with self._locked():
            for key, group in groups.items():
                if key in self.probes:
                    continue
                marker = self._read_marker(key) if self._dir_ok else None
                if marker is not None and probe_alive(marker):
                    since = float(marker.get("started") or now)
                    self.probes[key] = {
                        "group": group,
                        "proc": None,
                        "records": [],
                        "buf": b"",
                        "since": since,
                        "pid": marker["pid"],
                        "adopted": True,
                        "done": False,
                        "error": None,
                        "stale": now - since > bound,
                        "marker": marker,
                    }
                    continue
                self.probes[key] = self._spawn(key, group, now)

    def _spawn(self, key: str, group: dict, now: float) -> dict:
        entry = {
            "group": group,
            "proc": None,
            "records": [],
            "buf": b"",
            "since": now,
            "pid": None,
            "adopted": False,
            "done": False,
            "error": None,
            "stale": False,
        }
        try:
            # Not AnsibleModule.run_command: the probe must outlive its bound without being waited for.
            proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
                [self.python, "-I", "-S", "-c", PROBE_SCRIPT, PROBE_TAG, json.dumps(group["steps"])],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
                cwd="/",
            )
        except OSError as exc:
            entry["error"] = f"cannot start a storage probe: {exc.strerror or exc}"
            entry["done"] = True
            return entry
        entry["proc"], entry["pid"] = proc, proc.pid
        ident = proc_identity(proc.pid)
        self._write_marker(
            key,
            {
                "pid": proc.pid,
                "starttime": ident[1] if ident else None,
                "started": now,
                "key": key,
                "steps": group["steps"],
            },
        )
        return entry

    def wait(self, deadline: float) -> None:
        """Read answers until every probe is done or ``deadline`` (time.time()).

        An adopted probe that ends while this run waits (its storage answered again) is replaced by an own
        one; a stale adopted probe (blocked longer than any probe may take) is given STALE_GRACE seconds to
        end, so a run right after the storage came back does not report it dead."""
        grace_deadline = min(deadline, self.clock() + STALE_GRACE)
        while True:
            now = self.clock()
            for key, e in list(self.probes.items()):
                if e["adopted"] and not e["done"] and not probe_alive(e["marker"]):
                    # the earlier probe ended: its storage answers again; ask it ourselves
                    self.probes[key] = self._spawn(key, e["group"], now)
            pending = {
                e["proc"].stdout.fileno(): (k, e)
                for k, e in self.probes.items()
                if e["proc"] is not None and not e["done"]
            }
            adopted = any(
                e["adopted"] and not e["done"] and (not e["stale"] or now < grace_deadline)
                for e in self.probes.values()
            )
            left = deadline - now
            if (not pending and not adopted) or left <= 0:
                break
            step = min(left, 0.05)
            ready = select.select(list(pending), [], [], step)[0] if pending else []
            if not pending:
                time.sleep(step)
            for fd in ready:
                self._read(*pending[fd])

    def _read(self, key: str, e: dict) -> None:
        chunk = os.read(e["proc"].stdout.fileno(), 65536)
        if not chunk:
            e["done"] = True
            if not any(r.get("step") == "done" for r in e["records"]):
                e["error"] = "the storage probe ended without an answer"
        else:
            e["buf"] += chunk
            while b"\n" in e["buf"]:
                line, e["buf"] = e["buf"].split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    e["records"].append(json.loads(line.decode("utf-8", "replace")))
        if e["done"] or any(r.get("step") == "done" for r in e["records"]):
            e["done"] = True
            e["proc"].stdout.close()
            e["proc"].wait()
            self._drop_marker(key, e["pid"])

    def verdicts(self) -> dict:
        """key -> {kind, mount, answered, since, seconds, probe_pid, adopted, records {target: record},
        blocked_at (the step that did not answer), error}."""
        now = self.clock()
        out = {}
        for key, e in self.probes.items():
            records = {r.get("target"): r for r in e["records"] if r.get("step") not in (None, "done")}
            answered = e["done"] and e["error"] is None
            blocked = None
            if not answered and e["error"] is None:
                blocked = next((s for s in e["group"]["steps"] if s[1] not in records), None)
            out[key] = {
                "key": key,
                "kind": e["group"]["kind"],
                "mount": e["group"]["mount"],
                "answered": answered or e["error"] is not None,
                "error": e["error"],
                "since": e["since"] if not answered else None,
                "seconds": round(now - e["since"], 1) if not answered else None,
                "probe_pid": e["pid"] if not answered else None,
                "adopted": e["adopted"],
                "records": records,
                "blocked_at": blocked,
            }
        return out
