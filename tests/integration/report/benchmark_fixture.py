"""Recorded kvm_benchmark runs for the benchmark comparison tests (the keys, units and version strings the module
returns).

``fleet_runs()`` returns ``{host: {label: run}}``: HOST_CHANGED, whose second run follows a tuning change
(scheduler none, deeper queue, read-ahead down, THP madvise, another kernel command line) that lifts the 4k
random jobs clearly and costs the sequential read some bandwidth; HOST_NOISE (a hostile name), whose two runs are
the same tuning with the repeats of each metric interleaved; HOST_MISSING, which has only the later run. Values
are typical for a virtio SSD and 8 vCPUs, with a fixed per-repeat jitter, so the fixture is deterministic.
"""
from __future__ import annotations

BEFORE = "before"
AFTER = "after<i>&\"'"  # a hostile label: it must come out as text, in file names too
HOST_CHANGED = "hv-a.example.net"
HOST_NOISE = "hv-b<img src=x onerror=alert(1)>&\"'"
HOST_MISSING = "hv-c.example.net"
HOSTILE_CMDLINE = "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro <script>alert('cmdline')</script> intel_iommu=on"
# (job, quantity) -> (typical value, unit, higher_is_better)
BASE = {
    ("randread-4k-qd1", "iops"): (9100.0, "IO/s", True),
    ("randread-4k-qd1", "bw_mib_s"): (35.5, "MiB/s", True),
    ("randread-4k-qd1", "lat_mean_us"): (106.0, "\u00b5s", False),
    ("randread-4k-qd1", "lat_p99_us"): (182.0, "\u00b5s", False),
    ("randread-4k-qd32", "iops"): (84200.0, "IO/s", True),
    ("randread-4k-qd32", "bw_mib_s"): (328.9, "MiB/s", True),
    ("randread-4k-qd32", "lat_mean_us"): (378.0, "\u00b5s", False),
    ("randread-4k-qd32", "lat_p99_us"): (742.0, "\u00b5s", False),
    ("randwrite-4k-qd1", "iops"): (7050.0, "IO/s", True),
    ("randwrite-4k-qd1", "bw_mib_s"): (27.5, "MiB/s", True),
    ("randwrite-4k-qd1", "lat_mean_us"): (138.0, "\u00b5s", False),
    ("randwrite-4k-qd1", "lat_p99_us"): (251.0, "\u00b5s", False),
    ("randwrite-4k-qd32", "iops"): (61300.0, "IO/s", True),
    ("randwrite-4k-qd32", "bw_mib_s"): (239.5, "MiB/s", True),
    ("randwrite-4k-qd32", "lat_mean_us"): (519.0, "\u00b5s", False),
    ("randwrite-4k-qd32", "lat_p99_us"): (1090.0, "\u00b5s", False),
    ("seqread-1m", "iops"): (1790.0, "IO/s", True),
    ("seqread-1m", "bw_mib_s"): (1790.0, "MiB/s", True),
    ("seqread-1m", "lat_mean_us"): (4460.0, "\u00b5s", False),
    ("seqread-1m", "lat_p99_us"): (7960.0, "\u00b5s", False),
    ("seqwrite-1m", "iops"): (1210.0, "IO/s", True),
    ("seqwrite-1m", "bw_mib_s"): (1210.0, "MiB/s", True),
    ("seqwrite-1m", "lat_mean_us"): (6600.0, "\u00b5s", False),
    ("seqwrite-1m", "lat_p99_us"): (11900.0, "\u00b5s", False),
    ("cpu", "bogo_ops_per_s"): (11840.0, "bogo-ops/s", True),
    ("memory", "bogo_ops_per_s"): (3520.0, "bogo-ops/s", True),
    ("switch", "bogo_ops_per_s"): (452000.0, "bogo-ops/s", True),
}
# HOST_CHANGED's second run: median factor per metric (everything else unchanged)
CHANGE = {
    ("randread-4k-qd32", "iops"): 1.17,
    ("randread-4k-qd32", "bw_mib_s"): 1.17,
    ("randread-4k-qd32", "lat_mean_us"): 0.855,
    ("randread-4k-qd32", "lat_p99_us"): 0.81,
    ("randwrite-4k-qd32", "iops"): 1.12,
    ("randwrite-4k-qd32", "bw_mib_s"): 1.12,
    ("randwrite-4k-qd32", "lat_mean_us"): 0.893,
    ("randread-4k-qd1", "lat_mean_us"): 0.95,
    ("seqread-1m", "bw_mib_s"): 0.91,
    ("seqread-1m", "iops"): 0.91,
}
# relative jitter of the 4 repeats: within +-1.7% (scaled per metric by 0.6 to 1.4), so a factor above 1.04 or below
# 0.96 separates the ranges
JITTER_BEFORE = (-0.011, 0.004, 0.012, -0.003)
JITTER_AFTER = (0.007, -0.008, 0.0, 0.010)  # interleaves with JITTER_BEFORE
JOBS = ["randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd32", "seqread-1m", "seqwrite-1m",
        "cpu", "memory", "switch"]
TUNING = {"scheduler": "mq-deadline", "read_ahead_kb": 128, "nr_requests": 64, "thp_enabled": "always",
          "thp_defrag": "madvise", "ksm_run": 0, "numa_balancing": 1, "swappiness": 60, "tuned_profile": "virtual-host",
          "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro"}
TUNED = dict(TUNING, scheduler="none", read_ahead_kb=64, nr_requests=256, thp_enabled="madvise",
             cmdline=HOSTILE_CMDLINE)


def metrics(factor: dict, jitter: tuple) -> dict:
    out = {}
    for i, ((job, quantity), (base, unit, higher)) in enumerate(BASE.items()):
        median = base * factor.get((job, quantity), 1.0)
        rot = jitter[i % 4 :] + jitter[: i % 4]  # a different order per metric, the same set
        scale = (0.6, 1.0, 1.4)[i % 3]  # and a different size
        out[f"{job}.{quantity}"] = {"unit": unit, "higher_is_better": higher,
                                    "values": [round(median * (1 + scale * j), 2) for j in rot]}
    return out


def run(host: str, label: str, started: str, finished: str, tuning: dict, factor: dict, jitter: tuple) -> dict:
    return {
        "label": label,
        "host": host,
        "started": started,
        "finished": finished,
        "target": {"kind": "device", "path": "/dev/vdb", "size_bytes": 268435456, "device": "vdb"},
        "settings": {"runtime": 5, "repeats": 4, "jobs": JOBS, "direct": True, "file_size_bytes": 268435456,
                     "stress_workers": 0},
        "tuning": dict(tuning),
        "metrics": metrics(factor, jitter),
        "raw": [{"job": "randread-4k-qd1", "repeat": 1, "tool": "fio", "output": "{\"jobs\": []}"}],
        "versions": {"fio": "3.33", "stress-ng": "0.15.06"},
    }


def fleet_runs() -> dict:
    return {
        HOST_CHANGED: {
            BEFORE: run(HOST_CHANGED, BEFORE, "2026-12-01T09:00:03Z", "2026-12-01T09:03:41Z", TUNING, {},
                        JITTER_BEFORE),
            AFTER: run(HOST_CHANGED, AFTER, "2026-12-01T10:15:09Z", "2026-12-01T10:18:46Z", TUNED, CHANGE,
                       JITTER_AFTER),
        },
        HOST_NOISE: {
            BEFORE: run(HOST_NOISE, BEFORE, "2026-12-01T09:00:04Z", "2026-12-01T09:03:43Z", TUNING, {},
                        JITTER_BEFORE),
            AFTER: run(HOST_NOISE, AFTER, "2026-12-01T10:15:10Z", "2026-12-01T10:18:49Z", TUNING, {}, JITTER_AFTER),
        },
        HOST_MISSING: {
            AFTER: run(HOST_MISSING, AFTER, "2026-12-01T10:15:08Z", "2026-12-01T10:18:44Z", TUNING, {}, JITTER_AFTER),
        },
    }
