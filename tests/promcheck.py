"""Test helpers for the host collector: run the real program, read its textfile, ask Debian's promtool.

``run_collector(tmp, **settings)`` runs roles/diagnostics/files/kvmops_pause_collector.py as the timer
would (a JSON config file, its own process) with this checkout's module_utils on its library path;
``promtool(*args)`` runs $KVMOPS_PROMTOOL; ``alert_test(...)`` builds a ``promtool test rules`` file whose
input series are samples of a real textfile and whose checks are the firing ALERTS at given times.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COLLECTOR = REPO / "roles" / "diagnostics" / "files" / "kvmops_pause_collector.py"
RULES = REPO / "roles" / "diagnostics" / "files" / "prometheus" / "kvmops-fleet-alerts.yml"
RULE_TESTS = REPO / "tests" / "prometheus"
# tests/conftest.py links the checkout as ansible_collections/kvmops/fleet under .build/collections
LIBDIR = REPO / ".build" / "collections"

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def promtool_path() -> str:
    path = os.environ.get("KVMOPS_PROMTOOL") or shutil.which("promtool")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("promtool not found: run hack/setup.sh (it sets KVMOPS_PROMTOOL) or install prometheus")
    return path


def promtool(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([promtool_path(), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    textfile: Path
    state_file: Path

    @property
    def text(self) -> str:
        return self.textfile.read_text()

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())


def write_config(tmp: Path, **settings) -> Path:
    (tmp / "textfile").mkdir(parents=True, exist_ok=True)
    cfg = {"textfile_dir": str(tmp / "textfile"), "state_dir": str(tmp / "state"), "libdir": str(LIBDIR)}
    cfg.update(settings)
    path = tmp / "pause-collector.json"
    path.write_text(json.dumps(cfg))
    return path


def start_collector(tmp: Path, *extra: str, python: str = sys.executable, program: Path = COLLECTOR,
                    **settings) -> subprocess.Popen:
    cfg = write_config(tmp, **settings)
    return subprocess.Popen([python, str(program), "--config", str(cfg), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_collector(tmp: Path, *extra: str, python: str = sys.executable, program: Path = COLLECTOR,
                  wait: float = 120, **settings) -> Run:
    t = time.monotonic()
    proc = start_collector(tmp, *extra, python=python, program=program, **settings)
    try:
        out, err = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return Run(proc.returncode, out, err, time.monotonic() - t, tmp / "textfile" / "kvmops_pause.prom",
               tmp / "state" / "pause-collector.json")


def parse_text(text: str) -> list[tuple[str, dict, float]]:
    """Samples of a Prometheus text file (the subset the collector writes: no timestamps)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a sample line: {line!r}")
        name, labels, value = m.groups()
        out.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return out


def select(samples, name: str, **labels) -> list[tuple[dict, float]]:
    return [(lb, v) for n, lb, v in samples if n == name and all(lb.get(k) == w for k, w in labels.items())]


def series_text(name: str, labels: dict) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def alert_test(tmp: Path, samples, checks: dict[str, list[dict]], *, minutes: int = 30,
               rebase: dict[str, float] | None = None) -> subprocess.CompletedProcess:
    """``promtool test rules`` with every sample as a constant series scraped each minute.

    ``rebase``: metric name -> value, for the *_timestamp_seconds metrics: promtool's clock starts at 0,
    so a real Unix timestamp is replaced by the given time in that clock (everything else is kept as the
    collector wrote it). ``checks``: eval_time ("15m") -> the expected firing ALERTS label sets.
    """
    target = {"instance": "hv-under-test:9100", "job": "node"}
    series = []
    for name, labels, value in samples:
        constant = (rebase or {}).get(name, value)
        series.append({"series": series_text(name, {**labels, **target}), "values": f"{constant!r}x{minutes}"})
    tests = []
    for eval_time, alerts in checks.items():
        exp = [{"labels": series_text("ALERTS", {**a, **target, "alertstate": "firing"}), "value": 1}
               for a in alerts]
        tests.append({"expr": 'ALERTS{alertstate="firing"}', "eval_time": eval_time, "exp_samples": exp})
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    path = tmp / "real-output.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return promtool("test", "rules", str(path))
