"""kvmops.fleet.bridge on NetworkManager and on ifupdown, proven where it can fail: a real kernel, and the controller
reaching the host over the very link the role converts.

The shared fleet vmlab.fleets.PROVIDERS: ``nmhost`` runs NetworkManager (its link ``lan`` is the keyfile profile
``vmlab-lan``), ``ifuphost`` runs ifupdown (``lan`` is ``iface eth1 inet static`` in /etc/network/interfaces); each
is the other's peer on ``lan``. ansible-playbook runs inside the run's network namespace (``fleet.netns_argv``),
where the controller holds ``10.213.1.1`` on ``lan`` and reaches the VMs at their ``lan`` addresses only: a change
that breaks eth1 cuts the controller's own SSH connection. The state the tests compare (links, masters, addresses,
routes, the provider's files and their modes, what the provider says is active) is read over the management forward
on eth0, which the role never touches.

Per provider, in order: a probe peer that does not answer (the confirmation fails on the host, which reverts at once:
the play fails naming the rollback, the host runs exactly its previous configuration and the controller reaches it
over the link again); then check mode (the diff of every file, nothing touched), the conversion of eth1 into br0
keeping its address (the peer and the controller reach it over the bridge, a veth from a namespace inside the VM
joins br0 and reaches the peer through it), check again and real again changing nothing and bouncing no link.
"""
from __future__ import annotations

import json
import time

import pytest

from vmlab.controller import run_play, ssh_over_link, task, write_inventory
from vmlab.fleets import PROVIDERS
from vmlab.netstate import PENDING, config, differences, kill_when_live, state, wait_reverted
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# provider -> (the VM it runs, its peer); the files each provider reads: vmlab.netstate.PROVIDER_FILES
CASES = {"nm": ("nmhost", "ifuphost"), "ifupdown": ("ifuphost", "nmhost")}
# what each provider's conversion writes (the diff of check mode, exactly)
FILES = {
    "nm": ["/etc/NetworkManager/system-connections/kvmops-br0-port-eth1.nmconnection",
           "/etc/NetworkManager/system-connections/kvmops-br0.nmconnection"],
    "ifupdown": ["/etc/network/interfaces", "/etc/network/interfaces.d/kvmops-br0"],
}
# timeouts for a TCG guest on a shared 2-core machine: a new SSH connection takes 2-5 s
TIMING = {"bridge_rollback_timeout": 30, "bridge_confirm_timeout": 12, "bridge_settle_timeout": 10}


def bridge(address: str, **kw) -> dict:
    return dict({"name": "br0", "ports": ["eth1"], "addresses": [address]}, **kw)


@pytest.fixture(scope="module")
def fleet(vmlab_pool, request):
    with vmlab_pool.lease(PROVIDERS, who=request.module.__name__) as leased:
        write_inventory(leased)
        yield leased


def play(fleet, host: str, extra: dict, check: bool = False) -> dict:
    """The role on ``host``, ansible-playbook in the controller's namespace -> {"rc", "stats" (of the host),
    "results" (its task results), "seconds"}."""
    return run_play(fleet, host, {"gather_facts": False, "roles": [{"role": "kvmops.fleet.bridge"}]},
                    dict(TIMING, **extra), check)


@pytest.mark.parametrize("provider", list(CASES))
def test_a_probe_that_fails_reverts_the_host_to_its_previous_configuration(fleet, provider):
    name, _peer = CASES[provider]
    vm = fleet[name]
    before = state(vm, provider)
    res = play(fleet, name, {"bridge_bridges": [bridge(f"{vm.addr('lan')}/24")],
                             "bridge_probe_targets": ["10.213.1.254"]})
    report(f"bridge {provider}: a dead probe peer, play failed after {res['seconds']:.0f} s")
    assert res["rc"] != 0 and res["stats"]["failures"] == 1 and res["stats"]["rescued"] == 1, res["results"][-1]
    assert task(res, "Check the bridges")["provider"] == provider
    msg = task(res, "Fail, naming")["msg"]
    assert f"{name} rolled back" in msg and "10.213.1.254 does not answer ping" in msg, msg
    for path in FILES[provider]:
        assert path in msg, msg
    after = state(vm, provider)
    assert config(after) == config(before), differences(config(after), config(before))
    assert ssh_over_link(fleet, vm) == name
    reason = vm.ssh("cat /var/lib/kvmops-bridge/pending/reverted").stdout
    assert reason.startswith("probes failed from the host: 10.213.1.254"), reason


@pytest.mark.parametrize("provider", list(CASES))
def test_a_killed_controller_leaves_the_host_to_revert_by_itself(fleet, provider):
    """SIGKILL to ansible-playbook once the change is live and before the confirmation: the host's timer puts the
    provider's previous configuration back, and the controller reaches the host over eth1 again."""
    name, _peer = CASES[provider]
    vm = fleet[name]
    before = state(vm, provider)
    timing = {"bridge_rollback_timeout": 20, "bridge_confirm_timeout": 8, "bridge_settle_timeout": 8}
    address = f"{vm.addr('lan')}/24"
    play_ = {"hosts": name, "gather_facts": False, "roles": [{"role": "kvmops.fleet.bridge"}]}
    killed = kill_when_live(fleet, vm, play_, dict(timing, bridge_bridges=[bridge(address)]), address)
    wait_reverted(vm, 40)
    report(f"bridge {provider}: the host reverted {time.monotonic() - killed:.0f} s after the controller was killed")
    assert vm.ssh(f"cat {PENDING}/reverted").stdout.strip() == "the controller did not confirm the change within 20 s"
    after = state(vm, provider)
    assert config(after) == config(before), differences(config(after), config(before))
    assert ssh_over_link(fleet, vm) == name


@pytest.mark.parametrize("provider", list(CASES))
def test_eth1_becomes_br0_keeping_its_address_then_nothing_to_do(fleet, provider):
    name, peer_name = CASES[provider]
    vm, peer = fleet[name], fleet[peer_name]
    want = {"bridge_bridges": [bridge(f"{vm.addr('lan')}/24")], "bridge_probe_targets": [peer.addr("lan")]}
    before = state(vm, provider)
    pending = vm.ssh("cat /var/lib/kvmops-bridge/pending/manifest.json 2>/dev/null || true").stdout

    res = play(fleet, name, want, check=True)
    assert res["rc"] == 0 and res["stats"]["failures"] == 0, res["results"][-1]
    apply = task(res, "Check the bridges")
    assert apply["changed"] is True and apply["armed"] is False and apply["provider"] == provider
    assert sorted(d["after_header"] for d in apply["diff"]) == FILES[provider]
    now = state(vm, provider)
    assert now == before, differences(now, before)  # links, addresses, routes, files, carrier counters, ifindexes
    # nothing armed: the state directory holds what the test before left there
    assert vm.ssh("cat /var/lib/kvmops-bridge/pending/manifest.json 2>/dev/null || true").stdout == pending
    assert vm.ssh("systemctl is-active kvmops-bridge-revert.timer", check=False).stdout.strip() != "active"

    res = play(fleet, name, want)
    report(f"bridge {provider}: conversion of eth1 into br0 {res['seconds']:.0f} s")
    assert res["rc"] == 0 and res["stats"]["failures"] == 0, res["results"][-1]
    fact = task(res, "Probe from the host")["ansible_facts"]["kvm_bridge"]
    assert fact["armed"] is False and fact["provider"] == provider and fact["step"] == "confirm"
    # ifupdown cannot turn the kernel's IPv6 link-local address of a bridge off (networkd and NM do, without IPv6)
    (br,) = fact["bridges"]
    assert [a for a in br["addresses"] if not a.startswith("fe80:")] == [f"{vm.addr('lan')}/24"], br
    assert len(br["addresses"]) == (2 if provider == "ifupdown" else 1), br
    assert (br["name"], br["ports"], br["mtu"]) == ("br0", ["eth1"], 1500)
    after = state(vm, provider)
    assert after["links"]["br0"][:2] == ["bridge", None] and after["links"]["eth1"][1] == "br0"
    assert f"{vm.addr('lan')}/24" in after["addrs"]["br0"] and after["addrs"]["eth1"] == []  # addrgenmode none
    assert after["links"]["br0"][4] == after["links"]["eth1"][4]  # the bridge keeps the uplink's MAC
    lan_routes = [json.loads(r) for r in after["routes"] if json.loads(r).get("dst") == "10.213.1.0/24"]
    assert [r["dev"] for r in lan_routes] == ["br0"], after["routes"]
    if provider == "nm":
        assert "kvmops-br0:br0:bridge" in after["active"] and "kvmops-br0-port-eth1:eth1:802-3-ethernet" in \
            after["active"], after["active"]
        assert all(after["files"][p][1] == "0o600" for p in FILES["nm"])
    else:
        assert "br0=br0" in after["active"], after["active"]
    assert vm.ssh("systemctl is-active kvmops-bridge-revert.timer", check=False).stdout.strip() != "active"
    # the peer still reaches it, and so does the controller over the link
    assert peer.ssh(f"ping -c2 -W3 {vm.addr('lan')}", check=False).returncode == 0
    assert ssh_over_link(fleet, vm) == name
    # a veth from a namespace inside the VM joins br0 and reaches the peer through it (as a VM's tap would)
    vm.ssh("ip netns add guest && ip link add vguest type veth peer name vguest-in && "
           "ip link set vguest-in netns guest && ip link set vguest master br0 up && "
           "ip -n guest addr add 10.213.1.77/24 dev vguest-in && ip -n guest link set vguest-in up")
    out = vm.ssh(f"ip netns exec guest ping -c3 -W3 {peer.addr('lan')}", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    vm.ssh("ip link del vguest && ip netns del guest")

    # check again, real again: nothing to do, no link bounced
    settled = state(vm, provider)
    for check in (True, False):
        res = play(fleet, name, want, check=check)
        assert res["rc"] == 0 and res["stats"]["changed"] == 0, [r for r in res["results"] if r.get("changed")]
        assert task(res, "Check the bridges")["armed"] is False
    now = state(vm, provider)
    assert now == settled, differences(now, settled)  # carrier counters and ifindexes included
