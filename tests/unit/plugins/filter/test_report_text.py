"""kvmops.fleet.pause_table / fleet_report_text: the exact text the diagnostics role prints (it was built in
Jinja in the role's tasks; these lines are what that Jinja printed for the same input), every branch (incomplete,
unknown duration, no file requested, check mode, unchanged report), bad input named, and the docs."""
from __future__ import annotations

import copy

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from browser.fixture import fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report_text as text_plugin
from ansible_collections.kvmops.fleet.plugins.filter import pause_table as table_plugin
from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import build_report

pause_table = table_plugin.FilterModule().filters()["pause_table"]
fleet_report_text = text_plugin.FilterModule().filters()["fleet_report_text"]
T0 = "2026-11-18T11:06:40Z"
T1 = "2026-11-18T12:00:00Z"
HEADER = "VM                           CAUSE                SEVERITY SAFE    PAUSED  SUMMARY"


@pytest.fixture
def results():
    return fleet_results()


def facts_of(results, host):
    return copy.deepcopy(results[host]["ansible_facts"]["kvm_pause"])


def vm(name, cause="user_paused", *, safe=True, seconds=31, summary="paused by a user", remediation=()):
    return {"name": name, "cause": cause, "severity": "info", "safe_to_resume": safe,
            "safe_to_resume_reason": "nothing prevents it", "paused_for_seconds": seconds, "summary": summary,
            "remediation": list(remediation)}


def facts(paused, *, complete=True, errors=()):
    return {"paused": paused, "complete": complete, "errors": list(errors),
            "summary": {"total": 5, "running": 4, "paused": len(paused), "crashed": 0, "unresponsive": 0,
                        "safe_to_resume": sum(bool(p["safe_to_resume"]) for p in paused)}}


# ---- pause_table ----------------------------------------------------------------------------------------


def test_incomplete_host_of_the_fixture(results):
    lines = pause_table(facts_of(results, "hv-c.example.net"))
    assert lines[0] == HEADER
    assert lines[1:4] == [
        "backup-1                     backup_job           warning  NO        700s  a backup job is in flight,"
        " 42 % done, running for 700s",
        "    safe to resume: a backup job is in flight",
        "    -> Wait for the backup job to finish (virsh domjobinfo backup-1) or abort it"
        " (virsh domjobabort backup-1).",
    ]
    mig_pcf = "mig-pcf                      postcopy_failed      critical NO       4000s  post-copy migration failed"
    assert mig_pcf in lines
    assert lines[-1] == (
        "11 domains: 3 running, 8 paused, 0 crashed, 1 unresponsive, 0 safe to resume (INCOMPLETE: libvirt did not list"
        " the domains within 10.0s: a domain is probably blocked in a job (domains known from status files are under"
        " unresponsive))"
    )
    assert len(lines) == 1 + 8 * 3 + 1


def test_every_paused_domain_has_a_row_its_reason_and_its_steps(results):
    for host in ("hv-a.example.net", "hv-b.example.net", "hv-c.example.net"):
        f = facts_of(results, host)
        lines = pause_table(f)
        rows = [line for line in lines if line and not line.startswith(" ")][1:-1]
        assert [r.split()[0] for r in rows] == [p["name"] for p in f["paused"]], host
        steps = sum(len(p["remediation"]) for p in f["paused"])
        assert len(lines) == 2 + 2 * len(f["paused"]) + steps, host


def test_row_columns_and_durations():
    lines = pause_table(facts([vm("web-1", seconds=31), vm("db-1", safe=False, seconds=12.9),
                               vm("x" * 30, seconds=None, remediation=["free space", "resume"])]))
    assert lines == [
        HEADER,
        "web-1                        user_paused          info     yes        31s  paused by a user",
        "    safe to resume: nothing prevents it",
        "db-1                         user_paused          info     NO         12s  paused by a user",
        "    safe to resume: nothing prevents it",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx user_paused          info     yes          ?  paused by a user",
        "    safe to resume: nothing prevents it",
        "    -> free space",
        "    -> resume",
        "5 domains: 4 running, 3 paused, 0 crashed, 0 unresponsive, 2 safe to resume",
    ]


def test_no_paused_domain_and_incomplete_without_errors():
    counts = "5 domains: 4 running, 0 paused, 0 crashed, 0 unresponsive, 0 safe to resume"
    assert pause_table(facts([])) == [HEADER, counts]
    assert pause_table(facts([], complete=False, errors=["a", "b"]))[-1].endswith(" (INCOMPLETE: a; b)")
    assert pause_table(facts([], complete=False))[-1].endswith(" (INCOMPLETE: )")


def test_a_value_with_a_newline_spans_lines():
    lines = pause_table(facts([vm("v", summary="first\nsecond")]))
    assert lines[1].endswith("  first") and lines[2] == "second"


@pytest.mark.parametrize("bad,msg", [
    ({"paused": []}, "kvm_pause has no 'summary'"),
    ("text", "kvm_pause must be a mapping"),
    ({"summary": {"total": 1}, "paused": [], "complete": True}, "kvm_pause.summary has no 'running'"),
    ({"summary": facts([])["summary"], "paused": [{"name": "v"}], "complete": True}, "a paused entry has no"),
])
def test_bad_facts_are_named(bad, msg):
    with pytest.raises(AnsibleFilterError, match=f"kvmops.fleet.pause_table: {msg}"):
        pause_table(bad)


# ---- fleet_report_text ------------------------------------------------------------------------------------


@pytest.fixture
def report(results):
    return build_report(results, generated_at=T0)


def test_fleet_text_of_the_fixture(report):
    lines = fleet_report_text(report, T1, files=["/r/kvm-pause-report.json", "/r/kvm-pause-report.md"],
                              written=[{"changed": True}, {"changed": False}, {"changed": False, "skipped": True}])
    assert lines[:4] == [
        "Fleet at 2026-11-18T12:00:00Z: 6 hosts (3 diagnosed, 1 unreachable, 1 libvirt failed, 1 not diagnosed,"
        " 1 incomplete)",
        "62 domains: 26 paused, 1 crashed, 1 unresponsive, 4 safe to resume",
        "  critical storage_full           2  hv-a.example.net/web-01, hv-a.example.net/web-02",
        "  critical api_error              1  hv-b.example.net/api-fail-1",
    ]
    assert ("  info     user_paused            2  hv-a.example.net/<script>alert('x')</script>\"quoted\"&amp;,"
            " hv-a.example.net/build-07") in lines
    assert len([line for line in lines if line.startswith(("  critical ", "  warning  ", "  info     "))]) == len(
        report["causes"])
    assert lines[-7:] == [
        "  hv-c.example.net INCOMPLETE: libvirt did not list the domains within 10.0s: a domain is probably blocked in"
        " a job (domains known from status files are under unresponsive) (11 domains: 3 running, 8 paused, 0 crashed,"
        " 1 unresponsive, 0 safe to resume)",
        "  hv-d.example.net unreachable: Failed to connect to the host via ssh: ssh: connect to host hv-d.example.net"
        " port 22: No route to host",
        "  hv-e.example.net libvirt_failed: libvirtd is not running on this host: cannot connect to qemu:///system"
        " (Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory) <b>bold?</b>",
        "  hv-f.example.net not_diagnosed: not diagnosed: the host left the play before the diagnosis (failed or"
        " unreachable earlier)",
        "Report written:",
        "  /r/kvm-pause-report.json",
        "  /r/kvm-pause-report.md",
    ]


def test_one_host_one_domain_is_singular():
    rep = {"summary": {"hosts": 1, "hosts_diagnosed": 1, "hosts_unreachable": 0, "hosts_libvirt_failed": 0,
                       "hosts_not_diagnosed": 0, "hosts_incomplete": 0, "domains_total": 1, "paused": 0, "crashed": 0,
                       "unresponsive": 0, "safe_to_resume": 0},
           "causes": [], "hosts": [{"name": "h", "status": "diagnosed", "complete": True, "message": "-"}]}
    lines = fleet_report_text(rep, T1, written=[{"skipped": True}] * 3)
    assert lines[0] == ("Fleet at 2026-11-18T12:00:00Z: 1 host (1 diagnosed, 0 unreachable, 0 libvirt failed,"
                        " 0 not diagnosed, 0 incomplete)")
    assert lines[1] == "1 domain: 0 paused, 0 crashed, 0 unresponsive, 0 safe to resume"
    assert lines[-1] == "No report file requested (diagnostics_report_formats is empty)."


@pytest.mark.parametrize("written,check_mode,state", [
    ([{"changed": True}], False, "written"),
    ([{"changed": True}], True, "would be written"),
    ([{"changed": False}, {"skipped": True, "changed": True}], False,
     "unchanged, the fleet state is the one first seen at 2026-11-18T11:06:40Z"),
    ([{"changed": False}], True, "unchanged, the fleet state is the one first seen at 2026-11-18T11:06:40Z"),
])
def test_what_happened_to_the_files(report, written, check_mode, state):
    lines = fleet_report_text(report, T1, files=["/r/x y.html"], written=written, check_mode=check_mode)
    assert lines[-2:] == [f"Report {state}:", "  /r/x y.html"]


def test_empty_fleet():
    rep = build_report({}, generated_at=T0)
    assert fleet_report_text(rep, T1) == [
        "Fleet at 2026-11-18T12:00:00Z: 0 hosts (0 diagnosed, 0 unreachable, 0 libvirt failed, 0 not diagnosed,"
        " 0 incomplete)",
        "0 domains: 0 paused, 0 crashed, 0 unresponsive, 0 safe to resume",
        "No report file requested (diagnostics_report_formats is empty).",
    ]


@pytest.mark.parametrize("bad,msg", [
    ({}, "the fleet report has no 'summary'"),
    ([], "the fleet report must be a mapping"),
    ({"summary": {"hosts": 1}}, "the report's summary has no 'hosts_diagnosed'"),
])
def test_bad_report_is_named(bad, msg):
    with pytest.raises(AnsibleFilterError, match=f"kvmops.fleet.fleet_report_text: {msg}"):
        fleet_report_text(bad, T1)


# ---- docs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", [table_plugin, text_plugin])
def test_docs_parse(plugin):
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] in plugin.FilterModule().filters()
    assert yaml.safe_load(plugin.EXAMPLES)
    ret = yaml.safe_load(plugin.RETURN)["_value"]
    assert ret["type"] == "list" and ret["elements"] == "str" and ret["sample"]


def test_pause_table_sample_is_real_output():
    sample = yaml.safe_load(table_plugin.RETURN)["_value"]["sample"]
    got = pause_table({
        "paused": [{"name": "vm1", "cause": "storage_full", "severity": "critical", "safe_to_resume": False,
                    "paused_for_seconds": 25, "summary": "disk vda ran out of space on /srv",
                    "safe_to_resume_reason": "the storage is still full: resuming would pause the domain again at once",
                    "remediation": ["/srv is full for QEMU (0 B available of 17.4 MiB): free space or grow it, then"
                                    " resume."]}],
        "complete": True, "errors": [],
        "summary": {"total": 3, "running": 2, "paused": 1, "crashed": 0, "unresponsive": 0, "safe_to_resume": 0}})
    assert got == sample
