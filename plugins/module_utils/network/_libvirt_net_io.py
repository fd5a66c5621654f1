# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_libvirt_network's host side: the bounded libvirt calls that read networks and apply a ``_plan.plan()``.

Every call runs in common/_libvirt_io's forked worker under the task's deadline. The apply worker reports each
operation as it completes (a ``step`` record), so a failure or a timeout halfway says what was already done,
and reads the declared networks back over the same connection at the end (``_plan.verify`` checks them).
"""

from __future__ import annotations

import os
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    KvmError,
    is_local_uri,
    libvirt,
    open_connection,
    raise_worker_error,
    run_bounded,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.network import _plan

# virNetworkXMLFlags: VIR_NETWORK_XML_INACTIVE (the persistent definition of an active network)
XML_INACTIVE = 1
# virErrorNumber: VIR_ERR_NO_NETWORK
ERR_NO_NETWORK = 43


class ApplyError(KvmError):
    """An operation failed or timed out; ``done`` lists what was applied before it (``_plan.describe`` texts)."""

    def __init__(self, msg: str, done: list):
        super().__init__(msg)
        self.done = done


def _lookup(conn, name: str):
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == getattr(libvirt, "VIR_ERR_NO_NETWORK", ERR_NO_NETWORK):
            return None
        raise


def _inactive_xml(net) -> str:
    """The persistent definition. libvirt's test driver takes no flags here (VIR_ERR_INVALID_ARG): its one XML
    is then both."""
    try:
        return net.XMLDesc(XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != getattr(libvirt, "VIR_ERR_INVALID_ARG", 8):
            raise
        return net.XMLDesc(0)


def _state(conn, name: str) -> dict:
    net = _lookup(conn, name)
    if net is None:
        return {"record": "net", "name": name, "exists": False}
    active = net.isActive() == 1
    persistent = net.isPersistent() == 1
    return {
        "record": "net",
        "name": name,
        "exists": True,
        "active": active,
        "persistent": persistent,
        # a transient network has no autostart (libvirt refuses to read it)
        "autostart": bool(net.autostart()) if persistent else False,
        "inactive_xml": _inactive_xml(net) if persistent else None,
        "live_xml": net.XMLDesc(0) if active else None,
    }


def _read_worker(emit, uri, names):
    conn = open_connection(uri)
    for name in names:
        emit(_state(conn, name))
    for net in conn.listAllNetworks(0):
        if net.name() not in names:
            emit({"record": "other", "name": net.name(), "xml": net.XMLDesc(0)})


def read_networks(uri: str, names: list, timeout: float) -> dict:
    """-> {"networks": {name: state}, "others": {name: XML}} (the host's other networks, for warnings)."""
    records, finished = run_bounded(_read_worker, time.monotonic() + timeout, uri, list(names))
    raise_worker_error(records, finished, "reading the libvirt networks", timeout)
    out = {"networks": {}, "others": {}}
    for rec in records:
        if rec.get("record") == "net":
            out["networks"][rec["name"]] = rec
        elif rec.get("record") == "other":
            out["others"][rec["name"]] = rec["xml"]
    return out


def _apply_one(conn, op):
    if op["op"] == _plan.DEFINE:
        conn.networkDefineXML(op["xml"])
        return
    net = _lookup(conn, op["name"])
    if net is None:
        raise KvmError(f"network {op['name']} no longer exists")
    if op["op"] == _plan.START:
        net.create()
    elif op["op"] == _plan.STOP:
        net.destroy()
    elif op["op"] == _plan.UNDEFINE:
        net.undefine()
    elif op["op"] == _plan.AUTOSTART:
        net.setAutostart(1 if op["value"] else 0)


def _apply_worker(emit, uri, ops, names):
    conn = open_connection(uri, readonly=False)
    for op in ops:
        try:
            _apply_one(conn, op)
        except libvirt.libvirtError as exc:
            raise KvmError(f"{_plan.describe(op)}: libvirt refused: {exc.get_error_message() or exc}") from None
        emit({"record": "step", "step": _plan.describe(op)})
    for name in names:
        emit(_state(conn, name))


def apply_ops(uri: str, ops: list, names: list, timeout: float) -> dict:
    """Run ``ops`` in order, then read ``names`` back -> {name: state}. Raises ApplyError with what was done."""
    records, finished = run_bounded(_apply_worker, time.monotonic() + timeout, uri, ops, list(names))
    done = [rec["step"] for rec in records if rec.get("record") == "step"]
    try:
        raise_worker_error(records, finished, "changing the libvirt networks", timeout)
    except KvmError as exc:  # a refusal, a lost connection or the deadline (LibvirtTimeout)
        raise ApplyError(str(exc), done) from None
    return {rec["name"]: rec for rec in records if rec.get("record") == "net"}


def bridge_missing(uri: str, bridge: str, root: str = "/") -> bool:
    """Whether a local libvirt's host has no Linux bridge of that name (a remote host's links are not this one's:
    False). A forward-mode-bridge network starts without it, but domains attached to it do not."""
    if not is_local_uri(uri):
        return False
    base = root.rstrip("/")
    return not os.path.isdir(f"{base}/sys/class/net/{bridge}/bridge")
