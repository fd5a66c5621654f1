"""Build (once) and cache the Debian 12 base image the VMs boot from.

A debootstrap'ed rootfs (Debian's own packages from the configured mirror) becomes an ext4 filesystem
(``mkfs.ext4 -d``, no loop mount) converted to qcow2; Debian's kernel and a small initramfs are copied
out of its /boot so QEMU boots them directly (``-kernel``/``-initrd``, no bootloader). The result lives
in ``${KVMOPS_CACHE:-/var/cache/kvmops-fleet}/vm/<key>/`` where ``key`` hashes every input (suite,
mirror, package lists, size, and this builder's own source): changed inputs build a new image, same
inputs reuse the cached one. VMs never write to it (each gets a qcow2 overlay).

Per-VM configuration is not baked in: the image carries ``vmlab-setup.service``, which at every boot
reads a shell script from the QEMU fw_cfg item ``opt/vmlab/setup`` (hostname, SSH keys, addresses of
the private links) before networkd and sshd start.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Bump when the guest-side files below change in a way the source hash would not show (it does,
# since the whole file is hashed; this is for humans reading manifests).
BUILDER_VERSION = 1

BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-amd64", "initramfs-tools", "zstd", "kmod", "udev",
    "systemd", "systemd-sysv", "dbus",
    "openssh-server", "openssh-client", "python3", "python3-apt", "sudo",
    "iproute2", "iputils-ping", "procps", "less", "netcat-openbsd",
    "drbd-utils", "lvm2", "thin-provisioning-tools", "ifenslave",
)

# Loaded by the initramfs to find the root disk; everything else comes from the root filesystem.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")

# Modules udev would autoload for the emulated PC that no test needs; each costs ~1 s under TCG.
BLACKLISTED_MODULES = (
    "kvm", "kvm_amd", "kvm_intel", "ccp", "cfg80211", "rfkill", "floppy", "pcspkr", "drm",
    "ata_piix", "ata_generic", "libata", "psmouse", "serio_raw", "i2c_piix4", "ghash_clmulni_intel",
    "aesni_intel", "sha512_ssse3", "sha256_ssse3", "sha1_ssse3", "crct10dif_pclmul",
)

MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "man-db.timer", "systemd-networkd-wait-online.service",
    "getty@tty1.service", "systemd-timesyncd.service",
    "modprobe@drm.service", "modprobe@fuse.service", "modprobe@efi_pstore.service",
)

# Services a variant's packages enable that a VM starts only when its spec asks for them: a VM chooses its
# network provider at boot (``VMSpec.net``: systemd-networkd by default, NetworkManager or ifupdown through
# ``systemd.wants=`` on the kernel command line), the cluster stack and tuned are started by the role under test, as
# on a host where it was installed and not yet configured. Disabled, not masked, so a role can enable them.
OPTIONAL_UNITS = (
    "networking.service",  # ifupdown (pulled in by ifenslave)
    "NetworkManager.service", "NetworkManager-wait-online.service", "NetworkManager-dispatcher.service",
    "corosync.service", "pacemaker.service", "pcsd.service", "pcsd-ruby.service", "sbd.service",
    "corosync-qdevice.service", "corosync-qnetd.service",
    "tuned.service",  # the tuning role enables it with the profile it sets
)


def cache_root() -> Path:
    return Path(os.environ.get("KVMOPS_CACHE", "/var/cache/kvmops-fleet")) / "vm"


@dataclass(frozen=True)
class ImageSpec:
    """Inputs of a base image; all of them go into the cache key."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    extra_packages: tuple[str, ...] = ()
    size: str = "3G"
    packages: tuple[str, ...] = BASE_PACKAGES

    @classmethod
    def from_env(cls, extra: tuple[str, ...] = ()) -> ImageSpec:
        """``VMLAB_EXTRA_PACKAGES`` (space or comma separated) adds packages to the image."""
        env = os.environ.get("VMLAB_EXTRA_PACKAGES", "").replace(",", " ").split()
        return cls(
            suite=os.environ.get("VMLAB_SUITE", cls.suite),
            mirror=os.environ.get("VMLAB_MIRROR", cls.mirror),
            extra_packages=tuple(sorted(set(extra) | set(env))),
        )

    def all_packages(self) -> list[str]:
        return sorted(set(self.packages) | set(self.extra_packages))

    def key(self) -> str:
        inputs = {
            "suite": self.suite,
            "mirror": self.mirror,
            "packages": self.all_packages(),
            "size": self.size,
            "builder_version": BUILDER_VERSION,
            "builder_source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        }
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
        return f"{self.suite}-{digest[:16]}"


@dataclass
class BaseImage:
    """A built image in the cache."""

    path: Path  # directory holding base.qcow2, vmlinuz, initrd.img, manifest.json
    manifest: dict = field(default_factory=dict)

    @property
    def qcow2(self) -> Path:
        return self.path / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @classmethod
    def load(cls, path: Path) -> BaseImage | None:
        man = path / "manifest.json"
        if not man.is_file():
            return None
        img = cls(path, json.loads(man.read_text()))
        if not (img.qcow2.is_file() and img.kernel.is_file() and img.initrd.is_file()):
            return None
        return img


class ImageBuildError(RuntimeError):
    pass


def _run(cmd: list[str], log, **kw) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, **kw)
    if proc.returncode != 0:
        raise ImageBuildError(f"{cmd[0]} failed (rc={proc.returncode}); see {log.name}")


def _in_private_mounts(shell: str) -> list[str]:
    """Run a shell snippet in a private mount namespace: mounts it makes (proc for a chroot,
    debootstrap's own) vanish with it, even when the build is killed."""
    return ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-euc", shell]


SETUP_SCRIPT = """\
#!/bin/sh
# vmlab: per-VM configuration handed in by QEMU (fw_cfg item opt/vmlab/setup), run at every boot
# before networkd and sshd. The image itself stays generic.
modprobe qemu_fw_cfg 2>/dev/null || true
f=/sys/firmware/qemu_fw_cfg/by_name/opt/vmlab/setup/raw
i=0
while [ ! -r "$f" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -r "$f" ]; then
    echo "vmlab-setup: no fw_cfg item opt/vmlab/setup; leaving the VM unconfigured" >&2
    exit 0
fi
(umask 077; cat "$f" > /run/vmlab-setup.sh)
umask 022
exec sh -eu /run/vmlab-setup.sh
"""

SETUP_UNIT = """\
[Unit]
Description=vmlab per-VM configuration (QEMU fw_cfg opt/vmlab/setup)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=network-pre.target systemd-networkd.service ssh.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vmlab-setup

[Install]
WantedBy=sysinit.target
"""

SSHD_CONF = """\
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def _customize(root: Path) -> None:
    def write(rel: str, text: str, mode: int = 0o644) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    write("etc/fstab", "/dev/vda / ext4 defaults,noatime 0 1\n")
    write("etc/hostname", "vmlab\n")
    write("etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    write("etc/resolv.conf", "")  # the guests have no DNS and no route off their links
    write("etc/machine-id", "")  # generated per VM at first boot
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    write("etc/initramfs-tools/conf.d/vmlab.conf", "MODULES=list\nCOMPRESS=zstd\n")
    write("etc/initramfs-tools/modules", "".join(m + "\n" for m in INITRAMFS_MODULES))
    write("etc/modules-load.d/vmlab.conf", "qemu_fw_cfg\n")
    write("etc/modprobe.d/vmlab-blacklist.conf", "".join(f"blacklist {m}\n" for m in BLACKLISTED_MODULES))
    write("etc/ssh/sshd_config.d/vmlab.conf", SSHD_CONF)
    write("usr/local/sbin/vmlab-setup", SETUP_SCRIPT, 0o755)
    write("etc/systemd/system/vmlab-setup.service", SETUP_UNIT)
    write("etc/systemd/journald.conf.d/vmlab.conf", "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n")
    write("etc/systemd/system.conf.d/vmlab.conf", "[Manager]\nDefaultTimeoutStopSec=10s\n")
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def build_image(spec: ImageSpec | None = None, *, force: bool = False, log_to=None) -> BaseImage:
    """Return the cached image for ``spec``; build it first if missing (or ``force``)."""
    spec = spec or ImageSpec.from_env()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / spec.key()
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; waiters reuse its result
        if not force:
            img = BaseImage.load(final)
            if img is not None:
                return img
        for stale in root.glob(".tmp-*"):  # left by a builder that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = root / f".tmp-{spec.key()}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        t0 = time.monotonic()
        logpath = work.parent / f"build-{spec.key()}.log"
        try:
            with open(logpath, "w") as log:
                _build_into(spec, work, log)
            manifest = {
                "key": spec.key(),
                "spec": asdict(spec),
                "packages": spec.all_packages(),
                "builder_version": BUILDER_VERSION,
                "build_seconds": round(time.monotonic() - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "kernel_version": (work / "kernel-version").read_text().strip(),
            }
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(work, final)
            shutil.move(str(logpath), str(final / "build.log"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        img = BaseImage.load(final)
        assert img is not None
        if log_to is not None:
            log_to(f"built {final} in {manifest['build_seconds']} s")
        return img


def _build_into(spec: ImageSpec, work: Path, log) -> None:
    rootfs = work / "rootfs"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
    env.pop("PYTHONPATH", None)
    _run([*_in_private_mounts('debootstrap --variant=minbase --components=main --include="$1" "$2" "$3" "$4"'),
          "debootstrap", ",".join(spec.all_packages()), spec.suite, str(rootfs), spec.mirror], log, env=env)
    _customize(rootfs)
    # Kernel postinst already built an initramfs with every module; rebuild the small one
    # (MODULES=list) and enable our units, inside the chroot with its own /proc.
    _run([*_in_private_mounts(
        'mount -t proc proc "$1/proc"; '
        'chroot "$1" systemctl enable -q vmlab-setup.service systemd-networkd.service ssh.service; '
        'for u in $2; do if [ -e "$1/lib/systemd/system/$u" ]; then chroot "$1" systemctl disable -q "$u"; fi; done; '
        'chroot "$1" update-initramfs -u -k all; '
        'chroot "$1" apt-get clean'
    ), "chroot", str(rootfs), " ".join(OPTIONAL_UNITS)], log, env=env)
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError("no kernel in the rootfs /boot")
    kver = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    shutil.copy2(rootfs / "boot" / f"initrd.img-{kver}", work / "initrd.img")
    (work / "kernel-version").write_text(kver + "\n")
    # apt lists are dropped to keep the image small; the empty dir is dated back so apt's
    # cache_valid_time does not take it for fresh.
    _drop_apt_lists(rootfs)
    raw = work / "root.img"
    _run(["mkfs.ext4", "-q", "-L", "vmlab-root", "-d", str(rootfs), str(raw), spec.size], log)
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "base.qcow2")], log)
    raw.unlink()
    shutil.rmtree(rootfs)


def _drop_apt_lists(root: Path) -> None:
    lists = root / "var/lib/apt/lists"
    if lists.is_dir():
        for p in lists.iterdir():
            if p.is_file():
                p.unlink()
        os.utime(lists, (0, 0))


def list_images() -> list[BaseImage]:
    out = []
    for d in sorted(cache_root().glob("*")) if cache_root().is_dir() else []:
        if d.is_dir() and not d.name.startswith("."):
            img = BaseImage.load(d)
            if img:
                out.append(img)
    return out
