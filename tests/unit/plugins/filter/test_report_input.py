"""kvmops.fleet.fleet_report and fleet_summary refuse malformed input with an AnsibleFilterError naming the host
and the field (issue 17, item 7): never a bare KeyError/TypeError/AttributeError, never a string read one
character at a time, never a silent fallback.

The cases are generated from the shapes in plugins/plugin_utils/_report_input.py: every field of a paused
entry, an unresponsive entry, a disk, a host's kvm_pause and a report host gets a value of the wrong kind (and a
required one is removed), so a field added to a shape is fed bad values without anyone writing a case."""
from __future__ import annotations

import copy
import itertools
import json

import pytest
from ansible.errors import AnsibleFilterError
from browser.fixture import fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_summary as summary_plugin
from ansible_collections.kvmops.fleet.plugins.plugin_utils import _report_input as shapes
from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import COUNT_KEYS

fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_summary = summary_plugin.FilterModule().filters()["fleet_summary"]
T0 = "2026-11-18T11:06:40Z"
HOST = "hv-a.example.net"  # diagnosed, with paused domains of many causes
FACTS = ("ansible_facts", "kvm_pause")


def wrong_values(spec):
    """Values of the wrong kind for a spec: a str where a list or mapping belongs, a number where a str does,
    null where null is not allowed, a list where a scalar belongs."""
    nullable = spec.endswith("?") if isinstance(spec, str) else isinstance(spec, dict) and spec.get("?")
    base = spec.rstrip("?") if isinstance(spec, str) else None
    out = [] if nullable else [None]
    if isinstance(spec, list):
        return [*out, "text", 7, {"a": 1}]
    if isinstance(spec, (dict, tuple)) or base == "map":
        out += ["text", ["a"], 3]
        if isinstance(spec, tuple):
            out.append({"key": "text" if spec[1] != "str" else 5})
        return out
    return out + {
        "str": [5, ["a", "b"], {"a": 1}],
        "int": ["7", 1.5, True],
        "num": ["7", float("nan"), float("inf"), False],
        "bool": ["yes", 1],
        "any": [],
    }[base]


def fields(spec, path=()):
    """(path, field spec, required) for every field of a dict spec, into nested dicts and list items."""
    for field, inner in spec.items():
        if field == "?":
            continue
        name = field.rstrip("?")
        yield (*path, name), inner, not field.endswith("?")
        if isinstance(inner, dict):
            yield from fields(inner, (*path, name))
        elif isinstance(inner, list) and isinstance(inner[0], dict):
            yield from fields(inner[0], (*path, name, 0))


def dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def put(data, path, value, delete=False):
    """Set (or delete) data[path], making the containers on the way when the fixture lacks them."""
    cur = data
    for part, nxt in itertools.pairwise(path):
        if isinstance(part, int):
            while len(cur) <= part:
                cur.append({})
            cur = cur[part]
        else:
            if not isinstance(cur.get(part), (dict, list)):
                cur[part] = [] if isinstance(nxt, int) else {}
            cur = cur[part]
    last = path[-1]
    if delete:
        cur.pop(last, None)
    elif isinstance(last, int):
        while len(cur) <= last:
            cur.append({})
        cur[last] = value
    else:
        cur[last] = value


def paused_with_everything(results):
    """The first paused entry of HOST, with every optional list holding one item (so list items are reached)."""
    entry = results[HOST]["ansible_facts"]["kvm_pause"]["paused"][0]
    entry.setdefault("disks", []).append({"target": "vdz"})
    entry["disks"][0].setdefault("endpoints", []).append({"endpoint": "unix:/x"})
    return entry


def result_cases():
    base_paths = [
        (("paused", 0), shapes.PAUSED),
        (("unresponsive", 0), shapes.UNRESPONSIVE),
        ((), {k: v for k, v in shapes.KVM_PAUSE.items() if k not in ("paused?", "unresponsive?")}),
    ]
    for prefix, spec in base_paths:
        for path, inner, required in fields(spec):
            full = (*FACTS, *prefix, *path)
            if path == ("schema_version",):
                continue  # another schema version is the report builder's own message (test below)
            for value in wrong_values(inner):
                yield pytest.param(full, value, False, id=f"{dotted(full[2:])}={value!r}")
            if required:
                yield pytest.param(full, None, True, id=f"{dotted(full[2:])} missing")


@pytest.mark.parametrize("path,value,delete", list(result_cases()))
def test_malformed_result_is_named(path, value, delete):
    results = fleet_results()
    paused_with_everything(results)
    facts = results[HOST]["ansible_facts"]["kvm_pause"]
    if not facts.get("unresponsive"):
        facts["unresponsive"] = copy.deepcopy(results["hv-c.example.net"]["ansible_facts"]["kvm_pause"]["unresponsive"])
    put(results[HOST], path, value, delete=delete)
    with pytest.raises(AnsibleFilterError) as err:
        fleet_report(results, generated_at=T0)
    msg = str(err.value)
    assert isinstance(err.value.__cause__, shapes.ReportInputError), repr(err.value.__cause__)
    assert msg.startswith(f"kvmops.fleet.fleet_report: host {HOST}: "), msg
    field = dotted(path)
    assert field in msg, (field, msg)
    assert ("missing" if delete else "expected") in msg, msg
    if path[2] in ("paused", "unresponsive"):
        name = (facts.get(path[2]) or [{}])[0]
        if isinstance(name, dict) and isinstance(name.get("name"), str) and path[-1] != "name":
            assert f"(domain {name['name']})" in msg, msg


@pytest.mark.parametrize("result,field", [
    ("text", "expected the registered task result (a mapping) or null, got str"),
    (["a"], "expected the registered task result (a mapping) or null, got list"),
    (5, "expected the registered task result (a mapping) or null, got int"),
    ({"ansible_facts": "text"}, "ansible_facts: expected a mapping, got str"),
    ({"ansible_facts": {"kvm_pause": "text"}}, "ansible_facts.kvm_pause: expected a mapping, got str"),
    ({"ansible_facts": {"kvm_pause": ["a"]}}, "ansible_facts.kvm_pause: expected a mapping, got list"),
    ({"ansible_facts": {"kvm_pause": {"schema_version": 1, "paused": "web-01"}}},
     "ansible_facts.kvm_pause.paused: expected a list of mappings, got str"),
    ({"ansible_facts": {"kvm_pause": {"schema_version": 1, "paused": [{"name": "v"}]}}},
     "ansible_facts.kvm_pause.paused[0].cause: missing (domain v)"),
    ({"ansible_facts": {"kvm_pause": {"schema_version": 1, "paused": ["v"]}}},
     "ansible_facts.kvm_pause.paused[0]: expected a mapping, got str"),
    ({"ansible_facts": {"kvm_pause": {"schema_version": 1, "errors": "timed out"}}},
     "ansible_facts.kvm_pause.errors: expected a list of str, got str"),
    ({"ansible_facts": {"kvm_pause": {"schema_version": 1, "summary": {"by_cause": {"x": "2"}}}}},
     "ansible_facts.kvm_pause.summary.by_cause.x: expected an integer, got str"),
])
def test_malformed_host_result_is_named(result, field):
    with pytest.raises(AnsibleFilterError) as err:
        fleet_report({"good": None, "hv-x": result}, generated_at=T0)
    assert isinstance(err.value.__cause__, shapes.ReportInputError)
    assert str(err.value) == f"kvmops.fleet.fleet_report: host hv-x: {field}"


def test_wrong_schema_version_keeps_its_message():
    with pytest.raises(AnsibleFilterError, match="host h: kvm_pause schema_version 2 is not 1"):
        fleet_report({"h": {"ansible_facts": {"kvm_pause": {"schema_version": 2, "paused": "x"}}}})


def test_results_that_only_carry_a_message_are_not_inspected():
    """Unreachable, failed and skipped results are reported with their message, whatever else they hold."""
    rep = fleet_report({"u": {"unreachable": True, "msg": "no route", "ansible_facts": "junk"},
                        "f": {"failed": True, "msg": ["a", "list"], "ansible_facts": {"kvm_pause": "junk"}},
                        "s": {"skipped": True}}, generated_at=T0)
    assert [h["status"] for h in rep["hosts"]] == ["libvirt_failed", "not_diagnosed", "unreachable"]


# ---- fleet_summary: a report ---------------------------------------------------------------------------------


def report_cases():
    for path, inner, required in fields(shapes.REPORT_HOST):
        for value in wrong_values(inner):
            yield pytest.param(("hosts", 0, *path), value, False, id=f"hosts[0].{dotted(path)}={value!r}")
        if required:
            yield pytest.param(("hosts", 0, *path), None, True, id=f"hosts[0].{dotted(path)} missing")
    top = {k: v for k, v in shapes.REPORT.items() if k != "hosts"}
    for path, inner, required in fields(top):
        if path == ("schema_version",):
            continue
        for value in wrong_values(inner):
            yield pytest.param(path, value, False, id=f"{dotted(path)}={value!r}")
        if required:
            yield pytest.param(path, None, True, id=f"{dotted(path)} missing")
    for key in COUNT_KEYS:
        for value in ("7", None, 1.5, True):
            yield pytest.param(("summary", key), value, False, id=f"summary.{key}={value!r}")
    yield pytest.param(("hosts",), "hv-a", False, id="hosts=str")
    yield pytest.param(("hosts",), None, True, id="hosts missing")
    yield pytest.param(("hosts", 0, "status"), "fine", False, id="hosts[0].status=fine")


@pytest.fixture(scope="module")
def good_report():
    results = fleet_results()
    paused_with_everything(results)
    rep = fleet_report(results, generated_at=T0)
    first = rep["hosts"][0]
    first["unresponsive"] = copy.deepcopy(next(h for h in rep["hosts"] if h["unresponsive"])["unresponsive"])
    assert first["name"] == HOST and first["paused"]
    return rep


@pytest.mark.parametrize("path,value,delete", list(report_cases()))
def test_malformed_report_is_named(good_report, path, value, delete):
    rep = copy.deepcopy(good_report)
    put(rep, path, value, delete=delete)
    with pytest.raises(AnsibleFilterError) as err:
        fleet_summary(rep, generated_at=T0)
    msg = str(err.value)
    assert isinstance(err.value.__cause__, shapes.ReportInputError), repr(err.value.__cause__)
    if path[0] == "hosts" and len(path) > 2 and path[2] != "name":
        assert msg.startswith(f"kvmops.fleet.fleet_summary: host {HOST}: {dotted(path[2:])}"), msg
    elif path[0] == "hosts" and len(path) > 2:
        assert msg.startswith("kvmops.fleet.fleet_summary: report.hosts[0]: name"), msg
    else:
        assert msg.startswith(f"kvmops.fleet.fleet_summary: report.{dotted(path)}"), msg
    assert ("missing" if delete else "expected") in msg, msg


def test_summary_generated_at_must_be_text(good_report):
    with pytest.raises(AnsibleFilterError, match="generated_at: expected an ISO 8601 time string, got int"):
        fleet_summary(good_report, generated_at=5)


def test_a_malformed_previous_report_is_ignored():
    """previous is documented as ignored when unusable: a report of the wrong shape (a str where the hosts
    belong, a host without its paused list) is ignored, not a crash, whether given parsed or as JSON text."""
    results = fleet_results()
    previous = fleet_report(results, generated_at=T0)
    fresh = fleet_report(results, generated_at="2026-11-19T00:00:00Z")
    kept = fleet_report(results, generated_at="2026-11-19T00:00:00Z", previous=json.dumps(previous))
    assert kept["generated_at"] == T0  # the same state: the previous report is kept (the rule still works)
    for bad in ({**previous, "hosts": "hv-a"},
                {**previous, "hosts": [{k: v for k, v in previous["hosts"][0].items() if k != "paused"}]},
                json.dumps({**previous, "summary": "x"}), "[1, 2]", b"\xff"):
        assert fleet_report(results, generated_at="2026-11-19T00:00:00Z", previous=bad) == fresh


def test_every_shape_field_is_reached():
    """The generated cases reach every field of every shape (a field the generator skipped would go untested)."""
    seen = {p.values[0][-1] for p in result_cases()} | {p.values[0][-1] for p in report_cases()}
    for spec in (shapes.PAUSED, shapes.UNRESPONSIVE, shapes.KVM_PAUSE, shapes.REPORT_HOST, shapes.DISK,
                 shapes.HOST_SUMMARY, shapes.REPORT):
        for field in spec:
            if field not in ("?", "schema_version"):
                assert field.rstrip("?") in seen, field
