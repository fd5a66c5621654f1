"""kvm_host_tune's planner (pure, on literals) and its reader (on fixture trees with 1, 2 and 4 NUMA nodes)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_io as io
from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_plan as plan
from kvmlab import hosttree


@pytest.mark.parametrize("text,active,offered", [
    ("[mq-deadline] kyber none\n", "mq-deadline", ["mq-deadline", "kyber", "none"]),
    ("always defer defer+madvise [madvise] never", "madvise", ["always", "defer", "defer+madvise", "madvise", "never"]),
    ("none\n", "none", ["none"]),
    ("", None, []),
    (None, None, []),
])
def test_parse_choice(text, active, offered):
    assert plan.parse_choice(text) == (active, offered)


@pytest.mark.parametrize("cmdline,expected", [
    ("ro quiet", {}),
    ("hugepagesz=1G hugepages=0:2,1:3", {1048576: {0: 2, 1: 3}}),
    ("default_hugepagesz=1G hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512",
     {1048576: {None: 4}, 2048: {None: 512}}),
    ("hugepages=100", {2048: {None: 100}}),
    ("hugepagesz=1024M hugepages=0:1", {1048576: {0: 1}}),
    ("hugepagesz=1G hugepages=x", {}),
])
def test_cmdline_hugepages(cmdline, expected):
    assert plan.parse_cmdline_hugepages(cmdline) == expected


@pytest.mark.parametrize("cmdline,wanted,items", [
    ("hugepagesz=1G hugepages=0:1,1:1", {0: 1, 1: 1}, 0),
    ("hugepagesz=1G hugepages=2", {0: 1, 1: 1}, 0),  # the kernel spreads an even total over the nodes
    ("hugepagesz=1G hugepages=3", {0: 2, 1: 1}, 0),
    ("hugepagesz=1G hugepages=3", {0: 1, 1: 2}, 1),
    ("hugepagesz=1G hugepages=0:1", {0: 1, 1: 1}, 1),
    ("", {0: 1}, 1),
])
def test_1g_pages_need_the_command_line(cmdline, wanted, items):
    host = {"cmdline": cmdline, "nodes": {0: {}, 1: {}}}
    assert len(plan.one_g_reboot_items({(n, 1048576): c for n, c in wanted.items()}, host)) == items


def test_config_order_masks_by_name_and_sorts_across_directories():
    files = [("/usr/lib/sysctl.d/50-default.conf", "a"), ("/etc/sysctl.d/50-default.conf", "b"),
             ("/usr/lib/sysctl.d/10-x.conf", "c"), ("/run/sysctl.d/99-z.conf", "d"), ("/etc/sysctl.conf", "e"),
             ("/elsewhere/00-no.conf", "f")]
    assert plan.config_order(files, plan.SYSCTL_DIRS, last=plan.SYSCTL_CONF) == [
        ("/usr/lib/sysctl.d/10-x.conf", "c"), ("/etc/sysctl.d/50-default.conf", "b"), ("/run/sysctl.d/99-z.conf", "d"),
        ("/etc/sysctl.conf", "e")]


def test_sysctl_overrides():
    ours = (plan.SYSCTL_FILE, "vm.swappiness = 10\nvm.dirty_ratio = 15\n")
    files = [ours, ("/etc/sysctl.d/10-a.conf", "vm.swappiness=1\n"),
             ("/usr/lib/sysctl.d/95-b.conf", "-vm/dirty_ratio = 5"),
             ("/etc/sysctl.d/99-c.conf", "; comment\n# vm.swappiness = 99\nvm.*_ratio = 7\n")]
    assert plan.sysctl_overrides(["vm.swappiness", "vm.dirty_ratio"], files) == {
        "vm.dirty_ratio": ("/etc/sysctl.d/99-c.conf", "7")}
    # a vendor file of the same name as ours is hidden by ours
    vendor = ("/usr/lib/sysctl.d/90-kvmops-fleet.conf", "vm.swappiness=1")
    assert plan.sysctl_overrides(["vm.swappiness"], [ours, vendor]) == {}


def test_udev_overrides():
    per_dev = {"vda": {"scheduler": "none", "nr_requests": 64}, "sda": {"scheduler": "bfq"}}
    files = [
        (plan.UDEV_FILE, 'KERNEL=="vd*", ATTR{queue/scheduler}="none"\n'),
        ("/etc/udev/rules.d/60-early.rules", 'ATTR{queue/scheduler}="kyber"\n'),  # read before ours
        ("/usr/lib/udev/rules.d/95-a.rules", 'KERNEL=="sd*|vd*", \\\n  ATTR{queue/scheduler}:="mq-deadline"\n'),
        ("/etc/udev/rules.d/96-b.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="none"\n'
                                         '# ATTR{queue/nr_requests}="8"\n'
                                         'ATTR{queue/scheduler}=="none", ATTR{queue/nr_requests}="64"\n'),
        ("/etc/udev/rules.d/97-c.rules", 'ATTR{queue/nr_requests}="32"\n'),
    ]
    assert plan.udev_overrides(per_dev, files) == {
        ("vda", "scheduler"): ("/usr/lib/udev/rules.d/95-a.rules", "mq-deadline"),
        ("sda", "scheduler"): ("/usr/lib/udev/rules.d/95-a.rules", "mq-deadline"),
        ("vda", "nr_requests"): ("/etc/udev/rules.d/97-c.rules", "32"),
    }


@pytest.mark.parametrize("value,msg", [
    ([{"node": 0, "count": 1}, {"node": 1, "count": 1}, {"node": 0, "size": "1G", "count": 1}], None),
    ([{"node": 0, "count": 1}, {"node": 0, "size": "2M", "count": 2}],
     "hp[1]: 2M pages for node 0 are also given in hp[0]"),
    ([{"node": 1, "count": 1}, {"count": 2}], "hp[1]: 2M pages for every node are also given in hp[0]"),
])
def test_check_hugepages(value, msg):
    if msg is None:
        plan.check_hugepages(value, "hp")
    else:
        with pytest.raises(plan.OptionValueError, match=r"^" + msg.replace("[", r"\[").replace("]", r"\]")):
            plan.check_hugepages(value, "hp")


def test_check_io_schedulers_and_sysctls():
    ok = [{"name": "vd*", "scheduler": "none"}, {"name": "vd*", "rotational": True, "scheduler": "bfq"}]
    plan.check_io_schedulers(ok, "io")
    with pytest.raises(plan.OptionValueError, match=r"^io\[1\]: matches the same devices as io\[0\]"):
        plan.check_io_schedulers([{"name": "sd*", "read_ahead_kb": 1}, {"name": "sd*", "nr_requests": 8}], "io")
    with pytest.raises(plan.OptionValueError, match=r"^io\[0\]: sets nothing"):
        plan.check_io_schedulers([{"name": "sd*"}], "io")
    plan.check_sysctls({"vm.swappiness": 0, "vm.dirty_bytes": 2**63 - 1}, "s")
    with pytest.raises(plan.OptionValueError, match=r"^s: unknown key 'kernel.numa_balancing' \(use numa_balancing\)"):
        plan.check_sysctls({"kernel.numa_balancing": 0}, "s")
    with pytest.raises(plan.OptionValueError, match=r"^s.vm.dirty_background_bytes: cannot be set together with"):
        plan.check_sysctls({"vm.dirty_background_ratio": 5, "vm.dirty_background_bytes": 5}, "s")


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_read_host_and_plan_on_trees(tmp_path, nodes):
    root = hosttree.build(tmp_path / "h", nodes=nodes, node_mem_mb=512, disks=("vda", "sda", "nvme0n1"))
    host = io.read_host(str(root), ["vm.swappiness"])
    assert sorted(host["nodes"]) == list(range(nodes))
    assert host["nodes"][nodes - 1] == {"mem_kb": 512 * 1024, "hugepages": {2048: 0, 1048576: 0}}
    assert host["devices"]["sda"] == {"scheduler": "bfq", "schedulers": ["mq-deadline", "kyber", "bfq", "none"],
                                      "rotational": True, "transport": "scsi", "read_ahead_kb": 128,
                                      "nr_requests": 256}
    assert {d["transport"] for d in host["devices"].values()} == {"virtio", "scsi", "nvme"}
    assert "loop0" not in host["devices"]
    assert host["sysctl"] == {"vm.swappiness": "60", "kernel.numa_balancing": "1"}
    assert host["ksm"]["run"] == "0" and host["thp"]["enabled"] == "madvise"
    assert host["pdpe1gb"] is True and host["wants"] is False
    # every node can hold 256 pages of 2 MiB (512 MiB), not one more
    result = plan.plan({"hugepages": [{"node": None, "size": "2M", "count": 256}]}, host)
    assert [c[0] for c in result["live"]] == [f"hugepages node{n} 2M" for n in range(nodes)]
    with pytest.raises(plan.HostTuneError, match=r"^hugepages\[0\].count: 514 MiB of hugepages on node 0 is more"):
        plan.plan({"hugepages": [{"node": None, "size": "2M", "count": 257}]}, host)
    with pytest.raises(plan.HostTuneError, match=rf"^hugepages\[0\].node: NUMA node {nodes} does not exist"):
        plan.plan({"hugepages": [{"node": nodes, "size": "2M", "count": 1}]}, host)


def test_ksm_unmerges_before_merge_across_nodes_and_restores_run():
    host = {"nodes": {}, "pdpe1gb": False, "cmdline": "", "devices": {}, "thp": None, "sysctl": {},
            "ksm": {"run": "1", "pages_to_scan": "100", "sleep_millisecs": "20", "merge_across_nodes": "1"},
            "files": {}, "wants": False, "sysctl_files": [], "udev_files": []}
    live = plan.plan({"ksm": {"merge_across_nodes": False, "pages_to_scan": 50}}, host)["live"]
    assert [(k, a) for k, _p, _b, a in live] == [("ksm pages_to_scan", "50"), ("ksm run", "2"),
                                                 ("ksm merge_across_nodes", "0"), ("ksm run", "1")]
    live = plan.plan({"ksm": {"merge_across_nodes": False, "run": "stop"}}, host)["live"]
    assert [(k, a) for k, _p, _b, a in live] == [("ksm run", "2"), ("ksm merge_across_nodes", "0"), ("ksm run", "0")]


def test_tools_are_found_under_the_root_only(tmp_path):
    assert io.find_tool(str(tmp_path), "sh") is None
    tool = tmp_path / "usr/sbin/udevadm"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    assert io.find_tool(str(tmp_path), "udevadm") is None  # not executable
    tool.chmod(0o755)
    assert io.find_tool(str(tmp_path), "udevadm") == str(tool)


def test_write_file_is_atomic_and_world_readable(tmp_path):
    path = tmp_path / "etc/sysctl.d/x.conf"
    io.write_file(str(path), "a = 1\n")
    assert path.read_text() == "a = 1\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["x.conf"]


@pytest.mark.parametrize("current,expected", [
    (None, "isolated_cores=2-3\n"),
    ("# c\nisolated_cores=1\nno_balance_cores=\n", "# c\nisolated_cores=2-3\nno_balance_cores=\n"),
    ("# isolated_cores=5\n isolated_cores = 7\nisolated_cores=8\n", "# isolated_cores=5\nisolated_cores=2-3\n"),
])
def test_render_tuned_vars(current, expected):
    assert plan.render_tuned_vars(current, "2-3") == expected


def test_plan_isolated_reads_the_kernel_s_isolated_cpus():
    host = {"cpus": [0, 1, 2, 3], "cpu_isolated": "2-3", "tuned_vars": "isolated_cores=2-3\n"}
    assert plan.plan_isolated("2,3", "cpu-partitioning", host) == {
        "cpus": [2, 3], "text": "isolated_cores=2-3\n", "reboot": []}
    assert plan.plan_isolated("1-2", "cpu-partitioning", host)["reboot"] == [
        "tuned cpu-partitioning: isolated cores 1-2 take effect at the next boot (tuned puts them on the kernel "
        "command line; the kernel isolates 2-3 now)"]
    with pytest.raises(plan.HostTuneError, match=r"^tuned_isolated_cores: host CPU\(s\) 4 do not exist on this host"):
        plan.plan_isolated("1,4-99", "cpu-partitioning", host)


# ---- tuned profiles that override a knob ------------------------------------------------------------------------

TUNED = os.path.join(os.path.dirname(__file__), "fixtures", "tuned")


def _debian(path):
    """Debian 12's own virtual-host chain (fixtures/tuned) at its installed paths."""
    try:
        with open(os.path.join(TUNED, path.lstrip("/")), encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def test_parse_tuned_conf():
    text = "# c\n[main]\ninclude = a, b\n[disk]\nreadahead=>4096\n; x\n[sysctl]\nvm.swappiness = 10\norphan\n"
    assert plan.parse_tuned_conf(text) == [("main", {"include": "a, b"}), ("disk", {"readahead": ">4096"}),
                                           ("sysctl", {"vm.swappiness": "10"})]


def test_debian_virtual_host_chain():
    """virtual-host includes throughput-performance; the aarch64/ThunderX sections do not apply on x86_64."""
    settings = plan.tuned_profile_settings(["virtual-host"], _debian, "x86_64", "model name : Intel Xeon\n")
    tp = "/usr/lib/tuned/throughput-performance/tuned.conf"
    vh = "/usr/lib/tuned/virtual-host/tuned.conf"
    assert settings["disk"] == {"type": "disk", "options": {"readahead": (">4096", tp)}}
    assert settings["sysctl"]["options"]["vm.dirty_background_ratio"] == ("5", vh)  # the including profile wins
    assert settings["sysctl"]["options"]["vm.swappiness"] == ("10", tp)
    assert "vm.thunderx" not in settings and "sysctl.thunderx" not in settings
    on_arm = plan.tuned_profile_settings(["virtual-host"], _debian, "aarch64", "CPU part\t: 0x0af\n")
    assert on_arm["vm.thunderx"]["options"] == {"transparent_hugepages": ("never", tp)}
    assert on_arm["sysctl.thunderx"]["type"] == "sysctl"


def test_etc_profile_hides_the_packaged_one_and_includes_stop():
    files = {
        "/etc/tuned/mine/tuned.conf": "[main]\ninclude=mine\n[disk]\nelevator=none\n",  # includes itself
        "/usr/lib/tuned/mine/tuned.conf": "[disk]\nelevator=bfq\n",
        "/etc/tuned/vars/tuned.conf": "[main]\ninclude=${f:virt_check:a:b}\n[sysctl]\nvm.swappiness=${x}\n",
    }
    settings = plan.tuned_profile_settings(["mine", "vars", "missing"], files.get)
    assert settings == {"disk": {"type": "disk", "options": {"elevator": ("none", "/etc/tuned/mine/tuned.conf")}},
                        "sysctl": {"type": "sysctl", "options": {}}}


WANTED = [("sysctl vm.swappiness", "/proc/sys/vm/swappiness", "7"), ("vdb queue/read_ahead_kb", "", "384"),
          ("vdb queue/scheduler", "", "none")]
PER_DEV = {"vdb": {"read_ahead_kb": 384, "scheduler": "none"}, "sda": {"read_ahead_kb": 8192}}


@pytest.mark.parametrize("opts, reapply, expected", [
    ({"disk": {"readahead": ">4096"}}, True, [("vdb queue/read_ahead_kb", "4096", "[disk] readahead=>4096")]),
    ({"disk": {"readahead": "8192 s"}}, True, [
        ("sda queue/read_ahead_kb", "4096", "[disk] readahead=8192 s"),
        ("vdb queue/read_ahead_kb", "4096", "[disk] readahead=8192 s"),
    ]),
    ({"disk": {"readahead": "384"}}, True, [("sda queue/read_ahead_kb", "384", "[disk] readahead=384")]),
    ({"disk": {"readahead": ">4096", "devices": "sd*"}}, True, []),
    ({"disk": {"readahead": ">4096", "devices": "!vdb"}}, True, []),
    ({"disk": {"elevator": "mq-deadline", "devices": "vd*,sd*"}}, True,
     [("vdb queue/scheduler", "mq-deadline", "[disk] elevator=mq-deadline")]),
    ({"disk": {"elevator": "none"}}, True, []),
    ({"sysctl": {"vm.swappiness": "10"}}, True, []),  # tuned applies the sysctl.d files again after its own
    ({"sysctl": {"vm.swappiness": "10"}}, False, [("sysctl vm.swappiness", "10", "[sysctl] vm.swappiness=10")]),
    ({"sysctl": {"vm.swappiness": ">5"}}, False, []),
    ({"sysctl": {"vm.swappiness": ">50"}}, False, [("sysctl vm.swappiness", "50", "[sysctl] vm.swappiness=>50")]),
    ({"sysfs": {"/sys/block/vd*/queue/read_ahead_kb": "64"}}, True, []),  # no path in WANTED's knobs
])
def test_tuned_overrides(opts, reapply, expected):
    settings = {s: {"type": s, "options": {k: (v, "/etc/tuned/p/tuned.conf") for k, v in o.items()}}
                for s, o in opts.items()}
    out = plan.tuned_overrides(settings, PER_DEV, WANTED, reapply)
    assert [(k, v, spec) for k, v, path, spec in out] == expected
    assert all(path == "/etc/tuned/p/tuned.conf" for _k, _v, path, _s in out)


def test_tuned_sysfs_glob_over_a_queue_knob():
    settings = {"my_sysfs": {"type": "sysfs", "options": {"/sys/block/vd*/queue/nr_requests": ("32", "/f")}}}
    wanted = [("vdb queue/nr_requests", "/sys/block/vdb/queue/nr_requests", "64"),
              ("ksm run", "/sys/kernel/mm/ksm/run", "0")]
    assert plan.tuned_overrides(settings, {}, wanted, True) == [
        ("vdb queue/nr_requests", "32", "/f", "[my_sysfs] /sys/block/vd*/queue/nr_requests=32")]


def test_tuned_reads_reapply_and_boot_profiles(tmp_path):
    root = tmp_path
    assert io.tuned_enabled_profiles(str(root)) == []
    (root / "etc/tuned").mkdir(parents=True)
    (root / "etc/tuned/active_profile").write_text("virtual-host\n")
    assert io.tuned_enabled_profiles(str(root)) == []  # not enabled: tuned applies nothing at boot
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    os.symlink("/lib/systemd/system/tuned.service", root / plan.TUNED_WANTS_LINK.lstrip("/"))
    assert io.tuned_enabled_profiles(str(root)) == ["virtual-host"]
    assert io.tuned_profiles_read(str(root), [])[1] is True  # no tuned-main.conf: tuned's default
    with open(os.path.join(TUNED, "tuned-main.conf"), encoding="utf-8") as fh:
        main = fh.read()
    (root / "etc/tuned/tuned-main.conf").write_text(main)
    assert io.tuned_profiles_read(str(root), [])[1] is True
    (root / "etc/tuned/tuned-main.conf").write_text(main.replace("reapply_sysctl = 1", "reapply_sysctl = 0"))
    assert io.tuned_profiles_read(str(root), [])[1] is False
