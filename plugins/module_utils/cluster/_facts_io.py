# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cluster_facts' host side: run ``crm_mon --output-as=xml``, ``corosync-quorumtool -s`` and ``corosync-cfgtool
-s``, each under a timeout that kills its process group (``common._command_io.run_tool``), and hand the texts to
``_status`` (pure). ``runner`` and ``tools`` are injected so the unit tests replay recorded outputs. Stdlib only."""

from __future__ import annotations

import time

from ansible_collections.kvmops.fleet.plugins.module_utils.cluster import _status
from ansible_collections.kvmops.fleet.plugins.module_utils.common._command_io import ToolTimeout, find_tool, run_tool
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety import tail

COMMANDS = {
    "pacemaker": ("crm_mon", ["--one-shot", "--output-as=xml", "--include=fencing"], _status.crm_mon),
    "quorum": ("corosync-quorumtool", ["-s"], _status.quorum),
    "links": ("corosync-cfgtool", ["-s"], _status.links),
}


def gather(timeout, runner=run_tool, tools=None):
    """-> {"pacemaker", "quorum", "links", "problems", "errors", "seconds"}. Never raises for what a host says: a
    tool that is missing, fails or does not answer in ``timeout`` seconds is an entry of ``errors`` naming it, and
    its part is None."""
    started = time.monotonic()
    errors = []
    tools = tools if tools is not None else {t: find_tool(t) for t, _a, _p in COMMANDS.values()}
    facts = {}
    for key, (tool, args, parse) in COMMANDS.items():
        facts[key] = None
        if not tools.get(tool):
            errors.append(f"{tool} not found on this host: not a cluster node (install pacemaker and corosync)")
            continue
        argv = [tools[tool], *args]
        try:
            rc, out, err = runner(argv, timeout)
        except ToolTimeout as exc:
            errors.append(f"{' '.join(argv)}: {exc}")
            continue
        # corosync-quorumtool -s exits 2 when the node is not quorate: its output is still the answer
        if rc != 0 and not (tool == "corosync-quorumtool" and rc == 2 and out.strip()):
            errors.append(f"{' '.join(argv)}: rc {rc}: {tail(err or out, 300)}")
            continue
        try:
            facts[key] = parse(out)
        except _status.StatusError as exc:
            errors.append(str(exc))
    facts["problems"] = _status.problems(facts)
    facts["errors"] = errors
    facts["seconds"] = round(time.monotonic() - started, 3)
    return facts
