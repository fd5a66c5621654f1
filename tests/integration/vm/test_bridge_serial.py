"""kvmops.fleet.bridge rolled out with ``serial: 1`` (issue 18: "with serial, a host that rolled back stops the
rollout before the next host is touched"), through the collection's own playbook ``kvmops.fleet.bridge``
(serial 1, max_fail_percentage 0, any_errors_fatal), on real kernels with the controller in the run's namespace
reaching each host over the link being converted.

The issue asks for three hosts where the second gets a wrong config (host 1 converted, host 2 back as it was, host 3
untouched). No shared vmlab fleet has three hosts on one link (HV2: vma and vmb; PROVIDERS: one NetworkManager and
one ifupdown host), and a fleet of its own would be one more boot in every session, so the claim is proven in its two
halves on HV2, each a real rollout of both hosts in inventory order (vma, then vmb):

1. the first host gets a wrong config (a gateway that does not answer): it rolls back, the play fails, and the
   second host is never touched: no task ran on it, and its links, addresses, routes, files, carrier counters and
   interface indexes are exactly as before;
2. the first host gets a good config and the second a wrong one: the first is converted (eth1 into br0 keeping its
   address) and stays so, the second is back as it was, and the play fails naming the rollback.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from vmlab.controller import playbook_argv, ssh_over_link, write_inventory
from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HOSTS = ("vma", "vmb")
TIMING = {"bridge_rollback_timeout": 30, "bridge_confirm_timeout": 12, "bridge_settle_timeout": 10}
DEAD_GATEWAY = "10.213.1.254"

# links (kind, master, MTU, state, MAC), addresses, routes, the provider's files, carrier counters, interface indexes
STATE = r"""
import hashlib, json, os, subprocess
def ipj(*a):
    return json.loads(subprocess.run(["ip", "-j", *a], capture_output=True, text=True, check=True).stdout or "[]")
links = {l["ifname"]: [(l.get("linkinfo") or {}).get("info_kind"), l.get("master"), l["mtu"], l["operstate"],
                       l.get("address")] for l in ipj("-d", "link", "show")}
addrs = {a["ifname"]: sorted("%s/%s" % (i["local"], i["prefixlen"]) for i in a.get("addr_info", []))
         for a in ipj("addr", "show")}
routes = sorted(json.dumps({k: v for k, v in r.items() if k != "expires"}, sort_keys=True)
                for r in ipj("route", "show") + ipj("-6", "route", "show"))
d = "/etc/systemd/network"
files = {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest() for n in sorted(os.listdir(d))}
counters = {n: open("/sys/class/net/%s/carrier_changes" % n).read().strip() for n in links}
ifindex = {l["ifname"]: l["ifindex"] for l in ipj("link", "show")}
pending = os.path.exists("/var/lib/kvmops-bridge")
print(json.dumps({"links": links, "addrs": addrs, "routes": routes, "files": files,
                  "counters": counters, "ifindex": ifindex, "pending": pending}))
"""


def state(vm) -> dict:
    return json.loads(vm.ssh("python3 -", input=STATE, timeout=120).stdout)


def config(s: dict) -> dict:
    """What a rollback must restore exactly (ifindex and carrier counters may move)."""
    return {k: s[k] for k in ("links", "addrs", "routes", "files")}


def bridge(vm, **kw) -> list:
    return [dict({"name": "br0", "ports": ["eth1"], "addresses": [f"{vm.addr('lan')}/24"]}, **kw)]


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        write_inventory(fleet)
        yield fleet


def rollout(fleet, decls: dict) -> dict:
    """ansible-playbook kvmops.fleet.bridge on vma:vmb, each host with its own bridge_bridges -> {"rc", "stats",
    "results": {host: [task results of every batch, in order]}, "order": [host of each batch], "seconds"}."""
    variables = dict(TIMING, kvmops_bridge_hosts=":".join(HOSTS), bridge_probe_targets=["10.213.1.1"],
                     __decl=decls, bridge_bridges="{{ __decl[inventory_hostname] }}")
    argv, env = playbook_argv(fleet, {"import_playbook": "kvmops.fleet.bridge"}, variables)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    results = {h: [] for h in HOSTS}
    order = []
    for batch in data["plays"]:  # one per serial batch
        for t in batch["tasks"]:
            for h, r in t["hosts"].items():
                results[h].append(dict(r, task=t["task"]["name"]))
                if h not in order:
                    order.append(h)
    return {"rc": proc.returncode, "stats": data["stats"], "results": results, "order": order, "seconds": seconds}


def task(results: list, prefix: str) -> dict:
    found = [r for r in results if r["task"].split(" : ", 1)[-1].startswith(prefix)]
    assert found, [r["task"] for r in results]
    return found[-1]


def test_a_first_host_that_rolls_back_stops_the_rollout_before_the_second(hv):
    vma, vmb = hv["vma"], hv["vmb"]
    before = {h: state(hv[h]) for h in HOSTS}
    res = rollout(hv, {"vma": bridge(vma, gateway4=DEAD_GATEWAY), "vmb": bridge(vmb)})
    report(f"bridge serial: first host rolled back, rollout stopped after {res['seconds']:.0f} s")
    assert res["rc"] != 0
    assert res["order"] == ["vma"], res["order"]
    msg = task(res["results"]["vma"], "Fail, naming")["msg"]
    assert msg.startswith("vma rolled back") and f"{DEAD_GATEWAY} does not answer ping" in msg, msg
    assert config(state(vma)) == config(before["vma"])
    # the second host: no task, not even the validation, ran on it; nothing moved, not a carrier counter
    assert res["results"]["vmb"] == []
    assert not any(res["stats"].get("vmb", {}).values()), res["stats"].get("vmb")
    assert state(vmb) == before["vmb"]
    assert ssh_over_link(hv, vma) == "vma" and ssh_over_link(hv, vmb) == "vmb"


def test_the_first_host_converted_the_second_back_as_it_was(hv):
    vma, vmb = hv["vma"], hv["vmb"]
    before = {h: state(hv[h]) for h in HOSTS}
    res = rollout(hv, {"vma": bridge(vma), "vmb": bridge(vmb, gateway4=DEAD_GATEWAY)})
    report(f"bridge serial: first host converted, second rolled back, {res['seconds']:.0f} s")
    assert res["rc"] != 0
    assert res["order"] == ["vma", "vmb"], res["order"]
    # vma: converted, confirmed, and it stays so after vmb's failure
    assert res["stats"]["vma"]["failures"] == 0 and res["stats"]["vma"]["changed"] > 0, res["stats"]["vma"]
    assert task(res["results"]["vma"], "Probe from the host")["ansible_facts"]["kvm_bridge"]["armed"] is False
    after = state(vma)
    assert after["links"]["br0"][:2] == ["bridge", None] and after["links"]["eth1"][1] == "br0"
    assert after["addrs"]["br0"] == [f"{vma.addr('lan')}/24"] and after["addrs"]["eth1"] == []
    assert vma.ssh("systemctl is-active kvmops-bridge-revert.timer", check=False).stdout.strip() != "active"
    assert ssh_over_link(hv, vma) == "vma"
    # vmb: the probe failed, the host put everything back at once, the play names it
    assert res["stats"]["vmb"]["failures"] == 1 and res["stats"]["vmb"]["rescued"] == 1, res["stats"]["vmb"]
    msg = task(res["results"]["vmb"], "Fail, naming")["msg"]
    assert msg.startswith("vmb rolled back") and f"{DEAD_GATEWAY} does not answer ping" in msg, msg
    assert config(state(vmb)) == config(before["vmb"])
    assert ssh_over_link(hv, vmb) == "vmb"
    assert config(state(vma)) == config(after)  # vmb's rollback did not touch vma
