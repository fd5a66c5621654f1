# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: how every module checks its options before it connects, reads or allocates anything.

A module declares one rule per option next to its argument spec, keyed by the option's path::

    RULES = {
        "uri": Text(LIBVIRT_URI),
        "timeout": Float(0, 3600, "...", low_open=True),
        "vcpupin": Unique(("vcpu",)),
        "vcpupin[].vcpu": Int(0, CPUMASK_LEN - 1, "..."),
        "vcpupin[].cpuset": Cpuset(),
        "interfaces[].bandwidth.inbound.average": Int(0, UINT_MAX, "..."),
    }

Paths are dotted suboptions; ``[]`` stands for the elements of a list. ``check(params, spec, rules)`` walks
the module's params along its argument spec and applies the rules; the first value that breaks its rule
raises ``OptionError`` whose message starts with the option's path, list indexes filled in
(``interfaces[0].bandwidth.inbound.average: ...``). ``unruled(spec, rules)`` lists the options that have no
rule and the rules that name no option: the unit tests fail on either, so a new option cannot skip this.
Options that need no rule: ``type: bool`` and options with ``choices`` (Ansible checks both completely).

What depends on the host or the domain (a CPU that does not exist, a vCPU the domain lacks) is checked by the
module's planner after reading them, still before anything is changed; these rules bound everything first,
so that nothing a user types can make the module allocate without limit.

No I/O and no ansible imports: unit-tested on literals (Python 3.9 without ansible).
"""

from __future__ import annotations

import math
import re

# libvirt parses every cpuset and nodeset of a domain into a bitmap of this many bits
# (VIR_DOMAIN_CPUMASK_LEN, src/conf/domain_conf.h): a larger CPU or node number is refused by libvirt
CPUMASK_LEN = 16384
# the longest cpuset text accepted: every CPU of a CPUMASK_LEN host listed one by one ("0,1,2,...,16383")
CPUSET_MAX_CHARS = 5 * CPUMASK_LEN
UINT_MAX = 2**32 - 1
TEXT_MAX_CHARS = 4096
# the longest a task may wait for libvirt or a tool: an hour (select() and time.sleep() overflow on values far
# beyond it, NaN makes them raise); common/_libvirt_io.TIMEOUT_MAX is the same number
TIMEOUT_MAX = 3600


class OptionError(ValueError):
    """An option's value breaks its rule; the message starts with the option's path."""


class CpusetError(OptionError):
    """A cpuset/nodeset string is not valid libvirt syntax or names a CPU/node beyond the limit."""


# ---- cpuset syntax ("0-3,^2,8"): libvirt's virBitmapParse, bounded before anything is expanded ---------------

# One part: N, ^N or N-M; ASCII digits only (libvirt tests g_ascii_isdigit), blanks around '-' and ','
# as libvirt's virSkipSpaces allows. Python's int() would also take "1_0", "+1" and non-ASCII digits (U+0661):
# libvirt refuses those, so they never reach int().
_PART = re.compile(r"^[ \t\n\v\f\r]*(\^)?([0-9]+)(?:[ \t\n\v\f\r]*-[ \t\n\v\f\r]*([0-9]+))?[ \t\n\v\f\r]*$")


def parse_cpuset(text, what: str = "cpuset", limit: int = CPUMASK_LEN, unit: str = "CPU", existing=None) -> list:
    """libvirt cpuset syntax -> sorted list of ints, every number checked against ``limit`` BEFORE any range is
    expanded (memory and time are bounded by ``limit``, never by the numbers typed).

    ``limit``: numbers must be below it (libvirt's own CPUMASK_LEN by default; the host's highest CPU + 1 when
    the host is known). ``existing``: the ids that exist (for the message: "host CPUs: 0-31"). Raises
    CpusetError naming ``what``.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text.strip():
        raise CpusetError(f"{what}: empty cpuset")
    if len(text) > CPUSET_MAX_CHARS:
        raise CpusetError(f"{what}: cpuset of {len(text)} characters is longer than {CPUSET_MAX_CHARS}")
    ranges, exclude = [], []
    for raw in text.split(","):
        m = _PART.match(raw)
        if m is None or (m.group(1) and m.group(3) is not None):
            why = "an exclusion must name a single number" if m is not None else f"bad part {raw!r}"
            raise CpusetError(f"{what}: {text!r} is not a valid cpuset (expected e.g. '0-3,^2,8'; {why})")
        # leading zeros dropped and the length compared first: a number of thousands of digits is never converted
        digits = [d.lstrip("0") or "0" for d in (m.group(2), m.group(3)) if d is not None]
        for d in digits:
            if len(d) > len(str(limit)) or int(d) >= limit:
                raise CpusetError(f"{what}: {_beyond(d, limit, unit, existing)}")
        lo = int(digits[0])
        hi = int(digits[-1])
        if hi < lo:
            raise CpusetError(f"{what}: {text!r} is not a valid cpuset: range {raw.strip()!r} ends before it starts")
        (exclude if m.group(1) else ranges).append((lo, hi))
    bits = bytearray(limit)  # bounded by limit, whatever the text says
    for lo, hi in ranges:
        bits[lo : hi + 1] = b"\x01" * (hi - lo + 1)
    for lo, _hi in exclude:
        bits[lo] = 0
    result = [i for i, bit in enumerate(bits) if bit]
    if not result:
        raise CpusetError(f"{what}: {text!r} selects no {unit}")
    return result


def _beyond(number: str, limit: int, unit: str, existing) -> str:
    if existing is None:
        return f"{unit} {number} is beyond libvirt's limit ({unit}s 0-{limit - 1}, VIR_DOMAIN_CPUMASK_LEN)"
    if unit == "NUMA node":
        return f"NUMA node(s) {number} do not exist on this host (nodes: {format_cpuset(existing) or 'none'})"
    return f"host {unit}(s) {number} do not exist on this host (host {unit}s: {format_cpuset(existing) or 'none'})"


def format_cpuset(values) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (libvirt's own compact form)."""
    vals = sorted(set(values))
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(parts)


# ---- rules ------------------------------------------------------------------------------------------------------


class Rule:
    """One option's rule. ``source`` says where its range comes from (for the development guide and reviews)."""

    source = ""

    def check(self, value, path: str) -> None:  # pragma: no cover - every rule overrides it
        raise NotImplementedError


class Int(Rule):
    """An integer in [low, high]; ``power_of_two`` for page sizes. Refuses booleans (Ansible's int type takes
    ``true`` as 1)."""

    def __init__(self, low: int, high: int, source: str, power_of_two: bool = False):
        self.low, self.high, self.source, self.power_of_two = low, high, source, power_of_two

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{path}: must be an integer, got {value!r}")
        if not self.low <= value <= self.high:
            raise OptionError(f"{path}: must be from {self.low} to {self.high}, got {value} ({self.source})")
        if self.power_of_two and value & (value - 1):
            raise OptionError(f"{path}: must be a power of two, got {value} ({self.source})")


class Float(Rule):
    """A finite number in [low, high] (``(low, high]`` with ``low_open``); NaN and infinities are refused."""

    def __init__(self, low: float, high: float, source: str, low_open: bool = False):
        self.low, self.high, self.source, self.low_open = low, high, source, low_open

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{path}: must be a number, got {value!r}")
        if not math.isfinite(value):
            raise OptionError(f"{path}: must be a finite number, got {value}")
        low_ok = value > self.low if self.low_open else value >= self.low
        if not low_ok or value > self.high:
            span = f"more than {self.low} and at most" if self.low_open else f"from {self.low} to"
            raise OptionError(f"{path}: must be {span} {self.high}, got {value} ({self.source})")


class Text(Rule):
    """A non-empty string without NUL characters, at most ``max_chars`` long, optionally matching ``pattern``."""

    def __init__(self, source: str = "", pattern=None, example: str = "", max_chars: int = TEXT_MAX_CHARS):
        self.source, self.example, self.max_chars = source, example, max_chars
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, value, path):
        if not isinstance(value, str):
            raise OptionError(f"{path}: must be a string, got {value!r}")
        if not value.strip():
            raise OptionError(f"{path}: must not be empty" + (f" ({self.source})" if self.source else ""))
        if "\x00" in value:
            raise OptionError(f"{path}: must not contain a NUL character")
        if len(value) > self.max_chars:
            raise OptionError(f"{path}: is {len(value)} characters long, at most {self.max_chars} are accepted")
        if self.pattern is not None and not self.pattern.match(value):
            raise OptionError(f"{path}: {value!r} is not valid (expected e.g. {self.example})")


class Cpuset(Rule):
    """libvirt cpuset syntax, every number below CPUMASK_LEN (the host's own CPUs are checked after reading it)."""

    def __init__(self, unit: str = "CPU"):
        self.unit = unit
        self.source = f"libvirt cpuset syntax, {unit}s 0-{CPUMASK_LEN - 1} (VIR_DOMAIN_CPUMASK_LEN)"

    def check(self, value, path):
        parse_cpuset(value, path, unit=self.unit)


class Unique(Rule):
    """A list of dicts in which no two entries name the same thing: ``keys`` are the fields that identify an
    entry (the first one given counts; ``fold`` lower-cases them, as for MAC addresses)."""

    def __init__(self, keys: tuple, fold: bool = False):
        self.keys, self.fold = keys, fold
        self.source = "one entry per " + " or ".join(keys)

    def check(self, value, path):
        seen = {}
        for i, entry in enumerate(value or []):
            for key in self.keys:
                ident = (entry or {}).get(key)
                if ident is None:
                    continue
                norm = ident.lower() if self.fold and isinstance(ident, str) else ident
                if (key, norm) in seen:
                    raise OptionError(
                        f"{path}[{i}].{key}: {ident!r} is also given in {path}[{seen[(key, norm)]}]: give each "
                        f"{key} once (entries are not merged; the last would silently win)"
                    )
                seen[(key, norm)] = i
                break


class Keys(Rule):
    """A free-form dict: only ``allowed`` keys, each value checked by ``value_rule``."""

    def __init__(self, allowed: tuple, value_rule: Rule):
        self.allowed, self.value_rule = tuple(allowed), value_rule
        self.source = f"keys {', '.join(allowed)}; values: {value_rule.source}"

    def check(self, value, path):
        if not isinstance(value, dict):
            raise OptionError(f"{path}: must be a dictionary, got {value!r}")
        for key, item in value.items():
            if key not in self.allowed:
                raise OptionError(f"{path}: unknown key {key!r} (known: {', '.join(self.allowed)})")
            self.value_rule.check(item, f"{path}.{key}")


class Custom(Rule):
    """A value checked by ``func(value, path)``, which raises OptionError (for grammars a module owns)."""

    def __init__(self, func, source: str):
        self.func, self.source = func, source

    def check(self, value, path):
        self.func(value, path)


# the rules of LIBVIRT_COMMON_ARGS (common/_libvirt_io.py), merged into each libvirt module's RULES
LIBVIRT_COMMON_RULES = {
    "uri": Text("an empty URI makes libvirt connect wherever its own default points; give one, e.g. qemu:///system"),
    "timeout": Float(0, TIMEOUT_MAX, "seconds for all libvirt work of the task", low_open=True),
}


# ---- walking an argument spec ------------------------------------------------------------------------------------


def _needs_rule(opt: dict) -> bool:
    return opt.get("type", "str") != "bool" and not opt.get("choices")


def option_paths(spec: dict, prefix: str = ""):
    """Every (path, option) of an argument spec, suboptions included; list elements as ``name[]``."""
    for name, opt in spec.items():
        path = prefix + name
        kind = opt.get("type", "str")
        sub = opt.get("options")
        if kind == "list":
            yield path, opt
            if sub:
                yield from option_paths(sub, path + "[].")
            elif _needs_rule(opt) and opt.get("elements", "str") != "bool":
                yield path + "[]", {"type": opt.get("elements", "str")}
        elif sub:
            yield from option_paths(sub, path + ".")
        else:
            yield path, opt


def unruled(spec: dict, rules: dict) -> tuple:
    """-> (options that need a rule and have none, rules that name no option of the spec)."""
    need, known = [], set()
    for path, opt in option_paths(spec):
        known.add(path)
        kind = opt.get("type", "str")
        is_list = kind == "list"
        if is_list and not opt.get("options"):
            continue  # its elements ("name[]") carry the rule, or choices cover them
        if path not in rules and _needs_rule(opt):
            need.append(path)
    return need, sorted(set(rules) - known)


def _walk(value, opt: dict, key: str, shown: str, rules: dict) -> None:
    if value is None:
        return
    rule = rules.get(key)
    if rule is not None:
        rule.check(value, shown)
    sub = opt.get("options")
    if opt.get("type") == "list":
        for i, item in enumerate(value):
            if sub:
                _walk_dict(item or {}, sub, key + "[].", f"{shown}[{i}].", rules)
            else:
                elem = rules.get(key + "[]")
                if elem is not None and item is not None:
                    elem.check(item, f"{shown}[{i}]")
    elif sub:
        _walk_dict(value, sub, key + ".", shown + ".", rules)


def _walk_dict(params: dict, spec: dict, key_prefix: str, shown_prefix: str, rules: dict) -> None:
    for name, opt in spec.items():
        _walk(params.get(name), opt, key_prefix + name, shown_prefix + name, rules)


def check(params: dict, spec: dict, rules: dict) -> None:
    """Apply ``rules`` to ``params`` (a module's params, defaults filled in) along ``spec``. Raises OptionError
    for the first value that breaks its rule, naming it by its full path."""
    _walk_dict(params, spec, "", "", rules)


def check_module(module, spec: dict, rules: dict, **fail_keys) -> None:
    """``check()`` for an AnsibleModule, first thing in ``main()``: a bad option fails the task with
    changed=false (plus the module's own ``fail_keys``, e.g. the return keys it always has) before any work."""
    try:
        check(module.params, spec, rules)
    except OptionError as exc:
        module.fail_json(msg=str(exc), changed=False, **fail_keys)
