"""kvmops.fleet.bridge rolled out with ``serial: 1`` over three hosts (issue 18: "three hosts with serial: 1 where the
second gets a wrong config: host 1 converted, host 2 back as it was, host 3 untouched"), through the collection's own
playbook ``kvmops.fleet.bridge`` (serial 1, max_fail_percentage 0, any_errors_fatal), on real kernels with the
controller in the run's namespace reaching each host over the link being converted.

The three hosts are the shared fleet vmlab.fleets.PROVIDERS, one per network provider, in inventory order:
``nmhost`` (NetworkManager) gets a good config and is converted (eth1 into br0 keeping its address); ``ifuphost``
(ifupdown) gets a gateway that does not answer, rolls back at once and the play fails naming it; ``ndhost``
(systemd-networkd) is never touched: no task ran on it, and its links, addresses, routes, files, carrier counters and
interface indexes are exactly as before. The first host stays converted after the second one's failure.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from vmlab.controller import playbook_argv, ssh_over_link, write_inventory
from vmlab.fleets import PROVIDERS
from vmlab.netstate import config, differences, state
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# host -> its network provider, in inventory (and rollout) order
HOSTS = {"nmhost": "nm", "ifuphost": "ifupdown", "ndhost": "networkd"}
TIMING = {"bridge_rollback_timeout": 30, "bridge_confirm_timeout": 12, "bridge_settle_timeout": 10}
DEAD_GATEWAY = "10.213.1.254"


def bridge(vm, **kw) -> list:
    return [dict({"name": "br0", "ports": ["eth1"], "addresses": [f"{vm.addr('lan')}/24"]}, **kw)]


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    with vmlab_pool.lease(PROVIDERS, who=request.module.__name__) as fleet:
        write_inventory(fleet)
        yield fleet


def rollout(fleet, decls: dict) -> dict:
    """ansible-playbook kvmops.fleet.bridge on the three hosts, each host with its own bridge_bridges -> {"rc", "stats",
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


def test_host_1_converted_host_2_back_as_it_was_host_3_untouched(hv):
    first, second, third = (hv[h] for h in HOSTS)
    before = {h: state(hv[h], p) for h, p in HOSTS.items()}
    res = rollout(hv, {first.name: bridge(first), second.name: bridge(second, gateway4=DEAD_GATEWAY),
                       third.name: bridge(third)})
    report(f"bridge serial: host 1 converted, host 2 rolled back, host 3 untouched, {res['seconds']:.0f} s")
    assert res["rc"] != 0
    assert res["order"] == [first.name, second.name], res["order"]
    # host 1: converted, confirmed, and it stays so after host 2's failure
    st = res["stats"][first.name]
    assert st["failures"] == 0 and st["changed"] > 0, st
    assert task(res["results"][first.name], "Probe from the host")["ansible_facts"]["kvm_bridge"]["armed"] is False
    after = state(first, "nm")
    assert after["links"]["br0"][:2] == ["bridge", None] and after["links"]["eth1"][1] == "br0"
    assert after["addrs"]["br0"] == [f"{first.addr('lan')}/24"] and after["addrs"]["eth1"] == []
    assert first.ssh("systemctl is-active kvmops-bridge-revert.timer", check=False).stdout.strip() != "active"
    assert ssh_over_link(hv, first) == first.name
    # host 2: the probe failed, the host put everything back at once, the play names it
    st = res["stats"][second.name]
    assert st["failures"] == 1 and st["rescued"] == 1, st
    msg = task(res["results"][second.name], "Fail, naming")["msg"]
    assert msg.startswith(f"{second.name} rolled back") and f"{DEAD_GATEWAY} does not answer ping" in msg, msg
    now = config(state(second, "ifupdown"))
    assert now == config(before[second.name]), differences(now, config(before[second.name]))
    assert ssh_over_link(hv, second) == second.name
    # host 3: no task, not even the validation, ran on it; nothing moved, not a carrier counter
    assert res["results"][third.name] == []
    assert not any(res["stats"].get(third.name, {}).values()), res["stats"].get(third.name)
    now = state(third, "networkd")
    assert now == before[third.name], differences(now, before[third.name])
    assert ssh_over_link(hv, third) == third.name
    assert config(state(first, "nm")) == config(after)  # host 2's rollback did not touch host 1
