# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two labelled kvm_benchmark runs of one host -> their comparison, metric by metric. Controller side, pure.

``compare(before, after, min_effect)`` takes two runs as kvm_benchmark returns them (or the JSON text of the
files the tuning role keeps) and returns one host's comparison (schema version 1). The rule, per metric
present in both runs, with ``n`` and ``m`` the repeats of each side:

- each side: ``n``, ``median``, ``min``, ``max`` and ``spread = (max - min) / median``;
- ``ratio = after median / before median``;
- the verdict is ``better`` or ``worse`` only when the two ranges ``[min, max]`` do not overlap (touching
  counts as overlapping) AND ``|ratio - 1| >= min_effect``; the direction is the metric's
  ``higher_is_better`` (a change of exactly ``min_effect``, within 1e-9, counts). Otherwise it is ``within
  noise``;
- ``too few repeats`` when either side has fewer than 3 values, whatever the ranges say;
- ``false_alarm = 2 / C(n + m, n)``: when the repeats are pure noise (exchangeable: every ordering of the
  n + m values equally likely), the ranges are apart only when all n values lie below all m values or above
  them, 2 of the C(n + m, n) equally likely ways to split the order. 3 + 3: 2/20 = 0.1; 4 + 4: 2/70 =
  0.02857; 5 + 5: 2/252 = 0.00794 (rounded to 5 decimals). Ties only lower it.

A metric in only one run gets the verdict ``missing in before`` or ``missing in after``. ``tuning_diff`` and
``settings_diff`` list the keys whose values differ (``{key: {"before": v, "after": v}}``); a difference in
settings other than ``repeats``, in the target, the host or the tool versions adds a line to ``warnings``,
because the two runs then did not measure the same thing.

Input that is not a run (not a mapping, no ``metrics``, values that are not finite non-negative numbers, an
empty list of values, a metric whose unit or direction differs between the runs) raises ``BenchCompareError``
naming the side, host, label and metric.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping

SCHEMA_VERSION = 1
MIN_REPEATS = 3
# a change of exactly min_effect counts although binary floating point misses it either way (9.8 / 10 is
# 0.019999999999999907 away from 1, 10.2 / 10 is 0.020000000000000018)
EPSILON = 1e-9
BETTER = "better"
WORSE = "worse"
NOISE = "within noise"
TOO_FEW = "too few repeats"
MISSING_BEFORE = "missing in before"
MISSING_AFTER = "missing in after"
VERDICTS = (BETTER, WORSE, NOISE, TOO_FEW, MISSING_BEFORE, MISSING_AFTER)
# the order of the report's rows: the job set of kvm_benchmark, then its quantities; anything else after, by name
JOB_ORDER = (
    "randread-4k-qd1",
    "randread-4k-qd32",
    "randwrite-4k-qd1",
    "randwrite-4k-qd32",
    "seqread-1m",
    "seqwrite-1m",
    "cpu",
    "memory",
    "switch",
)
QUANTITY_ORDER = ("iops", "bw_mib_s", "lat_mean_us", "lat_p99_us", "bogo_ops_per_s")
# settings whose difference changes what a metric measures (repeats only changes how often it is measured)
SUSPECT_SETTINGS = {
    "runtime": "runtime differs: each job ran for a different time",
    "jobs": "jobs differ: the job sets are not the same",
    "direct": "direct differs: one run bypassed the page cache and the other did not",
    "file_size_bytes": "file_size_bytes differs: the jobs covered a different part of the target",
    "stress_workers": "stress_workers differs: stress-ng ran a different number of workers",
}
RUN_SUMMARY_KEYS = ("label", "host", "started", "finished", "target", "settings", "tuning", "versions")


class BenchCompareError(ValueError):
    """Input the comparison cannot be built from; the message names the side, host, label and metric."""


def false_alarm(n: int, m: int) -> float:
    """Chance that n + m exchangeable values split into two non-overlapping ranges: 2 / C(n + m, n), 5 decimals."""
    return round(2.0 / math.comb(n + m, n), 5)


def _plain(value, where: str):
    """A copy made of dict/list/str/int/float/bool/None only (Ansible's tagged and lazy types dropped)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise BenchCompareError(f"{where}: unexpected value of type {type(value).__name__}: {value!r}")


def _load(run, side: str) -> dict:
    if isinstance(run, (str, bytes)):
        try:
            run = json.loads(run)
        except ValueError as e:
            raise BenchCompareError(f"{side} run: not a kvm_benchmark result: the text is not JSON ({e})") from e
    if not isinstance(run, Mapping):
        raise BenchCompareError(f"{side} run: expected a mapping (a kvm_benchmark result), got {type(run).__name__}")
    host, label = run.get("host"), run.get("label")
    where = f"{side} run (host {host}, label {label})"
    for key, value in (("host", host), ("label", label)):
        if not isinstance(value, str) or not value:
            raise BenchCompareError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    run = _plain(run, where)
    if not isinstance(run.get("metrics"), Mapping):
        raise BenchCompareError(f"{where}: metrics: expected a mapping of metric name to its values")
    for key in ("target", "settings", "tuning", "versions"):
        if run.get(key) is None:
            run[key] = {}
        elif not isinstance(run[key], Mapping):
            raise BenchCompareError(f"{where}: {key}: expected a mapping, got {type(run[key]).__name__}")
    for key in ("started", "finished"):
        if run.get(key) is not None and not isinstance(run[key], str):
            raise BenchCompareError(f"{where}: {key}: expected a time string, got {run[key]!r}")
    for name, metric in run["metrics"].items():
        _check_metric(metric, f"{where}: metric {name}")
    return run


def _check_metric(metric, where: str) -> None:
    if not isinstance(metric, Mapping):
        raise BenchCompareError(f"{where}: expected a mapping with unit, higher_is_better and values")
    if not isinstance(metric.get("unit"), str):
        raise BenchCompareError(f"{where}: unit: expected a string, got {metric.get('unit')!r}")
    if not isinstance(metric.get("higher_is_better"), bool):
        raise BenchCompareError(
            f"{where}: higher_is_better: expected true or false, got {metric.get('higher_is_better')!r}"
        )
    values = metric.get("values")
    if not isinstance(values, list):
        raise BenchCompareError(f"{where}: values: expected a list of numbers, got {type(values).__name__}")
    if not values:
        raise BenchCompareError(f"{where}: values: empty, a metric needs at least one value")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BenchCompareError(f"{where}: values[{i}]: {v!r} is not a number")
        if not math.isfinite(v):
            raise BenchCompareError(f"{where}: values[{i}]: {v!r} is not a finite number")
        if v < 0:
            raise BenchCompareError(f"{where}: values[{i}]: {v!r} is negative")


def _check_min_effect(min_effect) -> float:
    if isinstance(min_effect, str):
        try:
            min_effect = float(min_effect)
        except ValueError:
            raise BenchCompareError(f"min_effect: {min_effect!r} is not a number") from None
    if isinstance(min_effect, bool) or not isinstance(min_effect, (int, float)) or not 0 <= min_effect <= 1:
        raise BenchCompareError(f"min_effect: expected a number from 0 to 1 (0.02 is 2%), got {min_effect!r}")
    return float(min_effect)


def side_stats(values: list) -> dict:
    """n, median, min, max and spread ((max - min) / median; None when the median is 0) of one side."""
    values = [float(v) for v in values]
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {
        "n": len(values),
        "median": med,
        "min": lo,
        "max": hi,
        "spread": round((hi - lo) / med, 6) if med else None,
        "values": values,
    }


def judge(before: dict, after: dict, higher_is_better: bool, min_effect: float) -> dict:
    """The verdict of one metric from both sides' stats (see the module docstring for the rule)."""
    overlap = before["min"] <= after["max"] and after["min"] <= before["max"]
    if before["median"]:
        ratio = after["median"] / before["median"]
        effect = abs(ratio - 1)
    else:  # nothing before: any change is infinitely large, none is none
        ratio = None
        effect = math.inf if after["median"] else 0.0
    if before["n"] < MIN_REPEATS or after["n"] < MIN_REPEATS:
        verdict = TOO_FEW
    elif overlap or effect + EPSILON < min_effect:
        verdict = NOISE
    else:
        verdict = BETTER if (after["median"] > before["median"]) == higher_is_better else WORSE
    return {
        "verdict": verdict,
        "ratio": None if ratio is None else round(ratio, 6),
        "change": None if ratio is None else round(ratio - 1, 6),
        "overlap": overlap,
        "false_alarm": false_alarm(before["n"], after["n"]),
    }


def _metric_key(name: str):
    job, _sep, quantity = name.partition(".")
    return (
        JOB_ORDER.index(job) if job in JOB_ORDER else len(JOB_ORDER),
        job,
        QUANTITY_ORDER.index(quantity) if quantity in QUANTITY_ORDER else len(QUANTITY_ORDER),
        quantity,
    )


def _metric(name: str, b, a, min_effect: float, b_where: str, a_where: str) -> dict:
    job, _sep, quantity = name.partition(".")
    one = b if b is not None else a
    entry = {
        "metric": name,
        "job": job,
        "quantity": quantity,
        "unit": one["unit"],
        "higher_is_better": one["higher_is_better"],
        "before": None,
        "after": None,
        "verdict": MISSING_BEFORE if b is None else MISSING_AFTER,
        "ratio": None,
        "change": None,
        "overlap": None,
        "false_alarm": None,
    }
    if b is None or a is None:
        side = "after" if b is None else "before"
        entry[side] = side_stats(one["values"])
        return entry
    for key in ("unit", "higher_is_better"):
        if a[key] != b[key]:
            raise BenchCompareError(
                f"metric {name}: {key} is {b[key]!r} in {b_where} but {a[key]!r} in {a_where}: not the same quantity"
            )
    entry["before"], entry["after"] = side_stats(b["values"]), side_stats(a["values"])
    entry.update(judge(entry["before"], entry["after"], b["higher_is_better"], min_effect))
    return entry


def _diff(before: dict, after: dict) -> dict:
    return {
        k: {"before": before.get(k), "after": after.get(k)}
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    }


def _warnings(b: dict, a: dict, settings_diff: dict) -> list:
    out = []
    if b["host"] != a["host"]:
        out.append(f"host differs: the runs come from {b['host']} and {a['host']}")
    for key, text in SUSPECT_SETTINGS.items():
        if key in settings_diff:
            d = settings_diff[key]
            out.append(f"{text} ({d['before']!r} before, {d['after']!r} after): the comparison is suspect")
    for key in sorted(settings_diff):
        if key not in SUSPECT_SETTINGS and key != "repeats":
            d = settings_diff[key]
            out.append(f"{key} differs ({d['before']!r} before, {d['after']!r} after): the comparison is suspect")
    target_diff = _diff(b["target"], a["target"])
    if target_diff:
        what = ", ".join(f"{k} {d['before']!r} -> {d['after']!r}" for k, d in target_diff.items())
        out.append(f"the target differs ({what}): the runs did not measure the same storage")
    versions_diff = _diff(b["versions"], a["versions"])
    if versions_diff:
        what = ", ".join(f"{k} {d['before']!r} -> {d['after']!r}" for k, d in versions_diff.items())
        out.append(f"tool versions differ ({what}): part of a change may be the tools'")
    return out


def compare(before, after, min_effect=0.02) -> dict:
    """One host's comparison (schema version 1) of two kvm_benchmark runs; see the module docstring."""
    min_effect = _check_min_effect(min_effect)
    b, a = _load(before, "before"), _load(after, "after")
    b_where = f"before run (host {b['host']}, label {b['label']})"
    a_where = f"after run (host {a['host']}, label {a['label']})"
    names = sorted(set(b["metrics"]) | set(a["metrics"]), key=_metric_key)
    metrics = [
        _metric(name, b["metrics"].get(name), a["metrics"].get(name), min_effect, b_where, a_where) for name in names
    ]
    counts = dict.fromkeys(VERDICTS, 0)
    for m in metrics:
        counts[m["verdict"]] += 1
    settings_diff = _diff(b["settings"], a["settings"])
    return {
        "schema_version": SCHEMA_VERSION,
        "host": a["host"],
        "before": {k: b.get(k) for k in RUN_SUMMARY_KEYS},
        "after": {k: a.get(k) for k in RUN_SUMMARY_KEYS},
        "min_effect": min_effect,
        "counts": counts,
        "metrics": metrics,
        "tuning_diff": _diff(b["tuning"], a["tuning"]),
        "settings_diff": settings_diff,
        "warnings": _warnings(b, a, settings_diff),
    }
