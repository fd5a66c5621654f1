# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The vmlab guests' emulated CPU model side by side (test speed, not product speed): for each QEMU ``-cpu`` model
named, boot one hypervisor-variant VM (512 MiB, no extra disk), time the boot to SSH, then a guest workload (5 Python
runs importing what Ansible modules import and serialising JSON, 3 ``dpkg-query -W`` and 3 ``systemctl
list-unit-files``), tear it down; the models alternate within each round. Prints each run and, per model, the
medians and their ratio to the first model's.

    python3 benchmarks/bench_vmlab_cpu.py                       # max against the default, 2 rounds
    python3 benchmarks/bench_vmlab_cpu.py --rounds 1 max,la57=off qemu64

Needs root (vmlab) and the cached hypervisor image (make images). Results: tests/vmlab/README.md, "TCG CPU model".
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vmlab.fleet import Fleet, FleetSpec, VMSpec
from vmlab.image import build_image
from vmlab.variants import variant_spec

WORKLOAD = (
    "for i in 1 2 3 4 5; do python3 -c 'import json, subprocess, platform, re, hashlib, email.parser, "
    "urllib.request; [json.dumps(list(range(20000))) for _ in range(30)]'; done; "
    "for i in 1 2 3; do dpkg-query -W >/dev/null; systemctl list-unit-files >/dev/null; done"
)


def one(image, cpu: str) -> tuple[float, float]:
    spec = FleetSpec([VMSpec("vma", memory_mb=512, disks=[])], cpu=cpu)
    t0 = time.monotonic()
    fleet = Fleet(spec, image).up()
    boot = time.monotonic() - t0
    try:
        vm = next(iter(fleet))
        vm.ssh("true")
        t1 = time.monotonic()
        vm.ssh(WORKLOAD, timeout=600)
        return boot, time.monotonic() - t1
    finally:
        fleet.down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("models", nargs="*", default=["max", FleetSpec.__dataclass_fields__["cpu"].default])
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    image = build_image(variant_spec("hypervisor"))
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in a.models}
    for rnd in range(a.rounds):
        for cpu in a.models:
            boot, work = one(image, cpu)
            runs[cpu].append((boot, work))
            print(f"round {rnd + 1}  {cpu:<24} boot {boot:6.1f} s  workload {work:6.1f} s", flush=True)
    base = a.models[0]
    b_boot = statistics.median(r[0] for r in runs[base])
    b_work = statistics.median(r[1] for r in runs[base])
    print(f"\n{'-cpu':<24} {'boot':>8} {'/ ' + base:>14} {'workload':>9} {'/ ' + base:>14}")
    for cpu, rs in runs.items():
        boot = statistics.median(r[0] for r in rs)
        work = statistics.median(r[1] for r in rs)
        print(f"{cpu:<24} {boot:7.1f}s {boot / b_boot:13.2f}x {work:8.1f}s {work / b_work:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
