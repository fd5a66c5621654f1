"""AWX job slicing with one merged report: two slices of the diagnose job, each with its own part of the inventory
and its own report directory (as AWX runs a sliced job: one ansible-runner job per slice), then the workflow's
merge node (project file merge_slices.yml, the diagnostics role's entry point ``merge``). The merged report and
kvmops_fleet_summary must be those of the same fleet diagnosed by one unsliced job: same hosts, counts, causes,
forecast rows and state digest; a merge over overlapping slices fails naming the host."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_runner import HV, NOLIBVIRT, private_data_dir, run_job, survey_answers

pytestmark = pytest.mark.lab


def artifact(r, key: str):
    (stats,) = [e for e in r.events if e["event"] == "playbook_on_stats"]
    return stats["event_data"]["artifact_data"].get(key)


def test_sliced_diagnose_merges_into_the_unsliced_report(lab_domain, tmp_path: Path):
    full, user = lab_domain("enospc"), lab_domain("user")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {
        HV: dict(local),
        NOLIBVIRT: dict(local, diagnostics_uri=f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"),
    }
    # with the forecast: the merged report's pause_risks section must be the unsliced job's too
    base = dict(survey_answers(diagnostics_domains=f"{full.name},{user.name}"), diagnostics_forecast=True)
    runs = tmp_path / "reports" / "run-1"

    # the sliced job: AWX gives every slice its own part of the inventory; each writes its report apart
    summaries = []
    for i, part in enumerate(([HV], [NOLIBVIRT])):
        extravars = dict(base, diagnostics_report_dir=str(runs / f"slice-{i}"))
        pdd = private_data_dir(tmp_path / f"job-slice-{i}", {h: hosts[h] for h in part}, extravars)
        r = run_job(pdd, "diagnose.yml")
        assert (r.status, r.rc) == ("successful", 0), r.stdout.read()
        summaries.append(artifact(r, "kvmops_fleet_summary"))
        assert summaries[-1]["hosts"] == 1, summaries[-1]
    # what AWX would pass on from the sliced job alone: one slice's summary, not the fleet's
    assert {s["hosts_diagnosed"] for s in summaries} == {0, 1}

    # the merge node
    merged_dir = tmp_path / "merged"
    pdd = private_data_dir(tmp_path / "job-merge", {}, {
        "diagnostics_merge_dir": str(runs), "diagnostics_report_dir": str(merged_dir)})
    r = run_job(pdd, "merge_slices.yml")
    out = r.stdout.read()
    assert (r.status, r.rc) == ("successful", 0), out
    summary = artifact(r, "kvmops_fleet_summary")
    merged = json.loads((merged_dir / "kvm-pause-report.json").read_text())
    assert (merged_dir / "kvm-pause-report.md").is_file() and (merged_dir / "kvm-pause-report.html").is_file()
    assert "merged 2 slice report(s): 2 host(s), 2 paused" in out, out

    # the same fleet, one unsliced job
    pdd = private_data_dir(tmp_path / "job-whole", hosts, dict(base, diagnostics_report_dir=str(tmp_path / "whole")))
    r = run_job(pdd, "diagnose.yml")
    assert (r.status, r.rc) == ("successful", 0), r.stdout.read()
    whole_summary = artifact(r, "kvmops_fleet_summary")
    whole = json.loads((tmp_path / "whole" / "kvm-pause-report.json").read_text())

    assert [h["name"] for h in merged["hosts"]] == [HV, NOLIBVIRT]
    assert merged["summary"] == whole["summary"]
    assert merged["state_digest"] == whole["state_digest"]
    rows = [(h["name"], h["status"]) for h in merged["pause_risks"]["hosts"]]
    assert rows == [(HV, "forecast"), (NOLIBVIRT, "failed")] == [
        (h["name"], h["status"]) for h in whole["pause_risks"]["hosts"]]
    assert merged["pause_risks"]["summary"] == whole["pause_risks"]["summary"]
    assert summary["by_cause"] == {"storage_full": 1, "user_paused": 1} == whole_summary["by_cause"]
    volatile = ("generated_at", "report_generated_at")
    assert {k: v for k, v in summary.items() if k not in volatile} == {
        k: v for k, v in whole_summary.items() if k not in volatile}
    assert summary["libvirt_failed_hosts"] == [NOLIBVIRT]
    assert full.state() == full.expected and user.state() == user.expected  # read-only

    # a slice directory that repeats a host: refused, naming it
    again = runs / "slice-again" / "kvm-pause-report.json"
    again.parent.mkdir()
    again.write_text((runs / "slice-0" / "kvm-pause-report.json").read_text())
    r = run_job(private_data_dir(tmp_path / "job-merge-overlap", {}, {
        "diagnostics_merge_dir": str(runs), "diagnostics_report_dir": str(tmp_path / "merged-2")}), "merge_slices.yml")
    out = r.stdout.read()
    assert r.status == "failed", out
    assert f"host {HV} is also in report" in out and "the slices overlap" in out, out
