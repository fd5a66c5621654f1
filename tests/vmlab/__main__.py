"""CLI: ``python -m vmlab build|up|down|status`` (run from tests/, or with tests/ on PYTHONPATH)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from .fleet import (
    Fleet,
    FleetSpec,
    LinkSpec,
    VMSpec,
    down_all,
    down_run,
    leftovers,
    list_runs,
    reap_orphans,
    runs_root,
)
from .image import ImageSpec, build_image, cache_root, list_images
from .variants import VARIANTS, variant_spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vmlab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the cached base image")
    b.add_argument("--extra", action="append", default=[], help="extra package (repeatable)")
    b.add_argument("--variant", action="append", default=None, choices=sorted(VARIANTS),
                   help="build a named variant instead (repeatable; see vmlab/variants.py)")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--prune", action="store_true", help="delete cached images of other inputs")
    u = sub.add_parser("up", help="boot a fleet and leave it running (until `down`)")
    u.add_argument("-n", "--count", type=int, default=2)
    u.add_argument("--link", action="append", default=None,
                   help="private link name (repeatable; default: lan). NAME:none = unaddressed")
    u.add_argument("--memory", type=int, default=512, help="MiB per VM")
    u.add_argument("--disk", action="append", default=None, help="extra disk size per VM (repeatable)")
    u.add_argument("--extra", action="append", default=[], help="extra image package (repeatable)")
    u.add_argument("--variant", choices=sorted(VARIANTS), help="boot a named image variant")
    d = sub.add_parser("down", help="tear down a run (or --all)")
    d.add_argument("run", nargs="?", help="run id or run directory")
    d.add_argument("--all", action="store_true", help="every run, plus stray vmlab-* namespaces")
    d.add_argument("--orphans", action="store_true", help="runs whose owning test process is gone")
    st = sub.add_parser("status", help="list images, runs and anything vmlab left on this machine")
    st.add_argument("--check", action="store_true",
                    help="exit 1 when any run, vmlab-* namespace, vmlab QEMU or loop device under the runs is left")
    a = ap.parse_args(argv)

    if a.cmd == "build":
        if a.variant and a.extra:
            ap.error("--extra and --variant do not mix (a variant is a package list)")
        specs = [variant_spec(v) for v in a.variant] if a.variant else [ImageSpec.from_env(tuple(a.extra))]
        built = []
        for spec in specs:
            t0 = time.monotonic()
            img = build_image(spec, force=a.force)
            built.append(img)
            print(json.dumps({"image": str(img.path), "seconds": round(time.monotonic() - t0, 1),
                              **{k: img.manifest.get(k) for k in ("build_seconds", "kernel_version")}}, indent=2))
        if a.prune:
            keep = {img.path for img in built}
            for other in list_images():
                if other.path not in keep:
                    shutil.rmtree(other.path)
                    print(f"pruned {other.path}", file=sys.stderr)
        return 0
    if a.cmd == "up":
        links = []
        for spec in a.link or ["lan"]:
            name, _sep, mode = spec.partition(":")
            links.append(LinkSpec(name, addressed=mode != "none"))
        disks = a.disk if a.disk is not None else ["256M"]
        spec = FleetSpec([VMSpec(f"vm{chr(ord('a') + i)}", memory_mb=a.memory, disks=list(disks))
                          for i in range(a.count)], links)
        if a.variant and a.extra:
            ap.error("--extra and --variant do not mix (a variant is a package list)")
        img = build_image(variant_spec(a.variant) if a.variant else ImageSpec.from_env(tuple(a.extra)))
        fleet = Fleet(spec, img, owned=False).up()
        fleet.detach()
        print(json.dumps({"run": str(fleet.run_dir), "inventory": str(fleet.inventory_path),
                          "vms": fleet.stats()}, indent=2))
        return 0
    if a.cmd == "down":
        if a.all:
            done = down_all()
        elif a.orphans:
            done = reap_orphans()
        elif a.run:
            p = Path(a.run) if "/" in a.run else runs_root() / a.run
            done = down_run(p)
        else:
            ap.error("down needs a run id or --all")
        print("\n".join(done) or "nothing to do")
        return 0
    if a.cmd == "status":
        print(f"image cache: {cache_root()}")
        for img in list_images():
            m = img.manifest
            print(f"  {img.path.name}  kernel {m.get('kernel_version')}  built {m.get('built_at')} "
                  f"in {m.get('build_seconds')} s")
        print(f"runs: {runs_root()}")
        for run in list_runs():
            f = Fleet.load(run)
            print(f"  {f.run_id}  netns {f.netns}  inventory {f.inventory_path}")
            for name, st in f.stats().items():
                print(f"    {name}: " + " ".join(f"{k}={v}" for k, v in st.items()))
        left = leftovers()
        print("left on this machine: " + ("nothing" if not left else ""))
        for line in left:
            print(f"  {line}")
        return 1 if a.check and left else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
