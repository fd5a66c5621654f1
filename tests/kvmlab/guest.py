"""Guest images: a Debian kernel taken from Debian's own package and busybox initramfs images.

The kernel comes from ``apt-get download`` + ``dpkg -x`` (nothing is installed, /boot is untouched). Each
guest *program* is a busybox shell script that runs as ``/init`` after loading the kernel modules it needs
(module dependencies are read from each ``.ko``'s ``.modinfo`` section). Everything lands in
``${KVMOPS_CACHE:-/var/cache/kvmops-fleet}/guest`` and is rebuilt only when missing; an initrd's file name
carries a hash of its content recipe, so changing a program builds a new one.

Guest programs print ``KVMLAB: ...`` marker lines on the serial console.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .proc import LabError, run

VIRTIO_BLK = ("virtio_pci", "virtio_blk")

_PRELUDE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
{insmods}wait_dev() {{ i=0; while [ ! -e "$1" ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done; }}
"""


@dataclass(frozen=True)
class GuestProgram:
    """A test program run as /init: shell body, kernel modules (+ options), kernel flavour, cmdline."""

    name: str
    body: str
    modules: tuple[str, ...] = ()
    module_options: dict[str, str] = field(default_factory=dict)
    flavour: str = "cloud"          # Debian kernel flavour: "cloud" (small) or "" (generic, more drivers)
    # no_timer_check: under heavy load a TCG guest's IO-APIC timer check can fail and panic the boot
    # ("IO-APIC + timer doesn't work!"), seen on 2 of 12 fleet guests at load 15
    cmdline: str = "console=ttyS0 quiet panic=-1 no_timer_check"

    def init_script(self, modules_in_order: list[str]) -> str:
        insmods = "".join(
            f"insmod /lib/modules/{m}.ko {self.module_options.get(m, '')} || echo 'KVMLAB: insmod {m} failed'\n"
            for m in modules_in_order)
        return _PRELUDE.format(insmods=insmods) + self.body


PROGRAMS: dict[str, GuestProgram] = {p.name: p for p in (
    GuestProgram("idle", modules=VIRTIO_BLK, body="""
echo "KVMLAB: ready"
while :; do sleep 3600; done
"""),
    # Writes zeros over the whole disk with O_DIRECT (every write reaches the host), then stays up idle
    # (a resumed domain keeps running, so "is it still running after the resume" can be asked).
    GuestProgram("fill-disk", modules=VIRTIO_BLK, body="""
wait_dev /dev/vda
echo "KVMLAB: ready; filling /dev/vda ($(cat /sys/block/vda/size) sectors)"
dd if=/dev/zero of=/dev/vda bs=1M oflag=direct 2>&1
echo "KVMLAB: dd done rc=$?"
sync; echo "KVMLAB: idle"
while :; do sleep 3600; done
"""),
    # Idle until the first byte of its second disk (vdb, read-only: a file the host writes into) is 'G', then
    # fills vda like fill-disk: a guest that has not written yet, started on demand.
    GuestProgram("fill-on-go", modules=VIRTIO_BLK, body="""
wait_dev /dev/vda; wait_dev /dev/vdb
echo "KVMLAB: ready; waiting for G in the first byte of /dev/vdb"
while [ "$(dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 1)" != "G" ]; do usleep 200000; done
echo "KVMLAB: go; filling /dev/vda ($(cat /sys/block/vda/size) sectors)"
dd if=/dev/zero of=/dev/vda bs=1M seek=1 oflag=direct 2>&1
echo "KVMLAB: dd done rc=$?"
while :; do sleep 3600; done
"""),
    # A small O_DIRECT write every 0.1 s, forever: the disk's server going away is noticed at once.
    GuestProgram("io-loop", modules=VIRTIO_BLK, body="""
wait_dev /dev/vda
echo "KVMLAB: ready; io loop on /dev/vda"
i=0
while :; do
  dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=$((i % 256)) oflag=direct 2>/dev/null || echo "KVMLAB: write failed"
  i=$((i+1)); usleep 100000
done
"""),
    # Arms the i6300esb watchdog (2 s heartbeat) and never feeds it.
    GuestProgram("watchdog", flavour="", modules=("i6300esb",), module_options={"i6300esb": "heartbeat=2"},
                 body="""
wait_dev /dev/watchdog
exec 3>/dev/watchdog
echo "KVMLAB: ready; watchdog armed, not feeding it"
while :; do sleep 3600; done
"""),
    # Panics the kernel; pvpanic (ISA, ACPI-enumerated: pvpanic-mmio) tells QEMU, panic=0 stays down.
    GuestProgram("panic", modules=("pvpanic-mmio",), cmdline="console=ttyS0 quiet panic=0 no_timer_check", body="""
echo "KVMLAB: ready; panicking"
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
"""),
)}


def _modinfo_depends(ko: Path) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko.read_bytes())
    return [d.decode() for d in m.group(1).split(b",") if d] if m else []


def _cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) entries, plus the trailer."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, os.major(rdev), os.minor(rdev), len(nb), 0)
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields) + nb)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


class GuestImages:
    """Kernel + initrd cache. Paths handed out are world-readable (QEMU runs as libvirt-qemu)."""

    def __init__(self, cache: Path | None = None) -> None:
        base = cache or Path(os.environ.get("KVMOPS_CACHE", "/var/cache/kvmops-fleet"))
        self.root = base / "guest"

    # -- kernel -------------------------------------------------------------------------------------
    def _kernel_dir(self, flavour: str) -> Path:
        return self.root / f"kernel-{flavour or 'generic'}"

    def kernel(self, flavour: str = "cloud") -> Path:
        """vmlinuz of the current Debian linux-image-[FLAVOUR-]amd64; downloaded once, then cached."""
        kdir = self._kernel_dir(flavour)
        if not (kdir / "vmlinuz").is_file():
            with self._locked():
                if not (kdir / "vmlinuz").is_file():
                    self._fetch_kernel(flavour, kdir)
        return kdir / "vmlinuz"

    def _fetch_kernel(self, flavour: str, kdir: Path) -> None:
        meta = f"linux-image-{flavour + '-' if flavour else ''}amd64"
        deps = run(["apt-cache", "depends", meta]).stdout
        m = re.search(r"Depends: (linux-image-\S+)", deps)
        if not m:
            raise LabError(f"cannot resolve {meta} to a kernel package:\n{deps}")
        tmp = Path(tempfile.mkdtemp(prefix=".kernel-", dir=self.root))
        try:
            os.chmod(tmp, 0o755)
            run(["apt-get", "download", m.group(1)], cwd=tmp, timeout=600)
            (deb,) = tmp.glob("*.deb")
            deb.rename(tmp / "kernel.deb")
            (tmp / "package").write_text(m.group(1) + "\n")
            with tempfile.TemporaryDirectory(dir=self.root) as x:
                run(["dpkg", "-x", str(tmp / "kernel.deb"), x], timeout=300)
                (vmlinuz,) = Path(x, "boot").glob("vmlinuz-*")
                shutil.copyfile(vmlinuz, tmp / "vmlinuz")
            for p in tmp.iterdir():
                p.chmod(0o644)
            shutil.rmtree(kdir, ignore_errors=True)
            tmp.rename(kdir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- initrd -------------------------------------------------------------------------------------
    def initrd(self, program: str | GuestProgram) -> Path:
        prog = PROGRAMS[program] if isinstance(program, str) else program
        self.kernel(prog.flavour)
        kdir = self._kernel_dir(prog.flavour)
        recipe = "\n".join([
            (kdir / "package").read_text(), prog.init_script(list(prog.modules)),
            repr(sorted(prog.module_options.items())),
            hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest(), "v1"])
        path = self.root / f"initrd-{prog.name}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.gz"
        if not path.is_file():
            with self._locked():
                if not path.is_file():
                    self._build_initrd(prog, kdir, path)
        return path

    def _build_initrd(self, prog: GuestProgram, kdir: Path, path: Path) -> None:
        with tempfile.TemporaryDirectory(dir=self.root) as x:
            run(["dpkg", "-x", str(kdir / "kernel.deb"), x], timeout=300)
            kos = {p.name.removesuffix(".ko"): p for p in Path(x, "lib", "modules").rglob("*.ko")}
            kos.update({k.replace("-", "_"): v for k, v in list(kos.items())})
            ordered: list[str] = []

            def add(name: str) -> None:
                ko = kos.get(name) or kos.get(name.replace("-", "_"))
                if ko is None:
                    return          # built into the kernel
                key = ko.name.removesuffix(".ko")
                if key in ordered:
                    return
                for dep in _modinfo_depends(ko):
                    add(dep)
                ordered.append(key)

            for mod in prog.modules:
                add(mod)
            entries: list[tuple[str, int, bytes, int]] = [
                (d, stat.S_IFDIR | 0o755, b"", 0) for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules")]
            entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", os.makedev(5, 1)))
            entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path("/bin/busybox").read_bytes(), 0))
            entries.append(("init", stat.S_IFREG | 0o755, prog.init_script(ordered).encode(), 0))
            for key in ordered:
                entries.append((f"lib/modules/{key}.ko", stat.S_IFREG | 0o644, kos[key].read_bytes(), 0))
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1, mtime=0))
            tmp.chmod(0o644)
            tmp.rename(path)

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        for p in (self.root, self.root.parent):
            if p.stat().st_mode & 0o005 != 0o005:
                p.chmod(p.stat().st_mode | 0o755)
        return _FileLock(self.root / ".lock")


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
