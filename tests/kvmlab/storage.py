"""Host-side storage for the disk states: a small loop-mounted ext4, an NBD export by qemu-storage-daemon,
FIFOs that make save/dump jobs block, and a FUSE mount whose daemon can be frozen (storage that stops
answering). Each helper returns the resource records teardown needs."""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
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


def file_disk_xml(path: Path, fmt: str = "raw", policy: str = "stop", target: str = "vda") -> str:
    """A file-backed virtio disk with libvirt's error_policy (stop, enospace, report, ignore)."""
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}' error_policy='{policy}'/>
      <source file='{path}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>"""


def sparse_raw_on_loop(d, image_mib: int = 24, fs_mib: int = 20, policy: str = "stop") -> tuple:
    """For ``Lab.create_running``'s prepare: an empty ``fs_mib`` MiB loop ext4 holding one sparse raw image of
    ``image_mib`` MiB (nothing written: it can still claim all of it), both recorded on ``d``.
    Returns (the LoopExt4, the image path, its disk XML)."""
    fs = LoopExt4(d.lab.dir / f"{d.name}.ext4", d.lab.dir / f"{d.name}.mnt", size_mib=fs_mib, ballast_mib=0)
    fs.create(d.record)
    img = fs.mount_point / "big.raw"
    with open(img, "wb") as f:
        f.truncate(image_mib * MiB)
    d.record({"kind": "path", "path": str(img)})
    return fs, img, file_disk_xml(img, "raw", policy)


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


class BindFs:
    """``source`` served at ``mount_point`` by bindfs (FUSE); :meth:`freeze` stops the daemon (SIGSTOP).

    A frozen FUSE daemon is what a dead hard NFS mount looks like to the host (this kernel has no NFS):
    every stat, statvfs, open or read under ``mount_point`` blocks until :meth:`thaw` (SIGCONT). The
    process that froze it must therefore never touch the mount itself while it is frozen (read
    /proc/self/mountinfo instead), and must always thaw it: a daemon left stopped hangs every later tool
    that walks the mount table (``df``, ``findmnt -D``, a shell completing a path).

    ``with BindFs(src, mnt) as fs:`` mounts, and on exit ALWAYS thaws and unmounts (``fusermount -u``,
    else ``umount -l``) and stops the daemon by PID, also when the body failed. Inside a :class:`Lab`,
    ``record`` also writes a ``thaw`` record (torn down first of all, before any domain) and ``process``
    / ``mount`` records, so a session that died still gets it thawed and unmounted by the next Lab or
    ``python -m kvmlab down``. Domains with disks on the mount must be destroyed before it is unmounted.
    """

    def __init__(self, source: Path, mount_point: Path, log: Path | None = None, options: tuple[str, ...] = ()) -> None:
        self.source, self.mount_point, self.log = source, mount_point, log
        # extra FUSE options; "direct_io" keeps the kernel's page cache out, so every read of a file on the
        # mount (a loop device's backing file, say) reaches the daemon, and blocks while it is frozen
        self.options = tuple(options)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.starttime: int | None = None
        self.frozen = False

    def __enter__(self) -> BindFs:
        try:
            self.mount()
        except BaseException:
            self.unmount()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def mount(self, record: Callable[[dict], None] | None = None) -> BindFs:
        rec = record or (lambda _r: None)
        for d in (self.source, self.mount_point):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            rec({"kind": "path", "path": str(d)})
        logf = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            # -f: stays in the foreground, so the PID is the daemon's; allow_other: QEMU runs as libvirt-qemu
            opts = ",".join(("allow_other", *self.options))
            self.proc = subprocess.Popen(["bindfs", "-f", "-o", opts, str(self.source), str(self.mount_point)],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        finally:
            if logf is not subprocess.DEVNULL:
                logf.close()
        self.pid = self.proc.pid
        self.starttime = pid_starttime(self.pid)
        rec({"kind": "thaw", "pid": self.pid, "starttime": self.starttime, "path": str(self.mount_point)})
        rec({"kind": "process", "pid": self.pid, "starttime": self.starttime, "what": "bindfs"})
        rec({"kind": "mount", "path": str(self.mount_point), "fuse": True})

        def mounted() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"bindfs exited rc={self.proc.returncode} ({self.log or 'no log'})")
            return fuse_mounted(str(self.mount_point))

        wait_for(mounted, 15, f"bindfs mount at {self.mount_point}")
        return self

    def freeze(self) -> None:
        """SIGSTOP the daemon: from now on every access under the mount blocks."""
        if self.pid is None:
            raise LabError("bindfs is not mounted")
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT the daemon (harmless when it runs)."""
        if self.pid is not None and pid_alive(self.pid, self.starttime):
            os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    @contextlib.contextmanager
    def frozen_for(self) -> Iterator[BindFs]:
        """``with fs.frozen_for(): ...`` freezes the daemon for the block and thaws it however it ends."""
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def unmount(self) -> None:
        """Thaw, unmount, stop the daemon; idempotent, and it never touches a frozen mount."""
        self.thaw()
        unmount_fuse(str(self.mount_point))
        if self.pid is not None:
            stop_pid(self.pid, self.starttime, timeout=10)
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
            self.pid, self.proc = None, None


def _mountinfo_points() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount, from /proc/self/mountinfo: never touches the mounts."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _sep, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and right:
                out.append((fields[4].replace("\\040", " "), right.split()[0]))
    return out


def fuse_mounted(path: str) -> bool:
    return any(mp == path and fstype.startswith("fuse") for mp, fstype in _mountinfo_points())


def unmount_fuse(path: str) -> None:
    """``fusermount -u``, else a lazy ``umount -l``; judged by mountinfo (stat on a dead mount blocks)."""
    if not any(mp == path for mp, _t in _mountinfo_points()):
        return
    if run(["fusermount", "-u", "-z", path], check=False, timeout=30).returncode != 0:
        run(["umount", "-l", path], timeout=30)


def thaw_pid(pid: int, starttime: int | None) -> None:
    """SIGCONT a (possibly stopped) process by PID, if it is still the same process."""
    if pid_alive(pid, starttime):
        os.kill(pid, signal.SIGCONT)


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
    if any(mp == path for mp, _t in _mountinfo_points()):
        run(["umount", path])


__all__ = ["BindFs", "LoopExt4", "NbdExport", "detach_loop", "drain_fifo", "fuse_mounted", "make_fifo", "reap",
           "thaw_pid", "umount", "unmount_fuse"]
