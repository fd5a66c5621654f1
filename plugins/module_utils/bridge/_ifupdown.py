# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: the ifupdown provider of kvm_bridge_apply: stanzas, the port takeover, the lines that make them live or
revert.

No I/O and no ansible imports (unit-tested on literals, Python 3.9). ifupdown has no file order that lets one
file take a NIC over from another, and a NIC defined twice is an error, so:

* each declared bridge gets its own file ``/etc/network/interfaces.d/kvmops-<br>``: ``auto``, an ``inet`` stanza
  (static, dhcp or manual) with bridge-utils' options (``bridge_ports``, ``bridge_hw`` = the first port's MAC,
  ``bridge_stp``, ``bridge_fd``, ``bridge_maxwait 0``, ``bridge_vlan_aware``), and an ``inet6`` stanza when the
  bridge has IPv6 (bridge-utils gives the ports the bridge's ``mtu`` and ``addrgenmode none``);
* the lines that configured a port (its ``iface`` stanzas and its name in ``auto``/``allow-*`` lines) are
  commented out where they are, under a line saying which bridge took the port. That file is saved before and put
  back by the revert, like every file the transaction writes;
* when no ``source``/``source-directory`` line of the configuration reads the bridge's file, one is added to
  ``/etc/network/interfaces``.

Bonds (ifenslave) and VLANs (the ``vlan`` package's ``vlan-raw-device``, or ifupdown's own ``<link>.<id>`` names) get
files that sort before every bridge's, so that ``ifup -a`` at boot brings them up first: ``kvmops--bond-<bond>``
(``bond-slaves``, ``bond-mode``, ``bond-miimon``, ``bond-primary``; the members' own stanzas are commented out like a
bridge's ports) and ``kvmops--vlan-<vlan>``; a VLAN on a declared bridge goes into that bridge's file, after it. A VLAN
is named ``vlan<id>`` or ``<link>.<id>`` here, the two forms ifupdown knows the id and link of. The NIC under a VLAN
keeps its own stanza, if any (the ``vlan`` hook brings it up).

``sources`` below is {path: text} of ``/etc/network/interfaces`` and every file it reads, in ifupdown's order.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge._plan import (
    BridgeError,
    _q,
    delete_lines,
    mac_of,
    sibling,
)

MAIN = "/etc/network/interfaces"
DIR = "/etc/network/interfaces.d"
PREFIX = "kvmops-"
HEAD = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run."
# the words that start a stanza or a directive; any other line belongs to the iface/mapping stanza above it
STANZA = ("iface", "mapping", "auto", "source", "source-directory", "rename", "no-auto-down", "no-scripts")
RUN_PARTS_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")  # source-directory reads only such names (run-parts)


def path_of(bridge):
    return f"{DIR}/{PREFIX}{bridge}"


def link_path(kind, name):
    """The file of a bond (``kind`` bond) or of a VLAN not on a bridge (vlan): it sorts before every bridge's file
    (an interface name cannot start with ``-``)."""
    return f"{DIR}/{PREFIX}-{kind}-{name}"


def _word(line):
    parts = line.split()
    return parts[0] if parts else ""


def _is_stanza(word):
    return word in STANZA or word.startswith("allow-")


def stanzas(text):
    """-> list of (kind, names, first line, last line) for every stanza and directive of a file, line numbers
    0-based. ``kind`` is the first word; ``names``: the interfaces of an ``iface`` (one), ``auto``/``allow-*``
    lines (all), or the argument of ``source``/``source-directory``."""
    out = []
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = _word(line)
        if _is_stanza(word):
            args = line.split()[1:]
            if word in ("source", "source-directory"):
                names = [line.split(None, 1)[1].strip()] if args else []
            elif word == "iface":
                names = args[:1]
            else:
                names = args
            out.append([word, names, i, i])
        elif out and out[-1][0] in ("iface", "mapping"):
            out[-1][3] = i
    return [tuple(s) for s in out]


def directives(sources):
    """-> [(kind, pattern)] of every ``source`` (absolute glob) and ``source-directory`` (absolute directory)."""
    out = []
    for path, text in sources.items():
        for kind, names, _a, _b in stanzas(text or ""):
            if kind in ("source", "source-directory") and names:
                target = names[0]
                if not target.startswith("/"):
                    target = os.path.join(os.path.dirname(path), target)
                out.append((kind, os.path.normpath(target)))
    return out


def is_read(path, sources):
    """Does the configuration read ``path`` (a ``source`` glob or ``source-directory`` covers it)?"""
    for kind, target in directives(sources):
        if kind == "source" and fnmatch.fnmatchcase(path, target):
            return True
        if (
            kind == "source-directory"
            and os.path.dirname(path) == target
            and RUN_PARTS_NAME.match(os.path.basename(path))
        ):
            return True
    return False


def defined(sources, name):
    """The files (not ours) whose active ``iface`` stanzas define ``name`` -> sorted paths."""
    return sorted(
        path
        for path, text in sources.items()
        if not _owned(path) and any(k == "iface" and n == [name] for k, n, _a, _b in stanzas(text or ""))
    )


def _owned(path):
    return os.path.dirname(path) == DIR and os.path.basename(path).startswith(PREFIX)


def disable_ports(text, owner, where=None):
    """``text`` with every line that configures a port commented out. ``owner``: {port: bridge or bond};
    ``where``: {bridge or bond: its file} (default :func:`path_of`). -> the new text (equal to ``text`` when no
    port is configured there)."""
    where = where or {}
    lines = text.splitlines()
    out = list(lines)
    notes = {}  # line index -> the note to insert before it
    for kind, names, first, last in stanzas(text):
        if kind == "iface" and names and names[0] in owner:
            port = names[0]
            path = where.get(owner[port], path_of(owner[port]))
            notes[first] = f"# kvmops.fleet.bridge: {port} is a port of {owner[port]} ({path})"
            for i in range(first, last + 1):
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    out[i] = "#" + lines[i]
        elif (kind == "auto" or kind.startswith("allow-")) and any(n in owner for n in names):
            taken = [n for n in names if n in owner]
            keep = [n for n in names if n not in owner]
            notes[first] = (
                f"# kvmops.fleet.bridge: {', '.join(taken)} "
                + ("is a port" if len(taken) == 1 else "are ports")
                + f" of {', '.join(sorted({owner[n] for n in taken}))}"
            )
            out[first] = "#" + lines[first] + (f"\n{kind} {' '.join(keep)}" if keep else "")
    if not notes:
        return text
    result = []
    for i, line in enumerate(out):
        if i in notes:
            result.append(notes[i])
        result.append(line)
    return "\n".join(result) + ("\n" if text.endswith("\n") else "")


def port_stanzas(sources, names):
    """The active ``iface`` stanzas of ``names`` in the configuration as it is (``ifdown -i`` reads them to take a
    port down the way it was brought up) -> text."""
    out = []
    for path, text in sources.items():
        lines = (text or "").splitlines()
        for kind, found, first, last in stanzas(text or ""):
            if kind == "iface" and found and found[0] in names:
                out.append(f"# from {path}")
                out += lines[first : last + 1]
    return "\n".join(out) + "\n"


def _family(b, version, var):
    addrs = [a for a in b["addresses"] if ipaddress.ip_interface(a).version == version]
    dhcp = b["dhcp4"] if version == 4 else b["dhcp6"]
    if dhcp and addrs:
        raise BridgeError(
            f"{var}: ifupdown cannot combine DHCP{'v6' if version == 6 else ''} with static IPv{version} addresses "
            f"on one bridge ({', '.join(addrs)}): declare one or the other"
        )
    return addrs, dhcp


def _bond_stanza(bond):
    name = bond["name"]
    lines = [HEAD, f"auto {name}", f"iface {name} inet manual", "    bond-slaves " + " ".join(bond["interfaces"])]
    lines += [f"    bond-mode {bond['mode']}", f"    bond-miimon {int(bond['miimon'])}"]
    if bond["primary"]:
        lines.append(f"    bond-primary {bond['primary']}")
    if bond["mtu"] is not None:
        lines.append(f"    mtu {int(bond['mtu'])}")
    return "\n".join(lines) + "\n"


def _vlan_stanza(v, head=True):
    name = v["name"]
    lines = ([HEAD] if head else []) + [f"auto {name}", f"iface {name} inet manual", f"    vlan-raw-device {v['link']}"]
    if v["mtu"] is not None:
        lines.append(f"    mtu {int(v['mtu'])}")
    return "\n".join(lines) + "\n"


def _bridge_file(b, var, mac=None, flavour="ifupdown"):
    name = b["name"]
    v4, dhcp4 = _family(b, 4, var)
    v6, dhcp6 = _family(b, 6, var)
    method = "dhcp" if dhcp4 else "static" if v4 else "manual"
    lines = [HEAD, f"auto {name}", f"iface {name} inet {method}"]
    lines += [f"    address {a}" for a in v4]
    if b["gateway4"]:
        lines.append(f"    gateway {b['gateway4']}")
    if b["dns"]:
        lines.append("    dns-nameservers " + " ".join(b["dns"]))
    if b["mtu"] is not None:
        lines.append(f"    mtu {int(b['mtu'])}")
    lines.append("    bridge_ports " + (" ".join(b["ports"]) if b["ports"] else "none"))
    if mac:  # ifupdown2 has no bridge_hw (it would ignore it): its address addon sets a link's MAC from hwaddress
        lines.append(f"    {'hwaddress' if flavour == 'ifupdown2' else 'bridge_hw'} {mac}")
    lines.append(f"    bridge_stp {'on' if b['stp'] else 'off'}")
    if b["forward_delay"] is not None:
        lines.append(f"    bridge_fd {int(b['forward_delay'])}")
    lines.append("    bridge_maxwait 0")
    lines.append(f"    bridge_vlan_aware {'yes' if b['vlan_filtering'] else 'no'}")
    routes = {4: [], 6: []}
    for r in b["routes"]:
        net = ipaddress.ip_network(r["to"])
        line = f"ip{' -6' if net.version == 6 else ''} route replace {r['to']}"
        if r["via"]:
            line += f" via {r['via']}"
        if r["metric"] is not None:
            line += f" metric {int(r['metric'])}"
        routes[net.version].append(f"    up {line} dev {name}")
    lines += routes[4]
    if v6 or dhcp6 or b["gateway6"] or routes[6]:
        lines += ["", f"iface {name} inet6 {'auto' if dhcp6 else 'static' if v6 else 'manual'}"]
        if dhcp6:
            lines.append("    dhcp 1")
        lines += [f"    address {a}" for a in v6]
        if b["gateway6"]:
            lines.append(f"    gateway {b['gateway6']}")
        lines += routes[6]
    return "\n".join(lines) + "\n"


def _not_defined(sources, name, where, path):
    found = defined(sources, name)
    if found:
        raise BridgeError(
            f"{where}: {name} is defined in {', '.join(found)} (iface {name}); kvmops.fleet.bridge writes it into "
            f"its own file ({path}): remove that stanza first"
        )


def render(bridges, host, sources, var="bridges", bonds=(), vlans=(), flavour="ifupdown"):
    """The bridges', bonds' and VLANs' files, the source files with their ports' and members' lines commented out,
    and a ``source`` line when the configuration would not read our files -> {path: content}. ``flavour``
    V(ifupdown2) gives a bridge its first port's MAC with ``hwaddress`` (ifupdown2 reads ``bridge_*`` options as
    ``bridge-*`` and has no ``bridge-hw``); the rest is the same text for both. Raises BridgeError
    (naming ``var`` or its siblings) when a declared link is already defined in a file that is not ours, or a VLAN
    has a name ifupdown cannot take its id and link from."""
    files = {}
    owner = {}
    where = {}
    bvar, vvar = sibling(var, "bonds"), sibling(var, "vlans")
    bridge_names = {b["name"] for b in bridges}
    vlan_names = {v["name"] for v in vlans}
    for i, bond in enumerate(bonds):
        path = link_path("bond", bond["name"])
        _not_defined(sources, bond["name"], f"{bvar}[{i}].name", path)
        files[path] = _bond_stanza(bond)
        where[bond["name"]] = path
        for nic in bond["interfaces"]:
            owner[nic] = bond["name"]
    on_bridge = {}
    for i, v in enumerate(vlans):
        w = f"{vvar}[{i}]"
        if v["name"] not in (f"vlan{int(v['id'])}", f"{v['link']}.{int(v['id'])}"):
            raise BridgeError(
                f"{w}.name: ifupdown takes a VLAN's id and link from its name: name it vlan{int(v['id'])} or "
                f"{v['link']}.{int(v['id'])} (not {v['name']})"
            )
        if v["link"] in bridge_names:
            if any(v["name"] in b["ports"] for b in bridges):
                raise BridgeError(
                    f"{w}.link: with ifupdown, a VLAN on a bridge ({v['link']}) cannot be a port of another bridge"
                )
            on_bridge.setdefault(v["link"], []).append(v)
            _not_defined(sources, v["name"], f"{w}.name", path_of(v["link"]))
            continue
        path = link_path("vlan", v["name"])
        _not_defined(sources, v["name"], f"{w}.name", path)
        files[path] = _vlan_stanza(v)
    for i, b in enumerate(bridges):
        _not_defined(sources, b["name"], f"{var}[{i}].name", path_of(b["name"]))
        mac = mac_of(b["ports"][0], host, bridges, bonds, vlans) if b["ports"] else None
        text = _bridge_file(b, f"{var}[{i}]", mac, flavour)
        for v in on_bridge.get(b["name"], []):
            text += "\n" + _vlan_stanza(v, head=False)
        files[path_of(b["name"])] = text
        for port in b["ports"]:
            if port not in vlan_names and port not in where:
                owner[port] = b["name"]
    for path, text in sources.items():
        if _owned(path) or text is None:
            continue
        new = disable_ports(text, owner, where)
        if new != text:
            files[path] = new
    unread = sorted(p for p in files if _owned(p) and not is_read(p, sources))
    if unread:
        main = files.get(MAIN, sources.get(MAIN) or "")
        line = f"source {DIR}/{PREFIX}*"
        files[MAIN] = (
            main
            + ("" if main.endswith("\n") or not main else "\n")
            + (f"\n# kvmops.fleet.bridge: its bridges' files\n{line}\n")
        )
    return files


def _up_order(manifest):
    """Bonds, VLANs not on a declared bridge, bridges, VLANs on a declared bridge: each after what it needs."""
    vlans = manifest.get("vlans", [])
    order = [name for name, _nics in manifest.get("bonds", [])]
    order += [name for name, link in vlans if link not in manifest["bridges"]]
    order += list(manifest["bridges"])
    order += [name for name, link in vlans if link in manifest["bridges"]]
    return order


def switch_lines(manifest, before_file):
    """Shell lines that make the written stanzas live: take the ports and bond members (and the bridges, bonds and
    VLANs that existed) down the way their old stanzas brought them up (``before_file``), then bring the bonds,
    VLANs and bridges up from the new files, each after what it needs."""
    lines = []
    new = set(manifest["new_bridges"]) | set(manifest.get("new_links", []))
    down = list(manifest.get("ports_all", [])) + list(manifest.get("members_all", []))
    down += [x for x in _up_order(manifest) if x not in new and x not in down]
    for link in down:
        lines.append(f"ifdown --force -i {_q(before_file)} {_q(link)} 2>/dev/null")
    for name in _up_order(manifest):
        lines.append(f"ifup --force {_q(name)}")
    return lines


def revert_pre_lines(manifest):
    """Shell lines run before the files are put back: take the declared links down with the stanzas that brought
    them up, the last up first (bridge-utils deletes a bridge it created and frees its ports, ifenslave a bond)."""
    return [f"ifdown --force {_q(name)} 2>/dev/null" for name in reversed(_up_order(manifest))]


# /proc/sys/net/ipv6/conf/<link>/addr_gen_mode -> the word ``ip link set addrgenmode`` takes
ADDRGENMODE = {"0": "eui64", "1": "none", "2": "stable_secret", "3": "random"}


def revert_lines(manifest):
    """Shell lines run after the files are put back: delete what is left of new bridges, bonds and VLANs
    (bridge-utils only sets a bridge down), give the ports back their IPv6 address generation mode (bridge-utils
    sets ``none`` on a port; ``manifest["addrgenmode"]``: link -> the value of ``addr_gen_mode`` before), then
    bring the bridges, bonds and VLANs that existed, the ports and the bond members up again from their old
    stanzas."""
    lines = delete_lines(manifest)
    for port, mode in sorted(manifest.get("addrgenmode", {}).items()):
        if mode in ADDRGENMODE:
            lines.append(f"ip link set dev {_q(port)} addrgenmode {ADDRGENMODE[mode]} 2>/dev/null")
    new = set(manifest["new_bridges"]) | set(manifest.get("new_links", []))
    old = [x for x in _up_order(manifest) if x not in new]
    for link in old + list(manifest.get("ports_all", [])) + list(manifest.get("members_all", [])):
        lines.append(f"ifdown --force {_q(link)} 2>/dev/null; ifup {_q(link)}")
    return lines
