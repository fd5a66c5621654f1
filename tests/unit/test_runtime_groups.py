"""meta/runtime.yml's action group and the AWX guide's list of host modules name every module the collection
ships (a module left out of the group silently ignores a play's module_defaults for the group)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list:
    """The modules the collection ships: those git tracks (a module being written in the same tree is not shipped
    yet), or every file where there is no git (a copy of the collection)."""
    try:
        out = subprocess.run(["git", "ls-files", "plugins/modules"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    paths = [Path(p) for p in out] or list((ROOT / "plugins" / "modules").glob("*.py"))
    return sorted(p.stem for p in paths if p.suffix == ".py" and not p.name.startswith("_"))


MODULES = _modules()


def test_every_module_is_in_the_kvm_action_group():
    groups = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]
    assert sorted(groups["kvm"]) == MODULES
    assert len(groups["kvm"]) == len(set(groups["kvm"]))


def test_the_awx_guide_lists_every_host_module():
    text = (ROOT / "docs" / "docsite" / "rst" / "guide_awx.rst").read_text()
    para = text.split("* **On the hypervisors, over SSH:**", 1)[1].split("\n* ", 1)[0]
    listed = re.findall(r"``((?:kvm|drbd|cluster)_[a-z_]+)``", para)
    assert sorted(set(listed)) == MODULES
