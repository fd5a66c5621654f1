"""kvm_tune on a real-kernel hypervisor: live NIC bandwidth and hugepage backing, proven in the kernel.

This machine's kernel lacks the qdiscs libvirt's bandwidth limits need and had no hugetlbfs when the shared
libvirtd started, so both are proven here on a vmlab VM of the ``libvirt`` image variant: Debian 12's own
kernel, libvirt 9.0 and QEMU inside the VM, systemd's /dev/hugepages mounted before libvirtd. A small TCG
guest (no disk, firmware only) runs inside it with one NIC of each type libvirt shapes: ``network``
(libvirt's ``default`` NAT network, inside the VM), ``bridge`` (a bridge inside the VM) and ``ethernet``
(a bare tap). Nothing here touches this machine's network, sysctls or libvirtd.

kvm_tune runs as Ansible does it, over SSH to the VM, in one playbook per case (check, real, check, real:
the check run predicts the real one and leaves both XMLs byte-identical, the second real run is unchanged).
The results are read back with ``virsh domiftune`` and from the kernel itself (``tc qdisc/class/filter`` on
the guest's tap devices, HugePages_* in /proc/meminfo, the QEMU process's smaps).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
GUEST = "ktl-guest"
MACS = {"network": "52:54:00:7e:01:01", "bridge": "52:54:00:7e:01:02", "ethernet": "52:54:00:7e:01:03"}
HOST = "vma"  # the first hypervisor of the shared fleet vmlab.fleets.HV2
GUEST_XML = f"""<domain type='qemu'>
  <name>{GUEST}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><tcg><tb-cache unit='MiB'>8</tb-cache></tcg></features>
  <devices>
    <interface type='network'><mac address='{MACS["network"]}'/><source network='default'/><model type='virtio'/>
      <rom enabled='no'/></interface>
    <interface type='bridge'><mac address='{MACS["bridge"]}'/><source bridge='ktbr0'/><model type='virtio'/>
      <rom enabled='no'/></interface>
    <interface type='ethernet'><mac address='{MACS["ethernet"]}'/><model type='virtio'/><rom enabled='no'/></interface>
    <memballoon model='none'/>
  </devices>
</domain>
"""
SETUP = f"""set -e
virsh -q net-start default >/dev/null
ip link add ktbr0 type bridge
ip link set ktbr0 up
cat > /root/{GUEST}.xml <<'EOF'
{GUEST_XML}EOF
virsh -q define /root/{GUEST}.xml >/dev/null
virsh -q start {GUEST} >/dev/null
"""

# Everything the assertions read, in one SSH round trip (the VM is slow): both XMLs, and per NIC its tap,
# domiftune (live and config) and the tc state of the tap; HugePages_* and QEMU's hugetlbfs mappings.
PROBE = r"""
import json, subprocess, sys
name = sys.argv[1]
def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout
def tune(*argv):
    return {k.strip(): int(v) for k, _s, v in (l.partition(":") for l in run("virsh", "domiftune", *argv).splitlines())
            if v.strip()}
out = {"inactive": run("virsh", "dumpxml", "--inactive", name), "live": run("virsh", "dumpxml", name), "nics": {},
       "libvirtd": run("pidof", "libvirtd").strip()}
for line in run("virsh", "domiflist", name).splitlines()[2:]:
    f = line.split()
    if len(f) != 5:
        continue
    dev, mac = f[0], f[4]
    out["nics"][mac] = {
        "dev": dev, "type": f[1], "live": tune(name, mac, "--live"), "config": tune(name, mac, "--config"),
        "qdisc": run("tc", "qdisc", "show", "dev", dev), "class": run("tc", "class", "show", "dev", dev),
        "filter": run("tc", "filter", "show", "dev", dev, "parent", "1:"),
        "ingress": run("tc", "filter", "show", "dev", dev, "parent", "ffff:")}
out["meminfo"] = {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in open("/proc/meminfo"))
                  if k.startswith("HugePages_")}
maps = []
try:
    pid = open("/run/libvirt/qemu/%s.pid" % name).read().strip()
    block = None
    for line in open("/proc/%s/smaps" % pid):
        head = line.split()
        if "-" in head[0] and ":" not in head[0]:
            block = {"path": head[5] if len(head) > 5 else ""}
            maps.append(block)
        elif block is not None and head[0].endswith(":") and len(head) > 1 and head[1].isdigit():
            block[head[0][:-1]] = int(head[1])
except OSError:
    pass
out["hugetlb_maps"] = [m for m in maps if m["path"].startswith("/dev/hugepages/")]
print(json.dumps(out))
"""


def probe(vm) -> dict:
    return json.loads(vm.ssh(f"python3 - {GUEST}", input=PROBE, timeout=300).stdout)


def play(fleet, tasks: list) -> list:
    """Run ``tasks`` in one playbook on the VM (as Ansible does: SSH, AnsiballZ); -> each task's host result."""
    host = HOST
    path = fleet.run_dir / f"ktl-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(json.dumps([{"hosts": host, "gather_facts": False, "tasks": tasks}]))  # JSON is YAML
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_PIPELINING="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_DEPRECATION_WARNINGS="0")
    proc = subprocess.run([str(PLAYBOOK), "-i", str(fleet.inventory_path), str(path), "--diff"], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"ansible-playbook rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    results = [t["hosts"][host] for t in data["plays"][0]["tasks"]]
    assert len(results) == len(tasks), proc.stdout[-3000:]
    return results


def tune(args: dict, check: bool = False) -> dict:
    # timeout: libvirt in a TCG VM on a shared machine answers in seconds, not milliseconds
    return {"name": "check" if check else "real", "kvmops.fleet.kvm_tune": dict(args, domain=GUEST, timeout=300),
            "check_mode": check, "ignore_errors": True}


XMLS_CMD = f"virsh dumpxml --inactive {GUEST}; echo =====; virsh dumpxml {GUEST}"
XMLS = {"name": "xmls", "ansible.builtin.shell": XMLS_CMD, "changed_when": False}


def xmls_after(command: str) -> dict:
    """A task that runs ``command`` (set -e), then prints the XMLs as XMLS does (one task: each costs seconds)."""
    return {"name": "xmls", "ansible.builtin.shell": f"set -e; {command}; {XMLS_CMD}", "changed_when": False}


def four_steps(fleet, args: dict, pre: tuple = (), post: tuple = (), first: dict | None = None) -> dict:
    """check, real, check, real in one playbook, after the tasks ``pre`` and before ``post`` -> {"real": the first real
    result, "pre": [...], "post": [...], "xmls": the domain XMLs before the check run (printed by ``first``, default
    XMLS)}.
    Asserts that the check run predicts the real run and changes no XML, and that the second real run is unchanged."""
    n = len(pre)
    steps = [first or XMLS, tune(args, check=True), XMLS, tune(args), tune(args, check=True), tune(args)]
    res = play(fleet, [*pre, *steps, *post])
    before, check1, after_check, real1, check2, real2 = res[n:n + 6]
    assert not check1.get("failed") and not real1.get("failed"), (check1.get("msg"), real1.get("msg"))
    assert after_check["stdout"] == before["stdout"], "check mode changed the domain XML"
    for key in ("changed", "changes", "pending_restart", "diff"):
        assert check1[key] == real1[key], key
    assert check2["changed"] is False and real2["changed"] is False, (check2.get("changes"), real2.get("changes"))
    assert real2["pending_restart"] == real1["pending_restart"]
    return {"real": real1, "pre": res[:n], "post": res[n + 6:], "xmls": before["stdout"]}


def mbit(kib_per_s: int) -> str:
    """libvirt passes KiB/s to tc as "kbps" (1000 bytes/s): tc shows them as bits."""
    return f"{kib_per_s * 8 // 1000}Mbit"


def assert_tc(nic: dict, inbound: dict | None, outbound: dict | None) -> None:
    """The kernel's state of the guest's tap, as libvirt's tc commands leave it for these limits."""
    q, cls, flt, ingress = nic["qdisc"], nic["class"], nic["filter"], nic["ingress"]
    if inbound:
        assert re.search(r"^qdisc htb 1: root .*default 0x1", q, re.M), q
        assert re.search(r"^qdisc sfq 2: parent 1:1 ", q, re.M), q
        ceil = mbit(inbound.get("peak") or inbound["average"])
        rate, burst = mbit(inbound["average"]), inbound["burst"]
        want = f"class htb 1:1 root leaf 2: prio 0 rate {rate} ceil {ceil} burst {burst}Kb"
        assert want in cls, cls
        assert re.search(r"fw chain 0 handle 0x1 classid :1", flt), flt
    else:
        assert "htb" not in q and "sfq" not in q and cls.strip() == "", q + cls
    if outbound:
        assert re.search(r"^qdisc ingress ffff: ", q, re.M), q
        want = rf"police 0x[0-9a-f]+ rate {mbit(outbound['average'])} burst {outbound['burst']}Kb mtu 64Kb action drop"
        assert re.search(want, ingress), ingress
        assert "match 00000000/00000000 at 0" in ingress and "u32" in ingress, ingress
    else:
        assert "ingress" not in q and "police" not in ingress, q + ingress


def domiftune(inbound: dict | None, outbound: dict | None) -> dict:
    out = {}
    for direction, want in (("inbound", inbound), ("outbound", outbound)):
        for key in ("average", "peak", "burst"):
            out[f"{direction}.{key}"] = (want or {}).get(key) or 0
    out["inbound.floor"] = 0
    return out


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    """The shared two-hypervisor fleet with the guest running on ``vma``; -> the fleet (``hv[HOST]`` is the VM)."""
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        yield _start_guest(fleet)


def _start_guest(fleet):
    vm = fleet[HOST]
    t1 = time.monotonic()
    vm.ssh("virsh -c qemu:///system version >/dev/null", timeout=600)
    t2 = time.monotonic()
    vm.ssh(SETUP, timeout=600)
    fleet.libvirtd_pid = vm.ssh("pidof libvirtd").stdout.strip()  # the tests check that it never changes
    report(f"kvm_tune live: libvirtd answers in {t2 - t1:.1f} s, "
           f"network + bridge + guest started in {time.monotonic() - t2:.1f} s")
    return fleet


def test_the_hypervisor_is_a_real_kernel_with_libvirt(hv):
    vm = hv[HOST]
    out = vm.ssh(f"uname -r; virsh domstate {GUEST} | head -n1; virsh version | sed -n 's/^Running hypervisor: //p'; "
                 "grep -c ' /dev/hugepages hugetlbfs ' /proc/mounts; "
                 f"virsh domiflist {GUEST} | awk 'NR>2 && NF {{print $2}}'")
    lines = out.stdout.split("\n")
    assert lines[0] == hv.image.manifest["kernel_version"]
    assert lines[1] == "running" and lines[2].startswith("QEMU 7.2") and lines[3] == "1", lines
    assert lines[4:7] == ["network", "bridge", "ethernet"], lines


def test_bandwidth_refused_where_the_kernel_lacks_sch_sfq(hv):
    """A kernel without sch_sfq (its module hidden from the module lists, as on a kernel built without it): kvm_tune
    says so, never calls libvirt live (the tap keeps its qdisc), and with apply=both writes the definition only."""
    vm = hv[HOST]
    t0 = time.monotonic()
    mac = MACS["bridge"]
    limits = {"inbound": {"average": 800, "peak": 1600, "burst": 16}}
    vm.ssh("set -e; test ! -d /sys/module/sch_sfq; d=/lib/modules/$(uname -r); grep -q /sch_sfq.ko $d/modules.dep; "
           "grep -v /sch_sfq.ko $d/modules.dep > /run/ktl-modules.dep; "
           "mount --bind /run/ktl-modules.dep $d/modules.dep")
    try:
        xmls, live, both = play(hv, [XMLS, tune({"apply": "live", "interfaces": [{"mac": mac, "bandwidth": limits}]}),
                                     tune({"apply": "both", "interfaces": [{"mac": mac, "bandwidth": limits}]})])
        after = probe(vm)
    finally:
        vm.ssh("umount /lib/modules/$(uname -r)/modules.dep; rm -f /run/ktl-modules.dep")
    assert live["failed"] and live["msg"] == (
        f"apply=live: bandwidth[{mac}] cannot be changed on a running domain (bandwidth[{mac}]: this host's kernel "
        "lacks sch_sfq (CONFIG_NET_SCH_SFQ), which libvirt's tc limits need); use apply=config or apply=both "
        "(it then takes effect at the next boot)"), live["msg"]
    assert not both.get("failed"), both.get("msg")
    assert both["changes"] == [f"config:bandwidth[{mac}]"] and both["pending_restart"] == [f"bandwidth[{mac}]"]
    assert any("not changed live (this host's kernel lacks sch_sfq" in w for w in both["warnings"]), both["warnings"]
    nic = after["nics"][mac]
    assert_tc(nic, None, None)  # no half-built htb left on the tap: libvirt was never asked
    assert nic["live"] == domiftune(None, None) and nic["config"] == domiftune(limits["inbound"], None)
    assert after["live"].strip() == xmls["stdout"].split("=====", 1)[1].strip()
    assert after["libvirtd"] == hv.libvirtd_pid
    report(f"kvm_tune live: refusal without sch_sfq {time.monotonic() - t0:.1f} s")


LIMITS = {
    "network": ({"average": 1000, "peak": 2000, "burst": 64}, {"average": 500, "burst": 32}),
    "bridge": ({"average": 2000, "peak": 4000, "burst": 128}, {"average": 1000, "burst": 64}),
    "ethernet": ({"average": 3000, "peak": 6000, "burst": 32}, {"average": 250, "burst": 16}),
}


def test_bandwidth_live_and_config_on_every_nic_type(hv):
    vm = hv[HOST]
    t0 = time.monotonic()
    args = {"interfaces": [{"mac": MACS[t], "bandwidth": {"inbound": i, "outbound": o}}
                           for t, (i, o) in LIMITS.items()]}
    res = four_steps(hv, args)["real"]
    assert res["changes"] == [f"config:bandwidth[{MACS[t]}]" for t in LIMITS] + [
        f"live:bandwidth[{MACS[t]}]" for t in LIMITS]
    assert res["pending_restart"] == [] and not res.get("warnings"), res
    after = probe(vm)
    for t, (inbound, outbound) in LIMITS.items():
        nic = after["nics"][MACS[t]]
        assert nic["type"] == t
        assert nic["live"] == nic["config"] == domiftune(inbound, outbound), (t, nic["live"], nic["config"])
        assert_tc(nic, inbound, outbound)
    assert after["libvirtd"] == hv.libvirtd_pid, "libvirtd restarted (crashed?)"
    report(f"kvm_tune live: bandwidth on 3 NIC types, 4 runs, {time.monotonic() - t0:.1f} s")


def test_bandwidth_live_only_change_and_removal(hv):
    """apply=live: a new inbound limit (no peak) on the network NIC, every limit off the ethernet NIC; the persistent
    definition keeps its limits; the kernel follows."""
    vm = hv[HOST]
    t0 = time.monotonic()
    new_in = {"average": 1500, "burst": 96}
    args = {"apply": "live", "interfaces": [
        {"mac": MACS["network"], "bandwidth": {"inbound": new_in}},
        {"mac": MACS["ethernet"], "bandwidth": {"inbound": {"average": 0}, "outbound": {"average": 0}}}]}
    steps = four_steps(hv, args)
    res = steps["real"]
    assert res["changes"] == [f"live:bandwidth[{MACS['network']}]", f"live:bandwidth[{MACS['ethernet']}]"]
    assert res["pending_restart"] == []
    after = probe(vm)
    assert after["inactive"].strip() == steps["xmls"].split("=====", 1)[0].strip(), (
        "apply=live touched the persistent definition")
    net, eth = after["nics"][MACS["network"]], after["nics"][MACS["ethernet"]]
    _old_in, old_out = LIMITS["network"]
    assert net["live"] == domiftune(new_in, old_out) and net["config"] == domiftune(*LIMITS["network"])
    assert_tc(net, new_in, old_out)  # ceil = rate without a peak; outbound kept
    assert eth["live"] == domiftune(None, None) and eth["config"] == domiftune(*LIMITS["ethernet"])
    assert_tc(eth, None, None)
    assert after["libvirtd"] == hv.libvirtd_pid
    report(f"kvm_tune live: live-only change and removal, 4 runs, {time.monotonic() - t0:.1f} s")


def test_hugepages_refused_then_used_by_the_guest(hv):
    """Not reserved: refused before anything changes. Reserved: written to the definition (pending_restart), and the
    guest started from it runs on hugepages (HugePages_Free drops by its 32 pages, QEMU maps hugetlbfs)."""
    vm = hv[HOST]
    t0 = time.monotonic()
    old = vm.ssh("sysctl -n vm.nr_hugepages").stdout.strip()
    backing = {"memory_backing": {"hugepages": True, "page_size": 2048}}
    restart = {"name": "restart", "ansible.builtin.shell": f"virsh destroy {GUEST} && virsh start {GUEST}"}
    try:
        steps = four_steps(hv, backing, pre=(xmls_after("sysctl -qw vm.nr_hugepages=0"), tune(backing)),
                           first=xmls_after("sysctl -qw vm.nr_hugepages=40"), post=(restart, tune(backing)))
        xmls, bad = steps["pre"]
        assert bad["failed"] and bad["msg"] == (
            "memory_backing.hugepages: the domain needs 65536 KiB of 2048 KiB hugepages but only 0 KiB are reserved "
            "on this host (reserve them, e.g. vm.nr_hugepages or /sys/kernel/mm/hugepages)"), bad["msg"]
        assert steps["xmls"] == xmls["stdout"], "the refused run changed the domain"
        res, (_restart, again) = steps["real"], steps["post"]
        assert res["changes"] == ["config:memory_backing"] and res["pending_restart"] == ["memory_backing"]
        assert not any("hugetlbfs" in w for w in res.get("warnings", [])), res.get("warnings")
        assert again["changed"] is False and again["pending_restart"] == [], again
        after = probe(vm)
        assert "<page size='2048' unit='KiB'/>" in after["live"]
        mem = after["meminfo"]
        assert mem["HugePages_Total"] == 40 and mem["HugePages_Free"] == 40 - 32, mem
        (mapping,) = after["hugetlb_maps"]
        assert mapping["path"].startswith("/dev/hugepages/libvirt/qemu/") and GUEST in mapping["path"], mapping
        assert mapping["KernelPageSize"] == 2048 and mapping["Size"] == 65536, mapping
        assert mapping["Private_Hugetlb"] + mapping["Shared_Hugetlb"] == 65536, mapping
    finally:
        vm.ssh(f"virsh -q destroy {GUEST} >/dev/null 2>&1; sysctl -qw vm.nr_hugepages={old}", check=False)
    assert vm.ssh("sysctl -n vm.nr_hugepages; awk '/HugePages_Total/ {print $2}' /proc/meminfo").stdout.split() == [
        old, old]
    report(f"kvm_tune live: hugepages refused, then used, {time.monotonic() - t0:.1f} s")
