"""forecast/_promtext (issue 23): the forecast, host memory pressure and the paused domains' bridges as
Prometheus text, with exact samples; the fill rate and time until full from two runs; promtool accepts it."""
from __future__ import annotations

import pytest
from promcheck import parse_text, promtool, select

from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import _plan, _promtext

MiB = 1024 * 1024
MEMINFO = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:    2048000 kB\n"
PSI = "some avg10=1.50 avg60=12.25 avg300=3.00 total=123456\nfull avg10=0.00 avg60=2.00 avg300=0.50 total=1234\n"


def forecast(avail):
    doms = []
    for name, policy, occ in (("db-1", "stop", 4096), ("web-1", "report", MiB)):
        doms.append({"name": name, "uuid": None, "memory_kib": 131072, "disks": [
            {"target": "vda", "device": "disk", "readonly": False, "path": f"/srv/{name}.img", "format": "raw",
             "error_policy": policy, "capacity_bytes": 16 * MiB, "occupied_bytes": occ, "occupied_source": "st_blocks",
             "storage": "fs:7:3", "note": None}]})
    storage = {"kind": "filesystem", "name": "/srv", "device": "/dev/loop3", "fstype": "ext4",
               "total_bytes": 20 * MiB, "available_bytes": avail, "root_free_bytes": avail}
    f = _plan.forecast({"qemu_root": False, "domains": doms, "storages": {"fs:7:3": storage}}, ("storage",))
    return dict(f, complete=True)


STATUS_XML = """<domstatus state='paused' reason='ioerror'><domain type='qemu'><name>db-9</name><devices>
<interface type='bridge'><source bridge='br0'/><target dev='vnet3'/></interface>
<interface type='network'><source network='default' bridge='virbr0'/><target dev='vnet4'/></interface>
<interface type='user'/></devices></domain></domstatus>"""


def test_parsers():
    assert _promtext.parse_meminfo_bytes(MEMINFO) == {"MemTotal": 24576000 * 1024, "MemFree": 1000000 * 1024,
                                                      "MemAvailable": 2048000 * 1024}
    assert _promtext.parse_psi_some_avg60(PSI) == 12.25
    assert _promtext.parse_psi_some_avg60("full avg10=0.00 avg60=2.00\n") is None
    assert _promtext.domain_bridges(STATUS_XML) == [("br0", "vnet3"), ("virbr0", "vnet4")]
    assert _promtext.domain_bridges("<not xml") == []


def test_first_run_exact_samples():
    text, state = _promtext.render(
        forecast(17 * MiB), {}, now=1000.0, meminfo_text=MEMINFO, psi_text=PSI,
        paused_bridges={"db-9": _promtext.domain_bridges(STATUS_XML)},
        links={"br0": ("up", ["eth0"]), "eth0": ("down", []), "virbr0": ("unknown", [])})
    s = parse_text(text)
    where = {"storage": "fs:7:3", "name": "/srv", "kind": "filesystem"}
    assert select(s, "kvmops_forecast_success") == [({}, 1.0)]
    assert select(s, "kvmops_storage_free_bytes") == [(where, 17 * MiB)]
    assert select(s, "kvmops_storage_remaining_growth_bytes") == [(where, 31 * MiB - 4096)]
    assert select(s, "kvmops_storage_overcommitted") == [(where, 1.0)]
    assert select(s, "kvmops_storage_fill_rate_bytes_per_second") == []   # one sample: no rate yet
    assert select(s, "kvmops_storage_headroom_seconds") == []
    assert select(s, "kvmops_domain_storage_at_risk") == [
        ({"domain": "db-1", "disk": "vda", "storage": "fs:7:3", "outcome": "pause", "severity": "warning"}, 1.0),
        ({"domain": "web-1", "disk": "vda", "storage": "fs:7:3", "outcome": "guest_error", "severity": "warning"}, 1.0),
    ]
    assert select(s, "kvmops_domain_pause_risk") == [
        ({"domain": "db-1", "kind": "storage_overcommitted", "severity": "warning"}, 1.0),
        ({"domain": "web-1", "kind": "storage_overcommitted", "severity": "warning"}, 1.0),
        ({"domain": "web-1", "kind": "write_errors_in_guest", "severity": "warning"}, 1.0),
    ]
    assert select(s, "kvmops_host_memory_available_bytes") == [({}, 2048000 * 1024)]
    assert select(s, "kvmops_host_memory_pressure_some_avg60") == [({}, 12.25)]
    assert select(s, "kvmops_domain_bridge") == [({"domain": "db-9", "bridge": "br0"}, 1.0),
                                                 ({"domain": "db-9", "bridge": "virbr0"}, 1.0)]
    assert select(s, "kvmops_bridge_up") == [
        ({"bridge": "br0", "interface": "br0", "role": "bridge", "operstate": "up"}, 1.0),
        ({"bridge": "br0", "interface": "eth0", "role": "uplink", "operstate": "down"}, 0.0),
        ({"bridge": "virbr0", "interface": "virbr0", "role": "bridge", "operstate": "unknown"}, 1.0),
    ]
    assert state == {"version": 1, "storages": {"fs:7:3": {"t": 1000.0, "free": 17 * MiB}}}
    assert promtool("check", "metrics", stdin=text).returncode == 0


def test_second_run_rate_and_time_to_full():
    state = _promtext.render(forecast(17 * MiB), {}, now=1000.0)[1]
    text, state2 = _promtext.render(forecast(16 * MiB), state, now=1030.0)   # 1 MiB in 30 s
    s = parse_text(text)
    assert select(s, "kvmops_storage_fill_rate_bytes_per_second")[0][1] == pytest.approx(MiB / 30, abs=0.001)
    assert select(s, "kvmops_storage_headroom_seconds")[0][1] == pytest.approx(16 * 30, abs=0.001)
    assert state2["storages"]["fs:7:3"] == {"t": 1030.0, "free": 16 * MiB}
    text = _promtext.render(forecast(18 * MiB), state2, now=1060.0)[0]   # space freed: rate 0, no time to full
    s = parse_text(text)
    assert select(s, "kvmops_storage_fill_rate_bytes_per_second")[0][1] == 0
    assert select(s, "kvmops_storage_headroom_seconds") == []


def test_forecast_off_or_failed_and_bad_state():
    text, state = _promtext.render(None, {"version": 9, "storages": {"x": 1}}, now=1.0)
    assert text == "" and state == {"version": 1, "storages": {}}
    text = _promtext.render({}, None, now=1.0, paused_bridges={"d": [("br9", "vnet0")]}, links={})[0]
    s = parse_text(text)
    assert select(s, "kvmops_forecast_success") == [({}, 0.0)]
    assert select(s, "kvmops_bridge_up") == [
        ({"bridge": "br9", "interface": "br9", "role": "bridge", "operstate": "notpresent"}, 0.0)]
