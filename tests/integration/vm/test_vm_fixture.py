"""The shared fleet proves itself: two real-kernel VMs (vmlab.fleets.HV2) boot, are reachable over SSH on
127.0.0.1 only, reach each other over private links that can be cut from outside, are reached by a controller
in the run's namespace over a link itself, have two NUMA nodes, their own disks and one disk they share, the
kernel features containers lack (VLAN, bonding, DRBD, device-mapper thin) and the tools the roles need, keep
their sysctls to themselves and keep their disks across a reboot. Tests run in file order on the pool's fleet."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmlab.fleet import proc_starttime
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def ping(vm, addr: str, count: int = 1, wait: int = 2) -> bool:
    return vm.ssh(f"ping -c {count} -W {wait} {addr}", check=False, timeout=60).returncode == 0


def ping_eventually(vm, addr: str, seconds: float = 20) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if ping(vm, addr):
            return True
        time.sleep(1)
    return False


def test_two_vms_boot_with_their_own_kernel(vm_pair):
    kver = vm_pair.image.manifest["kernel_version"]
    for vm in vm_pair:
        out = vm.ssh("uname -r; hostname; ip -4 route show default; systemctl is-system-running || true")
        out = out.stdout.split("\n")
        assert out[0] == kver
        assert out[1] == vm.name
        assert "default" not in out[2]  # no route off the private links
        assert vm.boot_seconds is not None and vm.boot_seconds < vm_pair.spec.boot_timeout
        report(f"{vm.name}: kernel {out[0]}, boot-to-SSH {vm.boot_seconds} s, RSS {vm.rss_mib()} MiB, "
               f"system state {out[-1] or out[-2]}")


def test_ansible_reaches_both_through_the_inventory(vm_pair):
    ansible = Path(sys.executable).with_name("ansible")
    if not ansible.exists():
        pytest.skip(f"no ansible next to {sys.executable}")
    p = subprocess.run([str(ansible), "-i", str(vm_pair.inventory_path), "all", "-m", "ansible.builtin.ping",
                        "-o"], capture_output=True, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    for vm in vm_pair:
        assert f"{vm.name} | SUCCESS" in p.stdout
    p = subprocess.run([str(ansible), "-i", str(vm_pair.inventory_path), "vma", "-m", "ansible.builtin.debug",
                        "-a", "var=vmlab_links.repl.iface"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert '"eth2"' in p.stdout, p.stdout + p.stderr


def test_vms_reach_each_other_on_both_private_links(vm_pair):
    a, b = vm_pair["vma"], vm_pair["vmb"]
    assert ping_eventually(a, b.addr("lan"))
    assert ping_eventually(a, b.addr("repl"))
    assert ping_eventually(b, a.addr("repl"))
    # SSH between the VMs over the private link (the per-run key is in both)
    assert a.ssh(f"ssh root@{b.name}-lan hostname").stdout.strip() == "vmb"
    assert a.ssh("ip -br link show eth2").stdout.split()[1] == "UP"


@pytest.mark.parametrize("how", ["carrier", "drop"])
def test_cut_and_restore_a_link_from_outside(vm_pair, how):
    a, b = vm_pair["vma"], vm_pair["vmb"]
    assert ping_eventually(a, b.addr("lan"))
    vm_pair.cut("lan", how=how)
    try:
        assert not ping(a, b.addr("lan"), count=2)
        assert ping(a, b.addr("repl"))  # the other link is untouched
        carrier = a.ssh("cat /sys/class/net/eth1/carrier", check=False).stdout.strip()
        assert carrier == ("0" if how == "carrier" else "1")
    finally:
        vm_pair.restore("lan", how=how)
    assert ping_eventually(a, b.addr("lan"))


def test_bond_and_vlan_inside_the_vms(vm_pair):
    a, b = vm_pair["vma"], vm_pair["vmb"]
    setup = (
        "set -e; ip link add bond0 type bond mode active-backup miimon 100; "
        "for i in eth3 eth4; do ip link set $i down; ip link set $i master bond0; done; "
        "ip link set bond0 up; ip link add link bond0 name bond0.100 type vlan id 100; "
        "ip addr add 10.214.100.{n}/24 dev bond0.100; ip link set bond0.100 up; "
        "ip link add link eth1 name eth1.200 type vlan id 200; "
        "ip addr add 10.214.200.{n}/24 dev eth1.200; ip link set eth1.200 up"
    )
    a.ssh(setup.format(n=11))
    b.ssh(setup.format(n=12))
    try:
        assert "8021q" in a.ssh("lsmod").stdout and "bonding" in a.ssh("lsmod").stdout
        assert ping_eventually(a, "10.214.200.12")  # VLAN 200 on eth1
        assert ping_eventually(a, "10.214.100.12")  # VLAN 100 on the bond (active: eth3)
        assert a.ssh("cat /sys/class/net/bond0/bonding/active_slave").stdout.strip() == "eth3"
        vm_pair.cut("bond1")  # pull eth3's cable on both: the bond fails over to eth4
        try:
            assert ping_eventually(a, "10.214.100.12")
            assert a.ssh("cat /sys/class/net/bond0/bonding/active_slave").stdout.strip() == "eth4"
        finally:
            vm_pair.restore("bond1")
    finally:
        for vm in (a, b):
            vm.ssh("ip link del eth1.200; ip link del bond0.100; ip link del bond0", check=False)


def test_drbd_and_thin_lvm_modules_load(vm_pair):
    a = vm_pair["vma"]
    out = a.ssh("modprobe drbd && cat /proc/drbd").stdout
    assert out.startswith("version: 8.4"), out
    a.ssh("modprobe dm-thin-pool && dmsetup targets | grep -q thin-pool")
    disk = a.disks[0]
    out = a.ssh(f"lsblk -bndo SIZE {disk.dev}; readlink -f {disk.by_id}").stdout.split()
    assert int(out[0]) == 256 << 20 and out[1] == disk.dev
    # thin LVM on the extra disk, cleaned up again
    a.ssh(f"set -e; pvcreate -q {disk.dev}; vgcreate -q vmlabvg {disk.dev}; "
          "lvcreate -q -L 64M -T vmlabvg/pool; lvcreate -q -V 128M -T vmlabvg/pool -n thin1 2>/dev/null; "
          f"test -b /dev/vmlabvg/thin1; vgremove -q -f vmlabvg; pvremove -q {disk.dev}")


def test_drbd_connects_over_the_replication_link(vm_pair):
    """DRBD 8.4 (Debian's kernel) between the VMs on eth2 ("repl"), on their extra disks:
    the peers connect and the forced primary starts syncing. Full sync is a later capability's test."""
    a, b = vm_pair["vma"], vm_pair["vmb"]
    res = "resource r0 {\n  net { protocol C; }\n" + "".join(
        f"  on {vm.name} {{ device /dev/drbd0; disk {vm.disks[0].dev}; address {vm.addr('repl')}:7789; "
        "meta-disk internal; }\n" for vm in (a, b)) + "}\n"
    try:
        for vm in (a, b):
            vm.ssh("cat > /etc/drbd.d/r0.res", input=res)
            vm.ssh("yes yes | drbdadm create-md --force r0 >/dev/null 2>&1; drbdadm up r0")
        t0 = time.monotonic()
        while "cs:Connected" not in a.ssh("cat /proc/drbd").stdout:
            assert time.monotonic() - t0 < 60, a.ssh("cat /proc/drbd").stdout
            time.sleep(1)
        a.ssh("drbdadm primary --force r0")
        out = a.ssh("sleep 1; cat /proc/drbd").stdout
        assert "ro:Primary/Secondary" in out and ("SyncSource" in out or "UpToDate/UpToDate" in out), out
        report(f"drbd: connected after {time.monotonic() - t0:.1f} s")
    finally:
        for vm in (a, b):
            vm.ssh("drbdadm down r0; rm -f /etc/drbd.d/r0.res", check=False)


def test_sysctl_inside_a_vm_does_not_touch_this_machine(vm_pair):
    a = vm_pair["vma"]
    host = Path("/proc/sys/vm/swappiness")
    host_fwd = Path("/proc/sys/net/ipv4/ip_forward")
    before, before_fwd = host.read_text().strip(), host_fwd.read_text().strip()
    new = "13" if before != "13" else "17"
    new_fwd = "0" if before_fwd == "1" else "1"
    a.ssh(f"sysctl -qw vm.swappiness={new} net.ipv4.ip_forward={new_fwd}")
    assert a.ssh("sysctl -n vm.swappiness net.ipv4.ip_forward").stdout.split() == [new, new_fwd]
    assert host.read_text().strip() == before
    assert host_fwd.read_text().strip() == before_fwd


def test_reboot_keeps_the_disks(vm_pair):
    a, b = vm_pair["vma"], vm_pair["vmb"]
    disk = a.disks[0].dev
    a.ssh(f"echo kept-$(cat /proc/sys/kernel/random/boot_id) > /root/marker; "
          f"echo disk-marker | dd of={disk} bs=512 count=1 conv=fsync status=none; sync")
    marker = a.ssh("cat /root/marker").stdout.strip()
    pid = a.pid
    seconds = a.reboot()
    report(f"vma: reboot to SSH in {seconds:.1f} s")
    assert a.pid == pid and proc_starttime(pid) == a.starttime  # same QEMU, new boot
    assert a.ssh("cat /root/marker").stdout.strip() == marker
    assert a.ssh(f"head -c 11 {disk}").stdout == "disk-marker"
    assert marker != "kept-" + a.boot_id()
    assert ping_eventually(a, b.addr("lan"))  # per-VM config came back with the boot


def test_two_numa_nodes_and_a_shared_disk(vm_pair):
    a, b = vm_pair["vma"], vm_pair["vmb"]
    nodes = a.ssh("cat /sys/devices/system/node/online; for n in 0 1; do "
                  "cat /sys/devices/system/node/node$n/cpulist; "
                  "sed -n 's/.*MemTotal: *\\([0-9]*\\) kB/\\1/p' /sys/devices/system/node/node$n/meminfo; done")
    online, cpus0, mem0, cpus1, mem1 = nodes.stdout.split()
    assert (online, cpus0, cpus1) == ("0-1", "0", "1"), nodes.stdout
    assert abs(int(mem0) - int(mem1)) < 64 * 1024, nodes.stdout  # 640 MiB each, minus the kernel's own
    shared = a.shared_disks[0]
    assert shared.by_id == "/dev/disk/by-id/virtio-vmlab-shared-sbd" and shared.dev == "/dev/vdd"
    a.ssh(f"echo written-by-vma | dd of={shared.by_id} bs=512 count=1 oflag=direct status=none")
    assert b.ssh(f"dd if={shared.by_id} bs=512 count=1 iflag=direct status=none | head -c 14").stdout == \
        "written-by-vma"


def test_the_roles_tools_are_installed(vm_pair):
    tools = ("virsh", "corosync", "pcs", "sbd", "corosync-qnetd", "fence_virsh", "fio", "stress-ng", "nmcli", "ifup")
    out = vm_pair["vma"].ssh(
        f"for t in {' '.join(tools)}; do command -v $t >/dev/null && echo $t; done; virsh --version; "
        "corosync -v | head -n1; ls /usr/lib/ocf/resource.d/heartbeat/VirtualDomain; "
        "systemctl is-enabled corosync pacemaker NetworkManager networking || true").stdout.split("\n")
    assert tuple(out[:len(tools)]) == tools, out
    version, corosync, agent, *enabled = out[len(tools):len(tools) + 7]
    assert version.startswith("9.0.") and "Corosync Cluster Engine" in corosync and agent.endswith("VirtualDomain")
    assert enabled == ["disabled"] * 4, out  # installed, started only by the role (or VMSpec.net) that wants it


def test_the_controller_reaches_the_vms_over_a_link_from_the_namespace(vm_pair):
    """What a network role's test does: the controller's own SSH goes over the link being changed."""
    a = vm_pair["vma"]
    addr = a.addr("lan")
    argv = vm_pair.netns_argv(["ssh", "-i", str(vm_pair.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", f"root@{addr}", "ip -4 -br addr show eth1"])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and addr in p.stdout, p.stdout + p.stderr
    # the controller's address is the link's .1, seen by the VM on eth1
    assert a.ssh(f"ping -c1 -W5 {vm_pair.controller_address('lan')}", check=False).returncode == 0
    vm_pair.cut("lan", vm="vma", how="drop")
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert p.returncode != 0  # the link is the path: cut it and the controller is out
        assert a.ssh("true").returncode == 0  # while the management path (127.0.0.1 forward) stays
    finally:
        vm_pair.restore("lan", vm="vma", how="drop")
