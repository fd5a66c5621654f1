"""vmlab's planning logic without booting anything (fast; no root, no QEMU)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.fleet import (
    NET_CMDLINE,
    Fleet,
    FleetSpec,
    LinkSpec,
    SharedDiskSpec,
    VmlabError,
    VMSpec,
    _numa_argv,
    _size_bytes,
)
from vmlab.fleets import HV2, PROVIDERS
from vmlab.image import OPTIONAL_UNITS, BaseImage, ImageSpec
from vmlab.inventory import inventory_data
from vmlab.pool import Pool
from vmlab.variants import DEFAULT_VARIANT, NET_PROVIDERS, VARIANTS, variant_spec

pytestmark = pytest.mark.vm


def test_image_key_follows_its_inputs():
    base = ImageSpec()
    assert base.key() == ImageSpec().key()
    assert ImageSpec(extra_packages=("tcpdump",)).key() != base.key()
    assert ImageSpec(suite="trixie").key() != base.key()
    assert ImageSpec(size="4G").key() != base.key()
    assert base.key().startswith("bookworm-")


def test_variants_are_package_lists_with_their_own_key(monkeypatch):
    monkeypatch.delenv("VMLAB_EXTRA_PACKAGES", raising=False)
    assert variant_spec("base").key() == ImageSpec.from_env().key()
    hv = variant_spec(DEFAULT_VARIANT)
    assert hv.key() != variant_spec("base").key()
    assert set(VARIANTS[DEFAULT_VARIANT]) <= set(hv.all_packages())
    assert hv.packages == ImageSpec().packages  # the base list itself is unchanged
    # one image carries every provider a VM can choose, and every provider's service is off unless chosen
    assert set(NET_PROVIDERS.values()) <= set(hv.all_packages())
    assert {"networking.service", "NetworkManager.service", "corosync.service", "pacemaker.service"} <= \
        set(OPTIONAL_UNITS)
    with pytest.raises(ValueError, match="unknown vmlab image variant 'nope'"):
        variant_spec("nope")


def test_image_spec_from_env(monkeypatch):
    monkeypatch.setenv("VMLAB_EXTRA_PACKAGES", "tcpdump, ethtool")
    spec = ImageSpec.from_env(("corosync",))
    assert spec.extra_packages == ("corosync", "ethtool", "tcpdump")
    assert {"corosync", "linux-image-amd64", "openssh-server"} <= set(spec.all_packages())


def planned(spec: FleetSpec, tmp_path: Path) -> Fleet:
    f = Fleet(spec, BaseImage(tmp_path / "img"), run_dir=tmp_path / "run1")
    f._plan()
    return f


def test_plan_numbers_nics_per_vm_and_addresses_per_link(tmp_path):
    spec = FleetSpec(
        vms=[VMSpec("n1", disks=["1G", "64M"]), VMSpec("n2"), VMSpec("n3", disks=[])],
        links=[LinkSpec("lan"), LinkSpec("ring2", members=["n1", "n3"], subnet="192.168.77.0/24"),
               LinkSpec("raw", addressed=False)],
    )
    f = planned(spec, tmp_path)
    assert [n.iface for n in f["n1"].nics] == ["eth1", "eth2", "eth3"]
    assert [(n.link, n.iface) for n in f["n2"].nics] == [("lan", "eth1"), ("raw", "eth2")]
    assert f["n3"].addr("ring2") == "192.168.77.13"
    assert f["n2"].addr("lan") == "10.213.1.12"
    assert f["n1"].nic("raw").address is None
    macs = [n.mac for vm in f for n in vm.nics]
    taps = [n.tap for vm in f for n in vm.nics]
    assert len(set(macs)) == len(macs) and len(set(taps)) == len(taps)
    assert all(len(t) <= 15 for t in taps)
    assert [(d.dev, d.by_id) for d in f["n1"].disks] == [
        ("/dev/vdb", "/dev/disk/by-id/virtio-vmlab-disk1"), ("/dev/vdc", "/dev/disk/by-id/virtio-vmlab-disk2")]
    assert f["n3"].disks == []


def test_inventory_and_setup_script(tmp_path):
    f = planned(FleetSpec.simple(2, links=("lan", "repl")), tmp_path)
    f.run_dir.mkdir()
    (f.run_dir / "id_ed25519").write_text("PRIVATE\n")
    (f.run_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA test\n")
    script = f._setup_script(f["vmb"])
    assert "ssh-ed25519 AAAA test" in script and "hostname vmb" in script
    assert "Address=10.213.2.12/24" in script and "10.213.1.11 vma" in script
    inv = inventory_data(f)["all"]
    assert inv["vars"]["ansible_host"] == "127.0.0.1"
    assert inv["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"
    assert "StrictHostKeyChecking=no" in inv["vars"]["ansible_ssh_common_args"]
    vma = inv["children"]["vmlab"]["hosts"]["vma"]
    assert vma["vmlab_links"]["repl"] == {"iface": "eth2", "mac": "52:54:00:02:01:01",
                                          "address": "10.213.2.11", "prefix": 24, "subnet": "10.213.2.0/24"}
    assert set(inv["children"]["vmlab_link_repl"]["hosts"]) == {"vma", "vmb"}


def test_spec_validation_and_sizes():
    with pytest.raises(VmlabError):
        FleetSpec([VMSpec("a"), VMSpec("a")]).validate()
    with pytest.raises(VmlabError):
        FleetSpec([VMSpec("a")], [LinkSpec("l", members=["zz"])]).validate()
    assert _size_bytes("256M") == 256 << 20 and _size_bytes("1G") == 1 << 30 and _size_bytes("4096") == 4096


def test_providers_numa_and_shared_disks_are_planned(tmp_path):
    f = planned(HV2, tmp_path)
    vma = f["vma"]
    assert [d.dev for d in vma.disks] == ["/dev/vdb", "/dev/vdc"]
    assert [(d.dev, d.by_id) for d in vma.shared_disks] == [("/dev/vdd", "/dev/disk/by-id/virtio-vmlab-shared-sbd")]
    assert vma.shared_disks[0].path == f["vmb"].shared_disks[0].path  # one file, both VMs
    assert all(d.path.endswith(".qcow2") for d in vma.disks)  # per-VM disks are in the snapshots
    argv = f._qemu_argv(vma, {n.link: 100 + i for i, n in enumerate(vma.nics)})
    joined = " ".join(argv)
    assert "share-rw=on,serial=vmlab-shared-sbd" in joined and "node-name=disk2" in joined
    assert _numa_argv(HV2.vms[0]) == [
        "-object", "memory-backend-ram,id=numa-mem0,size=640M", "-numa", "node,nodeid=0,cpus=0,memdev=numa-mem0",
        "-object", "memory-backend-ram,id=numa-mem1,size=640M", "-numa", "node,nodeid=1,cpus=1,memdev=numa-mem1"]
    assert _numa_argv(VMSpec("x", memory_mb=512, cpus=1, numa_nodes=2))[3] == "node,nodeid=0,cpus=0,memdev=numa-mem0"
    assert _numa_argv(VMSpec("x", memory_mb=512, cpus=1, numa_nodes=2))[7] == "node,nodeid=1,memdev=numa-mem1"
    assert "systemd.wants=NetworkManager.service" not in joined
    assert f.controller_address("lan") == "10.213.1.1" and f.controller_address("repl", prefix=True) == "10.213.2.1/24"


@pytest.mark.parametrize("net", ["networkd", "nm", "ifupdown"])
def test_each_provider_gets_its_own_files_at_first_boot(tmp_path, net):
    spec = FleetSpec([VMSpec("h", disks=[], net=net)], [LinkSpec("lan"), LinkSpec("raw", addressed=False)])
    f = planned(spec, tmp_path)
    f.run_dir.mkdir()
    (f.run_dir / "id_ed25519").write_text("PRIVATE\n")
    (f.run_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA test\n")
    script = f._setup_script(f["h"])
    files = f._net_files(f["h"])
    assert "if [ ! -e /var/lib/vmlab/links-configured ]; then" in script
    text = "".join(body for _mode, body in files.values())
    assert "10.0.2.15/24" in text and "10.213.1.11/24" in text and "10.213.2." not in text
    if net == "networkd":
        assert set(files) == {"/etc/systemd/network/10-vmlab-mgmt.network", "/etc/systemd/network/20-vmlab-lan.network",
                              "/etc/systemd/network/20-vmlab-raw.network"}
        assert "Unmanaged=yes" in files["/etc/systemd/network/20-vmlab-raw.network"][1]
    elif net == "nm":
        keyfiles = [p for p in files if p.endswith(".nmconnection")]
        assert sorted(keyfiles) == ["/etc/NetworkManager/system-connections/vmlab-lan.nmconnection",
                                    "/etc/NetworkManager/system-connections/vmlab-mgmt.nmconnection"]
        assert all(files[p][0] == 0o600 for p in keyfiles)  # NetworkManager ignores keyfiles others can read
        assert "chmod 600 /etc/NetworkManager/system-connections/vmlab-lan.nmconnection" in script
    else:
        assert list(files) == ["/etc/network/interfaces"]
        assert "auto eth1\niface eth1 inet static\n    address 10.213.1.11/24" in files["/etc/network/interfaces"][1]
    cmdline = " ".join(f._qemu_argv(f["h"], {"lan": 100, "raw": 101}))
    for arg in NET_CMDLINE[net]:
        assert arg in cmdline


def test_a_provider_the_image_lacks_is_refused_before_anything_starts(tmp_path):
    image = BaseImage(tmp_path / "img", {"packages": ["systemd", "ifupdown"]})
    fleet = Fleet(PROVIDERS, image, run_dir=tmp_path / "run")
    with pytest.raises(VmlabError, match="nmhost: net nm needs network-manager in the image"):
        fleet.up()
    assert not (tmp_path / "run").exists()


def test_pool_key_is_the_whole_ask():
    img = BaseImage(Path("/cache/vm/bookworm-aaaa"))
    other = BaseImage(Path("/cache/vm/bookworm-bbbb"))
    key = Pool.key(HV2, img)
    assert key == Pool.key(FleetSpec.from_dict(HV2.canonical() | {"boot_timeout": 9.0, "tb_size_mb": 64}), img)
    assert key != Pool.key(HV2, other)
    for change in ({"numa_nodes": 1}, {"net": "nm"}, {"disks": ["256M"]}, {"memory_mb": 1024}, {"cpus": 1}):
        vms = [VMSpec(**(v | change)) for v in HV2.canonical()["vms"]]
        assert Pool.key(FleetSpec(vms, HV2.links, HV2.shared_disks), img) != key, change
    assert Pool.key(FleetSpec(HV2.vms, HV2.links[:2], HV2.shared_disks), img) != key
    assert Pool.key(FleetSpec(HV2.vms, HV2.links, [SharedDiskSpec("sbd", "32M")]), img) != key


def test_spec_validation_of_providers_and_numa():
    with pytest.raises(VmlabError, match="net 'wicked' is not one of networkd, nm, ifupdown"):
        FleetSpec([VMSpec("a", net="wicked")]).validate()
    with pytest.raises(VmlabError, match="numa_nodes 3 must be 1-8 and divide memory_mb 512"):
        FleetSpec([VMSpec("a", numa_nodes=3)]).validate()
    with pytest.raises(VmlabError, match="shared disk names must be unique"):
        FleetSpec([VMSpec("a")], shared_disks=[SharedDiskSpec("s"), SharedDiskSpec("s")]).validate()
