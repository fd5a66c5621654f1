"""The collector's install list (roles/diagnostics/tasks/collector.yml) holds every module_utils file the program
imports, and what those import, transitively: the host has only those files, no Ansible and no collection."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
MU = REPO / "plugins" / "module_utils"
PREFIX = "ansible_collections.kvmops.fleet.plugins.module_utils."


def imports(path: Path) -> set:
    """module_utils files (relative paths) ``path`` imports, at any level (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            rel = node.module[len(PREFIX):].replace(".", "/")
            if (MU / f"{rel}.py").is_file():
                out.add(f"{rel}.py")
            else:   # from ...module_utils.pkg import _mod
                out.update(f"{rel}/{a.name}.py" for a in node.names if (MU / rel / f"{a.name}.py").is_file())
                out.add(f"{rel}/__init__.py")
    return out


def test_install_list_is_transitively_complete():
    tasks = yaml.safe_load((REPO / "roles" / "diagnostics" / "tasks" / "collector.yml").read_text())
    (listed,) = [t["vars"]["__diagnostics_collector_files"] for t in tasks
                 if "__diagnostics_collector_files" in t.get("vars", {})][:1]
    todo = imports(REPO / "roles" / "diagnostics" / "files" / "kvmops_pause_collector.py")
    assert "forecast/_promtext.py" in todo and "forecast/_collect_io.py" in todo
    seen = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        todo |= imports(MU / rel)
    packages = {f"{Path(r).parent}/__init__.py" for r in seen}
    assert sorted((seen | packages) - set(listed)) == []
