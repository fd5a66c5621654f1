# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_bridge_apply's host side: read the links, arm the on-host revert, write the files, confirm or roll back.

The commit-confirm transaction lives in ``STATE_DIR/pending`` (``/var/lib/kvmops-bridge/pending``):
``manifest.json`` (what was changed and how to put it back), ``files/N`` (copies of the files as they were),
``before.json`` (links, addresses and routes before), ``revert.sh`` (from ``_plan.revert_script``) and the stamps
``applied`` (the switch ran) and ``reverted`` (the revert ran; it holds the reason). The revert is a transient
systemd timer, ``kvmops-bridge-revert.timer``, started before anything changes: it runs ``revert.sh`` after the
rollback timeout unless :func:`confirm` stops it. Nothing here depends on the controller once armed.

Every command goes through the injected ``run(argv) -> (rc, stdout, stderr)`` (the module's run_command; the
NetworkManager check also passes ``data=``, the text for the command's standard input).

Providers (``provider``): ``networkd`` (files in /etc/systemd/network, ``networkctl``), ``nm`` (keyfiles, ``nmcli``)
and ``ifupdown`` (stanzas in /etc/network/interfaces.d, ``ifup``/``ifdown`` with bridge-utils). Each renders its
files in a pure module (``_plan``, ``_nm``, ``_ifupdown``), which also gives the lines of the switch and the revert.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _ifupdown, _nm, _plan
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import write_atomic

STATE_DIR = "/var/lib/kvmops-bridge"
REVERT_UNIT = "kvmops-bridge-revert"
SWITCH_UNIT = "kvmops-bridge-switch"


class ApplyError(Exception):
    """A step of the transaction failed; the message says which and what the host runs now."""


def _pending():
    return os.path.join(STATE_DIR, "pending")


def _json(run, argv):
    rc, out, err = run(argv)
    if rc != 0:
        raise ApplyError(f"{' '.join(argv)} failed (rc {rc}): {err.strip() or out.strip()}")
    try:
        return json.loads(out or "[]")
    except ValueError:
        raise ApplyError(f"{' '.join(argv)} printed no JSON") from None


def read_host(run):
    """The links, their addresses and the routes, in ``_plan``'s host shape. A link's ``mac`` is its permanent
    address (a bond gives its members its own while they are in it); ``up``: administratively up; bonds add
    ``bond_mode`` and ``bond_active`` (the active member), VLANs ``vlan_id`` and ``vlan_link``."""
    links = {}
    for item in _json(run, ["ip", "-j", "-d", "link", "show"]):
        info = item.get("linkinfo") or {}
        data = info.get("info_data") or {}
        links[item["ifname"]] = {
            "kind": info.get("info_kind"),
            "master": item.get("master"),
            "mtu": item.get("mtu"),
            "min_mtu": item.get("min_mtu"),
            "max_mtu": item.get("max_mtu"),
            "operstate": item.get("operstate"),
            "up": "UP" in (item.get("flags") or []),
            "mac": (item.get("permaddr") or item.get("address")) if item.get("link_type") == "ether" else None,
            "addresses": [],
        }
        if info.get("info_kind") == "bond":
            links[item["ifname"]].update(bond_mode=data.get("mode"), bond_active=data.get("active_slave"))
        if info.get("info_kind") == "vlan":
            links[item["ifname"]].update(vlan_id=data.get("id"), vlan_link=item.get("link"))
    for item in _json(run, ["ip", "-j", "addr", "show"]):
        link = links.get(item.get("ifname"))
        if link is None:
            continue
        for a in item.get("addr_info", []):
            if a.get("scope") in ("global", "link") and a.get("local") and a.get("family") in ("inet", "inet6"):
                link["addresses"].append(f"{a['local']}/{a['prefixlen']}")
    routes = []
    for family in ("-4", "-6"):
        for r in _json(run, ["ip", "-j", family, "route", "show"]):
            routes.append({"dst": r.get("dst"), "gateway": r.get("gateway"), "dev": r.get("dev")})
    return {"links": links, "routes": routes}


PROVIDER_UNITS = (
    ("nm", "NetworkManager.service"),
    ("networkd", "systemd-networkd.service"),
    ("ifupdown", "networking.service"),
)


def active_providers(run):
    """The providers whose service is active, in the order of :data:`PROVIDER_UNITS` (ifupdown only with
    /etc/network/interfaces)."""
    found = []
    for name, unit in PROVIDER_UNITS:
        _rc, out, _err = run(["systemctl", "is-active", unit])
        if out.strip() == "active":
            if name == "ifupdown" and not os.path.exists(_ifupdown.MAIN):
                continue
            found.append(name)
    return found


def detect_provider(run, ports=(), found=None):
    """Which provider manages the host: V(nm), V(networkd), V(ifupdown) or None.

    One active provider is the answer. When ifupdown runs beside another (Debian with NetworkManager installed,
    whose ifupdown plugin leaves the NICs of /etc/network/interfaces alone), ifupdown manages the host if it
    defines one of the declared ports (``ifquery PORT`` succeeds); otherwise the first active of NetworkManager,
    systemd-networkd."""
    found = list(active_providers(run) if found is None else found)
    if len(found) > 1 and "ifupdown" in found:
        for port in ports:
            rc, _out, _err = run(["ifquery", port])
            if rc == 0:
                return "ifupdown"
        found.remove("ifupdown")
    return found[0] if found else None


def read_ifupdown_sources(main=_ifupdown.MAIN, limit=64):
    """{path: text} of /etc/network/interfaces and every file its ``source``/``source-directory`` lines read, in
    the order ifupdown reads them (at most ``limit`` files)."""
    out = {}
    todo = [main]
    while todo and len(out) < limit:
        path = todo.pop(0)
        if path in out:
            continue
        out.update(read_files([path]))
        extra = []
        for kind, target in _ifupdown.directives({path: out[path] or ""}):
            if kind == "source":
                extra += sorted(glob.glob(target))
            else:
                try:
                    names = sorted(os.listdir(target))
                except OSError:
                    names = []
                extra += [os.path.join(target, n) for n in names if _ifupdown.RUN_PARTS_NAME.match(n)]
        todo = [p for p in extra if os.path.isfile(p)] + todo
    return out


def nm_active(run):
    """{device: UUID of its active connection} from nmcli."""
    rc, out, err = run(["nmcli", "-t", "-f", "DEVICE,UUID", "connection", "show", "--active"])
    if rc != 0:
        raise ApplyError(f"nmcli connection show --active failed (rc {rc}): {err.strip() or out.strip()}")
    active = {}
    for line in out.splitlines():
        device, _sep, uid = line.rpartition(":")
        if device and uid:
            active[device.replace("\\:", ":")] = uid
    return active


IFUPDOWN2_DIR = "/usr/share/ifupdown2"


def ifupdown_flavour(root="/"):
    """Which ifupdown runs ``ifup`` here -> V(ifupdown2) or V(ifupdown).

    ifupdown2 (Debian's and Ubuntu's package, Proxmox, Cumulus) is a Python tree in /usr/share/ifupdown2 that
    /sbin/ifup links into; Debian's classic ifupdown is a C binary. The two cannot be installed together."""
    base = root.rstrip("/")
    ifup = os.path.realpath(base + "/sbin/ifup")
    if os.path.isdir(base + IFUPDOWN2_DIR) and "/ifupdown2/" in ifup:
        return "ifupdown2"
    return "ifupdown"


def ifupdown_ready(flavour="ifupdown"):
    """-> None, or why ifupdown cannot run bridges here (bridge-utils' hook that reads ``bridge_ports``; ifupdown2
    makes bridges itself, over netlink, and needs no hook)."""
    if flavour == "ifupdown2":
        return None
    hook = "/etc/network/if-pre-up.d/bridge"
    if not os.path.exists(hook):
        return f"ifupdown needs bridge-utils for bridge_ports stanzas ({hook} is missing): install bridge-utils"
    return None


def validate_files(run, provider, files, sources=None, bridges=(), flavour="ifupdown"):  # bridges: in up order
    """Check the rendered files with the provider's own tools before anything changes -> list of problems.

    NetworkManager: each keyfile through ``nmcli --offline connection modify`` (NetworkManager's keyfile parser and
    its verification of the profile; NetworkManager 1.40 and later), or, where nmcli has no ``--offline``, the
    keyfile checks of ``_nm.check_keyfile``. ifupdown: the configuration as it would be (every file read, the new
    ones in place) merged into one file, and ``ifup --no-act --force -i FILE BRIDGE`` for every bridge (ifupdown's
    parser, and the commands it would run). With ifupdown2 (``flavour``), ``ifup --syntax-check -i FILE BRIDGE``
    first: its ``--no-act`` accepts values its addons refuse (a bridge_stp of V(maybe), an address of
    V(300.1.1.1/24)), its syntax check does not. systemd-networkd: none here."""
    problems = []
    if provider == "nm":
        for path, text in sorted(files.items()):
            problems += _nm.check_keyfile(text, path)
            rc, out, err = run(["nmcli", "--offline", "connection", "modify"], data=text)
            if rc != 0 and "offline" in (err + out) and "unknown" in (err + out).lower():
                continue  # an nmcli without --offline: the keyfile checks above stand in
            if rc != 0:
                problems.append(f"{path}: nmcli --offline refuses it: {err.strip() or out.strip()}")
    elif provider == "ifupdown":
        merged = []
        for path in list(sources or {}) + sorted(p for p in files if p not in (sources or {})):
            text = files.get(path, (sources or {}).get(path)) or ""
            merged.append(f"# {path}")
            for line in text.splitlines():
                word = line.split()[0] if line.split() else ""
                merged.append("#" + line if word in ("source", "source-directory") else line)
        fd, tmp = tempfile.mkstemp(prefix="kvmops-bridge-ifupdown-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("\n".join(merged) + "\n")
            for name in bridges:  # bonds, VLANs and bridges alike
                if flavour == "ifupdown2":
                    rc, out, err = run(["ifup", "--syntax-check", "-i", tmp, name])
                    if rc != 0:
                        problems.append(
                            f"ifup --syntax-check {name} (ifupdown2) refuses the new configuration: "
                            f"{err.strip() or out.strip()}"
                        )
                        continue
                rc, out, err = run(["ifup", "--no-act", "--force", "-i", tmp, name])
                if rc != 0:
                    problems.append(f"ifup --no-act {name} refuses the new configuration: {err.strip() or out.strip()}")
        finally:
            os.unlink(tmp)
    return problems


def read_files(paths):
    out = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                out[path] = fh.read()
        except FileNotFoundError:
            out[path] = None
    return out


def file_mode(provider, path):
    """The mode a rendered file gets: NetworkManager loads only keyfiles no one but root can read."""
    return _nm.NM_MODE if provider == "nm" and path.startswith(_nm.NM_DIR + "/") else 0o644


def read_modes(paths):
    """{path: its permission bits or None}."""
    out = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            out[path] = None
    return out


def owned_files(directory=_plan.NETWORKD_DIR, prefix=_plan.NETWORKD_PREFIX):
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.startswith(prefix))


def timer_active(run):
    _rc, out, _err = run(["systemctl", "is-active", f"{REVERT_UNIT}.timer"])
    return out.strip() in ("active", "activating")


def pending_state():
    """The transaction in progress (its manifest plus the stamps), or None."""
    try:
        with open(os.path.join(_pending(), "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    for stamp in ("applied", "reverted"):
        path = os.path.join(_pending(), stamp)
        manifest[stamp] = os.path.exists(path)
        if stamp == "reverted" and manifest[stamp]:
            with open(path, encoding="utf-8") as fh:
                manifest["reason"] = fh.read().strip()
    return manifest


def begin(run, txn, files, host, bridges, timeout, provider="networkd", sources=None, bonds=(), vlans=()):
    """Save what is there, arm the revert, write ``files`` and start the switch. -> the manifest.

    ``sources``: ifupdown's configuration as it is (:func:`read_ifupdown_sources`), for the old stanzas of the
    ports. ``bonds``, ``vlans``: the declared ones (``_plan.validate_all``); the revert deletes those the change
    creates, like new bridges, and puts their members and NICs back. Raises ApplyError before the timer is armed if
    the state directory holds another transaction."""
    if timer_active(run):
        raise ApplyError(
            f"a bridge change is already pending on this host ({REVERT_UNIT}.timer is active): "
            "let it confirm or roll back first"
        )
    links = host["links"]
    declared = {b["name"] for b in bonds} | {v["name"] for v in vlans}
    named = declared | {b["name"] for b in bridges}
    vlan_nics = sorted({v["link"] for v in vlans} - named)
    pending = _pending()
    if os.path.isdir(pending):
        shutil.rmtree(os.path.join(STATE_DIR, "last"), ignore_errors=True)
        os.rename(pending, os.path.join(STATE_DIR, "last"))
    os.makedirs(os.path.join(pending, "files"), mode=0o700)
    current = read_files(sorted(files))
    manifest = {
        "txn": txn,
        "files": {},
        "new_bridges": [],
        "free_ports": [],
        "reconfigure": [],
        "bridges": [b["name"] for b in bridges],
        "armed_at": time.time(),
        "timeout": timeout,
        "provider": provider,
        "ports": [[b["name"], p] for b in bridges for p in b["ports"]],
        "ports_all": [p for b in bridges for p in b["ports"] if p not in declared],
        "bonds": [[b["name"], list(b["interfaces"])] for b in bonds],
        "vlans": [[v["name"], v["link"]] for v in vlans],
        "members_all": [n for b in bonds for n in b["interfaces"]],
        "vlan_nics": vlan_nics,
        "new_links": [],
        "down_links": [],
    }
    if provider == "ifupdown":
        manifest["addrgenmode"] = {}
        for port in manifest["ports_all"]:
            try:
                with open(f"/proc/sys/net/ipv6/conf/{port}/addr_gen_mode", encoding="utf-8") as fh:
                    manifest["addrgenmode"][port] = fh.read().strip()
            except OSError:
                pass  # no IPv6 on this link
    if provider == "nm":
        active = nm_active(run)
        touched = [b["name"] for b in bridges] + manifest["ports_all"] + manifest["members_all"] + sorted(declared)
        manifest["nm_active"] = {k: v for k, v in active.items() if k in touched}
    for i, (path, text) in enumerate(sorted(current.items())):
        if text is None:
            manifest["files"][path] = None
        else:
            backup = str(i)
            shutil.copy2(path, os.path.join(pending, "files", backup))
            manifest["files"][path] = backup
    # VLANs before bonds: a VLAN goes with the bond under it anyway
    for name in [v["name"] for v in vlans] + [b["name"] for b in bonds]:
        if name not in links:
            manifest["new_links"].append(name)
        else:
            manifest["reconfigure"].append(name)
    for b in bridges:
        if b["name"] not in links:
            manifest["new_bridges"].append(b["name"])
        else:
            manifest["reconfigure"].append(b["name"])
        for port in b["ports"]:
            if port in links and not links[port].get("master"):
                manifest["free_ports"].append(port)
            if port in links and port not in manifest["reconfigure"]:
                manifest["reconfigure"].append(port)
    for nic in manifest["members_all"] + vlan_nics:
        if not links[nic].get("master") and nic not in manifest["free_ports"]:
            manifest["free_ports"].append(nic)
        if not links[nic].get("up", True):
            manifest["down_links"].append(nic)  # a bond member leaves its bond down; a VLAN's NIC was brought up
        manifest["reconfigure"].append(nic)
    with open(os.path.join(pending, "before.json"), "w", encoding="utf-8") as fh:
        json.dump(host, fh)
    with open(os.path.join(pending, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    ports = manifest["ports_all"]
    pre, post, switch = (), None, None
    if provider == "nm":
        post, switch = _nm.revert_lines(manifest), _nm.switch_lines(manifest)
    elif provider == "ifupdown":
        before_file = os.path.join(pending, "before.interfaces")
        names = set(ports) | set(manifest["members_all"]) | named
        write_atomic(before_file, _ifupdown.port_stanzas(dict(sources or {}), names), 0o600)
        pre, post = _ifupdown.revert_pre_lines(manifest), _ifupdown.revert_lines(manifest)
        switch = _ifupdown.switch_lines(manifest, before_file)
    write_atomic(
        os.path.join(pending, "revert.sh"), _plan.revert_script(txn, STATE_DIR, manifest, timeout, pre, post), 0o700
    )
    # networkd: the NICs that change hands are reconfigured (bond members, a VLAN's NIC), the rest comes with reload
    again = ports + [n for n in manifest["members_all"] + vlan_nics if n not in ports]
    write_atomic(os.path.join(pending, "switch.sh"), _plan.switch_script(txn, STATE_DIR, again, switch), 0o700)
    # Arm first: from here on the host goes back by itself unless confirm() stops the timer.
    rc, out, err = run(
        [
            "systemd-run",
            f"--unit={REVERT_UNIT}",
            f"--on-active={timeout}",
            "--timer-property=AccuracySec=1s",
            "--property=Type=oneshot",
            "--collect",
            f"--description=kvmops.fleet bridge: revert transaction {txn} unless confirmed",
            "/bin/sh",
            os.path.join(pending, "revert.sh"),
        ]
    )
    if rc != 0:
        raise ApplyError(f"could not arm the revert timer (nothing was changed): {err.strip() or out.strip()}")
    try:
        for path, text in sorted(files.items()):
            write_atomic(path, text, file_mode(provider, path))
        rc, out, err = run(
            [
                "systemd-run",
                f"--unit={SWITCH_UNIT}-{txn}",
                "--property=Type=oneshot",
                "--collect",
                "--no-block",
                f"--description=kvmops.fleet bridge: make transaction {txn} live",
                "/bin/sh",
                os.path.join(pending, "switch.sh"),
            ]
        )
        if rc != 0:
            raise ApplyError(f"could not start the switch: {err.strip() or out.strip()}")
    except (OSError, ApplyError) as exc:
        reason = f"writing the configuration failed: {exc}"
        rollback(run, reason)
        raise ApplyError(f"{reason}; rolled back") from None
    return manifest


def _ping(run, target, count=3):
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", "2", target]
    if ":" in target:
        argv.insert(1, "-6")
    rc, _out, _err = run(argv)
    return rc == 0


def probe(run, targets, names):
    """-> the failures, one sentence each: every target must answer a ping, every name must resolve."""
    failed = []
    for t in targets:
        if not _ping(run, t):
            failed.append(f"{t} does not answer ping")
    for name in names:
        try:
            socket.getaddrinfo(name, None)
        except OSError as exc:
            failed.append(f"{name} does not resolve: {exc}")
    return failed


def wait_applied(settle):
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        state = pending_state() or {}
        if state.get("applied") or state.get("reverted"):
            return state
        time.sleep(0.5)
    return pending_state() or {}


def confirm(run, bridges, targets, names, settle, bonds=(), vlans=()):
    """Check the switch took and the probes answer, then disarm. -> the pending manifest.

    On any failure the revert runs at once and ApplyError names what was rolled back and why."""
    state = wait_applied(settle)
    if not state:
        raise ApplyError("no bridge change is pending on this host")
    if state.get("reverted"):
        raise ApplyError(f"too late: the host already rolled back ({state['reason']})")
    if not state.get("applied"):
        _fail(run, f"the new configuration did not go live within {settle} s")
    deadline = time.monotonic() + settle
    while True:
        missing = _plan.live_differences(bridges, read_host(run), bonds, vlans)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    if missing:
        _fail(run, "the host does not run the new configuration: " + "; ".join(missing))
    failed = probe(run, targets, names)
    if failed:
        _fail(run, "probes failed from the host: " + "; ".join(failed))
    rc, _out, err = run(["systemctl", "stop", f"{REVERT_UNIT}.timer"])
    state = pending_state() or {}
    if state.get("reverted"):
        raise ApplyError(f"too late: the host rolled back while confirming ({state['reason']})")
    if rc != 0:
        _fail(run, f"could not stop {REVERT_UNIT}.timer: {err.strip()}")
    with open(os.path.join(_pending(), "confirmed"), "w", encoding="utf-8") as fh:
        fh.write(f"{time.time()}\n")
    return state


def _fail(run, reason):
    rolled = rollback(run, reason)
    raise ApplyError(f"{reason}; rolled back: {rolled}")


def rollback(run, reason):
    """Run the revert now (or report the one that already ran). -> what was put back, as a sentence."""
    state = pending_state()
    if state is None:
        raise ApplyError("no bridge change is pending on this host: nothing to roll back")
    if not state.get("reverted"):
        if os.path.exists(os.path.join(_pending(), "confirmed")):
            raise ApplyError("the pending change was confirmed already: nothing to roll back")
        with open(os.path.join(_pending(), "reason"), "w", encoding="utf-8") as fh:
            fh.write(reason + "\n")
        run(["systemctl", "stop", f"{REVERT_UNIT}.timer"])
        rc, out, err = run(
            [
                "systemd-run",
                f"--unit={REVERT_UNIT}-now-{state['txn']}",
                "--property=Type=oneshot",
                "--collect",
                "--wait",
                "--description=kvmops.fleet bridge: revert now",
                "/bin/sh",
                os.path.join(_pending(), "revert.sh"),
            ]
        )
        state = pending_state() or {}
        if rc != 0 or not state.get("reverted"):
            raise ApplyError(f"the revert failed (rc {rc}): {err.strip() or out.strip()}")
    return describe(state)


def describe(state):
    files = sorted(state.get("files", {}))
    parts = [f"files {', '.join(files)}" if files else "no files"]
    if state.get("new_bridges"):
        parts.append(f"bridges {', '.join(state['new_bridges'])} removed")
    if state.get("new_links"):
        parts.append(f"bonds and VLANs {', '.join(state['new_links'])} removed")
    if state.get("reconfigure"):
        parts.append(f"links {', '.join(state['reconfigure'])} reconfigured")
    return "; ".join(parts) + f" (transaction {state.get('txn')}, reason: {state.get('reason', 'unknown')})"
