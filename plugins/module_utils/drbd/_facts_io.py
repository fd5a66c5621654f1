# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drbd_facts' host side: read what DRBD says (/proc/drbd, ``drbdsetup show`` on 8.4, ``drbdsetup status
--json`` on 9, the kernel log's drbd lines), every command under a timeout that kills its process group
(``common._command_io.run_tool``), then hand the texts to ``_status`` (pure). ``runner`` and ``root`` are
injected so the unit tests replay recorded outputs. Stdlib only."""

from __future__ import annotations

import os
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout, find_tool, run_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety import tail
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _status

# the kernel log lines kept for the split-brain evidence (the newest; DRBD logs a few lines per state change)
KERNEL_LOG_LINES = 4000


def kernel_version(version):
    """'8.4.11' -> '8.4'; '9.2.5' -> '9'."""
    return "8.4" if str(version).startswith("8.") else "9"


def gather(timeout, names=(), runner=run_tool, root="/", tools=None):
    """-> {"loaded", "kernel_version", "utils_version", "resources", "summary", "errors", "seconds"}. Never raises
    for what a host says: a command that fails or does not answer in ``timeout`` seconds is an entry of
    ``errors`` (naming it), and the resources it would have told about are missing."""
    started = time.monotonic()
    errors = []
    tools = tools if tools is not None else {t: find_tool(t) for t in ("drbdsetup", "drbdadm", "dmesg")}
    facts = {"loaded": False, "kernel_version": None, "utils_version": None, "resources": [], "errors": errors}
    proc = read_text(os.path.join(root, "proc/drbd"))
    if proc is None:
        facts["summary"] = _status.summary([])
        facts["seconds"] = round(time.monotonic() - started, 3)
        return facts
    facts["loaded"] = True
    version = _status.parse_version_84(proc)
    facts["kernel_version"] = version

    def run(tool, args):
        if not tools.get(tool):
            errors.append(f"{tool} not found on this host (PATH and the sbin directories): install drbd-utils")
            return None
        argv = [tools[tool], *args]
        try:
            rc, out, err = runner(argv, timeout)
        except ToolTimeout as exc:
            errors.append(f"{' '.join(argv)}: {exc}")
            return None
        if rc != 0:
            errors.append(f"{' '.join(argv)}: rc {rc}: {tail(err or out, 300)}")
            return None
        return out

    if tools.get("drbdadm"):
        out = run("drbdadm", ["--version"])
        if out:
            for line in out.splitlines():
                if line.startswith("DRBDADM_VERSION="):
                    facts["utils_version"] = line.split("=", 1)[1].strip()
    log = run("dmesg", []) or ""
    log = "\n".join([line for line in log.splitlines() if "drbd" in line][-KERNEL_LOG_LINES:])
    try:
        if kernel_version(version) == "8.4":
            show = run("drbdsetup", ["show"]) or ""
            resources = _status.resources_84(proc, show, log)
        else:
            status = run("drbdsetup", ["status", "--json"])
            resources = _status.resources_9(status, log, version) if status is not None else []
    except _status.StatusError as exc:
        errors.append(str(exc))
        resources = []
    if names:
        resources = [r for r in resources if r["name"] in names]
        missing = [n for n in names if n not in {r["name"] for r in resources}]
        errors += [f"resource {n} is not up on this host" for n in missing]
    facts["resources"] = resources
    facts["summary"] = _status.summary(resources)
    facts["seconds"] = round(time.monotonic() - started, 3)
    return facts
