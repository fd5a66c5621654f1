"""Process and waiting helpers: bounded polling, PID liveness without ``kill -0``, stopping by PID."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class LabError(RuntimeError):
    """Anything the lab could not do; the message carries the details (state, console tail, ...)."""


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns a truthy value (returned), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a PID, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_starttime(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[1] if st else None


def pid_alive(pid: int | None, starttime: int | None = None) -> bool:
    """True if PID runs (not a zombie) and, when given, still has the same start time (no PID reuse)."""
    if not pid:
        return False
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[1] == starttime


def reap(pid: int) -> None:
    """Collect a child's exit status if it is ours; harmless for non-children."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, starttime: int | None = None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop one process by PID (never by name): ``sig``, then SIGKILL after ``timeout``; reaps children."""
    if not pid_alive(pid, starttime):
        reap(pid)
        return
    os.kill(pid, sig)

    def gone() -> bool:
        reap(pid)
        return not pid_alive(pid, starttime)

    try:
        wait_for(gone, timeout, f"PID {pid} to exit")
    except LabError:
        os.kill(pid, signal.SIGKILL)
        wait_for(gone, 5.0, f"PID {pid} to exit after SIGKILL")


def run(cmd: Sequence[str], timeout: float = 120.0, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    """Run a command with a bound; raise LabError with its output on failure."""
    try:
        cp = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(cmd)}: no exit after {timeout}s") from e
    if check and cp.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed rc={cp.returncode}: {cp.stderr.strip() or cp.stdout.strip()}")
    return cp
