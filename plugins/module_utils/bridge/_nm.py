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

Connection UUIDs are derived from the names (:data:`UUID_NS`), so the files are the same at every run.
"""

from __future__ import annotations

import ipaddress
import uuid

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge._plan import _q

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


def render(bridges, host):
    """The keyfiles of the declared bridges -> {path: content}."""
    files = {}
    links = host.get("links", {})
    for b in bridges:
        name = b["name"]
        cid = conn_id(name)
        mac = links.get(b["ports"][0], {}).get("mac") if b["ports"] else None
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
        files[path_of(cid)] = "\n".join(lines) + "\n"
        for port in b["ports"]:
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
            files[path_of(pid)] = "\n".join(body) + "\n"
    return files


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
    if conn.get("type") not in ("bridge", "ethernet"):
        problems.append(f"{path}: type {conn.get('type')!r} is neither bridge nor ethernet")
    if conn.get("slave-type") == "bridge" and not conn.get("master"):
        problems.append(f"{path}: a bridge port without master")
    for family in ("ipv4", "ipv6"):
        for key, value in data.get(family, {}).items():
            if key.startswith("address"):
                try:
                    ipaddress.ip_interface(value)
                except ValueError:
                    problems.append(f"{path}: [{family}] {key}={value} is not an address")
    return problems


def switch_lines(manifest):
    """Shell lines that make the written keyfiles live: reload, then activate each bridge, then its ports (the port
    profile takes the NIC over from the profile that ran it)."""
    lines = ["nmcli connection reload"]
    for name in manifest["bridges"]:
        lines.append(f"nmcli -w {NMCLI_WAIT} connection up id {_q(conn_id(name))}")
    for name, port in manifest.get("ports", []):
        lines.append(f"nmcli -w {NMCLI_WAIT} connection up id {_q(conn_id(name, port))}")
    return lines


def revert_lines(manifest):
    """Shell lines run after the keyfiles are put back: reload (our profiles are gone, so NetworkManager
    deactivates them), delete the bridges that did not exist, and activate again the profile that each link ran
    before (``manifest["nm_active"]``: link -> connection UUID)."""
    lines = ["nmcli connection reload"]
    for name in manifest["new_bridges"]:
        lines.append(f"nmcli device delete {_q(name)} 2>/dev/null")
        lines.append(f"ip link delete dev {_q(name)} 2>/dev/null")
    for port in manifest["free_ports"]:
        lines.append(f"ip link set dev {_q(port)} nomaster 2>/dev/null")
    active = manifest.get("nm_active", {})
    # bridges first: a port profile of an old bridge needs its master
    order = [x for x in manifest["reconfigure"] if x in manifest["bridges"]]
    order += [x for x in manifest["reconfigure"] if x not in manifest["bridges"]]
    for link in order:
        if active.get(link):
            lines.append(f"nmcli -w {NMCLI_WAIT} connection up uuid {_q(active[link])}")
    return lines
