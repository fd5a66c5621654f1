"""A second libvirtd for the migration states: libvirtd + QEMU (TCG) in a privileged rootful podman container.

Image: ``debootstrap`` of Debian bookworm (same libvirt 9.0 / QEMU 7.2 as the host) with libvirt and QEMU,
``podman import``-ed as ``localhost/kvmlab-peer:bookworm``; the rootfs tarball is cached under
``${KVMOPS_CACHE}/kvmlab-peer``. Podman runs with the project's configuration (written by hack/setup.sh,
exported by hack/env.sh: runc, cgroupfs, default_ulimits that fit this machine), never the global one.

The container shares the host's network namespace (migration runs over 127.0.0.1 only) and gets its own
hostname and libvirt host UUID, so libvirt sees two hosts. Its /run/libvirt is a directory of the lab's
session, so the host reaches it as ``qemu+unix:///system?socket=<dir>/libvirt-sock``. The guest kernel cache
and the lab workdir are bind-mounted at the same paths, so one domain XML is valid on both sides.

The destination QEMU runs as root with its capabilities (inside the container only): post-copy needs
userfaultfd, and this host has vm.unprivileged_userfaultfd=0, which the lab must not change.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

from .proc import LabError, run, wait_for

IMAGE_NAME = "localhost/kvmlab-peer"
# libvirt-daemon-system is left out: debootstrap cannot configure its systemd/polkit dependencies, and
# the lab writes libvirtd.conf and qemu.conf itself (QEMU runs as root, so no libvirt-qemu user is needed)
# tini is PID 1: libvirtd as PID 1 does not reap the QEMU processes it probes/kills, and then waits 40 s
# on each of those zombies ("Failed to terminate process ... Device or resource busy")
PACKAGES = "libvirt-daemon,libvirt-daemon-driver-qemu,qemu-system-x86,procps,tini"
MIRROR = os.environ.get("KVMLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")

QEMU_CONF = """# kvmlab peer: a migration destination on the same machine
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
clear_emulator_capabilities = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""
# libvirt refuses loopback for migration_address/migration_host in qemu.conf; the lab passes
# VIR_MIGRATE_PARAM_LISTEN_ADDRESS=127.0.0.1 and URI tcp://127.0.0.1 with each migration instead.


def podman_env() -> dict[str, str]:
    """Environment for podman with the project's own configuration (runc, ulimits, storage).

    hack/setup.sh writes those files and hack/env.sh exports their paths; the machine's global
    /etc/containers configuration is never used or changed.
    """
    env = dict(os.environ)
    missing = [k for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF") if not Path(env.get(k, "")).is_file()]
    if missing:
        raise LabError(f"{' and '.join(missing)} not set to an existing file: run hack/setup.sh and "
                       "`source hack/env.sh` (every make target does) before using the migration peer")
    return env


def image_tag() -> str:
    """Image tag = hash of how the image is made: a change in packages or configuration rebuilds it."""
    recipe = "\n".join([PACKAGES, QEMU_CONF, inspect.getsource(configure_rootfs)])
    return f"{IMAGE_NAME}:bookworm-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def ensure_image(cache_root: Path, env: dict[str, str]) -> float:
    """Build the peer image if podman does not have it; returns the seconds spent (0 when cached)."""
    image = image_tag()
    if run(["podman", "image", "exists", image], env=env, check=False).returncode == 0:
        return 0.0
    t0 = time.monotonic()
    tarball = cache_root / f"rootfs-{image.rsplit(':', 1)[1]}.tar"
    if not tarball.exists():
        _debootstrap(cache_root, tarball)
    run(["podman", "import", "--change", 'CMD ["/bin/sh"]', str(tarball), image], env=env, timeout=600)
    return time.monotonic() - t0


def _debootstrap(cache_root: Path, tarball: Path) -> None:
    debcache = cache_root / "debcache"
    debcache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            run(["debootstrap", "--variant=minbase", f"--cache-dir={debcache}", f"--include={PACKAGES}",
                 "bookworm", str(rootfs), MIRROR], timeout=1800)
            configure_rootfs(rootfs)
            pack_rootfs(rootfs, tarball)
        finally:
            _umount_below(rootfs)     # a failed debootstrap can leave /proc etc. mounted in the chroot


def _umount_below(path: Path) -> None:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        run(["umount", "-l", m], check=False)


def configure_rootfs(rootfs: Path) -> None:
    # libvirt's QEMU driver resolves its compiled-in user even when qemu.conf says root; same ids as the host
    chroot = ["chroot", str(rootfs)]
    run([*chroot, "sh", "-c", "getent group kvm >/dev/null || groupadd -r -g 107 kvm; "
         "getent group libvirt-qemu >/dev/null || groupadd -r -g 64055 libvirt-qemu; "
         "getent passwd libvirt-qemu >/dev/null || useradd -r -u 64055 -g kvm -d /var/lib/libvirt "
         "-s /usr/sbin/nologin libvirt-qemu"])
    for d in ("etc/libvirt", "var/log/libvirt", "var/lib/libvirt/qemu", "var/cache/libvirt/qemu"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/libvirt/qemu.conf").write_text(QEMU_CONF)
    # a host UUID of its own: libvirt refuses to migrate to a host with the same UUID
    (rootfs / "etc/libvirt/libvirtd.conf").write_text(f'host_uuid = "{uuid.uuid4()}"\nlog_outputs = "3:stderr"\n')
    # never start the default NAT network (it would create virbr0 + iptables rules on the host)
    for link in (rootfs / "etc/libvirt/qemu/networks/autostart").glob("*"):
        link.unlink()
    run(["chroot", str(rootfs), "apt-get", "clean"])


def pack_rootfs(rootfs: Path, tarball: Path) -> None:
    tmp_tar = tarball.with_suffix(".tmp")
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp_tar), "."], timeout=600)
    tmp_tar.rename(tarball)


class Peer:
    """The running container. ``uri`` is the peer libvirtd's URI; ``record`` is what teardown needs."""

    def __init__(self, name: str, lab_dir: Path, cache_root: Path, guest_cache: Path) -> None:
        self.name, self.lab_dir, self.cache_root, self.guest_cache = name, lab_dir, cache_root, guest_cache
        self.run_dir = lab_dir / f"{name}.run"
        self.env = podman_env()
        self.uri = f"qemu+unix:///system?socket={self.run_dir}/libvirt-sock"
        self.image_seconds = 0.0

    @property
    def record(self) -> dict:
        return {"kind": "container", "name": self.name, "env": {
            k: self.env[k] for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")}}

    def start(self, timeout: float = 120.0) -> libvirt.virConnect:
        self.image_seconds = ensure_image(self.cache_root, self.env)
        self.run_dir.mkdir(mode=0o755, exist_ok=True)
        caps = self.cache_root / "qemu-caps"      # QEMU capabilities cache survives the container
        caps.mkdir(exist_ok=True)
        run(["podman", "run", "-d", "--privileged", "--name", self.name, "--hostname", self.name,
             "--network", "host", "--label", "kvmlab=1",
             "-v", f"{self.guest_cache}:{self.guest_cache}:ro",
             "-v", f"{self.lab_dir}:{self.lab_dir}",
             "-v", f"{self.run_dir}:/run/libvirt",
             "-v", f"{caps}:/var/cache/libvirt/qemu",
             image_tag(), "tini", "--", "sh", "-c", "virtlogd -d; exec libvirtd"], env=self.env, timeout=120)

        def connect() -> libvirt.virConnect | None:
            if not self.running():
                raise LabError(f"peer container exited:\n{self.logs()}")
            try:
                return libvirt.open(self.uri)
            except libvirt.libvirtError:
                return None

        return wait_for(connect, timeout, f"peer libvirtd at {self.uri}", interval=0.2, details=self.logs)

    def running(self) -> bool:
        cp = run(["podman", "inspect", "-f", "{{.State.Running}}", self.name], env=self.env, check=False)
        return cp.stdout.strip() == "true"

    def logs(self) -> str:
        return run(["podman", "logs", "--tail", "30", self.name], env=self.env, check=False).stdout

    def stop(self) -> None:
        remove_container(self.record)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def remove_container(record: dict) -> None:
    env = {**os.environ, **record["env"]}
    run(["podman", "rm", "-f", "-t", "0", "--ignore", record["name"]], env=env, timeout=120)
