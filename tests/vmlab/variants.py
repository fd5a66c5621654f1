"""Named image variants: the base image plus extra Debian packages.

A variant is only an :class:`~vmlab.image.ImageSpec` with ``extra_packages``: it is built by the same
debootstrap builder, cached under its own key (the key hashes the package list), and leaves the base
image and its key alone. ``python -m vmlab build --variant NAME`` builds one (``make images`` builds
the variant the vm tier boots, so the tier itself only boots).

``hypervisor``: the one image every real-kernel scenario boots (one cold build instead of one per
capability). It carries every provider the roles under test choose from; what runs is chosen per VM at
boot, so a test sees the host it asks for and nothing else:

* libvirt 9.0 (monolithic ``libvirtd``, socket-activated), QEMU (TCG inside the VM: no /dev/kvm there),
  libvirt's Python binding (the collection's modules over SSH), dnsmasq for libvirt's ``default`` NAT
  network (inside the VM only), libpam-systemd (polkitd needs a logind; debootstrap does not resolve the
  virtual package). systemd mounts hugetlbfs on /dev/hugepages before libvirtd starts.
* Network providers: systemd-networkd (default), NetworkManager and ifupdown (``VMSpec.net``): the other two
  are disabled in the image and the chosen one is started through the kernel command line, with networkd
  masked for that boot; vmlab writes the chosen provider's own files for the links at first boot.
  bridge-utils gives ifupdown its ``bridge_ports`` stanzas.
* Cluster stack as Debian installs it (corosync 3 with its single-node default config, pacemaker 2.1, pcs,
  sbd, corosync-qdevice/qnetd, resource-agents with ocf:heartbeat:VirtualDomain, fence-agents), disabled:
  the role under test configures and starts it.
* Benchmark tools: fio, stress-ng.
* tuned (disabled: enabled, it would apply its recommended profile at every boot and change the sysctls, read-ahead
  and governors every other test sees; kvmops.fleet.tuning enables it when it sets a profile), and the ``vlan``
  package for ifupdown's VLAN stanzas (ifenslave, for its bonds, is in the base image).

``base``: the minimal image (no variant packages), for ``python -m vmlab up`` and quick experiments.
"""
from __future__ import annotations

from .image import ImageSpec

LIBVIRT = ("libvirt-daemon-system", "qemu-system-x86", "python3-libvirt", "dnsmasq-base", "libpam-systemd")
# bridge-utils: ifupdown's bridge_* options (its if-pre-up.d hook); kvmops.fleet.bridge renders them
NETWORK = ("network-manager", "ifupdown", "bridge-utils", "vlan")
# python3-cffi-backend: python3-cryptography (pcs, fence-agents) depends on virtual packages it provides,
# which debootstrap does not resolve.
CLUSTER = ("corosync", "pacemaker", "pcs", "sbd", "corosync-qdevice", "corosync-qnetd", "resource-agents",
           "fence-agents", "python3-cffi-backend")
BENCHMARK = ("fio", "stress-ng")
TUNING = ("tuned",)

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "hypervisor": LIBVIRT + NETWORK + CLUSTER + BENCHMARK + TUNING,
}

# The variant the vm tier and the shared pool boot unless a test asks for another one.
DEFAULT_VARIANT = "hypervisor"

# Network providers a VM can run (``VMSpec.net``) -> the package that must be in its image.
NET_PROVIDERS = {"networkd": "systemd", "nm": "network-manager", "ifupdown": "ifupdown"}


def variant_spec(name: str) -> ImageSpec:
    """The ImageSpec of a variant (``VMLAB_SUITE``/``VMLAB_MIRROR``/``VMLAB_EXTRA_PACKAGES`` apply too)."""
    try:
        extra = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown vmlab image variant {name!r} (known: {', '.join(VARIANTS)})") from None
    return ImageSpec.from_env(extra)
