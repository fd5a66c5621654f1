# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: the pause-risk forecast and host readings -> Prometheus text (the collector's second part).

kvmops-pause-collector appends this to the text of ``pause._promtext.render``: per storage what is free to
QEMU, what its disks can still claim and whether it is overcommitted, the domains at risk, the host's memory
pressure (MemAvailable, PSI ``some avg60``), and the operstate of the bridges (and their uplinks) the paused
domains' interfaces use. The state keeps one sample per storage (time, free bytes), so the second run on can
export the fill rate and the time until the storage is full. No I/O here: the collector reads the files and
passes their text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kvmops.fleet.plugins.module_utils.pause._promtext import sample

STATE_VERSION = 1
STATE_FILE = "forecast-collector.json"
# operstates that mean the link does not carry traffic (Documentation/networking/operstates.rst); "unknown" is
# what tun/tap, dummy and some drivers report while working, so it is not counted as down
DOWN_STATES = ("down", "lowerlayerdown", "notpresent", "dormant", "testing")

METRICS = (
    ("kvmops_forecast_success", "gauge", "1 if the last run's pause-risk forecast was complete, else 0."),
    (
        "kvmops_storage_free_bytes",
        "gauge",
        "Bytes free to QEMU on a storage the running domains' disks grow into (f_bavail, f_bfree when QEMU runs as "
        "root, or the thin pool's unused data).",
    ),
    (
        "kvmops_storage_remaining_growth_bytes",
        "gauge",
        "Bytes the disks on this storage can still claim in total (capacity minus what they occupy now).",
    ),
    (
        "kvmops_storage_overcommitted",
        "gauge",
        "1 when the storage's remaining growth exceeds its free bytes: a domain on it pauses, or its guest sees "
        "write errors, once the disks grow that far.",
    ),
    (
        "kvmops_storage_fill_rate_bytes_per_second",
        "gauge",
        "How fast the storage's free bytes went down between the last two runs (0 when they did not).",
    ),
    (
        "kvmops_storage_headroom_seconds",
        "gauge",
        "Seconds until the storage is full at the fill rate of the last two runs; only while it fills.",
    ),
    (
        "kvmops_domain_pause_risk",
        "gauge",
        "1 per running domain and kind of pause risk the forecast found (storage_overcommitted, "
        "write_errors_in_guest, watchdog_pause, memory_overcommit, ...), with its severity.",
    ),
    (
        "kvmops_domain_storage_at_risk",
        "gauge",
        "1 per running domain with a disk on an overcommitted storage; outcome: pause, guest_error or ignored.",
    ),
    ("kvmops_host_memory_available_bytes", "gauge", "MemAvailable of /proc/meminfo."),
    ("kvmops_host_memory_total_bytes", "gauge", "MemTotal of /proc/meminfo."),
    (
        "kvmops_host_memory_pressure_some_avg60",
        "gauge",
        "Percent of the last 60 s some task waited for memory (/proc/pressure/memory, some avg60); only where the "
        "kernel has PSI.",
    ),
    (
        "kvmops_bridge_up",
        "gauge",
        "1 unless the interface's operstate is down, lowerlayerdown, notpresent, dormant or testing; per bridge a "
        "paused domain's interface uses (role bridge) and each of its ports that is not a tap (role uplink).",
    ),
    ("kvmops_domain_bridge", "gauge", "1 per paused domain and bridge one of its interfaces is on."),
)
METRIC_NAMES = tuple(m[0] for m in METRICS)


def parse_meminfo_bytes(text: str) -> dict:
    """/proc/meminfo -> {"MemTotal": bytes, "MemAvailable": bytes, ...} (kB lines only)."""
    out = {}
    for line in (text or "").splitlines():
        key, _sep, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * 1024
    return out


def parse_psi_some_avg60(text: str):
    """/proc/pressure/memory -> the ``some`` line's avg60 (percent), or None."""
    for line in (text or "").splitlines():
        fields = line.split()
        if fields and fields[0] == "some":
            for f in fields[1:]:
                key, _sep, value = f.partition("=")
                if key == "avg60":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def domain_bridges(xml_text: str) -> list:
    """A domain's (live or status) XML -> [(bridge, tap)] of its interfaces on a bridge, in document order.

    ``<source bridge=...>`` is there for type bridge, and libvirt adds it to the live XML of type network
    interfaces on a bridged network too."""
    try:
        root = ET.fromstring(xml_text)  # noqa: S314 - libvirtd's own status XML, not untrusted input
    except ET.ParseError:
        return []
    dom = root.find("domain") if root.tag == "domstatus" else root
    if dom is None:
        return []
    out = []
    for iface in dom.findall("./devices/interface"):
        src = iface.find("source")
        bridge = src.get("bridge") if src is not None else None
        if bridge:
            target = iface.find("target")
            out.append((bridge, target.get("dev") if target is not None else None))
    return out


def clean_state(state) -> dict:
    samples = {}
    if isinstance(state, dict) and state.get("version") == STATE_VERSION:
        for key, s in (state.get("storages") or {}).items():
            if isinstance(s, dict) and isinstance(s.get("t"), (int, float)) and isinstance(s.get("free"), int):
                samples[str(key)] = {"t": float(s["t"]), "free": s["free"]}
    return {"version": STATE_VERSION, "storages": samples}


def _storage_labels(st: dict) -> dict:
    return {"storage": st.get("key") or "", "name": st.get("name") or "", "kind": st.get("kind") or ""}


def render(forecast, state, *, now: float, meminfo_text=None, psi_text=None, paused_bridges=None, links=None):
    """Return ``(text, new_state)``; ``text`` is empty when there is nothing to export.

    ``forecast``: ansible_facts.kvm_pause_risk (forecast._collect_io.collect()), or None when the forecast is
    off or failed (then its families are left out, except kvmops_forecast_success 0 after a failure: pass
    ``{}``). ``state``: the previous return's state. ``meminfo_text`` / ``psi_text``: /proc/meminfo and
    /proc/pressure/memory (None when unreadable). ``paused_bridges``: {paused domain: [(bridge, tap)]}.
    ``links``: {interface: (operstate, [ports of a bridge])} for the bridges named there and their ports."""
    old = clean_state(state)
    new_state = {"version": STATE_VERSION, "storages": {}}
    fams = {name: [] for name in METRIC_NAMES}
    if forecast is not None:
        fams["kvmops_forecast_success"].append((None, bool(forecast.get("complete"))))
        for st in forecast.get("storages") or []:
            labels = _storage_labels(st)
            free = st.get("free_bytes")
            if free is not None:
                fams["kvmops_storage_free_bytes"].append((labels, free))
            fams["kvmops_storage_remaining_growth_bytes"].append((labels, st.get("remaining_growth_bytes") or 0))
            fams["kvmops_storage_overcommitted"].append((labels, bool(st.get("overcommitted"))))
            if free is None:
                continue
            new_state["storages"][labels["storage"]] = {"t": now, "free": int(free)}
            prev = old["storages"].get(labels["storage"])
            if prev and now > prev["t"]:
                rate = max(0.0, (prev["free"] - free) / (now - prev["t"]))
                fams["kvmops_storage_fill_rate_bytes_per_second"].append((labels, rate))
                if rate > 0:
                    fams["kvmops_storage_headroom_seconds"].append((labels, max(0, free) / rate))
            if st.get("overcommitted"):
                for disk in st.get("disks") or []:
                    if (disk.get("remaining_bytes") or 0) > 0:
                        fams["kvmops_domain_storage_at_risk"].append(
                            (
                                {
                                    "domain": disk.get("domain") or "",
                                    "disk": disk.get("target") or "",
                                    "storage": labels["storage"],
                                    "outcome": disk.get("outcome") or "",
                                    "severity": st.get("severity") or "",
                                },
                                1,
                            )
                        )
        seen = set()
        for risk in forecast.get("risks") or []:
            for dom in risk.get("domains") or []:
                key = (dom, risk.get("kind"), risk.get("severity"))
                if key not in seen:
                    seen.add(key)
        for dom, kind, severity in sorted(seen, key=lambda k: tuple(str(x) for x in k)):
            fams["kvmops_domain_pause_risk"].append(({"domain": dom, "kind": kind, "severity": severity}, 1))
    mem = parse_meminfo_bytes(meminfo_text) if meminfo_text else {}
    if "MemAvailable" in mem:
        fams["kvmops_host_memory_available_bytes"].append((None, mem["MemAvailable"]))
    if "MemTotal" in mem:
        fams["kvmops_host_memory_total_bytes"].append((None, mem["MemTotal"]))
    psi = parse_psi_some_avg60(psi_text) if psi_text else None
    if psi is not None:
        fams["kvmops_host_memory_pressure_some_avg60"].append((None, psi))
    links = links or {}
    bridges = set()
    for dom in sorted(paused_bridges or {}):
        for bridge in sorted({b for b, _tap in paused_bridges[dom]}):
            bridges.add(bridge)
            fams["kvmops_domain_bridge"].append(({"domain": dom, "bridge": bridge}, 1))
    for bridge in sorted(bridges):
        operstate, ports = links.get(bridge, ("notpresent", []))
        fams["kvmops_bridge_up"].append(
            (
                {"bridge": bridge, "interface": bridge, "role": "bridge", "operstate": operstate},
                operstate not in DOWN_STATES,
            )
        )
        for port in sorted(ports):
            port_state = links.get(port, ("notpresent", []))[0]
            fams["kvmops_bridge_up"].append(
                (
                    {"bridge": bridge, "interface": port, "role": "uplink", "operstate": port_state},
                    port_state not in DOWN_STATES,
                )
            )
    lines = []
    for name, mtype, help_text in METRICS:
        if fams[name]:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {mtype}")
            lines.extend(sample(name, labels, value) for labels, value in fams[name])
    return ("\n".join(lines) + "\n") if lines else "", new_state
