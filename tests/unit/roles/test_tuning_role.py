"""kvmops.fleet.tuning through ansible-playbook, on fixture trees of hosts: module_defaults give kvm_host_tune its
private ``_root``, so the role's own tasks run unchanged and nothing of this machine is read or written. The
variables reach the modules as the role maps them (unchanged = left alone), check mode predicts the real run, a
second run changes nothing, bad values are refused naming the role variable, tuning_domains go through kvm_tune
(libvirt's test driver), cpu-partitioning gets its isolated cores. Every case runs in ONE ansible-playbook run
(each a block whose result or failure is recorded), as each run costs a second. Real writes to a kernel are the
vm tier's (tests/integration/vm/test_tuning.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Run every case in one playbook -> {case id: {"failed", "msg", "host": kvm_host_tune's result,
    "domains": kvm_tune's results}} plus the trees."""
    tmp = tmp_path_factory.mktemp("tuning-role")
    trees = {"a": hosttree.build(tmp / "a", nodes=2), "b": hosttree.build(tmp / "b", nodes=2),
             "c": hosttree.build(tmp / "c", nodes=2, cpus=8)}
    tuned = hosttree.tuned_adm(trees["c"])
    uri = write_fleet(tmp / "fleet.xml", 10)
    domains = [{"name": "vm0008", "apply": "config", "placement": "auto", "housekeeping_cpus": "0"},
               {"name": "vm0008", "apply": "config", "emulatorpin": "3",
                "numatune": {"mode": "strict", "nodeset": "1"}}]
    cpu = {"tuning_tuned_profile": "cpu-partitioning", "tuning_tuned_isolated_cores": "2-7",
           "tuning_tuned_required": True}
    specs = [
        ("check", "a", VARS, True),
        ("real", "a", VARS, False),
        ("again", "a", VARS, False),
        ("bad_node", "b", {"tuning_hugepages": [{"node": 5, "count": 1}]}, False),
        ("domains", "b", {"tuning_domains": domains, "tuning_libvirt_uri": uri, "tuning_tuned_profile": "",
                          "tuning_libvirt_timeout": 30}, False),
        ("bad_domain", "b", {"tuning_domains": [{"name": "vm0008", "vcpupin": [{"vcpu": 0, "cpuset": "99"}]}],
                             "tuning_libvirt_uri": uri, "tuning_tuned_profile": ""}, False),
        ("cpu", "c", cpu, False),
        ("bad_cpu", "c", dict(cpu, tuning_tuned_isolated_cores="0-7"), False),
    ]
    record = ("{{ kvmops_cases | combine({'%s': {'failed': %s, 'msg': %s, 'host': __tuning_host | default({}), "
              "'domains': (__tuning_domains | default({})).results | default([])}}) }}")
    tasks = [{"name": "Start", "ansible.builtin.set_fact": {"kvmops_cases": {}}}]
    for case, tree, variables, check in specs:
        include = {"name": "kvmops.fleet.tuning"}
        if check:
            include["apply"] = {"check_mode": True, "diff": True}
        tasks.append({
            "name": f"Case {case}",
            "module_defaults": {"kvmops.fleet.kvm_host_tune": {"_root": str(trees[tree])}},
            "block": [
                {"name": "Forget the last case",
                 "ansible.builtin.set_fact": {"__tuning_host": {}, "__tuning_domains": {}}},
                {"name": f"Role ({case})", "ansible.builtin.include_role": include, "vars": variables},
                {"name": "Passed", "ansible.builtin.set_fact": {"kvmops_cases": record % (case, "false", "''")}},
            ],
            "rescue": [{"name": "Failed", "ansible.builtin.set_fact": {
                "kvmops_cases": record % (case, "true", "ansible_failed_result.msg | default('')")}}],
        })
    write = {"content": "{{ kvmops_cases | to_json }}", "dest": str(tmp / "cases.json"), "mode": "0644"}
    tasks.append({"name": "Write", "ansible.builtin.copy": write})
    (tmp / "play.yml").write_text(yaml.safe_dump([{"name": "Tuning", "hosts": "localhost", "gather_facts": False,
                                                   "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    res = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", str(tmp / "play.yml")],
                         env=env, cwd=tmp, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads((tmp / "cases.json").read_text())
    assert list(out) == [c[0] for c in specs], res.stdout
    return {"cases": out, "trees": trees, "tuned": tuned, "stdout": res.stdout}


def value(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text().strip()


def test_defaults_equal_the_spec():
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    declared = {k: v.get("default") for entry in specs.values() for k, v in entry["options"].items()
                if not v.get("required")}
    assert declared == defaults
    # a required variable has no default: argument_specs makes the caller give it
    assert not {k for entry in specs.values() for k, v in entry["options"].items() if v.get("required")} & set(defaults)


def test_the_role_tunes_a_two_node_tree(cases):
    c, root = cases["cases"], cases["trees"]["a"]
    check, real, again = c["check"], c["real"], c["again"]
    assert not check["failed"] and not real["failed"] and not again["failed"], (check["msg"], real["msg"])
    # check mode predicted the real run exactly, so it wrote nothing (the real run found the same to do)
    assert check["host"]["changed"] is True and check["host"]["changes"] == real["host"]["changes"]
    assert "sysctl vm.swappiness = 10" in real["host"]["changes"]
    assert again["host"]["changed"] is False and again["host"]["changes"] == []
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
    assert "hugepagesz=1G hugepages=1:1" in real["host"]["reboot_required"][0]
    assert real["host"]["not_done"] == ["tuned_profile: tuned-adm is not installed"]  # the default profile, skipped
    assert "hugepagesz=1G hugepages=1:1" in cases["stdout"]  # and printed


def test_a_bad_value_names_the_role_variable(cases):
    c = cases["cases"]
    assert c["bad_node"]["failed"]
    assert c["bad_node"]["msg"].startswith("tuning_hugepages[0].node: NUMA node 5 does not exist on this host (nodes: "
                                           "0,1)"), c["bad_node"]["msg"]
    assert value(cases["trees"]["b"], "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages") == "0"
    assert c["bad_cpu"]["failed"]
    assert c["bad_cpu"]["msg"].startswith("tuning_tuned_isolated_cores: 0-7 leaves no CPU for the host")


def test_domains_go_through_kvm_tune(cases):
    """tuning_domains on libvirt's test driver (2 cells of 16 CPUs): each entry reaches kvm_tune with its options
    (the test driver keeps no definition between connections, so the spreading over cells is the vm tier's)."""
    c = cases["cases"]
    assert not c["domains"]["failed"], c["domains"]["msg"]
    first, second = c["domains"]["domains"]
    assert first["placement"]["cell"] in (0, 1) and first["placement"]["emulatorpin"] == "0", first
    assert "config:vcpupin[0]" in first["changes"] and first["changed"] is True
    assert second["changes"] == ["config:emulatorpin", "config:numatune"], second["changes"]
    assert c["bad_domain"]["failed"]
    assert "vcpupin[0].cpuset: host CPU(s) 99 do not exist on this host" in json.dumps(c["bad_domain"]), c["bad_domain"]


def test_cpu_partitioning_through_the_role(cases):
    c, root = cases["cases"], cases["trees"]["c"]
    assert not c["cpu"]["failed"], c["cpu"]["msg"]
    assert value(root, "/etc/tuned/cpu-partitioning-variables.conf") == "isolated_cores=2-7"
    assert value(cases["tuned"], "active") == "cpu-partitioning"
    assert "isolated cores 2-7 take effect at the next boot" in c["cpu"]["host"]["reboot_required"][0]
