"""The states the lab can bring a domain into, with what libvirt must report for each."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import libvirt

RUNNING, PAUSED, SHUTOFF, CRASHED = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED,
                                     libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)


@dataclass(frozen=True)
class StateSpec:
    key: str
    expected: tuple[int, int]              # (virDomainState, reason) libvirt reports
    disk_error: int | None                 # diskErrors() code on vda, None = no disk error expected
    program: str                           # guest program (kvmlab.guest.PROGRAMS)
    timeout: float                         # bound for define -> state
    libvirt_blocked: bool = False          # libvirt calls on the domain hang while in this state
    how: str = ""


STATES: dict[str, StateSpec] = {s.key: s for s in (
    StateSpec("running", (RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED), None, "idle", 60,
              how="idle busybox guest, waits for its ready line"),
    StateSpec("user", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER), None, "idle", 60,
              how="virDomainSuspend"),
    StateSpec("enospc", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR), libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE,
              "fill-disk", 90, how="error_policy=stop raw disk on a 20 MiB loop ext4 (default 5 % root reserve)"),
    StateSpec("eio", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR), libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC,
              "fill-disk", 90, how="NBD disk from qemu-storage-daemon, blkdebug fails every write with EIO"),
    StateSpec("nbd_gone", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR), libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC,
              "io-loop", 90, how="NBD disk in use, then its qemu-storage-daemon is killed"),
    StateSpec("watchdog", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_WATCHDOG), None, "watchdog", 90,
              how="i6300esb action=pause, armed with heartbeat=2 and never fed (generic kernel)"),
    StateSpec("crashed", (CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED), None, "panic", 90,
              how="<panic model='isa'/>, on_crash=preserve, guest panics via sysrq"),
    StateSpec("saving", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_SAVE), None, "idle", 60, libvirt_blocked=True,
              how="virDomainSave into a FIFO nobody reads"),
    StateSpec("dumping", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_DUMP), None, "idle", 60, libvirt_blocked=True,
              how="virDomainCoreDump into a FIFO nobody reads"),
    StateSpec("from_snapshot", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT), None, "idle", 90,
              how="internal snapshot of the running domain (qcow2 disk), revert with REVERT_PAUSED"),
    StateSpec("migrating", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION), None, "idle", 240,
              how="offline migration at 1 MiB/s to a second libvirtd in a podman container"),
    StateSpec("postcopy", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY), None, "idle", 240,
              how="live migration switched to post-copy (1 MiB/s) to the container's libvirtd"),
    StateSpec("postcopy_failed", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED), None, "idle", 240,
              how="post-copy as above, then the destination domain is destroyed"),
    StateSpec("unknown", (PAUSED, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN), None, "idle", 60,
              how="HMP 'stop' through qemu-monitor-command: QEMU stopped behind libvirt's back"),
)}

# libvirt's state and reason spellings (as in its status XML, /run/libvirt/qemu/NAME.xml): the collection's one
# table, plugins/module_utils/common/_states.py (stdlib only), loaded by path: the lab also runs without the
# collection on sys.path (python -m kvmlab)
_spec = importlib.util.spec_from_file_location(
    "kvmlab._states", Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "common" / "_states.py")
_states = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_states)
STATE_NAMES = _states.STATE_NAMES


def state_text(state: tuple[int, int] | None) -> str:
    """(3, 5) -> 'paused (ioerror)'."""
    if state is None:
        return "unknown (no answer)"
    return _states.libvirt_state_text(*state)


def parse_state_text(state: str, reason: str) -> tuple[int, int]:
    s = STATE_NAMES.index(state)
    return s, _states.reason_code(s, reason)
