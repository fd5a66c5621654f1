# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: a declared DRBD resource -> the problems that refuse it, and its configuration text for the DRBD version
that runs (8.4 and 9 differ: where fencing goes, node ids, quorum, connection-mesh, diskless nodes).

A resource (the dr role's ``dr_drbd_resources`` item, the drbd_resource module's options)::

    {"name", "port", "protocol", "secret", "cram_hmac_alg", "sync_rate", "net_timeout", "connect_int",
     "ping_int", "disk_timeout", "fencing", "handlers": {name: command}, "quorum", "on_no_quorum",
     "initial_primary", "force", "nodes": [{"host", "hostname", "address", "disk", "minor", "node_id",
     "diskless"}]}

``problems(resources, hosts, var)`` is used by the role on the controller (``hosts``: the inventory) and by the
module on each host (``hosts=None``); every message names the variable with its index. What only the host can
know (the running version, the device) is checked by the module.

No I/O and no ansible imports.
"""

from __future__ import annotations

import ipaddress
import re

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
# DRBD's own limit on shared-secret (SHARED_SECRET_MAX, drbd_limits.h) and ours below it
SECRET_MIN, SECRET_MAX = 16, 64
SECRET_TEXT = re.compile(r'^[^"\\\s]+$')
# resync-rate: DRBD's bounds (drbd_limits.h DRBD_RESYNC_RATE_MIN/MAX, KiB/s)
RATE_MIN_KIB, RATE_MAX_KIB = 1, 4194304
RATE = re.compile(r"^([0-9]{1,10})([KMG])$")
MINOR_MAX = 1048575
MINOR_MAX_84 = 255
NODE_ID_MAX = 31
# kernel names that change between boots: a backing device must be named by a stable path
UNSTABLE = re.compile(r"^/dev/(sd[a-z]+|vd[a-z]+|hd[a-z]+|xvd[a-z]+|nvme\d+n\d+)(p?\d+)?$")
HANDLERS = (
    "fence-peer",
    "unfence-peer",
    "after-resync-target",
    "before-resync-target",
    "split-brain",
    "pri-lost-after-sb",
    "local-io-error",
    "initial-split-brain",
    "quorum-lost",
)
HANDLER_TEXT = re.compile(r'^[^"\\\n\r]{1,512}$')
FENCING = ("dont-care", "resource-only", "resource-and-stonith")


class ConfigError(ValueError):
    """A resource the module refuses; the message names the variable."""


def rate_kib(text):
    """'100M' -> 102400 (KiB/s), or None when it is not a rate."""
    m = RATE.match(str(text).strip().upper()) if text is not None else None
    if m is None:
        return None
    return int(m.group(1)) * {"K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]


def _address(text):
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def _nodes_with_disk(res):
    return [n for n in res.get("nodes") or [] if not n.get("diskless")]


def problems(resources, hosts=None, var="dr_drbd_resources"):
    """-> [message] (empty: every resource is fine as far as the declaration goes)."""
    out = []
    names = {}
    minors = {}  # (host, minor) -> where
    ports = {}  # (host, port) -> where
    for i, res in enumerate(resources or []):
        at = f"{var}[{i}]"
        name = res.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            out.append(f"{at}.name: {name!r} is not a DRBD resource name (letters, digits, _ . + -, at most 64)")
            continue
        if name in names:
            out.append(f"{at}.name: {name} is also {names[name]}.name: give each resource once")
        names.setdefault(name, at)
        secret = res.get("secret")
        if not isinstance(secret, str) or not SECRET_MIN <= len(secret) <= SECRET_MAX:
            length = len(secret) if isinstance(secret, str) else 0
            out.append(f"{at}.secret: must have {SECRET_MIN} to {SECRET_MAX} characters (has {length}; value hidden)")
        elif not SECRET_TEXT.match(secret):
            out.append(f"{at}.secret: no blanks, double quotes or backslashes (value hidden)")
        rate = rate_kib(res.get("sync_rate"))
        if rate is None or not RATE_MIN_KIB <= rate <= RATE_MAX_KIB:
            out.append(
                f"{at}.sync_rate: {res.get('sync_rate')!r} is not a rate from 1K to 4G (KiB/s with K, M or G, "
                "e.g. 100M)"
            )
        port = res.get("port")
        for key, value in (res.get("handlers") or {}).items():
            if key not in HANDLERS:
                out.append(f"{at}.handlers: {key!r} is not a DRBD handler ({', '.join(HANDLERS)})")
            elif not isinstance(value, str) or not HANDLER_TEXT.match(value):
                out.append(
                    f"{at}.handlers.{key}: a command of 1 to 512 characters without double quotes, "
                    "backslashes or newlines"
                )
        nodes = res.get("nodes") or []
        if len(nodes) < 2:
            out.append(f"{at}.nodes: a resource needs at least two nodes, got {len(nodes)}")
        seen_hosts, seen_ids = {}, {}
        for j, node in enumerate(nodes):
            nat = f"{at}.nodes[{j}]"
            host = node.get("host")
            if not isinstance(host, str) or not HOST.match(host):
                out.append(f"{nat}.host: {host!r} is not an inventory host name")
                continue
            if host in seen_hosts:
                out.append(f"{nat}.host: {host} is also {seen_hosts[host]}: each node once per resource")
            seen_hosts.setdefault(host, nat)
            if hosts is not None and host not in hosts:
                out.append(f"{nat}.host: {host} is not in the inventory")
            hostname = node.get("hostname") or host
            if not HOST.match(str(hostname)):
                out.append(f"{nat}.hostname: {hostname!r} is not a host name")
            if _address(node.get("address")) is None:
                out.append(f"{nat}.address: {node.get('address')!r} is not an IPv4 or IPv6 address")
            disk = node.get("disk")
            if node.get("diskless"):
                if disk:
                    out.append(f"{nat}.disk: a diskless node has no disk (give diskless or disk, not both)")
            elif not isinstance(disk, str) or not disk.startswith("/dev/") or "\n" in disk or " " in disk:
                out.append(f"{nat}.disk: {disk!r} is not a block device path under /dev")
            elif UNSTABLE.match(disk):
                out.append(
                    f"{nat}.disk: {disk} is a kernel name that can change at the next boot: name the device by "
                    "a stable path (/dev/disk/by-id/..., /dev/disk/by-path/..., /dev/VG/LV)"
                )
            minor = node.get("minor")
            if isinstance(minor, int) and (host, minor) in minors:
                out.append(
                    f"{nat}.minor: minor {minor} on {host} is also {minors[(host, minor)]}: one device per minor"
                )
            minors.setdefault((host, minor), f"{nat}.minor ({name})")
            if (host, port) in ports and ports[(host, port)][0] != name:
                out.append(f"{at}.port: port {port} on {host} is also {ports[(host, port)][1]}: one resource per port")
            ports.setdefault((host, port), (name, f"{at}.port ({name})"))
            node_id = node.get("node_id")
            if node_id is not None:
                if node_id in seen_ids:
                    out.append(f"{nat}.node_id: {node_id} is also {seen_ids[node_id]}.node_id")
                seen_ids.setdefault(node_id, nat)
        with_disk = _nodes_with_disk(res)
        ids = [n.get("node_id") for n in nodes]
        if any(x is not None for x in ids) and any(x is None for x in ids):
            out.append(f"{at}.nodes: give node_id on every node or on none (they are then numbered in order)")
        primary = res.get("initial_primary")
        if primary and primary not in {n.get("host") for n in with_disk}:
            out.append(
                f"{at}.initial_primary: {primary} is not one of this resource's nodes with a disk "
                f"({', '.join(str(n.get('host')) for n in with_disk)})"
            )
        quorum = res.get("quorum") or "off"
        if quorum != "off" and len(nodes) < 3:
            out.append(
                f"{at}.quorum: {quorum} on {len(nodes)} nodes without a tiebreaker: with two nodes, neither "
                "side has a majority once the link breaks, so both freeze (on-no-quorum) or, worse, the one "
                "that keeps quorum cannot be told apart from a split; add a third node (a diskless tiebreaker: "
                "nodes[].diskless) or set quorum: off"
            )
        if len(with_disk) < 2 and len(nodes) >= 2:
            out.append(f"{at}.nodes: at least two nodes need a disk (diskless nodes only break ties)")
    return out


def needs_9(res):
    """Why the resource needs DRBD 9 (None: 8.4 can run it)."""
    nodes = res.get("nodes") or []
    if len(nodes) > 2:
        return f"{len(nodes)} nodes (DRBD 8.4 replicates between two)"
    if any(n.get("diskless") for n in nodes):
        return "a diskless node"
    if (res.get("quorum") or "off") != "off":
        return "quorum"
    return None


def this_node(res, host):
    for node in res.get("nodes") or []:
        if node.get("host") == host:
            return node
    return None


def node_ids(res):
    """host -> node id (declared, or numbered in order)."""
    return {n["host"]: (n["node_id"] if n.get("node_id") is not None else i) for i, n in enumerate(res["nodes"])}


def _handlers(res):
    items = sorted((res.get("handlers") or {}).items())
    if not items:
        return []
    return ["  handlers {"] + [f'    {k} "{v}";' for k, v in items] + ["  }"]


def render(res, version):
    """The resource's configuration file for DRBD ``version`` ("8.4" or "9"), deterministic (same input, same
    text). Split-brain policies are always ``disconnect``: deciding whose data is lost is a person's job."""
    name = res["name"]
    v9 = version == "9"
    net = [
        f"    protocol {res.get('protocol') or 'C'};",
        f"    cram-hmac-alg {res.get('cram_hmac_alg') or 'sha256'};",
        f'    shared-secret "{res["secret"]}";',
        "    after-sb-0pri disconnect;",
        "    after-sb-1pri disconnect;",
        "    after-sb-2pri disconnect;",
        f"    timeout {res.get('net_timeout', 60)};",
        f"    connect-int {res.get('connect_int', 10)};",
        f"    ping-int {res.get('ping_int', 10)};",
    ]
    disk = [
        f"    resync-rate {res['sync_rate']};",
        f"    c-max-rate {res['sync_rate']};",
        f"    disk-timeout {res.get('disk_timeout', 0)};",
    ]
    fencing = res.get("fencing") or "dont-care"
    if v9:
        net.append(f"    fencing {fencing};")
    else:
        disk.append(f"    fencing {fencing};")
    lines = [f"# managed by kvmops.fleet (role dr, entry point drbd): DRBD {version} syntax", f"resource {name} {{"]
    if v9 and (res.get("quorum") or "off") != "off":
        lines += [
            "  options {",
            f"    quorum {res['quorum']};",
            f"    on-no-quorum {res.get('on_no_quorum') or 'suspend-io'};",
            "  }",
        ]
    lines += ["  net {", *net, "  }", "  disk {", *disk, "  }", *_handlers(res)]
    ids = node_ids(res)
    port = res["port"]
    for node in res["nodes"]:
        addr = _address(node["address"])
        where = f"ipv6 [{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
        lines.append(f"  on {node.get('hostname') or node['host']} {{")
        if v9:
            lines.append(f"    node-id {ids[node['host']]};")
        lines.append(f"    device /dev/drbd{node['minor']} minor {node['minor']};")
        lines.append(f"    disk {'none' if node.get('diskless') else node['disk']};")
        lines.append(f"    address {where};")
        if not node.get("diskless"):
            lines.append("    meta-disk internal;")
        lines.append("  }")
    if v9 and len(res["nodes"]) > 2:
        hosts = " ".join(n.get("hostname") or n["host"] for n in res["nodes"])
        lines += ["  connection-mesh {", f"    hosts {hosts};", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- what to do on this host ---------------------------------------------------------------------------------


def mask(text, secret):
    """``text`` with the shared secret replaced (tool messages and diffs never show it)."""
    if not text or not secret:
        return text
    return text.replace(secret, "********")


def metadata_action(verdict, up, force, where):
    """The data-safety verdict (``common._disk_safety.examine``) of this node's backing device, whether the
    resource is up -> "none" (metadata is there: never re-created; a resource that is up has it), "create", or
    raises ConfigError naming ``where`` (the variable) with what was found."""
    if not verdict["exists"]:
        raise ConfigError(f"{where}: {verdict['device']} does not exist")
    if not verdict["is_block"]:
        raise ConfigError(f"{where}: {verdict['device']} is not a block device")
    if up:
        return "none"  # the resource is up on this node: its metadata exists (a person handles a detached disk)
    busy = verdict["in_use"]
    if busy:
        raise ConfigError(
            f"{where}: {verdict['device']} is in use and DRBD metadata is never created on it, not even "
            f"with force: {'; '.join(busy)}"
        )
    sigs = verdict["signatures"]
    if sigs and all(s.startswith("drbd signature") for s in sigs):
        return "none"  # metadata from an earlier run (or another tool): kept, never re-created
    if sigs and not force:
        raise ConfigError(
            f"{where}: {verdict['device']} is not empty: {'; '.join(sigs)}. Creating DRBD metadata "
            "would overwrite its end and the resync its data: refused; wipe it first if its data is not "
            "needed, or set the resource's force: true"
        )
    return "create"


def initial_sync_action(local_disks, peer_disks, connected):
    """-> "none" (this node is or was in sync already: the initial sync is never repeated), "start" (both sides
    Inconsistent and connected: this node becomes the sync source), "wait" (not connected yet), or raises
    ConfigError when the peer already has data."""
    if local_disks and all(d == "UpToDate" for d in local_disks):
        return "none"
    if any(d in ("UpToDate", "Consistent", "Outdated") for d in peer_disks):
        raise ConfigError(
            "the peer's disk is "
            + "/".join(peer_disks)
            + " while this node's is "
            + "/".join(local_disks)
            + ": this is not a fresh resource, and the initial sync would "
            "overwrite the peer's data: refused (let DRBD resync from the peer)"
        )
    if not connected:
        return "wait"
    return "start"
