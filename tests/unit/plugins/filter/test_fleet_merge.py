"""kvmops.fleet.fleet_merge: the reports of disjoint slices merge into the report of the whole fleet (same hosts,
summary, causes, DRBD rows and state digest), and the merged kvmops_fleet_summary is the whole fleet's."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError
from browser.fixture import fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_merge as merge_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_summary as summary_plugin

fleet_merge = merge_plugin.FilterModule().filters()["fleet_merge"]
fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_summary = summary_plugin.FilterModule().filters()["fleet_summary"]
T0 = "2026-11-18T11:06:40Z"
T1 = "2026-11-18T11:07:00Z"
T2 = "2026-11-18T11:08:00Z"


def slices(results: dict, n: int) -> list:
    """AWX-like slicing: host i goes to slice i % n."""
    names = sorted(results)
    return [{h: results[h] for h in names[i::n]} for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_merged_slices_are_the_whole_fleet(n):
    results = fleet_results()
    whole = fleet_report(results, generated_at=T0)
    parts = [fleet_report(s, generated_at=T0 if i else T1) for i, s in enumerate(slices(results, n))]
    merged = fleet_merge(parts)
    assert merged["generated_at"] == T1  # the latest slice's
    for key in ("schema_version", "summary", "hosts", "causes", "drbd", "state_digest"):
        assert merged[key] == whole[key], key
    summary = fleet_summary(merged, generated_at=T2)
    assert summary.pop("report_generated_at") == T1
    assert summary == {k: v for k, v in fleet_summary(whole, generated_at=T2).items() if k != "report_generated_at"}


def test_slices_given_as_json_text_and_a_merge_time():
    results = fleet_results()
    parts = [json.dumps(fleet_report(s, generated_at=T0)) for s in slices(results, 2)]
    merged = fleet_merge(parts, generated_at=T2)
    assert merged["generated_at"] == T2
    assert merged["state_digest"] == fleet_report(results, generated_at=T0)["state_digest"]


def test_merged_summary_counts_every_slice():
    results = fleet_results()
    parts = [fleet_report(s, generated_at=T0) for s in slices(results, 2)]
    merged = fleet_merge(parts)
    assert merged["summary"]["hosts"] == len(results) == sum(p["summary"]["hosts"] for p in parts)
    assert merged["summary"]["paused"] == sum(p["summary"]["paused"] for p in parts)


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ([], "non-empty list of fleet reports"),
        ({"schema_version": 1}, "non-empty list of fleet reports, not mapping"),
        (["{not json"], "report 0: not JSON"),
        ([{"schema_version": 2, "hosts": []}], "report 0: the input must be a fleet report"),
    ],
)
def test_bad_input_is_named(bad, msg):
    with pytest.raises(AnsibleFilterError, match="kvmops.fleet.fleet_merge: .*" + msg):
        fleet_merge(bad)


def test_overlapping_slices_are_refused():
    results = fleet_results()
    part = fleet_report(results, generated_at=T0)
    first = sorted(results)[0]
    with pytest.raises(AnsibleFilterError, match=f"report 1: host {first} is also in report 0: the slices overlap"):
        fleet_merge([part, fleet_report({first: results[first]}, generated_at=T0)])


def test_a_malformed_slice_names_report_host_and_field():
    part = fleet_report(fleet_results(), generated_at=T0)
    part["hosts"][0].pop("paused")
    with pytest.raises(AnsibleFilterError, match=rf"report 0: host {part['hosts'][0]['name']}: paused: missing"):
        fleet_merge([part])


def test_forecast_sections_are_refused():
    part = fleet_report(fleet_results(), generated_at=T0)
    part["pause_risks"] = {"hosts": []}
    with pytest.raises(AnsibleFilterError, match="report 0: pause_risks: reports with a forecast cannot be merged"):
        fleet_merge([part])


def test_bad_generated_at():
    with pytest.raises(AnsibleFilterError, match="generated_at: expected an ISO 8601 time string, got int"):
        fleet_merge([fleet_report(fleet_results(), generated_at=T0)], generated_at=5)
