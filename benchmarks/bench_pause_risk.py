# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the pause-risk forecast beside the plain diagnosis (issue 23).

    python3 benchmarks/bench_pause_risk.py [--reps 5] [--domains 1000] [--paused 100]

In one run, over the same fleet: libvirt's test driver resident in a PRIVATE unprivileged libvirtd (user nobody,
its own socket under the work dir; the machine's libvirtd is never touched; bench_pause_facts' Daemon and Resident),
1,000 domains of which 100 paused. Every repetition runs, in rotating order so background load hits both alike:

  plain      kvm_pause_facts (what the diagnostics role runs by default)
  forecast   kvm_pause_facts, then kvm_pause_risk (diagnostics_forecast=true)

each module as its own process (benchmarks/_modrun.py, as AnsiballZ runs it). Reported: medians of the process
wall and of the modules' own work (their duration_seconds), the ratio forecast / plain, and the forecast's cost
per running domain (kvm_pause_risk's work / the running domains it forecast). The test driver's disks name
files that do not exist on this machine, so the forecast's per-disk stat and storage lookups fail fast: the
figure is the libvirt side (listing, one XMLDesc per running domain, parsing) plus what every disk costs when
its file is missing; real storage adds one stat (and one statvfs per filesystem) per disk.

Markdown on stdout and in .build/bench/pause-risk.md, raw samples in .build/bench/pause-risk.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_pause_facts import OUT, REPO, Daemon, Resident, Runner, ensure_venv  # noqa: E402


def module(r: Runner, path: Path, args: dict, key: str) -> dict:
    """One module run as its own process -> {wall, work, facts summary}."""
    argfile = r.work / f"args-{path.stem}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    wall, out, err, _rss, rc = r._wait([r.py, str(HERE / "_modrun.py"), r.collections, str(path), str(argfile)])
    res = json.loads(out[out.index("{") :])
    if rc or res.get("failed"):
        raise RuntimeError(f"{path.name} failed (rc {rc}): {res.get('msg')} {err[-300:]}")
    facts = res["ansible_facts"][key]
    return {
        "wall": wall,
        "work": facts["duration_seconds"],
        "summary": facts.get("summary"),
        "complete": facts.get("complete"),
    }


def med(values) -> float:
    return statistics.median(values)


def spread(values) -> float:
    return (max(values) - min(values)) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--paused", type=int, default=100)
    ap.add_argument("--workdir", help="default: a fresh temporary directory")
    args = ap.parse_args()
    ensure_venv()  # re-runs this script (sys.argv[0]) in the benchmark venv
    sys.path.insert(0, str(REPO / "tests"))  # kvmlab: the test driver's domains
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kvmops-bench-risk-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    OUT.mkdir(parents=True, exist_ok=True)
    r = Runner(work, sys.executable)
    facts_py = REPO / "plugins" / "modules" / "kvm_pause_facts.py"
    risk_py = REPO / "plugins" / "modules" / "kvm_pause_risk.py"
    daemon = Daemon(work)
    samples = {"plain": [], "forecast": []}
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": os.getloadavg(),
        "cores": os.cpu_count(),
        "args": vars(args),
    }
    try:
        daemon.start()
        with Resident(daemon, args.domains, args.paused) as res:
            report["setup_seconds"] = res.setup_seconds
            margs = {"uri": res.uri, "timeout": 120}
            module(r, facts_py, margs, "kvm_pause")  # warm-up: page cache, the daemon's first client
            module(r, risk_py, margs, "kvm_pause_risk")
            for rep in range(args.reps):
                order = ("plain", "forecast") if rep % 2 == 0 else ("forecast", "plain")
                for which in order:
                    facts = module(r, facts_py, margs, "kvm_pause")
                    rec = {"facts_wall": facts["wall"], "facts_work": facts["work"]}
                    if which == "forecast":
                        risk = module(r, risk_py, margs, "kvm_pause_risk")
                        rec.update(
                            risk_wall=risk["wall"],
                            risk_work=risk["work"],
                            risk_complete=risk["complete"],
                            running=risk["summary"]["domains"],
                            disks=risk["summary"]["disks"],
                        )
                    samples[which].append(rec)
                    print(f"  rep {rep + 1} {which}: {json.dumps(rec)}", flush=True)
    finally:
        daemon.stop()
    plain, fc = samples["plain"], samples["forecast"]
    p_wall = [s["facts_wall"] for s in plain]
    p_work = [s["facts_work"] for s in plain]
    f_wall = [s["facts_wall"] + s["risk_wall"] for s in fc]
    f_work = [s["facts_work"] + s["risk_work"] for s in fc]
    r_work = [s["risk_work"] for s in fc]
    running = fc[0]["running"]
    per_dom_ms = [1000 * s["risk_work"] / s["running"] for s in fc]
    fig = {
        "plain_wall": med(p_wall),
        "plain_work": med(p_work),
        "forecast_wall": med(f_wall),
        "forecast_work": med(f_work),
        "risk_work": med(r_work),
        "running": running,
        "ratio_wall": med(f_wall) / med(p_wall),
        "ratio_work": med(f_work) / med(p_work),
        "per_running_domain_ms": med(per_dom_ms),
        "complete": all(s["risk_complete"] for s in fc),
    }
    report.update(samples=samples, figures=fig, load_after=os.getloadavg())
    md = [
        f"## Forecast beside the plain diagnosis: {args.domains} domains ({args.paused} paused, {running} running), "
        f"test+unix:///default (resident), {args.reps} repetitions, medians (± half the min-max spread)",
        "",
        "| run | process wall (s) | module work (s) |",
        "|---|---:|---:|",
        f"| kvm_pause_facts (plain) | {med(p_wall):.2f} ± {spread(p_wall):.2f} | "
        f"{med(p_work):.3f} ± {spread(p_work):.3f} |",
        f"| kvm_pause_facts + kvm_pause_risk | {med(f_wall):.2f} ± {spread(f_wall):.2f} | "
        f"{med(f_work):.3f} ± {spread(f_work):.3f} |",
        f"| ratio forecast / plain | {fig['ratio_wall']:.2f} x | {fig['ratio_work']:.2f} x |",
        "",
        f"kvm_pause_risk's own work: {fig['risk_work']:.3f} s for {running} running domains = "
        f"{fig['per_running_domain_ms']:.2f} ms per running domain (complete: {fig['complete']}). "
        f"Load before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}, {report['cores']} cores.",
    ]
    text = "\n".join(md) + "\n"
    print(text)
    (OUT / "pause-risk.md").write_text(text)
    (OUT / "pause-risk.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
