#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drbd_resource
short_description: One DRBD resource on this node, configured, with its metadata and up, data safety first
version_added: 0.2.0
description:
  - O(step=present) makes the resource exist on this node. The configuration is rendered for the DRBD version the
    kernel runs (8.4 or 9 syntax), checked with C(drbdadm -c FILE dump all) (C(drbdadm-84) for 8.4) and only then
    written to O(config_dir)C(/NAME.res), mode 0600 (it holds the shared secret). Metadata is created only on a
    backing device the collection's data-safety verdict calls empty (no filesystem, partition table, LVM, RAID or
    DRBD signature from blkid and wipefs, not mounted, not swap, not held, not partitioned, not open, free for an
    exclusive open). The resource is brought up (C(drbdadm up)), or adjusted when it is up and its file changed.
  - Metadata that exists is never re-created; a device that carries anything else is refused naming the device and
    what was found, unless O(force); a device in use is refused even with O(force).
  - O(step=initial_sync) starts the first full sync from this node, and only when both sides are Inconsistent (a
    fresh resource) and connected; it waits up to O(timeout) for the peer to connect; a node that is UpToDate
    already does nothing, and a peer that has data is refused. This node is left Secondary (the sync goes on).
  - Check mode reads, renders and validates, judges the device and predicts the real run's actions, and changes
    nothing (it does not load the kernel module either; the version then comes from C(modinfo)); the
    P(kvmops.fleet.dr#role) role runs it first on every node as the pre-flight.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The configuration file, with the shared secret masked.
options:
  name:
    description: The resource's name (letters, digits, V(_), V(.), V(+), V(-), at most 64).
    type: str
    required: true
  host:
    description: This node's name in O(nodes) (the inventory host name).
    type: str
    required: true
  step:
    description: V(present) (configuration, metadata, up) or V(initial_sync) (on the declared node only).
    type: str
    choices: [present, initial_sync]
    default: present
  nodes:
    description: Every node of the resource, this one included.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: The node's inventory host name.
        type: str
        required: true
      hostname:
        description:
          - The node's own host name (C(uname -n)), which DRBD matches its C(on) section by; default O(nodes[].host).
        type: str
      address:
        description: The node's replication address (IPv4 or IPv6).
        type: str
        required: true
      disk:
        description:
          - The backing device by a stable path (C(/dev/disk/by-id/...), C(/dev/VG/LV)); kernel names such as
            C(/dev/sdb) are refused. Not for a diskless node.
        type: str
      minor:
        description: The DRBD minor (C(/dev/drbdN)), from V(0) to V(1048575) (V(255) on DRBD 8.4).
        type: int
        required: true
      node_id:
        description: DRBD 9 node id, from V(0) to V(31); default the node's position in O(nodes).
        type: int
      diskless:
        description: DRBD 9 only, a node without a disk (a quorum tiebreaker).
        type: bool
        default: false
  port:
    description: The TCP port of the resource on every node, from V(1) to V(65535).
    type: int
    required: true
  protocol:
    description: Replication protocol; V(C) (synchronous) unless you know why not.
    type: str
    choices: [A, B, C]
    default: C
  secret:
    description: The shared secret the peers authenticate with, 16 to 64 characters, no blanks, quotes or backslashes.
    type: str
    required: true
  cram_hmac_alg:
    description: The digest of the peer authentication.
    type: str
    choices: [sha1, sha256, sha512]
    default: sha256
  sync_rate:
    description: Resync rate (KiB/s with K, M or G) from V(1K) to V(4G); also the dynamic controller's cap.
    type: str
    default: 100M
  net_timeout:
    description: DRBD's C(timeout), in tenths of a second, from V(1) to V(600).
    type: int
    default: 60
  connect_int:
    description: Seconds between connection attempts, from V(1) to V(120).
    type: int
    default: 10
  ping_int:
    description: Seconds between keep-alive pings, from V(1) to V(120).
    type: int
    default: 10
  disk_timeout:
    description: DRBD's C(disk-timeout) in tenths of a second, from V(0) (off) to V(6000).
    type: int
    default: 0
  fencing:
    description: DRBD's fencing policy (V(resource-only) and V(resource-and-stonith) need a fence-peer handler).
    type: str
    choices: [dont-care, resource-only, resource-and-stonith]
    default: dont-care
  handlers:
    description:
      - DRBD handlers by name (V(fence-peer), V(unfence-peer), V(after-resync-target), V(split-brain), ...) to
        command.
    type: dict
    default: {}
  quorum:
    description: DRBD 9 only, V(off), V(majority) or V(all); needs three nodes (a diskless tiebreaker counts).
    type: str
    choices: ['off', majority, all]
    default: 'off'
  on_no_quorum:
    description: DRBD 9 only, what I/O does without quorum.
    type: str
    choices: [suspend-io, io-error]
    default: suspend-io
  initial_primary:
    description: The node (O(nodes[].host)) whose data the initial sync copies; only it runs O(step=initial_sync).
    type: str
  force:
    description:
      - Create metadata on a backing device that carries a signature (a filesystem, a partition table, LVM, RAID).
        Its end is overwritten and the initial sync may overwrite the rest. Never on a device in use.
    type: bool
    default: false
  version:
    description: The DRBD syntax to render, V(auto) (the kernel module's version) or forced.
    type: str
    choices: [auto, '8.4', '9']
    default: auto
  config_dir:
    description: Directory of the resource files (absolute), included by C(/etc/drbd.conf).
    type: path
    default: /etc/drbd.d
  timeout:
    description:
      - Seconds each command may take, and the longest wait for the peer in O(step=initial_sync), from V(1) to
        V(3600).
    type: int
    default: 120
  var_name:
    description: How messages name the resource (the role passes V(dr_drbd_resources[N])).
    type: str
    default: resource
"""

EXAMPLES = r"""
- name: Make the resource exist on this node
  kvmops.fleet.drbd_resource:
    name: vm1disk
    host: "{{ inventory_hostname }}"
    port: 7789
    secret: "{{ vault_drbd_secret }}"
    initial_primary: hv1
    nodes:
      - {host: hv1, address: 192.0.2.11, disk: /dev/disk/by-id/wwn-0x5000c500a1b2c3d4, minor: 0}
      - {host: hv2, address: 192.0.2.12, disk: /dev/disk/by-id/wwn-0x5000c500a1b2c3d5, minor: 0}
"""

RETURN = r"""
version:
  description: The DRBD version the configuration was rendered for.
  returned: always
  type: str
  sample: '8.4'
kernel_version:
  description: The kernel module's version and where it was read (V(/proc/drbd), V(modinfo)).
  returned: always
  type: str
  sample: 8.4.11 (/proc/drbd)
config_path:
  description: The resource's configuration file.
  returned: always
  type: str
  sample: /etc/drbd.d/vm1disk.res
actions:
  description: What was done (or, in check mode, would be), in order.
  returned: always
  type: list
  elements: str
  sample: ["write /etc/drbd.d/vm1disk.res", "create-md on /dev/disk/by-id/virtio-data (empty)", "up"]
device:
  description: The data-safety verdict of this node's backing device (null for a diskless node or when not read).
  returned: always
  type: dict
  sample: {"device": "/dev/disk/by-id/virtio-data (/dev/vdb)", "exists": true, "is_block": true, "in_use": [],
           "signatures": [], "empty": true}
state:
  description: The resource's role, disk states and connection after the step (null when not up).
  returned: always
  type: dict
  sample: {"role": "Secondary", "local": ["UpToDate"], "peers": ["UpToDate"], "connected": true, "verdict": "healthy"}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety, _disk_safety_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import find_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text, write_atomic
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    Custom,
    Int,
    OptionError,
    Text,
    Unique,
    check_module,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _config, _resource_io

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "host": {"type": "str", "required": True},
    "step": {"type": "str", "choices": ["present", "initial_sync"], "default": "present"},
    "nodes": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "host": {"type": "str", "required": True},
            "hostname": {"type": "str"},
            "address": {"type": "str", "required": True},
            "disk": {"type": "str"},
            "minor": {"type": "int", "required": True},
            "node_id": {"type": "int"},
            "diskless": {"type": "bool", "default": False},
        },
    },
    "port": {"type": "int", "required": True},
    "protocol": {"type": "str", "choices": ["A", "B", "C"], "default": "C"},
    "secret": {"type": "str", "required": True, "no_log": True},
    "cram_hmac_alg": {"type": "str", "choices": ["sha1", "sha256", "sha512"], "default": "sha256"},
    "sync_rate": {"type": "str", "default": "100M"},
    "net_timeout": {"type": "int", "default": 60},
    "connect_int": {"type": "int", "default": 10},
    "ping_int": {"type": "int", "default": 10},
    "disk_timeout": {"type": "int", "default": 0},
    "fencing": {
        "type": "str",
        "choices": ["dont-care", "resource-only", "resource-and-stonith"],
        "default": "dont-care",
    },
    "handlers": {"type": "dict", "default": {}},
    "quorum": {"type": "str", "choices": ["off", "majority", "all"], "default": "off"},
    "on_no_quorum": {"type": "str", "choices": ["suspend-io", "io-error"], "default": "suspend-io"},
    "initial_primary": {"type": "str"},
    "force": {"type": "bool", "default": False},
    "version": {"type": "str", "choices": ["auto", "8.4", "9"], "default": "auto"},
    "config_dir": {"type": "path", "default": "/etc/drbd.d"},
    "timeout": {"type": "int", "default": 120},
    "var_name": {"type": "str", "default": "resource"},
}


def _check_rate(value, path):
    kib = _config.rate_kib(value)
    if kib is None or not _config.RATE_MIN_KIB <= kib <= _config.RATE_MAX_KIB:
        raise OptionError(f"{path}: {value!r} is not a rate from 1K to 4G (a number with K, M or G, e.g. 100M)")


def _check_secret(value, path):
    if not isinstance(value, str) or not _config.SECRET_MIN <= len(value) <= _config.SECRET_MAX:
        raise OptionError(f"{path}: must have {_config.SECRET_MIN} to {_config.SECRET_MAX} characters (value hidden)")
    if not _config.SECRET_TEXT.match(value):
        raise OptionError(f"{path}: no blanks, double quotes or backslashes (value hidden)")


def _check_handlers(value, path):
    if not isinstance(value, dict) or len(value) > len(_config.HANDLERS):
        raise OptionError(f"{path}: a mapping of DRBD handler names to commands")
    for key, command in value.items():
        if key not in _config.HANDLERS:
            raise OptionError(f"{path}: {key!r} is not a DRBD handler ({', '.join(_config.HANDLERS)})")
        if not isinstance(command, str) or not _config.HANDLER_TEXT.match(command):
            raise OptionError(f"{path}.{key}: a command of 1 to 512 characters without quotes, backslashes, newlines")


def _check_config_dir(value, path):
    if not isinstance(value, str) or not os.path.isabs(value) or "\n" in value:
        raise OptionError(f"{path}: must be an absolute path, got {value!r}")


RULES = {
    "name": Text("a DRBD resource name", pattern=_config.NAME.pattern, example="vm1disk", max_chars=64),
    "host": Text("this node's inventory name", pattern=_config.HOST.pattern, example="hv1", max_chars=253),
    "nodes": Unique(("host",)),
    "nodes[].host": Text("an inventory host name", pattern=_config.HOST.pattern, example="hv1", max_chars=253),
    "nodes[].hostname": Text("the node's uname -n", pattern=_config.HOST.pattern, example="hv1", max_chars=253),
    "nodes[].address": Text(
        "an IPv4 or IPv6 address", pattern=r"^[0-9A-Fa-f:.]{2,45}$", example="192.0.2.11", max_chars=45
    ),
    "nodes[].disk": Text(
        "a stable block device path", pattern=r"^/dev/\S+$", example="/dev/disk/by-id/wwn-0x5", max_chars=1024
    ),
    "nodes[].minor": Int(0, _config.MINOR_MAX, "DRBD minor numbers (/dev/drbdN)"),
    "nodes[].node_id": Int(0, _config.NODE_ID_MAX, "DRBD 9 node ids"),
    "port": Int(1, 65535, "a TCP port"),
    "secret": Custom(_check_secret, "16 to 64 characters"),
    "sync_rate": Custom(_check_rate, "1K to 4G per second (DRBD's resync-rate bounds)"),
    "net_timeout": Int(1, 600, "tenths of a second (DRBD's timeout)"),
    "connect_int": Int(1, 120, "seconds (DRBD's connect-int)"),
    "ping_int": Int(1, 120, "seconds (DRBD's ping-int)"),
    "disk_timeout": Int(0, 6000, "tenths of a second, 0 is off (DRBD's disk-timeout)"),
    "handlers": Custom(_check_handlers, "DRBD handler names"),
    "initial_primary": Text("one of the nodes", pattern=_config.HOST.pattern, example="hv1", max_chars=253),
    "config_dir": Custom(_check_config_dir, "an absolute directory"),
    "timeout": Int(1, 3600, "seconds"),
    "var_name": Text(
        "the variable the resource came from",
        pattern=r"^[A-Za-z0-9_.\[\]]{1,64}$",
        example="dr_drbd_resources[0]",
        max_chars=64,
    ),
}


def _resource(p):
    keys = (
        "name",
        "port",
        "protocol",
        "secret",
        "cram_hmac_alg",
        "sync_rate",
        "net_timeout",
        "connect_int",
        "ping_int",
        "disk_timeout",
        "fencing",
        "handlers",
        "quorum",
        "on_no_quorum",
        "initial_primary",
        "force",
        "nodes",
    )
    return {k: p[k] for k in keys}


def present(module, res, node, version, var, out):
    p = module.params
    secret = p["secret"]
    timeout = p["timeout"]
    text = _config.render(res, version)
    try:
        _resource_io.validate(text, version, timeout)
    except _resource_io.ToolError as exc:
        raise _config.ConfigError(
            f"{var}: the rendered DRBD {version} configuration does not pass drbdadm: {_config.mask(str(exc), secret)}"
        ) from None
    path = os.path.join(p["config_dir"], f"{res['name']}.res")
    out["config_path"] = path
    before = read_text(path)
    out["diff"] = {
        "before_header": path,
        "after_header": path,
        "before": _config.mask(before or "", secret),
        "after": _config.mask(text, secret),
    }
    file_changed = before != text or (os.path.exists(path) and (os.stat(path).st_mode & 0o777) != 0o600)
    st = _resource_io.state(res["name"], timeout) if os.path.exists("/proc/drbd") else None
    up = st is not None
    md = "none"
    if not node.get("diskless"):
        where = f"{var}.nodes[{res['nodes'].index(node)}].disk"
        tools = {t: find_tool(t) for t in _disk_safety_io.TOOLS}
        missing = [t for t, path_ in tools.items() if path_ is None]
        if missing:
            raise _config.ConfigError(f"{', '.join(missing)} not found on this host: install util-linux")
        facts = _disk_safety_io.device_facts(node["disk"], tools)
        if facts.get("is_block") and not up:
            fd, facts["excl_error"] = _disk_safety_io.claim(facts["real"])
            _disk_safety_io.release(fd)
        verdict = _disk_safety.examine(facts)
        out["device"] = verdict
        md = _config.metadata_action(verdict, up, res["force"], where)
    actions = []
    if file_changed:
        actions.append(f"write {path}")
    if md == "create":
        found = "; ".join(out["device"]["signatures"]) or "empty"
        actions.append(f"create-md on {out['device']['device']} ({found})")
    if not up:
        actions.append("up")
    elif file_changed:
        actions.append("adjust")
    out["actions"] = actions
    if module.check_mode or not actions:
        out["state"] = st
        return bool(actions)
    if file_changed:
        write_atomic(path, text, mode=0o600)
    drbdadm = find_tool("drbdadm")
    if md == "create":
        _resource_io.run([drbdadm, "create-md", "--force", res["name"]], timeout)
    _resource_io.run([drbdadm, "up" if not up else "adjust", res["name"]], timeout)
    out["state"] = _resource_io.state(res["name"], timeout)
    return True


def initial_sync(module, res, var, out):
    p = module.params
    timeout = p["timeout"]
    st = _resource_io.state(res["name"], timeout) if os.path.exists("/proc/drbd") else None
    if st is None and module.check_mode:
        # check mode of a first run: step present has not brought it up (it changed nothing); the real run would
        out["actions"] = ["primary --force (initial sync source)", "secondary"]
        return True
    if st is None:
        raise _config.ConfigError(f"{var}: {res['name']} is not up on this node: run step present first")
    action = _config.initial_sync_action(st["local"], st["peers"], st["connected"])
    if action == "wait" and not module.check_mode:
        st = _resource_io.wait_connected(res["name"], timeout)
        action = _config.initial_sync_action(st["local"], st["peers"], st["connected"])
        if action == "wait":
            raise _config.ConfigError(
                f"{var}: the peers of {res['name']} did not connect within {timeout} s "
                "(the initial sync needs them: check the replication link and the peer)"
            )
    out["actions"] = [] if action == "none" else ["primary --force (initial sync source)", "secondary"]
    out["state"] = st
    if action == "none" or module.check_mode:
        return action != "none"
    drbdadm = find_tool("drbdadm")
    _resource_io.run([drbdadm, "primary", "--force", res["name"]], timeout)
    _resource_io.run([drbdadm, "secondary", res["name"]], timeout)
    out["state"] = _resource_io.state(res["name"], timeout)
    return True


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES)
    run(module)


def run(module):
    """Everything after the option checks: the declaration, the version, then the step."""
    p = module.params
    var = p["var_name"]
    res = _resource(p)
    out = {
        "changed": False,
        "actions": [],
        "device": None,
        "state": None,
        "version": None,
        "kernel_version": None,
        "config_path": os.path.join(p["config_dir"], f"{p['name']}.res"),
    }
    problems = _config.problems([res], None, var="X")
    if problems:
        module.fail_json(msg="; ".join(x.replace("X[0]", var, 1) for x in problems), **out)
    node = _config.this_node(res, p["host"])
    if node is None:
        module.fail_json(msg=f"{var}.nodes: {p['host']} (this host) is not one of the resource's nodes", **out)
    try:
        kver, how = _resource_io.kernel_version(p["timeout"], load=not module.check_mode and p["step"] == "present")
        out["kernel_version"] = f"{kver} ({how})" if kver else None
        version = p["version"] if p["version"] != "auto" else _resource_io.major(kver)
        if version is None:
            raise _config.ConfigError(
                f"{var}: no DRBD kernel module on this host (neither /proc/drbd nor modinfo "
                "drbd): install the kernel side, or set the version"
            )
        out["version"] = version
        if version == "8.4":
            why = _config.needs_9(res)
            if why:
                raise _config.ConfigError(f"{var}: {why} needs DRBD 9; this host's DRBD is {kver or version}")
            big = [n["minor"] for n in res["nodes"] if n["minor"] > _config.MINOR_MAX_84]
            if big:
                raise _config.ConfigError(f"{var}.nodes: minor {big[0]} is above DRBD 8.4's 255")
        if p["step"] == "present":
            out["changed"] = present(module, res, node, version, var, out)
        else:
            if p["initial_primary"] != p["host"]:
                raise _config.ConfigError(
                    f"{var}.initial_primary: the initial sync runs only on the declared node "
                    f"({p['initial_primary']}), not on {p['host']}"
                )
            out["changed"] = initial_sync(module, res, var, out)
    except (_config.ConfigError, _resource_io.ToolError) as exc:
        module.fail_json(msg=_config.mask(str(exc), p["secret"]), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
