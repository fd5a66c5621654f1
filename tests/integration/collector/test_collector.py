"""kvmops-pause-collector (roles/diagnostics/files) against real libvirt/QEMU domains of the lab.

The real program in its own process, as the systemd timer runs it: real paused guests (ENOSPC, user)
show in the textfile with their diagnosis, and the shipped alert rules fire on that output; a pause
that ends and comes back is counted; a libvirt that never answers (a socket nobody serves, as a frozen
libvirtd looks to its clients) ends the run within its bound with kvmops_collector_success 0 and the
alerts for it; runs never overlap (the lock). The collection as users install it (the built tarball)
runs the same program.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from promcheck import COLLECTOR, REPO, alert_test, parse_text, promtool, run_collector, select, start_collector

pytestmark = pytest.mark.lab
BIN = Path(sys.executable).parent


def info(samples, name: str) -> dict:
    (labels,) = [lb for lb, _v in select(samples, "kvmops_domain_paused_info", domain=name)]
    return labels


def value(samples, metric: str, **labels) -> float:
    (v,) = [v for _lb, v in select(samples, metric, **labels)]
    return v


def check_metrics(text: str) -> None:
    res = promtool("check", "metrics", stdin=text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res.stdout + res.stderr


@contextlib.contextmanager
def frozen_libvirt(path: Path):
    """A unix socket that accepts connections (the kernel's backlog) and never answers: what a client of
    a stopped (SIGSTOP) or deadlocked libvirtd sees. The machine's shared libvirtd is never touched."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(64)
    try:
        yield f"qemu+unix:///system?socket={path}"
    finally:
        srv.close()
        path.unlink(missing_ok=True)


def collector_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], stdout=subprocess.PIPE, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(COLLECTOR) in line]


def lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_real_pauses_in_the_textfile_and_the_alerts_fire(lab_domain, tmp_path):
    full, user = lab_domain("enospc"), lab_domain("user")
    names = [full.name, user.name]
    first = run_collector(tmp_path, domains=names, paused_alert_seconds=900)
    assert first.rc == 0, first.stderr
    check_metrics(first.text)
    s = parse_text(first.text)
    assert value(s, "kvmops_collector_success") == 1
    assert value(s, "kvmops_domains", state="paused") == 2
    f = info(s, full.name)
    assert (f["uuid"], f["state"], f["reason"], f["cause"], f["severity"], f["safe_to_resume"]) == (
        full.uuid, "paused", "ioerror", "storage_full", "critical", "false")
    u = info(s, user.name)
    assert (u["reason"], u["cause"], u["severity"], u["safe_to_resume"]) == ("user", "user_paused", "info", "true")
    assert select(s, "kvmops_domain_disk_error", domain=full.name) == [
        ({"domain": full.name, "uuid": full.uuid, "disk": "vda", "error": "no_space"}, 1.0)]
    assert not select(s, "kvmops_domain_disk_error", domain=user.name)
    assert value(s, "kvmops_paused_domains", state="paused", reason="ioerror", cause="storage_full") == 1
    assert value(s, "kvmops_paused_domains", state="paused", reason="user", cause="user_paused") == 1
    since = {n: value(s, "kvmops_domain_paused_since_timestamp_seconds", domain=n) for n in names}
    for name, t in since.items():   # libvirtd's status file mtime: at or after the define, before this run
        assert time.time() - 600 < t <= value(s, "kvmops_collector_last_run_timestamp_seconds"), name

    # a second run: durations and counters persisted, nothing counted twice
    second = run_collector(tmp_path, domains=names, paused_alert_seconds=900)
    s2 = parse_text(second.text)
    assert {n: value(s2, "kvmops_domain_paused_since_timestamp_seconds", domain=n) for n in names} == since
    assert value(s2, "kvmops_domain_pauses_total", domain=full.name, cause="storage_full") == 1
    assert value(s2, "kvmops_domain_pauses_total", domain=user.name, cause="user_paused") == 1

    # the shipped rules on this real output (promtool's clock starts at 0: paused since 0)
    target = {"severity", "state", "reason", "cause", "safe_to_resume", "domain", "uuid"}
    too_long = [{"alertname": "KvmopsDomainPausedTooLong", **{k: v for k, v in info(s2, n).items() if k in target}}
                for n in names]
    storage_full = [{"alertname": "KvmopsDomainStorageFull", "severity": "critical", **info(s2, full.name)}]
    res = alert_test(tmp_path, parse_text(second.text), {"1m": storage_full, "14m": storage_full,
                                                         "15m": storage_full + too_long},
                     rebase={"kvmops_domain_paused_since_timestamp_seconds": 0,
                             "kvmops_collector_last_success_timestamp_seconds": 1e12})
    assert res.returncode == 0, res.stdout + res.stderr

    # the ENOSPC guest resumed once its space is back, then paused again by hand: a second pause
    full.clear()
    full.dom.resume()
    third = parse_text(run_collector(tmp_path, domains=names).text)
    assert not select(third, "kvmops_domain_paused_info", domain=full.name)
    assert value(third, "kvmops_domain_pauses_total", domain=full.name, cause="storage_full") == 1
    suspended_at = time.time()
    full.dom.suspend()
    fourth = parse_text(run_collector(tmp_path, domains=names).text)
    assert info(fourth, full.name)["cause"] == "user_paused"
    assert value(fourth, "kvmops_domain_paused_since_timestamp_seconds", domain=full.name) >= int(suspended_at)
    assert value(fourth, "kvmops_domain_pauses_total", domain=full.name, cause="user_paused") == 1
    assert value(fourth, "kvmops_domain_pauses_total", domain=full.name, cause="storage_full") == 1
    assert value(fourth, "kvmops_domain_paused_since_timestamp_seconds", domain=user.name) == since[user.name]


def test_frozen_libvirt_ends_within_the_bound_and_shows(lab_domain, tmp_path):
    user = lab_domain("user")
    good = run_collector(tmp_path, domains=[user.name])
    assert good.rc == 0, good.stderr
    last_success = value(parse_text(good.text), "kvmops_collector_last_success_timestamp_seconds")
    since = value(parse_text(good.text), "kvmops_domain_paused_since_timestamp_seconds", domain=user.name)

    timeout = 3
    with frozen_libvirt(tmp_path / "frozen.sock") as uri:
        hung = run_collector(tmp_path, uri=uri, timeout=timeout, domains=[user.name])
    print(f"\nfrozen libvirt: run ended after {hung.seconds:.2f}s (timeout {timeout}s)")
    assert hung.seconds < timeout + 10          # bounded: the worker is killed at the deadline
    assert hung.rc == 1 and f"did not accept a connection to {uri} within {timeout}" in hung.stderr
    assert not collector_processes()           # the forked worker was reaped with the run
    check_metrics(hung.text)
    s = parse_text(hung.text)
    assert value(s, "kvmops_collector_success") == 0
    assert value(s, "kvmops_collector_errors") >= 1
    assert value(s, "kvmops_collector_last_success_timestamp_seconds") == last_success
    # the paused guest is still known from libvirtd's status file, its pause start kept
    assert info(s, user.name)["responsive"] == "false"
    assert value(s, "kvmops_domain_paused_since_timestamp_seconds", domain=user.name) == since

    # the rules on this output: failing after one more minute, stale at the threshold
    res = alert_test(tmp_path, s, {
        "0m": [],
        "1m": [{"alertname": "KvmopsCollectorFailing", "severity": "warning"}],
        "4m": [{"alertname": "KvmopsCollectorFailing", "severity": "warning"}],
        "5m": [{"alertname": "KvmopsCollectorFailing", "severity": "warning"},
               {"alertname": "KvmopsCollectorStale", "severity": "warning"}]},
        rebase={"kvmops_collector_last_success_timestamp_seconds": 0,
                "kvmops_domain_paused_since_timestamp_seconds": 1e12})
    assert res.returncode == 0, res.stdout + res.stderr


def test_runs_never_overlap(lab_domain, tmp_path):
    user = lab_domain("user")
    lock = tmp_path / "state" / "pause-collector.lock"
    with frozen_libvirt(tmp_path / "frozen.sock") as uri:
        slow = start_collector(tmp_path, uri=uri, timeout=15, domains=[user.name])
        try:
            deadline = time.monotonic() + 60
            while not lock_held(lock):
                assert slow.poll() is None, slow.communicate()
                assert time.monotonic() < deadline, "the first run never took its lock"
                time.sleep(0.1)
            second = run_collector(tmp_path, domains=[user.name])
            assert slow.poll() is None               # the first run is still going ...
            assert second.rc == 75                  # ... and the second did not start its work
            assert f"another run (pid {slow.pid}) holds {lock}" in second.stderr
            assert not second.textfile.exists()     # nothing written by the refused run
        finally:
            _out, err = slow.communicate(timeout=120)
    assert slow.returncode == 1, err
    third = run_collector(tmp_path, domains=[user.name])  # the lock went with the first run's process
    assert third.rc == 0, third.stderr
    assert info(parse_text(third.text), user.name)["cause"] == "user_paused"


def test_the_installed_collection_runs_the_collector(lab_domain, tmp_path):
    """Build and install the tarball: its program and module_utils, in the layout the role copies to
    hosts (<root>/ansible_collections/kvmops/fleet/plugins/module_utils), diagnose a real pause."""
    user = lab_domain("user")
    dist, root = tmp_path / "dist", tmp_path / "collections"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (tarball,) = dist.glob("kvmops-fleet-*.tar.gz")
    # only the new root on the collections path: else the checkout's link counts as "already installed"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(root), str(tarball)],
                   check=True, capture_output=True, timeout=300,
                   env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root)))
    installed = root / "ansible_collections" / "kvmops" / "fleet"
    role = installed / "roles" / "diagnostics"
    for rel in ("tasks/collector.yml", "templates/kvmops-pause-collector.service.j2",
                "templates/kvmops-pause-collector.timer.j2", "files/prometheus/kvmops-fleet-alerts.yml"):
        assert (role / rel).is_file(), rel
    # what the role copies: the files tasks/collector.yml lists, below role_path/../../plugins/module_utils
    tasks = yaml.safe_load((role / "tasks" / "collector.yml").read_text())
    (shipped,) = [t["vars"]["__diagnostics_collector_files"] for t in tasks
                  if "__diagnostics_collector_files" in t.get("vars", {})][:1]
    assert all((role / ".." / ".." / "plugins" / "module_utils" / f).is_file() for f in shipped), shipped
    assert "pause/_promtext.py" in shipped and "pause/_collect_io.py" in shipped
    # the installed program with the installed module_utils, nothing from this checkout
    run = run_collector(tmp_path, domains=[user.name], program=role / "files" / "kvmops_pause_collector.py",
                        libdir=str(root))
    assert run.rc == 0, run.stderr
    assert info(parse_text(run.text), user.name)["cause"] == "user_paused"
