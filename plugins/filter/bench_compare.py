# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.plugin_utils._bench_compare import BenchCompareError, compare

DOCUMENTATION = r"""
name: bench_compare
short_description: Compare two labelled benchmark runs of one host, metric by metric
version_added: 0.1.0
author:
  - kvmops.fleet contributors (@kvmops)
description:
  - Compares two results of M(kvmops.fleet.kvm_benchmark) of the same host, an earlier run (the input) and a later
    one (O(after)), and says for each metric whether it got V(better), V(worse) or stayed V(within noise).
  - >-
    For each metric in both runs, with n and m the number of repeats of each side: the median, minimum, maximum and
    spread, (max - min) / median, of each side, and the ratio C(after median / before median).
  - "The verdict is V(better) or V(worse) only when the two ranges C([min, max]) do not overlap (ranges that touch
    overlap) B(and) C(|ratio - 1| >= min_effect) (a change of exactly O(min_effect) counts); the direction comes from
    the metric's C(higher_is_better) (for latencies lower is better). Otherwise the verdict is V(within noise)."
  - "When either side has fewer than 3 values the verdict is V(too few repeats), whatever the ranges say."
  - >-
    Why ranges: when the repeats are pure noise (every ordering of the n + m values equally likely), the two
    ranges are apart only when all values of one side lie below all values of the other, 2 of the comb(n + m, n)
    (the binomial coefficient) equally likely splits. That chance, 2 / comb(n + m, n), is returned per metric as
    RV(_value.metrics[].false_alarm) (rounded to 5 decimals): V(0.1) for 3 + 3 repeats, V(0.02857) for 4 + 4,
    V(0.00794) for 5 + 5. Ties only lower it. O(min_effect) then keeps a change too small to matter from being
    called one.
  - A metric that only one run has gets the verdict V(missing in before) or V(missing in after).
  - >-
    RV(_value.tuning_diff) and RV(_value.settings_diff) list the keys of the runs' C(tuning) and C(settings)
    whose values differ, with both values. A difference in the settings other than C(repeats) (for example
    C(runtime) or C(jobs)), in the target, the host or the versions of fio and stress-ng adds a line to
    RV(_value.warnings): the runs did not measure the same thing and the comparison is suspect.
  - The metrics are sorted by job (in kvm_benchmark's job order) and quantity, so the same runs give the same
    comparison.
  - >-
    Input that is not a run is refused with an error naming the side, host, label and metric, for example
    "before run (host hv1, label before): metric seqread-1m.iops: values[2]: nan is not a finite number": a run that
    is not a mapping (or JSON text of one), has no C(metrics) mapping, a metric whose values are empty or not finite
    non-negative numbers, a metric whose C(unit) or C(higher_is_better) differs between the runs.
  - Runs on the controller. The C(kvmops.fleet.tuning) role's C(benchmark) entry point writes the comparisons of
    every host as JSON, Markdown and HTML.
positional: _input, after
options:
  _input:
    description:
      - The earlier run, the result of M(kvmops.fleet.kvm_benchmark) (its C(benchmark) return value), or the text of
        the JSON file the C(kvmops.fleet.tuning) role keeps it in.
      - "Read keys: C(label), C(host), C(started), C(finished), C(target), C(settings), C(tuning), C(versions) and
        C(metrics) (C({\"JOB.QUANTITY\": {unit, higher_is_better, values}})); other keys (C(raw)) are ignored."
    type: raw
    required: true
  after:
    description:
      - The later run, in the same form as the input.
    type: raw
    required: true
  min_effect:
    description:
      - The smallest relative change of a median called V(better) or V(worse), from V(0) to V(1); V(0.02) is 2%.
    type: float
    default: 0.02
seealso:
  - module: kvmops.fleet.kvm_benchmark
"""

EXAMPLES = r"""
- name: Compare this host's run 'after' with its run 'before'
  ansible.builtin.set_fact:
    comparison: >-
      {{ lookup('ansible.builtin.file', 'kvmops-benchmark/' ~ inventory_hostname ~ '/before.json')
         | kvmops.fleet.bench_compare(lookup('ansible.builtin.file',
                                             'kvmops-benchmark/' ~ inventory_hostname ~ '/after.json'),
                                      min_effect=0.05) }}
  delegate_to: localhost

- name: Name what got worse
  ansible.builtin.debug:
    msg: >-
      {{ comparison.metrics | selectattr('verdict', 'equalto', 'worse')
         | map(attribute='metric') | join(', ') or 'nothing got worse' }}
"""

RETURN = r"""
_value:
  description: One host's comparison, schema version 1.
  type: dict
  contains:
    schema_version:
      description: Version of this schema; raised only on incompatible changes. New keys may appear within a version.
      type: int
      sample: 1
    host:
      description: The host of the later run (C(host) of O(after)).
      type: str
      sample: hv1
    before:
      description: The earlier run, without its metrics and raw output.
      type: dict
      contains:
        label:
          description: The run's label.
          type: str
          sample: before
        host:
          description: The host the run says it ran on.
          type: str
          sample: hv1
        started:
          description: When the run started (as the run says), or V(null).
          type: str
          sample: '2026-12-01T10:00:00Z'
        finished:
          description: When the run finished (as the run says), or V(null).
          type: str
          sample: '2026-12-01T10:03:40Z'
        target:
          description: What the fio jobs ran on (kind, path, size_bytes, device), as the run says.
          type: dict
          sample: {kind: device, path: /dev/vdb, size_bytes: 268435456, device: vdb}
        settings:
          description: The run's settings (runtime, repeats, jobs, direct, file_size_bytes, stress_workers).
          type: dict
        tuning:
          description: The tuning state at the time of the run (scheduler, read_ahead_kb, nr_requests, THP, KSM, ...).
          type: dict
        versions:
          description: The versions of fio and stress-ng.
          type: dict
          sample: {fio: "3.33", stress-ng: 0.15.06}
    after:
      description: The later run, without its metrics and raw output; the same keys as RV(_value.before).
      type: dict
      contains:
        label:
          description: The run's label.
          type: str
          sample: after
        host:
          description: The host the run says it ran on.
          type: str
        started:
          description: When the run started, or V(null).
          type: str
        finished:
          description: When the run finished, or V(null).
          type: str
        target:
          description: What the fio jobs ran on.
          type: dict
        settings:
          description: The run's settings.
          type: dict
        tuning:
          description: The tuning state at the time of the run.
          type: dict
        versions:
          description: The versions of fio and stress-ng.
          type: dict
    min_effect:
      description: The O(min_effect) the verdicts were made with.
      type: float
      sample: 0.02
    counts:
      description:
        - How many metrics got each verdict; all six keys always (V(better), V(worse), V(within noise),
          V(too few repeats), V(missing in before), V(missing in after)).
      type: dict
      sample: {better: 4, worse: 1, within noise: 25, too few repeats: 0, missing in before: 0, missing in after: 0}
    metrics:
      description: Every metric of either run, sorted by job and quantity.
      type: list
      elements: dict
      contains:
        metric:
          description: The metric's name, C(JOB.QUANTITY).
          type: str
          sample: randread-4k-qd32.iops
        job:
          description: The job part of the name.
          type: str
          sample: randread-4k-qd32
        quantity:
          description: The quantity part of the name.
          type: str
          sample: iops
        unit:
          description: The unit of the values.
          type: str
          sample: IO/s
        higher_is_better:
          description: Whether a higher value is better (V(false) for latencies).
          type: bool
        before:
          description:
            - The earlier run's values and their statistics; V(null) when the metric is missing in it.
          type: dict
          contains:
            n:
              description: Number of values (repeats).
              type: int
              sample: 4
            median:
              description: Median of the values (the mean of the middle two for an even number).
              type: float
              sample: 100.5
            min:
              description: Smallest value.
              type: float
              sample: 98.0
            max:
              description: Largest value.
              type: float
              sample: 102.0
            spread:
              description: (max - min) / median, rounded to 6 decimals; V(null) when the median is 0.
              type: float
              sample: 0.039801
            values:
              description: The values, in the run's order.
              type: list
              elements: float
        after:
          description:
            - The later run's values and their statistics (the keys of RV(_value.metrics[].before)); V(null) when the
              metric is missing in it.
          type: dict
          contains:
            n:
              description: Number of values (repeats).
              type: int
            median:
              description: Median of the values.
              type: float
            min:
              description: Smallest value.
              type: float
            max:
              description: Largest value.
              type: float
            spread:
              description: (max - min) / median, rounded to 6 decimals; V(null) when the median is 0.
              type: float
            values:
              description: The values, in the run's order.
              type: list
              elements: float
        verdict:
          description: The verdict by the rule in the description.
          type: str
          choices: [better, worse, within noise, too few repeats, missing in before, missing in after]
        ratio:
          description:
            - C(after median / before median), rounded to 6 decimals.
            - V(null) when a side is missing or the earlier median is 0.
          type: float
          sample: 1.199005
        change:
          description: The ratio minus 1, rounded to 6 decimals (V(0.199005) is +19.9%); V(null) when the ratio is.
          type: float
          sample: 0.199005
        overlap:
          description: Whether the two ranges C([min, max]) overlap (or touch); V(null) when a side is missing.
          type: bool
        false_alarm:
          description:
            - >-
              2 / comb(n + m, n) (comb is the binomial coefficient) rounded to 5 decimals: the chance that pure
              noise puts the two ranges apart (V(0.1) for 3 + 3 repeats, V(0.02857) for 4 + 4, V(0.00794) for
              5 + 5).
            - V(null) when a side is missing.
          type: float
          sample: 0.02857
    tuning_diff:
      description:
        - The keys of the runs' C(tuning) whose values differ, each with C(before) and C(after) (V(null) where a run
          lacks the key), sorted by key. Empty when the recorded tuning is the same.
      type: dict
      sample: {scheduler: {before: mq-deadline, after: none}, thp_enabled: {before: always, after: madvise}}
    settings_diff:
      description: The keys of the runs' C(settings) whose values differ, as in RV(_value.tuning_diff).
      type: dict
      sample: {runtime: {before: 5, after: 10}}
    warnings:
      description:
        - Why the comparison is suspect, one line each; empty when the runs measured the same thing the same way.
        - A different host, a difference in C(settings) other than C(repeats), a different target, different tool
          versions.
      type: list
      elements: str
      sample: ["runtime differs: each job ran for a different time (5 before, 10 after): the comparison is suspect"]
"""


def bench_compare(before, after, min_effect=0.02):
    try:
        return compare(before, after, min_effect=min_effect)
    except BenchCompareError as e:
        raise AnsibleFilterError(f"kvmops.fleet.bench_compare: {e}") from e


class FilterModule:
    def filters(self):
        return {"bench_compare": bench_compare}
