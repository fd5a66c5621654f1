"""Issue 17, table-driven over every module's RULES: each option is checked against its declared range before
any work, and a bad value fails the task naming the option, with no traceback, no change, no forked libvirt
worker and no libvirt write call.

The cases are generated from each module's argument spec and RULES table (plugins/module_utils/common/
_validate.py): an option without a rule fails ``test_every_option_has_a_rule``, a rule kind without bad values
here fails ``bad_values``, so a new option or a new kind of rule cannot skip these tests. Values that only the
host or the domain can refuse (a CPU the host lacks, a vCPU the domain lacks) are the HOST_BOUND table; a live
step failing after the definition was written is the partial-apply tests at the end.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import libvirt
import pytest

import ansible_collections.kvmops.fleet.plugins.modules as mods
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _libvirt_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _validate as v
from ansible_collections.kvmops.fleet.plugins.modules import (
    cluster_facts,
    drbd_facts,
    drbd_resource,
    kvm_benchmark,
    kvm_bridge_apply,
    kvm_host_facts,
    kvm_host_tune,
    kvm_libvirt_network,
    kvm_pause_facts,
    kvm_pause_risk,
    kvm_resume,
    kvm_tune,
)
from kvmlab.testdriver import write_fleet

# write_fleet's mix per 10: vm0000-0005 running, vm0006-0007 paused, vm0008 shut off, vm0009 crashed;
# 2 NUMA cells, 32 host CPUs; every domain 1 vCPU, 64 MiB, disk vda, one bridge interface
MAC8 = "52:54:00:00:00:08"
# one valid value for every option of every module (the base each bad value is put into); "URI" is replaced
BASE = {
    kvm_tune: {
        "domain": "vm0008", "uri": "URI", "timeout": 10, "apply": "config", "housekeeping_cpus": "0-1",
        "vcpupin": [{"vcpu": 0, "cpuset": "2-3"}], "emulatorpin": "0-1",
        "iothreads": {"count": 2, "pin": [{"iothread": 1, "cpuset": "4"}]},
        "numatune": {"mode": "strict", "nodeset": "0"},
        "memory_backing": {"hugepages": False, "page_size": 2048},
        "disks": [{"target": "vda", "cache": "none", "iothread": 1, "iotune": {"total_iops_sec": 100}}],
        "interfaces": [{"mac": MAC8, "target": None, "queues": 2,
                        "bandwidth": {"inbound": {"average": 100, "peak": 200, "burst": 10},
                                      "outbound": {"average": 100, "peak": 200, "burst": 10}}}],
    },
    kvm_resume: {"name": "vm0006", "uri": "URI", "timeout": 10, "min_free": "5%", "override": ["unknown"],
                 "settle": 0},
    kvm_pause_facts: {"uri": "URI", "timeout": 10, "domains": ["vm0006"], "include_running": False},
    kvm_pause_risk: {"uri": "URI", "timeout": 10, "domains": ["vm0000"], "checks": ["storage", "config"]},
    kvm_host_facts: {"images_dir": "/", "min_free_gib": 0, "qemu_user": "root", "virt_host_validate": False,
                     "timeout": 60},
    kvm_bridge_apply: {
        "step": "apply", "var_name": "bridges", "rollback_timeout": 60, "settle_timeout": 30,
        "probe_targets": ["192.0.2.1"], "probe_names": ["example.org"], "reason": "test",
        "bridges": [{"name": "br0", "ports": ["eth1"], "addresses": ["192.0.2.10/24"], "gateway4": "192.0.2.1",
                     "gateway6": "2001:db8::1", "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1", "metric": 10}],
                     "dns": ["192.0.2.53"], "mtu": 1500, "forward_delay": 4}],
        "bonds": [{"name": "bond0", "interfaces": ["eth2", "eth3"], "mode": "active-backup", "miimon": 100,
                   "primary": "eth2", "mtu": 1500}],
        "vlans": [{"name": "vlan10", "id": 10, "link": "bond0", "mtu": 1500}],
    },
    kvm_host_tune: {
        "hugepages": [{"node": 0, "size": "2M", "count": 16}], "numa_balancing": False,
        "sysctls": {"vm.swappiness": 10},
        "io_schedulers": [{"name": "vd*", "rotational": False, "transport": "virtio", "scheduler": "none",
                           "read_ahead_kb": 128, "nr_requests": 64}],
        "tuned_profile": "virtual-host", "tuned_isolated_cores": "1", "tuned_missing": "skip",
        "ksm": {"run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": True},
        "thp": {"enabled": "madvise", "defrag": "defer"}, "var_prefix": None, "_root": "/nonexistent-kvmops-root",
    },
    kvm_benchmark: {
        "label": "before", "device": None, "directory": "/nonexistent-kvmops-dir", "file_size": "256M", "runtime": 5,
        "repeats": 4, "jobs": ["randread-4k-qd1", "cpu"], "direct": True, "stress_workers": 0, "force": False,
        "var_prefix": "",
    },
    kvm_libvirt_network: {
        "networks": [{"name": "br0", "bridge": "br0", "autostart": True, "state": "present"}], "force": False,
        "uri": "URI", "timeout": 10, "var_prefix": None,
    },
    drbd_facts: {"resources": ["r0"], "timeout": 10},
    cluster_facts: {"timeout": 10},
    drbd_resource: {
        "name": "r0", "host": "hva", "step": "present", "port": 7789, "protocol": "C",
        "secret": "0123456789abcdef", "cram_hmac_alg": "sha256", "sync_rate": "100M", "net_timeout": 60,
        "connect_int": 10, "ping_int": 10, "disk_timeout": 0, "fencing": "dont-care", "handlers": {},
        "quorum": "off", "on_no_quorum": "suspend-io", "initial_primary": "hva", "force": False, "version": "auto",
        "config_dir": "/nonexistent-kvmops-dir", "timeout": 120, "var_name": "dr_drbd_resources[0]",
        # one node: the Unique rule's case appends a twin of the first (the peer is not needed before the work)
        "nodes": [{"host": "hva", "hostname": "hva", "address": "192.0.2.1", "disk": "/dev/disk/by-id/x",
                   "minor": 0, "node_id": 0, "diskless": False}],
    },
}
# the first work each module does after its option checks: never reached with a bad option
WORK = {kvm_tune: "read_host", kvm_resume: "collect", kvm_pause_facts: "collect", kvm_pause_risk: "collect",
        kvm_host_facts: "gather",
        kvm_bridge_apply: "_provider", kvm_host_tune: "read_host", kvm_benchmark: "run",
        kvm_libvirt_network: "read_networks", drbd_facts: "gather", drbd_resource: "run",
        cluster_facts: "gather"}
# modules that touch no libvirt: their base run stops at WORK (a host's network is not this machine's to read)
NO_LIBVIRT = (kvm_bridge_apply, kvm_host_tune, kvm_benchmark, drbd_facts, drbd_resource, cluster_facts)
# cpusets libvirt refuses (or would only refuse at apply time) and sizes that used to be expanded
CPUSETS = ["0-99999999", "16384", "0-" + "9" * 5000, "1_0", "+1", "\u0661", "0x1", "3-1", "", " ", "0,,1", "^0",
           "0-3,^1-2", "1.5", "1 2", "99999999999999999999", "0-2," * 30000]
# rules with a grammar of their own: their bad values, by option path
CUSTOM = {
    "min_free": ["9" * 400, "9" * 60 + "T", "nan%", "inf", "-1", "150%", "", "1e3", "x" * 65],
    "hugepages": [[{"node": 0, "size": "2M", "count": 1}, {"node": 0, "size": "2M", "count": 2}],
                  [{"size": "1G", "count": 1}, {"node": 1, "size": "1G", "count": 2}]],
    "sysctls": [{"bogus": 1}, {"kernel.numa_balancing": 0}, {"vm.swappiness": 201}, {"vm.swappiness": -1},
                {"vm.dirty_bytes": 2**64}, {"vm.swappiness": True}, {"vm.swappiness": "60"}, {"vm.swappiness": 1.5},
                {"vm.dirty_ratio": 10, "vm.dirty_bytes": 4096}, "vm.swappiness=10"],
    "io_schedulers": [[{"name": "vd*", "scheduler": "none"}, {"name": "vd*", "scheduler": "bfq"}],
                      [{"name": "vd*"}]],
    "file_size": ["15M", "65G", "16383K", "256", "1T", "abc", "", "-1M", "256MB", "1.5G", "9" * 400 + "M", 256],
    "jobs": [[], ["cpu", "seqread-1m", "cpu"]],
    "var_prefix": ["Tuning_", "a-b", "x" * 33, " ", "tuning.benchmark_"],
    "secret": ["short", "x" * 65, 'has "quote" 0123456789', "blank in it 0123456789"],
    "sync_rate": ["100MB", "5G", "0K", "", "fast", "1.5M"],
    "handlers": [{"bogus": "/bin/true"}, {"fence-peer": 'x"y'}, {"fence-peer": ""}, {"fence-peer": "a\nb"}],
    "config_dir": ["relative/dir", "etc/drbd.d"],
    "networks": [[{"name": "a", "bridge": "br0"}, {"name": "a", "bridge": "br1"}],
                 [{"name": "a", "bridge": "br0"}, {"name": "b", "bridge": "br0"}],
                 [{"name": "a"}]],
}


def bad_values(path: str, rule) -> list:
    """Values each kind of rule must refuse; a new kind of rule fails here until it says what they are."""
    if isinstance(rule, v.Int):
        out = [rule.low - 1, rule.high + 1, 2**64, -(2**63), True]
        return out + ([rule.low * 3] if rule.power_of_two else [])
    if isinstance(rule, v.Float):
        return [float("nan"), float("inf"), float("-inf"), rule.high * 2, 1e308,
                rule.low if rule.low_open else rule.low - 1]
    if isinstance(rule, v.Cpuset):
        return CPUSETS
    if isinstance(rule, v.Text):
        return ["", "   ", "a\x00b", "x" * 5000] + (["not valid /"] if rule.pattern else [])
    if isinstance(rule, v.Keys):
        key = rule.allowed[0]
        return [{"bogus": 1}, {key: -1}, {key: 2**64}, {key: "100"}, {key: True}, {key: 1.5}]
    if isinstance(rule, v.Custom):
        assert path in CUSTOM, f"{path}: a Custom rule needs its bad values in CUSTOM"
        return CUSTOM[path]
    if isinstance(rule, v.Unique):
        return ["duplicate"]
    raise AssertionError(f"{path}: no bad values for rules of kind {type(rule).__name__}: add them to bad_values()")


def _steps(path: str) -> list:
    return path.replace("[]", ".[]").split(".")


def put(args: dict, path: str, value) -> str:
    """Put ``value`` at ``path`` (``[]`` = the list's first element) -> the path as messages show it."""
    parts = _steps(path)
    node = args
    for part in parts[:-1]:
        node = node[0] if part == "[]" else node[part]
    last = parts[-1]
    if last == "[]":
        node[0] = value
    else:
        assert last in node, f"BASE has no value for {path}"
        node[last] = value
    return path.replace("[]", "[0]")


def cases():
    for module in BASE:
        for path, rule in module.RULES.items():
            for i, value in enumerate(bad_values(path, rule)):
                yield pytest.param(module, path, value, id=f"{module.__name__.rsplit('.', 1)[1]}:{path}#{i}")


@pytest.fixture(scope="module")
def fleet_uri(tmp_path_factory):
    return write_fleet(tmp_path_factory.mktemp("fleet") / "f.xml", 10)


def base_args(module, uri) -> dict:
    args = copy.deepcopy(BASE[module])
    if args.get("uri") == "URI":
        args["uri"] = uri
    return args


@pytest.mark.parametrize("module", list(BASE), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_option_has_a_rule(module):
    spec = module.ARGUMENT_SPEC
    assert v.unruled(spec, module.RULES) == ([], []), "options without a rule, rules without an option"
    # and the walk really sees the numbers: every int and float option of the spec is among them
    numeric = {p for p, opt in v.option_paths(spec) if opt.get("type") in ("int", "float")}
    assert numeric <= set(module.RULES)


@pytest.mark.parametrize("module", list(BASE), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_the_base_is_valid_and_the_spy_sees_writes(module, fleet_uri, run_module, libvirt_writes, tmp_path):
    """The base every bad value goes into passes (so each failure below is the bad value's), and the write spy
    sees the writes a real run makes (so its silence below means something)."""
    if module in NO_LIBVIRT:
        class Reached(Exception):
            pass

        def reached(*_a, **_kw):
            raise Reached

        with pytest.MonkeyPatch.context() as mp, pytest.raises(Reached):
            mp.setattr(module, WORK[module], reached)
            run_module(module, base_args(module, fleet_uri))
        return
    out = run_module(module, base_args(module, fleet_uri))
    assert not out.get("failed"), out.get("msg")
    expected = {kvm_tune: ["defineXML"], kvm_resume: ["resume"], kvm_pause_facts: [], kvm_pause_risk: [],
                kvm_host_facts: [],
                kvm_libvirt_network: ["networkDefineXML", "create", "setAutostart"]}[module]
    assert libvirt_writes() == expected


def test_every_module_is_in_the_table():
    """A new module joins BASE (and so every test above) or this fails."""
    names = {f.stem for d in mods.__path__ for f in Path(d).glob("*.py") if not f.stem.startswith("_")}
    assert names
    assert names == {m.__name__.rsplit(".", 1)[1] for m in BASE}


@pytest.mark.parametrize("module,path,value", list(cases()))
def test_bad_value_fails_before_any_work(module, path, value, fleet_uri, run_module, monkeypatch, libvirt_writes,
                                         forked_children):
    def no_work(*_a, **_kw):
        raise AssertionError(f"{WORK[module]} ran despite a bad {path}")

    monkeypatch.setattr(module, WORK[module], no_work)
    args = base_args(module, fleet_uri)
    rule = module.RULES[path]
    if isinstance(rule, v.Unique):
        parts = _steps(path)
        node = args
        for part in parts:
            node = node[0] if part == "[]" else node[part]
        twin = copy.deepcopy(node[0])
        twin.update({k: twin[k].upper() for k in ("mac",) if twin.get(k)})  # MACs compare case-insensitively
        node.append(twin)
        shown = path.replace("[]", "[0]") + "[1]."
    else:
        shown = put(args, path, value)
    start = time.monotonic()
    out = run_module(module, args)
    if isinstance(value, str) and "\x00" in value and "embedded null character" in out.get("msg", ""):
        # ansible-core 2.20 and later refuse a NUL in any argument themselves, in AnsibleModule() (logging the
        # invocation to syslog), before the module's code runs: failed, no "changed" key (false), no work
        assert out.get("failed") is True and out.get("changed", False) is False, out
    else:
        assert out.get("failed") is True and out["changed"] is False, out
        assert out["msg"].startswith((shown + ":", shown + ".", shown)), out["msg"]
    assert list(forked_children) == [] and libvirt_writes() == []
    assert time.monotonic() - start < 2.0, "refusing a value must not take long"


# ---- values only the host or the domain can refuse: after reading them, before any change ----------------------

HOST_BOUND = [
    ({"vcpupin": [{"vcpu": 0, "cpuset": "0-16383"}]},
     "vcpupin[0].cpuset: host CPU(s) 16383 do not exist on this host (host CPUs: 0-31)"),
    ({"vcpupin": [{"vcpu": 0, "cpuset": "1"}, {"vcpu": 1, "cpuset": "2"}]},
     "vcpupin[1].vcpu: vCPU 1 does not exist: domain vm0008 has 1 vCPU(s)"),
    ({"emulatorpin": "32"}, "emulatorpin: host CPU(s) 32 do not exist on this host (host CPUs: 0-31)"),
    ({"placement": "auto", "housekeeping_cpus": "0-16383"},
     "housekeeping_cpus: host CPU(s) 16383 do not exist on this host (host CPUs: 0-31)"),
    ({"iothreads": {"count": 33}}, "iothreads.count: 33 I/O threads is more than this host's 32 CPUs (at most 32)"),
    ({"iothreads": {"count": 2, "pin": [{"iothread": 3, "cpuset": "1"}]}},
     "iothreads.pin[0].iothread: iothread 3 is not within 1..2"),
    ({"iothreads": {"pin": [{"iothread": 1, "cpuset": "1"}]}}, "iothreads.pin[0].iothread: iothread 1 is not within"),
    ({"numatune": {"nodeset": "0-16383"}},
     "numatune.nodeset: NUMA node(s) 16383 do not exist on this host (nodes: 0-1)"),
    ({"disks": [{"target": "vda", "iothread": 1}]}, "disks[0].iothread: iothread 1 does not exist (the domain has 0)"),
    ({"disks": [{"target": "vdq"}]}, "disks[0].target: domain vm0008 has no disk 'vdq'"),
    ({"disks": [{"target": "vda", "iotune": {"total_bytes_sec": 5, "read_bytes_sec": 5}}]},
     "disks[0].iotune.read_bytes_sec: cannot be set together with disks[0].iotune.total_bytes_sec"),
    ({"disks": [{"target": "vda", "iotune": {"total_iops_sec": 10, "total_iops_sec_max": 5}}]},
     "disks[0].iotune.total_iops_sec_max: 5 is below disks[0].iotune.total_iops_sec (10)"),
    ({"interfaces": [{"mac": "52:54:00:00:00:99"}]}, "interfaces[0].mac: domain vm0008 has no interface with MAC"),
    ({"memory_backing": {"hugepages": True, "page_size": 1048576}},
     "memory_backing.hugepages: the domain needs 65536 KiB of 1048576 KiB hugepages"),
]


@pytest.mark.parametrize("args,msg", HOST_BOUND, ids=[m.split(":")[0] for _a, m in HOST_BOUND])
@pytest.mark.parametrize("check_mode", [False, True], ids=["real", "check"])
def test_host_bound_values_fail_before_any_change(args, msg, check_mode, fleet_uri, run_module, libvirt_writes):
    out = run_module(kvm_tune, dict(args, uri=fleet_uri, domain="vm0008", _ansible_check_mode=check_mode))
    assert out.get("failed") is True and out["changed"] is False, out
    assert out["msg"].startswith(msg), out["msg"]
    assert libvirt_writes() == []


# ---- partial apply: the definition was written, then a live step failed ---------------------------------------


def test_live_step_refused_after_the_definition_was_written(fleet_uri, run_module, libvirt_writes):
    # libvirt's test driver refuses a live pinVcpuFlags: the definition is already written by then
    out = run_module(kvm_tune, {"uri": fleet_uri, "domain": "vm0000", "vcpupin": [{"vcpu": 0, "cpuset": "3"}]})
    assert out["failed"] is True and out["changed"] is True
    assert out["changes"] == ["config:vcpupin[0]"]
    assert out["msg"].startswith("applying the tuning: live vcpupin[0]: libvirt refused: ")
    assert ("Partly applied: persistent definition; not applied: live vcpupin[0]; the persistent definition keeps "
            "the new tuning (not restored)") in out["msg"]
    assert libvirt_writes() == ["defineXML", "pinVcpuFlags"]


def test_live_step_failing_after_other_live_steps(fleet_uri, run_module, libvirt_writes, monkeypatch):
    def refuse(self, *_a, **_kw):
        raise libvirt.libvirtError("spy: pinEmulator refused")

    monkeypatch.setattr(libvirt.virDomain, "pinEmulator", refuse)
    out = run_module(kvm_tune, {"uri": fleet_uri, "domain": "vm0000", "iothreads": {"count": 2}, "emulatorpin": "1"})
    assert out["failed"] is True and out["changed"] is True
    assert out["changes"] == ["config:iothreads", "config:emulatorpin", "live:iothreads"]
    assert out["msg"].startswith("applying the tuning: live emulatorpin: libvirt refused: spy: pinEmulator refused. ")
    assert ("Partly applied: persistent definition, live iothreads: added I/O thread 1, live iothreads: added I/O "
            "thread 2, live iothreads; not applied: live emulatorpin") in out["msg"]
    assert libvirt_writes() == ["defineXML", "addIOThread", "addIOThread"]


def test_first_step_refused_is_no_change(fleet_uri, run_module, libvirt_writes):
    out = run_module(kvm_tune, {"uri": fleet_uri, "domain": "vm0000", "apply": "live",
                                "vcpupin": [{"vcpu": 0, "cpuset": "3"}]})
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith("applying the tuning: live vcpupin[0]: libvirt refused: ")
    assert "Partly applied" not in out["msg"]
    assert libvirt_writes() == ["pinVcpuFlags"]


def test_live_step_hanging_after_the_definition_was_written(fleet_uri, run_module, libvirt_writes, monkeypatch):
    def hang(self, *_a, **_kw):
        time.sleep(60)

    monkeypatch.setattr(libvirt.virDomain, "pinEmulator", hang)
    out = run_module(kvm_tune, {"uri": fleet_uri, "domain": "vm0000", "emulatorpin": "1", "timeout": 1})
    assert out["failed"] is True and out["changed"] is True and out["changes"] == ["config:emulatorpin"]
    assert out["msg"].startswith("applying the tuning: libvirt did not answer within 1 s (timeout). Partly applied: "
                                 "persistent definition; not applied: live emulatorpin")


def test_common_timeout_bound_is_one_number():
    # _libvirt_io cannot import _validate (the host collector ships it alone): the two must agree
    assert _libvirt_io.TIMEOUT_MAX == v.TIMEOUT_MAX == v.LIBVIRT_COMMON_RULES["timeout"].high


@pytest.mark.parametrize("uri", ["", "  "])
def test_empty_uri_is_refused_by_the_connection_helper_too(uri):
    # the host collector connects without the module's option checks
    with pytest.raises(_libvirt_io.LibvirtConnectError, match=r"^uri: must not be empty"):
        _libvirt_io.open_connection(uri)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1, 0, 3601, True, "10"])
def test_check_timeout_refuses_what_no_clock_can_wait(timeout):
    with pytest.raises(_libvirt_io.LibvirtOptionError, match=r"^timeout: must be a"):
        _libvirt_io.check_timeout(timeout)
