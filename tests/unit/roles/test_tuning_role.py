"""kvmops.fleet.tuning through ansible-playbook, on a fixture tree of a 2-node host: module_defaults give
kvm_host_tune its private ``_root``, so the role's own tasks run unchanged and nothing of this machine is read or
written. The variables reach the module as the role maps them (unchanged = left alone), a second run changes
nothing, check mode changes nothing, a bad value is refused naming the role variable, and what needs the kernel
command line is printed. Real writes to a kernel are the vm tier's (tests/integration/vm/test_tuning.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from kvmlab import hosttree
from kvmlab.testdriver import write_fleet

ROLE = Path(__file__).resolve().parents[3] / "roles" / "tuning"

VARS = {
    "tuning_hugepages": [{"node": 0, "count": 64}, {"node": 1, "size": "1G", "count": 1}],
    "tuning_numa_balancing": "disabled",
    "tuning_sysctls": {"vm.swappiness": 10},
    "tuning_io_schedulers": [{"transport": "virtio", "scheduler": "none", "read_ahead_kb": 256}],
    "tuning_ksm_run": "stop",
    "tuning_ksm_pages_to_scan": 200,
    "tuning_thp_enabled": "never",
}


def run_role(tmp_path: Path, root: Path, extra: dict, check: bool = False,
             verbose: bool = False) -> subprocess.CompletedProcess:
    tasks = [{"name": "Role", "ansible.builtin.include_role": {"name": "kvmops.fleet.tuning"}}]
    if verbose:  # the role's registered kvm_tune results
        tasks.append({"name": "Results", "ansible.builtin.copy": {
            "content": "{{ __tuning_domains.results | to_json }}", "dest": str(tmp_path / "domains.json"),
            "mode": "0644"}})
    play = [{"name": "Tuning", "hosts": "localhost", "gather_facts": False,
             "module_defaults": {"kvmops.fleet.kvm_host_tune": {"_root": str(root)}}, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(extra),
                           *(["--check", "--diff"] if check else []), str(tmp_path / "play.yml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)


def recap(out: str) -> dict:
    m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
    assert m, out
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()), strict=True))


def value(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text().strip()


def test_defaults_equal_the_spec():
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert {k: v["default"] for k, v in specs.items()} == defaults


def test_the_role_tunes_a_two_node_tree(tmp_path):
    root = hosttree.build(tmp_path / "host", nodes=2)
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    check = run_role(tmp_path, root, VARS, check=True)
    assert check.returncode == 0, check.stdout
    assert recap(check.stdout)["changed"] == 1
    assert "live values" in check.stdout and "+sysctl vm.swappiness = 10" in check.stdout
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file() and not p.is_symlink()} == before

    res = run_role(tmp_path, root, VARS)
    assert res.returncode == 0, res.stdout
    assert recap(res.stdout)["changed"] == 1
    assert value(root, "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages") == "64"
    assert value(root, "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages") == "1"
    assert value(root, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages") == "0"
    assert value(root, "/proc/sys/kernel/numa_balancing") == "0"
    assert value(root, "/proc/sys/vm/swappiness") == "10"
    assert value(root, "/sys/block/vda/queue/read_ahead_kb") == "256"
    assert value(root, "/sys/kernel/mm/ksm/pages_to_scan") == "200"
    assert value(root, "/sys/kernel/mm/ksm/merge_across_nodes") == "1"  # unchanged: left alone
    assert value(root, "/sys/kernel/mm/ksm/sleep_millisecs") == "20"  # -1: left alone
    assert value(root, "/sys/kernel/mm/transparent_hugepage/defrag") == "always defer defer+madvise [madvise] never"
    assert "hugepagesz=1G hugepages=1:1" in res.stdout  # printed: what the kernel command line needs
    assert "tuned_profile: tuned-adm is not installed" in res.stdout  # the default profile, skipped

    again = run_role(tmp_path, root, VARS)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_a_bad_value_names_the_role_variable(tmp_path):
    root = hosttree.build(tmp_path / "host", nodes=2)
    res = run_role(tmp_path, root, {"tuning_hugepages": [{"node": 5, "count": 1}]})
    assert res.returncode == 2
    assert "tuning_hugepages[0].node: NUMA node 5 does not exist on this host (nodes: 0,1)" in res.stdout
    assert value(root, "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages") == "0"
    res = run_role(tmp_path, root, {"tuning_tuned_profile": "virtual-host", "tuning_tuned_required": True})
    assert res.returncode == 2
    assert "tuning_tuned_profile: tuned-adm is not installed on this host" in res.stdout


def test_domains_go_through_kvm_tune(tmp_path):
    """tuning_domains on libvirt's test driver (2 cells of 16 CPUs): each entry reaches kvm_tune with its options
    (the test driver keeps no definition between connections, so the spreading over cells is the vm tier's)."""
    uri = write_fleet(tmp_path / "fleet.xml", 10)
    root = hosttree.build(tmp_path / "host", nodes=2)
    domains = [{"name": "vm0008", "apply": "config", "placement": "auto", "housekeeping_cpus": "0"},
               {"name": "vm0008", "apply": "config", "emulatorpin": "3",
                "numatune": {"mode": "strict", "nodeset": "1"}}]
    res = run_role(tmp_path, root, {"tuning_domains": domains, "tuning_libvirt_uri": uri, "tuning_tuned_profile": "",
                                    "tuning_libvirt_timeout": 30}, verbose=True)
    assert res.returncode == 0, res.stdout
    results = json.loads((tmp_path / "domains.json").read_text())
    first, second = results
    assert first["placement"]["cell"] in (0, 1) and first["placement"]["emulatorpin"] == "0", first
    assert "config:vcpupin[0]" in first["changes"] and first["changed"] is True
    assert second["changes"] == ["config:emulatorpin", "config:numatune"], second["changes"]
    bad = run_role(tmp_path, root, {"tuning_domains": [{"name": "vm0008", "vcpupin": [{"vcpu": 0, "cpuset": "99"}]}],
                                    "tuning_libvirt_uri": uri, "tuning_tuned_profile": ""})
    assert bad.returncode == 2 and "vcpupin[0].cpuset: host CPU(s) 99 do not exist on this host" in bad.stdout
