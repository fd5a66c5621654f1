"""Every role's README.md documents every variable of every entry point exactly as meta/argument_specs.yml
declares it (hack/role_readme.py generates that section), has the hand-written sections a role README needs,
and its example playbooks pass ansible-playbook --syntax-check. The mutation tests prove the check catches a
README that drifted: a variable missing, a wrong default, a stale description, a variable the specs dropped."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLES = REPO / "roles"
SCRIPT = REPO / "hack" / "role_readme.py"

_spec = importlib.util.spec_from_file_location("role_readme", SCRIPT)
role_readme = importlib.util.module_from_spec(_spec)
sys.modules["role_readme"] = role_readme
_spec.loader.exec_module(role_readme)

ALL_ROLES = sorted(d.name for d in ROLES.iterdir() if d.is_dir())


def test_every_role_is_covered():
    assert {"hypervisor", "diagnostics"} <= set(ALL_ROLES)
    assert [d.name for d in role_readme.role_dirs(ROLES, [])] == ALL_ROLES


@pytest.mark.parametrize("role", ALL_ROLES)
def test_readme_matches_argument_specs(role):
    problems = role_readme.check_role(ROLES / role)
    assert problems == [], "\n".join(map(str, problems)) + "\nrun: python hack/role_readme.py"


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_variable_of_every_entry_point_is_in_the_readme(role):
    """Independent of the generator's own comparison: each option's heading, type and default are there."""
    text = (ROLES / role / "README.md").read_text()
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    sections = re.split(r"^### Entry point ", text, flags=re.MULTILINE)[1:]
    assert [s.split("`")[1] for s in sections] == list(specs)
    for section, (entry, spec) in zip(sections, specs.items(), strict=True):
        for name, opt in spec["options"].items():
            block = section.split(f"#### `{name}`\n", 1)[1].split("\n####", 1)[0]
            facts = block.strip().split("\n", 1)[0]
            assert f"`{opt['type']}" in facts, (entry, name, facts)
            if "default" in opt:
                assert f"default: `{role_readme.yaml_value(opt['default'])}`" in facts, (entry, name, facts)


def test_defaults_and_specs_of_every_role_agree():
    for role in ALL_ROLES:
        assert role_readme.check_defaults(role, ROLES / role, role_readme.load_specs(ROLES / role)) == [], role


def test_example_playbooks_parse(tmp_path):
    plays = []
    for role in ALL_ROLES:
        text = (ROLES / role / "README.md").read_text()
        blocks = re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
        assert blocks, f"{role}: no example playbook"
        for block in blocks:
            data = yaml.safe_load(block)
            assert isinstance(data, list) and all("hosts" in p for p in data), (role, block)
            plays += data
    playbook = tmp_path / "examples.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    res = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "--syntax-check", "-i", "localhost,",
                          str(playbook)], env=dict(os.environ, ANSIBLE_NOCOLOR="1"), capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# ---- mutations: a README that drifted from the specs is caught, naming the role and the variable -----------


@pytest.fixture
def diagnostics(tmp_path):
    """A copy of the diagnostics role to mutate."""
    dest = tmp_path / "roles" / "diagnostics"
    shutil.copytree(ROLES / "diagnostics", dest)
    return dest


def problems_of(role_dir):
    return [str(p) for p in role_readme.check_role(role_dir)]


def edit(path: Path, old: str, new: str, count: int = 1):
    text = path.read_text()
    assert text.count(old) >= count, old
    path.write_text(text.replace(old, new, count))


def test_the_copy_is_clean(diagnostics):
    assert problems_of(diagnostics) == []


def test_variable_missing_from_the_readme(diagnostics):
    readme = diagnostics / "README.md"
    text = readme.read_text()
    start = text.index("#### `diagnostics_report_refresh`")
    end = text.index("#### ", start + 1)
    readme.write_text(text[:start] + text[end:])
    assert problems_of(diagnostics) == [
        "role diagnostics: entry point main, variable diagnostics_report_refresh: missing from README.md"]


def test_wrong_default_in_the_readme(diagnostics):
    edit(diagnostics / "README.md", "Type: `float`; default: `10`.", "Type: `float`; default: `30`.")
    (problem,) = problems_of(diagnostics)
    assert problem.startswith("role diagnostics: entry point main, variable diagnostics_timeout: differs from "
                              "meta/argument_specs.yml:"), problem
    assert "default: `30`" in problem


def test_default_changed_in_the_specs_only(diagnostics):
    edit(diagnostics / "meta" / "argument_specs.yml", "default: on_state_change", "default: every_run")
    problems = problems_of(diagnostics)
    assert "role diagnostics: entry point main, variable diagnostics_report_refresh: default 'every_run' in the " \
           "specs, 'on_state_change' in defaults/main.yml" in problems
    assert any(p.startswith("role diagnostics: entry point main, variable diagnostics_report_refresh: differs")
               for p in problems), problems


def test_stale_description(diagnostics):
    edit(diagnostics / "meta" / "argument_specs.yml", "libvirt URI the collector diagnoses.",
         "libvirt URI the collector reads.")
    (problem,) = problems_of(diagnostics)
    assert problem.startswith("role diagnostics: entry point collector, variable diagnostics_uri: differs"), problem


def test_variable_the_specs_no_longer_have(diagnostics):
    specs_path = diagnostics / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(specs_path.read_text())
    del specs["argument_specs"]["remediate"]["options"]["diagnostics_resume_override"]
    specs_path.write_text(yaml.safe_dump(specs, sort_keys=False))
    assert problems_of(diagnostics) == [
        "role diagnostics: entry point remediate, variable diagnostics_resume_override: in README.md but not in "
        "meta/argument_specs.yml"]


def test_new_variable_in_the_specs(diagnostics):
    specs_path = diagnostics / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(specs_path.read_text())
    specs["argument_specs"]["collector"]["options"]["diagnostics_collector_user"] = {
        "type": "str", "default": "root", "description": ["Account the collector runs as."]}
    specs_path.write_text(yaml.safe_dump(specs, sort_keys=False))
    assert problems_of(diagnostics) == [
        "role diagnostics: entry point collector, variable diagnostics_collector_user: missing from README.md",
        "role diagnostics: entry point collector, variable diagnostics_collector_user: has a default in the specs "
        "but none in defaults/main.yml ('root')"]


def test_missing_section_and_markers(diagnostics):
    readme = diagnostics / "README.md"
    edit(readme, "## Check mode\n", "## Dry runs\n")
    assert problems_of(diagnostics) == [
        "role diagnostics: section 'Check mode': missing from README.md (a level-2 heading)"]
    edit(readme, role_readme.END, "")
    (_section, markers) = problems_of(diagnostics)
    assert markers.startswith("role diagnostics: README.md: ") and "exactly one pair of markers" in markers
    readme.unlink()
    (missing,) = problems_of(diagnostics)
    assert missing.startswith("role diagnostics: README.md: missing")


def test_rewrite_restores_the_section_and_keeps_the_prose(diagnostics):
    readme = diagnostics / "README.md"
    edit(readme, "## Limits\n", "## Limits\n\nA sentence a person added.\n")
    edit(readme, "Type: `float`; default: `10`.", "Type: `float`; default: `30`.")
    text = readme.read_text()
    start, end = text.index(role_readme.BEGIN), text.index(role_readme.END)
    assert role_readme.update_role(diagnostics) is True
    new = readme.read_text()
    assert new[:start] == text[:start]
    assert new[new.index(role_readme.END):] == text[end:]
    assert "A sentence a person added." in new
    assert problems_of(diagnostics) == []
    assert role_readme.update_role(diagnostics) is False


def test_command_line(diagnostics):
    cmd = [sys.executable, str(SCRIPT), "--roles-dir", str(diagnostics.parent)]
    ok = subprocess.run([*cmd, "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "1 role README(s) match" in ok.stdout, ok.stderr
    edit(diagnostics / "README.md", "Type: `float`; default: `10`.", "Type: `float`; default: `30`.")
    bad = subprocess.run([*cmd, "--check"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "role diagnostics: entry point main, variable diagnostics_timeout: differs" in bad.stderr
    fixed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert fixed.returncode == 0 and "variables section rewritten" in fixed.stdout, fixed.stderr
    assert subprocess.run([*cmd, "--check"], capture_output=True, check=False).returncode == 0


# ---- rendering ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,markdown", [
    ("See O(kvmops.fleet.kvm_resume#module:min_free) and O(x_dir).", "See `min_free` and `x_dir`."),
    ("V(5%) or C(a=b), M(kvmops.fleet.kvm_pause_facts)", "`5%` or `a=b`, `kvmops.fleet.kvm_pause_facts`"),
    ("the P(kvmops.fleet.hypervisor#role) role", "the `kvmops.fleet.hypervisor` role"),
    ("I(never) B(twice) U(https://x.example) L(the docs, https://d.example)",
     "*never* **twice** <https://x.example> [the docs](https://d.example)"),
    ("RV(kvmops.fleet.fleet_report#filter:_value.generated_at)", "`_value.generated_at`"),
    ("a <b> tag", "a &lt;b> tag"),
])
def test_markup(text, markdown):
    assert role_readme.markup(text) == markdown


def test_suboptions_required_choices_and_secrets():
    lines = role_readme.variable_block("bridge_list", {
        "type": "list", "elements": "dict", "required": True, "description": "Bridges to create.",
        "options": {"name": {"type": "str", "required": True, "description": "Interface name."},
                    "stp": {"type": "bool", "default": False, "description": "Spanning tree."},
                    "key": {"type": "str", "no_log": True, "choices": ["a", "b"],
                            "options": {"deep": {"type": "int", "default": 1}}}}})
    assert lines == [
        "#### `bridge_list`", "",
        "Type: `list of dict`; required.", "",
        "Bridges to create.", "",
        "Sub-options:", "",
        "- `name`: Type: `str`; required. Interface name.",
        "- `stp`: Type: `bool`; default: `false`. Spanning tree.",
        "- `key`: Type: `str`; no default (not set); choices: `a`, `b`; secret (never logged).",
        "  - `deep`: Type: `int`; default: `1`.",
        "",
    ]


@pytest.mark.parametrize("value,text", [("", "''"), ("0660", "'0660'"), ([], "[]"), ({}, "{}"), (10, "10"),
                                        (True, "true"), (["json", "html"], "[json, html]"), ("5%", "5%")])
def test_defaults_are_written_as_yaml(value, text):
    assert role_readme.yaml_value(value) == text
    assert yaml.safe_load(text) == value
