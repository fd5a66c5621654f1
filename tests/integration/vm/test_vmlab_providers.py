"""The hypervisor image's other network providers, chosen per VM at boot (vmlab.fleets.PROVIDERS): NetworkManager
and ifupdown run the links instead of systemd-networkd (which runs the third VM's), the VMs reach each other, and a
controller in the run's namespace reaches each of them over the link."""
from __future__ import annotations

import subprocess

import pytest

from vmlab.fleets import PROVIDERS

pytestmark = [pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def providers(vmlab_pool, request):
    with vmlab_pool.lease(PROVIDERS, who=request.module.__name__) as fleet:
        yield fleet


def test_networkmanager_runs_the_links_of_its_vm(providers):
    vm = providers["nmhost"]
    out = vm.ssh("systemctl is-active NetworkManager systemd-networkd || true; "
                 "nmcli -t -f NAME,DEVICE connection show --active | sort; cat /var/lib/vmlab/links-configured")
    lines = out.stdout.split()
    assert lines[:2] == ["active", "inactive"], lines
    assert {"vmlab-lan:eth1", "vmlab-mgmt:eth0"} <= set(lines), lines
    assert lines[-1] == "nm"


def test_ifupdown_runs_the_links_of_its_vm(providers):
    vm = providers["ifuphost"]
    out = vm.ssh("systemctl is-active networking systemd-networkd NetworkManager || true; ifquery --state; "
                 "cat /var/lib/vmlab/links-configured")
    lines = out.stdout.split()
    assert lines[:3] == ["active", "inactive", "inactive"], lines
    assert {"eth0=eth0", "eth1=eth1"} <= set(lines), lines
    assert lines[-1] == "ifupdown"


def test_networkd_runs_the_links_of_the_third_vm(providers):
    vm = providers["ndhost"]
    out = vm.ssh("systemctl is-active systemd-networkd NetworkManager networking || true; "
                 "cat /var/lib/vmlab/links-configured")
    lines = out.stdout.split()
    assert lines[:3] == ["active", "inactive", "inactive"], lines
    assert lines[-1] == "networkd"


def test_the_providers_vms_reach_each_other_and_the_controller_reaches_all(providers):
    nm, ifup, nd = providers["nmhost"], providers["ifuphost"], providers["ndhost"]
    assert nm.ssh(f"ping -c1 -W5 {ifup.addr('lan')}", check=False).returncode == 0
    assert nd.ssh(f"ping -c1 -W5 {nm.addr('lan')}", check=False).returncode == 0
    for vm in (nm, ifup, nd):
        argv = providers.netns_argv(["ssh", "-i", str(providers.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                     "-o", "LogLevel=ERROR", f"root@{vm.addr('lan')}", "hostname"])
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert p.stdout.strip() == vm.name, p.stdout + p.stderr
