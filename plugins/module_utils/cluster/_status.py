# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: what a corosync/pacemaker node says about its cluster -> plain data, and the problems in it.

- ``crm_mon(xml)``: ``crm_mon --one-shot --output-as=xml --include=fencing`` (pacemaker 2.1): the DC and whether
  its partition has quorum, the nodes, the resources and where they run, the failed actions, the fencing history.
- ``quorum(text)``: ``corosync-quorumtool -s``: quorate, votes, flags (Qdevice, 2Node, WaitForAll), members.
- ``links(text)``: ``corosync-cfgtool -s`` (corosync 3, knet): per link, its local address and each node's state.
- ``problems(facts)``: one sentence per thing an operator must look at.

No I/O and no ansible imports; Python 3.9.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET


class StatusError(ValueError):
    """An output that is not what the tool writes."""


def _bool(value):
    return str(value).lower() == "true"


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _resources(elem, out, parent=None):
    for child in elem:
        if child.tag == "resource":
            out.append(
                {
                    "id": child.get("id"),
                    "parent": parent,
                    "agent": child.get("resource_agent"),
                    "role": child.get("role"),
                    "target_role": child.get("target_role"),
                    "active": _bool(child.get("active")),
                    "failed": _bool(child.get("failed")),
                    "managed": _bool(child.get("managed", "true")),
                    "blocked": _bool(child.get("blocked")),
                    "nodes": [n.get("name") for n in child.findall("node")],
                }
            )
        elif child.tag in ("clone", "group", "bundle", "replica"):
            _resources(child, out, child.get("id") or parent)


def crm_mon(text):
    """``crm_mon --output-as=xml`` -> {"dc", "quorate", "stonith_enabled", "nodes", "resources", "failed_actions",
    "fencing_history"}."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - crm_mon's own XML, run by the module
    except ET.ParseError as exc:
        raise StatusError(f"crm_mon wrote no XML ({exc})") from None
    if root.tag != "pacemaker-result":
        raise StatusError(f"crm_mon wrote <{root.tag}>, not <pacemaker-result>")
    status = root.find("status")
    if status is not None and status.get("code") not in (None, "0"):
        raise StatusError(f"crm_mon: {status.get('message')} (code {status.get('code')})")
    dc = root.find("./summary/current_dc")
    options = root.find("./summary/cluster_options")
    nodes = [
        {
            "name": n.get("name"),
            "id": _int(n.get("id")),
            "online": _bool(n.get("online")),
            "standby": _bool(n.get("standby")),
            "maintenance": _bool(n.get("maintenance")),
            "unclean": _bool(n.get("unclean")),
            "is_dc": _bool(n.get("is_dc")),
            "resources_running": _int(n.get("resources_running")),
        }
        for n in root.findall("./nodes/node")
    ]
    resources = []
    section = root.find("resources")
    if section is not None:
        _resources(section, resources)
    failed = [
        {
            "op": f.get("op_key") or f.get("id"),
            "task": f.get("task"),
            "node": f.get("node"),
            "exit_status": f.get("exitstatus"),
            "exit_code": _int(f.get("exitcode")),
            "exit_reason": f.get("exitreason") or "",
            "status": f.get("status"),
            "last_rc_change": f.get("last-rc-change"),
        }
        for f in root.findall("./failures/failure")
    ]
    fencing = [
        {
            "action": e.get("action"),
            "target": e.get("target"),
            "status": e.get("status"),
            "origin": e.get("origin"),
            "delegate": e.get("delegate"),
            "client": e.get("client"),
            "exit_reason": e.get("exit-reason") or "",
            "completed": e.get("completed"),
        }
        for e in root.findall("./fence_history/fence_event")
    ]
    return {
        "dc": dc.get("name") if dc is not None and _bool(dc.get("present")) else None,
        "quorate": dc is not None and _bool(dc.get("with_quorum")),
        "stonith_enabled": _bool(options.get("stonith-enabled")) if options is not None else None,
        "nodes": nodes,
        "resources": resources,
        "failed_actions": failed,
        "fencing_history": fencing,
    }


_KV = re.compile(r"^([A-Za-z][A-Za-z ]*?):\s+(.*?)\s*$")
_MEMBER = re.compile(r"^\s*(\d+)\s+(\d+)\s+(?:([A-Z,]+)\s+)?(\S+)(\s+\(local\))?\s*$")


def quorum(text):
    """``corosync-quorumtool -s`` -> {"quorate", "node_id", "nodes", "expected_votes", "total_votes", "quorum",
    "flags", "qdevice", "two_node", "members": [{"node_id", "votes", "qdevice", "name", "local"}]}."""
    kv, members, in_members = {}, [], False
    for line in text.splitlines():
        if line.startswith("Membership information"):
            in_members = True
            continue
        if in_members:
            m = _MEMBER.match(line)
            if m:
                members.append(
                    {
                        "node_id": int(m.group(1)),
                        "votes": int(m.group(2)),
                        "qdevice": m.group(3) or "",
                        "name": m.group(4),
                        "local": bool(m.group(5)),
                    }
                )
            continue
        m = _KV.match(line)
        if m:
            kv[m.group(1)] = m.group(2)
    if "Quorate" not in kv:
        raise StatusError("corosync-quorumtool -s: no 'Quorate:' line (is corosync running?)")
    flags = kv.get("Flags", "").split()
    return {
        "quorate": kv["Quorate"] == "Yes",
        "node_id": _int(kv.get("Node ID")),
        "nodes": _int(kv.get("Nodes")),
        "expected_votes": _int(kv.get("Expected votes")),
        "total_votes": _int(kv.get("Total votes")),
        "quorum": _int(kv.get("Quorum")),
        "flags": flags,
        "qdevice": "Qdevice" in flags,
        "two_node": "2Node" in flags,
        "members": members,
    }


_LINK = re.compile(r"^LINK ID (\d+)(?:\s+(\S+))?\s*$")
_ADDR = re.compile(r"^\s*addr\s*=\s*(\S+)")
_STATE = re.compile(r"^\s*nodeid:?\s*(\d+):?\s+(\S.*?)\s*$")


def links(text):
    """``corosync-cfgtool -s`` -> {"node_id", "transport", "links": [{"id", "transport", "address", "nodes":
    [{"node_id", "state"}], "down": [node ids not connected]}]}."""
    head = re.search(r"Local node ID (\d+), transport (\S+)", text)
    if not head:
        raise StatusError("corosync-cfgtool -s: no 'Local node ID' line (is corosync running?)")
    out = []
    for line in text.splitlines():
        m = _LINK.match(line)
        if m:
            out.append({"id": int(m.group(1)), "transport": m.group(2), "address": None, "nodes": []})
            continue
        if not out:
            continue
        m = _ADDR.match(line)
        if m:
            out[-1]["address"] = m.group(1)
            continue
        m = _STATE.match(line)
        if m:
            out[-1]["nodes"].append({"node_id": int(m.group(1)), "state": m.group(2)})
    for link in out:
        link["down"] = [n["node_id"] for n in link["nodes"] if n["state"] not in ("localhost", "connected")]
    return {"node_id": int(head.group(1)), "transport": head.group(2), "links": out}


def problems(facts):
    """One sentence per thing to look at in ``facts`` (keys "pacemaker", "quorum", "links", each may be None)."""
    out = []
    pcmk, votes, knet = facts.get("pacemaker"), facts.get("quorum"), facts.get("links")
    if votes is not None and not votes["quorate"]:
        out.append(
            f"not quorate: {votes['total_votes']} of {votes['expected_votes']} expected votes, {votes['quorum']} needed"
        )
    if knet is not None:
        for link in knet["links"]:
            if link["down"]:
                out.append(f"knet link {link['id']} down to node id {', '.join(str(n) for n in link['down'])}")
    if pcmk is not None:
        if votes is None and not pcmk["quorate"]:
            out.append("the partition has no quorum")
        if pcmk["stonith_enabled"] is False:
            out.append("fencing is off (stonith-enabled=false): a lab cluster, not safe for VMs")
        for node in pcmk["nodes"]:
            if node["unclean"]:
                out.append(f"node {node['name']} is unclean (needs fencing)")
            elif not node["online"]:
                out.append(f"node {node['name']} is offline")
            elif node["standby"]:
                out.append(f"node {node['name']} is in standby")
        for act in pcmk["failed_actions"]:
            reason = f" ({act['exit_reason']})" if act["exit_reason"] else ""
            out.append(f"failed action {act['op']} on {act['node']}: {act['exit_status']}{reason}")
        for res in pcmk["resources"]:
            if res["failed"] or res["blocked"]:
                out.append(f"resource {res['id']} is {'failed' if res['failed'] else 'blocked'}")
        for event in pcmk["fencing_history"]:
            if event["status"] not in ("success", "pending"):
                out.append(f"fencing {event['action']} of {event['target']} {event['status']}")
    return out
