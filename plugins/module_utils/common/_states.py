# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: libvirt's numbers and names, and the texts made of them. The one home of these tables.

Domain states and their reasons, disk error codes, job operations and control states, as libvirt
numbers them (libvirt-domain.h) and spells them in its status XML (``virDomain*TypeToString``), plus
the reason names this collection reports (``kvm_pause`` ``reason``, the keys of the diagnosis rules).
No I/O, no libvirt import, no ansible import: the host collector and the Python 3.9 tests import it
as it is.
"""

from __future__ import annotations

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
STATE_NAMES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended")

# virDomainPausedReason 0..14: (the name this collection reports, libvirt's spelling in status XML)
PAUSED_REASONS = (
    ("unknown", "unknown"),
    ("user", "user"),
    ("migration", "migration"),
    ("save", "save"),
    ("dump", "dump"),
    ("ioerror", "ioerror"),
    ("watchdog", "watchdog"),
    ("from_snapshot", "from snapshot"),
    ("shutting_down", "shutdown"),
    ("snapshot", "snapshot"),
    ("crashed", "panicked"),
    ("starting_up", "starting up"),
    ("postcopy", "post-copy"),
    ("postcopy_failed", "post-copy failed"),
    ("api_error", "api error"),
)
PAUSED_REASON_KEYS = tuple(ours for ours, _libvirt in PAUSED_REASONS)
PAUSED_REASON_NAMES = tuple(spelling for _ours, spelling in PAUSED_REASONS)
# virDomainCrashedReason (reported as libvirt spells them)
CRASHED_REASON_NAMES = ("unknown", "panicked")
# virDomainRunningReason 0..11
RUNNING_REASON_NAMES = (
    "unknown",
    "booted",
    "migrated",
    "restored",
    "from snapshot",
    "unpaused",
    "migration canceled",
    "save canceled",
    "wakeup",
    "crashed",
    "post-copy",
    "post-copy failed",
)
# virDomainShutoffReason 0..8
SHUTOFF_REASON_NAMES = (
    "unknown",
    "shutdown",
    "destroyed",
    "crashed",
    "migrated",
    "saved",
    "failed",
    "from snapshot",
    "daemon",
)
# state -> libvirt's spellings of its reasons
REASON_NAMES = {
    RUNNING: RUNNING_REASON_NAMES,
    PAUSED: PAUSED_REASON_NAMES,
    SHUTOFF: SHUTOFF_REASON_NAMES,
    CRASHED: CRASHED_REASON_NAMES,
}

# virDomainDiskErrorCode
DISK_ERRORS = {0: "none", 1: "unspecified", 2: "no_space"}
# virDomainJobOperation
JOB_OPERATIONS = {
    0: "unknown",
    1: "start",
    2: "save",
    3: "restore",
    4: "migration_in",
    5: "migration_out",
    6: "snapshot",
    7: "snapshot_revert",
    8: "dump",
    9: "backup",
    10: "snapshot_delete",
}
# virDomainControlState
CONTROL_STATES = {0: "ok", 1: "job", 2: "occupied", 3: "error"}


def state_code(name: str) -> int:
    """libvirt's spelling -> number: 'paused' -> 3; unknown names -> 0 (nostate)."""
    return STATE_NAMES.index(name) if name in STATE_NAMES else 0


def reason_code(state: int, name: str) -> int:
    """libvirt's spelling of a reason of ``state`` -> number; unknown names -> 0."""
    names = REASON_NAMES.get(state, ())
    return names.index(name) if name in names else 0


def reason_name(state: int, reason: int) -> str:
    """The reason name this collection reports: (3, 7) -> 'from_snapshot', (6, 1) -> 'panicked'; unknown -> '15'."""
    names = CRASHED_REASON_NAMES if state == CRASHED else PAUSED_REASON_KEYS
    return names[reason] if 0 <= reason < len(names) else str(reason)


def libvirt_state_text(state: int, reason: int) -> str:
    """State and reason as libvirt spells them: (3, 5) -> 'paused (ioerror)', (3, 12) -> 'paused (post-copy)'."""
    name = STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else str(state)
    names = REASON_NAMES.get(state, ())
    return f"{name} ({names[reason] if 0 <= reason < len(names) else reason})"


def state_text(state, reason) -> str:
    """State and reason as the modules say them: (1, 5) -> 'running'; (3, 13) -> 'paused (postcopy_failed)'
    (the reported reason names); (5, 2) -> 'shutoff (destroyed)'; (7, 0) -> 'pmsuspended (0)'; None -> 'unknown'."""
    if state is None:
        return "unknown"
    name = STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else str(state)
    if state == RUNNING:
        return name
    if state in (PAUSED, CRASHED):
        return f"{name} ({reason_name(state, reason or 0)})"
    if state == SHUTOFF:
        return libvirt_state_text(state, reason or 0)
    return f"{name} ({reason})"


def fmt_bytes(num) -> str:
    """1536 -> '1.5 KiB'; 0 -> '0 B'; None -> 'unknown'."""
    if num is None:
        return "unknown"
    num = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{num:.0f} B"
            text = (f"{num:.1f}").rstrip("0").rstrip(".")
            return f"{text} {unit}"
        num /= 1024.0
    return f"{num:.0f} B"  # pragma: no cover
