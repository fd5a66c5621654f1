"""The fleets real-kernel scenarios share. Ask the pool for one of these rather than a spec of your own:
every distinct spec is one more boot in every test session (see tests/vmlab/README.md, "Shared fleets").

``HV2``: two hypervisors of the ``hypervisor`` image, each with 2 vCPUs and 1,280 MiB over two NUMA nodes,
two extra disks (``/dev/vdb``, ``/dev/vdc``), a 16 MiB disk both see (``/dev/vdd``, by id
``virtio-vmlab-shared-sbd``: sbd's shared disk), and four private links: ``lan`` (eth1) and ``repl`` (eth2)
addressed, ``bond1`` (eth3) and ``bond2`` (eth4) unaddressed for bonds, VLANs and bridges. systemd-networkd
runs the network. For DRBD (repl, vdb), the cluster (lan + repl, sbd), bridges and bonds (lan, bond1, bond2),
host tuning (NUMA, disks) and kvm_tune on a nested hypervisor (libvirt in the VMs).

``PROVIDERS``: one small VM per network provider (``nmhost``: NetworkManager, ``ifuphost``: ifupdown, ``ndhost``:
systemd-networkd) on one addressed link, for the bridge role's provider matrix and its three-host ``serial: 1``
rollout.
"""
from __future__ import annotations

from .fleet import FleetSpec, LinkSpec, SharedDiskSpec, VMSpec

HV2 = FleetSpec(
    vms=[VMSpec(name, memory_mb=1280, cpus=2, numa_nodes=2, disks=["256M", "256M"]) for name in ("vma", "vmb")],
    links=[LinkSpec("lan"), LinkSpec("repl"), LinkSpec("bond1", addressed=False), LinkSpec("bond2", addressed=False)],
    shared_disks=[SharedDiskSpec("sbd", "16M")],
)

PROVIDERS = FleetSpec(
    vms=[VMSpec("nmhost", memory_mb=512, disks=[], net="nm"),
         VMSpec("ifuphost", memory_mb=512, disks=[], net="ifupdown"),
         VMSpec("ndhost", memory_mb=512, disks=[], net="networkd")],
    links=[LinkSpec("lan")],
)
