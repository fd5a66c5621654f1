"""The Ansible inventory of a running fleet (YAML; JSON when PyYAML is missing, which YAML reads)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .fleet import SSH_OPTS

try:
    import yaml
except ImportError:  # the CLI may run under a python without PyYAML
    yaml = None

if TYPE_CHECKING:
    from .fleet import Fleet


def inventory_data(fleet: Fleet) -> dict:
    """``all`` holds the connection settings (127.0.0.1 only, per-run key, root); every VM is a
    host with its forwarded SSH port and ``vmlab_links`` / ``vmlab_disks``; every link is a group
    ``vmlab_link_<name>`` of its members. Group ``vmlab`` has all VMs."""
    common = " ".join(SSH_OPTS)
    hosts = {}
    for vm in fleet:
        hosts[vm.name] = {
            "ansible_port": vm.ssh_port,
            "vmlab_links": {
                n.link: {
                    "iface": n.iface,
                    "mac": n.mac,
                    "address": n.address.split("/")[0] if n.address else None,
                    "prefix": int(n.address.split("/")[1]) if n.address else None,
                    "subnet": fleet.link_subnets[n.link],
                }
                for n in vm.nics
            },
            "vmlab_disks": [{"dev": d.dev, "by_id": d.by_id, "size": d.size} for d in vm.disks],
            "vmlab_memory_mb": vm.memory_mb,
        }
    children = {
        f"vmlab_link_{link.name}": {
            "hosts": {vm.name: {} for vm in fleet if any(n.link == link.name for n in vm.nics)}
        }
        for link in fleet.spec.links
    }
    return {
        "all": {
            "vars": {
                "ansible_host": "127.0.0.1",
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(fleet.key),
                "ansible_ssh_common_args": common,
                "ansible_python_interpreter": "/usr/bin/python3",
                "vmlab_run_id": fleet.run_id,
            },
            "children": {"vmlab": {"hosts": hosts}, **children},
        }
    }


def write_inventory(fleet: Fleet, path: Path) -> Path:
    data = inventory_data(fleet)
    if yaml is not None:
        text = f"# vmlab run {fleet.run_id} (generated)\n" + yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.write_text(text)
    return path
