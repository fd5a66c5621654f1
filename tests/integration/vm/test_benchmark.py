"""playbooks/benchmark.yml (kvmops.fleet.tuning, entry point benchmark) on a real kernel: the shared fleet
vmlab.fleets.HV2, host ``vma``, its empty virtio disk vdb and vdc.

- Data safety: vdc gets an ext4 filesystem holding a file; the benchmark refuses it naming the device and the
  signature, and the disk's first MiBs are the same afterwards (sha256).
- Before and after: a labelled run ("before") on vdb, then kvmops.fleet.tune switches vdb's I/O scheduler, then a
  second run ("after") compared with the first. The results (JSON per host and label, with the raw fio and
  stress-ng output and the tuning state at the time), the comparison JSON, the Markdown table and the HTML page
  are checked: the scheduler each run saw, every median recomputed from the repeats, the ratios, the verdicts,
  and the page in headless Chromium (no console error, no request beyond file:/data:).
- Check mode says what it would run and writes nothing.

The jobs are a short subset (runtime 1 s, 3 repeats): in a TCG guest the figures are not a disk's, and the test
asserts what the playbook produces, not how fast anything is.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import check_report

from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
ARTIFACTS = REPO / ".build" / "artifacts"
HOST = "vma"
JOBS = ["randread-4k-qd1", "randwrite-4k-qd32", "seqread-1m", "cpu"]
VERDICTS = {"better", "worse", "within noise"}


@pytest.fixture(scope="module")
def fleet(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as leased:
        yield leased


def playbook(fleet, name: str, variables: dict, *args: str) -> dict:
    """``ansible-playbook kvmops.fleet.<name>`` on HOST -> {"rc", "tasks": {task name: HOST's result}, "seconds",
    "out"}; the JSON callback's output."""
    vars_file = fleet.run_dir / f"{name}-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_PIPELINING="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_DEPRECATION_WARNINGS="0")
    t0 = time.monotonic()
    proc = subprocess.run([str(PLAYBOOK), "-i", str(fleet.inventory_path), f"kvmops.fleet.{name}",
                           "-e", "@" + str(vars_file), *args],
                          env=env, capture_output=True, text=True, timeout=900, check=False, cwd=fleet.run_dir)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    tasks = {}
    for play in data["plays"]:
        for t in play["tasks"]:
            if HOST in t["hosts"]:
                tasks[t["task"]["name"].split(" : ", 1)[-1]] = t["hosts"][HOST]
    return {"rc": proc.returncode, "tasks": tasks, "seconds": seconds, "out": proc.stdout[-4000:]}


def bench_vars(fleet, label: str, **extra) -> dict:
    return {"kvmops_benchmark_hosts": HOST, "tuning_benchmark_label": label,
            "tuning_benchmark_dir": str(fleet.run_dir / "bench"), "tuning_benchmark_device": "/dev/vdb",
            "tuning_benchmark_jobs": JOBS, "tuning_benchmark_runtime": 1, "tuning_benchmark_repeats": 3,
            "tuning_benchmark_file_size": "64M", "tuning_benchmark_stress_workers": 1, **extra}


def active(choice: str) -> str:
    return next(w[1:-1] for w in choice.split() if w.startswith("["))


def test_a_device_holding_a_filesystem_is_refused_and_left_intact(fleet):
    vm = fleet[HOST]
    vm.ssh("mkdir -p /root/fs && echo kvmops-data > /root/fs/keep && mkfs.ext4 -q -F -d /root/fs /dev/vdc")
    digest = "dd if=/dev/vdc bs=1M count=16 status=none | sha256sum"
    before = vm.ssh(digest).stdout
    res = playbook(fleet, "benchmark", bench_vars(fleet, "refused", tuning_benchmark_device="/dev/vdc"))
    assert res["rc"] == 2, res["out"]
    failed = res["tasks"]["Run the benchmark"]
    assert failed["failed"] is True and failed.get("changed") is False, failed
    assert "/dev/vdc" in failed["msg"] and "ext4" in failed["msg"], failed["msg"]
    assert vm.ssh(digest).stdout == before
    assert not (fleet.run_dir / "bench" / HOST / "refused.json").exists()
    report(f"benchmark: ext4 on /dev/vdc refused in {res['seconds']:.1f} s: {failed['msg'][:160]}")


def test_before_and_after_a_scheduler_change_compared(fleet):
    vm = fleet[HOST]
    t_start = time.monotonic()
    first = active(vm.ssh("cat /sys/block/vdb/queue/scheduler").stdout)
    second = "none" if first != "none" else "mq-deadline"
    out = fleet.run_dir / "bench"

    dry = playbook(fleet, "benchmark", bench_vars(fleet, "dry"), "--check")
    assert dry["rc"] == 0, dry["out"]
    would = dry["tasks"]["Run the benchmark"]
    assert would["changed"] is True and len(would["would_run"]) == len(JOBS) * 3, would
    fio_on_vdb = [c for c in would["would_run"] if c.split()[0].endswith("/fio") and "--filename=/dev/vdb" in c.split()]
    assert fio_on_vdb, would["would_run"]
    assert not (out / HOST / "dry.json").exists()

    res = playbook(fleet, "benchmark", bench_vars(fleet, "before"))
    assert res["rc"] == 0, res["out"]
    t_before = res["seconds"]
    tune = playbook(fleet, "tune", {"kvmops_tune_hosts": HOST, "tuning_tuned_profile": "",
                                    "tuning_io_schedulers": [{"name": "vdb", "scheduler": second}]})
    assert tune["rc"] == 0, tune["out"]
    assert active(vm.ssh("cat /sys/block/vdb/queue/scheduler").stdout) == second
    res = playbook(fleet, "benchmark", bench_vars(fleet, "after", tuning_benchmark_compare_with="before"))
    assert res["rc"] == 0, res["out"]

    runs = {label: json.loads((out / HOST / f"{label}.json").read_text()) for label in ("before", "after")}
    assert runs["before"]["tuning"]["scheduler"] == first and runs["after"]["tuning"]["scheduler"] == second
    for label, run in runs.items():
        assert run["label"] == label and run["target"]["kind"] == "device" and run["target"]["device"] == "vdb"
        assert sorted({r["job"] for r in run["raw"]}) == sorted(JOBS) and len(run["raw"]) == len(JOBS) * 3
        fio = [r for r in run["raw"] if r["tool"] == "fio"]
        assert all(r["output"]["jobs"] and "fio version" in r["output"] for r in fio), label
        assert {m.split(".", 1)[0] for m in run["metrics"]} == set(JOBS), sorted(run["metrics"])
        for name, metric in run["metrics"].items():
            assert len(metric["values"]) == 3 and all(v > 0 for v in metric["values"]), (label, name, metric)

    cmp_path = out / "compare-before-vs-after.json"
    comparison = json.loads(cmp_path.read_text())
    (host,) = [h for h in comparison["hosts"] if h["host"] == HOST]
    assert host["tuning_diff"]["scheduler"] == {"before": first, "after": second}, host["tuning_diff"]
    assert host["status"] == "compared" and {m["metric"] for m in host["metrics"]} == set(runs["before"]["metrics"])
    for metric in host["metrics"]:
        b = runs["before"]["metrics"][metric["metric"]]["values"]
        a = runs["after"]["metrics"][metric["metric"]]["values"]
        assert metric["before"]["median"] == pytest.approx(statistics.median(b))
        assert metric["after"]["median"] == pytest.approx(statistics.median(a))
        assert metric["ratio"] == pytest.approx(statistics.median(a) / statistics.median(b))
        assert metric["verdict"] in VERDICTS and metric["false_alarm"] == pytest.approx(0.1, abs=1e-5), metric
        if min(a) <= max(b) and min(b) <= max(a):  # overlapping ranges are never called a change
            assert metric["verdict"] == "within noise", metric

    md = (out / "compare-before-vs-after.md").read_text()
    assert all(m["metric"] in md for m in host["metrics"]), md[:2000]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for suffix in ("md", "json"):  # kept for the tuning guide's example output
        text = (out / f"compare-before-vs-after.{suffix}").read_text()
        (ARTIFACTS / f"benchmark-vm-compare.{suffix}").write_text(text)
    page = check_report(out / "compare-before-vs-after.html", screenshot=ARTIFACTS / "benchmark-vm.png")
    assert page.console_errors == [] and page.blocked == [], page
    assert page.hosts.get(HOST) == "compared", page.hosts
    assert page.metrics and set(page.metrics.values()) <= VERDICTS, page.metrics
    report(f"benchmark: before {t_before:.1f} s, after + comparison {res['seconds']:.1f} s, scenario "
           f"{time.monotonic() - t_start:.1f} s ({len(JOBS)} jobs x 3 x 1 s, scheduler {first} -> {second})")
