# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shape of the pause-risk forecasts given to kvmops.fleet.fleet_report (its ``risks`` option), checked
before any work. Controller side, pure.

``check_risk_results`` checks ``{host: registered kvm_pause_risk result or None}`` with the same spec language
and messages as ``_report_input.check`` (a field the report reads must be present; others are checked when
present; unknown fields are left alone), so a malformed result names the host and the field, for example
``host hv-a: ansible_facts.kvm_pause_risk.storages[0].would_pause: expected a list of str, got str``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.kvmops.fleet.plugins.plugin_utils._report_input import (
    ReportInputError,
    check,
    kind,
    registered_facts,
)

RISK_SCHEMA_VERSION = 1

STORAGE = {
    "key": "str",
    "kind?": "str?",
    "name": "str",
    "total_bytes?": "int?",
    "free_bytes": "int?",
    "remaining_growth_bytes": "int",
    "headroom_bytes": "int?",
    "overcommitted": "bool",
    "severity": "str?",
    "would_pause": ["str"],
    "would_see_errors": ["str"],
    "would_drop_writes?": ["str"],
    "can_fill_alone?": ["str"],
    "actions": ["str"],
}
RISK = {
    "kind": "str",
    "severity": "str",
    "storage?": "str?",
    "domains": ["str"],
    "summary": "str",
    "headroom_bytes?": "int?",
    "first_to_pause?": "str?",
    "actions": ["str"],
}
KVM_PAUSE_RISK = {
    "schema_version": "int",
    "complete?": "bool",
    "errors?": ["str"],
    "warnings?": ["str"],
    "collected_at?": "str?",
    "summary": {"at_risk_domains": ["str"]},
    "storages": [STORAGE],
    "risks": [RISK],
}


def check_risk_results(risks) -> None:
    """The ``risks`` input of kvmops.fleet.fleet_report: ``{host: registered kvm_pause_risk result or None}``."""
    if not isinstance(risks, Mapping):
        raise ReportInputError(
            f"risks: expected a mapping of host name to the registered kvm_pause_risk result, not a {kind(risks)}"
        )
    for where, forecast in registered_facts(risks, "kvm_pause_risk", "risks: "):
        if forecast.get("schema_version") != RISK_SCHEMA_VERSION:
            raise ReportInputError(
                f"{where}: ansible_facts.kvm_pause_risk.schema_version: expected {RISK_SCHEMA_VERSION}, "
                f"got {forecast.get('schema_version')!r}"
            )
        try:
            check(forecast, KVM_PAUSE_RISK, "ansible_facts.kvm_pause_risk")
        except ReportInputError as e:
            raise ReportInputError(f"{where}: {e}") from None
