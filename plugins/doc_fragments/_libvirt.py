# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # libvirt connection options shared by the collection's modules
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI. An empty URI is refused (libvirt would connect wherever its own default points).
      - Status files under C(/run/libvirt/qemu) are used as a fallback source only for V(qemu:///system).
    type: str
    default: qemu:///system
  timeout:
    description:
      - Upper bound in seconds for all libvirt work of the task, more than V(0) and at most V(3600).
      - libvirt calls run in a forked worker process that is killed at the deadline, so a libvirt call
        that hangs (for example while a domain is blocked in a save job) cannot hang the task.
    type: float
    default: 10
requirements:
  - libvirt-python (the C(libvirt) Python module) on the managed host
"""
