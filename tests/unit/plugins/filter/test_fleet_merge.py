"""kvmops.fleet.fleet_merge: the reports of disjoint slices merge into the report of the whole fleet (same hosts,
summary, causes, DRBD rows and state digest), and the merged kvmops_fleet_summary is the whole fleet's."""

from __future__ import annotations

import json
import re

import pytest
from ansible.errors import AnsibleFilterError
from browser.fixture import MIB, fleet_results, forecast_result, risks_of

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


def forecast_slices(results: dict, n: int, without: int | None = None) -> tuple[dict, list]:
    """The whole fleet's report with a forecast, and its n slices' reports (slice ``without`` ran without it)."""
    risks = risks_of(results, **{
        "hv-a.example.net": forecast_result(watchdog="wd-1"),
        "hv-b.example.net": forecast_result(avail=10 * MIB),  # in another slice than hv-a when n > 1
        "hv-c.example.net": forecast_result(avail=40 * MIB),
        "hv-d.example.net": {"unreachable": True, "msg": "ssh: connect to host: refused"}})
    whole = fleet_report(results, generated_at=T0, risks=risks)
    parts = [fleet_report(s, generated_at=T0, risks=None if i == without else {h: risks[h] for h in s})
             for i, s in enumerate(slices(results, n))]
    return whole, parts


@pytest.mark.parametrize("n", [1, 2, 3])
def test_forecast_sections_merge_into_the_whole_fleets(n):
    whole, parts = forecast_slices(fleet_results(), n)
    assert sum(bool(p["pause_risks"]["storages"]) for p in parts) == min(n, 2)
    merged = fleet_merge(parts)
    assert merged["pause_risks"] == whole["pause_risks"]
    assert merged["state_digest"] == whole["state_digest"]


def test_a_slice_without_the_forecast_is_listed_as_not_forecast():
    results = fleet_results()
    whole, parts = forecast_slices(results, 2, without=1)
    merged = fleet_merge(parts)["pause_risks"]
    skipped = sorted(results)[1::2]
    rows = {r["name"]: r for r in merged["hosts"]}
    assert sorted(rows) == sorted(results)
    for name in skipped:
        assert rows[name]["status"] == "not_forecast"
        assert rows[name]["message"] == "not forecast: its slice ran without the forecast"
    assert merged["summary"]["hosts"] == len(results)
    assert merged["summary"]["hosts_forecast"] == whole["pause_risks"]["summary"]["hosts_forecast"] - sum(
        r["status"] == "forecast" for r in whole["pause_risks"]["hosts"] if r["name"] in skipped)
    kept = [s["host"] for s in whole["pause_risks"]["storages"] if s["host"] not in skipped]
    assert [s["host"] for s in merged["storages"]] == kept


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(pause_risks=[]), "report 0: pause_risks: expected a mapping, got list"),
    (lambda r: r["pause_risks"]["summary"].update(storages=-1),
     "report 0: pause_risks.summary.storages: expected a count (an integer >= 0), got -1"),
    (lambda r: r["pause_risks"]["summary"]["by_severity"].update(info=-2),
     "report 0: pause_risks.summary.by_severity.info: expected a count (an integer >= 0), got -2"),
    (lambda r: r["pause_risks"]["summary"].update(by_severity={"warning": "2"}),
     "report 0: pause_risks.summary.by_severity.warning: expected an integer, got str"),
    (lambda r: r["pause_risks"].update(risks=None), "report 0: pause_risks.risks: expected a list"),
    (lambda r: r["pause_risks"]["storages"][0].pop("key"), "report 0: pause_risks.storages[0].key: missing"),
    (lambda r: r["pause_risks"]["storages"][0].update(severity="bad"),
     "report 0: pause_risks.storages[0].severity: 'bad' is not one of critical, warning, info"),
])
def test_a_malformed_forecast_section_is_named(mutate, message):
    _whole, parts = forecast_slices(fleet_results(), 1)
    mutate(parts[0])
    with pytest.raises(AnsibleFilterError, match="kvmops.fleet.fleet_merge: " + re.escape(message)):
        fleet_merge(parts)


def test_bad_generated_at():
    with pytest.raises(AnsibleFilterError, match="generated_at: expected an ISO 8601 time string, got int"):
        fleet_merge([fleet_report(fleet_results(), generated_at=T0)], generated_at=5)
