"""pytest fixtures for vmlab. Import them into a conftest.py::

    from vmlab.pytest_plugin import pytest_terminal_summary, vmlab_pool, vmlab_variant_image  # noqa: F401

``vmlab_pool`` (session) is the shared pool (:mod:`vmlab.pool`): a test module leases a fleet with
``with vmlab_pool.lease(SPEC, who=__name__) as fleet:`` in a module-scoped fixture; the first lease of a spec boots it,
every later one gets it back reset to its first-boot snapshot (proven by fingerprints). Use it for every
real-kernel scenario. ``vmlab_image`` (session) builds or reuses the cached base image; ``vmlab_variant_image``
(session) does the same for a named variant (:mod:`vmlab.variants`); ``vmlab_fleet_factory``
(module) boots a private fleet (for tests about vmlab itself that must not share one) and tears every one of
them down at the end of the module. Whatever happens, nothing outlives the session: fixture finalizers, an
atexit hook in :class:`Fleet` for interpreter exits, PR_SET_PDEATHSIG for QEMU when the test process is
killed, and the orphan sweep at the next session (or ``python -m vmlab down --orphans``).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time

import pytest

from .fleet import Fleet, FleetSpec, reap_orphans
from .image import ImageSpec, build_image
from .pool import Pool
from .variants import DEFAULT_VARIANT, variant_spec


def missing_prerequisites() -> list[str]:
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "ssh",
                           "ssh-keygen", "ip", "unshare") if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root (debootstrap, network namespaces, taps)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    return missing


REPORT: list[str] = []


def report(msg: str) -> None:
    """Timing and memory lines: live on stderr (visible with ``-s``) and repeated in a
    "vmlab" section of pytest's terminal summary (always visible: the tier's numbers matter)."""
    REPORT.append(msg)
    sys.__stderr__.write(f"[vmlab] {msg}\n")
    sys.__stderr__.flush()


POOLS: list[Pool] = []


def pytest_terminal_summary(terminalreporter):
    """Hook: import it into the conftest.py that imports the fixtures."""
    for pool in POOLS:
        boots, resets = sum(pool.boots.values()), sum(pool.resets.values())
        leases = sum(len(e.leases) for e in pool.entries.values()) if pool.entries else None
        report(f"pool: {len(pool.boots)} distinct fleets, {boots} boots, {resets} verified resets"
               + (f" (median {sorted(pool.reset_seconds)[len(pool.reset_seconds) // 2]:.1f} s)" if resets else "")
               + (f", {leases} leases" if leases is not None else ""))
    if REPORT:
        terminalreporter.section("vmlab: boots, resets and memory")
        for line in REPORT:
            terminalreporter.write_line(line)


_REAPED: list[bool] = []


def _prepare() -> None:
    """Skip without the prerequisites; once per session, clean up runs of killed test processes."""
    missing = missing_prerequisites()
    if missing:
        pytest.skip("vmlab needs: " + ", ".join(missing))
    if not _REAPED:
        _REAPED.append(True)
        for line in reap_orphans():
            report(line)


def _ready(spec: ImageSpec, what: str):
    t0 = time.monotonic()
    img = build_image(spec)
    report(f"{what} {img.path.name} ready in {time.monotonic() - t0:.1f} s "
           f"(build took {img.manifest.get('build_seconds')} s when made; kernel {img.manifest.get('kernel_version')})")
    return img


@pytest.fixture(scope="session")
def vmlab_image():
    _prepare()
    return _ready(ImageSpec.from_env(), "image")


@pytest.fixture(scope="session")
def vmlab_variant_image():
    """``vmlab_variant_image("libvirt")`` -> the variant's image, built or reused once per session."""
    _prepare()
    images: dict = {}

    def get(name: str):
        if name not in images:
            images[name] = _ready(variant_spec(name), f"image variant {name}:")
        return images[name]

    return get


@pytest.fixture(scope="session")
def vmlab_pool(vmlab_variant_image):
    """The session's shared pool. ``vmlab_pool.lease(spec, who=__name__)`` -> a context manager."""
    pool = Pool(vmlab_variant_image, report)
    POOLS.append(pool)
    old = signal.getsignal(signal.SIGTERM)
    if old is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        yield _Leaser(pool)
    finally:
        for line in pool.close():
            if line.startswith("KILL"):
                report(line)
        if old is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Leaser:
    """What tests see of the pool: ``lease(spec, who=__name__, variant=DEFAULT_VARIANT)`` and the counters."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def lease(self, spec: FleetSpec, *, who: str, variant: str = DEFAULT_VARIANT):
        return self.pool.lease(spec, variant, who)


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def vmlab_fleet_factory(request):
    fleets: list[Fleet] = []
    # A SIGTERM (CI timeout) becomes a KeyboardInterrupt, so pytest still runs the teardown below.
    old = signal.getsignal(signal.SIGTERM)
    if old is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)

    def make(spec: FleetSpec, image=None) -> Fleet:
        """Boot ``spec`` on ``image`` (default: the base image, built on first use)."""
        fleet = Fleet(spec, image if image is not None else request.getfixturevalue("vmlab_image"))
        fleets.append(fleet)
        t0 = time.monotonic()
        fleet.up()
        report(f"fleet {fleet.run_id}: {len(spec.vms)} VMs SSH-ready in {time.monotonic() - t0:.1f} s")
        for name, st in fleet.stats().items():
            report(f"  {name}: boot-to-SSH {st['boot_seconds']} s, QEMU RSS {st['rss_mib']} MiB "
                   f"(guest RAM {st['memory_mb']} MiB), ssh 127.0.0.1:{st['ssh_port']}")
        return fleet

    try:
        yield make
    finally:
        for fleet in fleets:
            for name, st in (fleet.stats() if fleet.vms else {}).items():
                if st["alive"]:
                    report(f"  {name}: QEMU RSS at teardown {st['rss_mib']} MiB")
            fleet.down()
        if old is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
