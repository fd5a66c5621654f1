"""playbooks/dr.yml (kvmops.fleet.dr, entry point drbd) and kvmops.fleet.drbd_facts on real kernels: the shared
fleet vmlab.fleets.HV2, vma and vmb (Debian 12, in-kernel DRBD 8.4.11, drbd-utils 9.22), replicating over the
``repl`` link (eth2), backing devices their empty vdb by stable path (/dev/disk/by-id/virtio-vmlab-disk1).

In order, on one lease (each step builds on the one before):

- refusals before any change: vdc holding ext4 with a file is refused naming the device and ext4, its file and first
  16 MiB intact, nothing written on either node; a minor twice and a short secret refused on the controller naming
  the variable;
- check mode predicts and writes nothing; the real run creates the resource on both, the initial sync from vma
  (declared) only, healthy on both; a second run and check mode change nothing;
- data written on the primary (sha256) reads the same on the peer after switching roles;
- the repl link cut (taps down, carrier kept): drbd_facts says disconnected with the bytes the peer lacks, writes
  go on; kvm_pause_facts on vma carries the same DRBD health (read from the live kernel), which the fleet report
  and the collector's text (checked by promtool) show; the link back: the resync completes and the checksums agree;
- a split brain (both primary while cut, both write): drbd_facts says split-brain with the recovery steps, which,
  followed, bring the resource back to healthy;
- a last run of the role changes nothing (no metadata re-created, vma stays Primary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from promcheck import parse_text, promtool, select

from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _promtext
from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import build_report
from vmlab.fleets import HV2
from vmlab.pytest_plugin import report

pytestmark = [pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
DISK = "/dev/disk/by-id/virtio-vmlab-disk1"  # vdb
OTHER = "/dev/disk/by-id/virtio-vmlab-disk2"  # vdc
SECRET = "kvmops-vmlab-0123456789"  # noqa: S105 (a test value)
RES = "vmdisk"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def fleet(vmlab_pool, request):
    with vmlab_pool.lease(HV2, who=request.module.__name__) as leased:
        yield leased


def env():
    return dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_PIPELINING="1",
                ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_DEPRECATION_WARNINGS="0")


def per_host(data):
    out = {}
    for play in data["plays"]:
        for t in play["tasks"]:
            for host, res in t["hosts"].items():
                out.setdefault(host, {})[t["task"]["name"].split(" : ", 1)[-1]] = res
    return out


def playbook(fleet, variables, *args):
    """ansible-playbook kvmops.fleet.dr on vma and vmb -> {"rc", "hosts": {host: {task: result}}, "stats",
    "seconds", "out"}."""
    vars_file = fleet.run_dir / f"dr-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps({"kvmops_dr_hosts": "vma:vmb", **variables}))
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(fleet.inventory_path), "kvmops.fleet.dr",
                           "-e", "@" + str(vars_file), *args], env=env(), capture_output=True, text=True,
                          timeout=900, check=False, cwd=fleet.run_dir)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    return {"rc": proc.returncode, "hosts": per_host(data), "stats": data["stats"], "seconds": seconds,
            "out": proc.stdout[-6000:]}


def drbd_facts(fleet, host):
    """kvmops.fleet.drbd_facts on ``host`` through ansible (ad hoc) -> its resource RES (or None)."""
    proc = subprocess.run([str(BIN / "ansible"), "-i", str(fleet.inventory_path), host, "-m",
                           "kvmops.fleet.drbd_facts", "-a", json.dumps({"resources": [RES], "timeout": 20})],
                          env=env(), capture_output=True, text=True, timeout=300, check=False)
    data = json.loads(proc.stdout)
    result = data["plays"][0]["tasks"][0]["hosts"][host]
    assert not result.get("failed"), result
    facts = result["ansible_facts"]["drbd"]
    assert facts["loaded"] and facts["errors"] == [], facts
    return next((r for r in facts["resources"] if r["name"] == RES), None)


def pause_facts(fleet, host):
    """kvmops.fleet.kvm_pause_facts on ``host`` (ad hoc) -> the registered result. Its libvirt side is libvirt's test
    driver (no daemon, no QEMU probe: the DRBD half is under test); its DRBD half reads the VM's live kernel."""
    proc = subprocess.run([str(BIN / "ansible"), "-i", str(fleet.inventory_path), host, "-m",
                           "kvmops.fleet.kvm_pause_facts", "-a", json.dumps({"uri": "test:///default", "timeout": 20})],
                          env=env(), capture_output=True, text=True, timeout=300, check=False)
    data = json.loads(proc.stdout)
    result = data["plays"][0]["tasks"][0]["hosts"][host]
    assert not result.get("failed"), result
    return result


def resource(fleet, **kw):
    r = {"name": RES, "port": 7789, "secret": SECRET, "sync_rate": "200M", "initial_primary": "vma",
         "nodes": [{"host": vm, "address": fleet[vm].addr("repl"), "disk": DISK, "minor": 0} for vm in ("vma", "vmb")]}
    r.update(kw)
    return r


def proc_drbd(vm):
    return vm.ssh("cat /proc/drbd 2>/dev/null || true").stdout


def wait_for(vm, needle, timeout=180):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = proc_drbd(vm)
        if needle in text:
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"{vm.name}: no {needle!r} in /proc/drbd after {timeout} s:\n{proc_drbd(vm)}")


def changed(res):
    return {h: s["changed"] for h, s in res["stats"].items()}


def write(vm, seek_mib, count_mib):
    vm.ssh(f"dd if=/dev/urandom of=/dev/drbd0 bs=1M seek={seek_mib} count={count_mib} oflag=direct status=none")


def digest(vm, mib):
    return vm.ssh(f"dd if=/dev/drbd0 bs=1M count={mib} iflag=direct status=none | sha256sum").stdout.split()[0]


def test_stable_paths_are_the_disks_we_think(fleet):
    for name in ("vma", "vmb"):
        assert fleet[name].ssh(f"readlink -f {DISK}").stdout.strip() == "/dev/vdb"
        assert fleet[name].ssh(f"readlink -f {OTHER}").stdout.strip() == "/dev/vdc"


def test_refusals_before_any_change(fleet):
    a = fleet["vma"]
    a.ssh("mkdir -p /root/fs && echo kvmops-keep > /root/fs/keep && mkfs.ext4 -q -F -d /root/fs /dev/vdc")
    sha = "dd if=/dev/vdc bs=1M count=16 status=none | sha256sum"
    before = a.ssh(sha).stdout
    res = playbook(fleet, {"dr_drbd_resources": [resource(fleet, name="refused", nodes=[
        {"host": vm, "address": fleet[vm].addr("repl"), "disk": OTHER, "minor": 5} for vm in ("vma", "vmb")])]})
    assert res["rc"] == 2, res["out"]
    failed = res["hosts"]["vma"]["Check every node before any change (check mode)"]
    msg = failed["results"][0]["msg"]
    assert msg.startswith("dr_drbd_resources[0].nodes[0].disk: /dev/disk/by-id/virtio-vmlab-disk2 (/dev/vdc) is not "
                          "empty: ext4 signature"), msg
    assert "force: true" in msg and SECRET not in res["out"]
    assert changed(res) == {"vma": 0, "vmb": 0}
    assert "Configure, create metadata and bring up each resource" not in res["hosts"]["vmb"]
    assert a.ssh(sha).stdout == before
    assert a.ssh("mount -o ro /dev/vdc /mnt && cat /mnt/keep; umount /mnt").stdout == "kvmops-keep\n"
    for vm in ("vma", "vmb"):
        assert fleet[vm].ssh("ls /etc/drbd.d/").stdout.split() == ["global_common.conf"]
    report(f"dr: ext4 on vdc refused in {res['seconds']:.1f} s: {msg[:150]}")

    twice = resource(fleet, name="other", port=7790)  # minor 0 on both hosts again
    res = playbook(fleet, {"dr_drbd_resources": [resource(fleet), twice, resource(fleet, name="short", port=7791,
                                                                                    secret="tooshort")]})  # noqa: S106
    assert res["rc"] == 2, res["out"]
    msg = res["hosts"]["vma"]["Check the resources together"]["msg"]
    assert "dr_drbd_resources[1].nodes[0].minor: minor 0 on vma is also dr_drbd_resources[0].nodes[0].minor" in msg
    assert "dr_drbd_resources[2].secret: must have 16 to 64 characters (has 8; value hidden)" in msg
    assert "tooshort" not in res["out"] and changed(res) == {"vma": 0, "vmb": 0}


def test_create_and_initial_sync_then_nothing_to_do(fleet):
    a, b = fleet["vma"], fleet["vmb"]
    variables = {"dr_drbd_resources": [resource(fleet)], "dr_drbd_wait_sync": True, "dr_drbd_sync_timeout": 600}
    dry = playbook(fleet, variables, "--check", "--diff")
    assert dry["rc"] == 0, dry["out"]
    for vm in ("vma", "vmb"):
        would = dry["hosts"][vm]["Configure, create metadata and bring up each resource"]["results"][0]
        assert would["changed"] is True and would["actions"] == [
            f"write /etc/drbd.d/{RES}.res", f"create-md on {DISK} (/dev/vdb) (empty)", "up"], would
        assert "********" in would["diff"]["after"] and SECRET not in json.dumps(would)
        assert fleet[vm].ssh(f"test -e /etc/drbd.d/{RES}.res", check=False).returncode != 0
    assert "cs:" not in proc_drbd(a)

    res = playbook(fleet, variables)
    assert res["rc"] == 0, res["out"]
    sync = res["hosts"]["vma"]["Start the initial sync on the declared node only"]["results"][0]
    assert sync["changed"] is True and sync["actions"] == ["primary --force (initial sync source)", "secondary"]
    assert res["hosts"]["vmb"]["Start the initial sync on the declared node only"]["results"][0].get("skipped")
    for vm in (a, b):
        mode = vm.ssh(f"stat -c %a /etc/drbd.d/{RES}.res").stdout.strip()
        assert mode == "600"
    for name in ("vma", "vmb"):
        r = drbd_facts(fleet, name)
        assert (r["verdict"], r["role"], r["out_of_sync_bytes"]) == ("healthy", "Secondary", 0), r
    report(f"dr: created and synced (256 MiB) in {res['seconds']:.1f} s")

    again = playbook(fleet, variables)
    assert again["rc"] == 0 and changed(again) == {"vma": 0, "vmb": 0}, again["out"]
    check = playbook(fleet, variables, "--check")
    assert check["rc"] == 0 and changed(check) == {"vma": 0, "vmb": 0}, check["out"]


def test_data_written_on_the_primary_reads_the_same_on_the_peer(fleet):
    a, b = fleet["vma"], fleet["vmb"]
    a.ssh(f"drbdadm primary {RES}")
    write(a, 0, 32)
    want = digest(a, 32)
    a.ssh(f"drbdadm secondary {RES}")
    b.ssh(f"drbdadm primary {RES}")
    assert digest(b, 32) == want
    b.ssh(f"drbdadm secondary {RES}")


def test_a_cut_link_is_reported_writes_go_on_and_the_resync_completes(fleet):
    a, b = fleet["vma"], fleet["vmb"]
    a.ssh(f"drbdadm primary {RES}")
    fleet.cut("repl", how="drop")
    write(a, 32, 16)  # protocol C: waits for the peer until DRBD gives up on it (ping timeout), then goes on
    wait_for(a, "cs:WFConnection", 90)
    r = drbd_facts(fleet, "vma")
    assert r["verdict"] == "disconnected" and r["role"] == "Primary", r
    assert r["out_of_sync_bytes"] >= 16 * MIB and r["peers"][0]["connection_state"] == "WFConnection", r
    assert r["remediation"][0].startswith(f"Check the replication link to the peer ({b.addr('repl')}:7789)"), r
    # the diagnostics' view of the same moment: kvm_pause_facts -> fleet report and collector text
    t0 = time.monotonic()
    result = pause_facts(fleet, "vma")
    drbd = result["ansible_facts"]["kvm_pause"]["drbd"]
    assert drbd["loaded"] and drbd["kernel_version"] == "8.4.11" and drbd["errors"] == [], drbd
    (pr,) = [x for x in drbd["resources"] if x["name"] == RES]
    got = (pr["verdict"], pr["role"], pr["peers"][0]["connection_state"])
    assert got == ("disconnected", "Primary", "WFConnection"), pr
    (row,) = build_report({"vma": result}, generated_at="2026-12-05T00:00:00Z")["drbd"]
    assert (row["host"], row["name"], row["verdict"], row["severity"]) == ("vma", RES, "disconnected", "warning")
    text, _state = _promtext.render(result["ansible_facts"]["kvm_pause"], None, now=time.time(), duration=1.0,
                                    interval=30, paused_alert_seconds=900, stale_alert_seconds=300)
    res = promtool("check", "metrics", stdin=text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stdout + res.stderr
    samples = parse_text(text)
    assert select(samples, "kvmops_drbd_resource_verdict", resource=RES, verdict="disconnected") == [
        ({"resource": RES, "verdict": "disconnected"}, 1.0)]
    assert select(samples, "kvmops_drbd_out_of_sync_bytes", resource=RES)[0][1] >= 16 * MIB
    report(f"dr: kvm_pause_facts with the live DRBD view on vma in {time.monotonic() - t0:.1f} s")
    write(a, 48, 8)  # writes continue while cut
    want = digest(a, 64)
    t0 = time.monotonic()
    fleet.restore("repl", how="drop")
    wait_for(a, "ds:UpToDate/UpToDate", 180)
    report(f"dr: resync after the cut done {time.monotonic() - t0:.1f} s after the link came back")
    r = drbd_facts(fleet, "vma")
    assert r["verdict"] == "healthy" and r["out_of_sync_bytes"] == 0, r
    a.ssh(f"drbdadm secondary {RES}")
    b.ssh(f"drbdadm primary {RES}")
    assert digest(b, 64) == want
    b.ssh(f"drbdadm secondary {RES}")


def test_split_brain_is_reported_with_the_steps_that_recover_it(fleet):
    a, b = fleet["vma"], fleet["vmb"]
    fleet.cut("repl", how="drop")
    wait_for(a, "cs:WFConnection", 90)
    wait_for(b, "cs:WFConnection", 90)
    a.ssh(f"drbdadm primary {RES}")
    b.ssh(f"drbdadm primary {RES}")
    write(a, 0, 2)
    write(b, 4, 2)
    fleet.restore("repl", how="drop")
    wait_for(a, "cs:StandAlone", 120)
    time.sleep(2)
    for name in ("vma", "vmb"):
        r = drbd_facts(fleet, name)
        assert r["verdict"] == "split-brain" and r["severity"] == "critical", (name, r)
        assert any("Split-Brain detected but unresolved" in line for line in r["split_brain"]["evidence"]), r
        steps = " | ".join(r["remediation"])
        assert "drbdadm connect --discard-my-data vmdisk" in steps and "drbdadm connect vmdisk" in steps, steps
    report(f"dr: split brain on vma: {r['summary']}")
    # the steps, as drbd_facts gives them: vmb's changes are discarded, vma survives
    survivor = digest(a, 8)
    b.ssh(f"drbdadm disconnect {RES}; drbdadm secondary {RES}; drbdadm connect --discard-my-data {RES}")
    a.ssh(f"drbdadm connect {RES}", check=False)  # vma may still be StandAlone
    wait_for(a, "ds:UpToDate/UpToDate", 120)
    r = drbd_facts(fleet, "vma")
    assert r["verdict"] == "healthy", r
    b_role = drbd_facts(fleet, "vmb")["role"]
    assert b_role == "Secondary"
    a.ssh(f"drbdadm secondary {RES}")
    b.ssh(f"drbdadm primary {RES}")
    assert digest(b, 8) == survivor
    b.ssh(f"drbdadm secondary {RES}")


def test_a_node_that_is_down_comes_up_on_its_metadata_and_a_last_run_changes_nothing(fleet):
    a, b = fleet["vma"], fleet["vmb"]
    b.ssh(f"drbdadm down {RES}")
    assert "TYPE=drbd" in b.ssh("blkid -p -o export /dev/vdb", check=False).stdout  # what the verdict sees
    a.ssh(f"drbdadm primary {RES}")
    want = digest(a, 64)
    res = playbook(fleet, {"dr_drbd_resources": [resource(fleet)]})
    assert res["rc"] == 0, res["out"]
    up = res["hosts"]["vmb"]["Configure, create metadata and bring up each resource"]["results"][0]
    assert up["actions"] == ["up"], up  # the existing metadata is used, never created again
    assert changed(res) == {"vma": 0, "vmb": 1}
    wait_for(b, "ds:UpToDate/UpToDate", 120)
    res = playbook(fleet, {"dr_drbd_resources": [resource(fleet)]})
    assert res["rc"] == 0 and changed(res) == {"vma": 0, "vmb": 0}, res["out"]
    assert "ro:Primary/Secondary" in proc_drbd(a)  # the role never changes a role
    r = drbd_facts(fleet, "vma")
    assert r["verdict"] == "healthy" and r["role"] == "Primary", r
    a.ssh(f"drbdadm secondary {RES}")
    b.ssh(f"drbdadm primary {RES}")
    assert digest(b, 64) == want
    b.ssh(f"drbdadm secondary {RES}")
