"""pytest fixtures for vmlab. Import them into a conftest.py::

    from vmlab.pytest_plugin import pytest_terminal_summary, vmlab_fleet_factory, vmlab_image  # noqa: F401

``vmlab_image`` (session) builds or reuses the cached base image; ``vmlab_variant_image``
(session) does the same for a named variant (:mod:`vmlab.variants`); ``vmlab_fleet_factory``
(module) boots fleets from a :class:`~vmlab.fleet.FleetSpec` (on the base image, or on
``image=``) and tears every one of them down at the end of the module, whatever happened
(finalizer, plus an atexit hook in :class:`Fleet` for interpreter exits, plus
``python -m vmlab down --all`` for a killed process).
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
from .variants import variant_spec


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


def pytest_terminal_summary(terminalreporter):
    """Hook: import it into the conftest.py that imports the fixtures."""
    if REPORT:
        terminalreporter.section("vmlab: boot, reboot and memory")
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
