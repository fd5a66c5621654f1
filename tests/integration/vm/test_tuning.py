"""kvmops.fleet.tuning on a real kernel: the shared fleet vmlab.fleets.HV2 (two NUMA nodes per VM, virtio disks
vdb and vdc), host ``vma``. A privileged container would change this machine's own kernel, so the knobs are
proven inside the VM's kernel only.

One ansible-playbook run applies the role three times (check mode, real, real again): the check run predicts
the real one and changes nothing, the real run enables and starts the image's real tuned (Debian's 2.20, disabled
in the image) with its virtual-host profile, then sets hugepages on each node, scheduler, read-ahead and queue
depth of vdb and vdc, THP, KSM, NUMA balancing and sysctls over it, and the second real run reports no change. The
values are read back from the kernel itself. A conflicting ``99-*.conf`` sysctl file and a second udev rule then
make the role's verification fail naming both files, and a read-ahead below the 4096 KiB that the profile's
``[disk] readahead=>4096`` raises it to at tuned's start fails naming the profile's file. With them gone, the VM
reboots, and every value is back from the role's files (the boot unit, the udev rule, the sysctl.d file) and from
tuned (its profile active, its own sysctl ``vm.dirty_background_ratio`` set, the role's sysctls over its others).

Per-VM placement: libvirt inside the VM (the ``hypervisor`` image) has two small TCG domains; the role's
``tuning_domains`` with ``placement: auto`` and hugepage backing puts them into different NUMA cells, and the
kernel's /proc/PID/numa_maps of each QEMU shows its guest RAM in hugepages of that cell only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
HOST = "vma"
DISKS = ("vdb", "vdc")
SYSCTL_CONFLICT = "/etc/sysctl.d/99-zz-local.conf"
UDEV_CONFLICT = "/etc/udev/rules.d/99-zz-scheduler.rules"
# Debian's virtual-host includes throughput-performance, whose [disk] readahead=>4096 raises a smaller read-ahead
# whenever tuned starts: the role's read-ahead is above it, and a smaller one is refused naming that file
TUNED_SAFE_READ_AHEAD = 8192
TUNED_DISK = "/usr/lib/tuned/throughput-performance/tuned.conf sets [disk] readahead=>4096"

# every knob in one SSH round trip (a TCG guest is slow): kernel values, the role's files, the unit's state
READ = r"""
import glob, json, os, subprocess
def r(p):
    try:
        return open(p).read().strip()
    except OSError:
        return None
out = {"nodes": {}, "disks": {}, "ksm": {}, "thp": {}, "sysctl": {}}
for d in sorted(glob.glob("/sys/devices/system/node/node[0-9]*")):
    out["nodes"][os.path.basename(d)] = r(d + "/hugepages/hugepages-2048kB/nr_hugepages")
for disk in ("vdb", "vdc"):
    q = "/sys/block/%s/queue/" % disk
    out["disks"][disk] = {k: r(q + k) for k in ("scheduler", "read_ahead_kb", "nr_requests")}
for k in ("run", "pages_to_scan", "sleep_millisecs"):
    out["ksm"][k] = r("/sys/kernel/mm/ksm/" + k)
for k in ("enabled", "defrag"):
    out["thp"][k] = r("/sys/kernel/mm/transparent_hugepage/" + k)
for k in ("vm/swappiness", "vm/dirty_ratio", "vm/dirty_background_ratio", "kernel/numa_balancing"):
    out["sysctl"][k] = r("/proc/sys/" + k)
out["unit"] = subprocess.run(["systemctl", "is-active", "kvmops-host-tune.service"], capture_output=True,
                             text=True).stdout.strip()
out["tuned"] = r("/etc/tuned/active_profile")
out["tuned_service"] = [subprocess.run(["systemctl", verb, "tuned.service"], capture_output=True,
                                       text=True).stdout.strip() for verb in ("is-enabled", "is-active")]
out["files"] = {p: os.path.exists(p) for p in ("/etc/sysctl.d/90-kvmops-fleet.conf",
                                               "/etc/udev/rules.d/90-kvmops-fleet-io.rules",
                                               "/etc/systemd/system/kvmops-host-tune.service")}
print(json.dumps(out))
"""


def read(vm) -> dict:
    return json.loads(vm.ssh("python3 -", input=READ, timeout=120).stdout)


def cpuset(text: str) -> set[int]:
    """'0-2,5' -> {0, 1, 2, 5} (libvirt and kvm_tune may write one set differently)."""
    out = set()
    for part in text.split(","):
        low, _sep, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def active(choice: str) -> str:
    return next(w[1:-1] for w in choice.split() if w.startswith("["))


@pytest.fixture(scope="module")
def fleet(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as leased:
        yield leased


def domain_xml(name: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/><tcg><tb-cache unit='MiB'>8</tb-cache></tcg></features>
  <devices><memballoon model='none'/></devices>
</domain>
"""


# each running domain's QEMU: hugetlbfs mappings of its numa_maps as {"N0": pages, ...}
NUMA_MAPS = r"""
import json, re, sys
out = {}
for name in sys.argv[1:]:
    pid = open("/run/libvirt/qemu/%s.pid" % name).read().strip()
    nodes = {}
    for line in open("/proc/%s/numa_maps" % pid):
        if " huge " in line or line.rstrip().endswith(" huge"):
            for node, pages in re.findall(r"\b(N\d+)=(\d+)", line):
                nodes[node] = nodes.get(node, 0) + int(pages)
    out[name] = nodes
print(json.dumps(out))
"""


def play(fleet, runs: list, variables: dict) -> dict:
    """The role once per entry of ``runs`` ("check" or "real") in one ansible-playbook run -> {"rc", "results": the
    kvm_host_tune task's result per run, "msg", "seconds"}."""
    tasks = [{"name": f"Tuning ({mode})", "ansible.builtin.include_role": {
        "name": "kvmops.fleet.tuning", **({"apply": {"check_mode": True, "diff": True}} if mode == "check" else {})}}
        for mode in runs]
    path = fleet.run_dir / "tuning-play.yml"
    path.write_text(json.dumps([{"hosts": HOST, "gather_facts": False, "tasks": tasks}]))  # JSON is YAML
    (fleet.run_dir / "tuning-vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_PIPELINING="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_DEPRECATION_WARNINGS="0")
    t0 = time.monotonic()
    proc = subprocess.run([str(PLAYBOOK), "-i", str(fleet.inventory_path), str(path),
                           "-e", "@" + str(fleet.run_dir / "tuning-vars.json")],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    results = [t["hosts"][HOST] for t in data["plays"][0]["tasks"]
               if t["task"]["name"].endswith("Tune the host and read every knob back") and HOST in t["hosts"]]
    domains = [t["hosts"][HOST] for t in data["plays"][0]["tasks"]
               if t["task"]["name"].endswith("Tune each declared domain") and HOST in t["hosts"]]
    return {"rc": proc.returncode, "results": results, "domains": domains, "seconds": seconds}


def test_tuning_live_persisted_verified_and_back_after_a_reboot(fleet):
    vm = fleet[HOST]
    t_start = time.monotonic()
    before = read(vm)
    assert sorted(before["nodes"]) == ["node0", "node1"], before["nodes"]
    # a scheduler each disk offers and does not run now, so that the apply is a real change
    other = active(before["disks"]["vdb"]["scheduler"])
    scheduler = "none" if other != "none" else "mq-deadline"
    variables = {
        "tuning_hugepages": [{"node": 0, "count": 24}, {"node": 1, "count": 12}],
        "tuning_numa_balancing": "disabled" if before["sysctl"]["kernel/numa_balancing"] != "0" else "enabled",
        "tuning_io_schedulers": [{"name": "vd[bc]", "transport": "virtio", "scheduler": scheduler,
                                  "read_ahead_kb": TUNED_SAFE_READ_AHEAD, "nr_requests": 48}],
        "tuning_ksm_pages_to_scan": 333, "tuning_ksm_sleep_millisecs": 45,
        "tuning_thp_enabled": "never", "tuning_thp_defrag": "defer",
        "tuning_sysctls": {"vm.swappiness": 7, "vm.dirty_ratio": 12},
    }
    balancing = "0" if variables["tuning_numa_balancing"] == "disabled" else "1"

    res = play(fleet, ["check", "real", "real"], variables)
    assert res["rc"] == 0, res
    check, real, again = res["results"]
    assert check["changed"] is True and real["changed"] is True
    assert check["changes"] == real["changes"], (check["changes"], real["changes"])
    assert again["changed"] is False and again["changes"] == [], again["changes"]
    assert real["not_done"] == [] and before["tuned_service"] == ["disabled", "inactive"], (real, before)
    assert {"enabled and started tuned.service", "tuned profile = virtual-host"} <= set(real["changes"])
    report(f"tuning: check + apply + second run in one playbook: {res['seconds']:.1f} s")

    def assert_tuned(state):
        assert state["nodes"] == {"node0": "24", "node1": "12"}, state["nodes"]
        for disk in DISKS:
            d = state["disks"][disk]
            assert active(d["scheduler"]) == scheduler, (disk, d)
            assert d["read_ahead_kb"] == str(TUNED_SAFE_READ_AHEAD) and d["nr_requests"] == "48", (disk, d)
        assert state["ksm"]["pages_to_scan"] == "333" and state["ksm"]["sleep_millisecs"] == "45", state["ksm"]
        assert active(state["thp"]["enabled"]) == "never" and active(state["thp"]["defrag"]) == "defer", state["thp"]
        # tuned's virtual-host sets dirty_background_ratio 5 (it ran) and swappiness 10 and dirty_ratio 40 (the
        # role's sysctl.d file wins: tuned applies the sysctl.d files again after its own, reapply_sysctl)
        assert state["sysctl"] == {"vm/swappiness": "7", "vm/dirty_ratio": "12", "vm/dirty_background_ratio": "5",
                                   "kernel/numa_balancing": balancing}, state["sysctl"]
        assert state["tuned"] == "virtual-host" and state["tuned_service"] == ["enabled", "active"], state
        assert all(state["files"].values()), state["files"]

    after = read(vm)
    assert_tuned(after)
    assert real["knobs"]["hugepages node1 2M"] == "12"

    # files that override the role's: verification names both, the values they would set and the role's files
    vm.ssh(f"cat > {SYSCTL_CONFLICT}", input="vm.swappiness = 33\n")
    vm.ssh(f"cat > {UDEV_CONFLICT}", input=f'ACTION=="add|change", KERNEL=="vd*", ATTR{{queue/scheduler}}="{other}"\n')
    res = play(fleet, ["real"], variables)
    assert res["rc"] == 2, res
    (bad,) = res["results"]
    assert bad["failed"] is True and bad["changed"] is False
    msg = bad["msg"]
    assert (f"sysctl vm.swappiness: wanted 7, actual 7 now but 33 after a reboot: {SYSCTL_CONFLICT} sets it after "
            "/etc/sysctl.d/90-kvmops-fleet.conf") in msg, msg
    for disk in DISKS:
        assert (f"{disk} queue/scheduler: wanted {scheduler}, actual {scheduler} now but {other} at the next udev "
                f"event or reboot: {UDEV_CONFLICT} sets it after /etc/udev/rules.d/90-kvmops-fleet-io.rules") in msg
    vm.ssh(f"rm {SYSCTL_CONFLICT} {UDEV_CONFLICT}")
    # a read-ahead below what the real tuned profile raises it to at its next start: refused (check mode) naming
    # the profile's file
    small = dict(variables, tuning_io_schedulers=[dict(variables["tuning_io_schedulers"][0], read_ahead_kb=1024)])
    res = play(fleet, ["check"], small)
    assert res["rc"] == 2, res
    (bad,) = res["results"]
    for disk in DISKS:
        assert (f"{disk} queue/read_ahead_kb: wanted 1024, actual {TUNED_SAFE_READ_AHEAD} now but 4096 when tuned "
                f"applies profile virtual-host (at its start and after a reboot): {TUNED_DISK}") in bad["msg"], bad
    scenario = time.monotonic() - t_start

    # every persisted value is back after a reboot (the VM boots with the kernel's defaults)
    boot = vm.reboot()
    rebooted = read(vm)
    assert rebooted["unit"] == "active", rebooted["unit"]
    assert_tuned(rebooted)
    report(f"tuning: scenario {scenario:.1f} s before the reboot, reboot {boot:.1f} s, total "
           f"{time.monotonic() - t_start:.1f} s")


def test_two_domains_are_placed_in_different_cells_on_their_cell_s_hugepages(fleet):
    vm = fleet[HOST]
    t0 = time.monotonic()
    names = ("tun-a", "tun-b")
    for name in names:
        vm.ssh(f"cat > /root/{name}.xml && virsh -q define /root/{name}.xml >/dev/null", input=domain_xml(name),
               timeout=300)
    variables = {
        "tuning_hugepages": [{"node": 0, "count": 16}, {"node": 1, "count": 16}],
        "tuning_domains": [{"name": n, "placement": "auto", "memory_backing": {"hugepages": True}} for n in names],
        "tuning_libvirt_timeout": 300,
    }
    res = play(fleet, ["real"], variables)
    assert res["rc"] == 0, res
    (loop,) = res["domains"]
    placed = {r["item"]["name"]: r["placement"] for r in loop["results"]}
    assert {placed[n]["cell"] for n in names} == {0, 1}, placed
    assert not any(p["spans_cells"] for p in placed.values()), placed
    vm.ssh(" && ".join(f"virsh -q start {n} >/dev/null" for n in names), timeout=300)
    deadline = time.monotonic() + 60  # the firmware touches guest RAM once the vCPU runs
    while True:
        maps = json.loads(vm.ssh("python3 - " + " ".join(names), input=NUMA_MAPS, timeout=120).stdout)
        if all(maps.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name in names:
        cell = f"N{placed[name]['cell']}"
        # the guest RAM's hugetlbfs pages are all on the domain's cell
        assert maps[name] and set(maps[name]) == {cell}, (name, placed[name], maps[name])
        # and libvirt reports the plan for the running domain: memory policy, nodeset and vCPU affinity
        lines = vm.ssh(f"virsh numatune {name}").stdout.splitlines()
        numatune = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
        assert numatune.get("numa_mode") == "strict", numatune
        assert numatune.get("numa_nodeset") == placed[name]["nodeset"], (numatune, placed[name])
        rows = [line.split() for line in vm.ssh(f"virsh vcpupin {name}").stdout.splitlines()[2:] if line.strip()]
        affinity = {vcpu: cpuset(cpus) for vcpu, cpus in rows}  # " VCPU   CPU Affinity", a rule, then a row each
        assert affinity == {v: cpuset(c) for v, c in placed[name]["vcpupin"].items()}, (affinity, placed[name])
    report(f"tuning: two domains placed in cells {sorted(p['cell'] for p in placed.values())} on their own "
           f"hugepages in {time.monotonic() - t0:.1f} s (playbook {res['seconds']:.1f} s)")
