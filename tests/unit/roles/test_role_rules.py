"""Role variables that argument_specs cannot check (issue 17, item 6): every role's table of rules
(``__<role>_rules`` in roles/<role>/vars/main.yml), read by its tasks/validate.yml through kvmops.fleet.var_problems.

- Completeness: every option of every entry point that is not a bool and has no ``choices`` has a rule of a kind
  that fits its type (a new option cannot skip the table), no rule names an option that does not exist, a
  ``no_log`` option's rule hides its value, and the documented bounds are the table's.
- Table-driven over the rules themselves: each rule gets values below its minimum, above its maximum, of the
  wrong kind (a bool, NaN, infinity, text, a list), relative paths, modes that grant what the rule denies, an
  unquoted YAML mode, text its pattern refuses; each must give one sentence naming the variable and what is
  allowed, never an exception. The boundary values and the defaults must pass.
- Wiring, through one ansible-playbook run of every entry point of both roles (tagged so that only the always-
  tagged validation runs): an entry point given a bad value for every variable it has a rule for fails at the
  validation task naming each of them; given the boundary values it passes.
- Real runs without tags: rc 2, the message names the variable, nothing else ran, nothing changed, no traceback.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.kvmops.fleet.plugins.filter import var_problems as var_problems_plugin
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _resume
from ansible_collections.kvmops.fleet.plugins.plugin_utils import _role_vars
from kvmlab.testdriver import write_fleet

ROLES_DIR = Path(__file__).resolve().parents[3] / "roles"
ROLES = ("bridge", "diagnostics", "dr", "hypervisor", "tuning")
var_problems = var_problems_plugin.FilterModule().filters()["var_problems"]


def load(role):
    specs = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    rules = yaml.safe_load((ROLES_DIR / role / "vars" / "main.yml").read_text())[f"__{role}_rules"]
    defaults = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())
    return specs, rules, defaults


def needs_rule(option: dict) -> bool:
    return option["type"] != "bool" and "choices" not in option


# argument_specs type -> the rule kinds that can check it
KINDS_FOR_TYPE = {
    "int": {"int"},
    "float": {"float"},
    "path": {"path"},
    "list": {"list"},
    "dict": {"dict"},
    "str": {"str", "mode", "address"},
}

# Realistic values each text rule must accept (beyond the default): a new text option needs its examples here.
GOOD_TEXT = {
    "diagnostics_uri": ["qemu:///system", "qemu+ssh://root@hv1.example.net/system", "test:///default"],
    "diagnostics_resume_min_free": ["5%", "100%", "0", "512M", "10G", "1.5 GiB", "2t"],
    "hypervisor_qemu_user": ["", "libvirt-qemu", "qemu"],
    "hypervisor_qemu_group": ["", "kvm", "qemu"],
    "hypervisor_log_outputs": [
        "",
        "3:journald",
        "1:file:/var/log/libvirt/libvirtd.log 3:syslog:libvirtd",
        " 3:journald  1:stderr ",
    ],
    "hypervisor_log_filters": ["", "1:qemu 3:remote 4:event", "1:+qemu"],
    "hypervisor_socket_group": ["libvirt", "kvm-admins"],
    "hypervisor_tls_ca_cert": ["", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"],
    "hypervisor_tls_server_cert": ["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"],
    "hypervisor_tls_server_key": ["-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"],
    "hypervisor_storage_pool_name": ["default", "images-2", "vm_pool.1"],
    "tuning_tuned_profile": ["", "virtual-host", "cpu-partitioning", "my_profile.2"],
    "tuning_libvirt_uri": ["qemu:///system", "qemu+ssh://root@hv1.example.net/system", "test:///default"],
    "tuning_tuned_isolated_cores": ["", "2-7", "2,4-7,^5", "1"],
    "tuning_benchmark_label": ["before", "after", "run_2.1", "L" * 64],
    "tuning_benchmark_compare_with": ["", "before", "2026-12-05"],
    "tuning_benchmark_device": ["", "/dev/vdb", "/dev/disk/by-id/virtio-bench", "/dev/mapper/vg-bench"],
    "tuning_benchmark_directory": ["/var/tmp", "", "/var/lib/libvirt/images"],
    "tuning_benchmark_file_size": ["256M", "16M", "64G", "1024M"],
    "bridge_libvirt_uri": ["qemu:///system", "qemu+ssh://root@hv1.example.net/system", "test:///default"],
    # list elements, by the list's name
    "bridge_probe_targets": ["192.0.2.1", "2001:db8::1", "fe80::1%eth0", "10.213.1.1"],
    "bridge_probe_names": ["mirror.example.net", "localhost", "deb.debian.org.", "hv_1"],
    "diagnostics_domains": ["db-*", "web-01", "a domain name", "vm[0-9]"],
    "hypervisor_users": ["alice", "fleetops", "svc.backup"],
    "hypervisor_extra_packages": ["htop", "qemu-utils=1:7.2", "libvirt-daemon-driver-storage-rbd"],
    "dr_drbd_packages": ["drbd-utils", "drbd-dkms", "kmod-drbd9x", "drbd-utils=9.22.0-1"],
    "dr_cluster_name": ["kvmops", "hv-pair_1", "C" * 32],
    "dr_cluster_qnetd_host": ["", "qnetd1", "arbiter.example.net"],
    "dr_cluster_password": ["", "correct-horse-9", "p" * 128],
    "dr_cluster_packages": ["corosync", "pcs", "fence-agents-virsh", "pacemaker=2.1.5-1"],
    "dr_cluster_qnetd_packages": ["corosync-qnetd", "pcs"],
}
# and text each must refuse (beyond a newline, the wrong kinds and over-long text, which every rule gets)
BAD_TEXT = {
    "diagnostics_uri": ["qemu", "/system", "qemu:///sys tem"],
    "diagnostics_resume_min_free": ["5 percent", "101%", "-5%", "5%%", "10X"],
    "hypervisor_qemu_user": ["root;id", "-x", "a b"],
    "hypervisor_qemu_group": ["a b"],
    "hypervisor_log_outputs": [
        "3:journal",
        "5:journald",
        "3:file:relative.log",
        '3:file:/a"b',
        "3:journald\n1:stderr",
        "3:journald1:stderr",
    ],
    "hypervisor_log_filters": ["9:qemu", "qemu", "1:qemu\n3:remote", "1:qemu3:remote"],
    "hypervisor_socket_group": ["", "a b"],
    "hypervisor_tls_ca_cert": ["not a certificate", "-----BEGIN CERTIFICATE-----"],
    "hypervisor_tls_server_cert": ["MIIB"],
    "hypervisor_tls_server_key": ["a secret that is not PEM"],
    "hypervisor_storage_pool_name": ["", "../etc", "a/b", ".hidden", "a b"],
    "tuning_tuned_profile": ["virtual host", "a/b", "x;reboot", "p" * 65],
    "tuning_libvirt_uri": ["qemu", "/system", "qemu:///sys tem"],
    "tuning_tuned_isolated_cores": ["all", "2-7;reboot", "-1", " "],
    "tuning_benchmark_label": ["", "a b", "../x", "x;reboot", "L" * 65],
    "tuning_benchmark_compare_with": ["a b", "../x"],
    "tuning_benchmark_device": ["vdb", "/dev/vd b", "/srv/x"],
    "tuning_benchmark_directory": ["var/tmp", "/var/ tmp"],
    "tuning_benchmark_file_size": ["", "256", "256MB", "0M", "-1G", "1T", "1.5G"],
    "bridge_libvirt_uri": ["qemu", "/system", "qemu:///sys tem"],
    "bridge_probe_targets": ["", "gw.example.net", "192.0.2.1;reboot", "10.0.0.1/24", "192.0.2.1 "],
    "bridge_probe_names": ["", "a b", "-x", "x;reboot", "$(id)"],
    "diagnostics_domains": ["", "   "],
    "hypervisor_users": ["a b", "root;id", ""],
    "hypervisor_extra_packages": ["a b", "x;reboot", "$(id)", ""],
    "dr_drbd_packages": ["a b", "x;reboot", "$(id)", "", "-x"],
    "dr_cluster_name": ["", "a b", "-x", "x.y", "C" * 33],
    "dr_cluster_qnetd_host": ["a b", "x;reboot", "-x"],
    "dr_cluster_password": ["short", "with blank", "quo'te", 'dq"x', "back\\slash", "p" * 129],
    "dr_cluster_packages": ["a b", "x;reboot", "$(id)", "", "-x"],
    "dr_cluster_qnetd_packages": ["a b", ""],
}


# a resource of the dr role's dr_drbd_resources that argument_specs accepts
DRBD_RESOURCE = {"name": "vm1disk", "port": 7789, "secret": "0123456789abcdef", "initial_primary": "hv1",
                 "nodes": [{"host": "hv1", "address": "192.0.2.11", "disk": "/dev/disk/by-id/a", "minor": 0},
                           {"host": "hv2", "address": "192.0.2.12", "disk": "/dev/disk/by-id/b", "minor": 0}]}

# the dr role's dr_cluster_nodes and a fencing device of dr_cluster_fencing that argument_specs accepts
CLUSTER_NODES = [{"host": "hv1", "addresses": ["192.0.2.11", "198.51.100.11"]},
                 {"host": "hv2", "addresses": ["192.0.2.12", "198.51.100.12"]}]
FENCE_VIRSH = {"name": "fence-hv", "type": "fence_virsh", "ip": "192.0.2.1", "username": "fence",
               "password": "0123456789", "host_map": {"hv1": "hv1", "hv2": "hv2"}}

# Lists of mappings and mappings whose items argument_specs checks (suboptions, key names): realistic values the
# rules must accept, by name (the generic ones are not of their shape)
BRIDGE = {"name": "br0", "ports": ["eth1"], "addresses": ["192.0.2.10/24"]}
BOND = {"name": "bond0", "interfaces": ["eth2", "eth3"], "mode": "active-backup"}
VLAN = {"name": "vlan10", "id": 10, "link": "bond0"}
LIBVIRT_NETWORK = {"name": "br0", "bridge": "br0"}
GOOD_STRUCT = {
    "bridge_bridges": [[], [BRIDGE]],
    "bridge_bonds": [[], [BOND]],
    "bridge_vlans": [[], [VLAN]],
    "bridge_libvirt_networks": [[], [LIBVIRT_NETWORK, {"name": "old", "state": "absent"}]],
    "tuning_hugepages": [[], [{"node": 0, "count": 512}, {"size": "1G", "count": 1}]],
    "tuning_io_schedulers": [[], [{"transport": "virtio", "scheduler": "none"}, {"name": "sd*", "read_ahead_kb": 1}]],
    "tuning_sysctls": [{}, {"vm.swappiness": 10, "vm.dirty_ratio": 15, "kernel.sched_autogroup_enabled": 0}],
    "tuning_domains": [[], [{"name": "web-1", "placement": "auto"},
                            {"name": "db", "memory_backing": {"hugepages": True}}]],
    "dr_drbd_resources": [[], [DRBD_RESOURCE]],
    "dr_cluster_nodes": [[], CLUSTER_NODES],
    "dr_cluster_fencing": [[], [FENCE_VIRSH]],
}
# and a value argument_specs lets through that the rule refuses (the generic one is refused by argument_specs)
FIRST_BAD = {
    "bridge_bridges": [BRIDGE] * 257,
    "bridge_bonds": [BOND] * 65,
    "bridge_vlans": [VLAN] * 4095,
    "bridge_libvirt_networks": [LIBVIRT_NETWORK] * 257,
    "dr_drbd_resources": [DRBD_RESOURCE] * 257,
    "dr_cluster_nodes": CLUSTER_NODES * 9,
    "dr_cluster_fencing": [FENCE_VIRSH] * 33,
    "tuning_hugepages": [{"count": 1}] * 4097,
    "tuning_io_schedulers": [{"scheduler": "none"}] * 65,
    "tuning_domains": [{"name": "vm"}] * 1001,
}


def bad_values(name, rule):
    """Values the rule must refuse."""
    kind = rule["kind"]
    out = [None] if kind == "list" else [None, ["a", "list"]]
    if kind in ("int", "float"):
        out += ["soon", True, False, float("nan"), float("inf"), float("-inf"), "nan", "inf", {"a": 1}]
        if "min" in rule:
            out += [rule["min"] - 1, str(rule["min"] - 1)]
        if "above" in rule:
            out += [rule["above"], rule["above"] - 1, str(rule["above"] - 0.5)]
        if "max" in rule:
            out += [rule["max"] + 1, str(rule["max"] + 1), 10**30]
        if kind == "int":
            out += [1.5, "1.5", "12abc"]
    elif kind == "path":
        out += ["", "a\nb", 5, {"a": 1}]
        if rule.get("absolute"):
            out += ["relative/dir", "./x", "~/x"]
    elif kind == "mode":
        deny = int(rule.get("deny", "0"), 8)
        out += [432, 0o660, "660", "999", "0999", "rw", "01777", "00660", ""]
        if deny:
            out += ["0%03o" % (0o600 | deny), "0777"]
    elif kind == "str":
        out += ["bad value\n", 5, {"a": 1}, *BAD_TEXT.get(name, [])]
        if rule.get("max_length", 0) <= 100_000:
            out.append("x" * (rule["max_length"] + 1))
    elif kind == "address":
        out += ["hv1.example.net", "[::1]", "300.1.1.1", "1.2.3", 5, "a\n"]
    elif kind == "list":
        out += [{"a": 1}, True]
        elements = rule.get("elements")
        if elements:
            bad = [v for v in bad_values(name, elements) if v is not None and not isinstance(v, list)]
            out += [[v] for v in bad]
            # text and numbers are lists as argument_specs makes them (split on commas, one item): refused
            # when that item is
            out += [v for v in bad if isinstance(v, str) and "," not in v]
            out += [v for v in bad if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and str(v) in bad]
            if elements["kind"] not in ("str", "path", "address", "mode"):
                out += ["text", 5]
        else:
            out += []
        if rule.get("max_items", 0) <= 20_000:
            good = good_values(name, elements)[0] if elements else 1
            out.append([good] * (rule["max_items"] + 1))
    elif kind == "dict":
        out += [
            "text",
            5,
            {"Bad Key": 1},
            {"1st": 1},
            {"ok_key": 'x"y'},
            {"ok_key": "a\nb"},
            {"ok_key": {"nested": 1}},
            {"ok_key": [1, None]},
            {"ok_key": None},
        ]
        if rule.get("max_items", 0) <= 20_000:
            out.append({f"key_{i}": i for i in range(rule["max_items"] + 1)})
    else:
        raise AssertionError(f"{name}: no generator for kind {kind}")
    return out


def good_values(name, rule):
    """Values the rule must accept: its boundaries and realistic values."""
    if name in GOOD_STRUCT:
        return GOOD_STRUCT[name]
    kind = rule["kind"]
    if kind in ("int", "float"):
        low = rule["min"] if "min" in rule else rule["above"] + (1 if kind == "int" else 0.001)
        out = [low, rule["max"], str(rule["max"])]
        if kind == "float":
            out += [float(rule["max"]), (low + rule["max"]) / 2]
        return out
    if kind == "path":
        return ["/srv/x", "/var/lib/kvmops fleet"] + ([] if rule.get("absolute") else ["relative/dir", "."])
    if kind == "mode":
        return ["0600", "0660", "0770"] + ([] if rule.get("deny") else ["0666", "0777"])
    if kind == "str":
        return GOOD_TEXT.get(name, []) or ["db-*", "web-01", "a domain name"]
    if kind == "address":
        return ["", "127.0.0.1", "::1", "fe80::1%eth0", "0.0.0.0"]  # noqa: S104 (a value to validate, nothing binds)
    if kind == "list":
        elements = rule.get("elements")
        if not elements:
            return [[], [1]]
        good = good_values(name, elements)
        # an AWX survey's text answer: split on commas, as argument_specs' list type does
        text = [",".join(v for v in good[:2])] if all(isinstance(v, str) and "," not in v for v in good[:2]) else []
        return [[], *([v] for v in good), *text]
    if kind == "dict":
        return [
            {},
            {
                "max_files": 4096,
                "set_process_name": True,
                "cgroup_controllers": ["cpu", "memory"],
                "log_level": 3,
                "host_uuid": "00000000-0000-0000-0000-000000000001",
            },
        ]
    raise AssertionError(f"{name}: no generator for kind {kind}")


def all_rules():
    for role in ROLES:
        _specs, rules, _defaults = load(role)
        for name, rule in rules.items():
            yield role, name, rule


# ---- the table is complete and agrees with argument_specs and the docs ------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_rule_of_its_type(role):
    specs, rules, _defaults = load(role)
    options = {}
    for entry, spec in specs.items():
        for name, option in spec["options"].items():
            options.setdefault(name, option)
            if needs_rule(option):
                assert name in rules, f"{role}: {name} ({entry}, type {option['type']}) has no rule in vars/main.yml"
                assert rules[name]["kind"] in KINDS_FOR_TYPE[option["type"]], (name, rules[name]["kind"])
            if option.get("no_log"):
                assert rules.get(name, {}).get("secret") is True, f"{name} is no_log: its rule must be secret"
    assert set(rules) <= set(options), f"rules for options no entry point has: {set(rules) - set(options)}"
    for name, rule in rules.items():
        assert rule["kind"] in _role_vars.KINDS, name
        _role_vars.allowed(rule)  # every rule reads as a sentence


@pytest.mark.parametrize("role", ROLES)
def test_the_defaults_pass_their_rules(role):
    _specs, rules, defaults = load(role)
    assert _role_vars.problems({k: v for k, v in defaults.items() if k in rules}, rules) == []


@pytest.mark.parametrize("role", ROLES)
def test_documented_bounds_are_the_table_s(role):
    """A numeric rule's bounds, a path rule's 'absolute' and a mode rule's denied bits are in the option's
    description (so the docs and the README cannot say something else)."""
    specs, rules, _defaults = load(role)
    for spec in specs.values():
        for name, option in spec["options"].items():
            rule = rules.get(name)
            if not rule:
                continue
            text = " ".join(option["description"])
            bounds = [rule[k] for k in ("min", "above", "max") if k in rule]
            for bound in bounds:
                assert re.search(rf"(?<![\d.]){re.escape(str(bound))}(?![\d])", text), (name, bound, text)
            if rule["kind"] == "path" and rule.get("absolute"):
                assert "absolute" in text.lower(), name
            if rule["kind"] == "mode" and rule.get("deny"):
                assert rule["deny"] in text, name


def test_text_examples_name_real_rules():
    rules = {name for _role, name, _rule in all_rules()}
    assert set(GOOD_TEXT) <= rules and set(BAD_TEXT) <= rules
    for _role, name, rule in all_rules():
        text_rule = rule.get("elements", rule) if rule["kind"] == "list" else rule
        if text_rule["kind"] == "str" and "pattern" in text_rule:
            assert name in GOOD_TEXT and name in BAD_TEXT, f"{name}: add accepted and refused examples above"


def test_override_choices_are_kvm_resume_s():
    """A typo in an override name was silently ignored (no cause matched it); it is now a choice of the spec."""
    specs, _rules, _defaults = load("diagnostics")
    for entry in ("main", "remediate"):
        assert specs[entry]["options"]["diagnostics_resume_override"]["choices"] == sorted(_resume.OVERRIDABLE), entry


@pytest.mark.parametrize(
    "text",
    [
        *GOOD_TEXT["diagnostics_resume_min_free"],
        *BAD_TEXT["diagnostics_resume_min_free"],
        " 7 %",
        "7.5%",
        "100.0%",
        "100.5%",
        "512 KiB",
        "1e3",
        "",
        "12.",
        ".5G",
    ],
)
def test_min_free_rule_agrees_with_kvm_resume(text):
    _specs, rules, _defaults = load("diagnostics")
    try:
        _resume.parse_min_free(text)
        module_accepts = True
    except _resume.ResumeError:
        module_accepts = False
    assert (_role_vars.problems({"diagnostics_resume_min_free": text}, rules) == []) is module_accepts


# ---- table-driven: every rule against values it must refuse and values it must accept ---------------------


def bad_cases():
    for _role, name, rule in all_rules():
        for value in bad_values(name, rule):
            yield pytest.param(name, rule, value, id=f"{name}={value!r}"[:120])


@pytest.mark.parametrize("name,rule,value", list(bad_cases()))
def test_a_bad_value_is_named(name, rule, value):
    problems = var_problems({name: value, "other": 1}, {name: rule, "other": {"kind": "int", "min": 0, "max": 5}})
    assert len(problems) == 1, problems
    msg = problems[0]
    assert msg.startswith(f"{name}: "), msg
    assert "; allowed: " in msg and msg.endswith(_role_vars.allowed(rule)), msg
    if rule.get("secret"):
        assert "(value hidden)" in msg and (not isinstance(value, str) or value not in msg or len(value) < 3), msg


def good_cases():
    for _role, name, rule in all_rules():
        for value in good_values(name, rule):
            yield pytest.param(name, rule, value, id=f"{name}={value!r}"[:120])


@pytest.mark.parametrize("name,rule,value", list(good_cases()))
def test_a_good_value_passes(name, rule, value):
    assert var_problems({name: value}, {name: rule}) == []


def test_a_variable_without_a_rule_is_a_bug_of_the_role():
    with pytest.raises(Exception, match="var_problems: x: the role has no rule for this variable"):
        var_problems({"x": 1}, {})
    with pytest.raises(Exception, match="unknown rule kind 'size'"):
        var_problems({"x": 1}, {"x": {"kind": "size"}})


def test_messages_quote_the_yaml_octal_trap_and_hide_secrets():
    _specs, rules, _defaults = load("hypervisor")
    (msg,) = _role_vars.problems({"hypervisor_socket_rw_mode": 0o660}, rules)
    assert "an unquoted 0660 in YAML is the number 432" in msg
    (msg,) = _role_vars.problems({"hypervisor_tls_server_key": "hunter2 is my key"}, rules)
    assert "hunter2" not in msg and "(value hidden)" in msg
    assert math.isnan(float("nan"))  # the generator's NaN really is one


# ---- wiring: every entry point runs the validation first (one ansible-playbook run for both roles) ---------


# a value of each kind that argument_specs lets through and the rules refuse
def first_bad(name, rule):
    if name in FIRST_BAD:
        return FIRST_BAD[name]
    kind = rule["kind"]
    if kind in ("int", "float"):
        return rule["max"] + 1
    return {
        "path": "relative/dir" if rule.get("absolute") else "",
        "mode": "0777" if rule.get("deny") else "999",
        "str": "bad value\n",
        "address": "hv1.example.net",
        "list": ["bad value\n"],
        "dict": {"Bad Key": 1},
    }[kind]


def wiring_cases():
    cases = []
    for role in ROLES:
        specs, rules, _defaults = load(role)
        for entry, spec in specs.items():
            names = sorted(n for n in spec["options"] if n in rules)
            assert names, (role, entry)
            cases.append(
                {"role": role, "entry": entry, "expect": names, "vars": {n: first_bad(n, rules[n]) for n in names}}
            )
            cases.append(
                {
                    "role": role,
                    "entry": entry,
                    "expect": [],
                    "vars": {n: good_values(n, rules[n])[-1 if rules[n]["kind"] != "str" else 0] for n in names},
                }
            )
    # between variables: TLS without its PEM texts, before anything (it was checked after the packages)
    cases.append(
        {
            "role": "hypervisor",
            "entry": "main",
            "expect": ["hypervisor_tls_server_key"],
            "vars": {
                "hypervisor_tls_enabled": True,
                "hypervisor_tls_ca_cert": GOOD_TEXT["hypervisor_tls_ca_cert"][1],
                "hypervisor_tls_server_cert": GOOD_TEXT["hypervisor_tls_server_cert"][0],
            },
            "task": "Check that TLS has its certificates and key",
        }
    )
    return cases


def run_playbook(tmp_path, play, *args, env_extra=None):
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", **(env_extra or {}))
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *args,
            str(tmp_path / "play.yml"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_entry_point_validates_first(tmp_path):
    cases = wiring_cases()
    record = "{{ kvmops_cases + [{'id': %d, 'failed': %s, 'msg': %s, 'task': %s}] }}"
    tasks = [{"name": "Start", "ansible.builtin.set_fact": {"kvmops_cases": []}}]
    for i, case in enumerate(cases):
        tasks.append(
            {
                "name": f"Case {i}",
                "block": [
                    {
                        "name": f"Case {i}: {case['role']} {case['entry']}",
                        "ansible.builtin.include_role": {
                            "name": f"kvmops.fleet.{case['role']}",
                            "tasks_from": case["entry"],
                        },
                        "vars": case["vars"],
                    },
                    {
                        "name": f"Case {i} passed",
                        "ansible.builtin.set_fact": {"kvmops_cases": record % (i, "false", "''", "''")},
                    },
                ],
                "rescue": [
                    {
                        "name": f"Case {i} failed",
                        "ansible.builtin.set_fact": {
                            "kvmops_cases": record
                            % (
                                i,
                                "true",
                                "ansible_failed_result.msg | default('')",
                                "ansible_failed_task.name | default('')",
                            )
                        },
                    },
                ],
            }
        )
    tasks.append(
        {
            "name": "Write the cases",
            "ansible.builtin.copy": {
                "content": "{{ kvmops_cases | to_json }}",
                "dest": str(tmp_path / "cases.json"),
                "mode": "0644",
            },
        }
    )
    # tags on the tasks, not the blocks: a block's tags reach the tasks of a role it includes
    for task in tasks:
        for inner in [task, *task.get("block", []), *task.get("rescue", [])]:
            if "block" not in inner:
                inner["tags"] = ["kvmops_case"]
    # only what is tagged: the cases here, and in the roles what is tagged always (argument_specs, validate.yml)
    res = run_playbook(
        tmp_path,
        [{"name": "Cases", "hosts": "localhost", "gather_facts": False, "tasks": tasks}],
        "--tags",
        "kvmops_case",
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Traceback" not in out
    ran = set(re.findall(r"TASK \[kvmops\.fleet\.\w+ : ([^\]]+)\]", res.stdout))
    assert {t for t in ran if not t.startswith("Validating arguments against arg spec")} <= {
        "Check the variables before anything else",
        "Check the role variables against their ranges",
        "Check that TLS has its certificates and key",
        "Check the benchmark's target",
        "Check that every libvirt network names a declared bridge",
    }, ran
    results = json.loads((tmp_path / "cases.json").read_text())
    assert [r["id"] for r in results] == list(range(len(cases)))
    for case, result in zip(cases, results, strict=True):
        where = f"{case['role']} {case['entry']} {case['vars']}"
        if not case["expect"]:
            assert not result["failed"], (where, result)
            continue
        assert result["failed"], where
        assert result["task"] == case.get("task", "Check the role variables against their ranges"), (where, result)
        assert result["msg"].startswith("localhost: "), result
        for name in case["expect"]:
            assert name in result["msg"], (where, name, result["msg"])
        named = set(re.findall(rf"(?:^localhost: |; )({case['role']}_\w+): ", result["msg"]))
        assert named == set(case["expect"]) or case.get("task"), (named, case["expect"])


# ---- real runs: rc, the message, nothing else ran, nothing changed ------------------------------------------


def test_negative_diagnostics_timeout_fails_before_any_host_is_asked(tmp_path):
    """Was: kvm_pause_facts refused the timeout on every host, the role reported each as 'libvirt failed', rc 0."""
    uri = write_fleet(tmp_path / "fleet.xml", 3)
    play = [
        {
            "name": "Diagnose",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [{"name": "Role", "ansible.builtin.include_role": {"name": "kvmops.fleet.diagnostics"}}],
        }
    ]
    res = run_playbook(
        tmp_path,
        play,
        "-e",
        json.dumps(
            {"diagnostics_uri": uri, "diagnostics_timeout": -1, "diagnostics_report_dir": str(tmp_path / "report")}
        ),
    )
    assert res.returncode == 2, res.stdout
    assert (
        "localhost: diagnostics_timeout: -1 is out of range; allowed: a number above 0 and at most 3600" in res.stdout
    )
    assert "Traceback" not in res.stdout + res.stderr
    assert "Diagnose the host" not in res.stdout and "libvirt failed" not in res.stdout
    assert "changed=0" in res.stdout
    assert not (tmp_path / "report").exists()


def test_out_of_range_hypervisor_variables_fail_before_facts(tmp_path):
    play = [
        {
            "name": "Install",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [{"name": "Role", "ansible.builtin.include_role": {"name": "kvmops.fleet.hypervisor"}}],
        }
    ]
    res = run_playbook(
        tmp_path,
        play,
        "--check",
        "-e",
        json.dumps(
            {
                "hypervisor_tls_port": 70000,
                "hypervisor_max_clients": 0,
                "hypervisor_socket_rw_mode": "0666",
                "hypervisor_images_dir": "images",
                "hypervisor_qemu_log_max_size": 0,
            }
        ),
    )
    assert res.returncode == 2, res.stdout
    for text in (
        "hypervisor_tls_port: 70000 is out of range",
        "hypervisor_max_clients: 0 is out of range",
        "hypervisor_socket_rw_mode: '0666' sets bits of 0002",
        "hypervisor_images_dir: 'images' is not absolute",
        "hypervisor_qemu_log_max_size: 0 is out of range",
    ):
        assert text in res.stdout, text
    assert "Traceback" not in res.stdout + res.stderr
    assert "Gather the distribution facts" not in res.stdout and "Load platform variables" not in res.stdout
    assert "changed=0" in res.stdout


def test_var_problems_docs_parse_and_the_example_works():
    for part in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
        assert yaml.safe_load(getattr(var_problems_plugin, part)), part
    doc = yaml.safe_load(var_problems_plugin.DOCUMENTATION)
    assert doc["name"] == "var_problems" and set(doc["options"]) == {"_input", "rules"}
    sample = yaml.safe_load(var_problems_plugin.RETURN)["_value"]["sample"]
    rule = {"kind": "int", "min": 1, "max": 65535, "why": "a TCP port"}
    assert var_problems({"my_port": 70000}, {"my_port": rule}) == sample
