"""kvm_host_tune end to end through main() against fixture trees (its private ``_root``): apply, read back,
idempotence, check mode that predicts the real run, diff, refusals before any change, files that override a
knob, a partial failure, tuned, 1G pages. Nothing here touches this machine's own sysctls, schedulers or
hugepages: every path is under the tree, tools are looked up under it only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_io
from ansible_collections.kvmops.fleet.plugins.modules import kvm_host_tune
from kvmlab import hosttree

FULL = {
    "hugepages": [{"node": 0, "count": 64}, {"node": 1, "count": 32}],
    "numa_balancing": False,
    "sysctls": {"vm.swappiness": 10, "vm.dirty_ratio": 15},
    "io_schedulers": [{"name": "vd*", "transport": "virtio", "scheduler": "none", "read_ahead_kb": 256,
                       "nr_requests": 64}],
    "ksm": {"run": "stop", "pages_to_scan": 200, "merge_across_nodes": False},
    "thp": {"enabled": "never", "defrag": "defer"},
}


@pytest.fixture(autouse=True)
def kernel(monkeypatch):
    monkeypatch.setattr(_tune_io, "write_value", hosttree.kernel_write)


@pytest.fixture
def tree(tmp_path):
    return hosttree.build(tmp_path / "host", nodes=2)


def run(run_module, root, check=False, diff=False, **args):
    return run_module(kvm_host_tune, dict(args, _root=str(root), _ansible_check_mode=check, _ansible_diff=diff))


def read(root, path):
    return (Path(root) / path.lstrip("/")).read_text().strip()


def snapshot(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = Path(p).read_text() if not os.path.islink(p) else os.readlink(p)
        for d in _dirs:
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                out[p] = os.readlink(p)
    return out


def test_apply_reads_back_and_persists(run_module, tree):
    out = run(run_module, tree, **FULL)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert read(tree, "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages") == "64"
    assert read(tree, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages") == "32"
    assert read(tree, "/proc/sys/kernel/numa_balancing") == "0"
    assert read(tree, "/proc/sys/vm/swappiness") == "10"
    assert read(tree, "/sys/block/vda/queue/scheduler") == "mq-deadline [none]"
    assert read(tree, "/sys/block/vdb/queue/read_ahead_kb") == "256"
    assert read(tree, "/sys/block/vdb/queue/nr_requests") == "64"
    assert read(tree, "/sys/kernel/mm/ksm/pages_to_scan") == "200"
    assert read(tree, "/sys/kernel/mm/ksm/merge_across_nodes") == "0"
    assert read(tree, "/sys/kernel/mm/ksm/run") == "0"
    assert read(tree, "/sys/kernel/mm/transparent_hugepage/enabled") == "always madvise [never]"
    assert read(tree, "/sys/kernel/mm/transparent_hugepage/defrag") == "always [defer] defer+madvise madvise never"
    sysctl = read(tree, "/etc/sysctl.d/90-kvmops-fleet.conf")
    assert sysctl.splitlines()[1:] == ["kernel.numa_balancing = 0", "vm.dirty_ratio = 15", "vm.swappiness = 10"]
    udev = read(tree, "/etc/udev/rules.d/90-kvmops-fleet-io.rules")
    assert ('KERNEL=="vd*", DRIVERS=="virtio_blk", ATTR{queue/scheduler}="none", ATTR{queue/read_ahead_kb}="256", '
            'ATTR{queue/nr_requests}="64"') in udev
    unit = read(tree, "/etc/systemd/system/kvmops-host-tune.service")
    node0 = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
    assert f"ExecStart=/bin/sh -c 'echo 64 > {node0}'" in unit
    assert "ExecStart=/bin/sh -c 'echo never > /sys/kernel/mm/transparent_hugepage/enabled'" in unit
    # at boot nothing is merged yet: merge_across_nodes is written before run, with no unmerge
    assert unit.index("merge_across_nodes") < unit.index("echo 0 > /sys/kernel/mm/ksm/run")
    assert "echo 2 >" not in unit
    assert os.readlink(tree / "etc/systemd/system/multi-user.target.wants/kvmops-host-tune.service") == (
        "/etc/systemd/system/kvmops-host-tune.service")
    assert out["knobs"]["hugepages node1 2M"] == "32" and out["knobs"]["vda queue/scheduler"] == "none"
    assert out["reboot_required"] == [] and out["not_done"] == []
    assert read(tree, "/sys/block/loop0/queue/scheduler") == "[none]"  # virtual devices untouched


def test_second_run_changes_nothing(run_module, tree):
    assert run(run_module, tree, **FULL)["changed"] is True
    before = snapshot(tree)
    out = run(run_module, tree, **FULL)
    assert out["changed"] is False and out["changes"] == [] and not out.get("failed")
    assert snapshot(tree) == before


def test_check_mode_predicts_the_real_run_and_changes_nothing(run_module, tree):
    before = snapshot(tree)
    check = run(run_module, tree, check=True, diff=True, **FULL)
    assert snapshot(tree) == before
    real = run(run_module, tree, diff=True, **FULL)
    assert check["changed"] is real["changed"] is True
    assert check["changes"] == real["changes"]
    assert check["diff"] == real["diff"]
    live = check["diff"][-1]
    assert live["before_header"] == "live values"
    assert "vm.swappiness = 60\n" in live["before"] and "sysctl vm.swappiness = 10\n" in live["after"]
    files = [d["after_header"] for d in check["diff"][:-1]]
    assert files == ["/etc/sysctl.d/90-kvmops-fleet.conf", "/etc/udev/rules.d/90-kvmops-fleet-io.rules",
                     "/etc/systemd/system/kvmops-host-tune.service"]
    again = run(run_module, tree, check=True, diff=True, **FULL)
    assert again["changed"] is False and again["diff"] == []


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_hugepages_on_every_node(run_module, tmp_path, nodes):
    root = hosttree.build(tmp_path / "h", nodes=nodes, node_mem_mb=2048)
    out = run(run_module, root, hugepages=[{"count": 16}, {"size": "1G", "count": 1, "node": 0}])
    assert not out.get("failed"), out.get("msg")
    for n in range(nodes):
        assert read(root, f"/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages") == "16"
    assert read(root, "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages") == "1"
    assert out["reboot_required"] == [
        "hugepages 1G: set now, but kept across a reboot only by the kernel command line: add 'hugepagesz=1G "
        "hugepages=0:1' (GRUB_CMDLINE_LINUX) and reboot when convenient"
    ]
    unit = read(root, "/etc/systemd/system/kvmops-host-tune.service")
    assert unit.count("ExecStart=") == nodes and "1048576kB" not in unit


def test_1g_pages_on_the_command_line_need_no_reboot(run_module, tmp_path):
    root = hosttree.build(tmp_path / "h", nodes=2, cmdline="ro quiet hugepagesz=1G hugepages=0:1,1:1")
    out = run(run_module, root, hugepages=[{"size": "1G", "count": 1}])
    assert out["reboot_required"] == [] and not out.get("failed")


HOST_BOUND = [
    ({"hugepages": [{"node": 2, "count": 1}]},
     "hugepages[0].node: NUMA node 2 does not exist on this host (nodes: 0,1)"),
    ({"hugepages": [{"node": 1, "count": 400}, {"node": 1, "size": "1G", "count": 1}]},
     "hugepages[1].count: 1824 MiB of hugepages on node 1 is more than the node's memory (1024 MiB)"),
    ({"hugepages": [{"count": 513}]}, "hugepages[0].count: 1026 MiB of hugepages on node 0 is more than"),
    ({"io_schedulers": [{"name": "vd*", "scheduler": "bfq"}]},
     "io_schedulers[0].scheduler: vda does not offer 'bfq' (it offers mq-deadline, none)"),
    ({"tuned_profile": "virtual-host"},
     "tuned_profile: tuned-adm is not installed on this host (install tuned, or set tuned_missing=skip)"),
]


@pytest.mark.parametrize("args,msg", HOST_BOUND, ids=[m.split(":")[0] for _a, m in HOST_BOUND])
@pytest.mark.parametrize("check", [False, True], ids=["real", "check"])
def test_host_bound_values_fail_before_any_change(run_module, tree, args, msg, check):
    before = snapshot(tree)
    out = run(run_module, tree, check=check, **dict(FULL, **args))
    assert out.get("failed") is True and out["changed"] is False, out
    assert out["msg"].startswith(msg), out["msg"]
    assert snapshot(tree) == before


def test_kernel_without_the_knobs(run_module, tmp_path):
    root = hosttree.build(tmp_path / "h", nodes=1, ksm=False, thp=False, numa_balancing=False, pdpe1gb=False)
    for args, msg in [
        ({"ksm": {"run": "merge"}}, "ksm: this kernel has no KSM (/sys/kernel/mm/ksm is missing)"),
        ({"thp": {"enabled": "never"}}, "thp: this kernel has no transparent hugepages"),
        ({"numa_balancing": True}, "numa_balancing: this kernel has no automatic NUMA balancing"),
        ({"hugepages": [{"size": "1G", "count": 1}]}, "hugepages[0].size: 1G pages need a CPU with the pdpe1gb flag"),
    ]:
        out = run(run_module, root, **args)
        assert out.get("failed") and out["changed"] is False and out["msg"].startswith(msg), out
    # turning balancing off where the kernel has none is nothing to do
    assert run(run_module, root, numa_balancing=False)["changed"] is False


def test_overriding_files_fail_verify_naming_them(run_module, tree):
    (tree / "etc/sysctl.d/99-zz-local.conf").write_text("# local\nvm.swappiness = 30\n")
    (tree / "etc/sysctl.d/10-early.conf").write_text("vm.dirty_ratio = 40\n")  # read before ours: harmless
    (tree / "etc/udev/rules.d/99-sched.rules").write_text(
        'ACTION=="add|change", KERNEL=="vd[a-z]", ATTR{queue/scheduler}="mq-deadline"\n'
        'ACTION=="add|change", KERNEL=="sd*", ATTR{queue/scheduler}="bfq"\n'  # another disk: harmless
    )
    (tree / "etc/udev/rules.d/60-early.rules").write_text('KERNEL=="vd*", ATTR{queue/scheduler}="mq-deadline"\n')
    check = run(run_module, tree, check=True, **FULL)
    out = run(run_module, tree, **FULL)
    for res in (check, out):
        assert res["failed"] is True
        msg = res["msg"]
        assert msg.startswith("verify after apply: ")
        assert ("sysctl vm.swappiness: wanted 10, actual " in msg and "but 30 after a reboot: "
                "/etc/sysctl.d/99-zz-local.conf sets it after /etc/sysctl.d/90-kvmops-fleet.conf") in msg
        assert ("vda queue/scheduler: wanted none, actual " in msg and "but mq-deadline at the next udev event or "
                "reboot: /etc/udev/rules.d/99-sched.rules sets it after /etc/udev/rules.d/90-kvmops-fleet-io.rules"
                ) in msg
        assert "vdb queue/scheduler" in msg
        assert "dirty_ratio" not in msg and "60-early" not in msg and "sda" not in msg
    assert check["changed"] is True and out["changed"] is True  # applied, then verify failed
    assert "actual 10 now" in out["msg"]
    again = run(run_module, tree, **FULL)
    assert again["failed"] is True and again["changed"] is False
    (tree / "etc/sysctl.d/99-zz-local.conf").unlink()
    (tree / "etc/udev/rules.d/99-sched.rules").unlink()
    assert not run(run_module, tree, **FULL).get("failed")


def test_sysctl_conf_is_read_last(run_module, tree):
    (tree / "etc/sysctl.conf").write_text("vm.swappiness=5\n")
    out = run(run_module, tree, sysctls={"vm.swappiness": 10})
    assert "/etc/sysctl.conf sets it after /etc/sysctl.d/90-kvmops-fleet.conf" in out["msg"]


def test_a_value_that_does_not_take_is_named(run_module, tree, monkeypatch):
    def short(path, value):  # the kernel finds fewer free pages than asked for
        if path.endswith("nr_hugepages"):
            value = str(int(value) // 2)
        hosttree.kernel_write(path, value)

    monkeypatch.setattr(_tune_io, "write_value", short)
    out = run(run_module, tree, hugepages=[{"node": 0, "count": 64}])
    assert out["failed"] is True and out["changed"] is True
    assert ("hugepages node0 2M: wanted 64, actual 32 "
            "(/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages)") in out["msg"]


def test_partial_failure_says_what_was_applied(run_module, tree, monkeypatch):
    def refuse(path, value):
        if path.endswith("nr_requests"):
            raise OSError(22, "Invalid argument")
        hosttree.kernel_write(path, value)

    monkeypatch.setattr(_tune_io, "write_value", refuse)
    out = run(run_module, tree, sysctls={"vm.swappiness": 10},
              io_schedulers=[{"name": "vda", "scheduler": "none", "nr_requests": 64}])
    assert out["failed"] is True and out["changed"] is True
    assert out["msg"].startswith("applying the host tuning: vda queue/nr_requests = 64: Invalid argument. Applied: "
                                 "wrote /etc/sysctl.d/90-kvmops-fleet.conf, wrote /etc/udev/rules.d/")
    assert ("sysctl vm.swappiness = 10, vda queue/scheduler = none; not applied: vda queue/nr_requests = 64"
            in out["msg"])
    assert out["changes"][-1] == "vda queue/scheduler = none"


def test_first_write_failing_is_no_change(run_module, tree, monkeypatch):
    def refuse(path, value):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(_tune_io, "write_value", refuse)
    monkeypatch.setattr(_tune_io, "write_file", refuse)
    out = run(run_module, tree, sysctls={"vm.swappiness": 10})
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"] == ("applying the host tuning: wrote /etc/sysctl.d/90-kvmops-fleet.conf: Permission denied; "
                          "nothing was changed")


def test_files_follow_the_options(run_module, tree):
    run(run_module, tree, **FULL)
    out = run(run_module, tree, sysctls={"vm.swappiness": 10}, numa_balancing=False)
    assert out["changed"] is True
    assert "removed /etc/udev/rules.d/90-kvmops-fleet-io.rules" in out["changes"]
    assert "disabled kvmops-host-tune.service" in out["changes"]
    assert not (tree / "etc/systemd/system/kvmops-host-tune.service").exists()
    assert not os.path.lexists(tree / "etc/systemd/system/multi-user.target.wants/kvmops-host-tune.service")
    assert out["files"] == ["/etc/sysctl.d/90-kvmops-fleet.conf"]


def test_later_entries_win_per_disk(run_module, tmp_path):
    root = hosttree.build(tmp_path / "h", nodes=1, disks=("vda", "sda", "nvme0n1"))
    out = run(run_module, root, io_schedulers=[
        {"scheduler": "mq-deadline", "read_ahead_kb": 64},
        {"rotational": True, "scheduler": "bfq"},
        {"transport": "nvme", "scheduler": "none"},
    ])
    assert not out.get("failed"), out.get("msg")
    assert read(root, "/sys/block/vda/queue/scheduler") == "[mq-deadline] none"
    assert read(root, "/sys/block/sda/queue/scheduler") == "mq-deadline kyber [bfq] none"
    assert read(root, "/sys/block/nvme0n1/queue/scheduler") == "[none] mq-deadline"
    assert all(read(root, f"/sys/block/{d}/queue/read_ahead_kb") == "64" for d in ("vda", "sda", "nvme0n1"))
    rules = read(root, "/etc/udev/rules.d/90-kvmops-fleet-io.rules")
    assert 'ATTR{queue/rotational}=="1", ATTR{queue/scheduler}="bfq"' in rules
    assert 'SUBSYSTEMS=="nvme", ATTR{queue/scheduler}="none"' in rules


def test_no_matching_disk_warns(run_module, tree, monkeypatch):
    # recorded at module.warn: where Ansible routes a warning depends on what the test process imported before
    warnings = []
    monkeypatch.setattr(kvm_host_tune.AnsibleModule, "warn", lambda _self, msg: warnings.append(msg))
    out = run(run_module, tree, io_schedulers=[{"transport": "nvme", "scheduler": "none"}])
    assert warnings == ["io_schedulers[0] matches no disk of this host now (its udev rule waits for one)"]
    assert out["changed"] is True  # the rule is written for disks added later


def test_tuned_profile(run_module, tree):
    state = hosttree.tuned_adm(tree)
    out = run(run_module, tree, tuned_profile="virtual-host")
    assert out["changes"] == ["tuned profile = virtual-host"] and not out.get("failed"), out
    assert (state / "active").read_text().strip() == "virtual-host"
    assert run(run_module, tree, tuned_profile="virtual-host")["changed"] is False
    check = run(run_module, tree, check=True, tuned_profile="balanced")
    assert check["changed"] is True and (state / "active").read_text().strip() == "virtual-host"
    out = run(run_module, tree, tuned_profile="no-such")
    assert out["failed"] and out["changed"] is False
    assert out["msg"] == ("tuned_profile: unknown profile 'no-such' (this host has: balanced, cpu-partitioning, "
                          "throughput-performance, virtual-host)")
    assert "profile no-such" not in (state / "tuned-adm.log").read_text()


def test_tuned_missing_skip(run_module, tree):
    out = run(run_module, tree, tuned_profile="virtual-host", tuned_missing="skip")
    assert out["changed"] is False and out["not_done"] == ["tuned_profile: tuned-adm is not installed"]


def test_tuned_that_does_not_take(run_module, tree):
    state = hosttree.tuned_adm(tree)
    script = tree / "usr/sbin/tuned-adm"
    script.write_text(script.read_text().replace('echo "$2" > ', "true "))  # says yes, keeps the old profile
    out = run(run_module, tree, tuned_profile="virtual-host")
    assert out["failed"] and out["changed"] is True
    assert out["msg"] == "verify after apply: tuned profile: wanted virtual-host, actual balanced"
    assert (state / "active").read_text().strip() == "balanced"


def test_ksm_merge_change_unmerges_first(run_module, tree, monkeypatch):
    (tree / "sys/kernel/mm/ksm/run").write_text("1\n")
    writes = []

    def log(path, value):
        writes.append((path.rsplit("/", 1)[1], value))
        hosttree.kernel_write(path, value)

    monkeypatch.setattr(_tune_io, "write_value", log)
    out = run(run_module, tree, ksm={"merge_across_nodes": False})
    assert not out.get("failed"), out.get("msg")
    assert writes == [("run", "2"), ("merge_across_nodes", "0"), ("run", "1")]


def test_var_prefix_names_the_role_variable(run_module, tree):
    out = run(run_module, tree, var_prefix="tuning_", hugepages=[{"node": 7, "count": 1}])
    assert out["msg"].startswith("tuning_hugepages[0].node: NUMA node 7 does not exist"), out["msg"]
    out = run(run_module, tree, var_prefix="tuning_", sysctls={"vm.swappiness": 999})
    assert out["msg"].startswith("tuning_sysctls.vm.swappiness: must be from 0 to 200"), out["msg"]
    out = run(run_module, tree, var_prefix="Bad Prefix", hugepages=[{"node": 7, "count": 1}])
    assert out["msg"].startswith("var_prefix: 'Bad Prefix' is not valid"), out["msg"]


def test_cpu_partitioning_isolated_cores(run_module, tree):
    state = hosttree.tuned_adm(tree, active="virtual-host")
    variables = tree / "etc/tuned/cpu-partitioning-variables.conf"
    variables.parent.mkdir(parents=True, exist_ok=True)
    variables.write_text("# Examples:\n# isolated_cores=2,4-7\nisolated_cores=${f:calc_isolated_cores:1}\n"
                         "no_balance_cores=\n")
    args = {"tuned_profile": "cpu-partitioning", "tuned_isolated_cores": "3,2"}
    check = run(run_module, tree, check=True, diff=True, **args)
    assert variables.read_text().count("calc_isolated_cores") == 1
    out = run(run_module, tree, diff=True, **args)
    assert not out.get("failed"), out.get("msg")
    assert check["changes"] == out["changes"] == ["wrote /etc/tuned/cpu-partitioning-variables.conf",
                                                  "tuned profile = cpu-partitioning"]
    assert variables.read_text() == "# Examples:\n# isolated_cores=2,4-7\nisolated_cores=2-3\nno_balance_cores=\n"
    assert (state / "active").read_text().strip() == "cpu-partitioning"
    reboot = ["tuned cpu-partitioning: isolated cores 2-3 take effect at the next boot (tuned puts them on the kernel "
              "command line; the kernel isolates none now)"]
    assert out["reboot_required"] == reboot
    again = run(run_module, tree, **args)
    assert again["changed"] is False and again["reboot_required"] == reboot  # not rebooted yet
    (tree / "sys/devices/system/cpu/isolated").write_text("2-3\n")  # as after the reboot
    assert run(run_module, tree, **args)["reboot_required"] == []
    # a changed set is written and the active profile applied again
    out = run(run_module, tree, tuned_profile="cpu-partitioning", tuned_isolated_cores="1-3")
    assert out["changes"] == ["wrote /etc/tuned/cpu-partitioning-variables.conf", "tuned profile = cpu-partitioning"]
    assert (state / "tuned-adm.log").read_text().splitlines().count("profile cpu-partitioning") == 2


@pytest.mark.parametrize("args,msg", [
    ({"tuned_isolated_cores": "0-3"}, "tuned_isolated_cores: 0-3 leaves no CPU for the host (host CPUs: 0-3): keep "),
    ({"tuned_isolated_cores": "2,9"}, "tuned_isolated_cores: host CPU(s) 9 do not exist on this host (host CPUs: 0-3)"),
    ({"tuned_isolated_cores": "2", "tuned_profile": "virtual-host"},
     "tuned_isolated_cores: only used with tuned_profile=cpu-partitioning"),
    ({"tuned_isolated_cores": "2", "tuned_profile": None},
     "tuned_isolated_cores: only used with tuned_profile=cpu-partitioning"),
])
def test_isolated_cores_refused(run_module, tree, args, msg):
    state = hosttree.tuned_adm(tree)
    out = run(run_module, tree, **dict({"tuned_profile": "cpu-partitioning"}, **args))
    assert out["failed"] and out["changed"] is False and out["msg"].startswith(msg), out["msg"]
    assert not (tree / "etc/tuned/cpu-partitioning-variables.conf").exists()
    log = state / "tuned-adm.log"  # refused before tuned-adm is asked anything
    assert not log.exists(), log.read_text()


def _debian_tuned(tree):
    """Debian 12's own virtual-host and throughput-performance profiles and tuned-main.conf (fixtures/tuned)."""
    src = Path(__file__).resolve().parents[1] / "module_utils" / "fixtures" / "tuned"
    for name in ("virtual-host", "throughput-performance"):
        dest = tree / "usr/lib/tuned" / name
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "tuned.conf").write_text((src / "usr/lib/tuned" / name / "tuned.conf").read_text())
    (tree / "etc/tuned").mkdir(parents=True, exist_ok=True)
    (tree / "etc/tuned/tuned-main.conf").write_text((src / "tuned-main.conf").read_text())


def test_tuned_is_started_first_and_the_declared_knobs_win(run_module, tree):
    """tuned.service disabled: it is enabled and started, the profile activated, then the knobs written; a knob
    the profile changed although it was already right is written again and not reported as a change."""
    _debian_tuned(tree)
    state = hosttree.tuned_adm(tree)
    units = hosttree.systemctl(tree)
    script = tree / "usr/sbin/tuned-adm"  # needs the daemon; the profile as tuned applies it: swappiness 10,
    script.write_text(script.read_text().replace(  # read-ahead raised
        'echo "$2" > ', f'grep -qx tuned.service {units}/active || exit 3; echo 10 > {tree}/proc/sys/vm/swappiness; '
        f'echo 4096 > {tree}/sys/block/vdb/queue/read_ahead_kb; echo "$2" > '))
    (tree / "proc/sys/vm/swappiness").write_text("7\n")
    args = {"tuned_profile": "virtual-host", "sysctls": {"vm.swappiness": 7},
            "io_schedulers": [{"name": "vdb", "read_ahead_kb": 8192}]}
    check = run(run_module, tree, check=True, **args)
    out = run(run_module, tree, **args)
    assert not out.get("failed"), out
    assert check["changes"] == out["changes"] == [
        "wrote /etc/sysctl.d/90-kvmops-fleet.conf", "wrote /etc/udev/rules.d/90-kvmops-fleet-io.rules",
        "enabled and started tuned.service", "tuned profile = virtual-host", "vdb queue/read_ahead_kb = 8192"]
    assert read(tree, "/proc/sys/vm/swappiness") == "7" and read(tree, "/sys/block/vdb/queue/read_ahead_kb") == "8192"
    assert "enable --now tuned.service" in (units / "systemctl.log").read_text().splitlines()
    assert "profile virtual-host" in (state / "tuned-adm.log").read_text().splitlines()
    again = run(run_module, tree, **args)
    assert again["changed"] is False and not again.get("failed"), again


def test_a_tuned_profile_that_overrides_a_knob_fails_naming_its_file(run_module, tree):
    """Debian's virtual-host includes throughput-performance, whose [disk] readahead=>4096 raises a smaller
    read-ahead when tuned starts (after udev at boot); its vm.swappiness=10 does not count (reapply_sysctl)."""
    _debian_tuned(tree)
    hosttree.tuned_adm(tree, active="virtual-host")
    hosttree.systemctl(tree, enabled=["tuned.service"], active=["tuned.service"])
    args = {"tuned_profile": "virtual-host", "sysctls": {"vm.swappiness": 7},
            "io_schedulers": [{"name": "vd*", "read_ahead_kb": 384}]}
    want = [f"{d} queue/read_ahead_kb: wanted 384, actual {now} now but 4096 when tuned applies profile virtual-host "
            "(at its start and after a reboot): /usr/lib/tuned/throughput-performance/tuned.conf sets "
            "[disk] readahead=>4096" for d, now in (("vda", "{}"), ("vdb", "{}"))]
    check = run(run_module, tree, check=True, **args)
    assert check["failed"] and check["msg"] == "verify after apply: " + "; ".join(w.format(128) for w in want)
    out = run(run_module, tree, **args)
    assert out["failed"] and out["msg"] == "verify after apply: " + "; ".join(w.format(384) for w in want)
    # no profile given: the one tuned applies at boot is checked when tuned.service is enabled
    (tree / "etc/tuned/active_profile").write_text("virtual-host\n")
    (tree / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    os.symlink("/lib/systemd/system/tuned.service", tree / "etc/systemd/system/multi-user.target.wants/tuned.service")
    args.pop("tuned_profile")
    assert "when tuned applies profile virtual-host" in run(run_module, tree, **args)["msg"]
    os.unlink(tree / "etc/systemd/system/multi-user.target.wants/tuned.service")
    assert not run(run_module, tree, **args).get("failed")
