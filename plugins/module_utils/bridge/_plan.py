# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: declared bridges + the host's links, addresses and routes -> validation, the provider's files.

No I/O and no ansible imports (unit-tested on literals, Python 3.9). The host side
(``_apply_io.py``) reads the host into the shape below, and writes what :func:`render_networkd`
returns under the commit-confirm guard.

Host state (from ``ip -j -d link``, ``ip -j addr``, ``ip -j route`` and ``ip -j -6 route``)::

    {"links": {"eth1": {"kind": None, "master": None, "mtu": 1500, "min_mtu": 68, "max_mtu": 65535,
                        "addresses": ["10.213.1.11/24"]}},
     "routes": [{"dst": "default", "gateway": "10.0.2.2", "dev": "eth0"}]}

A declared bridge, as the role passes it (``bridge_bridges`` items)::

    {"name": "br0", "ports": ["eth1"], "addresses": ["10.213.1.11/24"], "dhcp4": False, "dhcp6": False,
     "gateway4": None, "gateway6": None, "routes": [{"to": "10.9.0.0/16", "via": "10.213.1.1", "metric": None}],
     "dns": [], "mtu": None, "stp": False, "forward_delay": None, "vlan_filtering": False}
"""

from __future__ import annotations

import ipaddress
import re

# Files this collection owns in /etc/systemd/network: "05-" sorts before the distributions' and
# installers' own files (10-netplan-*, 50-cloud-init, ...), and networkd applies the first .network
# file that matches a link, so a port's file here takes the port over from whatever configured it.
NETWORKD_DIR = "/etc/systemd/network"
NETWORKD_PREFIX = "05-kvmops-"
IFNAMSIZ = 15  # the kernel's limit on an interface name (IFNAMSIZ - 1)
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MTU_MIN, MTU_MAX, MTU_MIN_IPV6 = 68, 65535, 1280
FORWARD_DELAY_MIN, FORWARD_DELAY_MAX = 2, 30  # seconds, the kernel's range (br_set_forward_delay)
KEYS = (
    "name",
    "ports",
    "addresses",
    "dhcp4",
    "dhcp6",
    "gateway4",
    "gateway6",
    "routes",
    "dns",
    "mtu",
    "stp",
    "forward_delay",
    "vlan_filtering",
)


class BridgeError(Exception):
    """Bad input or a host the declaration cannot apply to; the message names the variable."""


def _addr(text, where):
    try:
        iface = ipaddress.ip_interface(str(text))
    except ValueError:
        raise BridgeError(f"{where}: {text!r} is not an address with a prefix length (e.g. 192.0.2.10/24)") from None
    if "/" not in str(text):
        raise BridgeError(f"{where}: {text!r} has no prefix length (e.g. {text}/24)")
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise BridgeError(f"{where}: {text} cannot be a host address")
    net = iface.network
    if iface.version == 4 and net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise BridgeError(f"{where}: {text} is the network or broadcast address of {net}")
    return iface


def _ip(text, where, version=None):
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        raise BridgeError(f"{where}: {text!r} is not an IP address") from None
    if version is not None and ip.version != version:
        raise BridgeError(f"{where}: {text} is not an IPv{version} address")
    return ip


def _name(text, where):
    text = str(text)
    if not text or len(text) > IFNAMSIZ:
        raise BridgeError(f"{where}: {text!r} is {len(text)} characters long; an interface name has 1 to {IFNAMSIZ}")
    if not NAME_RE.match(text) or text in (".", ".."):
        raise BridgeError(f"{where}: {text!r} is not a valid interface name (letters, digits, '_', '.', '-')")
    return text


def normalize(bridge):
    """A declared bridge with every key present (the defaults of the role's argument spec)."""
    out = {
        "ports": [],
        "addresses": [],
        "dhcp4": False,
        "dhcp6": False,
        "gateway4": None,
        "gateway6": None,
        "routes": [],
        "dns": [],
        "mtu": None,
        "stp": False,
        "forward_delay": None,
        "vlan_filtering": False,
    }
    out.update({k: v for k, v in bridge.items() if v is not None})
    out["ports"] = [str(p) for p in out["ports"]]
    out["addresses"] = [str(a) for a in out["addresses"]]
    out["dns"] = [str(d) for d in out["dns"]]
    out["routes"] = [
        dict({"via": None, "metric": None}, **{k: v for k, v in r.items() if v is not None}) for r in out["routes"]
    ]
    return out


def validate(bridges, host, var="bridge_bridges", force=False):
    """Every semantic check of the declaration against the host, before anything changes.

    -> the normalized bridges. Raises BridgeError naming the variable (``bridge_bridges[1].ports[0]``)."""
    links = host.get("links", {})
    if not isinstance(bridges, list):
        raise BridgeError(f"{var}: a list of bridges is expected")
    norm = []
    names = {}
    port_owner = {}
    seen_addrs = []  # (interface, where)
    for i, raw in enumerate(bridges):
        w = f"{var}[{i}]"
        if not isinstance(raw, dict) or "name" not in raw:
            raise BridgeError(f"{w}: each bridge needs at least a name")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise BridgeError(f"{w}: unknown keys {', '.join(unknown)}")
        b = normalize(raw)
        name = _name(b["name"], f"{w}.name")
        if name in names:
            raise BridgeError(f"{w}.name: bridge {name} is declared twice ({var}[{names[name]}])")
        names[name] = i
        cur = links.get(name)
        if cur is not None and cur.get("kind") != "bridge":
            raise BridgeError(
                f"{w}.name: {name} exists on this host and is not a bridge (kind {cur.get('kind') or 'ether'})"
            )
        for j, port in enumerate(b["ports"]):
            pw = f"{w}.ports[{j}]"
            _name(port, pw)
            if port in port_owner:
                raise BridgeError(f"{pw}: {port} is already a port of {port_owner[port]}; a NIC joins one bridge")
            port_owner[port] = f"{w} ({name})"
            if port not in links:
                raise BridgeError(f"{pw}: {port} does not exist on this host (links: {', '.join(sorted(links))})")
            kind = links[port].get("kind")
            if kind == "bridge":
                raise BridgeError(f"{pw}: {port} is a bridge; a bridge cannot be a port of another bridge")
            master = links[port].get("master")
            if master and master != name:
                raise BridgeError(f"{pw}: {port} is already enslaved to {master}")
        b["_v6"] = False
        for j, text in enumerate(b["addresses"]):
            iface = _addr(text, f"{w}.addresses[{j}]")
            b["_v6"] = b["_v6"] or iface.version == 6
            for other, where, owner in seen_addrs:
                if other.ip == iface.ip:
                    raise BridgeError(f"{w}.addresses[{j}]: {iface.ip} is declared twice ({where})")
                if owner != name and other.version == iface.version and other.network.overlaps(iface.network):
                    raise BridgeError(
                        f"{w}.addresses[{j}]: {text} overlaps {other.with_prefixlen} ({where}, bridge "
                        f"{owner}): two bridges on one subnet"
                    )
            seen_addrs.append((iface, f"{w}.addresses[{j}]", name))
        for key, version in (("gateway4", 4), ("gateway6", 6)):
            if b[key] is None:
                continue
            gw = _ip(b[key], f"{w}.{key}", version)
            dhcp = b["dhcp4"] if version == 4 else b["dhcp6"]
            nets = [
                ipaddress.ip_interface(a).network
                for a in b["addresses"]
                if ipaddress.ip_interface(a).version == version
            ]
            if not dhcp and not gw.is_link_local and not any(gw in n for n in nets):
                raise BridgeError(
                    f"{w}.{key}: {gw} is in none of the bridge's IPv{version} subnets "
                    f"({', '.join(str(n) for n in nets) or 'none'})"
                )
        for j, route in enumerate(b["routes"]):
            rw = f"{w}.routes[{j}]"
            if "to" not in route:
                raise BridgeError(f"{rw}: a route needs 'to'")
            try:
                dst = ipaddress.ip_network(str(route["to"]), strict=True)
            except ValueError as exc:
                raise BridgeError(f"{rw}.to: {route['to']!r} is not a network: {exc}") from None
            if route["via"] is not None:
                _ip(route["via"], f"{rw}.via", dst.version)
            if route["metric"] is not None and not 0 <= int(route["metric"]) <= 4294967295:
                raise BridgeError(f"{rw}.metric: {route['metric']} is out of range 0-4294967295")
        for j, dns in enumerate(b["dns"]):
            _ip(dns, f"{w}.dns[{j}]")
        if b["mtu"] is not None:
            mtu = int(b["mtu"])
            low = MTU_MIN_IPV6 if b["_v6"] or b["dhcp6"] else MTU_MIN
            if not low <= mtu <= MTU_MAX:
                raise BridgeError(
                    f"{w}.mtu: {mtu} is out of range {low}-{MTU_MAX}"
                    + (" (IPv6 needs at least 1280)" if low == MTU_MIN_IPV6 else "")
                )
            for j, port in enumerate(b["ports"]):
                lo, hi = links[port].get("min_mtu") or MTU_MIN, links[port].get("max_mtu") or MTU_MAX
                if not lo <= mtu <= hi:
                    raise BridgeError(
                        f"{w}.mtu: {mtu} is outside what port {port} ({w}.ports[{j}]) can carry ({lo}-{hi})"
                    )
        if b["forward_delay"] is not None and not FORWARD_DELAY_MIN <= int(b["forward_delay"]) <= FORWARD_DELAY_MAX:
            raise BridgeError(
                f"{w}.forward_delay: {b['forward_delay']} is out of range "
                f"{FORWARD_DELAY_MIN}-{FORWARD_DELAY_MAX} seconds"
            )
        norm.append(b)
    _check_against_host(norm, host, var, force)
    for b in norm:
        b.pop("_v6", None)
    return norm


def _check_against_host(norm, host, var, force):
    """Addresses that collide with links the declaration does not take over, and uplinks that would lose their
    addresses or default route (refused unless ``force``)."""
    links = host.get("links", {})
    taken = {b["name"] for b in norm} | {p for b in norm for p in b["ports"]}
    for i, b in enumerate(norm):
        w = f"{var}[{i}]"
        for j, text in enumerate(b["addresses"]):
            iface = ipaddress.ip_interface(text)
            for link, info in sorted(links.items()):
                if link in taken:
                    continue
                for have in info.get("addresses", []):
                    other = ipaddress.ip_interface(have)
                    if (
                        other.version == iface.version
                        and not other.ip.is_link_local
                        and other.network.overlaps(iface.network)
                    ):
                        raise BridgeError(
                            f"{w}.addresses[{j}]: {text} overlaps {have} on {link}, which this "
                            "declaration does not manage"
                        )
        if force:
            continue
        kept = {ipaddress.ip_interface(a).ip for a in b["addresses"]}
        for j, port in enumerate(b["ports"]):
            lost = [
                a
                for a in links.get(port, {}).get("addresses", [])
                if not ipaddress.ip_interface(a).ip.is_link_local and ipaddress.ip_interface(a).ip not in kept
            ]
            if lost and not (b["dhcp4"] or b["dhcp6"]):
                raise BridgeError(
                    f"{w}.ports[{j}]: {port} holds {', '.join(lost)}, which {b['name']} would not "
                    f"keep: declare it in {w}.addresses (or DHCP), or set bridge_force: true to drop it"
                )
            for route in host.get("routes", []):
                if route.get("dev") == port and route.get("dst") == "default" and route.get("gateway"):
                    gw = ipaddress.ip_address(route["gateway"])
                    key = "gateway4" if gw.version == 4 else "gateway6"
                    dhcp = b["dhcp4"] if gw.version == 4 else b["dhcp6"]
                    if b[key] is None and not dhcp:
                        raise BridgeError(
                            f"{w}.{key}: the default route via {gw} leaves through {port} and "
                            f"{b['name']} declares no gateway; set {w}.{key} (or DHCP), or "
                            "bridge_force: true to drop the route"
                        )


def _yn(value):
    return "yes" if value else "no"


def render_networkd(bridges, host):
    """The systemd-networkd files of the declared bridges -> {path: content}.

    Per bridge: ``05-kvmops-<br>.netdev`` (the bridge device), ``05-kvmops-<br>.network`` (its addresses,
    gateway, routes, DNS) and one ``05-kvmops-<br>-port-<nic>.network`` per port (``Bridge=``). The port files
    match by name and come before any other file, so they take the port over. The bridge takes the MAC address
    of its first port: the host keeps its identity on the wire (neighbours' ARP caches, DHCP leases, switch port
    security), when it converts and when it reverts."""
    files = {}
    links = host.get("links", {})
    for b in bridges:
        name = b["name"]
        base = f"{NETWORKD_DIR}/{NETWORKD_PREFIX}{name}"
        head = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
        netdev = [head, "[NetDev]", f"Name={name}", "Kind=bridge"]
        mac = links.get(b["ports"][0], {}).get("mac") if b["ports"] else None
        if mac:
            netdev.append(f"MACAddress={mac}")
        if b["mtu"] is not None:
            netdev.append(f"MTUBytes={int(b['mtu'])}")
        netdev += ["", "[Bridge]", f"STP={_yn(b['stp'])}"]
        if b["forward_delay"] is not None:
            netdev.append(f"ForwardDelaySec={int(b['forward_delay'])}")
        netdev.append(f"VLANFiltering={_yn(b['vlan_filtering'])}")
        files[f"{base}.netdev"] = "\n".join(netdev) + "\n"

        dhcp = {(True, True): "yes", (True, False): "ipv4", (False, True): "ipv6"}.get((b["dhcp4"], b["dhcp6"]), "no")
        has_v6 = b["dhcp6"] or any(ipaddress.ip_interface(a).version == 6 for a in b["addresses"]) or b["gateway6"]
        net = [head, "[Match]", f"Name={name}", "", "[Link]", "RequiredForOnline=no"]
        if b["mtu"] is not None:
            net.append(f"MTUBytes={int(b['mtu'])}")
        net += [
            "",
            "[Network]",
            f"DHCP={dhcp}",
            "ConfigureWithoutCarrier=yes",
            f"LinkLocalAddressing={'ipv6' if has_v6 else 'no'}",
            f"IPv6AcceptRA={_yn(b['dhcp6'])}",
        ]
        net += [f"Address={a}" for a in b["addresses"]]
        net += [f"Gateway={b[k]}" for k in ("gateway4", "gateway6") if b[k] is not None]
        net += [f"DNS={d}" for d in b["dns"]]
        for r in b["routes"]:
            net += ["", "[Route]", f"Destination={r['to']}"]
            if r["via"] is not None:
                net.append(f"Gateway={r['via']}")
            if r["metric"] is not None:
                net.append(f"Metric={int(r['metric'])}")
        files[f"{base}.network"] = "\n".join(net) + "\n"

        for port in b["ports"]:
            body = [head, "[Match]", f"Name={port}", "", "[Link]", "RequiredForOnline=no"]
            if b["mtu"] is not None:
                body.append(f"MTUBytes={int(b['mtu'])}")
            body += ["", "[Network]", f"Bridge={name}", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
            files[f"{base}-port-{port}.network"] = "\n".join(body) + "\n"
    return files


def live_differences(bridges, host):
    """What the running kernel lacks of the declaration (a bridge missing, a port not in it, an address not on
    it) -> list of sentences; empty when the host runs what is declared (so a run with unchanged files has
    nothing to do)."""
    links = host.get("links", {})
    out = []
    for b in bridges:
        name = b["name"]
        cur = links.get(name)
        if cur is None or cur.get("kind") != "bridge":
            out.append(f"bridge {name} does not exist")
            continue
        for port in b["ports"]:
            if links.get(port, {}).get("master") != name:
                out.append(f"{port} is not a port of {name}")
        have = {ipaddress.ip_interface(a) for a in cur.get("addresses", [])}
        for a in b["addresses"]:
            if ipaddress.ip_interface(a) not in have:
                out.append(f"{a} is not on {name}")
        if b["mtu"] is not None and cur.get("mtu") != int(b["mtu"]):
            out.append(f"{name} has MTU {cur.get('mtu')}, not {b['mtu']}")
    return out


def diff_files(before, after):
    """{path: content or None} before and after -> the changed paths, sorted."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def _q(text):
    """A POSIX shell single-quoted word."""
    return "'" + str(text).replace("'", "'\"'\"'") + "'"


def networkd_revert_lines(manifest):
    """systemd-networkd's lines after the files are back: reload, delete new bridges, free ports, reconfigure."""
    lines = ["networkctl reload"]
    for name in manifest["new_bridges"]:
        lines.append(f"ip link delete dev {_q(name)} 2>/dev/null")
    for port in manifest["free_ports"]:
        lines.append(f"ip link set dev {_q(port)} nomaster 2>/dev/null")
    if manifest["reconfigure"]:
        lines.append("networkctl reconfigure " + " ".join(_q(x) for x in manifest["reconfigure"]))
    return lines


def revert_script(txn, state_dir, manifest, timeout, pre=(), post=None):
    """The script the host's revert timer runs: put back the files of ``manifest`` and the links as they were.

    ``manifest``: {"files": {path: backup name or None (the file did not exist)}, "new_bridges": [...],
    "free_ports": [ports that had no master], "reconfigure": [links to re-apply]}. ``pre``: the provider's lines
    before the files are put back, ``post``: after (default: systemd-networkd's, :func:`networkd_revert_lines`).
    It runs once (a stamp ``reverted`` holding the reason), under a lock, and never depends on the controller."""
    d = f"{state_dir}/pending"
    lines = [
        "#!/bin/sh",
        f"# kvmops.fleet bridge: revert of transaction {txn}. Armed by kvm_bridge_apply; run by the transient",
        "# timer kvmops-bridge-revert.timer unless the controller confirms, or at once by a rollback.",
        "set -u",
        f"dir={_q(d)}",
        'exec 9>"$dir/lock"',
        "flock 9",
        '[ -e "$dir/reverted" ] && exit 0',
        f"reason={_q(f'the controller did not confirm the change within {timeout} s')}",
        '[ -s "$dir/reason" ] && reason=$(cat "$dir/reason")',
    ]
    lines += list(pre)
    for path, backup in sorted(manifest["files"].items()):
        if backup is None:
            lines.append(f"rm -f -- {_q(path)}")
        else:
            lines.append(f'cp -p -- "$dir/files/{backup}" {_q(path)}')
    lines += networkd_revert_lines(manifest) if post is None else list(post)
    lines += ['printf "%s\\n" "$reason" > "$dir/reverted.tmp"', 'mv "$dir/reverted.tmp" "$dir/reverted"', ""]
    return "\n".join(lines)


def switch_script(txn, state_dir, reconfigure, lines=None):
    """The script that makes the written files live (run detached from the module's SSH session, so the
    module's answer reaches the controller before the link changes under it). ``lines``: the provider's commands
    (default: systemd-networkd's reload and reconfigure of ``reconfigure``)."""
    d = f"{state_dir}/pending"
    if lines is None:
        lines = ["networkctl reload"]
        if reconfigure:
            lines.append("networkctl reconfigure " + " ".join(_q(x) for x in reconfigure))
    return "\n".join(
        [
            "#!/bin/sh",
            f"# kvmops.fleet bridge: make transaction {txn} live.",
            "set -u",
            f"dir={_q(d)}",
            "sleep 1",
            *lines,
            'touch "$dir/applied"',
            "",
        ]
    )
