# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark-only callback: timestamps of every task and of every host's result, written as JSON.

Enabled by benchmarks/bench_fleet.py (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED=kvmops_timing); the
file is named by KVMOPS_TIMING_OUT. Per task: when the controller started it, when each host's result arrived
(monotonic seconds from the playbook start) and, for results carrying ansible_facts.kvm_pause, the module's own
duration_seconds and the JSON size of the result (measured on the first 3 hosts only, so as not to add work).
At the end: the controller process's CPU seconds (user + system) and peak RSS."""

from __future__ import annotations

import json
import os
import resource
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: kvmops_timing
type: aggregate
short_description: Benchmark timestamps (kvmops.fleet benchmarks only)
description:
  - Writes task and per-host result timestamps to the file named by E(KVMOPS_TIMING_OUT).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kvmops_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.t0 = time.monotonic()
        self.tasks = []
        self.sized = 0

    def _now(self):
        return round(time.monotonic() - self.t0, 4)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks.append({"name": task.get_name(), "start": self._now(), "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_runner_on_start(self, host, task):
        if self.tasks:
            self.tasks[-1]["hosts"][host.get_name()] = {"start": self._now()}

    def _result(self, result, status):
        if not self.tasks:
            return
        rec = self.tasks[-1]["hosts"].setdefault(result._host.get_name(), {})
        rec.update(end=self._now(), status=status)
        res = result._result
        facts = res.get("ansible_facts") if isinstance(res, dict) else None
        pause = facts.get("kvm_pause") if isinstance(facts, dict) else None
        if isinstance(pause, dict):
            rec["module_seconds"] = pause.get("duration_seconds")
            if self.sized < 3:
                self.sized += 1
                rec["result_bytes"] = len(json.dumps(res, default=str))

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        out = os.environ.get("KVMOPS_TIMING_OUT")
        if not out:
            return
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "end": self._now(),
                    "controller_cpu": me.ru_utime + me.ru_stime,
                    "controller_maxrss_kib": me.ru_maxrss,
                    "children_cpu": kids.ru_utime + kids.ru_stime,
                    "tasks": self.tasks,
                },
                fh,
            )
