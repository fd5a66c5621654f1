# Test-only callback: appends one JSON line per playbook run to $KVMOPS_CUSTOM_STATS_LOG with the
# playbook and the custom stats set_stats published (what AWX / Automation Controller keeps as the
# job's artifacts), so the verifier can read kvmops_fleet_summary as a job template would.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kvmops_custom_stats
type: aggregate
short_description: record set_stats data per playbook run (tests only)
description: Appends {playbook, custom} to the file named by KVMOPS_CUSTOM_STATS_LOG.
requirements: [enable in callbacks_enabled]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kvmops_custom_stats"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._playbook = None

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(playbook._file_name)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("KVMOPS_CUSTOM_STATS_LOG")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"playbook": self._playbook, "custom": stats.custom}) + "\n")
