"""kvmops.fleet.bench_compare: the statistical rule with exact numbers (medians, ranges, ratio, verdicts, the
false alarm chance), missing metrics, tuning and settings differences and their warnings, refused input naming
host, label and metric, and that every key of the output is documented in RETURN."""
from __future__ import annotations

import copy
import inspect
import json
import math
from itertools import combinations

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.filter import bench_compare as plugin
from ansible_collections.kvmops.fleet.plugins.plugin_utils import _bench_compare

bench_compare = plugin.FilterModule().filters()["bench_compare"]
IOPS = "randread-4k-qd32.iops"
LAT = "randread-4k-qd32.lat_mean_us"


def metric(values, unit="IO/s", higher_is_better=True):
    return {"unit": unit, "higher_is_better": higher_is_better, "values": list(values)}


def run(label="before", host="hv1", metrics=None, **extra):
    r = {
        "label": label,
        "host": host,
        "started": "2026-12-01T09:00:00Z",
        "finished": "2026-12-01T09:03:40Z",
        "target": {"kind": "device", "path": "/dev/vdb", "size_bytes": 268435456, "device": "vdb"},
        "settings": {"runtime": 5, "repeats": 4, "jobs": ["randread-4k-qd32"], "direct": True,
                     "file_size_bytes": 268435456, "stress_workers": 0},
        "tuning": {"scheduler": "mq-deadline", "read_ahead_kb": 128, "nr_requests": 64, "thp_enabled": "always",
                   "thp_defrag": "madvise", "ksm_run": 0, "numa_balancing": 1, "swappiness": 60,
                   "tuned_profile": "virtual-host", "cmdline": "root=/dev/vda1 ro"},
        "metrics": {IOPS: metric([100, 102, 98, 101])} if metrics is None else metrics,
        "raw": [{"tool": "fio", "output": "..."}],
        "versions": {"fio": "3.33", "stress-ng": "0.15.06"},
    }
    r.update(extra)
    return r


def one(before_values, after_values, min_effect=0.02, **kw):
    c = bench_compare(run(metrics={IOPS: metric(before_values, **kw)}),
                      run("after", metrics={IOPS: metric(after_values, **kw)}), min_effect=min_effect)
    assert len(c["metrics"]) == 1
    return c["metrics"][0]


# ---- the rule, with exact numbers ---------------------------------------------------------------------


def test_clear_change_is_better_with_exact_numbers():
    m = one([100, 102, 98, 101], [120, 119, 121, 122])
    assert m["before"] == {"n": 4, "median": 100.5, "min": 98.0, "max": 102.0, "spread": 0.039801,
                           "values": [100.0, 102.0, 98.0, 101.0]}
    assert m["after"] == {"n": 4, "median": 120.5, "min": 119.0, "max": 122.0, "spread": 0.024896,
                          "values": [120.0, 119.0, 121.0, 122.0]}
    assert m["ratio"] == 1.199005 == round(120.5 / 100.5, 6)
    assert m["change"] == 0.199005
    assert m["overlap"] is False
    assert m["false_alarm"] == 0.02857
    assert m["verdict"] == "better"


def test_the_same_change_of_a_throughput_downwards_is_worse():
    m = one([120, 119, 121, 122], [100, 102, 98, 101])
    assert m["verdict"] == "worse"
    assert m["ratio"] == round(100.5 / 120.5, 6) == 0.834025


def test_pure_noise_interleaved_is_within_noise():
    m = one([100, 104, 98, 102], [101, 103, 99, 105])
    assert m["before"]["median"] == 101.0 and m["after"]["median"] == 102.0
    assert m["ratio"] == round(102 / 101, 6) == 1.009901
    assert m["overlap"] is True
    assert m["verdict"] == "within noise"


def test_big_median_change_with_overlapping_ranges_is_within_noise():
    # medians 20% apart, but one wild repeat on each side: not a change the rule can vouch for
    m = one([100, 101, 99, 130], [120, 121, 119, 100])
    assert m["overlap"] is True and m["verdict"] == "within noise"


def test_latency_going_down_is_better_and_up_is_worse():
    down = one([200, 205, 198, 202], [150, 152, 149, 151], unit="us", higher_is_better=False)
    assert down["verdict"] == "better"
    assert down["before"]["median"] == 201.0 and down["after"]["median"] == 150.5
    assert down["ratio"] == 0.748756 == round(150.5 / 201.0, 6)
    assert down["change"] == -0.251244
    up = one([150, 152, 149, 151], [200, 205, 198, 202], unit="us", higher_is_better=False)
    assert up["verdict"] == "worse"


def test_ranges_apart_but_below_min_effect_is_within_noise():
    m = one([100.0, 100.2, 100.1, 100.3], [101.0, 101.1, 100.9, 101.2])
    assert m["overlap"] is False
    assert m["ratio"] == 1.008987 == round(101.05 / 100.15, 6)
    assert m["verdict"] == "within noise"
    # the same runs with a smaller min_effect: now the change counts
    assert one([100.0, 100.2, 100.1, 100.3], [101.0, 101.1, 100.9, 101.2], min_effect=0.008)["verdict"] == "better"
    assert one([100.0, 100.2, 100.1, 100.3], [101.0, 101.1, 100.9, 101.2], min_effect=0)["verdict"] == "better"


def test_touching_ranges_overlap():
    m = one([98, 100, 102], [102, 110, 111])
    assert m["overlap"] is True and m["verdict"] == "within noise"


@pytest.mark.parametrize("after, verdict", [([10.2, 10.2, 10.2], "better"), ([9.8, 9.8, 9.8], "worse"),
                                            ([10.19, 10.19, 10.19], "within noise")])
def test_a_change_of_exactly_min_effect_counts(after, verdict):
    # 9.8 / 10 is 0.019999999999999907 away from 1 in binary floating point: still 2%
    assert one([10, 10, 10], after)["verdict"] == verdict


def test_two_repeats_are_too_few_even_with_ranges_apart():
    m = one([100, 101], [150, 151, 152, 153])
    assert m["overlap"] is False
    assert m["before"]["n"] == 2 and m["after"]["n"] == 4
    assert m["ratio"] == round(151.5 / 100.5, 6)
    assert m["false_alarm"] == 0.13333  # 2 / C(6, 2) = 2 / 15
    assert m["verdict"] == "too few repeats"
    assert one([100, 101, 102], [150, 151])["verdict"] == "too few repeats"
    assert one([100], [150])["verdict"] == "too few repeats"


def test_three_repeats_are_enough():
    m = one([100, 101, 99], [150, 151, 152])
    assert m["verdict"] == "better" and m["false_alarm"] == 0.1
    assert m["before"]["median"] == 100.0 and m["after"]["median"] == 151.0


@pytest.mark.parametrize("n, m, expected", [
    (3, 3, 0.1),  # 2 / 20
    (4, 4, 0.02857),  # 2 / 70
    (5, 5, 0.00794),  # 2 / 252
    (3, 4, 0.05714),  # 2 / 35
    (2, 2, 0.33333),  # 2 / 6
    (10, 10, 0.00001),  # 2 / 184756
    (12, 12, 0.0),  # 2 / 2704156: under 0.000005
])
def test_false_alarm(n, m, expected):
    assert _bench_compare.false_alarm(n, m) == expected
    swapped = {"n": m, "m": n}
    assert _bench_compare.false_alarm(**swapped) == expected
    assert one(range(100, 100 + n), range(200, 200 + m))["false_alarm"] == expected


def test_false_alarm_is_the_chance_of_apart_ranges_under_noise():
    """Every split of 4 + 4 distinct values into two sides is equally likely under pure noise: count them."""
    values = range(8)
    splits = list(combinations(values, 4))
    apart = 0
    for before in splits:
        after = [v for v in values if v not in before]
        if max(before) < min(after) or max(after) < min(before):
            apart += 1
    assert (apart, len(splits)) == (2, 70)
    assert _bench_compare.false_alarm(4, 4) == round(apart / len(splits), 5)


def test_documentation_states_the_numbers():
    doc = plugin.DOCUMENTATION
    for text in ("V(0.1) for 3 + 3", "V(0.02857) for 4 + 4", "V(0.00794) for 5 + 5", "C(|ratio - 1| >= min_effect)",
                 "fewer than 3 values", "2 / comb(n + m, n)"):
        assert text in doc, text
    assert "2/20 = 0.1; 4 + 4: 2/70 =" in _bench_compare.__doc__


def test_a_zero_median_before_has_no_ratio():
    m = one([0, 0, 0], [5, 6, 7])
    assert m["ratio"] is None and m["change"] is None and m["before"]["spread"] is None
    assert m["verdict"] == "better"  # from nothing to something, ranges apart
    assert one([0, 0, 0], [0, 0, 0])["verdict"] == "within noise"


# ---- the whole comparison -----------------------------------------------------------------------------


def test_missing_metrics_are_listed_and_counted():
    before = run(metrics={IOPS: metric([100, 101, 102]), "cpu.bogo_ops_per_s": metric([5, 5, 5], "bogo ops/s")})
    after = run("after", metrics={IOPS: metric([100, 101, 102]), LAT: metric([1, 2, 3], "us", False)})
    c = bench_compare(before, after)
    by_name = {m["metric"]: m for m in c["metrics"]}
    assert by_name[LAT]["verdict"] == "missing in before"
    assert by_name[LAT]["before"] is None and by_name[LAT]["after"]["median"] == 2.0
    assert by_name[LAT]["ratio"] is None and by_name[LAT]["false_alarm"] is None and by_name[LAT]["overlap"] is None
    assert by_name["cpu.bogo_ops_per_s"]["verdict"] == "missing in after"
    assert by_name["cpu.bogo_ops_per_s"]["after"] is None
    assert c["counts"] == {"better": 0, "worse": 0, "within noise": 1, "too few repeats": 0,
                           "missing in before": 1, "missing in after": 1}


def test_metrics_in_job_and_quantity_order():
    names = ["switch.bogo_ops_per_s", "seqread-1m.iops", "randread-4k-qd1.lat_p99_us", "randread-4k-qd1.iops",
             "zzz-custom.iops", "cpu.bogo_ops_per_s", "randread-4k-qd1.bw_mib_s", "randwrite-4k-qd32.iops",
             "randread-4k-qd1.lat_mean_us", "memory.bogo_ops_per_s", "abc-custom.other"]
    metrics = {n: metric([1, 2, 3]) for n in names}
    c = bench_compare(run(metrics=metrics), run("after", metrics=copy.deepcopy(metrics)))
    assert [m["metric"] for m in c["metrics"]] == [
        "randread-4k-qd1.iops", "randread-4k-qd1.bw_mib_s", "randread-4k-qd1.lat_mean_us",
        "randread-4k-qd1.lat_p99_us", "randwrite-4k-qd32.iops", "seqread-1m.iops", "cpu.bogo_ops_per_s",
        "memory.bogo_ops_per_s", "switch.bogo_ops_per_s", "abc-custom.other", "zzz-custom.iops",
    ]
    assert c["metrics"][0]["job"] == "randread-4k-qd1" and c["metrics"][0]["quantity"] == "iops"


def test_counts_and_identity():
    before = run(metrics={IOPS: metric([100, 102, 98, 101]), LAT: metric([200, 205, 198, 202], "us", False),
                          "cpu.bogo_ops_per_s": metric([5000, 5100, 4950], "bogo ops/s")})
    after = run("after", started="2026-12-01T10:00:00Z",
                metrics={IOPS: metric([120, 119, 121, 122]), LAT: metric([250, 252, 249, 251], "us", False),
                         "cpu.bogo_ops_per_s": metric([5050, 4990, 5080], "bogo ops/s")})
    c = bench_compare(before, after, min_effect=0.05)
    assert c["schema_version"] == 1 and c["host"] == "hv1" and c["min_effect"] == 0.05
    assert c["counts"] == {"better": 1, "worse": 1, "within noise": 1, "too few repeats": 0,
                           "missing in before": 0, "missing in after": 0}
    assert c["before"]["label"] == "before" and c["after"]["label"] == "after"
    assert c["after"]["started"] == "2026-12-01T10:00:00Z"
    assert "raw" not in c["before"] and "metrics" not in c["after"]
    assert c["tuning_diff"] == {} and c["settings_diff"] == {} and c["warnings"] == []


def test_tuning_diff_lists_what_changed_with_both_values():
    after = run("after")
    after["tuning"].update(scheduler="none", nr_requests=256, thp_enabled="madvise")
    del after["tuning"]["swappiness"]
    after["tuning"]["extra"] = "x"
    c = bench_compare(run(), after)
    assert c["tuning_diff"] == {
        "extra": {"before": None, "after": "x"},
        "nr_requests": {"before": 64, "after": 256},
        "scheduler": {"before": "mq-deadline", "after": "none"},
        "swappiness": {"before": 60, "after": None},
        "thp_enabled": {"before": "always", "after": "madvise"},
    }
    assert list(c["tuning_diff"]) == sorted(c["tuning_diff"])
    assert c["warnings"] == []  # a tuning difference is what a comparison is for


def test_settings_diff_warns_when_the_runs_measured_differently():
    after = run("after")
    after["settings"].update(runtime=10, jobs=["randread-4k-qd32", "cpu"], repeats=5)
    c = bench_compare(run(), after)
    assert c["settings_diff"] == {
        "jobs": {"before": ["randread-4k-qd32"], "after": ["randread-4k-qd32", "cpu"]},
        "repeats": {"before": 4, "after": 5},
        "runtime": {"before": 5, "after": 10},
    }
    assert c["warnings"] == [
        "runtime differs: each job ran for a different time (5 before, 10 after): the comparison is suspect",
        "jobs differ: the job sets are not the same (['randread-4k-qd32'] before, ['randread-4k-qd32', 'cpu'] after): "
        "the comparison is suspect",
    ]


def test_only_repeats_differing_is_no_warning():
    after = run("after")
    after["settings"]["repeats"] = 6
    assert bench_compare(run(), after)["warnings"] == []


def test_warnings_for_direct_target_versions_host_and_unknown_settings():
    after = run("after", host="hv2")
    after["settings"].update(direct=False, numjobs=2)
    after["target"]["path"] = "/dev/vdc"
    after["versions"]["fio"] = "3.35"
    c = bench_compare(run(), after)
    assert c["host"] == "hv2"
    assert c["warnings"] == [
        "host differs: the runs come from hv1 and hv2",
        "direct differs: one run bypassed the page cache and the other did not (True before, False after): "
        "the comparison is suspect",
        "numjobs differs (None before, 2 after): the comparison is suspect",
        "the target differs (path '/dev/vdb' -> '/dev/vdc'): the runs did not measure the same storage",
        "tool versions differ (fio '3.33' -> '3.35'): part of a change may be the tools'",
    ]


def test_json_text_is_read_like_the_mapping():
    before, after = run(), run("after", metrics={IOPS: metric([120, 119, 121, 122])})
    assert bench_compare(json.dumps(before), json.dumps(after).encode()) == bench_compare(before, after)


def test_input_is_not_changed_and_output_is_plain_and_stable():
    before, after = run(), run("after", metrics={IOPS: metric([120, 119, 121, 122])})
    keep = copy.deepcopy((before, after))
    c1 = bench_compare(before, after)
    assert (before, after) == keep
    assert json.loads(json.dumps(c1)) == c1
    assert bench_compare(before, after) == c1


def test_missing_optional_parts_are_empty():
    before = {"label": "b", "host": "hv1", "metrics": {IOPS: metric([1, 2, 3])}}
    after = {"label": "a", "host": "hv1", "metrics": {IOPS: metric([1, 2, 3])}, "tuning": None}
    c = bench_compare(before, after)
    assert c["before"] == {"label": "b", "host": "hv1", "started": None, "finished": None, "target": {},
                           "settings": {}, "tuning": {}, "versions": {}}
    assert c["tuning_diff"] == {} and c["warnings"] == []


# ---- refused input ------------------------------------------------------------------------------------


def bad_values(values):
    return run("after", host="hv7", metrics={IOPS: metric([100, 101, 102]), LAT: metric(values, "us", False)})


@pytest.mark.parametrize("values, what", [
    ([100, "fast", 102], "values[1]: 'fast' is not a number"),
    ([100, float("nan"), 102], "values[1]: nan is not a finite number"),
    ([100, 101, math.inf], "values[2]: inf is not a finite number"),
    ([True, 101, 102], "values[0]: True is not a number"),
    ([100, None], "values[1]: None is not a number"),
    ([100, -1], "values[1]: -1 is negative"),
    ([], "values: empty, a metric needs at least one value"),
])
def test_bad_values_name_host_label_and_metric(values, what):
    with pytest.raises(AnsibleFilterError) as e:
        bench_compare(run(), bad_values(values))
    assert str(e.value) == (
        f"kvmops.fleet.bench_compare: after run (host hv7, label after): metric {LAT}: {what}"
    )


@pytest.mark.parametrize("change, what", [
    ({"values": "100,101"}, "values: expected a list of numbers, got str"),
    ({"unit": None}, "unit: expected a string, got None"),
    ({"higher_is_better": "yes"}, "higher_is_better: expected true or false, got 'yes'"),
])
def test_bad_metric_fields(change, what):
    before = run(metrics={IOPS: dict(metric([1, 2, 3]), **change)})
    with pytest.raises(AnsibleFilterError, match=f"before run \\(host hv1, label before\\): metric {IOPS}: "):
        bench_compare(before, run("after"))
    with pytest.raises(AnsibleFilterError) as e:
        bench_compare(before, run("after"))
    assert str(e.value).endswith(what)


def test_a_metric_that_is_not_a_mapping():
    with pytest.raises(AnsibleFilterError, match=f"before run \\(host hv1, label before\\): metric {IOPS}: expected a"):
        bench_compare(run(metrics={IOPS: [1, 2, 3]}), run("after"))


@pytest.mark.parametrize("before, what", [
    ([1, 2], "before run: expected a mapping (a kvm_benchmark result), got list"),
    (None, "before run: expected a mapping (a kvm_benchmark result), got NoneType"),
    ("{not json", "before run: not a kvm_benchmark result: the text is not JSON"),
    ("[1]", "before run: expected a mapping (a kvm_benchmark result), got list"),
    ({"label": "b", "metrics": {}}, "before run (host None, label b): host: expected a non-empty string, got None"),
    ({"label": "", "host": "hv1", "metrics": {}}, "before run (host hv1, label ): label: expected a non-empty string"),
    ({"label": "b", "host": "hv1"}, "before run (host hv1, label b): metrics: expected a mapping"),
    ({"label": "b", "host": "hv1", "metrics": [], "tuning": "x"}, "before run (host hv1, label b): metrics: expected"),
    ({"label": "b", "host": "hv1", "metrics": {}, "tuning": "x"},
     "before run (host hv1, label b): tuning: expected a mapping, got str"),
    ({"label": "b", "host": "hv1", "metrics": {}, "started": 5},
     "before run (host hv1, label b): started: expected a time string, got 5"),
    ({"label": "b", "host": "hv1", "metrics": {}, "x": {1, 2}},
     "before run (host hv1, label b): unexpected value of type set"),
])
def test_not_a_run(before, what):
    with pytest.raises(AnsibleFilterError) as e:
        bench_compare(before, run("after"))
    assert str(e.value).startswith(f"kvmops.fleet.bench_compare: {what}"), str(e.value)


@pytest.mark.parametrize("key, b, a", [("unit", "IO/s", "MiB/s"), ("higher_is_better", True, False)])
def test_a_metric_that_changed_meaning_is_refused(key, b, a):
    before = run(metrics={IOPS: dict(metric([1, 2, 3]), **{key: b})})
    after = run("after", host="hv1", metrics={IOPS: dict(metric([1, 2, 3]), **{key: a})})
    with pytest.raises(AnsibleFilterError) as e:
        bench_compare(before, after)
    assert str(e.value) == (
        f"kvmops.fleet.bench_compare: metric {IOPS}: {key} is {b!r} in before run (host hv1, label before) but "
        f"{a!r} in after run (host hv1, label after): not the same quantity"
    )


@pytest.mark.parametrize("min_effect", [-0.1, 1.5, "lots", True, None, math.nan])
def test_bad_min_effect(min_effect):
    with pytest.raises(AnsibleFilterError, match="min_effect: "):
        bench_compare(run(), run("after"), min_effect=min_effect)


def test_min_effect_as_text_from_extra_vars():
    assert bench_compare(run(), run("after"), min_effect="0.05")["min_effect"] == 0.05


# ---- documentation matches the output -----------------------------------------------------------------


def assert_documented(value: dict, docs: dict, where: str) -> None:
    assert set(value) == set(docs), f"{where}: undocumented {set(value) - set(docs)}, stale {set(docs) - set(value)}"
    for key, doc in docs.items():
        assert doc.get("description"), f"{where}.{key} has no description"
        if "contains" in doc and isinstance(value[key], dict):
            assert_documented(value[key], doc["contains"], f"{where}.{key}")
        elif "contains" in doc and isinstance(value[key], list) and value[key]:
            assert_documented(value[key][0], doc["contains"], f"{where}.{key}[]")


def test_every_key_is_documented():
    docs = yaml.safe_load(plugin.RETURN)["_value"]["contains"]
    c = bench_compare(run(), run("after", metrics={IOPS: metric([120, 119, 121, 122])}))
    assert_documented(c, docs, "_value")
    assert set(c["counts"]) == set(docs["metrics"]["contains"]["verdict"]["choices"]) == set(_bench_compare.VERDICTS)
    assert set(c["counts"]) == set(docs["counts"]["sample"])


def test_documented_options_match_the_signature():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    params = inspect.signature(plugin.bench_compare).parameters
    assert list(params) == ["before", "after", "min_effect"]
    assert params["min_effect"].default == doc["options"]["min_effect"]["default"] == 0.02
    assert doc["positional"] == "_input, after"
