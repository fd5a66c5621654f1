"""Verify kvmops.fleet.hypervisor on the fleet containers (testinfra, podman connection).

Each host's expectations come from the scenario's variable files: vars/converge.yml, then
vars/<host>.yml, with vars/config_change.yml layered on top by side_effect.yml, which ran last.
"""

import json
import os
import pathlib
import re

import pytest
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
URI = "qemu:///system"
TCG_DOMAIN = """<domain type='qemu'>
  <name>kvmops-verify-tcg</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices><serial type='pty'/><console type='pty'/></devices>
</domain>
"""


@pytest.fixture(scope="module")
def expected(host):
    """The role's variables on this host, as converge.yml and side_effect.yml layered them."""
    layers = ("converge.yml", f"{host.backend.get_hostname()}.yml", "config_change.yml")
    merged = {}
    for name in layers:
        merged.update(yaml.safe_load((SCENARIO / "vars" / name).read_text()))
    return merged


def virsh(host, *args):
    return host.run("virsh -c %s %s", URI, " ".join(args))


def test_daemon_answers(host):
    result = host.run("virsh -c %s version", URI)
    assert result.rc == 0, result.stderr
    assert "Running hypervisor: QEMU" in result.stdout


def test_tcg_domain_defines_and_starts(host):
    host.run("virsh -c %s destroy kvmops-verify-tcg; virsh -c %s undefine kvmops-verify-tcg", URI, URI)
    path = "/run/kvmops-side-effect/verify-tcg.xml"
    assert host.run("printf '%%s' %s > %s", TCG_DOMAIN, path).rc == 0
    try:
        define = host.run("virsh -c %s define %s", URI, path)
        assert define.rc == 0, define.stderr
        start = host.run("virsh -c %s start kvmops-verify-tcg", URI)
        assert start.rc == 0, start.stderr
        state = host.run("virsh -c %s domstate kvmops-verify-tcg", URI).stdout.strip()
        assert state == "running"
    finally:
        host.run("virsh -c %s destroy kvmops-verify-tcg; virsh -c %s undefine kvmops-verify-tcg", URI, URI)


def test_storage_pool(host, expected):
    info = host.run("virsh -c %s pool-info default", URI)
    assert info.rc == 0, info.stderr
    assert "State:          running" in info.stdout
    assert "Autostart:      yes" in info.stdout
    xml = host.run("virsh -c %s pool-dumpxml default", URI).stdout
    assert f"<path>{expected['hypervisor_images_dir']}</path>" in xml
    images = host.file(expected["hypervisor_images_dir"])
    assert images.is_directory
    assert images.mode == 0o711


def test_default_network(host, expected):
    enabled = expected["hypervisor_default_network_enabled"]
    assert host.file("/etc/libvirt/qemu/networks/autostart/default.xml").exists is enabled
    assert host.file("/run/libvirt/network/default.xml").exists is enabled
    info = virsh(host, "net-info", "default").stdout
    assert re.search(rf"Active:\s+{'yes' if enabled else 'no'}", info), info
    assert host.interface("virbr0").exists is enabled


def test_qemu_conf(host):
    conf = host.file("/etc/libvirt/qemu.conf")
    assert conf.mode == 0o600
    content = conf.content_string
    assert 'user = "libvirt-qemu"' in content
    assert 'group = "kvm"' in content
    assert 'stdio_handler = "logd"' in content
    assert "max_files = 4096" in content
    assert "set_process_name = 1" in content


def test_daemon_conf_and_live_setting(host, expected):
    content = host.file("/etc/libvirt/libvirtd.conf").content_string
    assert f"max_clients = {expected['hypervisor_max_clients']}" in content
    assert f'log_outputs = "{expected["hypervisor_log_outputs"]}"' in content
    assert "listen_tls" not in content  # socket activation: listening is the sockets' business
    live = host.run("virt-admin -c libvirtd:///system srv-clients-info libvirtd")
    assert live.rc == 0, live.stderr
    assert re.search(rf"nclients_max\s*:\s*{expected['hypervisor_max_clients']}\b", live.stdout), live.stdout


def test_virtlogd_conf(host, expected):
    content = host.file("/etc/libvirt/virtlogd.conf").content_string
    assert f"max_backups = {expected['hypervisor_qemu_log_max_backups']}" in content


def test_socket_permissions(host, expected):
    dropin = host.file("/etc/systemd/system/libvirtd-ro.socket.d/50-kvmops-fleet.conf").content_string
    assert f"SocketMode={expected['hypervisor_socket_ro_mode']}" in dropin
    ro = host.file("/run/libvirt/libvirt-sock-ro")
    assert ro.is_socket
    assert ro.mode == int(expected["hypervisor_socket_ro_mode"], 8)
    rw = host.file("/run/libvirt/libvirt-sock")
    assert rw.group == "libvirt"
    assert rw.mode == 0o660


def test_services(host):
    for unit in (
        "libvirtd.socket",
        "libvirtd-ro.socket",
        "libvirtd-admin.socket",
        "virtlogd.socket",
        "virtlockd.socket",
        "libvirt-guests.service",
    ):
        service = host.service(unit)
        assert service.is_enabled, unit
        assert service.is_running, unit
    assert host.service("libvirtd.service").is_enabled


def test_tls_listener(host, expected):
    assert expected["hypervisor_tls_enabled"]
    tls = host.service("libvirtd-tls.socket")
    assert tls.is_enabled and tls.is_running
    dropin = host.file("/etc/systemd/system/libvirtd-tls.socket.d/50-kvmops-fleet.conf").content_string
    address = f"{expected['hypervisor_tls_listen_address']}:16514"
    assert f"ListenStream={address}" in dropin
    assert host.socket(f"tcp://{address}").is_listening
    key = host.file("/etc/pki/libvirt/private/serverkey.pem")
    assert key.mode == 0o600 and "PRIVATE KEY" in key.content_string
    assert "BEGIN CERTIFICATE" in host.file("/etc/pki/libvirt/servercert.pem").content_string
    conf = host.file("/etc/libvirt/libvirtd.conf").content_string
    assert 'key_file = "/etc/pki/libvirt/private/serverkey.pem"' in conf
    # the daemon (restarted by the side effect's socket change) came up with these certificates
    assert host.service("libvirtd.service").is_running


def test_users_in_libvirt_group(host):
    assert "libvirt" in host.user("fleetops").groups


def test_hardening_files(host, expected):
    rotate = host.file("/etc/logrotate.d/libvirtd.qemu").content_string
    assert "/var/log/libvirt/qemu/*.log" in rotate
    assert "copytruncate" in rotate
    apparmor = host.file("/etc/apparmor.d/local/abstractions/libvirt-qemu").content_string
    assert f'"{expected["hypervisor_images_dir"]}/**" rwk,' in apparmor
    helper = host.file("/etc/apparmor.d/local/usr.lib.libvirt.virt-aa-helper").content_string
    assert f'"{expected["hypervisor_images_dir"]}/**" r,' in helper
    # this kernel has no AppArmor: the rules are rendered, not loaded
    enabled = host.file("/sys/module/apparmor/parameters/enabled")
    assert not enabled.exists or enabled.content_string.strip() != "Y"


def _pids(host, stage):
    return json.loads(host.file(f"/run/kvmops-side-effect/{stage}.json").content_string)


def test_guest_keeps_its_qemu_process_across_a_config_change(host):
    before, after = _pids(host, "before"), _pids(host, "after")
    assert before["qemu"] == after["qemu"]
    stat = host.file(f"/proc/{after['qemu']}/stat").content_string
    assert stat.split(")")[1].split()[0] != "Z"
    assert virsh(host, "domstate", "kvmops-survivor").stdout.strip() == "running"
    # the daemon was really restarted by the handler; virtlogd re-executed in place (same PID)
    assert before["libvirtd"] != after["libvirtd"]
    assert before["virtlogd"] == after["virtlogd"]


def _records():
    path = os.environ.get("KVMOPS_CHANGED_LOG")
    if not path or not pathlib.Path(path).exists():
        pytest.fail(f"no record of changed tasks at {path!r} (KVMOPS_CHANGED_LOG)")
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def test_check_mode_predicted_the_first_converge():
    converges = [r for r in _records() if r["playbook"] == "converge.yml"]
    check = next(r for r in converges if r["check"])
    real = next(r for r in converges if not r["check"])
    assert converges.index(check) < converges.index(real), "check mode must run on the fresh host first"
    assert check["changed"], "check mode on a bare host predicted no change"
    assert check["changed"] == real["changed"]


def test_second_converge_changed_nothing():
    converges = [r for r in _records() if r["playbook"] == "converge.yml" and not r["check"]]
    assert len(converges) >= 2
    assert all(not tasks for tasks in converges[1]["changed"].values()), converges[1]["changed"]
