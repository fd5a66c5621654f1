# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The diagnose playbook over a simulated fleet (issue 24): where the time of a fleet run goes.

    python3 benchmarks/bench_fleet.py [--hosts 100] [--domains 1000] [--paused 100] [--reps 1] [--profile]

Each of ``--hosts`` inventory hosts (local connection, the venv's python) diagnoses ``--domains`` libvirt
test-driver domains (``--paused`` of them paused) resident in a PRIVATE unprivileged libvirtd (the same daemon
as benchmarks/bench_pause_facts.py: user nobody, own socket; all hosts share its test:///default driver, so
every host's module does the full work of a 1,000-domain host through a daemon). One repetition runs, in a
rotating order, the same fleet through:

  diagnose       benchmarks/playbooks/fleet_diagnose.yml = playbooks/diagnose.yml (kvmops.fleet.diagnostics:
                 kvm_pause_facts, per-host table, the fleet report JSON/Markdown/HTML, set_stats, summary)
  libvirt_info   community.libvirt.virt command=info (benchmarks/playbooks/libvirt_info.yml)
  bare           ansible.builtin.ping (benchmarks/playbooks/noop.yml): the floor of any task on every host

The timing callback (benchmarks/callback_plugins/kvmops_timing.py) gives the breakdown of the diagnose run:
per-host module work (duration_seconds), the rest of each host's task (AnsiballZ, transfer, interpreter,
imports, result parsing), the controller's handling of each task, the report tasks; the controller's CPU and
peak RSS. ``--profile`` adds one diagnose run under cProfile (controller process only) and prints its top
functions. Output: Markdown on stdout and .build/bench/fleet.md, raw data in .build/bench/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_pause_facts as base  # noqa: E402 - the venv, the private daemon, resident domains

OUT = base.OUT
BOOKS = {"diagnose": "fleet_diagnose.yml", "libvirt_info": "libvirt_info.yml", "bare": "noop.yml"}


def run_book(work: Path, py: str, inv: Path, book: str, forks: int, tag: str, profile: Path | None = None) -> dict:
    """One ansible-playbook run; wall, rc, peak RSS of the process tree, the callback's timings."""
    timing = work / f"timing-{tag}.json"
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(work / "collections"),
        ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="kvmops_timing",
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
        ANSIBLE_REMOTE_TMP=str(work / "ansible-remote-tmp"),
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_FORKS=str(forks),
        KVMOPS_TIMING_OUT=str(timing),
    )
    env.pop("ANSIBLE_CONFIG", None)
    playbook = shutil.which("ansible-playbook", path=str(Path(py).parent))
    argv = [playbook, "-i", str(inv), str(HERE / "playbooks" / BOOKS[book])]
    if profile:
        argv = [py, "-m", "cProfile", "-o", str(profile), *argv]
    log = work / f"out-{tag}.log"
    with open(log, "wb") as fh:
        t0 = time.monotonic()
        p = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
        wall = time.monotonic() - t0
    rec = {"wall": wall, "rc": p.returncode, "maxrss_kib": _children_maxrss()}
    if p.returncode:
        rec["error"] = log.read_text(errors="replace")[-1500:]
    if timing.exists():
        rec["timing"] = json.loads(timing.read_text())
        timing.unlink()
    return rec


def _children_maxrss() -> int:
    import resource  # noqa: PLC0415

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def breakdown(rec: dict, forks: int) -> list:
    """Rows (task, seconds, note) of one diagnose run from the callback's timestamps."""
    t = rec.get("timing") or {}
    tasks = t.get("tasks", [])
    rows = []
    for i, task in enumerate(tasks):
        end = tasks[i + 1]["start"] if i + 1 < len(tasks) else t.get("end")
        span = end - task["start"]
        hosts = task["hosts"].values()
        per_host = [h["end"] - h["start"] for h in hosts if "start" in h and "end" in h]
        mod = [h["module_seconds"] for h in hosts if h.get("module_seconds") is not None]
        sizes = [h["result_bytes"] for h in hosts if h.get("result_bytes")]
        last = max((h["end"] for h in hosts if "end" in h), default=task["start"])
        note = []
        if per_host:
            note.append(f"{len(per_host)} hosts, per host {med(per_host):.3f} s (sum {sum(per_host):.1f} s)")
        if mod:
            note.append(
                f"module work per host {med(mod):.3f} s (sum {sum(mod):.1f} s), outside the module per host "
                f"{med(per_host) - med(mod):.3f} s"
            )
        if sizes:
            note.append(f"result {med(sizes) / 1024:.0f} KiB per host")
        if per_host:
            note.append(f"after the last result {end - last:.2f} s")
        rows.append((task["name"], span, "; ".join(note)))
    return rows


def profile_top(path: Path, n: int = 25) -> str:
    st = pstats.Stats(str(path))
    lines = ["| own s | cumulative s | calls | function |", "|---|---|---|---|"]
    waits = ("time.sleep", "select", "poll", "acquire")
    entries = [kv for kv in st.stats.items() if not any(w in kv[0][2] for w in waits)]
    entries.sort(key=lambda kv: kv[1][2], reverse=True)  # own time: where the controller's CPU goes
    for (file, line, func), (_cc, nc, tt, ct, _callers) in entries[:n]:
        if tt < 0.05:
            break
        where = file.split("site-packages/")[-1] if "site-packages/" in file else file.rsplit("/", 2)[-1]
        lines.append(f"| {tt:.2f} | {ct:.2f} | {nc} | {where}:{line} {func} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--paused", type=int, default=100)
    ap.add_argument("--forks", type=int, default=5)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--books", default="diagnose,libvirt_info,bare")
    ap.add_argument("--profile", action="store_true", help="one more diagnose run under cProfile (controller)")
    ap.add_argument("--workdir")
    ap.add_argument("--out", help="also write the Markdown here (bench_pause_facts.py includes it in its results)")
    ap.add_argument("--target", type=float, default=30.0, help="the diagnose run's target wall time (issue 24)")
    args = ap.parse_args()
    for name, value, low in (
        ("--hosts", args.hosts, 1),
        ("--domains", args.domains, 1),
        ("--forks", args.forks, 1),
        ("--reps", args.reps, 1),
        ("--paused", args.paused, 0),
    ):
        if value < low:
            ap.error(f"{name} must be >= {low}, got {value}")
    if args.paused > args.domains:
        ap.error(f"--paused ({args.paused}) must not exceed --domains ({args.domains})")
    books = [b for b in args.books.split(",") if b]
    bad = [b for b in books if b not in BOOKS]
    if bad:
        ap.error(f"--books: unknown {', '.join(bad)} (choose from {', '.join(BOOKS)})")
    base.ensure_venv()
    sys.path.insert(0, str(base.REPO / "tests"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kvmops-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    OUT.mkdir(parents=True, exist_ok=True)
    base.Runner(work, sys.executable)  # links the collection under work/collections
    daemon = base.Daemon(work)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg(), "args": vars(args)}
    samples = {b: [] for b in books}
    md = []
    try:
        daemon.start()
        with base.Resident(daemon, args.domains, args.paused) as res:
            print(f"resident {args.domains}/{args.paused} set up in {res.setup_seconds:.1f} s", flush=True)
            inv = work / "inventory.json"
            inv.write_text(
                json.dumps(
                    {
                        "all": {
                            "vars": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": sys.executable,
                                "bench_dir": str(HERE),
                                "bench_uri": res.uri,
                                "bench_report_dir": str(work / "report"),
                            },
                            "hosts": {f"hv{i:03d}": {} for i in range(args.hosts)},
                        }
                    }
                )
            )
            for rep in range(args.reps):
                order = books[rep % len(books) :] + books[: rep % len(books)]
                for b in order:
                    shutil.rmtree(work / "report", ignore_errors=True)
                    rec = run_book(work, sys.executable, inv, b, args.forks, f"{b}-{rep}")
                    samples[b].append(rec)
                    print(f"  rep {rep + 1}: {b} {rec['wall']:.1f} s rc {rec['rc']}", flush=True)
            if args.profile and "diagnose" in books:
                prof = work / "diagnose.prof"
                shutil.rmtree(work / "report", ignore_errors=True)
                report["profiled"] = run_book(work, sys.executable, inv, "diagnose", args.forks, "prof", prof)
                report["profile_top"] = profile_top(prof)
        report["samples"] = samples
        walls = {b: med([x["wall"] for x in samples[b]]) for b in books}
        report["walls"] = walls
        title = f"{args.hosts} hosts x {args.domains:,} domains ({args.paused} paused), forks {args.forks}"
        md += [
            f"## Fleet: {title}",
            "",
            "| playbook | runs | wall | / bare task | / libvirt info |",
            "|---|---|---|---|---|",
        ]
        for b in books:
            w = walls[b]
            md.append(
                f"| {b} | {len(samples[b])} | {base.fmt(w, ' s', 1)} | {base.ratio(w, walls.get('bare'))} | "
                f"{base.ratio(w, walls.get('libvirt_info'))} |"
            )
        if walls.get("diagnose") is not None:
            verdict = "met" if walls["diagnose"] <= args.target else "NOT met"
            md += ["", f"Diagnosed and reported in {walls['diagnose']:.1f} s: target <= {args.target:.0f} s {verdict}."]
        for b in books:
            for x in samples[b]:
                if x.get("error"):
                    md.append(f"\n! {b} rc {x['rc']}: {x['error'][-600:]}")
        if samples.get("diagnose"):
            rec = samples["diagnose"][len(samples["diagnose"]) // 2]
            t = rec.get("timing") or {}
            md += [
                "",
                f"### Where the diagnose run's {rec['wall']:.1f} s go (one run; controller CPU "
                f"{t.get('controller_cpu', 0):.1f} s, workers' CPU {t.get('children_cpu', 0):.1f} s, controller "
                f"peak RSS {t.get('controller_maxrss_kib', 0) / 1024:.0f} MiB)",
                "",
                "| task | seconds | per host |",
                "|---|---|---|",
            ]
            md += [f"| {name} | {span:.2f} | {note} |" for name, span, note in breakdown(rec, args.forks)]
        if report.get("profile_top"):
            md += [
                "",
                f"### Controller profile (cProfile, one diagnose run: {report['profiled']['wall']:.1f} s "
                "with the profiler)",
                "",
                report["profile_top"],
            ]
    finally:
        daemon.stop()
        report["load_after"] = os.getloadavg()
        base.finish("fleet", "\n".join(md), report, None if args.workdir else work, also=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
