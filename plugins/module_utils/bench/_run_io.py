# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_benchmark's host side: a directory target's facts and its temporary file, the host's tuning state, and
SIGTERM turned into an exception. A device target's facts and its exclusive open are the collection's shared
ones (``common._disk_safety_io``), and so are the tool runs, each under a timeout that kills the tool's whole
process group (``common._command_io``).

sysfs and /proc are read under ``root`` (``/`` on a host), so the unit tests run the readers on fixture trees.
What the facts mean is decided in ``_plan`` (pure). Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal

from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety_io import block_name
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety_io import read_text as _read
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import under


class Terminated(Exception):
    """The module got SIGTERM: raised where it runs, so that every ``finally`` removes what the run made."""


def _terminated(_signum, _frame):
    raise Terminated("terminated (SIGTERM)")


def handle_sigterm():
    signal.signal(signal.SIGTERM, _terminated)


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
    facts["fstype"] = _disk_safety.fstype_of(_read(under(root, "/proc/self/mountinfo")), os.path.realpath(directory))
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
