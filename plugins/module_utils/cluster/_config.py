# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: the declared corosync/pacemaker cluster of the dr role's entry point ``cluster`` -> the problems that
refuse it, each naming the variable (with its index inside a list).

The declaration (the role's ``dr_cluster_*`` variables without the prefix)::

    {"name", "nodes": [{"host", "name", "addresses": [link0, link1]}], "transport", "tiebreaker",
     "qnetd_host", "qnetd_address", "qdevice_algorithm", "password", "fencing": [{"name", "type", ...}],
     "fencing_lab_ack", "properties": {name: value}}

What the single variables' ranges are is the role's rule table (vars/main.yml, kvmops.fleet.var_problems);
this checks what only the variables together can say: two to 16 nodes in the inventory, one or two knet links
on every node (the same count, one address family per link, no address twice), the tiebreaker (two_node only
on two nodes; a qnetd host outside the cluster), fencing devices with their required fields that together reach
every node, and no cluster without fencing unless the lab acknowledgement says so. Secrets never appear in a
message.

No I/O and no ansible imports.
"""

from __future__ import annotations

import ipaddress
import re

NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")
HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
DEVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
DOMAIN = re.compile(r"^[^\s;:'\"\\]{1,200}$")
SECRET_TEXT = re.compile(r"^[^\s'\"\\]+$")
STABLE = re.compile(r"^/dev/disk/by-(id|path|uuid|partuuid)/[^\s]+$")
NODES_MIN, NODES_MAX = 2, 16
LINKS_MAX = 2  # the role declares one or two knet links per node
TYPES = ("sbd", "fence_virsh", "fence_ipmilan")
SBD_DEVICES_MAX = 3  # sbd's own limit
FIELDS = {
    "sbd": {"name", "type", "devices", "watchdog"},
    "fence_virsh": {"name", "type", "ip", "username", "password", "identity_file", "host_map"},
    "fence_ipmilan": {"name", "type", "node", "ip", "username", "password", "lanplus"},
}
# pacemaker properties that turn fencing off: only with the lab acknowledgement
NO_FENCING = {"stonith-enabled": "false", "stonith_enabled": "false"}


def _address(value):
    try:
        text = str(value)
        return ipaddress.ip_address(text.split("%", 1)[0] if ":" in text else text)
    except ValueError:
        return None


def _nodes(nodes, hosts, out):
    """The node names in order (None for a node whose name is bad), problems appended to ``out``."""
    v = "dr_cluster_nodes"
    if not isinstance(nodes, list):
        out.append(f"{v}: must be a list of nodes")
        return []
    if not NODES_MIN <= len(nodes) <= NODES_MAX:
        out.append(f"{v}: has {len(nodes)} nodes; a cluster has {NODES_MIN} to {NODES_MAX}")
    names, seen_hosts, seen_names, seen_addrs, links = [], {}, {}, {}, None
    families = {}
    for i, node in enumerate(nodes):
        where = f"{v}[{i}]"
        if not isinstance(node, dict):
            out.append(f"{where}: must be a mapping with host and addresses")
            names.append(None)
            continue
        host = node.get("host")
        if not isinstance(host, str) or not HOST.match(host):
            out.append(f"{where}.host: must be an inventory host name")
        else:
            if hosts is not None and host not in hosts:
                out.append(f"{where}.host: {host} is not in the inventory")
            if host in seen_hosts:
                out.append(f"{where}.host: {host} is also {v}[{seen_hosts[host]}]; each host once")
            seen_hosts.setdefault(host, i)
        name = node.get("name") or host
        if not isinstance(name, str) or not NODE_NAME.match(name):
            out.append(f"{where}.name: {name!r} is not a node name (letters, digits, '.' and '-', at most 63)")
            name = None
        elif name in seen_names:
            out.append(f"{where}.name: {name} is also {v}[{seen_names[name]}]; node names are unique")
        else:
            seen_names[name] = i
        names.append(name)
        addrs = node.get("addresses")
        if not isinstance(addrs, list) or not 1 <= len(addrs) <= LINKS_MAX:
            out.append(f"{where}.addresses: one or two knet link addresses (link 0, link 1), one per link")
            continue
        if links is None:
            links = len(addrs)
        elif len(addrs) != links:
            out.append(f"{where}.addresses: has {len(addrs)} links, {v}[0] has {links}; every node has the same links")
        for j, addr in enumerate(addrs):
            ip = _address(addr)
            if ip is None:
                out.append(f"{where}.addresses[{j}]: {addr!r} is not an IP address")
                continue
            if ip.is_unspecified or ip.is_multicast:
                out.append(f"{where}.addresses[{j}]: {addr} is not a unicast address a node can be reached at")
                continue
            key = str(ip)
            if key in seen_addrs:
                out.append(f"{where}.addresses[{j}]: {addr} is also {seen_addrs[key]}; each address once")
            seen_addrs.setdefault(key, f"{where}.addresses[{j}]")
            fam = families.setdefault(j, (ip.version, i))
            if fam[0] != ip.version:
                out.append(
                    f"{where}.addresses[{j}]: IPv{ip.version} but {v}[{fam[1]}]'s link {j} is IPv{fam[0]};"
                    " one address family per link"
                )
    return names


def _tiebreaker(cfg, nodes, hosts, out):
    kind = cfg.get("tiebreaker", "qdevice")
    count = len(nodes) if isinstance(nodes, list) else 0
    node_hosts = {n.get("host") for n in nodes if isinstance(n, dict)} if isinstance(nodes, list) else set()
    qnetd = cfg.get("qnetd_host") or ""
    if kind == "two_node":
        if count != 2:
            out.append(
                f"dr_cluster_tiebreaker: two_node is for a cluster of two nodes (there are {count}); use qdevice"
            )
        if qnetd:
            out.append("dr_cluster_qnetd_host: set, but dr_cluster_tiebreaker is two_node (no qdevice)")
        return
    if kind != "qdevice":
        out.append(f"dr_cluster_tiebreaker: {kind!r} is not qdevice or two_node")
        return
    if not qnetd:
        out.append(
            "dr_cluster_qnetd_host: required with dr_cluster_tiebreaker qdevice (the third host that runs"
            " corosync-qnetd), or set dr_cluster_tiebreaker: two_node"
        )
    else:
        if hosts is not None and qnetd not in hosts:
            out.append(f"dr_cluster_qnetd_host: {qnetd} is not in the inventory")
        if qnetd in node_hosts:
            out.append(f"dr_cluster_qnetd_host: {qnetd} is a cluster node; the tiebreaker must be a third host")
    addr = cfg.get("qnetd_address") or ""
    if not addr:
        out.append(
            "dr_cluster_qnetd_address: required with dr_cluster_tiebreaker qdevice (where the nodes reach"
            " corosync-qnetd)"
        )
    elif _address(addr) is None:
        out.append(f"dr_cluster_qnetd_address: {addr!r} is not an IP address")
    if cfg.get("qdevice_algorithm", "ffsplit") == "ffsplit" and count % 2:
        out.append(f"dr_cluster_qdevice_algorithm: ffsplit is for an even number of nodes (there are {count}); use lms")


def _secret(where, value, out, required=True):
    if value in (None, ""):
        if required:
            out.append(f"{where}: required")
        return
    if not isinstance(value, str) or not SECRET_TEXT.match(value) or not 8 <= len(value) <= 128:
        out.append(f"{where}: must be 8 to 128 characters without blanks, quotes or backslashes (value hidden)")


def _fencing(devices, names, out):
    v = "dr_cluster_fencing"
    if not isinstance(devices, list):
        out.append(f"{v}: must be a list of fencing devices")
        return set()
    known = {n for n in names if n}
    reached, seen, sbd = set(), {}, None
    for i, dev in enumerate(devices):
        where = f"{v}[{i}]"
        if not isinstance(dev, dict):
            out.append(f"{where}: must be a mapping with name and type")
            continue
        kind = dev.get("type")
        if kind not in TYPES:
            out.append(f"{where}.type: {kind!r} is not one of {', '.join(TYPES)}")
            continue
        name = dev.get("name")
        if not isinstance(name, str) or not DEVICE_NAME.match(name):
            out.append(
                f"{where}.name: {name!r} is not a resource name (a letter, then letters, digits, _ . -; at most 64)"
            )
        elif name in seen:
            out.append(f"{where}.name: {name} is also {v}[{seen[name]}]")
        else:
            seen[name] = i
        extra = sorted(k for k, val in dev.items() if k not in FIELDS[kind] and val is not None)
        if extra:
            out.append(f"{where}: {', '.join(extra)} is not a field of {kind}")
        if kind == "sbd":
            if sbd is not None:
                out.append(f"{where}: sbd is also {v}[{sbd}]; one sbd entry holds every device")
            sbd = i
            disks = dev.get("devices")
            if not isinstance(disks, list) or not 1 <= len(disks) <= SBD_DEVICES_MAX:
                out.append(f"{where}.devices: one to {SBD_DEVICES_MAX} shared disks every node sees")
            else:
                for j, disk in enumerate(disks):
                    if not isinstance(disk, str) or not STABLE.match(disk):
                        out.append(
                            f"{where}.devices[{j}]: {disk!r} is not a stable path (/dev/disk/by-id/...,"
                            " by-path, by-uuid, by-partuuid): kernel names change between boots"
                        )
            watchdog = dev.get("watchdog", "/dev/watchdog")
            if not isinstance(watchdog, str) or not re.match(r"^/dev/watchdog[0-9]*$", watchdog):
                out.append(f"{where}.watchdog: {watchdog!r} is not a watchdog device (/dev/watchdog, /dev/watchdogN)")
            reached |= known
            continue
        if _address(dev.get("ip")) is None:
            out.append(
                f"{where}.ip: {dev.get('ip')!r} is not an IP address (of the "
                + ("libvirt host" if kind == "fence_virsh" else "node's BMC")
                + ")"
            )
        user = dev.get("username")
        if not isinstance(user, str) or not USER.match(user):
            out.append(f"{where}.username: required (letters, digits, _ . @ -; at most 64)")
        if kind == "fence_virsh":
            has_key = dev.get("identity_file") not in (None, "")
            if has_key:
                key = dev["identity_file"]
                if not isinstance(key, str) or not key.startswith("/") or "\n" in key or " " in key:
                    out.append(f"{where}.identity_file: {key!r} is not an absolute path on the nodes")
                if dev.get("password") not in (None, ""):
                    out.append(f"{where}: password or identity_file, not both")
            else:
                _secret(f"{where}.password", dev.get("password"), out)
            hmap = dev.get("host_map")
            if not isinstance(hmap, dict) or not hmap:
                out.append(f"{where}.host_map: required: each node it fences -> its libvirt domain name")
                continue
            for node, domain in hmap.items():
                if node not in known:
                    out.append(f"{where}.host_map: {node!r} is not a node of dr_cluster_nodes")
                    continue
                if not isinstance(domain, str) or not DOMAIN.match(domain):
                    out.append(f"{where}.host_map.{node}: {domain!r} is not a libvirt domain name")
                reached.add(node)
        else:
            _secret(f"{where}.password", dev.get("password"), out)
            node = dev.get("node")
            if node not in known:
                out.append(f"{where}.node: {node!r} is not a node of dr_cluster_nodes (the node this BMC powers off)")
            else:
                reached.add(node)
            if not isinstance(dev.get("lanplus", True), bool):
                out.append(f"{where}.lanplus: must be true or false")
    return reached


def problems(cfg, hosts=None):
    """One sentence per problem of the declared cluster ``cfg``; ``hosts``: the inventory (None skips that)."""
    out = []
    nodes = cfg.get("nodes")
    names = _nodes(nodes, hosts, out)
    if cfg.get("transport", "knet") != "knet":
        out.append(f"dr_cluster_transport: {cfg.get('transport')!r}: the role sets up knet only")
    _tiebreaker(cfg, nodes if isinstance(nodes, list) else [], hosts, out)
    _secret("dr_cluster_password", cfg.get("password"), out)
    devices = cfg.get("fencing") or []
    reached = _fencing(devices, names, out)
    lab = cfg.get("fencing_lab_ack") is True
    if isinstance(devices, list) and devices:
        missing = [n for n in names if n and n not in reached]
        if missing:
            out.append(f"dr_cluster_fencing: no device reaches {', '.join(missing)}; every node needs one")
    elif isinstance(devices, list) and not lab:
        out.append(
            "dr_cluster_fencing: empty: a cluster without fencing can start a VM on a node while the node"
            " that lost contact still writes to its disk; declare sbd, fence_virsh or fence_ipmilan, or set"
            " dr_cluster_fencing_lab_ack: true if this is a lab"
        )
    props = cfg.get("properties")
    props = {} if props is None else props
    if not isinstance(props, dict):
        out.append("dr_cluster_properties: must be a mapping of pacemaker cluster properties")
        props = {}
    for key, value in props.items():
        if isinstance(value, (dict, list)) or value is None:
            out.append(f"dr_cluster_properties.{key}: must be text, a number or a bool")
        elif key in NO_FENCING and str(value).lower() in ("false", "0", "no", "off") and not lab:
            out.append(f"dr_cluster_properties.{key}: turns fencing off; only with dr_cluster_fencing_lab_ack: true")
    return out


def fencing_off(cfg):
    """True when the cluster runs without fencing (a lab, acknowledged): the role warns loudly."""
    props = cfg.get("properties") or {}
    off = any(str(props.get(k, "")).lower() in ("false", "0", "no", "off") for k in NO_FENCING)
    return not (cfg.get("fencing") or []) or off
