"""Build the collection tarball, install it offline, and load every plugin and role doc from it.

This catches a broken galaxy.yml, a build_ignore that leaks caches or venvs into the tarball (or
drops something the collection needs), and documentation that ansible-doc cannot load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())

# what must never ship: caches, venvs, build output, developer-only tooling
FORBIDDEN_PARTS = {".venv", ".build", ".cache", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "hack", ".ci"}


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)])
    (path,) = out.glob("kvmops-fleet-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory) -> dict[str, str]:
    """Install offline (no Galaxy server is reachable) into an empty collections path."""
    root = tmp_path_factory.mktemp("collections")
    env = dict(os.environ)
    # only the installed copy (plus the venv's bundled collections via sys.path) may be found; also for the
    # install itself, which otherwise finds the checkout's link tree and installs nothing ("already installed")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(root)
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(root), str(tarball)], env=env)
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def test_tarball_name_and_manifest(tarball):
    assert tarball.name == f"kvmops-fleet-{GALAXY['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("kvmops", "fleet", "0.1.0")
    assert info["license"] == ["GPL-3.0-or-later"]
    assert info["dependencies"] == GALAXY["dependencies"]


def test_tarball_leaves_out_caches_and_tooling(tarball):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    leaked = sorted(n for n in names if FORBIDDEN_PARTS & set(Path(n).parts) or n.endswith((".pyc", ".tar.gz")))
    assert not leaked, leaked


def test_tarball_has_what_the_collection_needs(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    wanted = {"meta/runtime.yml", "README.md", "changelogs/changelog.yaml", "docs/docsite/extra-docs.yml"}
    # the EE definition / collection EE metadata, its files and the root links its metadata reading resolves
    wanted |= {"meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
               "ee-requirements.txt", "ee-bindep.txt"}
    wanted |= {str(p.relative_to(REPO)) for p in (REPO / "plugins").rglob("*.py") if "__pycache__" not in p.parts}
    wanted |= {str(p.relative_to(REPO)) for p in (REPO / "playbooks").glob("*.yml")}
    assert wanted - names == set()


def _listed(env: dict[str, str], plugin_type: str) -> set[str]:
    out = run([str(BIN / "ansible-doc"), "-t", plugin_type, "-l", "-j", "kvmops.fleet"], env=env).stdout
    return set(json.loads(out))


def test_every_module_doc_loads(installed):
    modules = {f"kvmops.fleet.{p.stem}" for p in (REPO / "plugins" / "modules").glob("*.py")}
    assert _listed(installed, "module") == modules
    for name in sorted(modules):
        doc = json.loads(run([str(BIN / "ansible-doc"), "-j", name], env=installed).stdout)[name]
        assert doc["doc"]["module"] == name.rsplit(".", 1)[1]
        assert doc["doc"]["short_description"]
        assert doc["examples"].strip()
        assert doc["return"], f"{name} documents no return values"


def test_every_role_argument_spec_loads(installed):
    roles = {f"kvmops.fleet.{p.name}" for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir()}
    assert _listed(installed, "role") == roles
    for name in sorted(roles):
        doc = json.loads(run([str(BIN / "ansible-doc"), "-t", "role", "-j", name], env=installed).stdout)
        entry_points = doc[name]["entry_points"]
        assert "main" in entry_points, f"{name} has no main entry point in meta/argument_specs.yml"
