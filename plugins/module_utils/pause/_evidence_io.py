# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host evidence for a paused domain: where its disks live and how full that is, endpoints, QEMU log.

The parsers (``parse_mountinfo``, ``mount_for``, ``fs_usage``, ``parse_lvs``, ``relevant_log_lines``)
are pure. ``gather_disk`` / ``gather_domain`` do the I/O through an injected ``Host`` so
tests can hand in fakes. No ansible imports: this runs inside the module's forked worker.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import socket
import subprocess
import time

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
    """/proc/self/mountinfo -> [{mount_point, fstype, device, options}] in file order."""
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


def gather_disk(disk: dict, host: Host, mounts: list, pools: list, *, lvs_cache: dict, timeout: float) -> dict:
    """Evidence for one disk of the domain's XML (see _domxml._disk): filesystem/device, fill, endpoint."""
    ev = {"filesystem": None, "block_device": None, "endpoints": [], "pool": None, "thin_pool": None, "errors": []}
    path = disk.get("path")
    if disk.get("type") == "volume" and disk.get("pool"):
        ev["pool"] = next((p for p in pools if p.get("name") == disk["pool"]), {"name": disk["pool"]})
    if path and disk.get("type") in ("file", "dir"):
        real = host.realpath(path)
        probe = real if host.exists(real) else os.path.dirname(real)
        try:
            usage = fs_usage(host.statvfs(probe))
        except OSError as exc:
            ev["errors"].append(f"statvfs {probe}: {exc.strerror or exc}")
            usage = None
        mount = mount_for(real, mounts)
        if usage is not None or mount is not None:
            ev["filesystem"] = dict(
                usage or {},
                mount_point=mount["mount_point"] if mount else None,
                device=mount["device"] if mount else None,
                fstype=mount["fstype"] if mount else None,
            )
        ev["pool"] = ev["pool"] or pool_for_path(real, pools)
    elif path and disk.get("type") == "block":
        real = host.realpath(path)
        ev["block_device"] = {"path": path, "device": real, "total_bytes": host.block_size(real)}
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
