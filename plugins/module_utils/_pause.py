# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deprecated import path: the diagnosis lives in ``pause/_diagnose.py`` (PURE).

Kept only for code outside plugins/module_utils that still imports ``module_utils._pause``
(plugins/plugin_utils/_fleet_report.py, tests/browser/fixture.py, tests/unit/plugins/filter); remove it
once they import ``module_utils.pause._diagnose`` and ``module_utils.common._states``. Nothing is defined
here but ``REASONS`` in its old shape (code -> reason name, default cause, severity), derived from the one
table of each.
"""

from __future__ import annotations

from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import (
    DISK_ERRORS,
    PAUSED_REASON_KEYS,
    reason_name,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._diagnose import (
    CAUSES,
    RULES,
    SEVERITY,
    diagnose,
)

REASONS = {code: (name, RULES[name][0], SEVERITY[RULES[name][0]]) for code, name in enumerate(PAUSED_REASON_KEYS)}

__all__ = ["CAUSES", "DISK_ERRORS", "REASONS", "SEVERITY", "diagnose", "reason_name"]
