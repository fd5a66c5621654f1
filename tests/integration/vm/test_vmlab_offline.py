"""vmlab's planning logic without booting anything (fast; no root, no QEMU)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.fleet import Fleet, FleetSpec, LinkSpec, VmlabError, VMSpec, _size_bytes
from vmlab.image import BaseImage, ImageSpec
from vmlab.inventory import inventory_data
from vmlab.variants import VARIANTS, variant_spec

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
    libvirt = variant_spec("libvirt")
    assert libvirt.key() != variant_spec("base").key()
    assert set(VARIANTS["libvirt"]) <= set(libvirt.all_packages())
    assert libvirt.packages == ImageSpec().packages  # the base list itself is unchanged
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
