"""The pause collector on a fleet host: the systemd timer really runs it, and its textfile follows a guest.

The host is the scenario's collector (molecule.yml, group collectors), a hypervisor of the diagnosed fleet
without guests of its own until side_effect.yml. side_effect.yml left in /run/kvmmon-collector/:
running.prom (guest running), paused1.prom (first run after ``virsh suspend``), paused2.prom (the run
after that), suspend-before / suspend-after (the clock around the suspend). promtool (Debian's, on the
controller) checks each recorded file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[4]
# the collector's host only (the scenario's verifier names no hosts)
testinfra_hosts = [
    f"podman://{platform['name']}"
    for platform in yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
    if "collectors" in platform.get("groups", [])
]
RECORD = "/run/kvmmon-collector"
TEXTFILE = "/var/lib/prometheus/node-exporter/kvmops_pause.prom"
LIB = "/usr/local/lib/kvmops-fleet/ansible_collections/kvmops/fleet/plugins/module_utils"
GUEST = "kvmmon-guest"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, labels, value = SAMPLE.match(line).groups()
            out.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return out


def one(samples, name, **labels) -> float:
    (value,) = [v for n, lb, v in samples if n == name and all(lb.get(k) == w for k, w in labels.items())]
    return value


def record(host, name: str) -> str:
    f = host.file(f"{RECORD}/{name}")
    assert f.exists, f"side_effect.yml did not record {name}"
    return f.content_string


def test_timer_is_enabled_active_and_listed(host):
    timer = host.service("kvmops-pause-collector.timer")
    assert timer.is_enabled and timer.is_running
    listed = host.check_output("systemctl list-timers --all --no-pager kvmops-pause-collector.timer")
    assert "kvmops-pause-collector.timer" in listed and "kvmops-pause-collector.service" in listed
    unit = host.file("/etc/systemd/system/kvmops-pause-collector.timer").content_string
    assert "OnUnitActiveSec=10s" in unit and "AccuracySec=1s" in unit


def test_the_timer_ran_the_service_repeatedly_and_it_succeeded(host):
    log = host.check_output("journalctl -u kvmops-pause-collector.service --no-pager -o cat")
    runs = re.findall(r"^kvmops-pause-collector: complete in [0-9.]+s: .*$", log, re.M)
    assert len(runs) >= 4, log[-3000:]
    assert not re.search(r"^kvmops-pause-collector: (failed|INCOMPLETE)", log, re.M), log[-3000:]
    assert host.check_output("systemctl show -P Result kvmops-pause-collector.service") == "success"


def test_settings_from_the_role(host):
    cfg = json.loads(host.file("/etc/kvmops-fleet/pause-collector.json").content_string)
    assert cfg == {"uri": "qemu:///system", "domains": [], "timeout": 10.0, "interval": 10.0,
                   "textfile_dir": "/var/lib/prometheus/node-exporter", "state_dir": "/var/lib/kvmops-fleet",
                   "paused_alert_seconds": 120.0, "stale_alert_seconds": 300.0, "forecast": False}


def test_the_module_utils_are_the_collections_own(host):
    """No second copy of the logic: the installed files are this collection's module_utils, byte for byte."""
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (REPO / "plugins/module_utils").glob("_*.py")}
    out = host.check_output(f"cd {LIB} && sha256sum _*.py")
    installed = {name: digest for digest, name in (line.split() for line in out.splitlines())
                 if name != "__init__.py"}
    assert installed == shipped
    assert host.file(f"{LIB}/__init__.py").exists
    # the capability packages below it (common/, pause/, ...) too: every module installed there is the
    # collection's own, byte for byte (bytecode the program's imports leave is not compared)
    out = host.check_output(
        f"cd {LIB} && find . -mindepth 2 -type f -name '*.py' -printf '%P\\n' | sort | xargs -r sha256sum"
    )
    nested = {name: digest for digest, name in (line.split() for line in out.splitlines())}
    assert nested, "no module_utils packages installed"
    assert nested == {name: hashlib.sha256((REPO / "plugins/module_utils" / name).read_bytes()).hexdigest()
                      for name in nested}
    program = host.file("/usr/local/lib/kvmops-fleet/kvmops-pause-collector")
    assert program.mode == 0o755
    assert program.content_string == "#!/usr/bin/python3\n" + (
        REPO / "roles/diagnostics/files/kvmops_pause_collector.py").read_text()
    # runnable by hand as it is, with the same Python as the timer
    usage = host.check_output("/usr/local/lib/kvmops-fleet/kvmops-pause-collector --help")
    assert "usage: kvmops-pause-collector" in usage


def test_textfile_is_readable_and_alone(host):
    f = host.file(TEXTFILE)
    assert f.mode == 0o644 and f.user == "root"
    # atomic writes leave no temporary file behind for node_exporter to trip over
    assert host.check_output("ls -A /var/lib/prometheus/node-exporter") == "kvmops_pause.prom"


def test_running_guest(host):
    s = parse(record(host, "running.prom"))
    assert one(s, "kvmops_collector_success") == 1
    assert one(s, "kvmops_domains", state="running") == 1
    assert one(s, "kvmops_domains", state="paused") == 0
    assert not [x for x in s if x[0] == "kvmops_domain_paused_info"]
    assert one(s, "kvmops_collector_interval_seconds") == 10
    assert one(s, "kvmops_paused_alert_threshold_seconds") == 120


def test_the_pause_shows_with_its_cause_and_since(host):
    s = parse(record(host, "paused1.prom"))
    before = float(record(host, "suspend-before"))
    after = float(record(host, "suspend-after"))
    assert one(s, "kvmops_domains", state="paused") == 1 and one(s, "kvmops_domains", state="running") == 0
    (info,) = [lb for n, lb, _v in s if n == "kvmops_domain_paused_info"]
    assert {k: info[k] for k in ("domain", "state", "reason", "cause", "severity", "safe_to_resume", "responsive")} == {
        "domain": GUEST, "state": "paused", "reason": "user", "cause": "user_paused", "severity": "info",
        "safe_to_resume": "true", "responsive": "true"}
    assert one(s, "kvmops_paused_domains", state="paused", reason="user", cause="user_paused") == 1
    since = one(s, "kvmops_domain_paused_since_timestamp_seconds", domain=GUEST)
    # libvirtd rewrites the domain's status file when it pauses: since is the suspend (1 s resolution)
    assert before - 1 <= since <= after + 1
    # the pause counted once (a re-run of side_effect.yml finds the earlier pause in the counter)
    running = parse(record(host, "running.prom"))
    before_count = sum(v for n, lb, v in running if n == "kvmops_domain_pauses_total" and lb["domain"] == GUEST)
    assert one(s, "kvmops_domain_pauses_total", domain=GUEST, cause="user_paused") == before_count + 1


def test_paused_since_survives_the_next_run(host):
    first, second = parse(record(host, "paused1.prom")), parse(record(host, "paused2.prom"))
    last_run = "kvmops_collector_last_run_timestamp_seconds"
    assert one(second, last_run) > one(first, last_run)
    assert one(second, "kvmops_domain_paused_since_timestamp_seconds", domain=GUEST) == one(
        first, "kvmops_domain_paused_since_timestamp_seconds", domain=GUEST)
    assert one(second, "kvmops_domain_pauses_total", domain=GUEST, cause="user_paused") == one(
        first, "kvmops_domain_pauses_total", domain=GUEST, cause="user_paused")
    state = json.loads(host.file("/var/lib/kvmops-fleet/pause-collector.json").content_string)
    (entry,) = state["paused"].values()
    assert entry["name"] == GUEST and entry["since"] == one(second, "kvmops_domain_paused_since_timestamp_seconds")


@pytest.mark.parametrize("name", ["running.prom", "paused1.prom", "paused2.prom"])
def test_promtool_check_metrics(host, name):
    promtool = os.environ.get("KVMOPS_PROMTOOL", "/var/cache/kvmops-fleet/prometheus/promtool")
    res = subprocess.run([promtool, "check", "metrics"], input=record(host, name), capture_output=True, text=True,
                         timeout=60, check=False)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
