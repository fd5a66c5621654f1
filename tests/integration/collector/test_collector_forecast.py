"""kvmops-pause-collector with forecast on (issue 23), the real program against a real running QEMU domain whose
sparse 24 MiB raw disk (error_policy stop) sits on a 20 MiB loop ext4: the textfile says the storage is
overcommitted with statvfs's free bytes, the domain is at risk and would pause; host memory from /proc/meminfo;
after a host writer takes 2 MiB, the second run exports the fill rate and the time until full from the state file
(forecast-collector.json); promtool accepts the text, and the shipped alerts KvmopsStorageOvercommitted and
KvmopsStorageFillsSoon fire on it."""
from __future__ import annotations

import os
import time

import pytest
from promcheck import alert_test, parse_text, promtool, run_collector, select

from kvmlab.storage import sparse_raw_on_loop

pytestmark = pytest.mark.lab
MiB = 1024 * 1024


def test_forecast_metrics_of_a_real_overcommitted_filesystem(lab, tmp_path):
    made = {}

    def on_loop(d):
        made["fs"], _img, xml = sparse_raw_on_loop(d)
        return xml

    d = lab.create_running(on_loop, label="fc")
    try:
        mnt = made["fs"].mount_point
        st = os.stat(mnt / "big.raw")
        key = f"fs:{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        vfs = os.statvfs(mnt)
        first = run_collector(tmp_path, domains=[d.name], forecast=True)
        assert first.rc == 0, first.stderr
        res = promtool("check", "metrics", stdin=first.text)
        assert res.returncode == 0, res.stdout + res.stderr
        s = parse_text(first.text)
        where = {"storage": key, "name": str(mnt), "kind": "filesystem"}
        assert select(s, "kvmops_forecast_success") == [({}, 1.0)]
        assert select(s, "kvmops_storage_free_bytes", storage=key) == [(where, vfs.f_bavail * vfs.f_frsize)]
        assert select(s, "kvmops_storage_overcommitted", storage=key) == [(where, 1.0)]
        assert select(s, "kvmops_domain_storage_at_risk", domain=d.name) == [
            ({"domain": d.name, "disk": "vda", "storage": key, "outcome": "pause", "severity": "critical"}, 1.0)]
        assert ({"domain": d.name, "kind": "storage_overcommitted", "severity": "critical"}, 1.0) in select(
            s, "kvmops_domain_pause_risk", domain=d.name)
        assert select(s, "kvmops_host_memory_available_bytes")[0][1] > 0
        assert select(s, "kvmops_storage_headroom_seconds") == []          # one sample so far
        # a host writer takes 2 MiB; the second run has a rate and a time until full
        with open(mnt / "writer", "wb") as f:
            f.write(b"\1" * 2 * MiB)
            os.fsync(f.fileno())
        time.sleep(1)
        second = run_collector(tmp_path, domains=[d.name], forecast=True)
        assert second.rc == 0, second.stderr
        s2 = parse_text(second.text)
        (_lb, rate), = select(s2, "kvmops_storage_fill_rate_bytes_per_second", storage=key)
        (_lb, free2), = select(s2, "kvmops_storage_free_bytes", storage=key)
        (_lb, headroom), = select(s2, "kvmops_storage_headroom_seconds", storage=key)
        assert rate > 0 and headroom == pytest.approx(free2 / rate, rel=1e-3)
        assert (tmp_path / "state" / "forecast-collector.json").is_file()
        # the shipped rule on the real output: overcommitted, no VM paused -> fires after its for: duration
        where = {"storage": key, "name": str(mnt), "kind": "filesystem"}
        res = alert_test(tmp_path, s2, {
            "0m": [],
            "5m": [{"alertname": "KvmopsStorageFillsSoon", "severity": "critical", **where}],
            "10m": [{"alertname": "KvmopsStorageOvercommitted", "severity": "warning", **where},
                    {"alertname": "KvmopsStorageFillsSoon", "severity": "critical", **where}]},
            rebase={"kvmops_collector_last_success_timestamp_seconds": 1e12})
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        d.destroy()
