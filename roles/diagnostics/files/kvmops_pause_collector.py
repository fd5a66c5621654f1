# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmops-pause-collector: diagnose this host's paused domains and write Prometheus text for node_exporter.

Installed by the kvmops.fleet.diagnostics role (entry point ``collector``) as
``<install_dir>/kvmops-pause-collector`` next to a copy of the collection's module_utils
(``<install_dir>/ansible_collections/kvmops/fleet/plugins/module_utils``), and run by the systemd timer
``kvmops-pause-collector.timer``. The role adds the first line, ``#!`` and the configured Python
(``diagnostics_collector_python``). It runs exactly the diagnosis kvm_pause_facts runs (``pause/_collect_io.collect``,
bounded by a forked worker that is killed at the timeout) and turns it into metrics with ``pause/_promtext``.

With ``forecast`` on, the run also forecasts pause risks (``forecast/_collect_io.collect``, what kvm_pause_risk
runs) and exports them with ``forecast/_promtext``, beside the host's memory pressure (always) and the operstate
of the bridges and uplinks the paused domains' interfaces use (always; read from libvirtd's status XML); the
forecast's state (one free-bytes sample per storage, for the fill rate and the time until full) is kept in
``forecast-collector.json`` in the state directory, written atomically with ``common/_files_io.write_atomic``.

One run: take the lock (a second run while one is active exits 75 at once: runs never stack), read the
state file, collect, write the state and then the textfile, each atomically (temporary file in the same
directory, fsync, rename), print one line for the journal. Exit 0 when libvirt answered completely,
1 when the run got no or only a partial report (the textfile then says kvmops_collector_success 0),
2 on a usage or configuration error, 75 when another run holds the lock.

Settings come from the JSON config file (``--config``, written by the role) and can be overridden on
the command line; run ``kvmops-pause-collector --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
import traceback

DEFAULT_CONFIG = "/etc/kvmops-fleet/pause-collector.json"
DEFAULTS = {
    "uri": "qemu:///system",
    "timeout": 10.0,
    "domains": [],
    "textfile_dir": "/var/lib/prometheus/node-exporter",
    "state_dir": "/var/lib/kvmops-fleet",
    "interval": 30.0,
    "paused_alert_seconds": 900.0,
    "stale_alert_seconds": 300.0,
    "forecast": False,
}
STATUS_DIR = "/run/libvirt/qemu"
SYS_NET = "/sys/class/net"
STATE_FILE = "pause-collector.json"
LOCK_FILE = "pause-collector.lock"
TEXTFILE = "kvmops_pause.prom"
EX_OK, EX_FAILED, EX_USAGE, EX_LOCKED = 0, 1, 2, 75


class UsageError(Exception):
    """Bad configuration: reported in one line, exit 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="kvmops-pause-collector",
        description="Diagnose paused libvirt domains (kvmops.fleet) and write Prometheus textfile metrics.",
    )
    p.add_argument("--config", help=f"JSON settings file (default {DEFAULT_CONFIG}, optional when it is the default)")
    p.add_argument("--libdir", help="directory holding ansible_collections/kvmops/fleet (default: this program's)")
    p.add_argument("--uri", help="libvirt URI")
    p.add_argument("--timeout", type=float, help="seconds for all libvirt work of this run")
    p.add_argument("--domain", action="append", dest="domains", help="name or shell glob; repeat; default all")
    p.add_argument("--textfile-dir", help=f"node_exporter's textfile directory; {TEXTFILE} is written there")
    p.add_argument("--state-dir", help=f"directory of {STATE_FILE} and {LOCK_FILE}")
    p.add_argument("--interval", type=float, help="seconds between runs (exported for dashboards)")
    p.add_argument("--paused-alert-seconds", type=float, help="exported threshold of KvmopsDomainPausedTooLong")
    p.add_argument("--stale-alert-seconds", type=float, help="exported threshold of KvmopsCollectorStale")
    p.add_argument("--forecast", action="store_true", default=None, help="also export the pause-risk forecast")
    return p.parse_args(argv)


def settings(args) -> dict:
    cfg = dict(DEFAULTS)
    path = args.config or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except FileNotFoundError:
        if args.config:
            raise UsageError(f"config file {path} does not exist") from None
        loaded = {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"config file {path} must hold a JSON object")
    unknown = sorted(set(loaded) - set(DEFAULTS) - {"libdir"})
    if unknown:
        raise UsageError(f"config file {path}: unknown settings {', '.join(unknown)}")
    cfg.update(loaded)
    for key in [*DEFAULTS, "libdir"]:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key in ("timeout", "interval", "paused_alert_seconds", "stale_alert_seconds"):
        try:
            cfg[key] = float(cfg[key])
        except (TypeError, ValueError):
            raise UsageError(f"{key} must be a number, got {cfg[key]!r}") from None
        if cfg[key] <= 0:
            raise UsageError(f"{key} must be positive, got {cfg[key]}")
    if not isinstance(cfg["forecast"], bool):
        raise UsageError(f"forecast must be true or false, got {cfg['forecast']!r}")
    if not isinstance(cfg["domains"], list) or not all(isinstance(d, str) for d in cfg["domains"]):
        raise UsageError("domains must be a list of names or globs")
    if not os.path.isdir(cfg["textfile_dir"]):
        raise UsageError(f"textfile directory {cfg['textfile_dir']} does not exist")
    cfg["libdir"] = cfg.get("libdir") or os.path.dirname(os.path.realpath(__file__))
    return cfg


def import_collection(libdir: str):
    """The collection's own module_utils: the diagnosis kvm_pause_facts runs and the forecast kvm_pause_risk runs,
    not copies; the last item holds the forecast's collection and metrics and common/_files_io."""
    if libdir not in sys.path:
        sys.path.insert(0, libdir)
    try:
        from ansible_collections.kvmops.fleet.plugins.module_utils.common import (  # noqa: PLC0415
            _files_io,
            _libvirt_io,
        )
        from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import (  # noqa: PLC0415
            _collect_io as _forecast_io,
        )
        from ansible_collections.kvmops.fleet.plugins.module_utils.forecast import (  # noqa: PLC0415
            _promtext as _forecast_text,
        )
        from ansible_collections.kvmops.fleet.plugins.module_utils.pause import (  # noqa: PLC0415
            _collect_io,
            _promtext,
        )
    except ImportError as exc:
        raise UsageError(f"cannot import the kvmops.fleet module_utils from {libdir}: {exc}") from None
    return _collect_io, _libvirt_io, _promtext, (_forecast_io, _forecast_text, _files_io)


def read_text(path: str):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def paused_bridges(report, fmetrics) -> dict:
    """{paused domain: [(bridge, tap)]} from libvirtd's status XML of each paused domain (never a libvirt call:
    a domain blocked in a job must not block this)."""
    out = {}
    for entry in (report or {}).get("paused") or []:
        text = read_text(os.path.join(STATUS_DIR, f"{entry['name']}.xml"))
        if text:
            out[entry["name"]] = fmetrics.domain_bridges(text)
    return out


def link_states(bridges: dict) -> dict:
    """{interface: (operstate, ports)} for every bridge in ``bridges`` and its ports that are not taps."""
    out = {}
    for bridge in sorted({b for pairs in bridges.values() for b, _tap in pairs}):
        base = os.path.join(SYS_NET, bridge)
        state = (read_text(os.path.join(base, "operstate")) or "notpresent").strip()
        try:
            ports = sorted(os.listdir(os.path.join(base, "brif")))
        except OSError:
            ports = []
        uplinks = [p for p in ports if not os.path.exists(os.path.join(SYS_NET, p, "tun_flags"))]
        out[bridge] = (state, uplinks)
        for port in uplinks:
            out[port] = ((read_text(os.path.join(SYS_NET, port, "operstate")) or "notpresent").strip(), [])
    return out


def forecast_part(cfg, report, libvirt_mod, forecast_mods, errors) -> str:
    """The forecast's metrics (with the host's memory pressure and the paused domains' bridges) as text."""
    fcollect, fmetrics, files_io = forecast_mods
    forecast = None
    if cfg["forecast"]:
        try:
            forecast = fcollect.collect(cfg["uri"], cfg["timeout"], cfg["domains"], started=time.monotonic())
        except libvirt_mod.KvmError as exc:
            errors.append(f"forecast: {exc}")
            forecast = {}
        except Exception as exc:  # reported as kvmops_forecast_success 0, never a stale file
            errors.append(f"forecast: internal error: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            forecast = {}
    state_path = os.path.join(cfg["state_dir"], fmetrics.STATE_FILE)
    bridges = paused_bridges(report, fmetrics)
    text, new_state = fmetrics.render(
        forecast,
        read_state(state_path),
        now=time.time(),
        meminfo_text=read_text("/proc/meminfo"),
        psi_text=read_text("/proc/pressure/memory"),
        paused_bridges=bridges,
        links=link_states(bridges),
    )
    if forecast is not None:
        files_io.write_atomic(state_path, json.dumps(new_state, indent=1, sort_keys=True) + "\n")
    return text


def take_lock(path: str):
    """An exclusive flock held for the process's life; None when another run holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            print(f"kvmops-pause-collector: another run (pid {holder or '?'}) holds {path}; not running",
                  file=sys.stderr)
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def read_state(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        print(f"kvmops-pause-collector: ignoring unreadable state file {path}: {exc}", file=sys.stderr)
        return {}


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory (not *.prom), fsync, rename over ``path``."""
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def summary_line(report, errors, duration: float) -> str:
    if report is None:
        return f"failed after {duration:.2f}s: {'; '.join(errors)}"
    s = report["summary"]
    causes = ", ".join(f"{c}: {n}" for c, n in sorted(s.get("by_cause", {}).items())) or "none"
    head = "complete" if report["complete"] else "INCOMPLETE"
    line = (
        f"{head} in {duration:.2f}s: {s['total']} domains, {s['paused']} paused, {s['crashed']} crashed "
        f"(causes: {causes}), {s['unresponsive']} unresponsive"
    )
    if report["errors"]:
        line += "; errors: " + "; ".join(report["errors"])
    return line


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = settings(args)
        collect_mod, libvirt_mod, promtext, forecast_mods = import_collection(cfg["libdir"])
        os.makedirs(cfg["state_dir"], mode=0o755, exist_ok=True)
    except (UsageError, OSError) as exc:
        print(f"kvmops-pause-collector: {exc}", file=sys.stderr)
        return EX_USAGE
    lock = take_lock(os.path.join(cfg["state_dir"], LOCK_FILE))
    if lock is None:
        return EX_LOCKED
    state_path = os.path.join(cfg["state_dir"], STATE_FILE)
    state = read_state(state_path)
    started = time.monotonic()
    report, errors = None, []
    try:
        if not libvirt_mod.HAS_LIBVIRT:
            raise libvirt_mod.KvmError(f"libvirt-python is not installed for {sys.executable}")
        report = collect_mod.collect(cfg["uri"], cfg["timeout"], cfg["domains"], started=started)
    except libvirt_mod.KvmError as exc:
        errors.append(str(exc))
    except Exception as exc:  # a bug must still show as kvmops_collector_success 0, not as a stale file
        errors.append(f"internal error: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    duration = time.monotonic() - started
    try:
        extra = forecast_part(cfg, report, libvirt_mod, forecast_mods, errors)
    except OSError as exc:
        errors.append(f"forecast metrics: {exc}")
        extra = ""
    text, new_state = promtext.render(
        report,
        state,
        now=time.time(),
        duration=duration,
        interval=cfg["interval"],
        paused_alert_seconds=cfg["paused_alert_seconds"],
        stale_alert_seconds=cfg["stale_alert_seconds"],
        errors=errors,
    )
    write_atomic(state_path, json.dumps(new_state, indent=1, sort_keys=True) + "\n")
    write_atomic(os.path.join(cfg["textfile_dir"], TEXTFILE), text + extra)
    ok = report is not None and report["complete"]
    print(f"kvmops-pause-collector: {summary_line(report, errors, duration)}", file=sys.stdout if ok else sys.stderr)
    os.close(lock)
    return EX_OK if ok else EX_FAILED


if __name__ == "__main__":
    sys.exit(main())
