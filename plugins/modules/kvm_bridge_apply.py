#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_bridge_apply
short_description: Change a host's bridges under a commit-confirm guard with an on-host revert
version_added: 0.2.0
description:
  - One step of a commit-confirm change of the host's bridges. The P(kvmops.fleet.bridge#role) role runs
    O(step=apply), reconnects over a new connection, then O(step=confirm), and O(step=rollback) when anything
    went wrong in between.
  - O(step=apply) checks every declared bridge, bond and VLAN against the host (ports, bond interfaces and VLAN links
    that exist and are used once, addresses that overlap nothing, MTUs the lower links can carry, VLAN ids, names of
    at most 15 characters unique across all three, no loops, uplink addresses and default routes kept) before
    anything changes, renders the provider's files and compares them with the host's.
    When they differ, or the host does not run what they declare, it saves the current files, links and
    addresses, arms a transient systemd timer C(kvmops-bridge-revert.timer) that restores them after
    O(rollback_timeout) seconds, writes the files and makes them live in a detached transient unit one second
    later (so the answer reaches the controller before the link changes).
  - O(step=confirm) waits until the change is live, checks that the kernel runs the declared bridges, ports and
    addresses, pings O(probe_targets) (and the declared gateways) and resolves O(probe_names) from the host; only
    then does it stop the timer. Any failure runs the revert at once and fails naming what was rolled back.
  - O(step=rollback) runs the revert now, or reports the one the timer already ran.
  - "Providers: systemd-networkd (C(05-kvmops-*) files in C(/etc/systemd/network)), NetworkManager
    (C(kvmops-*.nmconnection) keyfiles, mode 0600, whose port profiles take the NICs over by
    C(autoconnect-priority)) and ifupdown with bridge-utils (C(/etc/network/interfaces.d/kvmops-<bridge>); the
    stanzas of the ports are commented out where they are; bonds need ifenslave, VLANs the vlan package). Where
    ifupdown2 provides C(ifup), the same files give the bridge its MAC with C(hwaddress) and need no bridge-utils."
  - "Before anything changes, the rendered files pass the provider's own check where it has one:
    C(nmcli --offline connection modify) (NetworkManager's keyfile parser and profile verification) and
    C(ifup --no-act) on the configuration as it would be (ifupdown's parser and the commands it would run),
    after C(ifup --syntax-check) with ifupdown2 (which checks the values of the options too)."
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.FACTS
  - kvmops.fleet._attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - O(step=apply) validates, predicts the change and returns the diff of every file; nothing is written and
        no timer is armed. O(step=confirm) and O(step=rollback) do nothing in check mode.
  diff_mode:
    support: full
    details:
      - The diff of every rendered file, before and after.
  facts:
    support: full
options:
  step:
    description:
      - V(apply), V(confirm) or V(rollback), see the description.
    type: str
    choices: [apply, confirm, rollback]
    default: apply
  provider:
    description:
      - The network provider that gets the files. V(auto) detects it from the active services (the only one
        active, else ifupdown when C(ifquery) knows one of the ports, else NetworkManager, then systemd-networkd).
      - V(networkd), V(nm) (NetworkManager) or V(ifupdown) force one; it must be active on the host (for ifupdown
        C(networking.service) and C(/etc/network/interfaces)), and ifupdown needs bridge-utils (ifupdown2 does not).
    type: str
    choices: [auto, networkd, nm, ifupdown]
    default: auto
  bridges:
    description:
      - The declared bridges. Each is checked against the host before anything changes.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Bridge name, 1 to 15 characters.
        type: str
        required: true
      ports:
        description:
          - Links that join the bridge (NICs of this host, bonds of O(bonds) or VLANs of O(vlans)), each in one bridge
            or bond only.
        type: list
        elements: str
        default: []
      addresses:
        description: Static IPv4 and IPv6 addresses with prefix length, such as V(192.0.2.10/24).
        type: list
        elements: str
        default: []
      dhcp4:
        description: Ask DHCPv4 for an address.
        type: bool
        default: false
      dhcp6:
        description: Accept router advertisements and ask DHCPv6.
        type: bool
        default: false
      gateway4:
        description: IPv4 default gateway, inside one of O(bridges[].addresses) unless O(bridges[].dhcp4).
        type: str
      gateway6:
        description: IPv6 default gateway.
        type: str
      routes:
        description: Static routes through the bridge.
        type: list
        elements: dict
        default: []
        suboptions:
          to:
            description: Destination network, such as V(198.51.100.0/24).
            type: str
            required: true
          via:
            description: Next hop.
            type: str
          metric:
            description: Route metric.
            type: int
      dns:
        description: DNS servers.
        type: list
        elements: str
        default: []
      mtu:
        description:
          - MTU of the bridge and its ports (68 to 65535, 1280 or more with IPv6, within what each port can carry).
        type: int
      stp:
        description: Spanning tree protocol.
        type: bool
        default: false
      forward_delay:
        description: Forward delay in seconds (2 to 30); the kernel's default when not set.
        type: int
      vlan_filtering:
        description: VLAN filtering on the bridge.
        type: bool
        default: false
  bonds:
    description:
      - Bonds of NICs, unaddressed (a bridge over the bond holds the addresses). A bridge's O(bridges[].ports) and a
        VLAN's O(vlans[].link) may name one.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Bond name, 1 to 15 characters, unique across bridges, bonds and VLANs.
        type: str
        required: true
      interfaces:
        description:
          - NICs of this host that join the bond (at least one; each NIC in one bond or bridge only). A NIC that holds
            an address or the default route now is refused unless O(force).
        type: list
        elements: str
        default: []
      mode:
        description: The bonding mode. V(active-backup) needs nothing from the switch.
        type: str
        choices: [balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb]
        default: active-backup
      miimon:
        description: MII link monitoring interval in milliseconds (1 to 2147483647).
        type: int
        default: 100
      primary:
        description:
          - The interface that carries the traffic whenever its link is up; one of O(bonds[].interfaces), only for
            the modes V(active-backup), V(balance-tlb) and V(balance-alb).
        type: str
      mtu:
        description: MTU of the bond and its interfaces (68 to 65535, within what each interface can carry).
        type: int
  vlans:
    description:
      - 802.1Q VLANs, unaddressed (a bridge over the VLAN holds the addresses). A bridge's O(bridges[].ports) may name
        one.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - VLAN name, 1 to 15 characters, unique across bridges, bonds and VLANs. ifupdown needs V(vlan<id>) or
            V(<link>.<id>).
        type: str
        required: true
      id:
        description: VLAN id, 1 to 4094.
        type: int
        required: true
      link:
        description:
          - The link that carries the VLAN's tagged frames. A NIC (not a bridge port or bond member; holding no
            address unless O(force), since systemd-networkd takes it over), or a bond or bridge of O(bonds) or
            O(bridges).
        type: str
        required: true
      mtu:
        description: MTU of the VLAN, 68 to 65535 and at most the MTU of its link.
        type: int
  var_name:
    description:
      - "The variable O(bridges) came from, used in error messages (V(bridge_bridges[0].ports[1]: ...))."
      - When it ends in V(bridges), errors name O(bonds) and O(vlans) with the same prefix (V(bridge_bonds[0].mtu),
        V(bridge_vlans[1].id)); otherwise as V(bonds) and V(vlans).
    type: str
    default: bridges
  force:
    description:
      - Allow a change that drops an address or the default route a port holds now (the host may become
        unreachable on that link for good; the revert cannot tell that this was meant).
    type: bool
    default: false
  rollback_timeout:
    description:
      - Seconds after O(step=apply) at which the host puts its previous configuration back by itself unless
        O(step=confirm) succeeded (10 to 3600).
    type: int
    default: 120
  settle_timeout:
    description:
      - Seconds O(step=confirm) waits for the change to go live and for the kernel to show it.
    type: int
    default: 30
  probe_targets:
    description:
      - Addresses the host must reach by ping before O(step=confirm) disarms the revert. The declared gateways are
        added unless O(probe_gateways=false).
    type: list
    elements: str
    default: []
  probe_gateways:
    description: Also ping each declared gateway.
    type: bool
    default: true
  probe_names:
    description: Host names the host must resolve (a DNS probe) before disarming.
    type: list
    elements: str
    default: []
  reason:
    description: Why O(step=rollback) is asked for; recorded on the host and returned.
    type: str
    default: rollback requested by the controller
notes:
  - The revert timer is transient; a host that reboots while a change is pending boots the new files.
    The P(kvmops.fleet.bridge#role) guide says what to do then.
seealso:
  - name: systemd.network
    description: systemd-networkd's network files.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.network.html
  - name: systemd.netdev
    description: systemd-networkd's virtual device files.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.netdev.html
  - name: nm-settings-keyfile
    description: NetworkManager's keyfile format.
    link: https://networkmanager.dev/docs/api/latest/nm-settings-keyfile.html
  - name: interfaces(5)
    description: ifupdown's configuration, and bridge-utils-interfaces(5) for the bridge_* options.
    link: https://manpages.debian.org/bookworm/ifupdown/interfaces.5.en.html
"""

EXAMPLES = r"""
- name: Turn eth1 into br0, keeping its address, under a 120 s revert
  kvmops.fleet.kvm_bridge_apply:
    bridges:
      - name: br0
        ports: [eth1]
        addresses: [192.0.2.10/24]
        gateway4: 192.0.2.1
  register: bridge_apply

- name: Reconnect over a new connection
  ansible.builtin.meta: reset_connection

- name: Wait for the host on its new configuration
  ansible.builtin.wait_for_connection:
    timeout: 60

- name: Probe from the host and disarm the revert
  kvmops.fleet.kvm_bridge_apply:
    step: confirm
    bridges:
      - name: br0
        ports: [eth1]
        addresses: [192.0.2.10/24]
        gateway4: 192.0.2.1
    probe_targets: [192.0.2.20]
  when: bridge_apply.armed
"""

RETURN = r"""
changed:
  description: Whether O(step=apply) changes (or would change, in check mode) the host.
  returned: always
  type: bool
  sample: true
armed:
  description: Whether a revert timer is armed now (O(step=apply) changed the host and nothing confirmed yet).
  returned: always
  type: bool
  sample: true
provider:
  description: The provider that got the files.
  returned: always
  type: str
  sample: networkd
files:
  description: The files that were (or would be) written.
  returned: always
  type: list
  elements: str
  sample: ["/etc/systemd/network/05-kvmops-br0.netdev"]
reasons:
  description: Why O(step=apply) changes the host (files that differ, what the kernel does not run).
  returned: always
  type: list
  elements: str
  sample: ["bridge br0 does not exist", "bond bond0 does not exist"]
transaction:
  description: The id of the pending (or last) change.
  returned: when a change is armed, confirmed or rolled back
  type: str
  sample: 20261204T190102-4f2a
rolled_back:
  description: What was put back, and why (O(step=rollback)).
  returned: when O(step=rollback) ran
  type: str
  sample: "files /etc/systemd/network/05-kvmops-br0.netdev; bridges br0 removed (transaction 1, reason: ...)"
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    kvm_bridge:
      description:
        - The declared bridges, bonds and VLANs as the kernel runs them, what changed, whether a revert is armed.
      returned: always
      type: dict
      sample: {"provider": "networkd", "armed": false, "changed": ["/etc/systemd/network/05-kvmops-br0.netdev"],
               "step": "confirm", "rolled_back": null,
               "bridges": [{"name": "br0", "ports": ["vlan10"], "addresses": ["192.0.2.10/24"], "mtu": 1500}],
               "bonds": [{"name": "bond0", "interfaces": ["eth3", "eth4"], "active": "eth3", "mtu": 1500}],
               "vlans": [{"name": "vlan10", "id": 10, "link": "bond0", "mtu": 1500}]}
"""

import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _apply_io, _ifupdown, _nm, _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    UINT_MAX,
    Int,
    OptionError,
    Text,
    Unique,
    check,
)

ROUTE_SPEC = {"to": {"type": "str", "required": True}, "via": {"type": "str"}, "metric": {"type": "int"}}
BRIDGE_SPEC = {
    "name": {"type": "str", "required": True},
    "ports": {"type": "list", "elements": "str", "default": []},
    "addresses": {"type": "list", "elements": "str", "default": []},
    "dhcp4": {"type": "bool", "default": False},
    "dhcp6": {"type": "bool", "default": False},
    "gateway4": {"type": "str"},
    "gateway6": {"type": "str"},
    "routes": {"type": "list", "elements": "dict", "default": [], "options": ROUTE_SPEC},
    "dns": {"type": "list", "elements": "str", "default": []},
    "mtu": {"type": "int"},
    "stp": {"type": "bool", "default": False},
    "forward_delay": {"type": "int"},
    "vlan_filtering": {"type": "bool", "default": False},
}
BOND_SPEC = {
    "name": {"type": "str", "required": True},
    "interfaces": {"type": "list", "elements": "str", "default": []},
    "mode": {"type": "str", "choices": list(_plan.BOND_MODES), "default": "active-backup"},
    "miimon": {"type": "int", "default": 100},
    "primary": {"type": "str"},
    "mtu": {"type": "int"},
}
VLAN_SPEC = {
    "name": {"type": "str", "required": True},
    "id": {"type": "int", "required": True},
    "link": {"type": "str", "required": True},
    "mtu": {"type": "int"},
}
ARGUMENT_SPEC = {
    "step": {"type": "str", "choices": ["apply", "confirm", "rollback"], "default": "apply"},
    "provider": {"type": "str", "choices": ["auto", "networkd", "nm", "ifupdown"], "default": "auto"},
    "bridges": {"type": "list", "elements": "dict", "default": [], "options": BRIDGE_SPEC},
    "bonds": {"type": "list", "elements": "dict", "default": [], "options": BOND_SPEC},
    "vlans": {"type": "list", "elements": "dict", "default": [], "options": VLAN_SPEC},
    "var_name": {"type": "str", "default": "bridges"},
    "force": {"type": "bool", "default": False},
    "rollback_timeout": {"type": "int", "default": 120},
    "settle_timeout": {"type": "int", "default": 30},
    "probe_targets": {"type": "list", "elements": "str", "default": []},
    "probe_gateways": {"type": "bool", "default": True},
    "probe_names": {"type": "list", "elements": "str", "default": []},
    "reason": {"type": "str", "default": "rollback requested by the controller"},
}
NAME = Text(
    "an interface name, 1 to 15 characters (IFNAMSIZ)",
    pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$",
    example="br0",
    max_chars=_plan.IFNAMSIZ,
)
ADDRESS = Text("an IP address, with a prefix length where one is asked for", max_chars=64)
# each option's rule (common/_validate.py), checked before anything is read; the host-bound checks (ports that
# exist, overlapping addresses, MTUs the ports carry) follow in _plan.validate, still before any change
RULES = {
    "bridges": Unique(("name",)),
    "bridges[].name": NAME,
    "bridges[].ports[]": NAME,
    "bridges[].addresses[]": ADDRESS,
    "bridges[].gateway4": ADDRESS,
    "bridges[].gateway6": ADDRESS,
    "bridges[].routes": Unique(("to",)),
    "bridges[].routes[].to": ADDRESS,
    "bridges[].routes[].via": ADDRESS,
    "bridges[].routes[].metric": Int(0, UINT_MAX, "a route metric is an unsigned 32-bit number"),
    "bridges[].dns[]": ADDRESS,
    "bridges[].mtu": Int(_plan.MTU_MIN, _plan.MTU_MAX, "the MTU range of an Ethernet link carrying IPv4"),
    "bridges[].forward_delay": Int(
        _plan.FORWARD_DELAY_MIN, _plan.FORWARD_DELAY_MAX, "seconds, the kernel's range for a bridge's forward delay"
    ),
    "bonds": Unique(("name",)),
    "bonds[].name": NAME,
    "bonds[].interfaces[]": NAME,
    "bonds[].miimon": Int(
        _plan.MIIMON_MIN,
        _plan.MIIMON_MAX,
        "milliseconds; the kernel takes up to INT_MAX, 0 turns the only link monitor off",
    ),
    "bonds[].primary": NAME,
    "bonds[].mtu": Int(_plan.MTU_MIN, _plan.MTU_MAX, "the MTU range of an Ethernet link carrying IPv4"),
    "vlans": Unique(("name",)),
    "vlans[].name": NAME,
    "vlans[].id": Int(_plan.VLAN_ID_MIN, _plan.VLAN_ID_MAX, "802.1Q: 0 and 4095 are reserved"),
    "vlans[].link": NAME,
    "vlans[].mtu": Int(_plan.MTU_MIN, _plan.MTU_MAX, "the MTU range of an Ethernet link carrying IPv4"),
    "var_name": Text("the name of the variable the bridges came from", max_chars=64),
    "rollback_timeout": Int(10, 3600, "seconds before the host reverts an unconfirmed change"),
    "settle_timeout": Int(1, 600, "seconds to wait for a change to show in the kernel"),
    "probe_targets[]": ADDRESS,
    "probe_names[]": Text("a host name to resolve", max_chars=253),
    "reason": Text("why the rollback is asked for"),
}
PROVIDER_NAMES = {"nm": "NetworkManager", "ifupdown": "ifupdown", "networkd": "systemd-networkd"}


def _facts(provider, bridges, host, armed, changed, step, rolled_back=None, bonds=(), vlans=()):
    links = host["links"]
    return {
        "kvm_bridge": {
            "provider": provider,
            "armed": armed,
            "changed": changed,
            "step": step,
            "rolled_back": rolled_back,
            "bridges": [
                {
                    "name": b["name"],
                    "ports": sorted(n for n, i in links.items() if i.get("master") == b["name"]),
                    "addresses": list(links.get(b["name"], {}).get("addresses", [])),
                    "mtu": links.get(b["name"], {}).get("mtu"),
                }
                for b in bridges
            ],
            "bonds": [
                {
                    "name": b["name"],
                    "interfaces": sorted(n for n, i in links.items() if i.get("master") == b["name"]),
                    "active": links.get(b["name"], {}).get("bond_active"),
                    "mtu": links.get(b["name"], {}).get("mtu"),
                }
                for b in bonds
            ],
            "vlans": [
                {
                    "name": v["name"],
                    "id": links.get(v["name"], {}).get("vlan_id"),
                    "link": links.get(v["name"], {}).get("vlan_link"),
                    "mtu": links.get(v["name"], {}).get("mtu"),
                }
                for v in vlans
            ],
        }
    }


def _provider(module, run):
    wanted = module.params["provider"]
    active = _apply_io.active_providers(run)
    if wanted == "auto":
        ports = [str(p) for b in module.params["bridges"] for p in (b.get("ports") or [])]
        ports += [str(n) for b in module.params["bonds"] for n in (b.get("interfaces") or [])]
        ports += [str(v["link"]) for v in module.params["vlans"] if v.get("link")]
        provider = _apply_io.detect_provider(run, ports, active)
        if provider is None:
            raise _plan.BridgeError(
                "provider: no known network provider is active on this host (NetworkManager, systemd-networkd, "
                "ifupdown's networking.service)"
            )
    else:
        provider = wanted
        if provider not in active:
            raise _plan.BridgeError(
                f"provider: {provider} was asked for, but {PROVIDER_NAMES[provider]} is not active on this host"
                + (f" (active: {', '.join(PROVIDER_NAMES[a] for a in active)})" if active else "")
            )
    if provider == "ifupdown":
        why = _apply_io.ifupdown_ready(_apply_io.ifupdown_flavour())
        if why:
            raise _plan.BridgeError(f"provider: {why}")
    return provider


def _render(provider, decl, host, var):
    """-> (desired {path: text}, ifupdown's sources or None)."""
    bridges, bonds, vlans = decl["bridges"], decl["bonds"], decl["vlans"]
    if provider == "nm":
        return _nm.render(bridges, host, bonds, vlans), None
    if provider == "ifupdown":
        sources = _apply_io.read_ifupdown_sources()
        return _ifupdown.render(bridges, host, sources, var, bonds, vlans, _apply_io.ifupdown_flavour()), sources
    return _plan.render_networkd(bridges, host, bonds, vlans), None


def _up_order(decl):
    """Every declared link, each after what it needs (for ifupdown's checks)."""
    bridges = [b["name"] for b in decl["bridges"]]
    return (
        [b["name"] for b in decl["bonds"]]
        + [v["name"] for v in decl["vlans"] if v["link"] not in bridges]
        + bridges
        + [v["name"] for v in decl["vlans"] if v["link"] in bridges]
    )


def run_module(module):
    p = module.params

    def run(argv, data=None):
        return module.run_command(argv, data=data)

    try:
        check(p, ARGUMENT_SPEC, RULES)
    except OptionError as exc:
        msg = str(exc)
        for option in ("bridges", "bonds", "vlans"):
            if msg.startswith((option + "[", option + ":")):
                shown = p["var_name"] if option == "bridges" else _plan.sibling(p["var_name"], option)
                msg = shown + msg[len(option) :]
                break
        raise _plan.BridgeError(msg) from None
    provider = _provider(module, run)
    if p["step"] == "rollback":
        if module.check_mode:
            return {
                "changed": False,
                "armed": _apply_io.timer_active(run),
                "provider": provider,
                "files": [],
                "reasons": [],
            }
        rolled = _apply_io.rollback(run, p["reason"])
        state = _apply_io.pending_state() or {}
        bridges = [_plan.normalize(b) for b in p["bridges"]]
        bonds = [_plan.normalize_bond(b) for b in p["bonds"]]
        vlans = [_plan.normalize_vlan(v) for v in p["vlans"]]
        return {
            "changed": True,
            "armed": False,
            "provider": provider,
            "files": sorted(state.get("files", {})),
            "reasons": [state.get("reason", p["reason"])],
            "rolled_back": rolled,
            "transaction": state.get("txn"),
            "ansible_facts": _facts(
                provider, bridges, _apply_io.read_host(run), False, [], "rollback", rolled, bonds, vlans
            ),
        }

    host = _apply_io.read_host(run)
    # confirm: the uplinks' addresses have moved already; apply made the checks against the state before
    decl = _plan.validate_all(
        p["bridges"], host, p["var_name"], p["force"] or p["step"] == "confirm", p["bonds"], p["vlans"]
    )
    bridges, bonds, vlans = decl["bridges"], decl["bonds"], decl["vlans"]
    desired, sources = _render(provider, decl, host, p["var_name"])
    current = _apply_io.read_files(sorted(desired))
    changed_paths = _plan.diff_files(current, desired)
    modes = _apply_io.read_modes(sorted(desired))
    wrong_mode = sorted(
        path
        for path in desired
        if path not in changed_paths and modes[path] is not None and modes[path] != _apply_io.file_mode(provider, path)
    )
    changed_paths = sorted(changed_paths + wrong_mode)
    out = {"changed": False, "armed": False, "provider": provider, "files": sorted(desired), "reasons": []}

    if p["step"] == "apply":
        live = _plan.live_differences(bridges, host, bonds, vlans)
        out["reasons"] = (
            [f"{path} differs" for path in changed_paths if path not in wrong_mode]
            + [
                f"{path} has mode {modes[path]:04o}, not {_apply_io.file_mode(provider, path):04o}"
                for path in wrong_mode
            ]
            + live
        )
        if changed_paths:
            problems = _apply_io.validate_files(
                run,
                provider,
                {path: desired[path] for path in changed_paths},
                sources,
                _up_order(decl),
                _apply_io.ifupdown_flavour() if provider == "ifupdown" else "ifupdown",
            )
            if problems:
                raise _plan.BridgeError(
                    f"the {PROVIDER_NAMES[provider]} files rendered from {p['var_name']} do not pass the provider's "
                    "check (nothing was changed): " + "; ".join(problems)
                )
        out["changed"] = bool(out["reasons"])
        if module._diff:
            out["diff"] = [
                {"before_header": path, "after_header": path, "before": current.get(path) or "", "after": desired[path]}
                for path in changed_paths
            ]
        if out["changed"] and not module.check_mode:
            txn = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
            _apply_io.begin(
                run,
                txn,
                {path: desired[path] for path in changed_paths},
                host,
                bridges,
                p["rollback_timeout"],
                provider,
                sources,
                bonds,
                vlans,
            )
            out.update(armed=True, transaction=txn)
        out["ansible_facts"] = _facts(provider, bridges, host, out["armed"], changed_paths, "apply", None, bonds, vlans)
        return out

    if module.check_mode:
        out["ansible_facts"] = _facts(
            provider, bridges, host, _apply_io.timer_active(run), [], p["step"], None, bonds, vlans
        )
        return out

    targets = list(p["probe_targets"])
    if p["probe_gateways"]:
        targets += [b[k] for b in bridges for k in ("gateway4", "gateway6") if b[k]]
    state = _apply_io.confirm(run, bridges, targets, p["probe_names"], p["settle_timeout"], bonds, vlans)
    out.update(transaction=state.get("txn"))
    out["ansible_facts"] = _facts(
        provider,
        bridges,
        _apply_io.read_host(run),
        False,
        sorted(state.get("files", {})),
        "confirm",
        None,
        bonds,
        vlans,
    )
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        out = run_module(module)
    except _plan.BridgeError as exc:  # a refused declaration or option: raised before anything is changed
        module.fail_json(msg=str(exc), changed=False)
    except _apply_io.ApplyError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
