"""kvmops.fleet.bridge with a bond and a VLAN under the bridge, on systemd-networkd, proven on a real kernel:
a bond of two unaddressed links, VLAN 10 on the bond, a bridge over the VLAN holding the address; the peer reached
over VLAN 10 across the bond, and still reached when one of the bond's links loses its carrier.

The shared fleet vmlab.fleets.HV2: ``vma`` and ``vmb`` each get ``bond0`` = their NICs on the links ``bond1`` and
``bond2`` (active-backup, miimon 100, primary the ``bond1`` NIC), ``vlan10`` on ``bond0`` and ``brv10`` with port
``vlan10`` and an address in 10.213.10.0/24. ansible-playbook runs inside the run's network namespace and reaches the
VMs on ``lan``; the state the tests compare is read over the management forward on eth0.

In order, on one lease (each test builds on the state the one before left): bad bonds and VLANs, each refused naming
the variable with nothing changed; check mode (every file in the diff, nothing touched); a probe peer that does not
answer (the host deletes the bond, the VLAN and the bridge it created and is back exactly as it was); the conversion
on both VMs (the peers ping each other over VLAN 10 across the bond; check again and real again change nothing and
bounce no link); the bond's primary link cut (carrier) on both VMs: the bond fails over and the pings go on, then
the link comes back and the primary carries the traffic again.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import pytest

from vmlab.controller import playbook_argv, ssh_over_link, write_inventory
from vmlab.fleets import HV2
from vmlab.netstate import config, state
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HOSTS = ("vma", "vmb")
VLAN_NET = "10.213.10"
ADDR = {"vma": f"{VLAN_NET}.11", "vmb": f"{VLAN_NET}.12"}
PEER = {"vma": "vmb", "vmb": "vma"}
# timeouts for a TCG guest on a shared 2-core machine: a new SSH connection takes 2-5 s
TIMING = {"bridge_rollback_timeout": 40, "bridge_confirm_timeout": 15, "bridge_settle_timeout": 15}
FILES = ["05-kvmops-bond0-member-{a}.network", "05-kvmops-bond0-member-{b}.network", "05-kvmops-bond0.netdev",
         "05-kvmops-bond0.network", "05-kvmops-brv10.netdev", "05-kvmops-brv10.network", "05-kvmops-vlan10.netdev",
         "05-kvmops-vlan10.network"]


def nics(vm) -> tuple[str, str]:
    return vm.nic("bond1").iface, vm.nic("bond2").iface


def declaration(vm) -> dict:
    a, b = nics(vm)
    return {
        "bridge_bonds": [{"name": "bond0", "interfaces": [a, b], "mode": "active-backup", "miimon": 100,
                          "primary": a}],
        "bridge_vlans": [{"name": "vlan10", "id": 10, "link": "bond0"}],
        "bridge_bridges": [{"name": "brv10", "ports": ["vlan10"], "addresses": [f"{ADDR[vm.name]}/24"]}],
    }


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        write_inventory(fleet)
        try:
            yield fleet
        finally:
            fleet.restore("bond1")  # the pool's reset restores the carrier too; leave nothing to chance


def play(fleet, hosts: tuple, extra: dict, check: bool = False, tasks: list | None = None,
         per_host: bool = True) -> dict:
    """The role (or ``tasks``) on ``hosts``, each with its own declaration (play vars keyed by host), from the
    controller's namespace -> {"rc", "stats": {host: ...}, "results": {host: [task results]}, "seconds"}."""
    body = {"roles": [{"role": "kvmops.fleet.bridge"}]} if tasks is None else {"tasks": tasks}
    variables = dict(TIMING, **extra)
    pvars = {}
    if per_host:
        decls = {h: declaration(fleet[h]) for h in hosts}
        variables["__decl"] = decls
        pvars = {k: "{{ __decl[inventory_hostname]." + k + " }}"
                 for k in ("bridge_bonds", "bridge_vlans", "bridge_bridges")}
    p = {"hosts": ":".join(hosts), "gather_facts": False, "vars": pvars, **body}
    argv, env = playbook_argv(fleet, p, variables, check)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    results = {h: [dict(t["hosts"][h], task=t["task"]["name"]) for t in data["plays"][0]["tasks"] if h in t["hosts"]]
               for h in hosts}
    return {"rc": proc.returncode, "stats": {h: data["stats"][h] for h in hosts}, "results": results,
            "seconds": seconds}


def task(results: list, prefix: str) -> dict:
    found = [r for r in results if r["task"].split(" : ", 1)[-1].startswith(prefix)]
    assert found, [r["task"] for r in results]
    return found[-1]


def failures(res: dict) -> list:
    return [(h, r["task"], r.get("msg")) for h, rs in res["results"].items() for r in rs if r.get("failed")]


def active(vm) -> str:
    out = vm.ssh("cat /proc/net/bonding/bond0").stdout
    m = re.search(r"^Currently Active Slave: (\S+)", out, re.M)
    return m.group(1) if m else ""


def test_bad_bonds_and_vlans_are_refused_naming_the_variable_and_nothing_changes(hv):
    vm = hv["vma"]
    a, b = nics(vm)
    repl = vm.nic("repl").iface
    bond = {"name": "bond0", "interfaces": [a, b]}
    bad = [
        ({"bonds": [dict(bond, interfaces=[a, "eth9"])]}, "bridge_bonds[0].interfaces[1]: eth9 does not exist"),
        ({"bridges": [{"name": "br5", "ports": [a]}], "bonds": [bond]},
         f"bridge_bonds[0].interfaces[0]: {a} is already a port of bridge_bridges[0] (br5)"),
        ({"bonds": [bond, {"name": "bond1", "interfaces": [b]}]},
         f"bridge_bonds[1].interfaces[0]: {b} is already an interface of bridge_bonds[0] (bond0)"),
        ({"bonds": [{"name": "bond9", "interfaces": [repl]}]},
         f"bridge_bonds[0].interfaces[0]: {repl} holds {vm.addr('repl')}/24, which it would lose in bond bond9"),
        ({"bonds": [dict(bond, primary=repl)]}, f"bridge_bonds[0].primary: {repl} is not one of"),
        ({"bonds": [dict(bond, mode="balance-rr", primary=a)]},
         "bridge_bonds[0].primary: only active-backup, balance-tlb, balance-alb use a primary"),
        ({"bonds": [dict(bond, mtu=70000)]}, "bridge_bonds[0].mtu: must be from 68 to 65535, got 70000"),
        ({"bonds": [dict(bond, name="bond-much-too-long")]}, "bridge_bonds[0].name: is 18 characters long"),
        ({"bonds": [bond], "vlans": [{"name": "vlan5000", "id": 5000, "link": "bond0"}]},
         "bridge_vlans[0].id: must be from 1 to 4094, got 5000"),
        ({"vlans": [{"name": "vlan10", "id": 10, "link": "eth9"}]},
         "bridge_vlans[0].link: eth9 does not exist on this host and is no declared bond or bridge"),
        ({"bonds": [bond], "vlans": [{"name": "vlan10", "id": 10, "link": "bond0", "mtu": 9000}]},
         "bridge_vlans[0].mtu: 9000 is above the MTU of its link bond0 (1500)"),
        ({"bonds": [bond], "vlans": [{"name": "vlan10", "id": 10, "link": "bond0"},
                                     {"name": "vlan11", "id": 10, "link": "bond0"}]},
         "bridge_vlans[1].id: VLAN 10 on bond0 is also bridge_vlans[0] (vlan10)"),
        ({"bridges": [{"name": "br5", "ports": ["vlan7"]}], "vlans": [{"name": "vlan7", "id": 7, "link": "br5"}]},
         "bridge_vlans[0].link: the declaration loops: br5 -> vlan7 -> br5"),
        ({"bridges": [{"name": "bond0"}], "bonds": [bond]},
         "bridge_bridges[0].name: bond0 is also declared in bridge_bonds[0]"),
    ]
    before = state(vm)
    tasks = [{"name": f"bad {i}", "kvmops.fleet.kvm_bridge_apply": dict(
        {"bridges": [], "bonds": [], "vlans": []}, **args, var_name="bridge_bridges", rollback_timeout=30),
        "ignore_errors": True} for i, (args, _msg) in enumerate(bad)]
    res = play(hv, ("vma",), {}, tasks=tasks, per_host=False)
    for (_args, want), result in zip(bad, res["results"]["vma"], strict=True):
        assert result.get("failed") is True and result.get("changed") is False and want in result["msg"], \
            (want, result.get("msg"))
    # the role refuses too, in its apply step, before anything changes
    res = play(hv, ("vma",), {"bridge_bonds": [dict(bond, interfaces=[a, b, a])]}, per_host=False)
    assert res["rc"] != 0 and res["stats"]["vma"]["changed"] == 0
    assert f"bridge_bonds[0].interfaces[2]: {a} is already an interface of bridge_bonds[0] (bond0)" in \
        res["results"]["vma"][-1]["msg"], res["results"]["vma"][-1]
    assert state(vm) == before  # links, addresses, routes, files, carrier counters, ifindexes
    assert vm.ssh("test -e /var/lib/kvmops-bridge", check=False).returncode != 0


def test_check_mode_shows_every_file_and_touches_nothing(hv):
    vm = hv["vma"]
    before = state(vm)
    res = play(hv, ("vma",), {}, check=True)
    assert res["rc"] == 0, failures(res)
    apply = task(res["results"]["vma"], "Check the bridges")
    assert apply["changed"] is True and apply["armed"] is False
    a, b = nics(vm)
    assert sorted(d["after_header"] for d in apply["diff"]) == [
        "/etc/systemd/network/" + f.format(a=a, b=b) for f in FILES]
    assert "bond0 does not exist" in " ".join(apply["reasons"])
    assert state(vm) == before
    assert vm.ssh("test -e /var/lib/kvmops-bridge", check=False).returncode != 0


def test_a_probe_that_fails_deletes_the_bond_vlan_and_bridge_it_created(hv):
    vm = hv["vma"]
    before = state(vm)
    res = play(hv, ("vma",), {"bridge_probe_targets": [f"{VLAN_NET}.254"]})
    report(f"bridge bond: a dead probe peer, play failed after {res['seconds']:.0f} s")
    assert res["rc"] != 0 and res["stats"]["vma"]["rescued"] == 1, failures(res)
    msg = task(res["results"]["vma"], "Fail, naming")["msg"]
    assert f"{VLAN_NET}.254 does not answer ping" in msg and "bonds and VLANs vlan10, bond0 removed" in msg, msg
    assert "bridges brv10 removed" in msg, msg
    after = state(vm)
    assert config(after) == config(before), {k: (before[k], after[k]) for k in config(after)
                                             if before[k] != after[k]}
    assert ssh_over_link(hv, vm) == "vma"


def _ping(vm, target: str, count: int = 3, interval: float = 1.0) -> tuple[int, int]:
    out = vm.ssh(f"ping -n -c {count} -i {interval} -W 2 {target}", check=False, timeout=120).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def test_a_bond_with_a_vlan_under_a_bridge_reaches_the_peer_and_survives_a_cut_link(hv):
    res = play(hv, HOSTS, {})
    report(f"bridge bond: bond0 + vlan10 + brv10 on two hosts {res['seconds']:.0f} s")
    assert res["rc"] == 0, failures(res)
    for name in HOSTS:
        vm = hv[name]
        a, b = nics(vm)
        fact = task(res["results"][name], "Probe from the host")["ansible_facts"]["kvm_bridge"]
        assert fact["armed"] is False and fact["provider"] == "networkd"
        assert fact["bridges"] == [{"name": "brv10", "ports": ["vlan10"], "addresses": [f"{ADDR[name]}/24"],
                                    "mtu": 1500}]
        assert fact["bonds"] == [{"name": "bond0", "interfaces": sorted([a, b]), "active": a, "mtu": 1500}]
        assert fact["vlans"] == [{"name": "vlan10", "id": 10, "link": "bond0", "mtu": 1500}]
        s = state(vm)
        assert s["links"]["bond0"][:2] == ["bond", None] and s["links"][a][1] == s["links"][b][1] == "bond0"
        assert s["links"]["vlan10"][:2] == ["vlan", "brv10"] and s["links"]["brv10"][:2] == ["bridge", None]
        assert s["addrs"]["brv10"] == [f"{ADDR[name]}/24"] and s["addrs"]["bond0"] == s["addrs"]["vlan10"] == []
        # one MAC from the bond's first NIC up to the bridge
        assert s["links"]["bond0"][4] == s["links"]["vlan10"][4] == s["links"]["brv10"][4]
        assert active(vm) == a
    # the peers reach each other over VLAN 10 across the bond, tagged on the bond's links
    for name in HOSTS:
        assert _ping(hv[name], ADDR[PEER[name]]) == (3, 3)
    vma = hv["vma"]
    assert ssh_over_link(hv, vma) == "vma"

    # check again, real again: nothing to do, no link bounced
    settled = {n: state(hv[n]) for n in HOSTS}
    for check in (True, False):
        res = play(hv, HOSTS, {}, check=check)
        assert res["rc"] == 0 and all(res["stats"][n]["changed"] == 0 for n in HOSTS), [
            (h, r["task"]) for h, rs in res["results"].items() for r in rs if r.get("changed")]
    assert {n: state(hv[n]) for n in HOSTS} == settled  # carrier counters and ifindexes included

    # the primary's link loses its carrier on both hosts while vma pings vmb: the bond fails over, pings go on
    a, b = nics(vma)
    got = {}
    pinger = threading.Thread(target=lambda: got.update(r=_ping(vma, ADDR["vmb"], 30, 0.2)))
    pinger.start()
    time.sleep(2)
    hv.cut("bond1")
    t_cut = time.monotonic()
    pinger.join(timeout=120)
    sent, received = got["r"]
    report(f"bridge bond: bond1 cut {time.monotonic() - t_cut:.1f} s before the pings ended; "
           f"{received} of {sent} pings answered")
    assert sent == 30 and received >= 24, got
    assert active(vma) == b and active(hv["vmb"]) == hv["vmb"].nic("bond2").iface
    assert _ping(vma, ADDR["vmb"]) == (3, 3)
    hv.restore("bond1")
    deadline = time.monotonic() + 30
    while active(vma) != a and time.monotonic() < deadline:
        time.sleep(0.5)
    assert active(vma) == a  # the primary takes the traffic back
    assert _ping(vma, ADDR["vmb"]) == (3, 3)
