#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_libvirt_network
short_description: Declare libvirt networks of forward mode bridge that hand host bridges to libvirt
version_added: 0.1.0
description:
  - Makes libvirt networks of forward mode V(bridge) exist as declared, the way operators give libvirt a host
    bridge that VMs attach to (C(<interface type='network'><source network='br0'/>)). Each network's definition is
    C(<network><name>NAME</name><forward mode='bridge'/><bridge name='BRIDGE'/></network>) and nothing more.
  - A present network is defined, started and its autostart set as declared. A network of that name that exists
    and matches is left alone. One that differs (another forward mode, another bridge, or anything more in its
    definition, such as an C(<ip>) or a C(<portgroup>)) is refused, naming every difference, unless O(force).
  - An absent network is stopped and undefined, but only when its forward mode is V(bridge). A NAT, routed,
    isolated or other network (such as libvirt's V(default)) is never removed, even with O(force).
  - A forward-mode-bridge network creates no link on the host and changes nothing on the bridge; libvirt only
    records the bridge's name and attaches domain interfaces to it when they start. The bridge itself is made
    by the P(kvmops.fleet.bridge#role) role (or anything else) before domains use the network.
  - Every option is checked before libvirt is called (names, each network once, one network per bridge); every
    libvirt call runs in a worker process bounded by O(timeout).
  - If an operation fails after others were applied, the task fails with V(changed=true); RV(changes) lists what
    was applied and the message says what was not. After the operations the networks are read back and the task
    fails when one is not as declared.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.IDEMPOTENT
  - kvmops.fleet._libvirt
attributes:
  check_mode:
    support: full
    details:
      - Predicts the same RV(changes), refusals and diff as the real run and calls no libvirt write.
  diff_mode:
    support: full
    details:
      - The diff shows each changed network's definition before and after (empty when it does not exist).
options:
  networks:
    description:
      - The networks to declare. Each name at most once; each bridge in at most one network of state V(present).
      - Networks of the host that are not listed are left alone.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the libvirt network (V(br0), V(host-bridge)). Letters, digits, V(_), V(.), V(+) and V(-), at most
            64, not starting with V(.), V(+) or V(-).
        type: str
        required: true
      bridge:
        description:
          - The Linux bridge the network hands to domains, 1 to 15 characters (the kernel's limit), letters, digits,
            V(_), V(.) and V(-). Required with O(networks[].state=present).
          - With O(networks[].state=absent), when given, the network is removed only if it is on this bridge.
          - On a local libvirt, the task warns when the host has no Linux bridge of that name (the network starts,
            but domains attached to it do not).
        type: str
      autostart:
        description: Start the network when libvirt starts.
        type: bool
        default: true
      state:
        description:
          - V(present) defines and starts the network; V(absent) stops and undefines it (forward mode V(bridge)
            only).
        type: str
        choices: [present, absent]
        default: present
  force:
    description:
      - Redefine a present network whose definition differs as declared, keeping its UUID. An active one is then
        stopped and started again (C(virsh net-destroy) and C(net-start)). For a network of forward mode bridge
        that moment detaches no domain; running domains keep their interfaces on the host bridge and their
        traffic flows on; a domain or interface started in that moment fails to start. Replacing a NAT or routed
        network (another forward mode) removes the bridge libvirt made for it and its DHCP and DNS, which cuts
        its domains off.
      - Remove an absent network of forward mode bridge that domain interfaces use now (counted by libvirt in
        the running network); without O(force) that is refused. Those domains keep running but do not start
        again until the network exists.
      - Never removes a network of another forward mode.
    type: bool
    default: false
  var_prefix:
    description:
      - Put before the name O(networks) in messages, so that they name the caller's variable (a role that passes
        V(bridge_libvirt_) gets messages that start with C(bridge_libvirt_networks[1].bridge)).
      - Lower-case letters, digits and V(_), at most 32.
    type: str
notes:
  - A network in use by domains is counted only while it is active (libvirt's C(connections)); defined domains
    that are shut off are not counted.
seealso:
  - name: libvirt network XML, bridge forwarding
    description: What a network of forward mode bridge is.
    link: https://libvirt.org/formatnetwork.html#using-an-existing-host-bridge
  - module: kvmops.fleet.kvm_bridge_apply
    description: Makes the host bridges these networks name, commit-confirm.
"""

EXAMPLES = r"""
- name: Give libvirt the host bridges br0 and br1 as networks of the same names
  kvmops.fleet.kvm_libvirt_network:
    networks:
      - name: br0
        bridge: br0
      - name: storage
        bridge: br1
        autostart: false
  become: true

- name: Remove a forward-mode-bridge network (a NAT network such as default is refused)
  kvmops.fleet.kvm_libvirt_network:
    networks:
      - name: old-bridge
        state: absent
  become: true

- name: Point an existing network at another bridge (it is redefined, then stopped and started again)
  kvmops.fleet.kvm_libvirt_network:
    networks:
      - name: br0
        bridge: br-vm
    force: true
  become: true
"""

RETURN = r"""
changes:
  description:
    - What was (or in check mode would be) done, in order.
    - When the task fails after part of it was applied, what was applied (the task then has V(changed=true)).
  returned: always
  type: list
  elements: str
  sample: ['defined network br0', 'started network br0', 'autostart of network br0 on']
networks:
  description: Each declared network after the run (predicted in check mode), in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The network's name.
      type: str
      sample: br0
    state:
      description: The declared state.
      type: str
      sample: present
    bridge:
      description: The declared bridge (V(null) when not given for an absent network).
      type: str
      sample: br0
    exists:
      description: Whether the network exists.
      type: bool
      sample: true
    active:
      description: Whether the network is active.
      type: bool
      sample: true
    autostart:
      description: Whether it starts with libvirt.
      type: bool
      sample: true
    changes:
      description: What was done to this network.
      type: list
      elements: str
      sample: ['defined network br0', 'started network br0', 'autostart of network br0 on']
    refused:
      description: Always V(false) on success (a refusal fails the task).
      type: bool
      sample: false
  sample:
    - {name: br0, state: present, bridge: br0, exists: true, active: true, autostart: true, refused: false,
       changes: ['defined network br0', 'started network br0', 'autostart of network br0 on']}
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    LIBVIRT_COMMON_ARGS,
    KvmError,
    check_timeout,
    require_libvirt,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    LIBVIRT_COMMON_RULES,
    Custom,
    OptionError,
    Text,
    check,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.network import _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.network._libvirt_net_io import (
    ApplyError,
    apply_ops,
    bridge_missing,
    read_networks,
)

ARGUMENT_SPEC = {
    "networks": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "bridge": {"type": "str"},
            "autostart": {"type": "bool", "default": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
    },
    "force": {"type": "bool", "default": False},
    **LIBVIRT_COMMON_ARGS,
    "var_prefix": {"type": "str"},
}
_PREFIX = r"^[a-z0-9_]{1,32}$"
# every option's rule (common/_validate.py), checked before libvirt is called; what depends on the networks the
# host has (a network that differs, one of another forward mode to remove) follows in _plan.plan, before any change
RULES = {
    "networks": Custom(_plan.check_networks, "each name once, each bridge in one present network, bridge when present"),
    "networks[].name": Text(
        "a libvirt network name", pattern=_plan.NAME, example="br0 or host-bridge", max_chars=_plan.NAME_MAX
    ),
    "networks[].bridge": Text(
        "a Linux bridge name, 1 to 15 characters (IFNAMSIZ)",
        pattern=_plan.IFNAME,
        example="br0",
        max_chars=_plan.IFNAMSIZ,
    ),
    **LIBVIRT_COMMON_RULES,
    "var_prefix": Text("the prefix of the caller's variable names", pattern=_PREFIX, example="bridge_", max_chars=32),
}


def _named(module, msg: str) -> str:
    """Messages name O(networks) as the caller's variable (O(var_prefix)), wherever they name it."""
    prefix = module.params.get("var_prefix")
    if not prefix or not isinstance(prefix, str) or not re.match(_PREFIX, prefix) or msg.startswith("var_prefix"):
        return msg
    return re.sub(r"(?<![A-Za-z0-9_])networks(?=[\[.:])", prefix + "networks", msg)


def _warnings(p: dict, read: dict) -> list:
    out = []
    present = [n for n in p["networks"] if n["state"] == "present"]
    for i, net in enumerate(p["networks"]):
        if net["state"] == "present" and bridge_missing(p["uri"], net["bridge"]):
            out.append(
                f"networks[{i}].bridge: this host has no Linux bridge {net['bridge']!r}: network {net['name']} is "
                "defined and started, but domains attached to it fail to start until the bridge exists"
            )
    for other, xml in sorted(read["others"].items()):
        try:
            info = _plan.parse(xml)
        except _plan.NetworkError:
            continue
        for net in present:
            if info["bridge"] == net["bridge"]:
                out.append(
                    f"network {other} (forward mode {_plan.mode_text(info['forward_mode'])}, not declared here) also "
                    f"uses bridge {net['bridge']}, the bridge of network {net['name']}"
                )
    return out


def run(module) -> dict:
    p = module.params
    check_timeout(p["timeout"])
    started = time.monotonic()
    names = [n["name"] for n in p["networks"]]
    read = read_networks(p["uri"], names, p["timeout"])
    result = _plan.plan(p["networks"], read["networks"], p["force"])
    if result["refusals"]:
        raise _plan.NetworkError(". ".join(result["refusals"]))
    for warning in _warnings(p, read):
        module.warn(_named(module, warning))
    out = {
        "changed": bool(result["ops"]),
        "changes": result["changes"],
        "networks": result["networks"],
        "diff": result["diff"],
    }
    if result["ops"] and not module.check_mode:
        left = p["timeout"] - (time.monotonic() - started)
        try:
            after = apply_ops(p["uri"], result["ops"], names, max(left, 1.0))
        except ApplyError as exc:
            exc.not_done = [c for c in result["changes"] if c not in exc.done]
            raise
        problems = _plan.verify(p["networks"], after)
        if problems:
            out["failed"] = True
            out["msg"] = (
                f"applied ({', '.join(result['changes'])}), but read back from libvirt afterwards: "
                + "; ".join(problems)
            )
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:  # check_module(), with the caller's variable names (O(var_prefix)) in the message
        check(module.params, ARGUMENT_SPEC, RULES)
    except OptionError as exc:
        module.fail_json(msg=_named(module, str(exc)), changed=False, changes=[])
    require_libvirt(module)
    try:
        out = run(module)
    except ApplyError as exc:
        not_done = getattr(exc, "not_done", [])
        why = f". Applied: {', '.join(exc.done)}" if exc.done else "; nothing was changed"
        module.fail_json(
            msg=f"{exc}{why}; not applied: {', '.join(not_done) or '-'}", changed=bool(exc.done), changes=exc.done
        )
    except (KvmError, _plan.NetworkError) as exc:
        module.fail_json(msg=_named(module, str(exc)), changed=False, changes=[])
    if out.get("failed"):
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
