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
BOND_KEYS = ("name", "interfaces", "mode", "miimon", "primary", "mtu")
VLAN_KEYS = ("name", "id", "link", "mtu")
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
PRIMARY_MODES = ("active-backup", "balance-tlb", "balance-alb")  # the modes that use a primary (bonding.rst)
MIIMON_MIN, MIIMON_MAX = 1, 2**31 - 1  # ms; the kernel takes 0 to INT_MAX, and 0 turns the only monitor off
VLAN_ID_MIN, VLAN_ID_MAX = 1, 4094  # 802.1Q: 0 and 4095 are reserved
# kinds of links that are not NICs: a bond's interfaces and a VLAN's link (unless declared) must be none of them
NOT_NIC = ("bridge", "bond", "vlan", "team", "macvlan", "ipvlan")


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


def sibling(var, kind):
    """The variable name of the bonds or VLANs beside the bridges' ``var``: ``bridge_bridges`` ->
    ``bridge_bonds``, ``bridges`` -> ``bonds``."""
    return var[: -len("bridges")] + kind if var.endswith("bridges") else kind


def normalize_bond(bond):
    out = {"interfaces": [], "mode": "active-backup", "miimon": 100, "primary": None, "mtu": None}
    out.update({k: v for k, v in bond.items() if v is not None})
    out["interfaces"] = [str(i) for i in out["interfaces"]]
    return out


def normalize_vlan(vlan):
    out = {"id": None, "link": None, "mtu": None}
    out.update({k: v for k, v in vlan.items() if v is not None})
    return out


def _items(raw, var, what, keys, need=("name",)):
    if not isinstance(raw, list):
        raise BridgeError(f"{var}: a list of {what} is expected")
    for i, item in enumerate(raw):
        w = f"{var}[{i}]"
        if not isinstance(item, dict) or any(k not in item or item[k] is None for k in need):
            raise BridgeError(f"{w}: each of the {what} needs at least {' and '.join(need)}")
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise BridgeError(f"{w}: unknown keys {', '.join(unknown)}")


def _mtu_range(mtu, where, low=MTU_MIN):
    mtu = int(mtu)
    if not low <= mtu <= MTU_MAX:
        raise BridgeError(
            f"{where}: {mtu} is out of range {low}-{MTU_MAX}"
            + (" (IPv6 needs at least 1280)" if low == MTU_MIN_IPV6 else "")
        )
    return mtu


def _holds(host, nic):
    """The addresses (not link-local) and default routes a link holds now -> list of text."""
    out = [
        a
        for a in host.get("links", {}).get(nic, {}).get("addresses", [])
        if not ipaddress.ip_interface(a).ip.is_link_local
    ]
    out += [
        f"the default route via {r['gateway']}"
        for r in host.get("routes", [])
        if r.get("dev") == nic and r.get("dst") == "default" and r.get("gateway")
    ]
    return out


def validate(bridges, host, var="bridge_bridges", force=False, bonds=None, vlans=None):
    """Every semantic check of the declaration against the host, before anything changes.

    -> the normalized bridges (:func:`validate_all` returns the bonds and VLANs too). Raises BridgeError naming the
    variable (``bridge_bridges[1].ports[0]``)."""
    return validate_all(bridges, host, var, force, bonds, vlans)["bridges"]


def validate_all(bridges, host, var="bridge_bridges", force=False, bonds=None, vlans=None):
    """:func:`validate` for bridges, bonds and VLANs -> {"bridges", "bonds", "vlans"}, normalized.

    ``bonds`` and ``vlans`` are named in errors as the siblings of ``var`` (``bridge_bonds``, ``bridge_vlans``).
    A bridge's ports are NICs, declared bonds or declared VLANs; a bond's interfaces are NICs; a VLAN's link is a
    NIC, a declared bond or a declared bridge. Bonds and VLANs hold no addresses (a bridge over them does)."""
    links = host.get("links", {})
    bvar, vvar = sibling(var, "bonds"), sibling(var, "vlans")
    bonds = [] if bonds is None else bonds
    vlans = [] if vlans is None else vlans
    if not isinstance(bridges, list):
        raise BridgeError(f"{var}: a list of bridges is expected")
    _items(bonds, bvar, "bonds", BOND_KEYS)
    _items(vlans, vvar, "VLANs", VLAN_KEYS, ("name", "id", "link"))
    # every declared name, across bridges, bonds and VLANs: name -> (kind, where)
    declared = {}

    def declare(name, kind, where):
        if name in declared:
            other_kind, other = declared[name]
            raise BridgeError(
                f"{where}: {name} is also declared in {other}; names are unique across bridges, bonds and VLANs"
                if other_kind != kind
                else f"{where}: {kind} {name} is declared twice ({other})"
            )
        declared[name] = (kind, where.rsplit(".", 1)[0])

    nbonds = []
    for i, raw in enumerate(bonds):
        w = f"{bvar}[{i}]"
        b = normalize_bond(raw)
        declare(_name(b["name"], f"{w}.name"), "bond", f"{w}.name")
        nbonds.append(b)
    nvlans = []
    for i, raw in enumerate(vlans):
        w = f"{vvar}[{i}]"
        v = normalize_vlan(raw)
        declare(_name(v["name"], f"{w}.name"), "VLAN", f"{w}.name")
        nvlans.append(v)
    bond_of = {b["name"]: b for b in nbonds}
    vlan_of = {v["name"]: v for v in nvlans}
    norm = []
    users = {}  # link -> who uses it (a bridge's port, a bond's interface): each link has one user
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
        declare(name, "bridge", f"{w}.name")
        cur = links.get(name)
        if cur is not None and cur.get("kind") != "bridge":
            raise BridgeError(
                f"{w}.name: {name} exists on this host and is not a bridge (kind {cur.get('kind') or 'ether'})"
            )
        for j, port in enumerate(b["ports"]):
            pw = f"{w}.ports[{j}]"
            _name(port, pw)
            if port in users:
                raise BridgeError(f"{pw}: {port} is already {users[port]}; a NIC joins one bridge or bond")
            users[port] = f"a port of {w} ({name})"
            if port in bond_of or port in vlan_of:
                continue  # declared here: checked with the bonds and VLANs
            if port == name or declared.get(port, ("",))[0] == "bridge":
                raise BridgeError(f"{pw}: {port} is a bridge; a bridge cannot be a port of another bridge")
            if port not in links:
                raise BridgeError(
                    f"{pw}: {port} does not exist on this host and is no declared bond or VLAN "
                    f"(links: {', '.join(sorted(links))})"
                )
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
            _mtu_range(b["mtu"], f"{w}.mtu", MTU_MIN_IPV6 if b["_v6"] or b["dhcp6"] else MTU_MIN)
        if b["forward_delay"] is not None and not FORWARD_DELAY_MIN <= int(b["forward_delay"]) <= FORWARD_DELAY_MAX:
            raise BridgeError(
                f"{w}.forward_delay: {b['forward_delay']} is out of range "
                f"{FORWARD_DELAY_MIN}-{FORWARD_DELAY_MAX} seconds"
            )
        norm.append(b)
    bridge_of = {b["name"]: b for b in norm}
    _check_bonds(nbonds, links, host, bvar, force, users, declared)
    _check_vlans(nvlans, links, host, vvar, force, users, declared, bond_of, bridge_of)
    _check_loops(norm, nvlans, var, vvar)
    for i, b in enumerate(norm):
        if b["mtu"] is None:
            continue
        for j, port in enumerate(b["ports"]):
            lo, hi = _carries(port, links, bond_of, vlan_of, bridge_of)
            if not lo <= int(b["mtu"]) <= hi:
                raise BridgeError(
                    f"{var}[{i}].mtu: {int(b['mtu'])} is outside what port {port} ({var}[{i}].ports[{j}]) can carry "
                    f"({lo}-{hi})"
                )
    _check_against_host(norm, host, var, force, nbonds, nvlans)
    for b in norm:
        b.pop("_v6", None)
    return {"bridges": norm, "bonds": nbonds, "vlans": nvlans}


def _check_bonds(bonds, links, host, bvar, force, users, declared):
    for i, b in enumerate(bonds):
        w = f"{bvar}[{i}]"
        name = b["name"]
        cur = links.get(name)
        if cur is not None and cur.get("kind") != "bond":
            raise BridgeError(
                f"{w}.name: {name} exists on this host and is not a bond (kind {cur.get('kind') or 'ether'})"
            )
        if b["mode"] not in BOND_MODES:
            raise BridgeError(f"{w}.mode: {b['mode']!r} is not a bonding mode ({', '.join(BOND_MODES)})")
        if cur is not None and cur.get("bond_mode") and cur["bond_mode"] != b["mode"]:
            raise BridgeError(
                f"{w}.mode: {name} runs {cur['bond_mode']} on this host; the kernel changes a bond's mode only "
                "without members and down, which would cut it: delete the bond first, or keep its mode"
            )
        miimon = b["miimon"]
        if isinstance(miimon, bool) or not isinstance(miimon, int) or not MIIMON_MIN <= miimon <= MIIMON_MAX:
            raise BridgeError(
                f"{w}.miimon: {miimon!r} is out of range {MIIMON_MIN}-{MIIMON_MAX} ms (0 would turn link monitoring "
                "off, and with it every failover)"
            )
        if not b["interfaces"]:
            raise BridgeError(f"{w}.interfaces: a bond needs at least one NIC")
        for j, nic in enumerate(b["interfaces"]):
            iw = f"{w}.interfaces[{j}]"
            _name(nic, iw)
            if nic in users:
                raise BridgeError(f"{iw}: {nic} is already {users[nic]}; a NIC joins one bridge or bond")
            users[nic] = f"an interface of {w} ({name})"
            if nic in declared:
                kind, where = declared[nic]
                raise BridgeError(f"{iw}: {nic} is the {kind} {where}; a bond's interfaces are NICs")
            if nic not in links:
                raise BridgeError(f"{iw}: {nic} does not exist on this host (links: {', '.join(sorted(links))})")
            kind = links[nic].get("kind")
            if kind in NOT_NIC:
                raise BridgeError(f"{iw}: {nic} is a {kind}, not a NIC; a bond's interfaces are NICs")
            master = links[nic].get("master")
            if master and master != name:
                raise BridgeError(f"{iw}: {nic} is already enslaved to {master}")
            held = _holds(host, nic)
            if held and not force:
                raise BridgeError(
                    f"{iw}: {nic} holds {', '.join(held)}, which it would lose in bond {name} (bonds hold no "
                    f"addresses here: declare them on a bridge over the bond), or set bridge_force: true to drop it"
                )
        if b["primary"] is not None:
            if b["primary"] not in b["interfaces"]:
                raise BridgeError(
                    f"{w}.primary: {b['primary']} is not one of {w}.interfaces ({', '.join(b['interfaces'])})"
                )
            if b["mode"] not in PRIMARY_MODES:
                raise BridgeError(
                    f"{w}.primary: only {', '.join(PRIMARY_MODES)} use a primary interface (the mode is {b['mode']})"
                )
        if b["mtu"] is not None:
            mtu = _mtu_range(b["mtu"], f"{w}.mtu")
            for j, nic in enumerate(b["interfaces"]):
                lo, hi = links[nic].get("min_mtu") or MTU_MIN, links[nic].get("max_mtu") or MTU_MAX
                if not lo <= mtu <= hi:
                    raise BridgeError(
                        f"{w}.mtu: {mtu} is outside what {nic} ({w}.interfaces[{j}]) can carry ({lo}-{hi})"
                    )


def _check_vlans(vlans, links, host, vvar, force, users, declared, bond_of, bridge_of):
    on_link = {}  # (link, id) -> where
    for i, v in enumerate(vlans):
        w = f"{vvar}[{i}]"
        name, link = v["name"], v["link"]
        vid = v["id"]
        if isinstance(vid, bool) or not isinstance(vid, int) or not VLAN_ID_MIN <= vid <= VLAN_ID_MAX:
            raise BridgeError(f"{w}.id: {vid!r} is out of range {VLAN_ID_MIN}-{VLAN_ID_MAX}")
        _name(link, f"{w}.link")
        cur = links.get(name)
        if cur is not None and cur.get("kind") != "vlan":
            raise BridgeError(
                f"{w}.name: {name} exists on this host and is not a VLAN (kind {cur.get('kind') or 'ether'})"
            )
        if cur is not None and cur.get("vlan_id") is not None and cur["vlan_id"] != vid:
            raise BridgeError(
                f"{w}.id: {name} exists on this host with id {cur['vlan_id']}; a VLAN's id cannot change: delete it "
                "first, or give the new VLAN another name"
            )
        if cur is not None and cur.get("vlan_link") and cur["vlan_link"] != link:
            raise BridgeError(
                f"{w}.link: {name} exists on this host on {cur['vlan_link']}; a VLAN's link cannot change: delete it "
                "first, or give the new VLAN another name"
            )
        if (link, vid) in on_link:
            raise BridgeError(f"{w}.id: VLAN {vid} on {link} is also {on_link[(link, vid)]}")
        on_link[(link, vid)] = f"{w} ({name})"
        if link == name:
            raise BridgeError(f"{w}.link: a VLAN cannot be its own link ({name})")
        kind = declared.get(link, ("",))[0]
        if kind == "VLAN":
            raise BridgeError(f"{w}.link: {link} is a VLAN; VLANs on VLANs (802.1ad, QinQ) are not supported here")
        if link in users:
            where = users[link]
            up = where.split("(", 1)[1].rstrip(")") if "(" in where else ""
            raise BridgeError(
                f"{w}.link: {link} is {where}: frames of a bridge port or bond member are not its own; put the VLAN "
                f"on {up or 'the bridge or bond'} instead"
            )
        if kind in ("bond", "bridge"):
            continue
        if link not in links:
            raise BridgeError(
                f"{w}.link: {link} does not exist on this host and is no declared bond or bridge "
                f"(links: {', '.join(sorted(links))})"
            )
        lk = links[link].get("kind")
        if lk in NOT_NIC:
            raise BridgeError(
                f"{w}.link: {link} is a {lk} this declaration does not manage; a VLAN's link is a NIC, or a bond or "
                "bridge declared beside it"
            )
        master = links[link].get("master")
        if master:
            raise BridgeError(f"{w}.link: {link} is enslaved to {master}; put the VLAN on {master} instead")
        held = _holds(host, link)
        if held and not force:
            raise BridgeError(
                f"{w}.link: {link} holds {', '.join(held)}, which it would lose: a NIC under VLANs carries only "
                "them here (declare the addresses on a bridge), or set bridge_force: true to drop it"
            )
    for i, v in enumerate(vlans):
        if v["mtu"] is None:
            continue
        w = f"{vvar}[{i}]"
        mtu = _mtu_range(v["mtu"], f"{w}.mtu")
        lower = _lower_mtu(v["link"], links, bond_of, bridge_of)
        if mtu > lower:
            raise BridgeError(
                f"{w}.mtu: {mtu} is above the MTU of its link {v['link']} ({lower}); a VLAN carries at most its "
                "link's MTU"
            )


def _lower_mtu(name, links, bond_of, bridge_of):
    """The MTU a link will have: declared, else as it is now, else the kernel's default for a new device."""
    decl = bond_of.get(name) or bridge_of.get(name)
    if decl is not None and decl.get("mtu") is not None:
        return int(decl["mtu"])
    return links.get(name, {}).get("mtu") or 1500


def _carries(port, links, bond_of, vlan_of, bridge_of):
    """The MTU range a bridge port can take -> (low, high)."""
    if port in bond_of:
        nics = [links.get(n, {}) for n in bond_of[port]["interfaces"]]
        lo = max([n.get("min_mtu") or MTU_MIN for n in nics] or [MTU_MIN])
        hi = min([n.get("max_mtu") or MTU_MAX for n in nics] or [MTU_MAX])
        if bond_of[port]["mtu"] is not None:
            hi = min(hi, int(bond_of[port]["mtu"]))
        return lo, hi
    if port in vlan_of:
        v = vlan_of[port]
        return MTU_MIN, int(v["mtu"]) if v["mtu"] is not None else _lower_mtu(v["link"], links, bond_of, bridge_of)
    return links[port].get("min_mtu") or MTU_MIN, links[port].get("max_mtu") or MTU_MAX


def _check_loops(bridges, vlans, var, vvar):
    """A VLAN on a bridge that is (through other VLANs) a port of that same bridge: a loop no provider can build."""
    below = {b["name"]: list(b["ports"]) for b in bridges}
    where = {}
    for i, v in enumerate(vlans):
        below[v["name"]] = [v["link"]]
        where[v["name"]] = f"{vvar}[{i}].link"

    def walk(node, path):
        for nxt in below.get(node, []):
            if nxt in path:
                loop = [*path[path.index(nxt) :], nxt]
                first = next((n for n in loop if n in where), loop[0])
                raise BridgeError(f"{where.get(first, var)}: the declaration loops: {' -> '.join(loop)}")
            walk(nxt, [*path, nxt])

    for start in below:
        walk(start, [start])


def mac_of(name, host, bridges=(), bonds=(), vlans=()):
    """The MAC address a link has (or will have) from the NIC under it: a NIC its own (permanent) one, a bond its
    first interface's, a VLAN its link's, a bridge its first port's. None when unknown."""
    bond_of = {b["name"]: b for b in bonds}
    vlan_of = {v["name"]: v for v in vlans}
    bridge_of = {b["name"]: b for b in bridges}
    for _hop in range(16):
        if name in bond_of:
            name = bond_of[name]["interfaces"][0] if bond_of[name]["interfaces"] else None
        elif name in vlan_of:
            name = vlan_of[name]["link"]
        elif name in bridge_of:
            name = bridge_of[name]["ports"][0] if bridge_of[name]["ports"] else None
        else:
            return host.get("links", {}).get(name, {}).get("mac") if name else None
    return None


def _check_against_host(norm, host, var, force, bonds=(), vlans=()):
    """Addresses that collide with links the declaration does not take over, and uplinks that would lose their
    addresses or default route (refused unless ``force``)."""
    links = host.get("links", {})
    taken = {b["name"] for b in norm} | {p for b in norm for p in b["ports"]}
    taken |= {b["name"] for b in bonds} | {n for b in bonds for n in b["interfaces"]}
    taken |= {v["name"] for v in vlans} | {v["link"] for v in vlans}
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


def _put(files, path, text):
    if path in files:
        raise BridgeError(f"two declared links would share the file {path}: rename one of them")
    files[path] = text


def render_networkd(bridges, host, bonds=(), vlans=()):
    """The systemd-networkd files of the declared bridges, bonds and VLANs -> {path: content}.

    Per bridge: ``05-kvmops-<br>.netdev`` (the bridge device), ``05-kvmops-<br>.network`` (its addresses,
    gateway, routes, DNS) and one ``05-kvmops-<br>-port-<nic>.network`` per port (``Bridge=``). The port files
    match by name and come before any other file, so they take the port over. The bridge takes the MAC address
    of its first port: the host keeps its identity on the wire (neighbours' ARP caches, DHCP leases, switch port
    security), when it converts and when it reverts.

    Per bond: ``05-kvmops-<bond>.netdev`` (Kind=bond, its mode and MII monitor, the MAC of its first interface),
    ``05-kvmops-<bond>.network`` (unaddressed; ``Bridge=`` when it is a port, ``VLAN=`` for the VLANs on it) and one
    ``05-kvmops-<bond>-member-<nic>.network`` per interface (``Bond=``, ``PrimarySlave=``). Per VLAN:
    ``05-kvmops-<vlan>.netdev`` (Kind=vlan, ``Id=``) and ``05-kvmops-<vlan>.network`` (unaddressed, ``Bridge=`` when
    it is a port). A VLAN is created by the ``VLAN=`` line of its link's file: a declared bond's or bridge's, or
    ``05-kvmops-vlanlink-<nic>.network``, which takes the NIC over (unaddressed)."""
    files = {}
    declared = {b["name"] for b in bonds} | {v["name"] for v in vlans}
    vlans_on = {}
    for v in vlans:
        vlans_on.setdefault(v["link"], []).append(v["name"])
    port_of = {p: b["name"] for b in bridges for p in b["ports"]}
    head = "# Managed by kvmops.fleet.bridge: edits are replaced at the next run.\n"
    for b in bridges:
        name = b["name"]
        base = f"{NETWORKD_DIR}/{NETWORKD_PREFIX}{name}"
        netdev = [head, "[NetDev]", f"Name={name}", "Kind=bridge"]
        mac = mac_of(b["ports"][0], host, bridges, bonds, vlans) if b["ports"] else None
        if mac:
            netdev.append(f"MACAddress={mac}")
        if b["mtu"] is not None:
            netdev.append(f"MTUBytes={int(b['mtu'])}")
        netdev += ["", "[Bridge]", f"STP={_yn(b['stp'])}"]
        if b["forward_delay"] is not None:
            netdev.append(f"ForwardDelaySec={int(b['forward_delay'])}")
        netdev.append(f"VLANFiltering={_yn(b['vlan_filtering'])}")
        _put(files, f"{base}.netdev", "\n".join(netdev) + "\n")

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
        net += [f"VLAN={v}" for v in vlans_on.get(name, [])]
        for r in b["routes"]:
            net += ["", "[Route]", f"Destination={r['to']}"]
            if r["via"] is not None:
                net.append(f"Gateway={r['via']}")
            if r["metric"] is not None:
                net.append(f"Metric={int(r['metric'])}")
        _put(files, f"{base}.network", "\n".join(net) + "\n")

        for port in b["ports"]:
            if port in declared:
                continue  # a bond's or VLAN's own file says Bridge=
            body = [head, "[Match]", f"Name={port}", "", "[Link]", "RequiredForOnline=no"]
            if b["mtu"] is not None:
                body.append(f"MTUBytes={int(b['mtu'])}")
            body += ["", "[Network]", f"Bridge={name}", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
            _put(files, f"{base}-port-{port}.network", "\n".join(body) + "\n")

    def unaddressed(name, mtu, extra):
        out = [head, "[Match]", f"Name={name}", "", "[Link]", "RequiredForOnline=no"]
        if mtu is not None:
            out.append(f"MTUBytes={int(mtu)}")
        out += ["", "[Network]"] + ([f"Bridge={port_of[name]}"] if name in port_of else [])
        out += ["LinkLocalAddressing=no", "IPv6AcceptRA=no", "ConfigureWithoutCarrier=yes", *extra]
        out += [f"VLAN={v}" for v in vlans_on.get(name, [])]
        return "\n".join(out) + "\n"

    for bond in bonds:
        name = bond["name"]
        base = f"{NETWORKD_DIR}/{NETWORKD_PREFIX}{name}"
        netdev = [head, "[NetDev]", f"Name={name}", "Kind=bond"]
        mac = mac_of(name, host, bridges, bonds, vlans)
        if mac:
            netdev.append(f"MACAddress={mac}")
        if bond["mtu"] is not None:
            netdev.append(f"MTUBytes={int(bond['mtu'])}")
        netdev += ["", "[Bond]", f"Mode={bond['mode']}", f"MIIMonitorSec={int(bond['miimon'])}ms"]
        _put(files, f"{base}.netdev", "\n".join(netdev) + "\n")
        _put(files, f"{base}.network", unaddressed(name, bond["mtu"], []))
        for nic in bond["interfaces"]:
            member = [
                head,
                "[Match]",
                f"Name={nic}",
                "",
                "[Link]",
                "RequiredForOnline=no",
                "",
                "[Network]",
                f"Bond={name}",
            ]
            if bond["primary"] == nic:
                member.append("PrimarySlave=yes")
            member += ["LinkLocalAddressing=no", "IPv6AcceptRA=no"]
            _put(files, f"{base}-member-{nic}.network", "\n".join(member) + "\n")
    for v in vlans:
        name = v["name"]
        base = f"{NETWORKD_DIR}/{NETWORKD_PREFIX}{name}"
        netdev = [head, "[NetDev]", f"Name={name}", "Kind=vlan"]
        if v["mtu"] is not None:
            netdev.append(f"MTUBytes={int(v['mtu'])}")
        netdev += ["", "[VLAN]", f"Id={int(v['id'])}"]
        _put(files, f"{base}.netdev", "\n".join(netdev) + "\n")
        _put(files, f"{base}.network", unaddressed(name, v["mtu"], []))
    named = {b["name"] for b in bridges} | declared
    for nic in sorted({v["link"] for v in vlans} - named):
        _put(files, f"{NETWORKD_DIR}/{NETWORKD_PREFIX}vlanlink-{nic}.network", unaddressed(nic, None, []))
    return files


def live_differences(bridges, host, bonds=(), vlans=()):
    """What the running kernel lacks of the declaration (a bridge, bond or VLAN missing, a port or interface not
    in it, an address not on it, another MTU) -> list of sentences; empty when the host runs what is declared (so
    a run with unchanged files has nothing to do)."""
    links = host.get("links", {})
    out = []
    for bond in bonds:
        name = bond["name"]
        cur = links.get(name)
        if cur is None or cur.get("kind") != "bond":
            out.append(f"bond {name} does not exist")
            continue
        for nic in bond["interfaces"]:
            if links.get(nic, {}).get("master") != name:
                out.append(f"{nic} is not in bond {name}")
        if bond["mtu"] is not None and cur.get("mtu") != int(bond["mtu"]):
            out.append(f"{name} has MTU {cur.get('mtu')}, not {bond['mtu']}")
    for v in vlans:
        name = v["name"]
        cur = links.get(name)
        if cur is None or cur.get("kind") != "vlan":
            out.append(f"VLAN {name} does not exist")
            continue
        if v["mtu"] is not None and cur.get("mtu") != int(v["mtu"]):
            out.append(f"{name} has MTU {cur.get('mtu')}, not {v['mtu']}")
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


def delete_lines(manifest, before=()):
    """Shell lines that delete the links the transaction created (bridges, then VLANs, then bonds), free the links
    that had no master, and set down again the links that were down (a bond's member is taken down when it leaves
    the bond; a VLAN's NIC is brought up under it). ``before``: lines per new link before its ``ip link delete``
    (a provider's own)."""
    lines = []
    for name in list(manifest["new_bridges"]) + list(manifest.get("new_links", [])):
        lines += [line.format(q=_q(name)) for line in before]
        lines.append(f"ip link delete dev {_q(name)} 2>/dev/null")
    for port in manifest["free_ports"]:
        lines.append(f"ip link set dev {_q(port)} nomaster 2>/dev/null")
    for link in manifest.get("down_links", []):
        lines.append(f"ip link set dev {_q(link)} down 2>/dev/null")
    return lines


def networkd_revert_lines(manifest):
    """systemd-networkd's lines after the files are back: reload, delete new bridges, free ports, reconfigure."""
    lines = ["networkctl reload"]
    lines += delete_lines(manifest)
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
