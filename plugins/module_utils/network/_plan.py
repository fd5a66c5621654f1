# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: libvirt networks of forward mode bridge, declared -> the libvirt calls that make them so.

A declared network is ``{"name", "bridge", "autostart", "state"}``; what libvirt has of a name is read by
``_libvirt_net_io.read_networks`` as ``{"exists", "active", "persistent", "autostart", "inactive_xml",
"live_xml"}``. ``plan()`` turns both into an ordered list of operations (``define``, ``start``, ``stop``,
``undefine``, ``autostart``), the diff of every definition, and the refusals (a network that differs and is not
forced, a network of another forward mode to remove, ...). Nothing here does I/O: unit-tested on literals,
Python 3.9.

The definition written is always the minimal one, the way operators hand a host bridge to libvirt::

    <network>
      <name>br0</name>
      <forward mode='bridge'/>
      <bridge name='br0'/>
    </network>

(plus the existing network's UUID when it is redefined: libvirt refuses a second UUID for a name). An existing
definition matches when it is exactly that: another forward mode, another bridge, or anything more (an
``<ip>``, a ``<portgroup>``, ``<virtualport>``, attributes of ``<bridge>``) is a difference.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import OptionError

# libvirt refuses only "/" in a network name (virNetworkDefParse); a name is also a file name
# (/etc/libvirt/qemu/networks/NAME.xml) and goes into messages and logs: kept to a safe set
NAME_MAX = 64
NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$"
# a Linux interface name: 1 to IFNAMSIZ - 1 characters, no "/", ":" or blanks (dev_valid_name); kept to the
# set the bridge role's names use
IFNAMSIZ = 15
IFNAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$"
# elements libvirt keeps of a forward-mode-bridge definition that carry no setting of their own
IGNORED_ELEMENTS = ("name", "uuid")
# attributes of <network> that are state, not definition: the count of domain interfaces using it (live XML)
IGNORED_ATTRIBUTES = ("connections",)

DEFINE, START, STOP, UNDEFINE, AUTOSTART = "define", "start", "stop", "undefine", "autostart"


class NetworkError(ValueError):
    """A network the module refuses to touch, or XML it cannot read; the message names the option."""


class OptionValueError(NetworkError, OptionError):
    """An option's value breaks its rule (the Custom rule of ``networks``)."""


# ---- the rule between entries (the module's RULES: networks) --------------------------------------------


def check_networks(value, path: str) -> None:
    """Each name once; a bridge in one present network at most; a present network needs its bridge."""
    if not isinstance(value, list):
        raise OptionValueError(f"{path}: must be a list, got {value!r}")
    names, bridges = {}, {}
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise OptionValueError(f"{path}[{i}]: must be a dictionary, got {entry!r}")
        name, bridge, state = entry.get("name"), entry.get("bridge"), entry.get("state") or "present"
        if isinstance(name, str):
            if name in names:
                raise OptionValueError(
                    f"{path}[{i}].name: {name!r} is also given in {path}[{names[name]}]: give each network once "
                    "(entries are not merged; the last would silently win)"
                )
            names[name] = i
        if state == "present" and bridge is None:
            raise OptionValueError(
                f"{path}[{i}].bridge: required with state present (the Linux bridge the network uses)"
            )
        if state == "present" and isinstance(bridge, str):
            if bridge in bridges:
                raise OptionValueError(
                    f"{path}[{i}].bridge: {bridge!r} is also the bridge of {path}[{bridges[bridge]}]: one libvirt "
                    "network per bridge (domains would be attached to the same bridge under two names)"
                )
            bridges[bridge] = i


# ---- XML ---------------------------------------------------------------------------------------------------


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")


def render(name: str, bridge: str, uuid=None) -> str:
    """The definition of a forward-mode-bridge network, formatted as libvirt formats it (for a readable diff)."""
    lines = ["<network>", f"  <name>{_attr(name)}</name>"]
    if uuid:
        lines.append(f"  <uuid>{_attr(uuid)}</uuid>")
    lines += ["  <forward mode='bridge'/>", f"  <bridge name='{_attr(bridge)}'/>", "</network>", ""]
    return "\n".join(lines)


def parse(xml: str) -> dict:
    """A network's XML -> {name, uuid, forward_mode (None: isolated), bridge, connections, root}."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's own network XML, not untrusted input
    except ET.ParseError as exc:
        raise NetworkError(f"cannot read the network XML libvirt returned: {exc}") from None
    if root.tag != "network":
        raise NetworkError(f"cannot read the network XML libvirt returned: root element <{root.tag}>, not <network>")
    forward = root.find("forward")
    bridge = root.find("bridge")
    connections = root.get("connections")
    return {
        "name": (root.findtext("name") or "").strip(),
        "uuid": (root.findtext("uuid") or "").strip() or None,
        # <forward/> without a mode is NAT; no <forward> at all is an isolated network
        "forward_mode": None if forward is None else forward.get("mode", "nat"),
        "bridge": None if bridge is None else bridge.get("name"),
        "connections": int(connections) if connections and connections.isdigit() else 0,
        "root": root,
    }


def mode_text(mode) -> str:
    return "none (isolated)" if mode is None else mode


def differences(xml: str, bridge: str) -> list:
    """What in a network's XML differs from the declared forward-mode-bridge network on ``bridge`` (empty: it
    matches). Name and UUID are not compared, nor the live ``connections`` count."""
    net = parse(xml)
    root = net["root"]
    out = []
    if net["forward_mode"] != "bridge":
        out.append(f"forward mode is {mode_text(net['forward_mode'])}, declared bridge")
    if net["bridge"] != bridge:
        out.append(f"bridge is {net['bridge']!r}, declared {bridge!r}" if net["bridge"] else "it names no bridge")
    for key, value in sorted(root.attrib.items()):
        if key not in IGNORED_ATTRIBUTES:
            out.append(f"<network {key}='{value}'> is not declared")
    for elem in root:
        tag = elem.tag
        if tag in IGNORED_ELEMENTS:
            continue
        if tag == "forward":
            extra = sorted(k for k in elem.attrib if k != "mode")
            out += [f"<forward {k}='{elem.get(k)}'> is not declared" for k in extra]
            out += [f"<forward> has <{child.tag}>, not declared" for child in elem]
        elif tag == "bridge":
            extra = sorted(k for k in elem.attrib if k != "name")
            out += [f"<bridge {k}='{elem.get(k)}'> is not declared" for k in extra]
        else:
            out.append(f"it has <{tag}>, not declared")
    if len(root.findall("forward")) > 1 or len(root.findall("bridge")) > 1:
        out.append("it has more than one <forward> or <bridge>")
    return out


# ---- the plan ------------------------------------------------------------------------------------------------


def describe(op: dict) -> str:
    """One operation as the module reports it in ``changes``."""
    name = op["name"]
    if op["op"] == DEFINE:
        return f"{'redefined' if op.get('redefine') else 'defined'} network {name}"
    if op["op"] == START:
        return f"started network {name}"
    if op["op"] == STOP:
        return f"stopped network {name}"
    if op["op"] == UNDEFINE:
        return f"undefined network {name}"
    return f"autostart of network {name} {'on' if op['value'] else 'off'}"


def _present(i: int, want: dict, have: dict, force: bool, where: str):
    """-> (ops, refusal or None, before XML, after XML) for one network of state present."""
    name, bridge, autostart = want["name"], want["bridge"], want["autostart"]
    if not have.get("exists"):
        xml = render(name, bridge)
        ops = [{"op": DEFINE, "name": name, "xml": xml, "index": i}, {"op": START, "name": name, "index": i}]
        if autostart:
            ops.append({"op": AUTOSTART, "name": name, "value": True, "index": i})
        return ops, None, "", xml
    config_xml = have.get("inactive_xml") if have.get("persistent") else None
    live_xml = have.get("live_xml") if have.get("active") else None
    before = config_xml or live_xml or ""
    config_diff = differences(config_xml, bridge) if config_xml is not None else []
    live_diff = differences(live_xml, bridge) if live_xml is not None else []
    uuid = parse(before)["uuid"] if before else None
    after_xml = render(name, bridge, uuid)
    ops = []
    if config_diff or live_diff:
        what = config_diff or live_diff
        state = (
            "its definition" if config_diff else "the running network (its definition matches; it was not restarted)"
        )
        if not force:
            connections = parse(live_xml)["connections"] if live_xml else 0
            used = f"; {connections} domain interface(s) use it now" if connections else ""
            return (
                [],
                f"{where}: network {name!r} exists and {state} differs: {'; '.join(what)}{used}. "
                "Refusing to change it; with force it is redefined as declared and, if active, stopped and started "
                "again",
                before,
                after_xml,
            )
        if config_diff or not have.get("persistent"):
            ops.append({"op": DEFINE, "name": name, "xml": after_xml, "index": i, "redefine": True})
        if have.get("active"):
            ops.append({"op": STOP, "name": name, "index": i})
        ops.append({"op": START, "name": name, "index": i})
    else:
        if not have.get("persistent"):
            ops.append({"op": DEFINE, "name": name, "xml": after_xml, "index": i, "redefine": True})
        if not have.get("active"):
            ops.append({"op": START, "name": name, "index": i})
    # a definition keeps its autostart flag; a transient network has none (False) until it is defined
    if bool(have.get("autostart")) != bool(autostart):
        ops.append({"op": AUTOSTART, "name": name, "value": bool(autostart), "index": i})
    shown_after = after_xml if any(op["op"] == DEFINE for op in ops) else before
    return ops, None, before, shown_after


def _absent(i: int, want: dict, have: dict, force: bool, where: str):
    """-> (ops, refusal or None, before XML, after XML) for one network of state absent."""
    name = want["name"]
    if not have.get("exists"):
        return [], None, "", ""
    xml = have.get("inactive_xml") if have.get("persistent") else have.get("live_xml")
    live = parse(have["live_xml"]) if have.get("active") and have.get("live_xml") else None
    net = parse(xml or have.get("live_xml") or "<network/>")
    modes = {net["forward_mode"]} | ({live["forward_mode"]} if live else set())
    if modes != {"bridge"}:
        shown = ", ".join(sorted(mode_text(m) for m in modes))
        return (
            [],
            f"{where}: network {name!r} has forward mode {shown}, not bridge: refusing to remove it (this module "
            "removes only networks of forward mode bridge, never a NAT, routed, isolated or other network, even "
            "with force)",
            xml or "",
            xml or "",
        )
    bridges = {net["bridge"]} | ({live["bridge"]} if live else set())
    if want.get("bridge") is not None and bridges != {want["bridge"]}:
        return (
            [],
            f"{where}.bridge: network {name!r} is on bridge {', '.join(sorted(str(b) for b in bridges))}, not "
            f"{want['bridge']!r}: refusing to remove it (leave out bridge to remove it whatever its bridge)",
            xml or "",
            xml or "",
        )
    if live and live["connections"] and not force:
        return (
            [],
            f"{where}: network {name!r} is in use by {live['connections']} domain interface(s): refusing to remove it "
            "(their domains would not start again); with force it is removed anyway",
            xml or "",
            xml or "",
        )
    ops = []
    if have.get("active"):
        ops.append({"op": STOP, "name": name, "index": i})
    if have.get("persistent"):
        ops.append({"op": UNDEFINE, "name": name, "index": i})
    return ops, None, xml or "", ""


def plan(declared: list, current: dict, force: bool = False, label: str = "networks") -> dict:
    """Declared networks (the module's ``networks``, defaults filled in) and what libvirt has of each name
    -> ``{"ops": [...], "changes": [...], "refusals": [...], "diff": [...], "networks": [...]}``.

    ``ops`` run in declared order, each network's own in a safe order (define before stop, so that a definition
    libvirt refuses stops nothing). ``refusals`` name the option (``networks[1]: ...``); when there is one,
    nothing may be applied. ``networks`` says per declared network what it will be after the run.
    """
    ops, refusals, diff, nets = [], [], [], []
    for i, want in enumerate(declared):
        have = current.get(want["name"]) or {"exists": False}
        where = f"{label}[{i}]"
        if want.get("state", "present") == "present":
            mine, refusal, before, after = _present(i, want, have, force, where)
        else:
            mine, refusal, before, after = _absent(i, want, have, force, where)
        if refusal:
            refusals.append(refusal)
        ops += mine
        if before != after:
            header = f"network {want['name']}"
            diff.append({"before_header": header, "after_header": header, "before": before, "after": after})
        nets.append(_after(want, have, mine, refusal))
    return {
        "ops": ops,
        "changes": [describe(op) for op in ops],
        "refusals": refusals,
        "diff": diff,
        "networks": nets,
    }


def _after(want: dict, have: dict, ops: list, refusal) -> dict:
    """What a declared network is after its operations ran (or would be, in check mode)."""
    present = want.get("state", "present") == "present"
    if refusal or not ops:
        exists = bool(have.get("exists"))
        active, autostart = bool(have.get("active")), bool(have.get("autostart"))
    elif present:
        exists, active = True, True
        autostart = next((op["value"] for op in ops if op["op"] == AUTOSTART), bool(have.get("autostart")))
    else:
        exists, active, autostart = False, False, False
    return {
        "name": want["name"],
        "state": want.get("state", "present"),
        "bridge": want.get("bridge"),
        "exists": exists,
        "active": active,
        "autostart": autostart,
        "changes": [describe(op) for op in ops],
        "refused": bool(refusal),
    }


def verify(declared: list, current: dict) -> list:
    """After the run: every present network defined as declared, active, with its autostart; every absent one gone.
    -> the problems (empty when all is as declared)."""
    problems = []
    for want in declared:
        name = want["name"]
        have = current.get(name) or {"exists": False}
        if want.get("state", "present") == "absent":
            if have.get("exists"):
                problems.append(f"network {name} still exists")
            continue
        if not have.get("exists"):
            problems.append(f"network {name} does not exist")
            continue
        if not have.get("persistent"):
            problems.append(f"network {name} is not defined (transient)")
        for key in ("inactive_xml", "live_xml"):
            if have.get(key):
                diffs = differences(have[key], want["bridge"])
                if diffs:
                    which = "definition" if key == "inactive_xml" else "running network"
                    problems.append(f"network {name}: its {which} differs: {'; '.join(diffs)}")
        if not have.get("active"):
            problems.append(f"network {name} is not active")
        if bool(have.get("autostart")) != bool(want["autostart"]):
            problems.append(f"network {name}: autostart is {'on' if have.get('autostart') else 'off'}")
    return problems
