"""The execution environment of meta/execution-environment.yml, as far as it can be proven without a registry.

No container registry is reachable here, so the image itself cannot be built. What is proven instead:
- ``ansible-builder create`` turns the definition into a complete build context (Containerfile, the
  requirement files, the collection requirement, builder's scripts), and the Containerfile is well formed;
- the collection install step installs kvmops.fleet, and builder's own introspection script, run on the
  collection tarball installed as that step would install it, finds the collection's Python and system
  requirements (the same file is the collection's EE metadata; its paths resolve from the collection root);
- every system package of ee-bindep.txt for Debian resolves with bindep inside a Debian 12 fleet
  container and exists in Debian's archive (apt-cache policy, apt-get install --simulate).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from ansible.release import __version__ as ansible_core_version
from ansible_builder.ee_schema import validate_schema
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
EE_FILE = REPO / "meta" / "execution-environment.yml"
EE = yaml.safe_load(EE_FILE.read_text())
FLEET_IMAGE = "localhost/kvmops-fleet-debian:12"
KNOWN_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "LABEL", "ENTRYPOINT", "CMD",
                      "EXPOSE", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD"}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 300)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def requirement_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def parse_containerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments and blank lines dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full, pending = pending + line, ""
        word, args = [*full.strip().split(None, 1), ""][:2]
        out.append((word, args.strip()))
    assert not pending, f"Containerfile ends inside a continued line: {pending!r}"
    return out


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    ctx = tmp_path_factory.mktemp("ee") / "context"
    run([str(BIN / "ansible-builder"), "create", "-f", str(EE_FILE), "--context", str(ctx), "-v3"])
    return ctx


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory) -> Path:
    """The collection as the EE's galaxy stage installs it: built into a tarball, installed by ansible-galaxy."""
    dist, root = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("collections")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(REPO)])
    (tarball,) = dist.glob("kvmops-fleet-*.tar.gz")
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p", str(root), str(tarball)],
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root)))
    assert (root / "ansible_collections" / "kvmops" / "fleet" / "MANIFEST.json").is_file()
    return root


# -- the definition ----------------------------------------------------------------------------------------

def test_definition_is_builder_v3_and_pins_a_core_that_meets_requires_ansible():
    validate_schema(EE)                                  # raises on any schema error
    assert EE["version"] == 3
    base = EE["images"]["base_image"]["name"]
    assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[a-z0-9._/-]+:[A-Za-z0-9._-]+", base), base   # registry/name:tag
    assert not base.endswith(":latest"), "pin the base image tag"
    deps = EE["dependencies"]
    core = deps["ansible_core"]["package_pip"]
    assert core.startswith("ansible-core")
    ee_spec = SpecifierSet(core.removeprefix("ansible-core"))
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    floor = Version(runtime["requires_ansible"].removeprefix(">="))
    assert floor in ee_spec and Version(ansible_core_version) in ee_spec, (core, runtime["requires_ansible"])
    older = Version(f"{floor.major}.{floor.minor - 1}.99")
    assert older not in ee_spec, f"{core} admits {older}, below requires_ansible"
    assert deps["ansible_runner"]["package_pip"].startswith("ansible-runner")
    assert deps["galaxy"] == {"collections": [{"name": "kvmops.fleet", "version": ">=0.1.0"}]}


def test_requirement_files():
    assert requirement_lines(REPO / "meta" / "ee-requirements.txt") == ["libvirt-python"]
    bindep = requirement_lines(REPO / "meta" / "ee-bindep.txt")
    for line in bindep:
        assert re.fullmatch(r"[a-z0-9.+-]+( \[[a-z0-9:!. -]+\])?", line), f"not a bindep line: {line!r}"
    names = {ln.split()[0] for ln in bindep}
    assert {"libvirt-devel", "libvirt-dev", "gcc", "libvirt-libs", "libvirt0"} <= names
    runtime = [ln for ln in bindep if "compile" not in ln]
    assert runtime and all("libvirt-dev" not in ln and "gcc" not in ln for ln in runtime)


# -- the build context -------------------------------------------------------------------------------------

def test_context_has_containerfile_requirements_and_scripts(context):
    build = context / "_build"
    assert (context / "Containerfile").is_file()
    assert (build / "requirements.txt").read_text() == (REPO / "meta" / "ee-requirements.txt").read_text()
    assert (build / "bindep.txt").read_text() == (REPO / "meta" / "ee-bindep.txt").read_text()
    assert yaml.safe_load((build / "requirements.yml").read_text()) == EE["dependencies"]["galaxy"]
    scripts = {p.name for p in (build / "scripts").iterdir()}
    assert {"assemble", "install-from-bindep", "introspect.py", "check_galaxy", "check_ansible",
            "entrypoint"} <= scripts


def test_containerfile_is_well_formed(context):
    steps = parse_containerfile((context / "Containerfile").read_text())
    unknown = [s for s in steps if s[0] not in KNOWN_INSTRUCTIONS]
    assert not unknown, unknown
    first_from = next(n for n, s in enumerate(steps) if s[0] == "FROM")
    args = dict(re.fullmatch(r'(\w+)="(.*)"', a).groups() for i, a in steps[:first_from] if i == "ARG")
    for i, a in steps[first_from:]:                     # stages re-declare global ARGs to use them
        assert i != "ARG" or a in args, f"stage ARG {a} has no global value"
    assert args["EE_BASE_IMAGE"] == EE["images"]["base_image"]["name"]
    assert args["PKGMGR"] == EE["options"]["package_manager_path"]
    assert args["PYCMD"] == EE["dependencies"]["python_interpreter"]["python_path"]
    refs = args["ANSIBLE_INSTALL_REFS"].split()
    assert EE["dependencies"]["ansible_core"]["package_pip"] in refs
    assert EE["dependencies"]["ansible_runner"]["package_pip"] in refs
    stages = []
    for instr, a in steps:
        if instr == "FROM":
            m = re.fullmatch(r"(\S+) AS (\w+)", a)
            assert m, f"FROM without a stage name: {a}"
            src = m.group(1)
            assert src == "$EE_BASE_IMAGE" or src in stages, f"FROM {src}: neither the base image nor an earlier stage"
            stages.append(m.group(2))
        elif instr == "COPY":
            words = a.split()
            frm = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
            assert all(f in stages for f in frm), f"COPY from an unknown stage: {a}"
            if not frm:                                  # a context path: must exist in the context
                assert (context / words[-2]).exists(), f"COPY of {words[-2]}, missing from the context"
        elif instr in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(a), list), f"{instr} is not exec form"
        elif instr in ("RUN", "ENV", "WORKDIR", "USER", "LABEL"):
            assert a, f"{instr} without arguments"
        for var in re.findall(r"\$(\w+)", a):
            assert var in args or instr == "RUN", f"{instr} uses ${var}, which no ARG declares"
    assert stages == ["base", "galaxy", "builder", "final"]
    assert steps[-2:] == [("ENTRYPOINT", '["/opt/builder/bin/entrypoint", "dumb-init"]'), ("CMD", '["bash"]')]


def test_galaxy_stage_installs_kvmops_fleet(context):
    steps = parse_containerfile((context / "Containerfile").read_text())
    galaxy = steps[steps.index(("FROM", "base AS galaxy")):steps.index(("FROM", "base AS builder"))]
    install = [a for i, a in galaxy if i == "RUN" and "ansible-galaxy collection install" in a]
    assert len(install) == 1 and "-r requirements.yml" in install[0], galaxy
    assert "--collections-path \"/usr/share/ansible/collections\"" in install[0]
    order = [s for s in galaxy if s[0] in ("COPY", "WORKDIR") or s[1] in install]
    assert order == [("COPY", "_build /build"), ("WORKDIR", "/build"), ("RUN", install[0])]
    req = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert [c["name"] for c in req["collections"]] == ["kvmops.fleet"]


def test_introspection_finds_the_collections_requirements(context, installed_collection, tmp_path):
    """Builder's introspect step, as the Containerfile runs it, on kvmops.fleet as the galaxy stage installs it."""
    steps = parse_containerfile((context / "Containerfile").read_text())
    (line,) = [a for i, a in steps if i == "RUN" and "introspect.py introspect" in a]
    argv = shlex.split(line)
    assert argv[:3] == ["$PYCMD", "/output/scripts/introspect.py", "introspect"]
    opts = dict(a.split("=", 1) for a in argv[3:])
    assert opts == {"--user-pip": "requirements.txt", "--user-bindep": "bindep.txt",
                    "--write-bindep": "/tmp/src/bindep.txt", "--write-pip": "/tmp/src/requirements.txt"}
    build = context / "_build"
    out_pip, out_bindep = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", str(installed_collection),
         f"--user-pip={build / 'requirements.txt'}", f"--user-bindep={build / 'bindep.txt'}",
         f"--write-pip={out_pip}", f"--write-bindep={out_bindep}"])
    ours = requirement_lines(REPO / "meta" / "ee-bindep.txt")
    pip_lines, bindep_lines = requirement_lines(out_pip), requirement_lines(out_bindep)
    assert "libvirt-python  # from collection kvmops.fleet" in pip_lines, pip_lines
    assert [ln.split("  # from collection ")[0] for ln in bindep_lines if ln.endswith("kvmops.fleet")] == ours
    # the root symlinks are what the metadata reading resolves; they must ship as links into meta/
    fleet = installed_collection / "ansible_collections" / "kvmops" / "fleet"
    for name in ("ee-requirements.txt", "ee-bindep.txt"):
        assert (fleet / name).is_symlink() and os.readlink(fleet / name) == f"meta/{name}"


# -- bindep on Debian ------------------------------------------------------------------------------------

def _bindep_site(dest: Path) -> Path:
    """bindep and its pure-Python dependencies, copied from this venv, for the container's python3 (3.11)."""
    for dist in ("bindep", "distro", "packaging", "Parsley", "pbr"):
        d = importlib.metadata.distribution(dist)
        for f in d.files or []:
            src = Path(d.locate_file(f))
            if "__pycache__" in f.parts or ".." in f.parts or not src.is_file():
                continue
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def test_bindep_resolves_on_debian_12_and_every_package_exists(tmp_path):
    have_image = shutil.which("podman") and subprocess.run(["podman", "image", "exists", FLEET_IMAGE], timeout=60,
                                                           check=False).returncode == 0
    if not have_image:
        pytest.skip(f"podman with {FLEET_IMAGE} is needed (hack/fleet-image.sh)")
    site = _bindep_site(tmp_path / "site")
    name = f"kvmawx-bindep-{uuid.uuid4().hex[:8]}"
    run(["podman", "run", "-d", "--name", name, "-v", f"{site}:/opt/bindep:ro",
         "-v", f"{REPO / 'meta' / 'ee-bindep.txt'}:/ee/bindep.txt:ro", "-e", "PYTHONPATH=/opt/bindep",
         FLEET_IMAGE, "sleep", "infinity"])
    try:
        def sh(script: str, ok=(0,)) -> subprocess.CompletedProcess:
            proc = subprocess.run(["podman", "exec", name, "bash", "-c", script], capture_output=True, text=True,
                                  timeout=300, check=False)
            assert proc.returncode in ok, f"{script}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            return proc

        assert "VERSION_ID=\"12\"" in sh("cat /etc/os-release").stdout
        profiles = sh("python3 -m bindep -f /ee/bindep.txt --profiles").stdout
        assert {"platform:dpkg", "platform:debian-12", "compile"} <= set(profiles.split())
        wanted = sh("python3 -m bindep -f /ee/bindep.txt -l newline compile").stdout.split()
        runtime = sh("python3 -m bindep -f /ee/bindep.txt -l newline").stdout.split()
        expected = {ln.split()[0] for ln in requirement_lines(REPO / "meta" / "ee-bindep.txt")
                    if "platform:rpm" not in ln}
        assert set(wanted) == expected and set(runtime) == {"libvirt0", "openssh-client"}, (wanted, runtime)
        # bindep's own check against dpkg: the build packages are missing from the minimal image (rc 1)
        missing = sh("python3 -m bindep -f /ee/bindep.txt -b compile", ok=(1,)).stdout.split()
        assert missing and set(missing) <= set(wanted)
        sh("apt-get update -qq")
        pkgs = " ".join(wanted)
        policy = sh(f"LC_ALL=C apt-cache policy {pkgs}").stdout
        candidates = dict(re.findall(r"^(\S+):\n(?:\s+Installed:.*\n)\s+Candidate: (\S+)", policy, re.M))
        assert set(candidates) == set(wanted), policy
        assert all(v != "(none)" for v in candidates.values()), candidates        # real packages, not virtual
        sim = sh(f"LC_ALL=C apt-get install --simulate -y {pkgs}").stdout
        for pkg in missing:
            assert re.search(rf"^Inst {re.escape(pkg)} ", sim, re.M), f"{pkg} would not be installed:\n{sim}"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120, check=False)
    gone = subprocess.run(["podman", "container", "exists", name], capture_output=True, timeout=60, check=False)
    assert gone.returncode == 1, f"container {name} left behind"
