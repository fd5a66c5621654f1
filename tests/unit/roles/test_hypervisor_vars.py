"""kvmops.fleet.hypervisor: each platform's layered vars resolve to the right names (table-driven),
and bad input fails before any change.

Ubuntu and EL cannot run here (only Debian's package registry is reachable): this table is what
proves their package, unit and path names resolve as intended; Debian 12 and 13 also run for real
in the molecule scenarios.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / "roles" / "hypervisor"


def layered_vars(os_family, distribution, major, public=None):
    """What tasks/set_vars.yml loads: defaults, vars/main.yml, then the platform layers."""
    data = {}
    data.update(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    data.update(public or {})
    data.update(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))
    loaded = []
    for name in (os_family, f"{os_family}_{major}", distribution, f"{distribution}_{major}"):
        path = ROLE / "vars" / (f"{name}.yml")
        if path.is_file() and name not in loaded:
            data.update(yaml.safe_load(path.read_text()) or {})
            loaded.append(name)
    # vars files are trusted templates for Ansible; plain YAML strings are not (ansible-core 2.19)
    data = {key: _trusted(value) for key, value in data.items()}
    templar = Templar(loader=DataLoader(), variables=data)
    return {key: templar.template(value) for key, value in data.items() if key.startswith("__hypervisor_")}


def _trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    return value


PLATFORMS = {
    # (os_family, distribution, major): expectations
    ("Debian", "Debian", "12"): {
        "pkg": "apt",
        "qemu": "qemu-system-x86",
        "daemon": "libvirtd.service",
        "mode": "monolithic",
        "user": "libvirt-qemu",
        "group": "kvm",
        "lsm": "apparmor",
        "ovmf": "ovmf",
        "lockd": False,
        "net": "iptables",
    },
    ("Debian", "Debian", "13"): {
        "pkg": "apt",
        "qemu": "qemu-system-x86",
        "daemon": "libvirtd.service",
        "mode": "monolithic",
        "user": "libvirt-qemu",
        "group": "kvm",
        "lsm": "apparmor",
        "ovmf": "ovmf",
        "lockd": True,
        "net": "nftables",
    },
    ("Debian", "Ubuntu", "22"): {
        "pkg": "apt",
        "qemu": "qemu-system-x86",
        "daemon": "libvirtd.service",
        "mode": "monolithic",
        "user": "libvirt-qemu",
        "group": "kvm",
        "lsm": "apparmor",
        "ovmf": "ovmf",
        "lockd": False,
        "net": "iptables",
    },
    ("Debian", "Ubuntu", "24"): {
        "pkg": "apt",
        "qemu": "qemu-system-x86",
        "daemon": "libvirtd.service",
        "mode": "monolithic",
        "user": "libvirt-qemu",
        "group": "kvm",
        "lsm": "apparmor",
        "ovmf": "ovmf",
        "lockd": False,
        "net": "iptables",
    },
}
for _dist in ("RedHat", "Rocky", "AlmaLinux"):
    for _major in ("9", "10"):
        PLATFORMS[("RedHat", _dist, _major)] = {
            "pkg": "dnf",
            "qemu": "qemu-kvm",
            "daemon": "virtqemud.service",
            "mode": "modular",
            "user": "qemu",
            "group": "qemu",
            "lsm": "selinux",
            "ovmf": "edk2-ovmf",
            "lockd": False,
            "net": "dnsmasq",
        }


@pytest.mark.parametrize(
    ("platform", "want"), list(PLATFORMS.items()), ids=lambda p: " ".join(p) if isinstance(p, tuple) else ""
)
def test_platform_vars_resolve(platform, want):
    os_family, distribution, major = platform
    v = layered_vars(os_family, distribution, major)
    assert f"{distribution} {major}" in v["__hypervisor_supported"]
    assert v["__hypervisor_pkg_mgr"] == want["pkg"]
    packages = v["__hypervisor_packages"]
    assert want["qemu"] in packages and want["ovmf"] in packages and "python3-libvirt" in packages
    assert ("libvirt-daemon-lock" in packages) is want["lockd"]
    assert want["net"] in v["__hypervisor_packages_network"]
    assert v["__hypervisor_daemon_service"] == want["daemon"]
    assert v["__hypervisor_daemon_mode"] == want["mode"]
    assert v["__hypervisor_qemu_user_default"] == want["user"]
    assert v["__hypervisor_qemu_group_default"] == want["group"]
    assert v["__hypervisor_security_module"] == want["lsm"]
    # check mode's prediction on a bare host: dpkg maintainer scripts start the units, rpm does not
    assert v["__hypervisor_packages_start_units"] is (want["pkg"] == "apt")
    assert v["__hypervisor_packages_define_network"] is True
    assert v["__hypervisor_packages_autostart_network"] is (want["pkg"] == "dnf")
    started = v["__hypervisor_units_started"]
    assert "virtlogd.socket" in started and "libvirt-guests.service" in started
    # socket-activated daemons are enabled, never "started" (their --timeout would break idempotence)
    assert want["daemon"] in v["__hypervisor_units_enabled"]
    assert want["daemon"] not in started
    if want["mode"] == "modular":
        assert v["__hypervisor_daemon_conf"] == "/etc/libvirt/virtqemud.conf"
        assert v["__hypervisor_tls_socket"] == "virtproxyd-tls.socket"
        assert v["__hypervisor_tls_conf"] == "/etc/libvirt/virtproxyd.conf"
        assert {"virtqemud.socket", "virtnetworkd.socket", "virtstoraged.socket"} <= set(started)
        assert v["__hypervisor_admin_uri"] == "virtqemud:///system"
        assert v["__hypervisor_selinux_image_type"] == "virt_image_t"
        assert "policycoreutils-python-utils" in packages
    else:
        assert v["__hypervisor_daemon_conf"] == "/etc/libvirt/libvirtd.conf"
        assert v["__hypervisor_tls_socket"] == "libvirtd-tls.socket"
        assert {"libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket"} <= set(started)
        assert v["__hypervisor_apparmor_local_qemu"] == "/etc/apparmor.d/local/abstractions/libvirt-qemu"
    for name in v["__hypervisor_sockets_rw"] + v["__hypervisor_sockets_ro"]:
        assert name.endswith(".socket")


def test_optional_packages():
    v = layered_vars(
        "Debian",
        "Debian",
        "12",
        {
            "hypervisor_install_virt_install": True,
            "hypervisor_install_guestfs_tools": True,
            "hypervisor_default_network_enabled": True,
            "hypervisor_extra_packages": ["htop"],
        },
    )
    assert {"virtinst", "libguestfs-tools", "dnsmasq-base", "htop"} <= set(v["__hypervisor_install_packages"])
    bare = layered_vars("Debian", "Debian", "12")
    assert not {"virtinst", "libguestfs-tools", "dnsmasq-base"} & set(bare["__hypervisor_install_packages"])
    el = layered_vars("RedHat", "Rocky", "9", {"hypervisor_install_virt_install": True})
    assert "virt-install" in el["__hypervisor_install_packages"]


def test_defaults_equal_argument_specs():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert set(defaults) == set(options)
    for name, value in defaults.items():
        assert options[name]["default"] == value, name
    for name, option in specs["preflight"]["options"].items():
        assert option == options[name], name


# --- bad input: ansible-playbook against localhost, failing before any change -------------------

FAKE_FACTS = textwrap.dedent(
    """\
    #!/usr/bin/python
    from ansible.module_utils.basic import AnsibleModule
    module = AnsibleModule({"facts": {"type": "dict", "required": True}}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts=module.params["facts"])
    """
)


def run_role(tmp_path, role_vars, facts):
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "fake_facts.py").write_text(FAKE_FACTS)
    play = [
        {
            "name": "Bad input",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {"name": "Pretend a platform", "fake_facts": {"facts": facts}},
                {
                    "name": "Role",
                    "ansible.builtin.include_role": {"name": "kvmops.fleet.hypervisor"},
                    "vars": role_vars,
                },
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_LIBRARY=str(tmp_path / "library"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
    )
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "--check",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(tmp_path / "play.yml"),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


DEBIAN12 = {"distribution": "Debian", "distribution_major_version": "12", "os_family": "Debian"}


def test_unsupported_platform_fails_first(tmp_path):
    result = run_role(
        tmp_path, {}, {"distribution": "Solaris", "distribution_major_version": "11", "os_family": "Solaris"}
    )
    assert result.returncode == 2, result.stdout
    assert "unsupported platform Solaris 11; supported: Debian 12, Debian 13, Ubuntu 22" in result.stdout
    assert "changed=0" in result.stdout


@pytest.mark.parametrize(
    ("role_vars", "message"),
    [
        ({"hypervisor_preflight_mode": "maybe"}, "value of hypervisor_preflight_mode must be one of: strict, warn"),
        ({"hypervisor_max_clients": "many"}, "hypervisor_max_clients"),
        ({"hypervisor_security_driver": "smack"}, "value of hypervisor_security_driver must be one of"),
        ({"hypervisor_tls_enabled": "sometimes"}, "hypervisor_tls_enabled"),
    ],
)
def test_argument_specs_catch_bad_variables(tmp_path, role_vars, message):
    result = run_role(tmp_path, role_vars, DEBIAN12)
    assert result.returncode == 2, result.stdout
    assert "Validating arguments against arg spec" in result.stdout
    assert message in result.stdout
    assert "changed=0" in result.stdout


def test_strict_preflight_stops_before_any_change(tmp_path):
    # a requirement no host meets, so the verdict does not depend on this machine's CPU
    result = run_role(tmp_path, {"hypervisor_min_free_gib": 1024**2, "hypervisor_images_dir": str(tmp_path)}, DEBIAN12)
    assert result.returncode == 2, result.stdout
    assert "localhost cannot run KVM guests:" in result.stdout
    assert "Nothing was changed. Set hypervisor_preflight_mode=warn" in result.stdout
    assert "Install the hypervisor packages" not in result.stdout
    assert "changed=0" in result.stdout


def test_playbooks_parse():
    playbooks = ROLE.parents[1] / "playbooks"
    for name in ("hypervisor.yml", "site.yml"):
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "--syntax-check",
                "-i",
                "localhost,",
                str(playbooks / name),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- the libvirt configuration files: rendered from the templates, checked by the role's validator ----


def _checker():
    return runpy.run_path(str(ROLE / "files" / "libvirt-conf-check"))["check"]


def render(template, **overrides):
    # configuration files, not HTML: no autoescaping (Ansible's template module does none either)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True)  # noqa: S701
    data = {**layered_vars("Debian", "Debian", "12", overrides), "ansible_managed": "managed"}
    data.update(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    data.update(overrides)
    data.update({"__hypervisor_qemu_user": "libvirt-qemu", "__hypervisor_qemu_group": "kvm"})
    return env.get_template(template).render(**data)


@pytest.mark.parametrize("template", ["qemu.conf.j2", "daemon.conf.j2", "virtlogd.conf.j2", "proxy.conf.j2"])
def test_rendered_configuration_is_valid(template):
    text = render(
        template,
        hypervisor_qemu_conf_extra={
            "max_files": 4096,
            "set_process_name": True,
            "cgroup_controllers": ["cpu", "memory"],
        },
        hypervisor_daemon_conf_extra={"admin_max_workers": 5},
        hypervisor_tls_enabled=True,
    )
    _checker()(text)  # raises ValueError when invalid


def test_rendered_values():
    qemu = render(
        "qemu.conf.j2",
        hypervisor_security_driver="none",
        hypervisor_qemu_conf_extra={"set_process_name": True, "cgroup_controllers": ["cpu", "memory"]},
    )
    assert 'user = "libvirt-qemu"' in qemu and 'security_driver = "none"' in qemu
    assert "set_process_name = 1" in qemu
    assert 'cgroup_controllers = [ "cpu", "memory" ]' in qemu
    assert "security_driver" not in render("qemu.conf.j2")  # auto: libvirt's own choice
    daemon = render("daemon.conf.j2", hypervisor_tls_enabled=True, hypervisor_max_clients=77)
    assert "max_clients = 77" in daemon and 'key_file = "/etc/pki/libvirt/private/serverkey.pem"' in daemon
    assert "listen_tls" not in daemon and "unix_sock" not in daemon
    assert "ListenStream=[::1]:16514" in render("tls-socket.conf.j2", hypervisor_tls_listen_address="::1")
    assert "ListenStream=16514" in render("tls-socket.conf.j2")


@pytest.mark.parametrize(
    "text",
    ['a = "x"y"\n', "a =\n", "= 1\n", 'a = [ "x", \n', "a = [ 1 2 ]\n", "a b\n"],
)
def test_validator_rejects(text):
    with pytest.raises((ValueError, IndexError)):
        _checker()(text)


def test_validator_accepts_comments_and_multiline_lists():
    _checker()('# c\nlog_outputs = "3:journald"  # x\nnames = [\n  "a",\n  "b",\n]\nn = -1\n')
