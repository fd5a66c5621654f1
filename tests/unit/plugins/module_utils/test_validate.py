"""The option checks every module shares (common/_validate.py): libvirt's cpuset grammar bounded before it is
expanded, numeric ranges with NaN/inf refused, unique list entries, and the argument-spec walk that names the
option's full path."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _validate as v


@pytest.mark.parametrize("text,expected", [
    ("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-3,^2", [0, 1, 3]), ("1, 5-6", [1, 5, 6]), ("7,0-1", [0, 1, 7]),
    (" 2 - 4 ", [2, 3, 4]), ("0003", [3]), ("^1,0-2", [0, 2]), ("16383", [16383]), (5, [5]),
])
def test_cpuset_what_libvirt_accepts(text, expected):
    assert v.parse_cpuset(text) == expected


# what libvirt's virBitmapParse refuses, and what Python's int() would have taken (1_0, +1, non-ASCII digits)
@pytest.mark.parametrize("text", ["", " ", "a", "1-", "3-1", "-1", "0,,1", "^0", "0-2,^1-2", "1.5", "1_0", "+1",
                                  "0-+3", "\u0661", "0x1", "1 2", "0;1", True, None, [0]])
def test_cpuset_what_libvirt_refuses(text):
    with pytest.raises(v.CpusetError, match=r"^vcpupin\[0\]\.cpuset: "):
        v.parse_cpuset(text, "vcpupin[0].cpuset")


@pytest.mark.parametrize("text,limit,match", [
    ("16384", v.CPUMASK_LEN, r"CPU 16384 is beyond libvirt's limit \(CPUs 0-16383"),
    ("0-99999999", v.CPUMASK_LEN, r"CPU 99999999 is beyond"),
    ("^20000,1", v.CPUMASK_LEN, r"CPU 20000 is beyond"),
    ("0-" + "9" * 100000, v.CPUMASK_LEN, r"is longer than 81920"),
    ("0-" + "9" * 5000, v.CPUMASK_LEN, r"CPU 9{5000} is beyond"),
    ("0" * 5000 + "7", 6, r"^x: host CPU\(s\) 7 do not exist on this host \(host CPUs: 0-3,5\)"),
])
def test_cpuset_bounded_before_expanding(text, limit, match):
    existing = [0, 1, 2, 3, 5] if limit == 6 else None
    with pytest.raises(v.CpusetError, match=match):
        v.parse_cpuset(text, "x", limit=limit, existing=existing)


def test_cpuset_worst_case_costs_memory_and_time_of_the_limit_only():
    text = ",".join(["0-16383"] * (v.CPUSET_MAX_CHARS // 8))      # every part the whole range, 10240 parts
    assert len(text) <= v.CPUSET_MAX_CHARS
    tracemalloc.start()
    start = time.monotonic()
    assert len(v.parse_cpuset(text)) == v.CPUMASK_LEN
    took = time.monotonic() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 1.0 and peak < 8 * 1024 * 1024, (took, peak)


@pytest.mark.parametrize("rule,good,bad,match", [
    (v.Int(1, 256, "tap"), [1, 256], [0, 257, -1, 2**64, True, "3", 1.5], r"^q: must be (from 1 to 256|an integer)"),
    (v.Int(64, 2**24, "pages", power_of_two=True), [64, 2048, 2**24], [0, 96, 3000, 2**25], r"^q: must be"),
    (v.Float(0, 3600, "t", low_open=True), [0.001, 3600, 10],
     [0, -1, 3600.5, float("nan"), float("inf"), float("-inf"), True, "1"], r"^q: must be"),
    (v.Float(0, 3600, "s"), [0, 1.5], [-0.1, float("nan")], r"^q: must be"),
    (v.Text("libvirt picks a default"), ["qemu:///system", "x"], ["", "  ", "a\x00b", "x" * 5000, 3],
     r"^q: must|^q: is 5000"),
    (v.Text(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", example="52:54:00:00:00:01"), ["52:54:00:aa:bb:cc"],
     ["52:54:00:aa:bb", "zz:54:00:aa:bb:cc"], r"^q: .* is not valid \(expected e\.g\. 52:54:00:00:00:01\)"),
    (v.Cpuset(), ["0-3"], ["0-99999999", "1_0"], r"^q: "),
    (v.Keys(("a", "b"), v.Int(0, 10, "x")), [{"a": 1}, {}], [{"c": 1}, {"a": 11}, []], r"^q(\.a)?: "),
])
def test_rules(rule, good, bad, match):
    for value in good:
        rule.check(value, "q")
    for value in bad:
        with pytest.raises(v.OptionError, match=match):
            rule.check(value, "q")


def test_unique_names_both_entries():
    rule = v.Unique(("mac", "target"), fold=True)
    rule.check([{"mac": "52:54:00:00:00:01"}, {"mac": "52:54:00:00:00:02"}, {"target": "vnet0"}], "interfaces")
    with pytest.raises(v.OptionError, match=r"^interfaces\[2\]\.mac: '52:54:00:00:00:AA' is also given in "
                                            r"interfaces\[0\]"):
        rule.check([{"mac": "52:54:00:00:00:aa"}, {"target": "vnet0"}, {"mac": "52:54:00:00:00:AA"}], "interfaces")


SPEC = {
    "uri": {"type": "str", "default": "qemu:///system"},
    "flag": {"type": "bool"},
    "mode": {"type": "str", "choices": ["a", "b"]},
    "names": {"type": "list", "elements": "str"},
    "pins": {"type": "list", "elements": "dict",
             "options": {"vcpu": {"type": "int", "required": True}, "cpuset": {"type": "str"}}},
    "io": {"type": "dict", "options": {"count": {"type": "int"}, "rate": {"type": "dict", "options": {
        "average": {"type": "int"}}}}},
}
RULES = {
    "uri": v.Text(), "names[]": v.Text(), "pins": v.Unique(("vcpu",)), "pins[].vcpu": v.Int(0, 7, "x"),
    "pins[].cpuset": v.Cpuset(), "io.count": v.Int(0, 4, "y"), "io.rate.average": v.Int(0, v.UINT_MAX, "z"),
}


def test_unruled_lists_what_has_no_rule_and_rules_that_name_nothing():
    assert v.unruled(SPEC, RULES) == ([], [])
    rules = {k: r for k, r in RULES.items() if k not in ("io.rate.average", "names[]")}
    rules["io.gone"] = v.Int(0, 1, "")
    assert v.unruled(SPEC, rules) == (["names[]", "io.rate.average"], ["io.gone"])


@pytest.mark.parametrize("params,match", [
    ({"uri": ""}, r"^uri: must not be empty"),
    ({"names": ["a", ""]}, r"^names\[1\]: must not be empty"),
    ({"pins": [{"vcpu": 0, "cpuset": "1"}, {"vcpu": 9, "cpuset": "1"}]}, r"^pins\[1\]\.vcpu: must be from 0 to 7"),
    ({"pins": [{"vcpu": 0, "cpuset": "1"}, {"vcpu": 1, "cpuset": "0-99999999"}]}, r"^pins\[1\]\.cpuset: CPU 99999999"),
    ({"pins": [{"vcpu": 2, "cpuset": "1"}, {"vcpu": 2, "cpuset": "3"}]},
     r"^pins\[1\]\.vcpu: 2 is also given in pins\[0\]"),
    ({"io": {"count": 5, "rate": None}}, r"^io\.count: must be from 0 to 4"),
    ({"io": {"count": None, "rate": {"average": 2**32}}}, r"^io\.rate\.average: must be from 0 to 4294967295"),
])
def test_check_names_the_full_path(params, match):
    full = {"uri": "qemu:///system", "flag": None, "mode": None, "names": None, "pins": None, "io": None}
    full.update(params)
    with pytest.raises(v.OptionError, match=match):
        v.check(full, SPEC, RULES)


def test_check_passes_good_params():
    v.check({"uri": "test:///default", "names": ["a*"], "pins": [{"vcpu": 1, "cpuset": "0-3,^2"}],
             "io": {"count": 4, "rate": {"average": 0}}}, SPEC, RULES)
