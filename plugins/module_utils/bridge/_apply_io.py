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

Every command goes through the injected ``run(argv) -> (rc, stdout, stderr)`` (the module's run_command).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.bridge import _plan

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
    """The links, their addresses and the routes, in ``_plan``'s host shape."""
    links = {}
    for item in _json(run, ["ip", "-j", "-d", "link", "show"]):
        info = item.get("linkinfo") or {}
        links[item["ifname"]] = {
            "kind": info.get("info_kind"),
            "master": item.get("master"),
            "mtu": item.get("mtu"),
            "min_mtu": item.get("min_mtu"),
            "max_mtu": item.get("max_mtu"),
            "operstate": item.get("operstate"),
            "mac": item.get("address") if item.get("link_type") == "ether" else None,
            "addresses": [],
        }
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


def detect_provider(run):
    """Which provider manages the host: V(nm), V(networkd), V(ifupdown) or None."""
    for unit, name in (
        ("NetworkManager.service", "nm"),
        ("systemd-networkd.service", "networkd"),
        ("networking.service", "ifupdown"),
    ):
        _rc, out, _err = run(["systemctl", "is-active", unit])
        if out.strip() == "active":
            if name == "ifupdown" and not os.path.exists("/etc/network/interfaces"):
                continue
            return name
    return None


def read_files(paths):
    out = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                out[path] = fh.read()
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


def _write_atomic(path, text, mode=0o644):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kvmops-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def begin(run, txn, files, host, bridges, timeout):
    """Save what is there, arm the revert, write ``files`` and start the switch. -> the manifest.

    Raises ApplyError before the timer is armed if the state directory holds another transaction."""
    if timer_active(run):
        raise ApplyError(
            f"a bridge change is already pending on this host ({REVERT_UNIT}.timer is active): "
            "let it confirm or roll back first"
        )
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
    }
    for i, (path, text) in enumerate(sorted(current.items())):
        if text is None:
            manifest["files"][path] = None
        else:
            backup = str(i)
            shutil.copy2(path, os.path.join(pending, "files", backup))
            manifest["files"][path] = backup
    links = host["links"]
    for b in bridges:
        if b["name"] not in links:
            manifest["new_bridges"].append(b["name"])
        else:
            manifest["reconfigure"].append(b["name"])
        for port in b["ports"]:
            if not links[port].get("master"):
                manifest["free_ports"].append(port)
            manifest["reconfigure"].append(port)
    with open(os.path.join(pending, "before.json"), "w", encoding="utf-8") as fh:
        json.dump(host, fh)
    with open(os.path.join(pending, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    _write_atomic(os.path.join(pending, "revert.sh"), _plan.revert_script(txn, STATE_DIR, manifest, timeout), 0o700)
    ports = [p for b in bridges for p in b["ports"]]
    _write_atomic(os.path.join(pending, "switch.sh"), _plan.switch_script(txn, STATE_DIR, ports), 0o700)
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
            _write_atomic(path, text)
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


def confirm(run, bridges, targets, names, settle):
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
        missing = _plan.live_differences(bridges, read_host(run))
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
    if state.get("reconfigure"):
        parts.append(f"links {', '.join(state['reconfigure'])} reconfigured")
    return "; ".join(parts) + f" (transaction {state.get('txn')}, reason: {state.get('reason', 'unknown')})"
