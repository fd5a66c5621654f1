# Test-only callback: appends one JSON line per playbook run to $KVMOPS_CHANGED_LOG with the
# playbook, whether it ran in check mode, and each host's changed tasks and handlers (in order), for
# the whole run ("changed") and for each play by its name ("plays": every play that ran, with no
# hosts when it changed nothing), so a verifier can compare a check run's predictions with the real
# run that followed, and hold each play of a playbook to what it may change.
# Shared by the molecule scenarios (ANSIBLE_CALLBACK_PLUGINS=.../shared/callback_plugins).
from __future__ import annotations

import json
import os

from ansible import context
from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kvmops_changed_tasks
type: aggregate
short_description: record changed tasks per playbook run (tests only)
description: Appends {playbook, check, changed, plays} to the file named by KVMOPS_CHANGED_LOG.
requirements: [enable in callbacks_enabled]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kvmops_changed_tasks"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._playbook = None
        self._changed = {}
        self._plays = {}
        self._play = {}

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(playbook._file_name)

    def v2_playbook_on_play_start(self, play):
        self._play = self._plays.setdefault(play.get_name(), {})

    def v2_runner_on_ok(self, result):
        if not result._result.get("changed"):
            return
        kind = "handler" if isinstance(result._task, Handler) else "task"
        entry = f"{kind}: {result._task.get_name()}"
        for record in (self._changed, self._play):
            changed = record.setdefault(result._host.get_name(), [])
            if entry not in changed:
                changed.append(entry)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("KVMOPS_CHANGED_LOG")
        if not path:
            return
        record = {
            "playbook": self._playbook,
            "check": bool(context.CLIARGS.get("check")),
            "changed": self._changed,
            "plays": self._plays,
        }
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
