"""A fleet of kvm_pause_facts results covering every cause, for the report tests and the docs screenshot.

``fleet_results()`` returns ``{host: registered result}`` exactly as the diagnostics role hands it to the
``kvmops.fleet.fleet_report`` filter: three diagnosed hosts (one incomplete, with an unresponsive domain
blocked in a save job) holding one paused or crashed domain per cause of ``_diagnose.CAUSES`` (plus a second
storage_full that is safe to resume), an unreachable host, a host whose libvirtd is not running, and a
host that left the play before the diagnosis (None). The diagnosis texts come from the collection's own
``pause/_diagnose.diagnose``; the entry shape is the module's (tests compare its keys with a real module run).
Hostile strings (a domain named with ``<script>`` and quotes, markup in messages and log lines) test the
escaping of every renderer.
"""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _states
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _status as _drbd_status
from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose, _evidence_io

MIB = 1024 * 1024
GIB = 1024 * MIB
NOW = 1_795_000_000  # 2026-11-18T11:06:40Z: fixed, so the fixture is deterministic
HOSTILE = "<script>alert('x')</script>\"quoted\"&amp;"
REASON_CODES = {name: code for code, name in enumerate(_states.PAUSED_REASON_KEYS)}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fs(mount="/var/lib/libvirt/images", device="/dev/mapper/vg0-images", total=200 * GIB, avail=40 * GIB):
    return {"mount_point": mount, "device": device, "fstype": "ext4", "total_bytes": total,
            "available_bytes": avail, "free_bytes": avail + total // 20,
            "used_percent": round(100.0 * (total - avail) / total, 1)}


def file_disk(path, filesystem, target="vda", error=0, capacity=20 * GIB, physical=12 * GIB):
    return {"target": target, "type": "file", "device": "disk", "path": path, "format": "qcow2",
            "error_policy": "stop", "rerror_policy": "stop", "readonly": False,
            "capacity": capacity, "allocation": physical, "physical": physical, "_error": error,
            "evidence": {"filesystem": filesystem, "endpoints": []}}


def block_disk(path, target="vdb", error=0, size=50 * GIB):
    return {"target": target, "type": "block", "device": "disk", "path": path, "format": "raw",
            "error_policy": "stop", "rerror_policy": "stop", "readonly": False,
            "capacity": size, "allocation": size, "physical": size, "_error": error,
            "evidence": {"block_device": {"path": path, "device": path, "total_bytes": size}, "endpoints": []}}


def nbd_disk(endpoint, reachable, target="vda", error=1, created=None):
    return {"target": target, "type": "network", "device": "disk", "protocol": "nbd", "export": "disk0",
            "hosts": [{"transport": "unix", "socket": endpoint.split(":", 1)[1]}], "format": "raw",
            "error_policy": "stop", "rerror_policy": "stop", "readonly": False,
            "capacity": 8 * GIB, "allocation": None, "physical": None, "_error": error,
            "evidence": {"endpoints": [{"endpoint": endpoint, "reachable": reachable,
                                        "error": None if reachable else "Connection refused",
                                        "created": created}]}}


def dead_nfs_disk(path, mount="/srv/nfs", server="nfs1.example.net:/export/vm", target="vda", dead_for=240):
    """A file disk on a hard NFS mount whose server stopped answering (what the storage probes report)."""
    un = {"kind": "mount", "target": mount, "mount_point": mount, "fstype": "nfs4", "source": server,
          "options": "rw,vers=4.2,hard,proto=tcp,timeo=600,retrans=2", "since": NOW - dead_for,
          "seconds": float(dead_for), "probe_pid": 31337}
    return {"target": target, "type": "file", "device": "disk", "path": path, "format": "qcow2",
            "error_policy": "stop", "rerror_policy": "stop", "readonly": False,
            "capacity": None, "allocation": None, "physical": None, "_error": 0,
            "evidence": {"filesystem": {"mount_point": mount, "device": server, "fstype": "nfs4", "total_bytes": None,
                                        "available_bytes": None, "free_bytes": None, "used_percent": None,
                                        "responsive": False},
                         "endpoints": [], "unresponsive": un}}


DRBD_FIX = Path(__file__).resolve().parents[1] / "unit" / "plugins" / "module_utils" / "fixtures" / "drbd"


def drbd_84_detached_and_cut() -> list:
    """DRBD 8.4.11 as recorded on vmb after `drbdadm detach r0` (fixtures/drbd/diskless-vmb.json), with the
    replication link then cut (the peer as 8.4 shows it then: WFConnection, DUnknown)."""
    c = json.loads((DRBD_FIX / "diskless-vmb.json").read_text())["commands"]
    show = c["drbdsetup show"]["stdout"]
    proc = c["cat /proc/drbd"]["stdout"].replace("cs:Connected ro:Secondary/Primary ds:Diskless/UpToDate",
                                                 "cs:WFConnection ro:Primary/Unknown ds:Diskless/DUnknown")
    return _drbd_status.resources_84(proc, show, "")


def drbd_9_host() -> list:
    """DRBD 9: vm1disk as in fixtures/drbd/status9-no-quorum.json; vm3disk is status9-healthy.json renamed (minor
    1003) with its I/O suspended (what fencing does while it fences)."""
    res = _drbd_status.resources_9((DRBD_FIX / "status9-no-quorum.json").read_text(), "", "9.2.12")
    fenced = json.loads((DRBD_FIX / "status9-healthy.json").read_text())
    fenced[0].update(name="vm3disk", suspended=True)
    fenced[0]["devices"][0]["minor"] = 1003
    return res + _drbd_status.resources_9(json.dumps(fenced), "", "9.2.12")


def drbd_facts(resources: list, version: str) -> dict:
    return {"loaded": True, "kernel_version": version, "utils_version": "9.22.0", "resources": resources,
            "summary": _drbd_status.summary(resources), "errors": [], "seconds": 0.031}


def drbd_disk(path, minor, resources, target="vda", error=1, size=8 * GIB):
    d = block_disk(path, target=target, error=error, size=size)
    d["evidence"]["drbd"] = _evidence_io.drbd_evidence(_evidence_io.drbd_device(path, f"/dev/drbd{minor}"),
                                                       {"loaded": True, "resources": resources})
    return d


def public_disk(x: dict) -> dict:
    ev = x["evidence"]
    source = x["path"] if x["type"] != "network" else "nbd://{}/{}".format(ev["endpoints"][0]["endpoint"], x["export"])
    return {"target": x["target"], "type": x["type"], "device": x["device"], "source": source,
            "format": x["format"], "error_policy": x["error_policy"], "rerror_policy": x["rerror_policy"],
            "error": _states.DISK_ERRORS[x["_error"]], "error_code": x["_error"],
            "capacity": x["capacity"], "allocation": x["allocation"], "physical": x["physical"],
            "filesystem": ev.get("filesystem"), "block_device": ev.get("block_device"),
            "endpoints": ev.get("endpoints") or [], "pool": None, "thin_pool": None,
            "storage_unresponsive": dict(ev["unresponsive"], since=iso(ev["unresponsive"]["since"]))
            if ev.get("unresponsive") else None,
            "drbd": ev.get("drbd")}


def domain(name, uuid_n, *, reason="user", state=3, disks=(), job=None, responsive=True, paused_ago=600,
           log_lines=(), watchdog=None, on_lockfailure=None, on_crash="destroy", started_ago=86400, errors=()):
    disks = [copy.deepcopy(d) for d in disks] or [file_disk(f"/var/lib/libvirt/images/{name}.qcow2", fs())]
    code = REASON_CODES[reason] if state == 3 else {"unknown": 0, "panicked": 1}[reason]
    since = NOW - paused_ago if paused_ago is not None else None
    jobd = None
    if job:
        jobd = {"active": True, "kind": job, "progress_percent": None if not responsive else 42.0,
                "elapsed_seconds": None if not responsive else float(paused_ago),
                "started_ms": since * 1000 if not responsive else None,
                "source": "libvirt" if responsive else "status_xml"}
    diag = _diagnose.diagnose({
        "name": name, "state": state, "reason": code,
        "disk_errors": {d["target"]: d["_error"] for d in disks if d["_error"]},
        "disks": disks, "job": jobd, "watchdog": watchdog, "on_lockfailure": on_lockfailure, "on_crash": on_crash,
        "log_lines": list(log_lines), "responsive": responsive,
        "paused": {"since": since, "seconds": float(paused_ago) if since else None,
                   "source": "status_xml_job_started" if jobd and not responsive else "status_xml_mtime"},
        "source": "libvirt" if responsive else "status_xml", "started_at": NOW - started_ago,
    })
    return {
        "name": name, "uuid": f"6d1f0000-0000-4000-8000-{uuid_n:012d}",
        "state": "crashed" if state == 6 else "paused", "state_code": state,
        "reason": reason, "reason_code": code,
        **diag,
        "responsive": responsive,
        "unresponsive_reason": None if responsive else (
            f"not queried: its status file shows a {job} job in flight, which can hold the domain lock so that "
            "every libvirt call on it hangs"),
        "source": "libvirt" if responsive else "status_xml",
        "paused_since": iso(since), "paused_for_seconds": float(paused_ago) if since else None,
        "paused_since_source": ("status_xml_job_started" if jobd and not responsive else "status_xml_mtime")
        if since else "unknown",
        "disks": [public_disk(d) for d in disks],
        "job": jobd,
        "control": {"state": "ok", "details": 0, "seconds": 0.0} if responsive else None,
        "watchdog_action": (watchdog or {}).get("action"), "on_lockfailure": on_lockfailure, "on_crash": on_crash,
        "log": {"path": f"/var/log/libvirt/qemu/{name}.log", "lines": list(log_lines)},
        "errors": list(errors),
    }


def dead_storage(paused: list, at_risk: dict) -> list:
    """The facts' storage_unresponsive list from the paused domains' disks (+ running ones on it)."""
    out: dict = {}
    for p in paused:
        for d in p["disks"]:
            un = d.get("storage_unresponsive")
            if un:
                entry = out.setdefault(un["target"], {k: un[k] for k in (
                    "kind", "target", "mount_point", "fstype", "source", "options", "since", "seconds", "probe_pid")}
                    | {"domains": []})
                entry["domains"].append({"name": p["name"], "state": p["state"], "disks": [d["target"]]})
    for name, target in at_risk.items():
        out[target]["domains"].append({"name": name, "state": "running", "disks": ["vda"]})
    return [out[k] for k in sorted(out)]


def facts(paused: list, running: int, *, shutoff=0, complete=True, errors=(), uri="qemu:///system",
          at_risk=None, drbd=None) -> dict:
    paused = sorted(paused, key=lambda p: p["name"])
    unresponsive = [
        {"name": p["name"], "uuid": p["uuid"], "state": p["state"], "reason": p["reason"],
         "job": (p["job"] or {}).get("kind"), "job_seconds": p["paused_for_seconds"] if p["job"] else None,
         "pid": 4242, "queried": False, "message": p["unresponsive_reason"]}
        for p in paused if not p["responsive"]
    ]
    by_cause: dict = {}
    for p in paused:
        by_cause[p["cause"]] = by_cause.get(p["cause"], 0) + 1
    n_paused = sum(1 for p in paused if p["state"] == "paused")
    n_crashed = len(paused) - n_paused
    storage = dead_storage(paused, at_risk or {})
    return {
        "changed": False,
        "ansible_facts": {"kvm_pause": {
            "schema_version": 1, "uri": uri, "collected_at": iso(NOW), "duration_seconds": 0.214,
            "complete": complete, "collection": "getAllDomainStats" if complete else "status_xml",
            "summary": {"total": running + len(paused) + shutoff, "running": running, "paused": n_paused,
                        "crashed": n_crashed, "shutoff": shutoff, "other": 0, "unresponsive": len(unresponsive),
                        "safe_to_resume": sum(1 for p in paused if p["safe_to_resume"]), "by_cause": by_cause,
                        "storage_unresponsive": len(storage), "at_risk": len(at_risk or {})},
            "paused": paused, "unresponsive": unresponsive, "storage_unresponsive": storage,
            "errors": list(errors), "warnings": [
                "storage at {} ({} from {}) did not answer for {}s; domains on it: {}".format(
                    st["target"], st["fstype"], st["source"], st["seconds"],
                    ", ".join(d["name"] for d in st["domains"]))
                for st in storage],
        } | ({"drbd": drbd} if drbd is not None else {})},
    }


def fleet_results() -> dict:
    img = "/var/lib/libvirt/images"
    drbd_a, drbd_b = drbd_84_detached_and_cut(), drbd_9_host()
    full = fs(mount="/srv/vm", device="/dev/sdb1", total=500 * GIB, avail=0)
    roomy = fs(mount="/srv/vm2", device="/dev/sdc1", total=500 * GIB, avail=120 * GIB)
    hv_a = [
        domain("web-01", 1, reason="ioerror", disks=[file_disk("/srv/vm/web-01.qcow2", full, error=2)],
               paused_ago=1800, log_lines=["2026-11-18 09:16:40.001+0000: ENOSPC writing to /srv/vm/web-01.qcow2"]),
        domain("web-02", 2, reason="ioerror", disks=[file_disk("/srv/vm2/web-02.qcow2", roomy, error=2)],
               paused_ago=7200),
        domain("build-07", 3, reason="user", paused_ago=300),
        domain(HOSTILE, 4, reason="user", paused_ago=90, log_lines=["<img src=x onerror=alert(1)> & </td>"]),
        domain("db-02", 5, reason="watchdog", watchdog={"model": "i6300esb", "action": "pause"}, paused_ago=5400),
        domain("kernel-ci-3", 6, reason="panicked", state=6, on_crash="preserve", paused_ago=86400 * 2),
        domain("ci-runner-9", 7, reason="from_snapshot", paused_ago=3600),
        domain("db-drbd-1", 8, reason="ioerror", disks=[drbd_disk("/dev/drbd/by-res/r0/0", 0, drbd_a)],
               paused_ago=1200),
    ]
    hv_b = [
        domain("db-01", 11, reason="ioerror", disks=[
            file_disk(f"{img}/db-01.qcow2", fs()), block_disk("/dev/mapper/mpatha", error=1)], paused_ago=900),
        domain("nfs-client-4", 12, reason="ioerror",
               disks=[nbd_disk("unix:/run/qsd/export4.sock", reachable=False)], paused_ago=60),
        domain("ha-node-2", 13, reason="user", on_lockfailure="pause",
               log_lines=["virtlockd: resource lock lost for /srv/shared/ha-node-2.img"], paused_ago=420),
        domain("legacy-win", 14, reason="unknown", log_lines=["KVM internal error. Suberror: 1",
                                                              "emulation failure"], paused_ago=3000),
        domain("mystery", 15, reason="unknown", log_lines=["Domain id=9 is tainted: custom-monitor"],
               paused_ago=12000),
        domain("shutdown-1", 16, reason="shutting_down", paused_ago=30),
        domain("boot-3", 17, reason="starting_up", paused_ago=5),
        domain("api-fail-1", 18, reason="api_error", paused_ago=200),
        domain("nfs-app-5", 19, reason="user", disks=[dead_nfs_disk("/srv/nfs/nfs-app-5.qcow2")], paused_ago=250),
        domain("quorum-app-1", 20, reason="ioerror", disks=[drbd_disk("/dev/drbd/by-res/vm1disk/0", 1000, drbd_b)],
               paused_ago=600),
        domain("fenced-app-3", 29, reason="user",
               disks=[drbd_disk("/dev/drbd/by-res/vm3disk/0", 1003, drbd_b, error=0)], paused_ago=150),
    ]
    hv_c = [
        domain("save-me", 21, reason="save", job="save", responsive=False, paused_ago=1500),
        domain("dump-1", 22, reason="dump", job="dump", paused_ago=120),
        domain("snap-1", 23, reason="snapshot", job="snapshot", paused_ago=45),
        domain("backup-1", 24, reason="user", job="backup", paused_ago=700),
        domain("odd-job", 25, reason="user", job="odd_thing", paused_ago=65),
        domain("mig-1", 26, reason="migration", job="migration_out", paused_ago=33),
        domain("mig-pc", 27, reason="postcopy", job="migration_out", paused_ago=80),
        domain("mig-pcf", 28, reason="postcopy_failed", paused_ago=4000),
    ]
    return {
        "hv-a.example.net": facts(hv_a, running=21, shutoff=2, drbd=drbd_facts(drbd_a, "8.4.11")),
        "hv-b.example.net": facts(hv_b, running=9, at_risk={"nfs-web-6": "/srv/nfs"},
                                  drbd=drbd_facts(drbd_b, "9.2.12")),
        "hv-c.example.net": facts(hv_c, running=3, complete=False, errors=[
            "libvirt did not list the domains within 10.0s: a domain is probably blocked in a job "
            "(domains known from status files are under unresponsive)"]),
        "hv-d.example.net": {"changed": False, "unreachable": True,
                             "msg": "Task failed: Failed to connect to the host via ssh: ssh: connect to host "
                                    "hv-d.example.net port 22: No route to host"},
        "hv-e.example.net": {"changed": False, "failed": True,
                             "msg": "libvirtd is not running on this host: cannot connect to qemu:///system "
                                    "(Failed to connect socket to '/var/run/libvirt/libvirt-sock': "
                                    "No such file or directory) <b>bold?</b>"},
        "hv-f.example.net": None,
    }


# --- the forecast (kvm_pause_risk results) beside the pauses
FORECAST_AT = "2026-12-06T03:00:00Z"


def disk(name, policy, cap, occ):
    return {"target": "vda", "device": "disk", "readonly": False, "path": f"/srv/images/{name}.img", "format": "raw",
            "error_policy": policy, "capacity_bytes": cap, "occupied_bytes": occ, "occupied_source": "st_blocks",
            "storage": "fs:7:3", "note": None}


def forecast_result(avail=17 * MIB, disks=(("db-1", "stop", 16 * MIB, 4096), ("web-1", "report", 16 * MIB, MIB)),
                    watchdog=None):
    """A registered kvm_pause_risk result whose forecast is computed by the module's own plan."""
    doms = [{"name": n, "uuid": None, "memory_kib": 131072, "disks": [disk(n, p, c, o)]} for n, p, c, o in disks]
    if watchdog:
        doms.append({"name": watchdog, "uuid": None, "memory_kib": 131072, "disks": [],
                     "watchdog": {"model": "i6300esb", "action": "pause"}})
    storage = {"kind": "filesystem", "name": "/srv/images", "device": "/dev/loop3", "fstype": "ext4",
               "total_bytes": 20 * MIB, "available_bytes": avail, "root_free_bytes": avail + MIB}
    f = _plan.forecast({"qemu_root": False, "domains": doms, "storages": {"fs:7:3": storage}, "meminfo": {},
                        "hugepages": {}}, ("storage", "config"))
    facts = dict(f, schema_version=1, uri="qemu:///system", collected_at=FORECAST_AT, duration_seconds=0.2,
                 complete=True, checks=["storage", "config"], qemu_runs_as_root=False, errors=[], warnings=[])
    return {"changed": False, "ansible_facts": {"kvm_pause_risk": facts}}


def risks_of(results, **per_host):
    out = dict.fromkeys(results)
    out.update(per_host)
    return out
