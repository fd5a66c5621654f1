"""_promtext: kvm_pause reports (built by _collect_io.assemble, the module's own assembler) -> textfile + state.

Pure: stdlib only, runs in the Python 3.9 tier too. promtool's verdict on the same output is in
tests/unit/prometheus.
"""
from __future__ import annotations

import json
import re

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _collect_io, _promtext

T0 = 1_800_000_000.0       # a fixed clock: 2027-01-15T08:00:00Z
UUID = "6c0ffee0-0000-4000-8000-0000000000{:02d}"
XML = """<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>
<source file='/srv/images/{name}.img'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>
<source file='/srv/images/{name}-data.img'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""


def dom(i, reason, *, state=3, disk_errors=None, mtime=None, name=None):
    """Records of one paused domain as the forked worker emits them."""
    name = name or f"vm{i:02d}"
    uuid = UUID.format(i)
    stats = {"name": name, "uuid": uuid, "state": state, "reason": reason, "block": []}
    detail = {"record": "domain", "name": name, "xml": XML.format(name=name, uuid=uuid),
              "disk_errors": disk_errors or {}, "job": None, "control": [0, 0, 0], "errors": []}
    evidence = {"record": "evidence", "name": name, "disks": [], "status_mtime": mtime,
                "log": {"path": None, "lines": [], "error": None}}
    return stats, [detail, evidence]


def report(*doms, running=0, finished=True, now=T0):
    """A kvm_pause report from _collect_io.assemble, exactly what collect() returns."""
    stats = [d[0] for d in doms] + [
        {"name": f"run{i:02d}", "uuid": UUID.format(90 + i), "state": 1, "reason": 1, "block": []}
        for i in range(running)
    ]
    records = [{"record": "connected"}, {"record": "stats", "via": "getAllDomainStats", "domains": stats}]
    for d in doms:
        records.extend(d[1])
    if finished:
        records.append({"record": "done"})
    return _collect_io.assemble("qemu:///system", 10, records, finished, {}, include_running=False,
                                elapsed=0.5, now=now)


def render(rep, state=None, now=T0, **kw):
    args = {"now": now, "duration": 0.5, "interval": 30, "paused_alert_seconds": 900, "stale_alert_seconds": 300}
    args.update(kw)
    return _promtext.render(rep, state, **args)


SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Text format -> {(name, frozenset(labels)): float}; checks HELP/TYPE precede every family once."""
    assert text.endswith("\n") and "\n\n" not in text
    out, declared, typed = {}, [], set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.append(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        m = SAMPLE.match(line)
        assert m, line
        name, labels, value = m.groups()
        assert declared and declared[-1] == name and name in typed, line
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in out, f"duplicate series {line}"
        out[key] = float(value)
    assert len(declared) == len(set(declared))
    return out


def series(parsed, name, **labels):
    return {dict(k[1]).get("domain", ""): v for k, v in parsed.items()
            if k[0] == name and all(dict(k[1]).get(a) == b for a, b in labels.items())}


def value(parsed, name, **labels):
    (v,) = [v for k, v in parsed.items() if k[0] == name and dict(k[1]) == labels]
    return v


# -- the text ------------------------------------------------------------------------------------------------

def test_full_report():
    rep = report(dom(1, 5, disk_errors={"vdb": 2}, mtime=T0 - 600), dom(2, 1, mtime=T0 - 60),
                 dom(3, 5, disk_errors={"vda": 1}, mtime=T0 - 5), running=4)
    text, state = render(rep)
    m = parse(text)
    assert value(m, "kvmops_collector_success") == 1
    assert value(m, "kvmops_collector_last_success_timestamp_seconds") == T0
    assert value(m, "kvmops_collector_last_run_timestamp_seconds") == T0
    assert value(m, "kvmops_collector_errors") == 0
    assert value(m, "kvmops_collector_interval_seconds") == 30
    assert value(m, "kvmops_paused_alert_threshold_seconds") == 900
    assert value(m, "kvmops_collector_stale_threshold_seconds") == 300
    assert {s: value(m, "kvmops_domains", state=s) for s in _promtext.DOMAIN_STATES} == {
        "running": 4, "paused": 3, "crashed": 0, "shutoff": 0, "other": 0}
    assert value(m, "kvmops_paused_domains", state="paused", reason="ioerror", cause="storage_full") == 1
    assert value(m, "kvmops_paused_domains", state="paused", reason="ioerror", cause="storage_io_error") == 1
    assert value(m, "kvmops_paused_domains", state="paused", reason="user", cause="user_paused") == 1
    info = {dict(k[1])["domain"]: dict(k[1]) for k in m if k[0] == "kvmops_domain_paused_info"}
    assert info["vm01"] == {"domain": "vm01", "uuid": UUID.format(1), "state": "paused", "reason": "ioerror",
                            "cause": "storage_full", "severity": "critical", "safe_to_resume": "false",
                            "responsive": "true"}
    assert (info["vm02"]["cause"], info["vm02"]["severity"], info["vm02"]["safe_to_resume"]) == (
        "user_paused", "info", "true")
    assert series(m, "kvmops_domain_paused_since_timestamp_seconds") == {
        "vm01": T0 - 600, "vm02": T0 - 60, "vm03": T0 - 5}
    errs = {(dict(k[1])["domain"], dict(k[1])["disk"], dict(k[1])["error"]) for k in m
            if k[0] == "kvmops_domain_disk_error"}
    assert errs == {("vm01", "vdb", "no_space"), ("vm03", "vda", "unspecified")}
    assert value(m, "kvmops_domain_pauses_total", domain="vm01", cause="storage_full") == 1
    assert value(m, "kvmops_domains_safe_to_resume") == 1
    assert state["last_success"] == T0 and set(state["paused"]) == {UUID.format(i) for i in (1, 2, 3)}
    json.dumps(state)   # the state goes to a JSON file


def test_help_and_type_for_every_family_and_counter_naming():
    text = render(report(dom(1, 1, mtime=T0)))[0]
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types["kvmops_domain_pauses_total"] == "counter"
    assert all(t == "gauge" for n, t in types.items() if n != "kvmops_domain_pauses_total")
    assert all(n.startswith("kvmops_") for n in types)
    assert set(re.findall(r"^# HELP (\S+) ", text, re.M)) == set(types)


def test_output_is_sorted_and_deterministic():
    rep = report(dom(2, 1, mtime=T0), dom(1, 1, mtime=T0))
    a, b = render(rep)[0], render(rep)[0]
    assert a == b
    names = re.findall(r'kvmops_domain_paused_info\{domain="([^"]+)"', a)
    assert names == ["vm01", "vm02"]


def test_no_paused_domain_has_no_domain_families():
    text = render(report(running=2))[0]
    assert "kvmops_domain_" not in text and "kvmops_paused_domains" not in text
    assert value(parse(text), "kvmops_domains", state="running") == 2


def test_failed_run_exports_only_the_collector():
    text, state = render(None, errors=["libvirtd is not running on this host"])
    m = parse(text)
    assert value(m, "kvmops_collector_success") == 0
    assert value(m, "kvmops_collector_errors") == 1
    assert value(m, "kvmops_collector_last_success_timestamp_seconds") == 0
    assert not [k for k in m if k[0] == "kvmops_domains"]
    assert state["last_success"] is None and state["last_run"] == T0


def test_incomplete_report_is_not_a_success():
    rep = report(dom(1, 1, mtime=T0), finished=False)
    assert rep["complete"] is False and rep["errors"]
    prev = render(report(), now=T0 - 30)[1]
    m = parse(render(rep, prev)[0])
    assert value(m, "kvmops_collector_success") == 0
    assert value(m, "kvmops_collector_errors") == len(rep["errors"])
    assert value(m, "kvmops_collector_last_success_timestamp_seconds") == T0 - 30
    assert series(m, "kvmops_domain_paused_info") == {"vm01": 1}   # what was seen is still exported


@pytest.mark.parametrize("raw,text", [("a\\b", "a\\\\b"), ('say "hi"', 'say \\"hi\\"'), ("two\nlines", "two\\nlines")])
def test_label_escaping(raw, text):
    line = _promtext.sample("m", {"domain": raw}, 1)
    assert line == f'm{{domain="{text}"}} 1'
    assert dict(LABEL.findall(line))["domain"] == text


def test_odd_domain_name_stays_one_valid_series():
    text = render(report(dom(1, 1, mtime=T0, name='we"ird\\vm')))[0]
    m = parse(text)
    assert series(m, "kvmops_domain_paused_info") == {'we\\"ird\\\\vm': 1}


@pytest.mark.parametrize("v,out", [(True, "1"), (False, "0"), (3, "3"), (2.0, "2"), (0.1234567, "0.123"),
                                   (1795680511.99, "1795680511.99"), (float("nan"), "NaN"),
                                   (float("inf"), "+Inf")])
def test_values(v, out):
    assert _promtext.fmt_value(v) == out


# -- the state: durations and counters survive between runs ---------------------------------------------------

def run(*steps):
    """Feed reports through render in order; returns the parsed text of each step and the final state."""
    state, outs = None, []
    for now, rep in steps:
        text, state = render(rep, state, now=now)
        outs.append(parse(text))
        state = json.loads(json.dumps(state))   # as the program does: through the JSON file
    return outs, state


def test_since_keeps_the_earliest_evidence_across_runs():
    outs = run((T0, report(dom(1, 5, disk_errors={"vda": 2}, mtime=T0 - 100))),
               # libvirtd rewrote its status file (a job, a daemon restart): the pause goes on
               (T0 + 30, report(dom(1, 5, disk_errors={"vda": 2}, mtime=T0 + 20))),
               (T0 + 60, report(dom(1, 5, disk_errors={"vda": 2}, mtime=T0 + 20))))[0]
    for out in outs:
        assert series(out, "kvmops_domain_paused_since_timestamp_seconds") == {"vm01": T0 - 100}
        assert value(out, "kvmops_domain_pauses_total", domain="vm01", cause="storage_full") == 1


def test_since_without_evidence_is_when_first_seen():
    outs = run((T0, report(dom(1, 1))), (T0 + 30, report(dom(1, 1))))[0]
    assert [series(o, "kvmops_domain_paused_since_timestamp_seconds") for o in outs] == [{"vm01": T0}] * 2


def test_since_never_in_the_future():
    out = run((T0, report(dom(1, 1, mtime=T0 + 3600))))[0][0]
    assert series(out, "kvmops_domain_paused_since_timestamp_seconds") == {"vm01": T0}


def test_resume_and_pause_again_counts_twice():
    outs, state = run((T0, report(dom(1, 1, mtime=T0 - 10))),
                      (T0 + 30, report(running=1)),                       # resumed
                      (T0 + 60, report(dom(1, 1, mtime=T0 + 50))))        # paused again
    assert series(outs[1], "kvmops_domain_paused_info") == {}
    assert value(outs[1], "kvmops_domain_pauses_total", domain="vm01", cause="user_paused") == 1
    assert series(outs[2], "kvmops_domain_paused_since_timestamp_seconds") == {"vm01": T0 + 50}
    assert value(outs[2], "kvmops_domain_pauses_total", domain="vm01", cause="user_paused") == 2
    assert [c["count"] for c in state["pauses"]] == [2]


def test_a_new_reason_is_a_new_pause():
    outs = run((T0, report(dom(1, 1, mtime=T0 - 10))),
               (T0 + 30, report(dom(1, 5, disk_errors={"vda": 2}, mtime=T0 + 25))))[0]
    assert series(outs[1], "kvmops_domain_paused_since_timestamp_seconds") == {"vm01": T0 + 25}
    assert value(outs[1], "kvmops_domain_pauses_total", domain="vm01", cause="user_paused") == 1
    assert value(outs[1], "kvmops_domain_pauses_total", domain="vm01", cause="storage_full") == 1


def test_failed_and_incomplete_runs_forget_no_pause():
    outs, state = run((T0, report(dom(1, 1, mtime=T0 - 300), dom(2, 1, mtime=T0 - 200))),
                      (T0 + 30, None),                                            # libvirt down
                      (T0 + 60, report(dom(2, 1, mtime=T0 + 55), finished=False)),  # vm01 not reached
                      (T0 + 90, report(dom(1, 1, mtime=T0 + 80), dom(2, 1, mtime=T0 + 80))))
    assert series(outs[1], "kvmops_domain_paused_info") == {}
    assert series(outs[2], "kvmops_domain_paused_info") == {"vm02": 1}
    assert series(outs[3], "kvmops_domain_paused_since_timestamp_seconds") == {"vm01": T0 - 300, "vm02": T0 - 200}
    assert [(c["domain"], c["count"]) for c in state["pauses"]] == [("vm01", 1), ("vm02", 1)]
    assert value(outs[1], "kvmops_collector_last_success_timestamp_seconds") == T0
    assert value(outs[3], "kvmops_collector_last_success_timestamp_seconds") == T0 + 90


def test_a_complete_report_drops_what_it_does_not_show():
    state = run((T0, report(dom(1, 1, mtime=T0))), (T0 + 30, report()))[1]
    assert state["paused"] == {}


def test_counters_expire_after_retention_once_not_paused():
    state = render(report(dom(1, 1, mtime=T0), dom(2, 1, mtime=T0)), None)[1]
    later = T0 + _promtext.DEFAULT_RETENTION + 1
    text, state = render(report(dom(2, 1, mtime=T0)), state, now=later)
    assert [c["domain"] for c in state["pauses"]] == ["vm02"]
    assert "vm01" not in text


@pytest.mark.parametrize("bad", [None, [], "x", {"version": 99, "last_success": 5},
                                 {"version": 1, "paused": {"k": {"name": "a"}}, "pauses": [{"domain": 1}]},
                                 {"version": 1, "last_success": "yesterday", "paused": [], "pauses": {}}])
def test_broken_state_is_replaced_not_fatal(bad):
    clean = _promtext.clean_state(bad)
    assert clean["paused"] == {} and clean["pauses"] == [] and clean["last_success"] is None
    text, state = render(report(dom(1, 1, mtime=T0)), bad)
    assert value(parse(text), "kvmops_domain_pauses_total", domain="vm01", cause="user_paused") == 1
    assert state["version"] == _promtext.STATE_VERSION


def test_parse_iso():
    assert _promtext.parse_iso("2027-01-15T08:00:00Z") == T0
    assert _promtext.parse_iso(None) is None and _promtext.parse_iso("soon") is None


def test_domain_without_uuid_is_keyed_by_name():
    rep = report(dom(1, 1, mtime=T0))
    rep["paused"][0]["uuid"] = None
    text, state = render(rep)
    assert list(state["paused"]) == ["vm01"]
    assert 'uuid=""' in text


def test_storage_that_does_not_answer_per_host_with_its_domains():
    d = dom(1, 1)
    storage = {"record": "storage", "probed": [], "unresponsive": [
        {"kind": "mount", "target": "/srv/nfs", "mount_point": "/srv/nfs", "fstype": "nfs4", "source": "nfs1:/vm",
         "options": "hard", "since": T0 - 120, "seconds": 120.0, "probe_pid": 77,
         "domains": [{"name": d[0]["name"], "disks": ["vda"]}, {"name": "run00", "disks": ["vda"]}]}]}
    rep = report((d[0], [*d[1], storage]), running=1)
    assert rep["storage_unresponsive"][0]["domains"] == [
        {"name": d[0]["name"], "state": "paused", "disks": ["vda"]}, {"name": "run00", "state": "running",
                                                                      "disks": ["vda"]}]
    p = parse(render(rep)[0])
    where = {"kind": "mount", "mount_point": "/srv/nfs", "fstype": "nfs4", "source": "nfs1:/vm"}
    assert value(p, "kvmops_storage_unresponsive", **where) == 1
    assert value(p, "kvmops_storage_unresponsive_domains", **where) == 2
    assert series(p, "kvmops_domain_storage_unresponsive", mount_point="/srv/nfs") == {d[0]["name"]: 1, "run00": 1}
    assert value(p, "kvmops_domain_storage_unresponsive", domain="run00", state="running", mount_point="/srv/nfs",
                 source="nfs1:/vm") == 1
    assert not any(k[0] == "kvmops_storage_unresponsive" for k in parse(render(report(dom(1, 1)))[0]))
