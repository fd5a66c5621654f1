# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role variables against the rules argument_specs cannot express: ranges, absolute paths, modes, patterns.
Controller side, pure.

Each role keeps one table of rules (``__<role>_rules`` in ``roles/<role>/vars/main.yml``), read by the role's
``tasks/validate.yml`` through the kvmops.fleet.var_problems filter and by the unit tests, which require a rule
for every option that is not a bool and has no ``choices``. ``problems(values, rules)`` returns one sentence per
bad variable, naming it, its value (hidden for secrets) and what is allowed.

A rule is a mapping with ``kind`` and the keys of that kind; every kind takes ``why`` (what the value is, added
to the message) and ``secret`` (never print the value):

- ``int``: ``min``, ``max`` (inclusive). An integer, or text of one (argument_specs accepts V("10")); not a bool.
- ``float``: ``min`` (inclusive) or ``above`` (exclusive), ``max``. A finite number or text of one; not a bool.
- ``path``: ``absolute`` (bool). Non-empty text without a newline or NUL.
- ``mode``: ``deny`` (octal text of the permission bits that must be clear). Four octal digits with a leading 0
  (V("0660")); an unquoted YAML 0660 is the number 432, which is refused with that hint.
- ``str``: ``pattern`` (a regular expression the whole value must match), ``max_length``, ``pattern_text``
  (how the pattern reads to a person), ``empty`` (bool: V("") is allowed whatever the pattern).
- ``list``: ``elements`` (a rule for each item), ``max_items``. Text is split on commas and a number becomes
  one item, as argument_specs' ``list`` type does (an AWX survey answer V("db-1,db-2") is a list of two).
- ``dict``: ``keys`` and ``values`` (rules), ``max_items``.
- ``address``: ``empty`` (bool: V("") allowed). An IPv4 or IPv6 address (an IPv6 one may carry a %zone), not a
  host name and without brackets.
- ``conf_value``: a value of a libvirt configuration file (virConf): a bool, an integer, text without a
  double quote, a backslash or a newline, or a list of those.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping

KINDS = ("int", "float", "path", "mode", "str", "list", "dict", "address", "conf_value")
_INT = re.compile(r"^\s*[-+]?\d+\s*$")
_MODE = re.compile(r"^0[0-7]{3}$")
_CONF_TEXT = re.compile(r'^[^"\\\n\r]*$')


class RuleError(ValueError):
    """A rule of a role's table is malformed (a bug in the role, not in the user's input)."""


def _show(value, rule) -> str:
    if rule.get("secret"):
        return "(value hidden)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _as_list(value):
    """The list argument_specs' ``list`` type makes of a value (ansible's check_type_list): a list as it is, text
    split on commas, an integer or float as one item of its text; None for anything else."""
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    return None


def _number(value, integer: bool):
    """The value as int/float, or None when it is not one (bools, NaN, infinities and other kinds are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if integer:
            return int(value) if value.is_integer() else None
        return value
    if isinstance(value, str):
        if integer:
            return int(value) if _INT.match(value) else None
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def allowed(rule: Mapping) -> str:
    """What the rule allows, as a person reads it."""
    kind = rule.get("kind")
    if kind in ("int", "float"):
        bounds = []
        if "above" in rule:
            bounds.append(f"above {rule['above']}")
        if "min" in rule:
            bounds.append(f"at least {rule['min']}")
        if "max" in rule:
            bounds.append(f"at most {rule['max']}")
        text = ("an integer" if kind == "int" else "a number") + (" " + " and ".join(bounds) if bounds else "")
    elif kind == "path":
        text = "an absolute path" if rule.get("absolute") else "a path"
    elif kind == "mode":
        text = "four octal digits such as '0660', quoted"
        if rule.get("deny"):
            text += f", without any of the bits {rule['deny']}"
    elif kind == "str":
        text = rule.get("pattern_text") or (f"text matching {rule['pattern']}" if "pattern" in rule else "text")
        if rule.get("empty"):
            text = f"empty or {text}"
        if "max_length" in rule:
            text += f", at most {rule['max_length']} characters"
    elif kind == "list":
        text = "a list"
        if "elements" in rule:
            text += f" of {allowed(rule['elements'])}"
        if "max_items" in rule:
            text += f", at most {rule['max_items']} items"
    elif kind == "dict":
        text = "a mapping"
        if "keys" in rule:
            text += f" whose keys are {allowed(rule['keys'])}"
        if "values" in rule:
            text += f" and whose values are {allowed(rule['values'])}"
    elif kind == "address":
        text = ("empty or " if rule.get("empty") else "") + "an IPv4 or IPv6 address, without brackets"
    elif kind == "conf_value":
        text = "a bool, an integer, text without a double quote, backslash or newline, or a list of those"
    else:
        raise RuleError(f"unknown rule kind {kind!r} (one of {', '.join(KINDS)})")
    return text + (f" ({rule['why']})" if rule.get("why") else "")


def _problem(value, rule: Mapping):
    """Why ``value`` breaks ``rule`` (a short clause), or None when it does not."""
    kind = rule.get("kind")
    if kind in ("int", "float"):
        number = _number(value, kind == "int")
        if number is None:
            if kind == "int" and _number(value, False) is not None:
                return "is not a whole number"
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                return f"is {_kind(value)}, not a number"
            return "is not a finite number"
        if "above" in rule and not number > rule["above"]:
            return "is out of range"
        if "min" in rule and number < rule["min"]:
            return "is out of range"
        if "max" in rule and number > rule["max"]:
            return "is out of range"
        return None
    if kind == "path":
        if not isinstance(value, str) or not value:
            return "is not a path" if value != "" else "is empty"
        if "\n" in value or "\0" in value:
            return "holds a newline or NUL"
        if rule.get("absolute") and not value.startswith("/"):
            return "is not absolute"
        return None
    if kind == "mode":
        if isinstance(value, int) and not isinstance(value, bool):
            return f"is a number (an unquoted 0{value:o} in YAML is the number {value}): quote the mode"
        if not isinstance(value, str) or not _MODE.match(value):
            return "is not a mode"
        deny = int(str(rule.get("deny", "0")), 8)
        if int(value, 8) & deny:
            return f"sets bits of {rule['deny']}"
        return None
    if kind == "str":
        if not isinstance(value, str):
            return f"is {_kind(value)}, not text"
        if value == "" and rule.get("empty"):
            return None
        if "max_length" in rule and len(value) > rule["max_length"]:
            return f"is longer than {rule['max_length']} characters"
        if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
            return "does not match"
        return None
    if kind == "list":
        items = _as_list(value)
        if items is None:
            return f"is {_kind(value)}, not a list"
        value = items
        if "max_items" in rule and len(value) > rule["max_items"]:
            return f"has {len(value)} items, more than {rule['max_items']}"
        for i, item in enumerate(value):
            why = _problem(item, rule["elements"]) if "elements" in rule else None
            if why:
                return f"item {i} ({_show(item, rule)}) {why}"
        return None
    if kind == "dict":
        if not isinstance(value, Mapping):
            return f"is {_kind(value)}, not a mapping"
        if "max_items" in rule and len(value) > rule["max_items"]:
            return f"has {len(value)} keys, more than {rule['max_items']}"
        for key, item in value.items():
            why = _problem(key, rule["keys"]) if "keys" in rule else None
            if why:
                return f"key {key!r} {why}"
            why = _problem(item, rule["values"]) if "values" in rule else None
            if why:
                return f"the value of {key!r} ({_show(item, rule)}) {why}"
        return None
    if kind == "address":
        if not isinstance(value, str):
            return f"is {_kind(value)}, not text"
        if value == "" and rule.get("empty"):
            return None
        try:
            ipaddress.ip_address(value.split("%", 1)[0] if ":" in value else value)
        except ValueError:
            return "is not an IP address"
        return None
    if kind == "conf_value":
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (bool, int)):
                continue
            if isinstance(item, str) and _CONF_TEXT.match(item):
                continue
            return "is not a libvirt configuration value"
        return None
    raise RuleError(f"unknown rule kind {kind!r} (one of {', '.join(KINDS)})")


def problems(values, rules) -> list:
    """One sentence per variable of ``values`` (name -> value) that breaks its rule in ``rules`` (name -> rule),
    sorted by name. A variable without a rule is a bug in the role and raises RuleError."""
    if not isinstance(values, Mapping) or not isinstance(rules, Mapping):
        raise RuleError("var_problems takes a mapping of variable names to values and a mapping of rules")
    out = []
    for name in sorted(values):
        rule = rules.get(name)
        if not isinstance(rule, Mapping):
            raise RuleError(f"{name}: the role has no rule for this variable")
        why = _problem(values[name], rule)
        if why:
            out.append(f"{name}: {_show(values[name], rule)} {why}; allowed: {allowed(rule)}")
    return out
