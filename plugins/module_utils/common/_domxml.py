# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: read libvirt domain XML and libvirtd's status XML (xml.etree only, no I/O, no ansible).

Everything here takes strings and returns plain dicts/lists, so it is unit-tested on XML literals.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.common._states import reason_code, state_code


class DomainXMLError(ValueError):
    """The XML text could not be parsed."""


def parse_xml(text: str, error=DomainXMLError, root_tag=None) -> ET.Element:
    """libvirt's own XML text -> its root element; ``error`` (a ValueError subclass the caller's module raises)
    when it cannot be parsed, or when its root is not ``<root_tag>``."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - libvirt's own domain and status XML, not untrusted input
    except ET.ParseError as exc:
        raise error(f"cannot parse domain XML: {exc}") from exc
    if root_tag is not None and root.tag != root_tag:
        raise error(f"expected <{root_tag}>, got <{root.tag}>")
    return root


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _disk(disk: ET.Element) -> dict:
    driver = disk.find("driver")
    source = disk.find("source")
    target = disk.find("target")
    dtype = disk.get("type", "file")
    entry = {
        "target": target.get("dev") if target is not None else None,
        "bus": target.get("bus") if target is not None else None,
        "device": disk.get("device", "disk"),
        "type": dtype,
        "format": driver.get("type") if driver is not None else None,
        "error_policy": driver.get("error_policy") if driver is not None else None,
        "rerror_policy": driver.get("rerror_policy") if driver is not None else None,
        "readonly": disk.find("readonly") is not None,
        "path": None,
        "protocol": None,
        "export": None,
        "hosts": [],
        "pool": None,
        "volume": None,
    }
    if source is None:
        return entry
    if dtype == "file":
        entry["path"] = source.get("file")
    elif dtype == "block":
        entry["path"] = source.get("dev")
    elif dtype == "dir":
        entry["path"] = source.get("dir")
    elif dtype == "volume":
        entry["pool"] = source.get("pool")
        entry["volume"] = source.get("volume")
    elif dtype == "network":
        entry["protocol"] = source.get("protocol")
        entry["export"] = source.get("name")
        for host in source.findall("host"):
            transport = host.get("transport", "tcp")
            if transport == "unix":
                entry["hosts"].append({"transport": "unix", "socket": host.get("socket")})
            else:
                entry["hosts"].append(
                    {"transport": transport, "name": host.get("name"), "port": _int(host.get("port"))}
                )
    return entry


def _job(domstatus: ET.Element) -> dict | None:
    job = domstatus.find("job")
    if job is None:
        return None
    sync, async_ = job.get("type", "none"), job.get("async", "none")
    if sync == "none" and async_ == "none":
        return None
    started = _int(job.get("asyncStarted"))
    return {"type": sync, "async": async_, "started_ms": started, "phase": job.get("phase")}


def parse_domain(text: str) -> dict:
    """Domain XML (live, inactive or the <domain> inside a status file) -> the facts the diagnosis needs."""
    root = parse_xml(text)
    if root.tag == "domstatus":
        inner = root.find("domain")
        if inner is None:
            raise DomainXMLError("status XML without a <domain> element")
        root = inner
    if root.tag != "domain":
        raise DomainXMLError(f"expected <domain>, got <{root.tag}>")
    devices = root.find("devices")
    disks = [_disk(d) for d in devices.findall("disk")] if devices is not None else []
    watchdogs = devices.findall("watchdog") if devices is not None else []
    watchdog = None
    if watchdogs:
        watchdog = {"model": watchdogs[0].get("model"), "action": watchdogs[0].get("action", "reset")}
    return {
        "name": root.findtext("name"),
        "uuid": root.findtext("uuid"),
        "type": root.get("type"),
        "id": _int(root.get("id")),
        "disks": disks,
        "watchdog": watchdog,
        "panic_device": devices is not None and devices.find("panic") is not None,
        "on_crash": root.findtext("on_crash") or "destroy",
        "on_lockfailure": root.findtext("on_lockfailure"),
        "lock_manager_lease": devices is not None and devices.find("lease") is not None,
    }


def parse_status(text: str) -> dict:
    """libvirtd's /run/libvirt/qemu/NAME.xml (<domstatus>) -> state, reason, pid, job and the domain facts.

    libvirt rewrites this file on every state change, and it stays readable while API calls on the
    domain hang (e.g. a save into a pipe nobody reads), so it is the fallback source of truth.
    """
    root = parse_xml(text)
    if root.tag != "domstatus":
        raise DomainXMLError(f"expected <domstatus>, got <{root.tag}>")
    state = state_code(root.get("state", "nostate"))
    return {
        "state": state,
        "reason": reason_code(state, root.get("reason", "unknown")),
        "state_name": root.get("state"),
        "reason_name": root.get("reason"),
        "pid": _int(root.get("pid")),
        "job": _job(root),
        "domain": parse_domain(text),
    }
