"""A session-wide pool of booted fleets, shared by every test module that asks for the same thing.

A TCG boot costs about half a minute of both cores; a reset to a snapshot costs seconds. So a fleet is
booted once per test session for each distinct ask (the image variant plus the whole
:class:`~vmlab.fleet.FleetSpec`: VMs, memory, vCPUs, NUMA layout, disks, network provider, links, shared
disks), snapshotted right after its first boot, and handed to every test module that asks for the same
thing. A module leases it (:meth:`Pool.lease`); when the lease ends the fleet is parked (its VMs stopped,
so an idle fleet costs no CPU) and marked dirty; the next lease reverts it to the snapshot and proves the
revert: each VM's state fingerprint (links, addresses, routes, modules, sysctls, mounts, file metadata of
/etc, /root, /var/lib, ...; and this machine's side of its links) must equal the one recorded when the
snapshot was taken, or the lease fails.

Boots and resets are counted per key (:attr:`Pool.boots`, :attr:`Pool.resets`): the tests prove sharing by
the count, not by a timing.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from .fleet import Fleet, FleetSpec, VmlabError
from .image import BaseImage

SNAPSHOT = "vmlab-clean"


class ResetError(VmlabError):
    """A revert did not bring a VM back to the state recorded with the snapshot."""


@dataclass
class Entry:
    key: str
    fleet: Fleet
    fingerprints: dict[str, str]
    leased_by: str | None = None
    leases: list[str] = field(default_factory=list)  # who leased it, in order


class Pool:
    """Fleets by key. ``report`` gets one line per boot, snapshot and reset (with seconds)."""

    def __init__(self, image_for, report=lambda msg: None):
        """``image_for(variant) -> BaseImage`` builds or reuses the cached image of a variant."""
        self._image_for = image_for
        self._report = report
        self.entries: dict[str, Entry] = {}
        self.boots: Counter[str] = Counter()
        self.resets: Counter[str] = Counter()
        self.reset_seconds: list[float] = []

    @staticmethod
    def key(spec: FleetSpec, image: BaseImage) -> str:
        text = json.dumps({"image": image.path.name, "spec": spec.canonical()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def acquire(self, spec: FleetSpec, variant: str, who: str) -> Fleet:
        """A booted fleet for ``spec`` on ``variant``, in the state of its first boot."""
        image = self._image_for(variant)
        key = self.key(spec, image)
        entry = self.entries.get(key)
        if entry is not None and entry.leased_by is not None:
            raise VmlabError(f"fleet {key} is leased by {entry.leased_by}; {who} cannot have it at the same time")
        if entry is not None and not all(vm.alive() for vm in entry.fleet):
            self._report(f"pool {key}: a QEMU of run {entry.fleet.run_id} is gone; booting the fleet again")
            entry.fleet.down()
            entry = None
        if entry is None:
            entry = self._boot(key, spec, image)
        else:  # every lease leaves it dirty (parked); a failed reset leaves it dirty too
            self._reset(entry)
        entry.leased_by = who
        entry.leases.append(who)
        return entry.fleet

    def release(self, fleet: Fleet) -> None:
        """The lease ends: the fleet is parked (VMs stopped) and reverted on its next lease."""
        for entry in self.entries.values():
            if entry.fleet is fleet:
                entry.leased_by = None
                with contextlib.suppress(OSError, VmlabError):
                    fleet._all_qmp("stop")
                return
        raise VmlabError(f"run {fleet.run_id} is not in the pool")

    @contextlib.contextmanager
    def lease(self, spec: FleetSpec, variant: str, who: str):
        fleet = self.acquire(spec, variant, who)
        try:
            yield fleet
        finally:
            self.release(fleet)

    def entry(self, fleet: Fleet) -> Entry:
        return next(e for e in self.entries.values() if e.fleet is fleet)

    def close(self) -> list[str]:
        done: list[str] = []
        for entry in self.entries.values():
            done += entry.fleet.down()
        self.entries.clear()
        return done

    # ---- internals
    def _boot(self, key: str, spec: FleetSpec, image: BaseImage) -> Entry:
        fleet = Fleet(spec, image)
        t0 = time.monotonic()
        fleet.up()
        booted = time.monotonic() - t0
        self.boots[key] += 1
        try:
            t1 = time.monotonic()
            prints = fleet.snapshot(SNAPSHOT)
        except BaseException:
            fleet.down()
            raise
        self._report(f"pool {key}: booted {len(spec.vms)} VMs ({image.path.name}) SSH-ready in {booted:.1f} s, "
                     f"snapshot in {time.monotonic() - t1:.1f} s (run {fleet.run_id})")
        for name, st in fleet.stats().items():
            self._report(f"  {name}: boot-to-SSH {st['boot_seconds']} s, QEMU RSS {st['rss_mib']} MiB "
                         f"(guest RAM {st['memory_mb']} MiB), ssh 127.0.0.1:{st['ssh_port']}")
        entry = Entry(key, fleet, prints)
        self.entries[key] = entry
        return entry

    def _reset(self, entry: Entry) -> None:
        t0 = time.monotonic()
        entry.fleet.revert(SNAPSHOT)
        reverted = time.monotonic() - t0
        now = entry.fleet.fingerprints()
        seconds = time.monotonic() - t0
        for name, recorded in entry.fingerprints.items():
            if now.get(name) != recorded:
                diff = difflib.unified_diff(recorded.splitlines(), now.get(name, "").splitlines(), "snapshot",
                                            "after the revert", lineterm="", n=0)
                raise ResetError(f"pool {entry.key}: {name} is not in its snapshot state after the revert:\n"
                                 + "\n".join(list(diff)[:60]))
        self.resets[entry.key] += 1
        self.reset_seconds.append(seconds)
        self._report(f"pool {entry.key}: reset to the first-boot snapshot in {reverted:.1f} s, verified in "
                     f"{seconds - reverted:.1f} s")
