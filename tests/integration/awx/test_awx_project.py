"""The example AWX project (docs/docsite/awx/project) and the AWX guide cover every entry point, and hold up.

- every playbook in playbooks/ has a project playbook that imports it, and every role entry point is run by
  some project playbook (directly, or through the collection playbook it imports);
- AWX would list each project playbook (its own discovery rule, a line regex) and each passes
  ``ansible-playbook --syntax-check`` against the collection;
- the guide names every playbook, project file and entry point, and its variable tables equal the argument
  specs (``python tests/integration/awx/test_awx_project.py`` prints the tables to paste).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import docutils.core  # antsibull-docs' dependency
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PROJECT = REPO / "docs" / "docsite" / "awx" / "project"
GUIDE = REPO / "docs" / "docsite" / "rst" / "guide_awx.rst"
# awx/main/utils/ansible.py: a file is offered as a playbook when a line matches this
AWX_PLAYBOOK_RE = re.compile(r"^\s*?-?\s*?(?:hosts|include|import_playbook):\s*?.*?$")
AWX_SKIPPED_DIRS = {"roles", "tasks", "group_vars", "host_vars"}


def project_playbooks() -> list[Path]:
    return sorted(p for p in PROJECT.glob("*.yml"))


def collection_playbooks() -> dict[str, Path]:
    return {p.stem: p for p in sorted((REPO / "playbooks").glob("*.yml"))}


def role_entry_points() -> dict[tuple[str, str], dict]:
    out = {}
    for spec in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        for ep, body in yaml.safe_load(spec.read_text())["argument_specs"].items():
            out[(spec.parts[-3], ep)] = body.get("options") or {}
    return out


def entry_points_run_by(path: Path, seen: set[Path] | None = None) -> set[tuple[str, str]]:
    """(role, entry point) pairs a playbook runs, following imports of kvmops.fleet playbooks."""
    seen = seen if seen is not None else set()
    if path in seen:
        return set()
    seen.add(path)
    found: set[tuple[str, str]] = set()

    def role_name(name: str) -> str | None:
        return name.removeprefix("kvmops.fleet.") if name.startswith("kvmops.fleet.") else None

    def walk(node):
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            for key in ("import_playbook", "ansible.builtin.import_playbook"):
                target = node.get(key)
                if isinstance(target, str) and target.startswith("kvmops.fleet."):
                    found.update(entry_points_run_by(REPO / "playbooks" / f"{target.split('.')[-1]}.yml", seen))
            for r in node.get("roles", []) or []:
                name = role_name(r if isinstance(r, str) else r.get("role", r.get("name", "")))
                if name:
                    found.add((name, "main"))
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role",
                        "import_role"):
                if isinstance(node.get(key), dict) and role_name(node[key].get("name", "")):
                    found.add((role_name(node[key]["name"]), node[key].get("tasks_from", "main")))
            for key in ("tasks", "pre_tasks", "post_tasks", "block", "rescue", "always"):
                walk(node.get(key))

    walk(yaml.safe_load(path.read_text()))
    return found


def variable_tables() -> str:
    """The guide's variable tables, from the argument specs."""
    lines = []
    for (role, ep), options in role_entry_points().items():
        lines += [f"``kvmops.fleet.{role}``, entry point ``{ep}``:", "", ".. list-table::", "   :header-rows: 1",
                  "   :widths: 50 15 35", "", "   * - variable", "     - type", "     - default"]
        for name, o in options.items():
            kind = o.get("type", "str") + (f" of {o.get('elements', 'str')}" if o.get("type") == "list" else "")
            default = o.get("default")
            shown = "``\"\"``" if default == "" else "(none)" if default is None else (
                "``" + yaml.safe_dump(default, default_flow_style=True, width=1000).strip().removesuffix("...")
                .strip() + "``")
            lines += [f"   * - ``{name}``", f"     - {kind}", f"     - {shown}"]
        lines.append("")
    return "\n".join(lines)


def test_every_collection_playbook_has_a_project_playbook():
    for name in collection_playbooks():
        wrapper = PROJECT / f"{name}.yml"
        assert wrapper.is_file(), f"add {wrapper.relative_to(REPO)} importing kvmops.fleet.{name}"
        plays = yaml.safe_load(wrapper.read_text())
        assert any(p.get("import_playbook") == f"kvmops.fleet.{name}" for p in plays), wrapper


def test_every_role_entry_point_is_run_by_a_project_playbook():
    run = set()
    for p in project_playbooks():
        run |= entry_points_run_by(p)
    missing = set(role_entry_points()) - run
    assert not missing, f"no project playbook runs these role entry points: {sorted(missing)}"


def test_awx_lists_every_project_playbook():
    for p in project_playbooks():
        rel = p.relative_to(PROJECT)
        assert not (set(rel.parts[:-1]) & AWX_SKIPPED_DIRS) and not any(x.startswith(".") for x in rel.parts)
        assert any(AWX_PLAYBOOK_RE.match(line) for line in p.read_text().splitlines()), f"AWX would not list {rel}"


@pytest.mark.parametrize("playbook", [p.name for p in project_playbooks()])
def test_project_playbook_syntax(playbook, tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    hypervisors:\n      hosts:\n        hv1:\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "--syntax-check", "-i", str(inv),
                           playbook], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_guide_names_every_playbook_project_file_and_entry_point():
    text = GUIDE.read_text()
    for name in collection_playbooks():
        assert f"``kvmops.fleet.{name}``" in text, f"guide_awx.rst does not name kvmops.fleet.{name}"
    for p in project_playbooks():
        assert f"``{p.name}``" in text, f"guide_awx.rst does not name the project file {p.name}"
    for role, ep in role_entry_points():
        assert f"``kvmops.fleet.{role}``, entry point ``{ep}``" in text, (role, ep)


def test_guide_is_clean_restructuredtext():
    warnings = io.StringIO()
    docutils.core.publish_doctree(GUIDE.read_text(), settings_overrides={
        "warning_stream": warnings, "report_level": 2, "halt_level": 5})
    assert not warnings.getvalue(), warnings.getvalue()


def test_guide_variable_tables_equal_the_argument_specs():
    text = GUIDE.read_text()
    start, end = text.index(".. VARIABLES-START"), text.index(".. VARIABLES-END")
    block = text[text.index("\n", start) + 1:end].strip()
    assert block == variable_tables().strip(), (
        "guide_awx.rst's variable tables differ from the argument specs; regenerate them with "
        "`python tests/integration/awx/test_awx_project.py` and paste between the VARIABLES markers")


if __name__ == "__main__":
    print(variable_tables())
