"""Parsers of domain XML and libvirtd status XML, on XML literals."""
from __future__ import annotations

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _domxml, _states

DOMAIN = """<domain type='kvm' id='7'>
  <name>web-01</name><uuid>b0cd9266-0d03-4c41-8ee4-2531531dc94c</uuid>
  <on_crash>preserve</on_crash><on_lockfailure>pause</on_lockfailure>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' error_policy='stop' rerror_policy='report'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw' error_policy='enospace'/>
      <source dev='/dev/mapper/vg0-web'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <source protocol='nbd' name='exp0'><host transport='unix' socket='/run/nbd.sock'/></source>
      <target dev='vdc' bus='virtio'/></disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='exp1'><host name='10.0.0.5' port='10809'/></source>
      <target dev='vdd' bus='virtio'/></disk>
    <disk type='volume' device='disk'><source pool='default' volume='web-01-data.qcow2'/>
      <target dev='vde' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <watchdog model='i6300esb' action='pause'/>
    <panic model='isa'/>
  </devices>
</domain>"""

STATUS = f"""<domstatus state='paused' reason='save' pid='5070'>
  <job type='none' async='save' flags='0x0' asyncStarted='1795669479115'/>
  {DOMAIN}
</domstatus>"""


def test_parse_domain_disks_and_policies():
    d = _domxml.parse_domain(DOMAIN)
    assert d["name"] == "web-01" and d["id"] == 7
    assert d["on_crash"] == "preserve" and d["on_lockfailure"] == "pause"
    assert d["watchdog"] == {"model": "i6300esb", "action": "pause"} and d["panic_device"]
    vda, vdb, vdc, vdd, vde, sda = d["disks"]
    assert (vda["type"], vda["path"], vda["error_policy"], vda["rerror_policy"], vda["format"]) == (
        "file", "/var/lib/libvirt/images/web-01.qcow2", "stop", "report", "qcow2")
    assert (vdb["type"], vdb["path"], vdb["error_policy"]) == ("block", "/dev/mapper/vg0-web", "enospace")
    assert vdc["hosts"] == [{"transport": "unix", "socket": "/run/nbd.sock"}] and vdc["export"] == "exp0"
    assert vdd["hosts"] == [{"transport": "tcp", "name": "10.0.0.5", "port": 10809}]
    assert (vde["pool"], vde["volume"]) == ("default", "web-01-data.qcow2")
    assert sda["readonly"] and sda["path"] is None and sda["device"] == "cdrom"


def test_parse_status_job_and_state():
    s = _domxml.parse_status(STATUS)
    assert (s["state"], s["reason"], s["pid"]) == (3, 3, 5070)
    assert s["job"] == {"type": "none", "async": "save", "started_ms": 1795669479115, "phase": None}
    assert s["domain"]["name"] == "web-01"


@pytest.mark.parametrize("code,name", list(enumerate(_states.PAUSED_REASON_NAMES)))
def test_every_paused_reason_name_round_trips(code, name):
    s = _domxml.parse_status(f"<domstatus state='paused' reason='{name}' pid='1'>{DOMAIN}</domstatus>")
    assert s["reason"] == code and s["job"] is None
    assert _states.libvirt_state_text(3, code) == f"paused ({name})"


def test_crashed_status_and_defaults():
    s = _domxml.parse_status("<domstatus state='crashed' reason='panicked'><domain><name>x</name>"
                             "</domain></domstatus>")
    assert (s["state"], s["reason"], s["pid"]) == (6, 1, None)
    assert s["domain"]["disks"] == [] and s["domain"]["on_crash"] == "destroy"


@pytest.mark.parametrize("text", ["<domain", "<other/>", "<domstatus/>"])
def test_bad_xml_raises_typed_error(text):
    with pytest.raises(_domxml.DomainXMLError):
        _domxml.parse_status(text) if text == "<domstatus/>" else _domxml.parse_domain(text)
