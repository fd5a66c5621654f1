# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drbd_resource's host side: the running DRBD version, whether a resource is up, its disk states, the
configuration file, and drbdadm runs, each under a timeout that kills its process group. What the facts mean is
decided in ``_config`` (pure); the backing device's verdict comes from ``common._disk_safety``. Stdlib only."""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout, find_tool, run_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety import tail
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _facts_io, _status

DRBDADM_84 = "/usr/lib/drbd/drbdadm-84"


class ToolError(Exception):
    """A drbdadm (or modprobe) run failed; the message says which and why (secret masked by the caller)."""


def run(argv, timeout, stdin_text=None):
    """-> stdout; raises ToolError naming the command (rc and the tail of its output, or the timeout)."""
    try:
        rc, out, err = run_tool(argv, timeout, stdin_text=stdin_text)
    except ToolTimeout as exc:
        raise ToolError(f"{' '.join(argv)}: {exc}") from None
    if rc != 0:
        raise ToolError(f"{' '.join(argv)}: rc {rc}: {tail(err or out, 400)}")
    return out


def kernel_version(timeout, load):
    """The DRBD kernel module's version ('8.4' or '9'): /proc/drbd when loaded; else ``modprobe drbd`` when
    ``load`` (the real run), else ``modinfo -F version drbd`` (check mode loads nothing) -> (version text, how)."""
    text = read_text("/proc/drbd")
    if text is None and load:
        modprobe = find_tool("modprobe")
        if modprobe is None:
            raise ToolError("modprobe not found on this host: install kmod")
        run([modprobe, "drbd"], timeout)
        text = read_text("/proc/drbd")
    if text is not None:
        return _status.parse_version_84(text), "/proc/drbd"
    modinfo = find_tool("modinfo")
    if modinfo is not None:
        try:
            rc, out, _err = run_tool([modinfo, "-F", "version", "drbd"], timeout)
        except ToolTimeout:
            rc, out = -1, ""
        if rc == 0 and out.strip():
            return out.strip().split()[0], "modinfo"
    return None, "none"


def major(version):
    return None if version is None else ("8.4" if str(version).startswith("8.") else "9")


def drbdadm_for(version):
    """drbd-utils 9's drbdadm hands 8.4 work to drbdadm-84 itself; for checking a file of 8.4 syntax without the
    module loaded, drbdadm-84 is called directly."""
    if version == "8.4" and os.path.exists(DRBDADM_84):
        return DRBDADM_84
    return find_tool("drbdadm")


def validate(text, version, timeout):
    """``drbdadm -c FILE dump all`` on the candidate text (a 0600 temporary file, removed) -> None, or raises
    ToolError with drbdadm's complaint."""
    tool = drbdadm_for(version)
    if tool is None:
        raise ToolError("drbdadm not found on this host (PATH and the sbin directories): install drbd-utils")
    fd, path = tempfile.mkstemp(prefix="kvmops-drbd-", suffix=".res")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            rc, out, err = run_tool([tool, "-c", path, "dump", "all"], timeout)
        except ToolTimeout as exc:
            raise ToolError(f"{tool} -c FILE dump all: {exc}") from None
        if rc != 0:
            raise ToolError(f"{tool} -c FILE dump all: rc {rc}: {tail(err.replace(path, 'FILE'), 600)}")
        del out  # the dump repeats the secret: never returned
    finally:
        os.unlink(path)


def state(name, timeout):
    """-> None when the resource is not up, else {"role", "local": [disk states], "peers": [disk states],
    "connected": bool} (from drbd_facts' reader)."""
    facts = _facts_io.gather(timeout, names=(name,))
    for res in facts["resources"]:
        if res["name"] == name:
            peer_disks = [pv["disk_state"] for p in res["peers"] for pv in p["volumes"] if not pv.get("client")]
            return {
                "role": res["role"],
                "local": [v["disk_state"] for v in res["volumes"]],
                "peers": peer_disks,
                "connected": bool(res["peers"]) and all(p["connection_state"] == "Connected" for p in res["peers"]),
                "verdict": res["verdict"],
            }
    return None


def wait_connected(name, timeout):
    """Polls until the resource is connected to its peers or ``timeout`` seconds passed -> the last state."""
    deadline = time.monotonic() + timeout
    while True:
        st = state(name, min(10, timeout))
        if (st is not None and st["connected"]) or time.monotonic() >= deadline:
            return st
        time.sleep(1)
