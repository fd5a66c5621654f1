"""The benchmark comparison rendered by the tuning role's own tasks (roles/tuning/tasks/benchmark_report.yml, real
ansible-playbook, real copy and template modules) from recorded kvm_benchmark runs (benchmark_fixture.py): a host
with a clear change, a host with noise only (a hostile name), a host without the earlier run, and a hostile label.
The JSON is checked against the filter's own comparison, the HTML in headless Chromium (no console error, nothing
loaded, counts and verdicts as in the JSON, hostile strings as text), the Markdown rendered; a second run and a
check-mode run change nothing; a run file with a NaN fails naming host, label and metric.
Screenshots: .build/artifacts/benchmark-compare*.png."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from browser import check_report

from ansible_collections.kvmops.fleet.plugins.plugin_utils._bench_compare import VERDICTS, compare

from .benchmark_fixture import (
    AFTER,
    BEFORE,
    HOST_CHANGED,
    HOST_MISSING,
    HOST_NOISE,
    HOSTILE_CMDLINE,
    fleet_runs,
)
from .helpers import ARTIFACTS, assert_safe_html, parse_html, recap, render_markdown, run_playbook, task_status

PLAYBOOK = Path(__file__).with_name("render_benchmark.yml")
WRITE_TASKS = ("Write the comparison as JSON", "Write the comparison as Markdown", "Write the comparison as HTML")
BASE = f"compare-{BEFORE}-vs-{AFTER}"
FILES = {"json": f"{BASE}.json", "markdown": f"{BASE}.md", "html": f"{BASE}.html"}
BETTER = {"randread-4k-qd1.lat_mean_us", "randread-4k-qd32.iops", "randread-4k-qd32.bw_mib_s",
          "randread-4k-qd32.lat_mean_us", "randread-4k-qd32.lat_p99_us", "randwrite-4k-qd32.iops",
          "randwrite-4k-qd32.bw_mib_s", "randwrite-4k-qd32.lat_mean_us"}
WORSE = {"seqread-1m.iops", "seqread-1m.bw_mib_s"}


def write_runs(runs_dir: Path, runs: dict) -> None:
    for host, by_label in runs.items():
        (runs_dir / host).mkdir(parents=True, exist_ok=True)
        for label, run in by_label.items():
            (runs_dir / host / f"{label}.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")


def render(tmp: Path, runs_dir: Path, *args) -> tuple[int, str]:
    inv = tmp / "inventory.json"
    inv.write_text(json.dumps({"all": {"hosts": {
        h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} for h in fleet_runs()}}}))
    extra = tmp / "vars.json"
    extra.write_text(json.dumps({"tuning_benchmark_dir": str(runs_dir), "tuning_benchmark_label": AFTER,
                                 "tuning_benchmark_compare_with": BEFORE, "tuning_benchmark_min_effect": 0.02}))
    return run_playbook(["-i", inv, PLAYBOOK, "-e", f"@{extra}", *args], cwd=tmp)


def host_lines(out: str) -> dict:
    """The per-host lines of 'Print the comparison per host': {host: text}."""
    m = re.search(r"TASK \[[^\]]*Print the comparison per host\] \**\n(.*?)(?=^TASK |^PLAY RECAP)", out,
                  re.MULTILINE | re.DOTALL)
    assert m, out
    lines = [json.loads(x) for x in re.findall(r'^\s*"msg": (".*")$', m.group(1), re.MULTILINE)]
    return {h: line[len(h) + 2:] for line in lines for h in fleet_runs() if line.startswith(h + ": ")}


def expected_report(runs_dir: Path) -> dict:
    runs = fleet_runs()
    hosts = []
    for host in sorted(runs):
        if BEFORE in runs[host] and AFTER in runs[host]:
            hosts.append(dict(compare(runs[host][BEFORE], runs[host][AFTER], 0.02), host=host, status="compared"))
        else:
            hosts.append({"host": host, "status": "not_compared",
                          "reason": f"no run {BEFORE} ({runs_dir / host / BEFORE}.json is not a file)"})
    done = [h for h in hosts if h["status"] == "compared"]
    summary = {"hosts": len(hosts), "compared": len(done), "not_compared": len(hosts) - len(done)}
    summary.update({v: sum(h["counts"][v] for h in done) for v in VERDICTS})
    return {"schema_version": 1, "before_label": BEFORE, "after_label": AFTER, "min_effect": 0.02, "hosts": hosts,
            "summary": summary}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchmark-report")
    runs_dir = tmp / "runs"
    write_runs(runs_dir, fleet_runs())
    rc, out = render(tmp, runs_dir)
    assert rc == 0, out
    return tmp, runs_dir, out


def test_files_json_and_summary(rendered):
    _tmp, runs_dir, out = rendered
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_file()) == sorted(FILES.values())
    for name in FILES.values():
        assert (runs_dir / name).stat().st_mode & 0o777 == 0o644
    for task in WRITE_TASKS:
        assert task_status(out, task) == ["changed"], task
    data = json.loads((runs_dir / FILES["json"]).read_text())
    assert data == expected_report(runs_dir)
    assert data["summary"] == {"hosts": 3, "compared": 2, "not_compared": 1, "better": 8, "worse": 2,
                               "within noise": 44, "too few repeats": 0, "missing in before": 0,
                               "missing in after": 0}
    by_host = {h["host"]: h for h in data["hosts"]}
    changed = {m["metric"]: m["verdict"] for m in by_host[HOST_CHANGED]["metrics"]}
    assert {k for k, v in changed.items() if v == "better"} == BETTER
    assert {k for k, v in changed.items() if v == "worse"} == WORSE
    assert len(changed) == 27
    assert {m["verdict"] for m in by_host[HOST_NOISE]["metrics"]} == {"within noise"}
    assert set(by_host[HOST_CHANGED]["tuning_diff"]) == {"scheduler", "read_ahead_kb", "nr_requests", "thp_enabled",
                                                         "cmdline"}
    assert by_host[HOST_NOISE]["tuning_diff"] == {} and by_host[HOST_NOISE]["warnings"] == []
    assert by_host[HOST_MISSING] == {"host": HOST_MISSING, "status": "not_compared",
                                     "reason": f"no run before ({runs_dir / HOST_MISSING}/before.json is not a file)"}
    assert host_lines(out) == {
        HOST_CHANGED: "8 better, 2 worse, 17 within noise, 0 too few repeats",
        HOST_NOISE: "0 better, 0 worse, 27 within noise, 0 too few repeats",
        HOST_MISSING: f"not compared: no run before ({runs_dir / HOST_MISSING}/before.json is not a file)",
    }
    assert f"before vs {AFTER}: 2 of 3 hosts compared, in {runs_dir / FILES['json']}" in out.replace('\\"', '"')


def test_html_in_chromium(rendered):
    _tmp, runs_dir, _out = rendered
    page = runs_dir / FILES["html"]
    data = json.loads((runs_dir / FILES["json"]).read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    res = check_report(page, screenshot=ARTIFACTS / "benchmark-compare.png", timeout=120)
    top = check_report(page, screenshot=ARTIFACTS / "benchmark-compare-top.png", timeout=120, screenshot_height=1500)
    assert res.console_errors == [] and top.console_errors == []
    assert res.requests == [page.as_uri()] and res.blocked == []
    assert res.scripts == 0 and res.duplicates == []
    assert res.title == f"Benchmark before vs {AFTER}: 8 better, 2 worse on 2 of 3 hosts"
    assert res.counts == data["summary"]
    assert res.hosts == {HOST_CHANGED: "compared", HOST_NOISE: "compared", HOST_MISSING: "not_compared"}
    assert res.metrics == {f"{h['host']}/{m['metric']}": m["verdict"]
                           for h in data["hosts"] if h["status"] == "compared" for m in h["metrics"]}
    assert len(res.metrics) == 54
    for h in data["hosts"]:
        if h["status"] == "compared":
            seen = [v for k, v in res.metrics.items() if k.startswith(h["host"] + "/")]
            assert {v: seen.count(v) for v in VERDICTS} == h["counts"]
    assert res.vms == {}
    assert (ARTIFACTS / "benchmark-compare.png").stat().st_size > 50_000


def test_html_is_escaped_and_self_contained(rendered):
    _tmp, runs_dir, _out = rendered
    text = (runs_dir / FILES["html"]).read_text()
    page = parse_html(text)
    assert_safe_html(page, "benchmark comparison")
    assert "http://" not in text and "https://" not in text
    assert "<script>" not in text and "<img src=x" not in text and "<i>&" not in text
    joined = "".join(page.text)
    assert HOST_NOISE in joined and AFTER in joined and HOSTILE_CMDLINE in joined
    assert ("data-kvmops-host", HOST_NOISE) in {(k, v) for _t, k, v in page.attrs}
    csp = [v for tag, k, v in page.attrs if tag == "meta" and k == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    assert page.tags.count("svg") == 2  # one chart per compared host
    assert page.tags.count("g") == 54  # a row per metric with both sides


def test_markdown_renders(rendered):
    _tmp, runs_dir, _out = rendered
    md = (runs_dir / FILES["markdown"]).read_text()
    html = render_markdown(md)
    page = parse_html(html)
    assert_safe_html(page, "markdown")
    # summary, hosts not compared, the changed host's tuning difference and metrics, the noise host's metrics
    assert page.tags.count("table") == 5
    assert page.tags.count("img") == 0 and page.tags.count("i") == 0 and "script" not in page.tags
    text = "".join(page.text)
    assert HOST_NOISE in text and AFTER in text and HOSTILE_CMDLINE in text and HOST_MISSING in text
    assert "8 better, 2 worse" in text
    for table in html.split("<table>")[1:]:
        head = len(re.findall(r"<th[ >]", table.split("</thead>")[0]))
        rows = table.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
        for row in rows:
            assert len(re.findall(r"<td[ >]", row)) == head, row
    metric_rows = [r for r in html.split("<tr>") if "<code>randread-4k-qd32.iops</code>" in r]
    assert len(metric_rows) == 2 and "better" in metric_rows[0] and "within noise" in metric_rows[1]


def test_second_run_and_check_mode_change_nothing(rendered):
    tmp, runs_dir, _out = rendered
    before = {n: (runs_dir / n).read_bytes() for n in FILES.values()}
    for args in ((), ("--check", "--diff")):
        rc, out = render(tmp, runs_dir, *args)
        assert rc == 0, out
        for task in WRITE_TASKS:
            assert task_status(out, task) == ["ok"], (args, task)
        assert recap(out)[HOST_CHANGED]["changed"] == 0
        assert recap(out)[HOST_MISSING]["changed"] == 0
        assert {n: (runs_dir / n).read_bytes() for n in FILES.values()} == before


def test_a_run_that_is_not_a_result_fails_naming_host_label_and_metric(tmp_path):
    runs = fleet_runs()
    runs[HOST_CHANGED][AFTER]["metrics"]["cpu.bogo_ops_per_s"]["values"][1] = float("nan")
    runs_dir = tmp_path / "runs"
    write_runs(runs_dir, runs)
    rc, out = render(tmp_path, runs_dir)
    assert rc != 0
    assert (f"kvmops.fleet.bench_compare: after run (host {HOST_CHANGED}, label {AFTER}): metric "
            "cpu.bogo_ops_per_s: values[1]: nan is not a finite number") in out.replace('\\"', '"')
    assert not any(runs_dir.glob("compare-*"))
