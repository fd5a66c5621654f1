"""kvmops.fleet.bridge on systemd-networkd, proven where it can fail: a real kernel, and the controller reaching the
host over the very link the role converts.

The shared fleet vmlab.fleets.HV2: ``vma`` gets the bridge, ``vmb`` is the peer on link ``lan``. ansible-playbook runs
inside the run's network namespace (``fleet.netns_argv``), where the controller holds ``10.213.1.1`` on ``lan`` and
reaches ``vma`` at its ``lan`` address only: a change that breaks eth1 cuts the controller's own SSH connection.
The state the tests compare (links, masters, addresses, routes, the provider's files) is read over the management
forward on eth0, which the role never touches.

In order, on one lease (each test builds on the state the one before left):
check mode on the bare host (diff of every file, nothing touched); the controller SIGKILLed right after the apply:
the host reverts by itself; the conversion (eth1 into br0 keeping its address; the peer still reaches it, a veth
from a namespace inside the VM joins br0 and reaches the peer through it; check again and real again change
nothing and bounce no link; the libvirt network br0 of forward mode bridge made after the confirmation, read back
with virsh, and removed again); a wrong address (the controller's connection is cut; the host reverts in time, the
play fails naming the rollback); a gateway that does not answer (the probe fails, the host reverts at once); bad
inputs, each refused naming the variable with nothing changed.
"""
from __future__ import annotations

import time

import pytest

from vmlab.controller import run_play, ssh_over_link, task, write_inventory
from vmlab.fleets import HV2
from vmlab.netstate import config, kill_when_live, state, wait_reverted
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HOST, PEER = "vma", "vmb"
# timeouts for a TCG guest on a shared 2-core machine: a new SSH connection takes 2-5 s
TIMING = {"bridge_rollback_timeout": 30, "bridge_confirm_timeout": 12, "bridge_settle_timeout": 10}

# the role hands br0 to the VM's own libvirtd (the hypervisor image's, socket-activated: its first connection starts it)
NETWORKS = {"bridge_libvirt_networks": [{"name": "br0", "bridge": "br0"}], "bridge_libvirt_timeout": 120}
NET_XML = "<forward mode='bridge'/>"


def virsh_net(vm) -> dict:
    """The VM's libvirt network br0: {"exists", "active", "autostart", "xml"} read with virsh."""
    info = vm.ssh("virsh -c qemu:///system net-info br0", check=False, timeout=120)
    if info.returncode != 0:
        return {"exists": False}
    fields = dict(line.split(":", 1) for line in info.stdout.splitlines() if ":" in line)
    xml = vm.ssh("virsh -c qemu:///system net-dumpxml br0", timeout=60).stdout
    return {"exists": True, "active": fields["Active"].strip(), "autostart": fields["Autostart"].strip(), "xml": xml}


def bridge(address="10.213.1.11/24", **kw) -> dict:
    return dict({"name": "br0", "ports": ["eth1"], "addresses": [address]}, **kw)


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        write_inventory(fleet)
        yield fleet


def _play(tasks: list | None) -> dict:
    body = {"roles": [{"role": "kvmops.fleet.bridge"}]} if tasks is None else {"tasks": tasks}
    return {"gather_facts": False, **body}


def play(fleet, extra: dict, check: bool = False, tasks: list | None = None) -> dict:
    """ansible-playbook from the controller's namespace -> {"rc", "stats" (of HOST), "results": [task results of
    HOST], "seconds"}."""
    return run_play(fleet, HOST, _play(tasks), dict(TIMING, **extra), check)


def test_check_mode_shows_every_file_and_touches_nothing(hv):
    vm = hv[HOST]
    before = state(vm)
    res = play(hv, {"bridge_bridges": [bridge()], **NETWORKS}, check=True)
    assert res["rc"] == 0 and res["stats"]["failures"] == 0, res
    apply = task(res, "Check the bridges")
    assert apply["changed"] is True and apply["armed"] is False
    paths = sorted(d["after_header"] for d in apply["diff"])
    assert paths == ["/etc/systemd/network/05-kvmops-br0-port-eth1.network",
                     "/etc/systemd/network/05-kvmops-br0.netdev", "/etc/systemd/network/05-kvmops-br0.network"]
    network = next(d["after"] for d in apply["diff"] if d["after_header"].endswith("br0.network"))
    assert "Address=10.213.1.11/24" in network
    # the libvirt network is predicted (with its definition in the diff) and not made
    net = task(res, "Give libvirt")
    assert net["changed"] is True and net["changes"] == [
        "defined network br0", "started network br0", "autostart of network br0 on"], net
    assert NET_XML in net["diff"][0]["after"] and "<bridge name='br0'/>" in net["diff"][0]["after"], net["diff"]
    assert virsh_net(vm) == {"exists": False}
    assert state(vm) == before  # links, addresses, routes, files, carrier counters, ifindexes
    assert vm.ssh("test -e /var/lib/kvmops-bridge", check=False).returncode != 0


def test_a_killed_controller_leaves_the_host_to_revert_by_itself(hv):
    """SIGKILL to ansible-playbook once the change is live and before the confirmation: the host's timer puts
    everything back (the new bridge deleted, eth1's address back), and the controller reaches it over eth1 again."""
    vm = hv[HOST]
    before = state(vm)
    timing = {"bridge_rollback_timeout": 20, "bridge_confirm_timeout": 8, "bridge_settle_timeout": 8}
    killed = kill_when_live(hv, vm, dict(_play(None), hosts=HOST), dict(timing, bridge_bridges=[bridge()]),
                            "10.213.1.11/24")
    wait_reverted(vm, 40)
    report(f"bridge: the host reverted {time.monotonic() - killed:.0f} s after the controller was killed")
    assert vm.ssh("cat /var/lib/kvmops-bridge/pending/reverted").stdout.strip() == \
        "the controller did not confirm the change within 20 s"
    assert config(state(vm)) == config(before)
    assert ssh_over_link(hv, vm) == HOST


def test_eth1_becomes_br0_keeping_its_address(hv):
    vm, peer = hv[HOST], hv[PEER]
    res = play(hv, {"bridge_bridges": [bridge()], "bridge_probe_targets": [peer.addr("lan"), "10.213.1.1"],
                    **NETWORKS})
    report(f"bridge: conversion of eth1 into br0 with its libvirt network {res['seconds']:.0f} s")
    assert res["rc"] == 0 and res["stats"]["failures"] == 0, [
        (r["task"], r.get("msg")) for r in res["results"] if r.get("failed") or r.get("msg")]
    assert task(res, "Check the bridges")["changed"] is True
    fact = task(res, "Probe from the host")["ansible_facts"]["kvm_bridge"]
    assert fact["armed"] is False and fact["provider"] == "networkd" and fact["step"] == "confirm"
    assert fact["bridges"] == [{"name": "br0", "ports": ["eth1"], "addresses": ["10.213.1.11/24"], "mtu": 1500}]
    after = state(vm)
    assert after["links"]["br0"][:2] == ["bridge", None] and after["links"]["eth1"][1] == "br0"
    assert after["addrs"]["br0"] == ["10.213.1.11/24"] and after["addrs"]["eth1"] == []
    assert after["links"]["br0"][4] == after["links"]["eth1"][4]  # the bridge keeps the uplink's MAC
    assert vm.ssh("systemctl is-active kvmops-bridge-revert.timer", check=False).stdout.strip() != "active"
    # the libvirt network came after the confirmation, and libvirt holds it as declared
    names = [r["task"].split(" : ", 1)[-1] for r in res["results"]]
    assert names.index("Give libvirt the confirmed bridges as networks of forward mode bridge") > \
        names.index("Probe from the host and disarm the revert")
    net = task(res, "Give libvirt")
    assert net["changed"] is True and net["networks"][0]["active"] is True, net
    got = virsh_net(vm)
    assert got["active"] == "yes" and got["autostart"] == "yes", got
    assert NET_XML in got["xml"] and "<bridge name='br0'/>" in got["xml"] and "<ip" not in got["xml"], got["xml"]
    # the peer still reaches it, and so does the controller over the link
    assert peer.ssh(f"ping -c2 -W3 {vm.addr('lan')}", check=False).returncode == 0
    assert ssh_over_link(hv, vm) == HOST
    # a veth from a namespace inside the VM joins br0 and reaches the peer through it (as a VM's tap would)
    vm.ssh("ip netns add guest && ip link add vguest type veth peer name vguest-in && "
           "ip link set vguest-in netns guest && ip link set vguest master br0 up && "
           "ip -n guest addr add 10.213.1.77/24 dev vguest-in && ip -n guest link set vguest-in up")
    out = vm.ssh(f"ip netns exec guest ping -c3 -W3 {peer.addr('lan')}", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert peer.ssh("ip neigh show 10.213.1.77", check=False).stdout.strip() != ""
    vm.ssh("ip link del vguest && ip netns del guest")

    # check again, real again: nothing to do, no link bounced
    settled = state(vm)
    for check in (True, False):
        res = play(hv, {"bridge_bridges": [bridge()], "bridge_probe_targets": [peer.addr("lan")], **NETWORKS},
                   check=check)
        assert res["rc"] == 0 and res["stats"]["changed"] == 0, [r for r in res["results"] if r.get("changed")]
        assert task(res, "Check the bridges")["armed"] is False
        assert task(res, "Give libvirt")["changes"] == []
    assert state(vm) == settled  # carrier counters and ifindexes included
    assert virsh_net(vm) == got

    # state absent removes the network and leaves the bridge alone
    res = play(hv, {"bridge_bridges": [bridge()], "bridge_libvirt_networks": [{"name": "br0", "state": "absent"}]})
    assert res["rc"] == 0 and task(res, "Give libvirt")["changes"] == [
        "stopped network br0", "undefined network br0"], task(res, "Give libvirt")
    assert virsh_net(vm) == {"exists": False}
    assert state(vm) == settled


def test_a_wrong_address_cuts_the_controller_and_the_host_reverts_in_time(hv):
    vm = hv[HOST]
    before = state(vm)
    res = play(hv, {"bridge_bridges": [bridge("10.213.1.99/24")]})
    report(f"bridge: wrong address, play failed after {res['seconds']:.0f} s")
    assert res["rc"] != 0 and res["stats"]["failures"] == 1 and res["stats"]["rescued"] == 1
    assert task(res, "Reach the host over a new connection").get("failed") is True
    msg = task(res, "Fail, naming")["msg"]
    assert "rolled back" in msg and "05-kvmops-br0.network" in msg and "did not confirm the change within 30 s" in msg
    assert res["seconds"] < TIMING["bridge_rollback_timeout"] + 60
    assert config(state(vm)) == config(before)
    assert ssh_over_link(hv, vm) == HOST


def test_a_gateway_that_does_not_answer_rolls_back_at_once(hv):
    vm = hv[HOST]
    before = state(vm)
    res = play(hv, {"bridge_bridges": [bridge(gateway4="10.213.1.254")]})
    assert res["rc"] != 0 and res["stats"]["rescued"] == 1
    msg = task(res, "Fail, naming")["msg"]
    assert "10.213.1.254 does not answer ping" in msg and "05-kvmops-br0.network" in msg, msg
    assert config(state(vm)) == config(before)
    assert ssh_over_link(hv, vm) == HOST


BAD = [
    ({"name": "br0", "ports": ["eth1", "eth9"], "addresses": ["10.213.1.11/24"]},
     "bridge_bridges[0].ports[1]: eth9 does not exist on this host"),
    ([{"name": "br0", "ports": ["eth1"], "addresses": ["10.213.1.11/24"]}, {"name": "br1", "ports": ["eth1"]}],
     "bridge_bridges[1].ports[0]: eth1 is already a port of bridge_bridges[0] (br0)"),
    ([{"name": "br0", "ports": ["eth1"], "addresses": ["10.213.1.11/24"]},
      {"name": "br1", "ports": ["eth3"], "addresses": ["10.213.1.50/25"]}],
     "bridge_bridges[1].addresses[0]: 10.213.1.50/25 overlaps 10.213.1.11/24"),
    ({"name": "br1", "ports": ["eth3"], "addresses": ["10.213.2.99/24"]},
     "bridge_bridges[0].addresses[0]: 10.213.2.99/24 overlaps 10.213.2.11/24 on eth2"),
    (bridge(mtu=70000), "bridge_bridges[0].mtu: must be from 68 to 65535, got 70000"),
    ({"name": "br-much-too-long0", "ports": ["eth3"]}, "bridge_bridges[0].name: is 17 characters long, at most 15"),
    ({"name": "br1", "ports": ["eth2"]},
     "bridge_bridges[0].ports[0]: eth2 holds 10.213.2.11/24, which br1 would not keep"),
    (bridge(forward_delay=40), "bridge_bridges[0].forward_delay: must be from 2 to 30, got 40"),
    (bridge(gateway4="192.0.2.1"), "bridge_bridges[0].gateway4: 192.0.2.1 is in none of the bridge's IPv4 subnets"),
]


def test_bad_input_is_refused_naming_the_variable_and_nothing_changes(hv):
    vm = hv[HOST]
    before = state(vm)
    tasks = [{"name": f"bad {i}", "kvmops.fleet.kvm_bridge_apply": {
        "bridges": bridges if isinstance(bridges, list) else [bridges], "var_name": "bridge_bridges",
        "rollback_timeout": 30}, "ignore_errors": True} for i, (bridges, _msg) in enumerate(BAD)]
    res = play(hv, {}, tasks=tasks)
    for (_bridges, want), result in zip(BAD, res["results"], strict=True):
        assert result.get("failed") is True and want in result["msg"], (want, result.get("msg"))
    # the role refuses too, before its apply step (argument spec) and in it (semantic check)
    res = play(hv, {"bridge_bridges": [{"name": "br0", "ports": ["eth1"], "stp": "sometimes"}]})
    assert res["rc"] != 0 and "bridge_bridges" in res["results"][-1]["msg"] and res["stats"]["changed"] == 0
    res = play(hv, {"bridge_bridges": [dict(bridge(), ports=["eth1", "eth9"])]})
    assert res["rc"] != 0 and "bridge_bridges[0].ports[1]: eth9 does not exist" in res["results"][-1]["msg"]
    # a libvirt network on a bridge the role does not declare: refused before the bridges are touched
    networks = [{"name": "br0", "bridge": "br0"}, {"name": "vms", "bridge": "br7"}]
    res = play(hv, {"bridge_bridges": [bridge()], "bridge_libvirt_networks": networks})
    assert res["rc"] != 0 and res["stats"]["changed"] == 0
    want = 'vma: bridge_libvirt_networks[1].bridge: "br7" is not one of bridge_bridges (br0)'
    assert res["results"][-1]["msg"] == want
    assert [r["task"].split(" : ", 1)[-1] for r in res["results"]][-1] == \
        "Check that every libvirt network names a declared bridge"
    assert state(vm) == before and virsh_net(vm) == {"exists": False}
