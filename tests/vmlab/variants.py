"""Named image variants: the base image plus extra Debian packages.

A variant is only an :class:`~vmlab.image.ImageSpec` with ``extra_packages``: it is built by the same
debootstrap builder, cached under its own key (the key hashes the package list), and leaves the base
image and its key alone. ``python -m vmlab build --variant NAME`` builds one (``make images`` builds
every variant the vm tier uses, so the tier itself only boots).

``libvirt``: a hypervisor with a real kernel. libvirt 9.0 (monolithic ``libvirtd``, socket-activated
by systemd), QEMU (TCG inside the VM: the VM has no /dev/kvm), libvirt's Python binding (for the
collection's modules run over SSH), dnsmasq for libvirt's ``default`` NAT network (inside the VM
only: the VM itself has no route off its links), libpam-systemd (polkitd, which libvirt needs, depends on a
logind through a virtual package that debootstrap does not resolve). systemd mounts hugetlbfs on /dev/hugepages at every
boot, before libvirtd starts, so libvirt finds it. Used by ``tests/integration/vm/test_kvm_tune_live.py``.
"""
from __future__ import annotations

from .image import ImageSpec

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "libvirt": ("libvirt-daemon-system", "qemu-system-x86", "python3-libvirt", "dnsmasq-base",
                "libpam-systemd"),
}


def variant_spec(name: str) -> ImageSpec:
    """The ImageSpec of a variant (``VMLAB_SUITE``/``VMLAB_MIRROR``/``VMLAB_EXTRA_PACKAGES`` apply too)."""
    try:
        extra = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown vmlab image variant {name!r} (known: {', '.join(VARIANTS)})") from None
    return ImageSpec.from_env(extra)
