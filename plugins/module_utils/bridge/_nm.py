# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: the NetworkManager provider of kvm_bridge_apply: keyfiles, and the lines that make them live or revert.

No I/O and no ansible imports (unit-tested on literals, Python 3.9). Per declared bridge, two kinds of keyfiles in
``/etc/NetworkManager/system-connections`` (mode 0600, NetworkManager ignores others):

* ``kvmops-<br>.nmconnection``: the bridge (type ``bridge``, its addresses, gateway, routes, DNS, MTU, STP), with
  the MAC address of its first port, so the host keeps its identity on the wire;
* ``kvmops-<br>-port-<nic>.nmconnection``: the port (type ``ethernet``, ``interface-name`` the NIC, ``master`` the
  bridge), with ``autoconnect-priority`` 100, so that at boot NetworkManager picks it over the profile that ran the
  NIC before (priority 0 by default). The operator's own profiles are never edited: they lose the NIC because a
  profile of higher priority takes it, and get it back when the revert deletes ours.

Per declared bond: ``kvmops-<bond>.nmconnection`` (type ``bond``: ``[bond]`` mode, miimon, primary; the MAC of its
first interface; a bridge port when a bridge lists it, else without IP) and ``kvmops-<bond>-port-<nic>.nmconnection``
per interface (type ``ethernet``, ``master`` the bond, ``slave-type=bond``, priority 100 like a bridge port). Per
declared VLAN: ``kvmops-<vlan>.nmconnection`` (type ``vlan``: ``[vlan]`` id and parent, the link's interface name; a
bridge port or without IP). ``master``/``slave-type`` are the property names NetworkManager 1.42 (Debian 12) documents;
later releases read them as well.

Connection UUIDs are derived from the names (:data:`UUID_NS`), so the files are the same at every run.
"""

from __future__ import annotations

import ipaddress
import uuid

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge._plan import BridgeError, _q, delete_lines, mac_of

NM_DIR = "/etc/NetworkManager/system-connections"
NM_PREFIX = "kvmops-"
NM_MODE = 0o600
PORT_PRIORITY = 100  # above NetworkManager's default 0: our port profile wins the NIC at boot
UUID_NS = uuid.UUID("6b1f3e0a-6c4b-5b8e-9a43-1d0c6f0b7e11")
# nmcli waits this long for an activation in the switch and the revert (seconds)
NMCLI_WAIT = 30
HEAD = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"


def conn_id(bridge, port=None):
    """The connection id (and file stem) of a bridge or of one of its ports."""
    return f"{NM_PREFIX}{bridge}" if port is None else f"{NM_PREFIX}{bridge}-port-{port}"


def conn_uuid(cid):
    return str(uuid.uuid5(UUID_NS, cid))


def path_of(cid):
    return f"{NM_DIR}/{cid}.nmconnection"


def _tf(value):
    return "true" if value else "false"


def _ip_section(b, version):
    """The [ipv4] or [ipv6] section of a bridge's keyfile (lines)."""
    addrs = [a for a in b["addresses"] if ipaddress.ip_interface(a).version == version]
    dhcp = b["dhcp4"] if version == 4 else b["dhcp6"]
    gateway = b["gateway4"] if version == 4 else b["gateway6"]
    dns = [d for d in b["dns"] if ipaddress.ip_address(d).version == version]
    routes = [r for r in b["routes"] if ipaddress.ip_network(r["to"]).version == version]
    method = "auto" if dhcp else "manual" if addrs else "disabled"
    out = [f"[ipv{version}]", f"method={method}"]
    out += [f"address{i}={a}" for i, a in enumerate(addrs, 1)]
    if gateway:
        out.append(f"gateway={gateway}")
    if dns:
        out.append("dns=" + "".join(f"{d};" for d in dns))
    for i, r in enumerate(routes, 1):
        # no next hop but a metric: keyfile's route syntax needs the unspecified address in between
        hop = r["via"] or ("0.0.0.0" if version == 4 else "::")  # noqa: S104 - a route's next hop, not a bind
        value = f"{r['to']},{hop}"
        if r["metric"] is not None:
            value += f",{int(r['metric'])}"
        elif r["via"] is None:
            value = r["to"]
        out.append(f"route{i}={value}")
    return out


def _put(files, path, text):
    if path in files:
        raise BridgeError(f"two declared links would share the keyfile {path}: rename one of them")
    files[path] = text


def _head(cid, kind, name, master=None, slave_type=None, priority=None):
    lines = [
        HEAD.rstrip("\n"),
        "[connection]",
        f"id={cid}",
        f"uuid={conn_uuid(cid)}",
        f"type={kind}",
        f"interface-name={name}",
    ]
    if master:
        lines += [f"master={master}", f"slave-type={slave_type}"]
    lines.append("autoconnect=true")
    if priority is not None:
        lines.append(f"autoconnect-priority={priority}")
    return [*lines, ""]


def _tail(name, port_of):
    """A bond's or VLAN's last sections: a bridge port, or no IP at all (addresses live on bridges)."""
    if name in port_of:
        return ["[bridge-port]"]
    return ["[ipv4]", "method=disabled", "", "[ipv6]", "method=disabled"]


def render(bridges, host, bonds=(), vlans=()):
    """The keyfiles of the declared bridges, bonds and VLANs -> {path: content}."""
    files = {}
    declared = {b["name"] for b in bonds} | {v["name"] for v in vlans}
    port_of = {p: b["name"] for b in bridges for p in b["ports"]}
    for bond in bonds:
        name = bond["name"]
        cid = conn_id(name)
        master = port_of.get(name)
        lines = _head(cid, "bond", name, master, "bridge" if master else None)
        eth = []
        mac = mac_of(name, host, bridges, bonds, vlans)
        if mac:
            eth.append(f"cloned-mac-address={mac}")
        if bond["mtu"] is not None:
            eth.append(f"mtu={int(bond['mtu'])}")
        if eth:
            lines += ["[ethernet]", *eth, ""]
        lines += ["[bond]", f"miimon={int(bond['miimon'])}", f"mode={bond['mode']}"]
        if bond["primary"]:
            lines.append(f"primary={bond['primary']}")
        lines += ["", *_tail(name, port_of)]
        _put(files, path_of(cid), "\n".join(lines) + "\n")
        for nic in bond["interfaces"]:
            pid = conn_id(name, nic)
            body = _head(pid, "ethernet", nic, name, "bond", PORT_PRIORITY)
            _put(files, path_of(pid), "\n".join(body).rstrip("\n") + "\n")
    for v in vlans:
        name = v["name"]
        cid = conn_id(name)
        master = port_of.get(name)
        lines = _head(cid, "vlan", name, master, "bridge" if master else None)
        if v["mtu"] is not None:
            lines += ["[ethernet]", f"mtu={int(v['mtu'])}", ""]
        lines += ["[vlan]", f"id={int(v['id'])}", f"parent={v['link']}", "", *_tail(name, port_of)]
        _put(files, path_of(cid), "\n".join(lines) + "\n")
    for b in bridges:
        name = b["name"]
        cid = conn_id(name)
        mac = mac_of(b["ports"][0], host, bridges, bonds, vlans) if b["ports"] else None
        lines = [
            HEAD.rstrip("\n"),
            "[connection]",
            f"id={cid}",
            f"uuid={conn_uuid(cid)}",
            "type=bridge",
            f"interface-name={name}",
            "autoconnect=true",
            "",
        ]
        eth = []
        if mac:
            eth.append(f"cloned-mac-address={mac}")
        if b["mtu"] is not None:
            eth.append(f"mtu={int(b['mtu'])}")
        if eth:
            lines += ["[ethernet]", *eth, ""]
        lines += ["[bridge]"]
        if b["forward_delay"] is not None:
            lines.append(f"forward-delay={int(b['forward_delay'])}")
        lines += [f"stp={_tf(b['stp'])}", f"vlan-filtering={_tf(b['vlan_filtering'])}", ""]
        lines += [*_ip_section(b, 4), "", *_ip_section(b, 6)]
        _put(files, path_of(cid), "\n".join(lines) + "\n")
        for port in b["ports"]:
            if port in declared:
                continue  # the bond's or VLAN's own keyfile is the port
            pid = conn_id(name, port)
            body = [
                HEAD.rstrip("\n"),
                "[connection]",
                f"id={pid}",
                f"uuid={conn_uuid(pid)}",
                "type=ethernet",
                f"interface-name={port}",
                f"master={name}",
                "slave-type=bridge",
                "autoconnect=true",
                f"autoconnect-priority={PORT_PRIORITY}",
                "",
            ]
            if b["mtu"] is not None:
                body += ["[ethernet]", f"mtu={int(b['mtu'])}", ""]
            body += ["[bridge-port]"]
            _put(files, path_of(pid), "\n".join(body) + "\n")
    return dict(sorted(files.items()))


def parse_keyfile(text):
    """A keyfile -> {section: {key: value}} (the subset of GKeyFile syntax the renderer writes and NetworkManager
    reads: ``[section]``, ``key=value``, ``#`` comments). Raises ValueError naming the line that is neither."""
    out = {}
    section = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section in out:
                raise ValueError(f"line {n}: section [{section}] appears twice")
            out[section] = {}
            continue
        if section is None or "=" not in line:
            raise ValueError(f"line {n}: {raw!r} is neither a [section] nor key=value inside one")
        key, value = line.split("=", 1)
        if key.strip() in out[section]:
            raise ValueError(f"line {n}: {key.strip()} appears twice in [{section}]")
        out[section][key.strip()] = value.strip()
    return out


def check_keyfile(text, path):
    """The checks NetworkManager's keyfile plugin makes before it loads a profile that the renderer can break ->
    list of problems (empty when the file is loadable): the syntax, a [connection] with id, a UUID, a known type and
    an interface name, and a port's master."""
    try:
        data = parse_keyfile(text)
    except ValueError as exc:
        return [f"{path}: {exc}"]
    conn = data.get("connection", {})
    problems = [f"{path}: [connection] has no {k}" for k in ("id", "uuid", "type", "interface-name") if not conn.get(k)]
    try:
        uuid.UUID(conn.get("uuid", ""))
    except ValueError:
        problems.append(f"{path}: uuid {conn.get('uuid')!r} is not a UUID")
    if conn.get("type") not in ("bridge", "ethernet", "bond", "vlan"):
        problems.append(f"{path}: type {conn.get('type')!r} is none of bridge, ethernet, bond, vlan")
    if conn.get("slave-type") in ("bridge", "bond") and not conn.get("master"):
        problems.append(f"{path}: a {conn['slave-type']} port without master")
    if conn.get("type") == "vlan" and not (data.get("vlan", {}).get("id") and data.get("vlan", {}).get("parent")):
        problems.append(f"{path}: a VLAN without id or parent")
    for family in ("ipv4", "ipv6"):
        for key, value in data.get(family, {}).items():
            if key.startswith("address"):
                try:
                    ipaddress.ip_interface(value)
                except ValueError:
                    problems.append(f"{path}: [{family}] {key}={value} is not an address")
    return problems


def switch_lines(manifest):
    """Shell lines that make the written keyfiles live: reload, then activate each bond and its interfaces, each
    bridge, each VLAN, then the bridges' NIC ports (a port profile takes the NIC over from the profile that ran
    it)."""
    up = f"nmcli -w {NMCLI_WAIT} connection up id "
    lines = ["nmcli connection reload"]
    for name, nics in manifest.get("bonds", []):
        lines.append(up + _q(conn_id(name)))
        lines += [up + _q(conn_id(name, nic)) for nic in nics]
    lines += [up + _q(conn_id(name)) for name in manifest["bridges"]]
    lines += [up + _q(conn_id(name)) for name, _link in manifest.get("vlans", [])]
    declared = {n for n, _x in manifest.get("bonds", [])} | {n for n, _x in manifest.get("vlans", [])}
    for name, port in manifest.get("ports", []):
        if port not in declared:
            lines.append(up + _q(conn_id(name, port)))
    return lines


def revert_lines(manifest):
    """Shell lines run after the keyfiles are put back: reload (our profiles are gone, so NetworkManager
    deactivates them), delete the bridges, bonds and VLANs that did not exist, and activate again the profile that
    each link ran before (``manifest["nm_active"]``: link -> connection UUID)."""
    lines = ["nmcli connection reload"]
    lines += delete_lines(manifest, ["nmcli device delete {q} 2>/dev/null"])
    active = manifest.get("nm_active", {})
    # bridges first: a port profile of an old bridge needs its master
    order = [x for x in manifest["reconfigure"] if x in manifest["bridges"]]
    order += [x for x in manifest["reconfigure"] if x not in manifest["bridges"]]
    for link in order:
        if active.get(link):
            lines.append(f"nmcli -w {NMCLI_WAIT} connection up uuid {_q(active[link])}")
    return lines
