"""kvmops.fleet.fleet_report / fleet_summary: host statuses, counts, grouping, sorting, the state digest and
the previous-report rule, errors, and that every key of the output is documented in RETURN."""
from __future__ import annotations

import copy
import json
import random
import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from browser.fixture import HOSTILE, fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_summary as summary_plugin
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io as _drbd_facts_io
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _collect_io, _diagnose
from ansible_collections.kvmops.fleet.plugins.plugin_utils import _fleet_report
from kvmlab.testdriver import write_fleet

fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_summary = summary_plugin.FilterModule().filters()["fleet_summary"]
T0 = "2026-11-18T11:06:40Z"
T1 = "2026-11-18T12:06:40Z"


@pytest.fixture
def report():
    return fleet_report(fleet_results(), generated_at=T0)


def host(rep, name):
    return next(h for h in rep["hosts"] if h["name"] == name)


# ---- host statuses ------------------------------------------------------------------------------------


def test_every_status(report):
    assert {h["name"]: h["status"] for h in report["hosts"]} == {
        "hv-a.example.net": "diagnosed",
        "hv-b.example.net": "diagnosed",
        "hv-c.example.net": "diagnosed",
        "hv-d.example.net": "unreachable",
        "hv-e.example.net": "libvirt_failed",
        "hv-f.example.net": "not_diagnosed",
    }


def test_unreachable_message_without_ansible_prefix(report):
    h = host(report, "hv-d.example.net")
    assert h["message"].startswith("Failed to connect to the host via ssh")
    assert h["complete"] is False and h["summary"] is None and h["paused"] == [] and h["uri"] is None


def test_libvirt_failed_keeps_the_module_message(report):
    h = host(report, "hv-e.example.net")
    assert h["message"].startswith("libvirtd is not running on this host")
    assert h["complete"] is False and h["summary"] is None


def test_no_result_and_skipped_and_no_facts():
    rep = fleet_report({"a": None, "b": {"skipped": True, "skip_reason": "Conditional result was False"},
                        "c": {"changed": False, "ansible_facts": {}}}, generated_at=T0)
    msgs = {h["name"]: (h["status"], h["message"]) for h in rep["hosts"]}
    assert msgs["a"][0] == msgs["b"][0] == msgs["c"][0] == "not_diagnosed"
    assert "left the play" in msgs["a"][1]
    assert "Conditional result was False" in msgs["b"][1]
    assert "no ansible_facts.kvm_pause" in msgs["c"][1]
    assert rep["summary"]["hosts_not_diagnosed"] == 3 and rep["summary"]["hosts"] == 3


def test_incomplete_host_is_flagged(report):
    h = host(report, "hv-c.example.net")
    assert h["status"] == "diagnosed" and h["complete"] is False
    assert h["message"].startswith("INCOMPLETE: libvirt did not list the domains within 10.0s")
    assert report["summary"]["hosts_incomplete"] == 1
    assert [u["name"] for u in h["unresponsive"]] == ["save-me"]
    assert host(report, "hv-a.example.net")["message"] == (
        "31 domains: 21 running, 7 paused, 1 crashed, 0 unresponsive, 4 safe to resume"
    )


# ---- counts and grouping ------------------------------------------------------------------------------


def test_summary_counts(report):
    s = report["summary"]
    facts = [r["ansible_facts"]["kvm_pause"] for r in fleet_results().values() if r and "ansible_facts" in r]
    assert s["hosts"] == 6
    assert (s["hosts_diagnosed"], s["hosts_unreachable"], s["hosts_libvirt_failed"], s["hosts_not_diagnosed"]) == (
        3, 1, 1, 1)
    for key, module_key in (("domains_total", "total"), ("running", "running"), ("paused", "paused"),
                            ("crashed", "crashed"), ("unresponsive", "unresponsive"),
                            ("safe_to_resume", "safe_to_resume")):
        assert s[key] == sum(f["summary"][module_key] for f in facts), key
    assert (s["paused"], s["crashed"], s["unresponsive"], s["safe_to_resume"]) == (26, 1, 1, 4)
    assert sum(s["by_cause"].values()) == s["paused"] + s["crashed"]
    assert sum(s["by_severity"].values()) == s["paused"] + s["crashed"]
    assert list(s["by_cause"]) == sorted(s["by_cause"])


def test_every_cause_is_grouped_in_severity_order(report):
    causes = report["causes"]
    assert {c["cause"] for c in causes} == set(_diagnose.CAUSES)
    ranks = [_fleet_report.SEVERITY_ORDER.index(c["severity"]) for c in causes]
    assert ranks == sorted(ranks)
    assert causes[0]["cause"] == "storage_full" and causes[0]["count"] == 2  # most domains among the critical
    for c in causes:
        assert c["severity"] == _diagnose.SEVERITY[c["cause"]]
        assert c["count"] == len(c["domains"]) == report["summary"]["by_cause"][c["cause"]]
        assert c["safe_to_resume"] == sum(d["safe_to_resume"] for d in c["domains"])
        assert [(d["host"], d["name"]) for d in c["domains"]] == sorted((d["host"], d["name"]) for d in c["domains"])
    full = causes[0]["domains"]
    assert [(d["name"], d["safe_to_resume"]) for d in full] == [("web-01", False), ("web-02", True)]


def test_vms_keep_evidence_remediation_and_hostile_names(report):
    a = host(report, "hv-a.example.net")
    web01 = next(p for p in a["paused"] if p["name"] == "web-01")
    assert web01["cause"] == "storage_full" and web01["safe_to_resume"] is False
    assert web01["disks"][0]["filesystem"]["mount_point"] == "/srv/vm"
    assert web01["remediation"] and web01["safe_to_resume_reason"]
    assert web01["paused_since"] == "2026-11-18T10:36:40Z" and web01["paused_for_seconds"] == 1800.0
    assert HOSTILE in [p["name"] for p in a["paused"]]
    assert [p["name"] for p in a["paused"]] == sorted(p["name"] for p in a["paused"])


def test_empty_fleet():
    rep = fleet_report({}, generated_at=T0)
    assert rep["hosts"] == [] and rep["causes"] == []
    assert all(v == 0 for k, v in rep["summary"].items() if k not in ("by_cause", "by_severity"))
    assert rep["summary"]["by_cause"] == {}
    assert rep["summary"]["by_severity"] == {"critical": 0, "warning": 0, "info": 0}
    s = fleet_summary(rep)
    assert s["hosts"] == 0 and s["safe_to_resume_domains"] == [] and s["unreachable_hosts"] == []


def test_host_without_paused_domains():
    res = fleet_results()["hv-a.example.net"]
    res["ansible_facts"]["kvm_pause"].update(paused=[], unresponsive=[])
    res["ansible_facts"]["kvm_pause"]["summary"].update(paused=0, crashed=0, safe_to_resume=0, by_cause={})
    rep = fleet_report({"only": res}, generated_at=T0)
    assert rep["causes"] == [] and rep["summary"]["paused"] == 0 and rep["hosts"][0]["status"] == "diagnosed"


# ---- determinism, digest, previous -------------------------------------------------------------------


def test_order_of_input_does_not_matter(report):
    results = fleet_results()
    rng = random.Random(7)  # noqa: S311 - a reproducible shuffle, not crypto
    for _round in range(5):
        names = list(results)
        rng.shuffle(names)
        shuffled = {}
        for n in names:
            r = copy.deepcopy(results[n])
            if r and "ansible_facts" in r:
                rng.shuffle(r["ansible_facts"]["kvm_pause"]["paused"])
            shuffled[n] = r
        assert json.dumps(fleet_report(shuffled, generated_at=T0), sort_keys=True) == json.dumps(report, sort_keys=True)


def test_digest_ignores_volatile_fields_only(report):
    later = fleet_results()
    for r in later.values():
        if r and "ansible_facts" in r:
            f = r["ansible_facts"]["kvm_pause"]
            f["collected_at"], f["duration_seconds"], f["collection"] = T1, 0.5, "domainListGetStats"
            for p in f["paused"]:
                p["paused_for_seconds"] = (p["paused_for_seconds"] or 0) + 3600
                if p["job"]:
                    p["job"]["elapsed_seconds"] = 1.0
                if p["control"]:
                    p["control"]["seconds"] = 9.0
                if p["job"]:
                    p["job"]["progress_percent"] = 99.0
                for d in p["disks"]:
                    d["allocation"], d["physical"] = 1, 2
                    if d["filesystem"]:
                        d["filesystem"].update(available_bytes=5, free_bytes=6, used_percent=99.9)
            for u in f["unresponsive"]:
                u["job_seconds"] = 5.0
    again = fleet_report(later, generated_at=T1)
    assert again["state_digest"] == report["state_digest"]
    assert again["generated_at"] == T1 and again != report

    changed = fleet_results()
    changed["hv-b.example.net"]["ansible_facts"]["kvm_pause"]["paused"][0]["safe_to_resume"] = True
    assert fleet_report(changed, generated_at=T0)["state_digest"] != report["state_digest"]
    cleared = fleet_results()
    fs = cleared["hv-a.example.net"]["ansible_facts"]["kvm_pause"]["paused"][0]["disks"][0]["filesystem"]
    fs["mount_point"] = "/elsewhere"
    assert fleet_report(cleared, generated_at=T0)["state_digest"] != report["state_digest"]
    gone = fleet_results()
    gone["hv-d.example.net"] = fleet_results()["hv-e.example.net"]
    assert fleet_report(gone, generated_at=T0)["state_digest"] != report["state_digest"]


def test_previous_report_of_the_same_state_is_kept(report):
    previous = json.loads(json.dumps(report))
    later = fleet_results()
    later["hv-a.example.net"]["ansible_facts"]["kvm_pause"]["paused"][0]["paused_for_seconds"] = 99999.0
    kept = fleet_report(later, generated_at=T1, previous=previous)
    assert kept == previous and kept["generated_at"] == T0
    assert fleet_summary(kept, generated_at=T1)["generated_at"] == T1
    assert fleet_summary(kept, generated_at=T1)["report_generated_at"] == T0


def test_previous_report_is_ignored_when_it_does_not_fit(report):
    previous = json.loads(json.dumps(report))
    changed = fleet_results()
    changed["hv-f.example.net"] = {"unreachable": True, "msg": "down"}
    assert fleet_report(changed, generated_at=T1, previous=previous)["generated_at"] == T1
    edited = copy.deepcopy(previous)
    edited["hosts"][0]["message"] = "edited by hand"
    assert fleet_report(fleet_results(), generated_at=T1, previous=edited)["generated_at"] == T1
    other_schema = dict(copy.deepcopy(previous), schema_version=2)
    assert fleet_report(fleet_results(), generated_at=T1, previous=other_schema)["generated_at"] == T1
    assert fleet_report(fleet_results(), generated_at=T1, previous=json.dumps(previous))["generated_at"] == T0
    for junk in (None, {}, "text", "{not json", [1], b"\xff", 5):
        assert fleet_report(fleet_results(), generated_at=T1, previous=junk)["generated_at"] == T1


def test_generated_at_defaults_to_now():
    rep = fleet_report({})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rep["generated_at"])


# ---- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,msg", [
    ([], "must be a mapping of host name"),
    ("text", "must be a mapping of host name"),
    ({"h": "a string"}, "host h: expected the registered task result (a mapping) or null, got str"),
    ({"h": {"ansible_facts": {"kvm_pause": {"schema_version": 2}}}}, "host h: kvm_pause schema_version 2"),
    ({"h": {"x": object()}}, "unexpected value of type object"),
])
def test_bad_input_is_named(bad, msg):
    with pytest.raises(AnsibleFilterError, match=re.escape("kvmops.fleet.fleet_report: ") + ".*" + re.escape(msg)):
        fleet_report(bad, generated_at=T0)


def test_bad_generated_at():
    with pytest.raises(AnsibleFilterError, match="generated_at must be an ISO 8601 time string"):
        fleet_report({}, generated_at=5)


@pytest.mark.parametrize("bad", [None, {}, {"schema_version": 2}, [1]])
def test_summary_needs_a_report(bad):
    with pytest.raises(AnsibleFilterError, match="must be a fleet report"):
        fleet_summary(bad)


# ---- the artifact -------------------------------------------------------------------------------------


def test_fleet_summary_contract(report):
    s = fleet_summary(report, generated_at=T1)
    contract = {"schema_version", "generated_at", "hosts", "hosts_diagnosed", "hosts_unreachable",
                "hosts_libvirt_failed", "paused", "crashed", "unresponsive", "safe_to_resume", "by_cause",
                "unreachable_hosts", "libvirt_failed_hosts", "safe_to_resume_domains"}
    assert contract <= set(s)
    assert s["unreachable_hosts"] == ["hv-d.example.net"] and s["libvirt_failed_hosts"] == ["hv-e.example.net"]
    assert s["not_diagnosed_hosts"] == ["hv-f.example.net"] and s["incomplete_hosts"] == ["hv-c.example.net"]
    assert s["safe_to_resume_domains"] == [
        {"host": "hv-a.example.net", "name": HOSTILE, "cause": "user_paused"},
        {"host": "hv-a.example.net", "name": "build-07", "cause": "user_paused"},
        {"host": "hv-a.example.net", "name": "ci-runner-9", "cause": "from_snapshot"},
        {"host": "hv-a.example.net", "name": "web-02", "cause": "storage_full"},
    ]
    assert s["paused"] == 26 and s["by_cause"] == report["summary"]["by_cause"]
    json.dumps(s)  # plain data only


# ---- documentation matches the output -----------------------------------------------------------------


def documented(plugin) -> dict:
    return yaml.safe_load(plugin.RETURN)["_value"]["contains"]


def assert_documented(value: dict, docs: dict, where: str) -> None:
    assert set(value) == set(docs), f"{where}: undocumented {set(value) - set(docs)}, stale {set(docs) - set(value)}"
    for key, doc in docs.items():
        assert doc.get("description"), f"{where}.{key} has no description"
        if "contains" in doc and isinstance(value[key], dict):
            assert_documented(value[key], doc["contains"], f"{where}.{key}")
        elif "contains" in doc and isinstance(value[key], list) and value[key]:
            assert_documented(value[key][0], doc["contains"], f"{where}.{key}[]")


def test_every_report_key_is_documented(report):
    # pause_risks is there only with the forecast's results (test_fleet_report_risks.py checks it)
    docs = {k: v for k, v in documented(report_plugin).items() if k != "pause_risks"}
    assert_documented(report, docs, "_value")
    summary_docs = docs["summary"]["contains"]
    assert set(report["summary"]) == set(summary_docs)
    for h in report["hosts"]:
        assert set(h) == set(docs["hosts"]["contains"])
    assert set(docs["hosts"]["contains"]["status"]["choices"]) == set(_fleet_report.STATUSES)


def test_every_summary_key_is_documented(report):
    assert_documented(fleet_summary(report), documented(summary_plugin), "_value")


def test_docs_parse():
    for plugin in (report_plugin, summary_plugin):
        doc = yaml.safe_load(plugin.DOCUMENTATION)
        assert doc["name"] == plugin.__name__.rsplit(".", 1)[1]
        assert yaml.safe_load(plugin.EXAMPLES)


# ---- the fixture has the module's shape ---------------------------------------------------------------


def test_fixture_entries_have_the_module_shape(tmp_path):
    facts = _collect_io.collect(write_fleet(tmp_path / "fleet.xml", 10), 20, status_dir=str(tmp_path / "none"),
                                log_dir=str(tmp_path))
    real = facts["paused"][0]
    fixture = fleet_results()["hv-a.example.net"]["ansible_facts"]["kvm_pause"]
    # drbd: only where the DRBD module is loaded (not on this machine); its shape is drbd_facts' gather
    assert set(fixture) - {"drbd"} == set(facts)
    assert set(fixture["drbd"]) == set(_drbd_facts_io.gather(1, root=str(tmp_path)))
    assert set(fixture["summary"]) == set(facts["summary"])
    for entry in fixture["paused"]:
        assert set(entry) == set(real), entry["name"]
        for disk in entry["disks"]:
            assert set(disk) == set(real["disks"][0]), entry["name"]


def _unreachable_over_podman(tmp_name):
    return {
        "unreachable": True,
        "msg": "Failed to create temporary directory. In some cases, you may have been able to authenticate ... "
               f"mkdir -p \"` echo ~/.ansible/tmp `\"&& mkdir \"` echo ~/.ansible/tmp/{tmp_name} `\" ... "
               "exited with result 255",
    }


def test_digest_ignores_the_per_run_temp_dir_of_an_unreachable_host():
    first = fleet_report({"hv-down": _unreachable_over_podman("ansible-tmp-1795685177.0791922-4752-171717")},
                         generated_at=T0)
    again = fleet_report({"hv-down": _unreachable_over_podman("ansible-tmp-1795685299.1-4801-99")},
                         generated_at=T1)
    assert "ansible-tmp-1795685177.0791922-4752-171717" in host(first, "hv-down")["message"]
    assert again["state_digest"] == first["state_digest"]
    other = fleet_report({"hv-down": {"unreachable": True, "msg": "ssh: connect to host port 22: No route"}},
                         generated_at=T0)
    assert other["state_digest"] != first["state_digest"]
