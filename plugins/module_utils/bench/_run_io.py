# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_benchmark's host side: the facts of the target (stat, sysfs, mountinfo, /proc/swaps, the processes that
have it open, blkid and wipefs, an O_EXCL open), the host's tuning state, the temporary file of a directory
target, and the tool runs, each under a timeout that kills the tool's whole process group.

sysfs and /proc are read under ``root`` (``/`` on a host), so the unit tests run the readers on fixture trees.
What the facts mean is decided in ``_plan`` (pure). Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import shutil
import signal
import stat
import subprocess

from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _plan

# tools live in sbin on most hosts (blkid, wipefs) and a module's PATH may lack it
EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class ToolTimeout(Exception):
    """A tool run did not end within its timeout; its process group was killed."""

    def __init__(self, timeout, out, err):
        super().__init__(f"did not finish within {timeout} s (killed)")
        self.timeout, self.out, self.err = timeout, out, err


class Terminated(Exception):
    """The module got SIGTERM: raised where it runs, so that every ``finally`` removes what the run made."""


def _terminated(_signum, _frame):
    raise Terminated("terminated (SIGTERM)")


def handle_sigterm():
    signal.signal(signal.SIGTERM, _terminated)


def under(root, path):
    return os.path.join(root, path.lstrip("/"))


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def find_tool(name):
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += [d for d in EXTRA_PATH if d not in dirs]
    return shutil.which(name, path=os.pathsep.join(dirs))


def _decode(data):
    return (data or b"").decode("utf-8", errors="replace")


def run_tool(argv, timeout, cwd=None):
    """-> (rc, stdout, stderr). The tool runs in a session of its own; on the timeout, or when the module is
    interrupted while waiting, the whole group is killed (stress-ng's workers with it). Raises ToolTimeout."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    # Not AnsibleModule.run_command: it has no timeout, and a stuck tool's workers must be killed as a group.
    proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise ToolTimeout(timeout, _decode(out), _decode(err)) from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    return proc.returncode, _decode(out), _decode(err)


def _kill_group(proc):
    with contextlib.suppress(ProcessLookupError):  # the leader is not reaped yet: the group is still the tool's
        os.killpg(proc.pid, signal.SIGKILL)


# ---- a block device ---------------------------------------------------------------------------------------------


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
        dm_name = (_read(os.path.join(d, "dm", "name")) or "").strip()
        uuid = (_read(os.path.join(d, "dm", "uuid")) or "").strip()
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
                comm = (_read(os.path.join(pid_dir, "comm")) or "?").strip()
                out.append(f"{comm} (pid {pid})")
                break
    return sorted(out, key=lambda o: int(o.rsplit(" ", 1)[1].rstrip(")")))


def _is_swap(st, real, root):
    for path in _plan.parse_swaps(_read(under(root, "/proc/swaps"))):
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
    """Everything ``_plan.verdict`` judges a block device by, except the exclusive open (``claim``)."""
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
    facts["read_only"] = sysdir is not None and (_read(os.path.join(sysdir, "ro")) or "").strip() == "1"
    facts["mounts"] = _plan.parse_mountinfo(_read(under(root, "/proc/self/mountinfo")), majmin)
    facts["swap"] = _is_swap(st, real, root)
    facts["openers"] = openers(real, root)
    for tool, argv in (
        ("blkid", [tools["blkid"], "-p", "-o", "export", real]),
        ("wipefs", [tools["wipefs"], "--no-act", "--json", real]),
    ):
        try:
            rc, out, err = runner(argv, _plan.PROBE_TIMEOUT)
        except ToolTimeout as exc:
            rc, out, err = -1, exc.out, f"no answer within {exc.timeout} s"
        facts[f"{tool}_rc"], facts[f"{tool}_out"], facts[f"{tool}_err"] = rc, out, err
    return facts


def claim(real):
    """Open the device exclusively (O_EXCL: the kernel refuses while a filesystem, device-mapper, md or another
    exclusive opener holds it) -> (fd or None, error name or None). The module keeps the fd open while it runs,
    so nothing can mount or claim the device meanwhile; fio's own opens are not exclusive and still succeed."""
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


# ---- a directory target -----------------------------------------------------------------------------------------


def _odirect_error(directory):
    """Whether the directory's filesystem refuses O_DIRECT, learnt from an unnamed file (O_TMPFILE: never linked
    into the directory, gone when closed, so check mode learns it too) -> error name, None (takes it) or
    "unknown" (the filesystem has no O_TMPFILE: the real run learns it from its own file)."""
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    try:
        os.close(os.open(directory, flags | os.O_DIRECT, 0o600))
        return None
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            return "unknown"
    try:
        os.close(os.open(directory, flags, 0o600))
    except OSError:
        return "unknown"
    return "EINVAL"


def directory_facts(directory, root="/"):
    facts = {"path": directory, "is_dir": os.path.isdir(directory)}
    if not facts["is_dir"]:
        return facts
    facts["writable"] = os.access(directory, os.W_OK | os.X_OK)
    vfs = os.statvfs(directory)
    facts["free_bytes"] = vfs.f_bavail * vfs.f_frsize
    facts["fstype"] = _plan.fstype_of(_read(under(root, "/proc/self/mountinfo")), os.path.realpath(directory))
    facts["device"] = block_name(os.stat(directory).st_dev, root)
    error = _odirect_error(directory) if facts["writable"] else "unknown"
    facts["odirect_error"] = None if error == "unknown" else error
    facts["odirect_known"] = error != "unknown"
    return facts


def create_file(directory, label, direct):
    """The file fio works on: created here (never an existing one), mode 0600 -> its path. With ``direct`` and
    a filesystem whose O_DIRECT support was unknown, an O_DIRECT open of the file tells; an EINVAL removes it
    again and raises OSError."""
    path = os.path.join(directory, f"{_plan.FILE_PREFIX}{label}-{secrets.token_hex(4)}.dat")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    if direct:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC))
        except OSError:
            remove_file(path)
            raise
    return path


def remove_file(path):
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ---- the host's tuning state ----------------------------------------------------------------------------------


def queue_dir(name, root="/"):
    """The request queue of a block device: a partition's is its disk's; device-mapper and md have their own."""
    d = under(root, f"/sys/class/block/{name}")
    if os.path.exists(os.path.join(d, "partition")):
        disk = os.path.basename(os.path.dirname(os.path.realpath(d)))
        return under(root, f"/sys/class/block/{disk}/queue")
    return os.path.join(d, "queue")


def read_tuning(name, root="/"):
    """Raw texts for ``_plan.tuning`` (None where a file is missing; no queue values without a device)."""
    queue = queue_dir(name, root) if name else None
    raw = {
        key: _read(os.path.join(queue, key)) if queue else None for key in ("scheduler", "read_ahead_kb", "nr_requests")
    }
    files = {
        "thp_enabled": "/sys/kernel/mm/transparent_hugepage/enabled",
        "thp_defrag": "/sys/kernel/mm/transparent_hugepage/defrag",
        "ksm_run": "/sys/kernel/mm/ksm/run",
        "numa_balancing": "/proc/sys/kernel/numa_balancing",
        "swappiness": "/proc/sys/vm/swappiness",
        "tuned_profile": "/etc/tuned/active_profile",
        "cmdline": "/proc/cmdline",
    }
    raw.update({key: _read(under(root, path)) for key, path in files.items()})
    return raw
