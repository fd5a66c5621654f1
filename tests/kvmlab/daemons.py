"""virtlogd + libvirtd without systemd: start them only when not running, stop only what we started."""
from __future__ import annotations

import grp
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from .proc import pid_alive, pid_starttime, run, stop_pid, wait_for

log = logging.getLogger("kvmlab")
URI = "qemu:///system"


def _pidfile_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _running(name: str, pidfile: Path) -> bool:
    pid = _pidfile_pid(pidfile)
    if not pid_alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


@dataclass
class Daemons:
    """Makes qemu:///system usable. ``started`` lists (name, pid, starttime) of daemons this object started."""

    workdir: Path
    started: list[tuple[str, int, int | None]] = field(default_factory=list)
    kvm_restore: tuple[int, int] | None = None     # (gid, mode) of /dev/kvm before we changed it

    def ensure(self, timeout: float = 60.0) -> float:
        """Returns the seconds it took until qemu:///system answered."""
        self._fix_kvm_node()
        t0 = time.monotonic()
        for name, pidfile, cmd in (
            ("virtlogd", Path("/run/virtlogd.pid"), ["virtlogd", "-d"]),
            ("libvirtd", Path("/run/libvirtd.pid"), ["libvirtd", "-d", "-f", str(self._libvirtd_conf())]),
        ):
            if _running(name, pidfile):
                continue
            run(cmd, timeout=30)
            pid = wait_for(lambda n=name, pf=pidfile: _pidfile_pid(pf) if _running(n, pf) else None, 15,
                           f"{name} pid file {pidfile}")
            self.started.append((name, pid, pid_starttime(pid)))
            log.info("started %s pid %s", name, pid)

        def answers() -> bool:
            try:
                c = libvirt.open(URI)
            except libvirt.libvirtError:
                return False
            c.close()
            return True

        wait_for(answers, timeout, f"{URI} to answer", interval=0.2)
        return time.monotonic() - t0

    def _libvirtd_conf(self) -> Path:
        conf = self.workdir / "libvirtd.conf"
        conf.write_text(f'log_level = 3\nlog_outputs = "3:file:{self.workdir}/libvirtd.log"\n')
        return conf

    def _fix_kvm_node(self) -> None:
        """Without udev /dev/kvm is root:root 0600; libvirt then re-probes QEMU on every define (~40 s)."""
        kvm = Path("/dev/kvm")
        if not kvm.exists():
            return
        st = kvm.stat()
        gid = grp.getgrnam("kvm").gr_gid
        if st.st_gid != gid or stat.S_IMODE(st.st_mode) != 0o660:
            self.kvm_restore = (st.st_gid, stat.S_IMODE(st.st_mode))
            os.chown(kvm, -1, gid)
            os.chmod(kvm, 0o660)

    def stop(self) -> None:
        """Stop what we started (libvirtd first), by PID; restore /dev/kvm only if we also started libvirtd."""
        for name, pid, starttime in reversed(self.started):
            if not pid_alive(pid, starttime):
                log.warning("%s pid %s that the lab started is already gone", name, pid)
                continue
            stop_pid(pid, starttime, timeout=20)
        if self.started and self.kvm_restore:
            gid, mode = self.kvm_restore
            os.chown("/dev/kvm", -1, gid)
            os.chmod("/dev/kvm", mode)
        self.started.clear()
