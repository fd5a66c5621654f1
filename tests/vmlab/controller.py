"""The controller's side of a fleet: ansible-playbook and SSH from the run's network namespace, over the links.

A network change is proven with the controller reaching the host over the very link being changed, so these
run inside the fleet's namespace (``Fleet.netns_argv``), where the controller holds its address on each link and
reaches the VMs at their link addresses only. ``Fleet.run_dir/controller-inventory.json`` lists every VM at its
address on ``link``; plays and their variables are written beside it, one pair per run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR"]


def write_inventory(fleet, link: str = "lan") -> Path:
    """The fleet's VMs at their addresses on ``link`` (SSH keepalives of 2 s x 3, so a cut link is noticed)."""
    inv = {"all": {"vars": {"ansible_user": "root", "ansible_ssh_private_key_file": str(fleet.key),
                            "ansible_ssh_common_args": " ".join(
                                [*SSH_OPTIONS, "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"]),
                            "ansible_python_interpreter": "/usr/bin/python3"},
                   "hosts": {vm.name: {"ansible_host": vm.addr(link)} for vm in fleet}}}
    path = fleet.run_dir / "controller-inventory.json"
    path.write_text(json.dumps(inv))
    return path


def playbook_argv(fleet, play: dict, variables: dict, check: bool = False) -> tuple[list, dict]:
    """argv and environment of ansible-playbook running ``play`` with ``variables`` (extra vars) from the
    controller's namespace, JSON output, --diff (and --check)."""
    name = uuid.uuid4().hex[:8]
    (fleet.run_dir / f"play-{name}.yml").write_text(json.dumps([play]))  # JSON is YAML
    (fleet.run_dir / f"play-{name}.vars.json").write_text(json.dumps(variables))
    # the controller's SSH masters of this run only: another run's namespace has the same addresses
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(fleet.run_dir / "controller-cp"), ANSIBLE_HOST_KEY_CHECKING="0")
    argv = fleet.netns_argv([str(PLAYBOOK), "-i", str(fleet.run_dir / "controller-inventory.json"),
                             str(fleet.run_dir / f"play-{name}.yml"), "-e",
                             "@" + str(fleet.run_dir / f"play-{name}.vars.json"), "--diff"]
                            + (["--check"] if check else []))
    return argv, env


def run_play(fleet, host: str, play: dict, variables: dict, check: bool = False, timeout: float = 600) -> dict:
    """``play`` (hosts: ``host``) from the controller's namespace -> {"rc", "stats" (of ``host``), "results": the
    task results of ``host`` with their task names under "task", "seconds"}."""
    argv, env = playbook_argv(fleet, dict(play, hosts=host), variables, check)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - t0
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    results = [dict(t["hosts"][host], task=t["task"]["name"]) for t in data["plays"][0]["tasks"]
               if host in t["hosts"]]
    return {"rc": proc.returncode, "stats": data["stats"][host], "results": results, "seconds": seconds}


def task(res: dict, prefix: str) -> dict:
    """The last result of a task whose name (without the role prefix) starts with ``prefix``."""
    found = [r for r in res["results"] if r["task"].split(" : ", 1)[-1].startswith(prefix)]
    assert found, [r["task"] for r in res["results"]]
    return found[-1]


def ssh_over_link(fleet, vm, command: str = "hostname", link: str = "lan") -> str:
    """A new SSH connection from the controller's namespace over ``link`` (never a shared master) -> stdout."""
    argv = fleet.netns_argv(["ssh", "-i", str(fleet.key), *SSH_OPTIONS, "-o", "ConnectTimeout=15",
                             "-o", "ControlMaster=no", f"root@{vm.addr(link)}", command])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip()
