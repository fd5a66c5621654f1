"""A VM's network state in one SSH round trip, for tests that must prove a change left nothing behind (a rollback
restores exactly, a second run bounces no link, an untouched host is untouched).

``state(vm, provider)`` reads, over the management forward (eth0, which no role touches): links (kind, master,
MTU, operstate, MAC), addresses, routes (IPv4 and IPv6, lifetimes left out: router advertisements count them
down), the network provider's files (path -> [sha256, mode]), what the provider says is active, carrier counters
and interface indexes. ``config(s)`` keeps what a rollback must restore exactly (ifindexes and carrier counters
may move); ``differences(a, b)`` says what differs, for assertion messages.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

from .controller import playbook_argv

# provider -> (the files and directories it reads, the command that says what it runs now, or "" for none:
# networkctl's operational states move by themselves while links settle)
PROVIDER_FILES = {
    "networkd": (["/etc/systemd/network"], ""),
    "nm": (["/etc/NetworkManager/system-connections"],
           "nmcli -t -f NAME,DEVICE,TYPE connection show --active | sort"),
    "ifupdown": (["/etc/network/interfaces", "/etc/network/interfaces.d"], "ifquery --state | sort"),
}

STATE = r"""
import hashlib, json, os, subprocess, sys
def ipj(*a):
    return json.loads(subprocess.run(["ip", "-j", *a], capture_output=True, text=True, check=True).stdout or "[]")
links = {l["ifname"]: [(l.get("linkinfo") or {}).get("info_kind"), l.get("master"), l["mtu"], l["operstate"],
                       l.get("address")] for l in ipj("-d", "link", "show")}
addrs = {a["ifname"]: sorted("%s/%s" % (i["local"], i["prefixlen"]) for i in a.get("addr_info", []))
         for a in ipj("addr", "show")}
routes = sorted(json.dumps({k: v for k, v in r.items() if k != "expires"}, sort_keys=True)
                for r in ipj("route", "show") + ipj("-6", "route", "show"))
files = {}
for top in sys.argv[2:]:
    paths = [os.path.join(top, n) for n in sorted(os.listdir(top))] if os.path.isdir(top) else [top]
    for p in paths:
        if os.path.isfile(p):
            files[p] = [hashlib.sha256(open(p, "rb").read()).hexdigest(), oct(os.stat(p).st_mode & 0o7777)]
active = subprocess.run(sys.argv[1], shell=True, capture_output=True, text=True).stdout.split() if sys.argv[1] else []
counters = {n: open("/sys/class/net/%s/carrier_changes" % n).read().strip() for n in links}
ifindex = {l["ifname"]: l["ifindex"] for l in ipj("link", "show")}
print(json.dumps({"links": links, "addrs": addrs, "routes": routes, "files": files, "active": active,
                  "counters": counters, "ifindex": ifindex}))
"""


def state(vm, provider: str = "networkd") -> dict:
    paths, active = PROVIDER_FILES[provider]
    argv = " ".join(["python3", "-", shlex.quote(active), *paths])
    return json.loads(vm.ssh(argv, input=STATE, timeout=120).stdout)


def config(s: dict) -> dict:
    """What a rollback must restore exactly (ifindex and carrier counters may move)."""
    return {k: s[k] for k in ("links", "addrs", "routes", "files", "active")}


def differences(a: dict, b: dict) -> dict:
    """key -> (only in a, only in b) for every key whose values differ (lists and mappings as sets of items)."""
    out = {}
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x != y:
            sx = {json.dumps(i, sort_keys=True) for i in (x.items() if isinstance(x, dict) else x or [])}
            sy = {json.dumps(i, sort_keys=True) for i in (y.items() if isinstance(y, dict) else y or [])}
            out[k] = (sorted(sx - sy), sorted(sy - sx))
    return out


# the bridge role's markers on the host (kvm_bridge_apply's pending change)
PENDING = "/var/lib/kvmops-bridge/pending"


def kill_when_live(fleet, vm, play: dict, variables: dict, address: str, timeout: float = 120) -> float:
    """Run ``play`` from the controller's namespace and SIGKILL ansible-playbook (its whole process group) as soon as
    the change is live on ``vm`` (applied, and br0 holds ``address``) and before the controller confirms it ->
    the monotonic time of the kill. Fails when the change never went live while the play ran, or was confirmed."""
    argv, env = playbook_argv(fleet, play, variables)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        live = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            out = vm.ssh(f"test -e {PENDING}/applied && ip -br addr show br0", check=False)
            if out.returncode == 0 and address in out.stdout:
                live = True
                break
            time.sleep(0.2)
        assert live and proc.poll() is None, "the change did not go live while ansible-playbook ran"
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert vm.ssh(f"test -e {PENDING}/confirmed", check=False).returncode != 0, "the confirmation ran before the kill"
    return killed


def wait_reverted(vm, timeout: float) -> float:
    """Seconds until the host says it reverted the pending change; fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if vm.ssh(f"test -e {PENDING}/reverted", check=False).returncode == 0:
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"no revert within {timeout} s")
