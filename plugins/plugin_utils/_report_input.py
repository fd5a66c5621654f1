# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shape of what the fleet filters are given, checked before any work. Controller side, pure.

``check_results`` checks ``{host: registered kvm_pause_facts result or None}`` (the input of
kvmops.fleet.fleet_report); ``check_report`` checks a fleet report (the input of kvmops.fleet.fleet_summary).
Both raise ``ReportInputError`` naming the host and the field, for example
``host hv-a: ansible_facts.kvm_pause.paused[0] (web-01): cause: missing`` or
``host hv-a: ansible_facts.kvm_pause.errors: expected a list of str, got str``, so a malformed result never
surfaces as a bare KeyError, an AttributeError, or a string iterated one character at a time.

The shapes below follow kvm_pause_facts' RETURN and the fleet report's schema 1. A field the report or its
consumers read must be present; every other known field is checked only when present; unknown fields are
left alone (new keys may appear within a schema version).

A spec is one of: a type name (``str``, ``int``, ``num``, ``bool``, ``map``, ``any``), with a trailing ``?``
when V(null) is allowed; a one-item list ``[spec]`` (a list of such values); a tuple ``("map", spec)`` (a
mapping of str to such values); a dict ``{field: spec}`` (a mapping with these fields; a field name ending in
``?`` may be missing). A dict spec with the key ``"?"`` set to True may be V(null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SCHEMA_VERSION = 1
STATUSES = ("diagnosed", "unreachable", "libvirt_failed", "not_diagnosed")


class ReportInputError(ValueError):
    """Input of a fleet filter that does not have the documented shape; the message names host and field."""


DISK = {
    "target?": "str?",
    "type?": "str?",
    "device?": "str?",
    "source?": "str?",
    "format?": "str?",
    "error?": "str?",
    "error_code?": "int?",
    "capacity?": "num?",
    "allocation?": "num?",
    "physical?": "num?",
    "filesystem?": "map?",
    "block_device?": "map?",
    "endpoints?": ["map"],
    "pool?": "map?",
    "thin_pool?": "map?",
    "storage_unresponsive?": "map?",
}
PAUSED = {
    "name": "str",
    "cause": "str",
    "uuid?": "str?",
    "state?": "str",
    "state_code?": "int?",
    "reason?": "str?",
    "reason_code?": "int?",
    "severity?": "str?",
    "summary?": "str?",
    "findings?": ["str"],
    "remediation?": ["str"],
    "safe_to_resume?": "bool",
    "safe_to_resume_reason?": "str?",
    "responsive?": "bool",
    "unresponsive_reason?": "str?",
    "source?": "str?",
    "paused_since?": "str?",
    "paused_for_seconds?": "num?",
    "paused_since_source?": "str?",
    "disks?": [DISK],
    "job?": "map?",
    "control?": "map?",
    "watchdog_action?": "str?",
    "on_lockfailure?": "str?",
    "on_crash?": "str?",
    "log?": {"?": True, "path?": "str?", "lines?": ["str"]},
    "errors?": ["str"],
}
UNRESPONSIVE = {
    "name": "str",
    "uuid?": "str?",
    "state?": "str?",
    "reason?": "str?",
    "job?": "str?",
    "job_seconds?": "num?",
    "message?": "str?",
    "queried?": "bool",
}
HOST_SUMMARY = {
    "?": True,
    "total?": "int",
    "running?": "int",
    "paused?": "int",
    "crashed?": "int",
    "shutoff?": "int",
    "other?": "int",
    "unresponsive?": "int",
    "safe_to_resume?": "int",
    "storage_unresponsive?": "int",
    "at_risk?": "int",
    "by_cause?": ("map", "int"),
}
KVM_PAUSE = {
    "schema_version": "int",
    "uri?": "str?",
    "collected_at?": "str?",
    "duration_seconds?": "num?",
    "complete?": "bool",
    "collection?": "str?",
    "summary?": HOST_SUMMARY,
    "paused?": [PAUSED],
    "unresponsive?": [UNRESPONSIVE],
    "running?": ["map"],
    "storage_unresponsive?": [{"domains?": ["map"], "mount_point?": "str?", "source?": "str?", "fstype?": "str?"}],
    "errors?": ["str"],
    "warnings?": ["str"],
    "drbd?": {"loaded": "bool", "resources?": ["map"], "errors?": ["str"]},
}
REPORT_HOST = {
    "name": "str",
    "status": "str",
    "complete": "bool",
    "message?": "str",
    "errors?": ["str"],
    "warnings?": ["str"],
    "summary?": HOST_SUMMARY,
    "paused": [PAUSED],
    "unresponsive?": [UNRESPONSIVE],
    "drbd?": {"?": True, "resources": ["map"], "summary?": "map", "errors?": ["str"]},
}
REPORT = {
    "schema_version": "int",
    "generated_at": "str",
    "state_digest?": "str?",
    "summary": {
        "by_cause?": ("map", "int"),
        "by_severity?": ("map", "int"),
        # the counts (COUNT_KEYS of _fleet_report) are checked in check_report, from that one list
    },
    "hosts": [REPORT_HOST],
    "causes?": ["map"],
    "drbd?": ["map"],
}


def kind(value) -> str:
    """A value's kind as the messages name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _describe(spec) -> str:
    if isinstance(spec, str):
        base = spec.rstrip("?")
        text = {"num": "a number", "int": "an integer", "map": "a mapping", "bool": "a bool", "str": "a str"}.get(
            base, base
        )
        return text + (" or null" if spec.endswith("?") else "")
    if isinstance(spec, list):
        inner = spec[0]
        if isinstance(inner, dict) or inner in ("map", "map?"):
            return "a list of mappings"
        return f"a list of {inner.rstrip('?')}"
    if isinstance(spec, tuple):
        return "a mapping of str to " + _describe(spec[1])
    return "a mapping" + (" or null" if spec.get("?") else "")


def _fits(value, base: str) -> bool:
    if base == "any":
        return True
    if base == "str":
        return isinstance(value, str)
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if base == "map":
        return isinstance(value, Mapping)
    raise ValueError(f"unknown spec {base!r}")  # a bug in the specs above, not in the input


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _problem(value, spec, path: str, domain: str) -> ReportInputError:
    """The error for ``value`` not fitting ``spec`` at ``path`` (built only when a check fails)."""
    where = f" (domain {domain})" if domain else ""
    got = repr(value) if isinstance(value, float) and isinstance(spec, str) else kind(value)
    return ReportInputError(f"{path}: expected {_describe(spec)}, got {got}{where}")


def check(value, spec, path: str, domain: str = "") -> None:
    """Raise ReportInputError("<path>: ...") when ``value`` does not fit ``spec`` (see the module docstring).

    ``domain``: the name of the paused or unresponsive entry the path is in, added to the message. Paths and
    messages are built only on failure: a fleet of 100 hosts x 100 paused domains is about a million values."""
    if isinstance(spec, str):
        if value is None and spec[-1] == "?":
            return
        if not _fits(value, spec.rstrip("?")):
            raise _problem(value, spec, path, domain)
        return
    if value is None and isinstance(spec, dict) and spec.get("?"):
        return
    if isinstance(spec, list):
        # a str is a sequence too: refuse it here, or it would be read one character at a time
        if not isinstance(value, (list, tuple)):
            raise _problem(value, spec, path, domain)
        named = spec[0] is PAUSED or spec[0] is UNRESPONSIVE
        for i, item in enumerate(value):
            name = item.get("name") if named and isinstance(item, Mapping) else None
            check(item, spec[0], f"{path}[{i}]", name if isinstance(name, str) else domain)
        return
    if not isinstance(value, Mapping):
        raise _problem(value, spec, path, domain)
    if isinstance(spec, tuple):
        for key, item in value.items():
            if not isinstance(key, str):
                where = f" (domain {domain})" if domain else ""
                raise ReportInputError(f"{path}: expected str keys, got {kind(key)} {key!r}{where}")
            check(item, spec[1], _join(path, key), domain)
        return
    for name, optional, inner in _fields(spec):
        if name not in value:
            if not optional:
                where = f" (domain {domain})" if domain else ""
                raise ReportInputError(f"{_join(path, name)}: missing{where}")
            continue
        check(value[name], inner, _join(path, name), domain)


_FIELDS = {}


def _fields(spec: dict) -> list:
    """``spec``'s fields as (name, optional, inner), computed once per spec."""
    cached = _FIELDS.get(id(spec))
    if cached is None or cached[0] is not spec:  # the spec is kept alive with its entry, so ids are not reused
        cached = (spec, [(f.rstrip("?"), f.endswith("?"), inner) for f, inner in spec.items() if f != "?"])
        _FIELDS[id(spec)] = cached
    return cached[1]


def registered_facts(results: Mapping, fact: str, prefix: str = ""):
    """``(where, value)`` for each host of ``results`` (``{host: registered result or None}``) whose result holds
    ``ansible_facts[fact]``, checked to be mappings on the way (``where``: ``<prefix>host <name>``, for messages).
    Hosts without the fact (no result, unreachable, failed, skipped, no facts) are left out: the report names them."""
    for host, result in results.items():
        where = f"{prefix}host {host}"
        if result is None:
            continue
        if not isinstance(result, Mapping):
            raise ReportInputError(
                f"{where}: expected the registered task result (a mapping) or null, got {kind(result)}"
            )
        if result.get("unreachable") or result.get("failed") or result.get("skipped"):
            continue  # only the message is read, as text
        facts = result.get("ansible_facts")
        if facts is None:
            continue
        if not isinstance(facts, Mapping):
            raise ReportInputError(f"{where}: ansible_facts: expected a mapping, got {kind(facts)}")
        if fact not in facts:
            continue
        value = facts[fact]
        if not isinstance(value, Mapping):
            raise ReportInputError(f"{where}: ansible_facts.{fact}: expected a mapping, got {kind(value)}")
        yield where, value


def check_results(results) -> None:
    """The input of kvmops.fleet.fleet_report: ``{host: registered kvm_pause_facts result or None}``."""
    if not isinstance(results, Mapping):
        raise ReportInputError(
            f"the input must be a mapping of host name to the registered kvm_pause_facts result, not a {kind(results)}"
        )
    for where, pause in registered_facts(results, "kvm_pause"):
        if pause.get("schema_version") != SCHEMA_VERSION:
            continue  # the report builder names the schema version it cannot read
        try:
            check(pause, KVM_PAUSE, "ansible_facts.kvm_pause")
        except ReportInputError as e:
            raise ReportInputError(f"{where}: {e}") from None


def check_report(report, count_keys=()) -> None:
    """The input of kvmops.fleet.fleet_summary: a fleet report of schema version 1 (``count_keys``: the
    summary's counts, each an integer when present)."""
    if not isinstance(report, Mapping) or report.get("schema_version") != SCHEMA_VERSION:
        raise ReportInputError(
            f"the input must be a fleet report (schema_version {SCHEMA_VERSION}) made by kvmops.fleet.fleet_report"
        )
    top = {field: spec for field, spec in REPORT.items() if field != "hosts"}
    check(report, top, "report")
    for key in count_keys:
        if key in report["summary"]:
            check(report["summary"][key], "int", f"report.summary.{key}")
    if "hosts" not in report:
        raise ReportInputError("report.hosts: missing")
    hosts = report["hosts"]
    if not isinstance(hosts, (list, tuple)):
        raise ReportInputError(f"report.hosts: expected a list of mappings, got {kind(hosts)}")
    for i, host in enumerate(hosts):
        name = host.get("name") if isinstance(host, Mapping) else None
        where = f"host {name}" if isinstance(name, str) else f"report.hosts[{i}]"
        if not isinstance(host, Mapping):
            raise ReportInputError(f"{where}: expected a mapping, got {kind(host)}")
        try:
            check(host, REPORT_HOST, "")
        except ReportInputError as e:
            raise ReportInputError(f"{where}: {e}") from None
        if host["status"] not in STATUSES:
            raise ReportInputError(f"{where}: status: expected one of {', '.join(STATUSES)}, got {host['status']!r}")
