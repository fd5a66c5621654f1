# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host side of the data-safety verdict (``_disk_safety``): the facts of a block device (stat, sysfs holders
and partitions, mountinfo, /proc/swaps, the processes that have it open, blkid and wipefs under a timeout) and
the exclusive open (O_EXCL) that keeps it claimed while a module works on it.

sysfs and /proc are read under ``root`` (``/`` on a host), so the unit tests run the readers on fixture trees.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety
from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout, run_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text, under

# blkid and wipefs each get this long
PROBE_TIMEOUT = 60
TOOLS = ("blkid", "wipefs")


def sys_block_dir(rdev, root="/"):
    """/sys/dev/block/MAJ:MIN resolved (the device's own sysfs directory), or None."""
    link = under(root, f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    return os.path.realpath(link) if os.path.exists(link) else None


def block_name(rdev, root="/"):
    d = sys_block_dir(rdev, root)
    return os.path.basename(d) if d else None


def _holder(name, root):
    d = under(root, f"/sys/class/block/{name}")
    if name.startswith("dm-"):
        dm_name = (read_text(os.path.join(d, "dm", "name")) or "").strip()
        uuid = (read_text(os.path.join(d, "dm", "uuid")) or "").strip()
        kind = "LVM" if uuid.startswith("LVM-") else "device-mapper"
        return f"{name} ({kind} {dm_name})" if dm_name else f"{name} ({kind})"
    if name.startswith("md"):
        return f"{name} (md RAID)"
    if name.startswith("drbd"):
        return f"{name} (DRBD)"
    if name.startswith("bcache"):
        return f"{name} (bcache)"
    return name


def holders(sysdir, root="/"):
    try:
        names = sorted(os.listdir(os.path.join(sysdir, "holders")))
    except OSError:
        return []
    return [_holder(n, root) for n in names]


def partitions(sysdir):
    try:
        names = sorted(os.listdir(sysdir))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(sysdir, n, "partition"))]


def openers(real, root="/"):
    """The processes (other than this one) with a descriptor on ``real``: ["qemu-system-x86 (pid 4711)"]. Only
    readlink, never a stat through the descriptor (a dead NFS file must not hang the module)."""
    me = os.getpid()
    out = []
    for pid_dir in glob.glob(under(root, "/proc/[0-9]*")):
        pid = os.path.basename(pid_dir)
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            fds = os.listdir(os.path.join(pid_dir, "fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(pid_dir, "fd", fd))
            except OSError:
                continue
            if target == real:
                comm = (read_text(os.path.join(pid_dir, "comm")) or "?").strip()
                out.append(f"{comm} (pid {pid})")
                break
    return sorted(out, key=lambda o: int(o.rsplit(" ", 1)[1].rstrip(")")))


def _is_swap(st, real, root):
    for path in _disk_safety.parse_swaps(read_text(under(root, "/proc/swaps"))):
        if path == real:
            return True
        if path.startswith("/dev/"):  # a swap file's stat could hang on a network filesystem; devices cannot
            try:
                other = os.stat(path)
            except OSError:
                continue
            if stat.S_ISBLK(other.st_mode) and other.st_rdev == st.st_rdev:
                return True
    return False


def device_facts(path, tools, runner=run_tool, root="/"):
    """Everything ``_disk_safety.examine`` judges a block device by, except the exclusive open (``claim``).
    ``tools``: {"blkid": path, "wipefs": path}."""
    facts = {"path": path, "exists": True}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        facts["exists"] = False
        return facts
    real = os.path.realpath(path)
    facts["real"] = real
    facts["is_block"] = stat.S_ISBLK(st.st_mode)
    if not facts["is_block"]:
        return facts
    majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    sysdir = sys_block_dir(st.st_rdev, root)
    facts["name"] = os.path.basename(sysdir) if sysdir else None
    facts["holders"] = holders(sysdir, root) if sysdir else []
    facts["partitions"] = partitions(sysdir) if sysdir else []
    facts["read_only"] = sysdir is not None and (read_text(os.path.join(sysdir, "ro")) or "").strip() == "1"
    facts["mounts"] = _disk_safety.parse_mountinfo(read_text(under(root, "/proc/self/mountinfo")), majmin)
    facts["swap"] = _is_swap(st, real, root)
    facts["openers"] = openers(real, root)
    for tool, argv in (
        ("blkid", [tools["blkid"], "-p", "-o", "export", real]),
        ("wipefs", [tools["wipefs"], "--no-act", "--json", real]),
    ):
        try:
            rc, out, err = runner(argv, PROBE_TIMEOUT)
        except ToolTimeout as exc:
            rc, out, err = -1, exc.out, f"no answer within {exc.timeout} s"
        facts[f"{tool}_rc"], facts[f"{tool}_out"], facts[f"{tool}_err"] = rc, out, err
    return facts


def claim(real):
    """Open the device exclusively (O_EXCL: the kernel refuses while a filesystem, device-mapper, md, DRBD or
    another exclusive opener holds it) -> (fd or None, error name or None). The caller keeps the fd open while it
    works, so nothing can mount or claim the device meanwhile."""
    try:
        return os.open(real, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC), None
    except OSError as exc:
        return None, f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"


def fd_size(fd):
    return os.lseek(fd, 0, os.SEEK_END)


def release(fd):
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
