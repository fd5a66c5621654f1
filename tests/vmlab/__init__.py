"""vmlab: nested real-kernel Debian VMs (QEMU TCG) as Ansible test hosts.

Containers share this machine's kernel (no DRBD, VLAN, bonding, device-mapper; sysctl and /sys writes
hit the machine itself). vmlab boots Debian 12 guests with Debian's own kernel instead:

* :mod:`vmlab.image`  - debootstrap a rootfs into a cached qcow2 base image (+ kernel, initrd)
* :mod:`vmlab.fleet`  - start N VMs on copy-on-write overlays, private L2 links (a bridge per link
  inside a network namespace of the run), SSH on 127.0.0.1 only, extra disks, link cut/restore
  over QMP, teardown by PID from a state file
* :mod:`vmlab.inventory` - the Ansible inventory of a running fleet
* :mod:`vmlab.pytest_plugin` - pytest fixtures; ``python -m vmlab`` is the CLI
"""
from __future__ import annotations

from .fleet import Fleet, FleetSpec, LinkSpec, VmlabError, VMSpec
from .image import BaseImage, ImageSpec, build_image

__all__ = [
    "BaseImage",
    "Fleet",
    "FleetSpec",
    "ImageSpec",
    "LinkSpec",
    "VMSpec",
    "VmlabError",
    "build_image",
]
