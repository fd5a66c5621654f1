"""DRBD health beside the pauses in the fleet report: the hosts' drbd facts (kvm_pause_facts, where the DRBD module
is loaded; built here from what real DRBD 8.4 said and from DRBD 9 status texts, see browser/fixture.py) become
one row per resource, worst verdict first, and a line per unhealthy resource in the run's summary."""
from __future__ import annotations

import copy

from browser.fixture import fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_report_text as text_plugin

fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_report_text = text_plugin.FilterModule().filters()["fleet_report_text"]
T0 = "2026-11-18T11:06:40Z"


def test_drbd_rows_worst_first_with_what_drbd_says():
    rep = fleet_report(fleet_results(), generated_at=T0)
    rows = [(r["host"], r["name"], r["verdict"], r["severity"], r["role"], r["minors"], r["disk_states"], r["quorum"],
             r["suspended"]) for r in rep["drbd"]]
    assert rows == [
        ("hv-a.example.net", "r0", "diskless", "critical", "Primary", [0], ["Diskless"], None, False),
        ("hv-b.example.net", "vm1disk", "no-quorum", "critical", "Primary", [1000], ["UpToDate"], False, True),
        ("hv-b.example.net", "vm3disk", "suspended", "critical", "Primary", [1003], ["UpToDate"], True, True),
    ]
    r0 = rep["drbd"][0]
    assert r0["peers"] == [{"name": "10.213.2.11:7789", "connection_state": "WFConnection", "role": "Unknown",
                            "disk_states": ["DUnknown"]}]
    assert r0["remediation"][0].endswith("then attach it again: drbdadm attach r0; the resync from the peer starts by "
                                         "itself")
    assert [p["name"] for p in rep["drbd"][1]["peers"]] == ["hvb", "witness"]
    hosts = {h["name"]: h["drbd"] for h in rep["hosts"]}
    assert hosts["hv-a.example.net"]["kernel_version"] == "8.4.11"
    assert hosts["hv-b.example.net"]["summary"] == {"resources": 2, "verdicts": {"no-quorum": 1, "suspended": 1},
                                                    "worst": "no-quorum"}
    assert hosts["hv-c.example.net"] is None and hosts["hv-d.example.net"] is None


def test_a_fleet_without_drbd_has_no_rows_and_no_drbd_line():
    results = copy.deepcopy(fleet_results())
    for r in results.values():
        if r and "ansible_facts" in r:
            r["ansible_facts"]["kvm_pause"].pop("drbd", None)
    rep = fleet_report(results, generated_at=T0)
    assert rep["drbd"] == [] and all(h["drbd"] is None for h in rep["hosts"])
    assert not [line for line in fleet_report_text(rep, T0) if line.startswith(("DRBD", "  DRBD"))]


def test_the_run_summary_names_each_unhealthy_resource():
    rep = fleet_report(fleet_results(), generated_at=T0)
    lines = fleet_report_text(rep, T0)
    drbd = [line for line in lines if line.startswith(("DRBD", "  DRBD"))]
    assert drbd[0] == "DRBD: 3 resources (1 diskless, 1 no-quorum, 1 suspended)"
    assert drbd[1].startswith("  DRBD diskless     hv-a.example.net/r0: no local disk (Diskless, role Primary)")
    assert drbd[2].startswith("  DRBD no-quorum    hv-b.example.net/vm1disk: lost quorum (role Primary)")
    assert len(drbd) == 4


def test_a_changed_drbd_state_changes_the_digest():
    a = fleet_report(fleet_results(), generated_at=T0)
    results = copy.deepcopy(fleet_results())
    results["hv-b.example.net"]["ansible_facts"]["kvm_pause"]["drbd"]["resources"][1]["verdict"] = "healthy"
    b = fleet_report(results, generated_at=T0)
    assert a["state_digest"] != b["state_digest"]
