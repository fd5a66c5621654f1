"""XML patching, validation and the live/config/pending plan of kvm_tune, on XML literals."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.tune import _numa, _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.tune._numa import topology_from_info

DOM = """<domain type='kvm'>
  <name>web-01</name><memory unit='KiB'>1048576</memory><vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/img/web.raw'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='52:54:00:aa:bb:01'/><model type='virtio'/></interface>
  </devices>
</domain>"""
LIVE = DOM.replace("<model type='virtio'/>", "<model type='virtio'/><target dev='vnet7'/>")
TOPO = topology_from_info(["x86_64", 65536, 16, 2600, 2, 1, 4, 2])  # 2 cells x 8 CPUs


def desired(**kw):
    base = {"vcpupin": {}, "emulatorpin": None, "iothreads": None, "iothreadpin": {}, "numatune": None,
            "memory_backing": None, "disks": [], "interfaces": []}
    base.update(kw)
    return base


def test_no_change_returns_same_text():
    assert _plan.patch(DOM, desired()) == (DOM, [])


def test_cputune_patch_then_idempotent():
    want = desired(vcpupin={0: "2", 1: "3"}, emulatorpin="0-1", iothreads=2, iothreadpin={1: "4"})
    new, changes = _plan.patch(DOM, want)
    assert [_plan.describe(c) for c in changes] == [
        "iothreads", "vcpupin[0]", "vcpupin[1]", "emulatorpin", "iothreadpin[1]"]
    root = ET.fromstring(new)
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.findall("./cputune/vcpupin")] == [("0", "2"), ("1", "3")]
    assert root.find("./cputune/emulatorpin").get("cpuset") == "0-1" and root.findtext("iothreads") == "2"
    assert _plan.patch(new, want) == (new, [])


def test_cpuset_compared_as_sets():
    xml = DOM.replace("<os>", "<cputune><vcpupin vcpu='0' cpuset='2-3'/></cputune><os>")
    assert _plan.patch(xml, desired(vcpupin={0: "3,2"}))[1] == []


def test_numatune_memory_backing_disk_interface():
    want = desired(
        numatune={"mode": "strict", "nodeset": "1"},
        memory_backing={"hugepages": True, "page_size_kib": 2048, "nosharepages": True, "locked": None},
        disks=[{"target": "vda", "cache": "none", "io": "native", "discard": "unmap", "error_policy": "stop",
                "rerror_policy": "stop", "iothread": None, "iotune": {"total_iops_sec": 500}}],
        interfaces=[{"mac": "52:54:00:AA:BB:01", "target": None, "queues": 2,
                     "bandwidth": {"inbound": {"average": 1000, "peak": 2000, "burst": 64}, "outbound": None}}],
    )
    new, changes = _plan.patch(DOM, want)
    kinds = [c["kind"] for c in changes]
    assert kinds == ["numatune", "memory_backing", "disk_driver", "iotune", "queues", "bandwidth"]
    root = ET.fromstring(new)
    assert root.find("./numatune/memory").attrib == {"mode": "strict", "nodeset": "1"}
    assert root.find("./memoryBacking/hugepages/page").attrib == {"size": "2048", "unit": "KiB"}
    assert root.find("./memoryBacking/nosharepages") is not None
    drv = root.find("./devices/disk/driver")
    driver_attrs = (drv.get("cache"), drv.get("io"), drv.get("discard"), drv.get("error_policy"))
    assert driver_attrs == ("none", "native", "unmap", "stop")
    assert root.findtext("./devices/disk/iotune/total_iops_sec") == "500"
    assert root.find("./devices/interface/driver").get("queues") == "2"
    inbound = root.find("./devices/interface/bandwidth/inbound").attrib
    assert inbound == {"average": "1000", "peak": "2000", "burst": "64"}
    assert _plan.patch(new, want) == (new, [])
    # removing: hugepages false, iotune 0, inbound average 0
    undo = desired(memory_backing={"hugepages": False, "page_size_kib": 2048, "nosharepages": False, "locked": None},
                   disks=[{"target": "vda", "iotune": {"total_iops_sec": 0}}],
                   interfaces=[{"mac": "52:54:00:aa:bb:01", "bandwidth": {"inbound": {"average": 0}}}])
    back, changes = _plan.patch(new, undo)
    root = ET.fromstring(back)
    assert root.find("memoryBacking") is None and root.find("./devices/disk/iotune") is None
    assert root.find("./devices/interface/bandwidth") is None


@pytest.mark.parametrize("want,match", [
    (desired(vcpupin={0: "99"}), r"^vcpupin\[vcpu=0\]\.cpuset: host CPU\(s\) 99 do not exist"),
    (desired(vcpupin={5: "1"}), r"^vcpupin\[vcpu=5\]\.vcpu: vCPU 5 does not exist: domain web-01 has 2"),
    (desired(vcpupin={0: "1-"}), r"^vcpupin\[vcpu=0\]\.cpuset: '1-' is not a valid cpuset"),
    (desired(emulatorpin="0,x"), r"^emulatorpin: '0,x' is not a valid cpuset"),
    (desired(numatune={"mode": "strict", "nodeset": "3"}), r"^numatune\.nodeset: NUMA node\(s\) 3 do not exist"),
    (desired(memory_backing={"hugepages": True, "page_size_kib": 2048}), r"^memory_backing\.hugepages: .*only 0 KiB"),
    (desired(disks=[{"target": "sdz"}]), r"^disks\[0\]\.target: domain web-01 has no disk 'sdz' \(disks: vda\)"),
    (desired(disks=[{"target": "vda", "iothread": 1}]), r"^disks\[0\]\.iothread: iothread 1 does not exist"),
    (desired(disks=[{"target": "vda", "iotune": {"bogus": 1}}]), r"^disks\[0\]\.iotune: unknown key 'bogus'"),
    (desired(interfaces=[{"mac": "52:54:00:00:00:99"}]), r"^interfaces\[0\]\.mac: .*no interface with MAC"),
    (desired(interfaces=[{"target": "vnet9"}]), r"^interfaces\[0\]\.target: .*no interface with target"),
    (desired(iothreads=1, iothreadpin={2: "0"}),
     r"^iothreads\.pin\[iothread=2\]\.iothread: iothread 2 is not within 1\.\.1"),
])
def test_validation_names_the_option(want, match):
    with pytest.raises(_plan.TuneError, match=match):
        _plan.validate(want, _plan.domain_facts(DOM), TOPO, _plan.domain_facts(LIVE))


def test_validation_hugepages_reserved_ok():
    topo = _numa.topology_from_info(["x86_64", 65536, 16, 2600, 2, 1, 4, 2])
    topo["cells"][1]["pages"][2048] = 512
    mb = {"hugepages": True, "page_size_kib": 2048}
    _plan.validate(desired(memory_backing=mb), _plan.domain_facts(DOM), topo)
    with pytest.raises(_plan.TuneError, match="on NUMA node"):
        _plan.validate(desired(memory_backing=mb, numatune={"mode": "strict", "nodeset": "0"}),
                       _plan.domain_facts(DOM), topo)


def test_user_interface_refuses_queues_and_bandwidth():
    facts = _plan.domain_facts(DOM)
    with pytest.raises(_plan.TuneError, match=r"^interfaces\[0\]\.queues: .*type 'user'"):
        _plan.validate(desired(interfaces=[{"mac": "52:54:00:aa:bb:01", "queues": 2}]), facts, TOPO)
    with pytest.raises(_plan.TuneError, match=r"^interfaces\[0\]\.bandwidth: .*type 'user'"):
        _plan.validate(desired(interfaces=[{"mac": "52:54:00:aa:bb:01", "bandwidth": {"inbound": {"average": 1}}}]),
                       facts, TOPO)
    eth = _plan.domain_facts(DOM.replace("type='user'", "type='ethernet'"))
    _plan.validate(desired(interfaces=[{"mac": "52:54:00:aa:bb:01", "queues": 2,
                                        "bandwidth": {"inbound": {"average": 1}}}]), eth, TOPO)


def test_interface_by_target_uses_live_xml():
    facts, live = _plan.domain_facts(DOM), _plan.domain_facts(LIVE)
    assert _plan.find_interface({"target": "vnet7"}, facts, live) == "52:54:00:aa:bb:01"


def test_plan_running_both_live_and_pending():
    want = desired(vcpupin={0: "2"}, disks=[{"target": "vda", "cache": "none", "iotune": {"total_iops_sec": 9}}],
                   numatune={"mode": "strict", "nodeset": "0"})
    out = _plan.plan(want, DOM, LIVE, "both")
    assert out["changed"] and out["config_xml"] is not None
    assert [_plan.describe(c) for c in out["live_changes"]] == ["vcpupin[0]", "iotune[vda]"]
    assert out["pending_restart"] == ["disk_driver[vda]", "numatune"]
    assert "<!-- config: vcpupin[0] -->" in out["diff"]["after"] and "<!-- live: vcpupin[0] -->" in out["diff"]["after"]
    # the persistent definition now has it all, the live domain has what can change live: no change, still pending
    live_want = desired(vcpupin={0: "2"}, disks=[{"target": "vda", "iotune": {"total_iops_sec": 9}}])
    live_after = _plan.patch(LIVE, live_want)[0]
    again = _plan.plan(want, out["config_xml"], live_after, "both")
    assert not again["changed"] and again["pending_restart"] == ["disk_driver[vda]", "numatune"]
    assert again["diff"] == {"before": "", "after": ""}


def test_plan_live_refuses_boot_only_changes_and_shutoff():
    with pytest.raises(_plan.TuneError, match=r"^apply=live: disk_driver\[vda\] cannot be changed"):
        _plan.plan(desired(disks=[{"target": "vda", "cache": "none"}]), DOM, LIVE, "live")
    with pytest.raises(_plan.TuneError, match=r"^apply=live: the domain is not running"):
        _plan.plan(desired(vcpupin={0: "1"}), DOM, None, "live")


def test_plan_config_only_on_running_reports_pending():
    out = _plan.plan(desired(vcpupin={0: "1"}), DOM, LIVE, "config")
    assert out["live_changes"] == [] and out["pending_restart"] == ["vcpupin[0]"] and out["changed"]


def test_numatune_nodeset_change_is_live_in_strict_mode():
    xml = LIVE.replace("<os>", "<numatune><memory mode='strict' nodeset='0'/></numatune><os>")
    out = _plan.plan(desired(numatune={"mode": None, "nodeset": "1"}), xml, xml, "both")
    assert [c["kind"] for c in out["live_changes"]] == ["numatune"] and out["pending_restart"] == []
    out = _plan.plan(desired(numatune={"mode": "interleave", "nodeset": "1"}), xml, xml, "both")
    assert out["pending_restart"] == ["numatune"]


def test_iothreads_with_ids():
    xml = DOM.replace("<os>", "<iothreads>3</iothreads><iothreadids><iothread id='1'/><iothread id='2'/>"
                              "<iothread id='3'/></iothreadids><os>")
    new, changes = _plan.patch(xml, desired(iothreads=1))
    assert changes[0]["detail"] == {"add": [], "remove": [2, 3], "count": 1}
    assert [t.get("id") for t in ET.fromstring(new).findall("./iothreadids/iothread")] == ["1"]


def test_bad_xml():
    with pytest.raises(_plan.TuneError, match="cannot parse"):
        _plan.patch("<domain", desired())


BRIDGED = LIVE.replace("<interface type='user'>", "<interface type='bridge'><source bridge='br0'/>")
LIMIT = {"inbound": {"average": 1000, "peak": 2000, "burst": 64}, "outbound": {"average": 500}}


def test_plan_bandwidth_is_live_where_the_host_can():
    want = desired(interfaces=[{"mac": "52:54:00:aa:bb:01", "bandwidth": LIMIT}])
    out = _plan.plan(want, BRIDGED, BRIDGED, "both")
    assert [_plan.describe(c) for c in out["live_changes"]] == ["bandwidth[52:54:00:aa:bb:01]"]
    assert out["pending_restart"] == [] and out["not_live"] == {}
    assert out["live_changes"][0]["detail"]["values"] == {
        "inbound.average": 1000, "inbound.peak": 2000, "inbound.burst": 64,
        "outbound.average": 500, "outbound.peak": 0, "outbound.burst": 0}
    # the host says no: config + pending_restart, with the reason; apply=live refuses naming it
    why = {"bandwidth[52:54:00:aa:bb:01]": "this host's kernel lacks sch_sfq"}
    out = _plan.plan(want, BRIDGED, BRIDGED, "both", why_not_live=lambda c: why.get(_plan.describe(c)))
    assert out["live_changes"] == [] and out["pending_restart"] == ["bandwidth[52:54:00:aa:bb:01]"]
    assert out["not_live"] == why and out["config_xml"] is not None
    with pytest.raises(_plan.TuneError, match=r"^apply=live: bandwidth\[52:54:00:aa:bb:01\] cannot be changed on "
                                              r"a running domain \(bandwidth\[52:54:00:aa:bb:01\]: this host's "
                                              r"kernel lacks sch_sfq\)"):
        _plan.plan(want, BRIDGED, BRIDGED, "live", why_not_live=lambda c: why.get(_plan.describe(c)))
    # config only: the host is not asked, nothing is "not live"
    out = _plan.plan(want, BRIDGED, BRIDGED, "config", why_not_live=lambda c: why.get(_plan.describe(c)))
    assert out["not_live"] == {} and out["pending_restart"] == ["bandwidth[52:54:00:aa:bb:01]"]


# -- issue 17: bounded before expanded, host-bounded counts, duplicates, libvirt-only conflicts --------------------

@pytest.mark.parametrize("want,match", [
    # a typo'd range is refused by the host's bound before anything is expanded (16 CPUs: limit 16)
    (desired(vcpupin={0: "0-99999999"}), r"^vcpupin\[vcpu=0\]\.cpuset: host CPU\(s\) 99999999 do not exist on this "
                                         r"host \(host CPUs: 0-15\)"),
    (desired(emulatorpin="0-" + "9" * 5000), r"^emulatorpin: host CPU\(s\) 9{5000} do not exist"),
    (desired(iothreads=2, iothreadpin={1: "0-16"}), r"^iothreads\.pin\[iothread=1\]\.cpuset: host CPU\(s\) 16 do not"),
    (desired(numatune={"mode": "strict", "nodeset": "0-4294967296"}), r"^numatune\.nodeset: NUMA node\(s\) 4294967296 "
                                                                      r"do not exist on this host \(nodes: 0-1\)"),
    (desired(iothreads=10**9), r"^iothreads\.count: 1000000000 I/O threads is more than this host's 16 CPUs"),
    (desired(memory_backing={"hugepages": True, "page_size_kib": 0}), r"^memory_backing\.page_size: must be a power"),
    (desired(disks=[{"target": "vda", "cache": "none"}, {"target": "vda", "io": "native"}]),
     r"^disks\[1\]\.target: 'vda' is also given in disks\[0\]"),
    (desired(interfaces=[{"mac": "52:54:00:AA:BB:01"}, {"target": "vnet7"}]),
     r"^interfaces\[1\]: is the same interface \(52:54:00:aa:bb:01\) as interfaces\[0\]"),
    (desired(disks=[{"target": "vda", "iotune": {"total_bytes_sec": 1, "read_bytes_sec": 2}}]),
     r"^disks\[0\]\.iotune\.read_bytes_sec: cannot be set together with disks\[0\]\.iotune\.total_bytes_sec"),
])
def test_validation_bounds_and_duplicates(want, match):
    with pytest.raises(_plan.TuneError, match=match):
        _plan.validate(want, _plan.domain_facts(DOM), TOPO, _plan.domain_facts(LIVE))


def test_validation_uses_the_paths_the_module_passes():
    want = desired(vcpupin={1: "99"}, where={"vcpupin": {1: "vcpupin[3]"}})
    with pytest.raises(_plan.TuneError, match=r"^vcpupin\[3\]\.cpuset: host CPU\(s\) 99 do not exist"):
        _plan.validate(want, _plan.domain_facts(DOM), TOPO)


def test_page_size_must_be_one_the_host_has():
    topo = _numa.topology_from_info(["x86_64", 65536, 16, 2600, 2, 1, 4, 2])
    for cell in topo["cells"]:
        cell["pages"].update({2048: 512, 1048576: 0})
    mb = {"hugepages": True, "page_size_kib": 4096}
    with pytest.raises(_plan.TuneError, match=r"^memory_backing\.page_size: 4096 KiB is not a hugepage size of this "
                                              r"host \(sizes: 2048, 1048576 KiB\)"):
        _plan.validate(desired(memory_backing=mb), _plan.domain_facts(DOM), topo)
    _plan.validate(desired(memory_backing=dict(mb, page_size_kib=2048)), _plan.domain_facts(DOM), topo)


def test_iothreads_a_domain_already_has_are_kept():
    vcpu = "<vcpu placement='static'>2</vcpu>"
    many = DOM.replace(vcpu, vcpu + "<iothreads>20</iothreads>")
    _plan.validate(desired(iothreads=20), _plan.domain_facts(many), TOPO)     # 20 > 16 host CPUs, but already there
    with pytest.raises(_plan.TuneError, match=r"at most 20\)"):
        _plan.validate(desired(iothreads=21), _plan.domain_facts(many), TOPO)
