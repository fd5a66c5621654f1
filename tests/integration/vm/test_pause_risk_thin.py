"""kvm_pause_risk on real thin LVM (issue 23): thin LVs need device-mapper, which only a real kernel has here.

On ``vma`` of the shared fleet vmlab.fleets.HV2 (Debian 12's kernel, LVM, libvirt 9.0 and QEMU inside the VM):
a 128 MiB thin pool on vdb, two thin LVs that promise more than it has (256 MiB with 48 MiB written, 128 MiB with
16 MiB written), each the disk of a small TCG domain that only runs its firmware (it never writes): one with
error_policy stop, one with error_policy report. kvm_pause_risk runs as Ansible does it (SSH, AnsiballZ) and must
report the thin pool overcommitted with exactly the numbers ``lvs`` gives in the same run, the stop domain as
the one that pauses and the report domain as the one whose guest would see write errors.
"""
from __future__ import annotations

import json
import time

import pytest
from test_kvm_tune_live import HOST, play  # the same playbook runner over SSH (tests/integration/vm)

from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]
MiB = 1024 * 1024
DOMS = {"prt-stop": ("/dev/vg0/vm1", "stop"), "prt-report": ("/dev/vg0/vm2", "report")}
FIELDS = "lv_name,vg_name,lv_path,lv_dm_path,pool_lv,lv_size,data_percent,metadata_percent,lv_attr,segtype,vg_free"


def domain_xml(name: str, dev: str, policy: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><tcg><tb-cache unit='MiB'>8</tb-cache></tcg></features>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw' error_policy='{policy}'/>
      <source dev='{dev}'/><target dev='vda' bus='virtio'/></disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


SETUP = "set -e\n" + "\n".join([
    "pvcreate -q /dev/vdb && vgcreate -q vg0 /dev/vdb",
    "lvcreate -q --type thin-pool -L 128M -n pool0 vg0",
    "lvcreate -q -V 256M --thin -n vm1 vg0/pool0 && lvcreate -q -V 128M --thin -n vm2 vg0/pool0",
    "dd if=/dev/urandom of=/dev/vg0/vm1 bs=1M count=48 oflag=direct status=none",
    "dd if=/dev/urandom of=/dev/vg0/vm2 bs=1M count=16 oflag=direct status=none",
    *[f"cat > /root/{n}.xml <<'EOF'\n{domain_xml(n, dev, pol)}EOF\nvirsh -q define /root/{n}.xml >/dev/null\n"
      f"virsh -q start {n} >/dev/null" for n, (dev, pol) in DOMS.items()],
])


@pytest.fixture(scope="module")
def hv(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as fleet:
        vm = fleet[HOST]
        t0 = time.monotonic()
        vm.ssh("virsh -c qemu:///system version >/dev/null", timeout=600)
        vm.ssh(SETUP, timeout=600)
        report(f"kvm_pause_risk thin: thin pool, LVs and two domains ready in {time.monotonic() - t0:.1f} s")
        yield fleet


def test_thin_pool_overcommit_is_forecast(hv):
    t0 = time.monotonic()
    lvs_task = {"name": "lvs", "ansible.builtin.command": f"lvs --reportformat json --units b --nosuffix -o {FIELDS}",
                "changed_when": False}
    risk = {"name": "risk", "kvmops.fleet.kvm_pause_risk": {"domains": list(DOMS), "timeout": 120}}
    before, out, check, after = play(hv, [lvs_task, risk, dict(risk, check_mode=True), lvs_task])
    assert not out.get("failed"), out.get("msg")
    assert before["stdout"] == after["stdout"], "the thin pool changed while the forecast ran"
    lvs = {x["lv_name"]: x for x in json.loads(before["stdout"])["report"][0]["lv"]}
    f = out["ansible_facts"]["kvm_pause_risk"]
    fc = check["ansible_facts"]["kvm_pause_risk"]
    assert out["changed"] is False and check["changed"] is False
    assert fc["storages"] == f["storages"] and fc["risks"] == f["risks"]
    assert f["complete"] is True and f["errors"] == [], f["errors"]
    (s,) = f["storages"]
    pool = lvs["pool0"]
    size = int(pool["lv_size"])
    assert s["key"] == "thin:vg0/pool0" and s["kind"] == "thin_pool" and s["device"] == "/dev/mapper/vg0-pool0"
    assert (s["total_bytes"], s["data_percent"], s["metadata_percent"]) == (
        size, float(pool["data_percent"]), float(pool["metadata_percent"]))
    assert s["free_bytes"] == int(size * (100.0 - float(pool["data_percent"])) / 100.0)
    assert s["vg_free_bytes"] == int(pool["vg_free"]) and s["autoextend_threshold"] == 100
    disks = {d["domain"]: d for d in s["disks"]}
    growth = 0
    for name, lv in (("prt-stop", lvs["vm1"]), ("prt-report", lvs["vm2"])):
        cap = int(lv["lv_size"])
        occ = int(cap * float(lv["data_percent"]) / 100.0)
        assert (disks[name]["capacity_bytes"], disks[name]["occupied_bytes"]) == (cap, occ)
        growth += cap - occ
    # 48 and 16 MiB written: lvs says 18.75 % of 256 MiB and 12.50 % of 128 MiB (the recorded fixture's figures)
    assert (disks["prt-stop"]["occupied_bytes"], disks["prt-report"]["occupied_bytes"]) == (48 * MiB, 16 * MiB)
    assert s["remaining_growth_bytes"] == growth and s["headroom_bytes"] == s["free_bytes"] - growth < 0
    assert s["overcommitted"] is True and s["severity"] == "critical"
    assert s["would_pause"] == ["prt-stop"] and s["would_see_errors"] == ["prt-report"]
    assert s["can_fill_alone"] == ["prt-report", "prt-stop"]
    over = next(r for r in f["risks"] if r["kind"] == "storage_overcommitted")
    assert over["actions"][0].startswith("grow thin pool vg0/pool0 by ")
    assert over["actions"][1].startswith("enable autoextend for vg0/pool0")
    report(f"kvm_pause_risk thin: forecast (real + check) and lvs in {time.monotonic() - t0:.1f} s")
