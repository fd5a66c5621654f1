"""The shipped alert rules and the real collector's textfile, checked by promtool from Debian's prometheus package.

- ``promtool check rules`` on roles/diagnostics/files/prometheus/kvmops-fleet-alerts.yml;
- ``promtool test rules`` on tests/prometheus/*.test.yml: every alert silent one evaluation before its
  threshold and firing at it;
- ``promtool check metrics`` (format + lint) on what kvmops-pause-collector really writes, for a
  complete run (libvirt's test driver fleet) and a failed one (no daemon behind the URI);
- the rules evaluated on that real output: the label sets the collector writes are the ones the rules join on.
"""
from __future__ import annotations

import re

import pytest
import yaml
from promcheck import RULE_TESTS, RULES, alert_test, parse_text, promtool, run_collector, select

from kvmlab.testdriver import write_fleet

pytest.importorskip("libvirt")


def minutes(text: str) -> int:
    m = re.fullmatch(r"(\d+)m", str(text))
    assert m, f"eval_time {text!r}: write whole minutes"
    return int(m.group(1))


def test_check_rules():
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(alerts)} rules found" in res.stdout
    assert set(alerts) == {"KvmopsDomainPausedTooLong", "KvmopsDomainStorageFull", "KvmopsDiskIOError",
                           "KvmopsCollectorStale", "KvmopsCollectorFailing", "KvmopsStorageUnresponsive",
                           "KvmopsDrbdSplitBrain", "KvmopsDrbdDegraded", "KvmopsStorageOvercommitted",
                           "KvmopsStorageFillsSoon", "KvmopsDomainPausesRepeatedly", "KvmopsPausedUnderMemoryPressure",
                           "KvmopsPausedDomainBridgeDown"}


def test_rule_unit_tests():
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files
    res = promtool("test", "rules", *map(str, files))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files)


def test_every_alert_is_silent_one_evaluation_before_and_fires_at_its_threshold():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    checked = {}
    for f in RULE_TESTS.glob("*.test.yml"):
        doc = yaml.safe_load(f.read_text())
        assert minutes(doc["evaluation_interval"]) == 1
        for t in doc["tests"]:
            by_alert = {}
            for c in t.get("alert_rule_test", []):
                by_alert.setdefault(c["alertname"], {})[minutes(c["eval_time"])] = bool(c["exp_alerts"])
            for name, times in by_alert.items():
                # some minute m expects no alert and the next evaluation, m + 1, expects it firing
                if any(not times[m] and times.get(m + 1) for m in times):
                    checked[name] = True
    assert set(checked) == alerts


@pytest.fixture
def fleet(tmp_path):
    return write_fleet(tmp_path / "fleet.xml", 40)


def test_collector_output_passes_promtool_check_metrics(fleet, tmp_path):
    run = run_collector(tmp_path, uri=fleet, interval=30)
    assert run.rc == 0, run.stderr
    assert "complete" in run.stdout
    res = promtool("check", "metrics", stdin=run.text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stdout + res.stderr
    samples = parse_text(run.text)
    # the test driver's fleet: 40 domains, 24 running, 8 paused, 4 crashed, 4 shut off
    got = {lb["state"]: v for lb, v in select(samples, "kvmops_domains")}
    assert got == {"running": 24, "paused": 8, "crashed": 4, "shutoff": 4, "other": 0}
    assert len(select(samples, "kvmops_domain_paused_info")) == 12
    assert len(select(samples, "kvmops_domain_paused_since_timestamp_seconds")) == 12
    assert select(samples, "kvmops_collector_success") == [({}, 1.0)]
    assert select(samples, "kvmops_collector_interval_seconds") == [({}, 30.0)]
    assert run.textfile.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in run.textfile.parent.iterdir()) == ["kvmops_pause.prom"]   # no temp file left


def test_failed_run_output_passes_promtool_check_metrics(tmp_path):
    run = run_collector(tmp_path, uri=f"qemu+unix:///system?socket={tmp_path}/no-daemon.sock",
                        domains=["kvmmon-none-*"])
    assert run.rc == 1 and "failed" in run.stderr and "not running" in run.stderr
    res = promtool("check", "metrics", stdin=run.text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stdout + res.stderr
    samples = parse_text(run.text)
    assert select(samples, "kvmops_collector_success") == [({}, 0.0)]
    assert select(samples, "kvmops_collector_last_success_timestamp_seconds") == [({}, 0.0)]
    assert not select(samples, "kvmops_domains")


def test_rules_fire_on_real_collector_output(fleet, tmp_path):
    run = run_collector(tmp_path, uri=fleet, paused_alert_seconds=900, stale_alert_seconds=300)
    assert run.rc == 0, run.stderr
    samples = parse_text(run.text)
    eio = [{"alertname": "KvmopsDiskIOError", "severity": "critical", **lb}
           for lb, _v in select(samples, "kvmops_domain_disk_error", error="unspecified")]
    paused = [{"alertname": "KvmopsDomainPausedTooLong",
               **{k: lb[k] for k in ("domain", "uuid", "state", "reason", "cause", "severity", "safe_to_resume")}}
              for lb, _v in select(samples, "kvmops_domain_paused_info")]
    stale = [{"alertname": "KvmopsCollectorStale", "severity": "warning"}]
    assert eio and paused
    # promtool's clock starts at 0: paused since 0, last success at 0, thresholds as the collector wrote them
    res = alert_test(tmp_path, samples, {"4m": eio, "5m": eio + stale, "14m": eio + stale,
                                         "15m": eio + stale + paused},
                     rebase={"kvmops_domain_paused_since_timestamp_seconds": 0,
                             "kvmops_collector_last_success_timestamp_seconds": 0,
                             "kvmops_collector_last_run_timestamp_seconds": 0})
    assert res.returncode == 0, res.stdout + res.stderr
