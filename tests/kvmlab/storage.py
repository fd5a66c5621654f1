"""Host-side storage for the disk states: a small loop-mounted ext4, an NBD export by qemu-storage-daemon,
and FIFOs that make save/dump jobs block. Each helper returns the resource records teardown needs."""
from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .proc import LabError, pid_alive, pid_starttime, reap, run, stop_pid, wait_for

MiB = 1024 * 1024


class LoopExt4:
    """``size_mib`` ext4 (mkfs defaults, so 5 % is reserved for root) on a loop device, mounted at
    ``mount_point`` and pre-filled with a ``ballast_mib`` file that :meth:`free_space` deletes.

    QEMU writes as libvirt-qemu, so it gets ENOSPC once ``f_bavail`` is 0 while root still sees the
    reserved blocks in ``f_bfree``."""

    def __init__(self, image: Path, mount_point: Path, size_mib: int = 20, ballast_mib: int = 10) -> None:
        self.image, self.mount_point = image, mount_point
        self.size_mib, self.ballast_mib = size_mib, ballast_mib
        self.loop_device: str | None = None

    @property
    def ballast(self) -> Path:
        return self.mount_point / "ballast"

    def create(self, record: Callable[[dict], None]) -> None:
        with open(self.image, "wb") as f:
            f.truncate(self.size_mib * MiB)
        record({"kind": "path", "path": str(self.image)})
        run(["mkfs.ext4", "-q", "-F", str(self.image)])
        self.loop_device = run(["losetup", "--find", "--show", str(self.image)]).stdout.strip()
        record({"kind": "loop", "device": self.loop_device, "backing": str(self.image)})
        self.mount_point.mkdir(mode=0o755, exist_ok=True)
        record({"kind": "path", "path": str(self.mount_point)})
        run(["mount", "-t", "ext4", self.loop_device, str(self.mount_point)])
        record({"kind": "mount", "path": str(self.mount_point)})
        self.mount_point.chmod(0o755)
        with open(self.ballast, "wb") as f:
            chunk = b"\xa5" * MiB
            for _mib in range(self.ballast_mib):
                f.write(chunk)
            os.fsync(f.fileno())

    def free_space(self) -> None:
        self.ballast.unlink(missing_ok=True)
        os.sync()


class NbdExport:
    """qemu-storage-daemon exporting a raw file as NBD export ``disk0`` on a unix socket.

    With ``inject_eio`` every write fails with EIO (a blkdebug node, rule not ``once``), which the guest's
    disk (error_policy=stop) turns into ``paused (I/O error)`` with diskErrors ``unspecified``."""

    EXPORT = "disk0"

    def __init__(self, image: Path, socket: Path, log: Path, size_mib: int = 8) -> None:
        self.image, self.socket, self.log, self.size_mib = image, socket, log, size_mib
        self.proc: subprocess.Popen[bytes] | None = None

    def create_image(self, record: Callable[[dict], None]) -> None:
        with open(self.image, "wb") as f:
            f.truncate(self.size_mib * MiB)
        record({"kind": "path", "path": str(self.image)})

    def start(self, record: Callable[[dict], None], inject_eio: bool = False) -> int:
        self.socket.unlink(missing_ok=True)
        node: dict = {"driver": "file", "node-name": "file0", "filename": str(self.image)}
        if inject_eio:
            node = {"driver": "blkdebug", "node-name": "dbg0", "image": node,
                    "inject-error": [{"event": "pwritev", "errno": 5, "once": False}]}
        cmd = ["qemu-storage-daemon",
               "--blockdev", json.dumps(node),
               "--nbd-server", f"addr.type=unix,addr.path={self.socket}",
               "--export", f"type=nbd,id=exp0,node-name={node['node-name']},name={self.EXPORT},writable=on"]
        with open(self.log, "ab") as logf:
            logf.write(f"--- {time.strftime('%T')} {' '.join(cmd)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         start_new_session=True)   # survives a CLI `up` that exits
        pid = self.proc.pid
        record({"kind": "process", "pid": pid, "starttime": pid_starttime(pid), "what": "qemu-storage-daemon"})
        record({"kind": "path", "path": str(self.socket)})
        record({"kind": "path", "path": str(self.log)})

        def listening() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise LabError(f"qemu-storage-daemon exited rc={self.proc.returncode}: {self.log.read_text()[-2000:]}")
            return self.socket.exists()

        wait_for(listening, 15, f"NBD socket {self.socket}")
        self.socket.chmod(0o666)        # QEMU connects as libvirt-qemu
        return pid

    def kill(self) -> None:
        """The storage server goes away (SIGKILL, no clean NBD disconnect)."""
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout=0.1, sig=9)
            self.proc.wait(timeout=5)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and pid_alive(self.proc.pid)


def drain_fifo(path: Path, done: Callable[[], bool], timeout: float) -> int:
    """Read ``path`` (a FIFO a libvirt job writes into) until ``done()``; returns bytes read.

    libvirt opens the FIFO more than once (a save re-opens it to finish the header), so this keeps
    re-opening it after each writer hangs up. Uses O_NONBLOCK + poll so nothing blocks unbounded."""
    deadline = time.monotonic() + timeout
    total = 0
    while not done():
        if time.monotonic() > deadline:
            raise LabError(f"FIFO {path}: job still not finished after {timeout}s ({total} bytes drained)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP)
            while time.monotonic() < deadline:
                events = poller.poll(200)
                if not events:
                    if done():
                        break
                    continue
                data = os.read(fd, 1 << 20)
                total += len(data)
                if not data:            # the writer hung up
                    break
        finally:
            os.close(fd)
    return total


def make_fifo(path: Path, record: Callable[[dict], None], domain: str) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    record({"kind": "fifo", "path": str(path), "domain": domain})
    record({"kind": "path", "path": str(path)})


def detach_loop(device: str, backing: str) -> None:
    """Detach a loop device, but only while it still points at our backing file."""
    cp = run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE", device], check=False)
    if cp.returncode == 0 and cp.stdout.strip() == backing:
        run(["losetup", "--detach", device])


def umount(path: str) -> None:
    if os.path.ismount(path):
        run(["umount", path])


__all__ = ["LoopExt4", "NbdExport", "detach_loop", "drain_fifo", "make_fifo", "reap", "umount"]
