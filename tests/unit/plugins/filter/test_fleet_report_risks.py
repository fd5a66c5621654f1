"""The report's pause_risks section (issue 23): kvm_pause_risk results of a fleet -> the section with exact
figures, its documentation, the state digest (figures out, who is at risk in), input errors naming host and field,
the console lines, and the Markdown and HTML sections rendered from the role's own templates."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from browser.fixture import MIB as MiB
from browser.fixture import fleet_results, forecast_result, risks_of

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_summary as summary_plugin
from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_text import fleet_report_text

fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_summary = summary_plugin.FilterModule().filters()["fleet_summary"]
TEMPLATES = Path(__file__).parents[4] / "roles" / "diagnostics" / "templates"
T0 = "2026-12-06T03:00:00Z"


@pytest.fixture
def results():
    return fleet_results()


@pytest.fixture
def risks(results):
    return risks_of(results, **{"hv-a.example.net": forecast_result(watchdog="wd-1"),
                                "hv-d.example.net": {"unreachable": True, "msg": "ssh: connect to host: refused"},
                                "hv-e.example.net": {"failed": True, "msg": "libvirtd is not running on this host"}})


@pytest.fixture
def report(results, risks):
    return fleet_report(results, generated_at=T0, risks=risks)


def test_section_with_exact_figures(report, results):
    pr = report["pause_risks"]
    assert pr["summary"] == {"hosts": len(results), "hosts_forecast": 1, "storages": 1, "overcommitted": 1,
                             "at_risk_domains": 3, "by_severity": {"critical": 0, "warning": 3, "info": 0}}
    (st,) = pr["storages"]
    hv_a = next(h for h in report["hosts"] if h["name"] == "hv-a.example.net")
    growth = 16 * MiB - 4096 + 15 * MiB
    assert st == {
        "host": "hv-a.example.net", "key": "fs:7:3", "kind": "filesystem", "name": "/srv/images",
        "severity": "warning", "overcommitted": True, "total_bytes": 20 * MiB, "free_bytes": 17 * MiB,
        "remaining_growth_bytes": growth, "headroom_bytes": 17 * MiB - growth,
        "would_pause": ["db-1"], "would_see_errors": ["web-1"], "would_drop_writes": [], "can_fill_alone": [],
        "first_to_pause": "any of db-1: the first whose write finds the storage full pauses first; without a growth "
                          "rate that order is unknown",
        "actions": ["grow filesystem /srv/images by 14 MiB (it has 17.0 MiB free for QEMU; its disks can still claim "
                    "31.0 MiB), or move disks off it"],
        "paused_now": sorted(p["name"] for p in hv_a["paused"]),
    }
    assert [(r["host"], r["kind"], r["severity"], r["domains"]) for r in pr["risks"]] == [
        ("hv-a.example.net", "watchdog_pause", "warning", ["wd-1"]),
        ("hv-a.example.net", "write_errors_in_guest", "warning", ["web-1"]),
    ]
    hosts = {h["name"]: h for h in pr["hosts"]}
    assert hosts["hv-a.example.net"]["message"] == "3 running domain(s), 1 storage(s), 1 overcommitted, 3 at risk"
    assert (hosts["hv-d.example.net"]["status"], hosts["hv-d.example.net"]["message"]) == (
        "unreachable", "ssh: connect to host: refused")
    assert hosts["hv-e.example.net"]["status"] == "failed"
    assert hosts["hv-b.example.net"]["status"] == "not_forecast"


def test_without_risks_there_is_no_section(results):
    assert "pause_risks" not in fleet_report(results, generated_at=T0)


def test_pause_risks_is_documented(report):
    docs = yaml.safe_load(report_plugin.RETURN)["_value"]["contains"]["pause_risks"]
    assert set(report["pause_risks"]) == set(docs["contains"])
    text = yaml.safe_dump(docs)
    for key in report["pause_risks"]["storages"][0]:
        assert f"C({key})" in text, key
    for key in report["pause_risks"]["risks"][0]:
        assert f"C({key})" in text, key
    for key in report["pause_risks"]["summary"]:
        assert f"C({key})" in text, key


def test_digest_ignores_figures_but_not_who_is_at_risk(results, risks, report):
    grown = dict(risks, **{"hv-a.example.net": forecast_result(avail=16 * MiB, watchdog="wd-1")})
    again = fleet_report(results, generated_at="2026-12-06T03:01:00Z", risks=grown)
    assert again["pause_risks"]["storages"][0]["free_bytes"] == 16 * MiB
    assert again["state_digest"] == report["state_digest"]
    kept = fleet_report(results, generated_at="2026-12-06T03:01:00Z", risks=grown, previous=report)
    assert kept == report  # same state: the previous report, files unchanged
    safe = dict(risks, **{"hv-a.example.net": forecast_result(avail=40 * MiB, watchdog="wd-1")})
    other = fleet_report(results, generated_at="2026-12-06T03:01:00Z", risks=safe)
    assert other["pause_risks"]["storages"] == [] and other["state_digest"] != report["state_digest"]
    assert fleet_report(results, generated_at=T0)["state_digest"] != report["state_digest"]


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.update({"hv-a.example.net": "text"}),
     "risks: host hv-a.example.net: expected the registered task result (a mapping) or null, got str"),
    (lambda r: r["hv-a.example.net"]["ansible_facts"]["kvm_pause_risk"]["storages"][0].update(would_pause="db-1"),
     "risks: host hv-a.example.net: ansible_facts.kvm_pause_risk.storages[0].would_pause: expected a list of str, "
     "got str"),
    (lambda r: r["hv-a.example.net"]["ansible_facts"]["kvm_pause_risk"]["risks"][0].pop("severity"),
     "risks: host hv-a.example.net: ansible_facts.kvm_pause_risk.risks[0].severity: missing"),
    (lambda r: r["hv-a.example.net"]["ansible_facts"]["kvm_pause_risk"].update(schema_version=2),
     "risks: host hv-a.example.net: ansible_facts.kvm_pause_risk.schema_version: expected 1, got 2"),
])
def test_malformed_forecast_names_host_and_field(results, risks, mutate, message):
    bad = copy.deepcopy(risks)
    mutate(bad)
    with pytest.raises(AnsibleFilterError) as e:
        fleet_report(results, generated_at=T0, risks=bad)
    assert str(e.value) == f"kvmops.fleet.fleet_report: {message}"
    with pytest.raises(AnsibleFilterError, match="risks: expected a mapping of host name"):
        fleet_report(results, generated_at=T0, risks=["hv-a"])


def test_console_lines(report):
    lines = fleet_report_text(report, run_at=T0)
    start = next(i for i, line in enumerate(lines) if line.startswith("Pause risks:"))
    assert lines[start:start + 6] == [
        "Pause risks: 1 overcommitted of 1 storage, 3 domains at risk on 1 of 6 hosts",
        "  warning  hv-a.example.net /srv/images: would pause: db-1; write errors: web-1",
        "  warning  hv-a.example.net watchdog_pause: wd-1",
        "  warning  hv-a.example.net write_errors_in_guest: web-1",
        "  hv-b.example.net forecast not_forecast: not forecast: the host left the play before the forecast",
        "  hv-c.example.net forecast not_forecast: not forecast: the host left the play before the forecast",
    ]


def render(name: str, report: dict) -> str:
    templar = Templar(loader=DataLoader(), variables={"__diagnostics_report": report})
    return templar.template(trust_as_template((TEMPLATES / name).read_text()), escape_backslashes=False)


def test_markdown_section(report):
    md = render("kvm-pause-report.md.j2", report)
    section = md[md.index("## Pause risks"):md.index("## Hosts not (fully) diagnosed")]
    rows = section.splitlines()
    assert rows[2] == ("Forecast on 1 of 6 hosts: **1 of 1 storage overcommitted**, 3 running VMs at risk (0 critical, "
                       "3 warning, 0 info).")
    (row,) = [r for r in rows if r.startswith("| 🟠 warning | hv-a.example.net | `/srv/images` |")]
    start = ("| 🟠 warning | hv-a.example.net | `/srv/images` | **yes** | 17.0 MiB | 31.0 MiB | -14.0 MiB | db-1 "
             "| web-1 | ")
    end = (" | grow filesystem /srv/images by 14 MiB (it has 17.0 MiB free for QEMU; its disks can still claim "
           "31.0 MiB), or move disks off it |")
    assert row.startswith(start) and row.endswith(end)
    paused_now = row[len(start):-len(end)]  # the host's paused VMs, a hostile name among them, escaped
    assert "<script>" not in paused_now and "&lt;script&gt;" in paused_now
    assert paused_now.count(", ") == len(report["pause_risks"]["storages"][0]["paused_now"]) - 1
    assert ("🟠 **hv-a.example.net /srv/images** pauses first: any of db-1: the first whose write finds the storage "
            "full pauses first; without a growth rate that order is unknown") in rows
    assert any(r.startswith("| 🟠 warning | hv-a.example.net | `write_errors_in_guest` | web-1 | web-1 disk vda "
                            "(error\\_policy report) is on overcommitted filesystem /srv/images") for r in rows)
    assert rows[-2].startswith("Not (fully) forecast: hv-b.example.net (not forecast: the host left the play")


def test_html_section(report):
    html = render("kvm-pause-report.html.j2", report)
    section = html[html.index('<section aria-label="Pause risks">'):]
    section = section[:section.index("</section>")]
    assert '<span data-kvmops-count="risk_overcommitted">1</span> of 1 storage overcommitted' in section
    assert ('<tr class="sev-warning" data-kvmops-risk-storage="hv-a.example.net/fs:7:3" '
            'data-kvmops-overcommitted="true">') in section
    assert '<td class="num">17.0 MiB</td><td class="num">31.0 MiB</td>' in section
    assert '<td class="num">&minus;14.0 MiB</td>' in section
    assert '<td data-kvmops-would-pause="db-1">db-1<br><span class="muted">any of db-1: the first' in section
    assert '<td data-kvmops-would-see-errors="web-1">web-1</td>' in section
    assert 'data-kvmops-risk="watchdog_pause"' in section and "<script" not in section


def test_fleet_summary_carries_the_forecast(report, results):
    summary = fleet_summary(report, generated_at=T0)["pause_risks"]
    assert summary == {
        "hosts_forecast": 1, "storages": 1, "overcommitted": 1, "at_risk_domains": 3,
        "by_severity": {"critical": 0, "warning": 3, "info": 0},
        "not_forecast_hosts": sorted(h for h in results if h != "hv-a.example.net"),
        "overcommitted_storages": [{"host": "hv-a.example.net", "name": "/srv/images", "severity": "warning",
                                    "would_pause": ["db-1"], "would_see_errors": ["web-1"]}],
    }
    assert fleet_summary(fleet_report(results, generated_at=T0), generated_at=T0)["pause_risks"] is None
