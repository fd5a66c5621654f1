"""The DRBD metrics of kvmops-pause-collector (pause/_promtext.render of a report whose ``drbd`` is what drbd/_facts_io
read from real DRBD 8.4.11 in the vmlab VMs, fixtures/drbd) checked by promtool from Debian's prometheus package:
``promtool check metrics`` (format + lint) on the text, and the shipped alert rules evaluated on it: a split brain
fires KvmopsDrbdSplitBrain at once, a disconnected resource fires KvmopsDrbdDegraded after 10 minutes, a healthy one
fires nothing. A report without ``drbd`` (a host without DRBD) has no DRBD sample."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from promcheck import alert_test, parse_text, promtool, select

from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _promtext

FIX = Path(__file__).resolve().parents[1] / "plugins" / "module_utils" / "fixtures" / "drbd"
TOOLS = {"drbdsetup": "/usr/sbin/drbdsetup", "drbdadm": "/usr/sbin/drbdadm", "dmesg": "/usr/bin/dmesg"}
NOW = 1_795_000_000.0


def drbd_facts(tmp_path, step, vm):
    c = json.loads((FIX / f"{step}-{vm}.json").read_text())["commands"]
    root = tmp_path / f"{step}-{vm}"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "drbd").write_text(c["cat /proc/drbd"]["stdout"])

    def runner(argv, timeout):
        if argv[0].endswith("dmesg"):
            return 0, c["dmesg | grep -i drbd | tail -n 40"]["stdout"], ""
        if argv[1:] == ["show"]:
            return 0, c["drbdsetup show"]["stdout"], ""
        return 0, json.loads((FIX / "versions.json").read_text())["drbdadm --version"], ""
    return _facts_io.gather(2, runner=runner, root=str(root), tools=TOOLS)


def report(drbd=None):
    r = {"complete": True, "summary": {"total": 0, "running": 0, "paused": 0}, "paused": [], "errors": [],
         "storage_unresponsive": []}
    if drbd is not None:
        r["drbd"] = drbd
    return r


def render(rep):
    text, _state = _promtext.render(rep, None, now=NOW, duration=0.2, interval=30, paused_alert_seconds=900,
                                    stale_alert_seconds=300)
    return text


@pytest.mark.parametrize("step,vm,verdict", [("split-brain", "vma", "split-brain"),
                                             ("disconnected", "vma", "disconnected"),
                                             ("connected-uptodate", "vmb", "healthy"),
                                             ("diskless", "vmb", "diskless")])
def test_drbd_metrics_pass_promtool_and_say_the_state(tmp_path, step, vm, verdict):
    facts = drbd_facts(tmp_path, step, vm)
    text = render(report(facts))
    res = promtool("check", "metrics", stdin=text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stdout + res.stderr
    samples = parse_text(text)
    verdicts = {lb["verdict"]: v for lb, v in select(samples, "kvmops_drbd_resource_verdict", resource="r0")}
    assert verdicts == {v: (1.0 if v == verdict else 0.0) for v in _promtext.DRBD_VERDICTS}
    (r,) = facts["resources"]
    assert select(samples, "kvmops_drbd_resource_role") == [({"resource": "r0", "role": r["role"]}, 1.0)]
    assert select(samples, "kvmops_drbd_volume_disk_state") == [
        ({"resource": "r0", "volume": "0", "minor": "0", "disk_state": r["volumes"][0]["disk_state"]}, 1.0)]
    (peer,) = select(samples, "kvmops_drbd_peer_connection_state")
    assert peer[0]["connection_state"] == r["peers"][0]["connection_state"]
    assert peer[0]["peer"] == (r["peers"][0]["address"] or "")   # a StandAlone 8.4 side shows no peer address
    assert select(samples, "kvmops_drbd_split_brain") == [({"resource": "r0"}, float(verdict == "split-brain"))]
    if r["out_of_sync_bytes"] is not None:
        assert select(samples, "kvmops_drbd_out_of_sync_bytes") == [({"resource": "r0"},
                                                                     float(r["out_of_sync_bytes"]))]
    assert select(samples, "kvmops_drbd_errors") == [({}, 0.0)]


def test_disconnected_vma_out_of_sync_is_what_proc_drbd_said(tmp_path):
    samples = parse_text(render(report(drbd_facts(tmp_path, "disconnected", "vma"))))
    assert select(samples, "kvmops_drbd_out_of_sync_bytes") == [({"resource": "r0"}, 8192 * 1024.0)]


def test_no_drbd_no_sample():
    for rep in (report(), report({"loaded": False, "resources": [], "errors": []})):
        assert "kvmops_drbd" not in render(rep)


def test_rules_fire_on_the_drbd_metrics(tmp_path):
    split = [{"alertname": "KvmopsDrbdSplitBrain", "severity": "critical", "resource": "r0"}]
    res = alert_test(tmp_path, parse_text(render(report(drbd_facts(tmp_path, "split-brain", "vma")))),
                     {"0m": split, "12m": split},
                     rebase={"kvmops_collector_last_success_timestamp_seconds": 1e9,
                             "kvmops_collector_last_run_timestamp_seconds": 1e9})
    assert res.returncode == 0, res.stdout + res.stderr
    # split-brain is not one of the degraded verdicts: only the split-brain alert, however long it lasts
    res = alert_test(tmp_path, parse_text(render(report(drbd_facts(tmp_path, "split-brain", "vmb")))),
                     {"10m": split, "20m": split},
                     rebase={"kvmops_collector_last_success_timestamp_seconds": 1e9,
                             "kvmops_collector_last_run_timestamp_seconds": 1e9})
    assert res.returncode == 0, res.stdout + res.stderr
    degraded = [{"alertname": "KvmopsDrbdDegraded", "severity": "warning", "resource": "r0"}]
    res = alert_test(tmp_path, parse_text(render(report(drbd_facts(tmp_path, "disconnected", "vma")))),
                     {"9m": [], "10m": degraded},
                     rebase={"kvmops_collector_last_success_timestamp_seconds": 1e9,
                             "kvmops_collector_last_run_timestamp_seconds": 1e9})
    assert res.returncode == 0, res.stdout + res.stderr
    res = alert_test(tmp_path, parse_text(render(report(drbd_facts(tmp_path, "connected-uptodate", "vma")))),
                     {"0m": [], "15m": []},
                     rebase={"kvmops_collector_last_success_timestamp_seconds": 1e9,
                             "kvmops_collector_last_run_timestamp_seconds": 1e9})
    assert res.returncode == 0, res.stdout + res.stderr
