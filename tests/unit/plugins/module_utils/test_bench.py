"""kvm_benchmark's planner (pure: job argv, option checks, the safety verdict, the parsers) on literals and on
REAL recorded tool output (fixtures/bench, made by fixtures/bench/record.py with fio 3.33, stress-ng 0.15.06 and
util-linux 2.38.1 on Debian 12), and its host side on fixture trees and harmless real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _plan as plan
from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _run_io as io
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _command_io as cmd
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety as ds
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety_io as dsio
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import OptionError

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
UUID1 = "6b1f3c52-9a43-4c4e-8f0e-0d5a3c1b2a01"
DEV = "/dev/loop7"


def params(**kw):
    p = {"label": "before", "device": None, "directory": "/var/tmp", "file_size": "256M", "runtime": 5,
         "repeats": 4, "jobs": list(plan.JOBS), "direct": True, "stress_workers": 0, "force": False,
         "var_prefix": ""}
    p.update(kw)
    return p


def fio_json(job):
    return (FIXTURES / f"fio-{job}.json").read_text()


def probe(kind):
    return json.loads((FIXTURES / f"probe-{kind}.json").read_text())


def facts(kind="clean", **kw):
    """A device's facts as _run_io.device_facts returns them, with the recorded blkid and wipefs answers."""
    rec = probe(kind)
    out = {"path": DEV, "real": DEV, "exists": True, "is_block": True, "name": "loop7", "holders": [],
           "partitions": [], "read_only": False, "mounts": [], "swap": False, "openers": [], "excl_error": None,
           "size_bytes": 64 * plan.MIB}
    for tool in ("blkid", "wipefs"):
        out[f"{tool}_rc"], out[f"{tool}_out"], out[f"{tool}_err"] = (rec[tool]["rc"], rec[tool]["stdout"],
                                                                     rec[tool]["stderr"])
    out.update(kw)
    return out


# ---- the job set and its command lines -------------------------------------------------------------------------


def test_the_job_set_is_the_documented_one():
    assert plan.JOBS == ("randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd32",
                         "seqread-1m", "seqwrite-1m", "cpu", "memory", "switch")
    assert plan.WRITE_JOBS == ("randwrite-4k-qd1", "randwrite-4k-qd32", "seqwrite-1m")


@pytest.mark.parametrize("job,rw,bs,depth", [
    ("randread-4k-qd1", "randread", "4k", 1), ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1), ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("seqread-1m", "read", "1m", 8), ("seqwrite-1m", "write", "1m", 8),
])
def test_fio_argv(job, rw, bs, depth):
    assert plan.fio_argv("/usr/bin/fio", job, "/dev/vdb", 268435456, 5, True) == [
        "/usr/bin/fio", f"--name={job}", "--filename=/dev/vdb", "--ioengine=libaio", "--direct=1", f"--rw={rw}",
        f"--bs={bs}", f"--iodepth={depth}", "--numjobs=1", "--time_based", "--runtime=5", "--size=268435456",
        "--lat_percentiles=1", "--output-format=json",
    ]


def test_fio_argv_buffered_and_a_colon_in_the_path():
    argv = plan.fio_argv("fio", "seqread-1m", "/srv/pci-0000:00:04.0/x.dat", 16 * plan.MIB, 1, False)
    assert "--direct=0" in argv
    assert "--filename=/srv/pci-0000\\:00\\:04.0/x.dat" in argv  # fio splits --filename at an unescaped colon


@pytest.mark.parametrize("job,stressor,extra", [
    ("cpu", "cpu", []), ("memory", "stream", ["--stream-l3-size", "64M"]), ("switch", "switch", []),
])
def test_stress_argv(job, stressor, extra):
    assert plan.stress_argv("/usr/bin/stress-ng", job, 0, 7, "/tmp/d/cpu-1.yaml", "/tmp/d") == [
        "/usr/bin/stress-ng", f"--{stressor}", "0", *extra, "--oomable", "--timeout", "7s", "--metrics-brief",
        "--yaml", "/tmp/d/cpu-1.yaml", "--temp-path", "/tmp/d",
    ]


def test_layout_argv_and_its_timeout():
    assert plan.layout_argv("fio", "/var/tmp/f.dat", 256 * plan.MIB) == [
        "fio", "--name=layout", "--filename=/var/tmp/f.dat", "--size=268435456", "--rw=read", "--bs=1m",
        "--create_only=1",
    ]
    assert plan.layout_timeout(256 * plan.MIB) == 120 + 16
    assert plan.layout_timeout(64 * plan.GIB) == 120 + 4096
    assert plan.layout_timeout(16 * plan.MIB + 1) == 120 + 2


def test_runs_are_interleaved_with_their_timeouts():
    s = plan.settings(params(jobs=["seqread-1m", "cpu"], repeats=3, runtime=2))
    runs = plan.runs(s, {"fio": "/f", "stress-ng": "/s"}, "/dev/vdb", 64 * plan.MIB, "/tmp/x")
    assert [(r["repeat"], r["job"]) for r in runs] == [(1, "seqread-1m"), (1, "cpu"), (2, "seqread-1m"), (2, "cpu"),
                                                       (3, "seqread-1m"), (3, "cpu")]
    assert {r["timeout"] for r in runs} == {122}
    assert runs[1]["yaml"] == "/tmp/x/cpu-1.yaml" and runs[1]["argv"][0] == "/s" and runs[0]["yaml"] is None
    assert plan.schedule(["a", "b", "c"], 2) == [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c")]


def test_command_line_quotes_what_a_shell_would_split():
    assert plan.command_line(["fio", "--name=x", "--filename=/a b/c'd"]) == "fio --name=x '--filename=/a b/c'\"'\"'d'"


@pytest.mark.parametrize("file_size,device,used", [
    (256 * plan.MIB, 64 * plan.MIB, 64 * plan.MIB), (256 * plan.MIB, plan.GIB, 256 * plan.MIB),
    (256 * plan.MIB, 100 * plan.MIB + 4096, 100 * plan.MIB),
])
def test_device_size_used(file_size, device, used):
    assert plan.device_size_used(file_size, device) == used


# ---- option checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,size", [("256M", 256 * plan.MIB), ("16M", 16 * plan.MIB), ("64G", 64 * plan.GIB),
                                       ("16384K", 16 * plan.MIB), ("1g", plan.GIB), (" 32M ", 32 * plan.MIB)])
def test_parse_size(text, size):
    assert plan.parse_size(text) == size


@pytest.mark.parametrize("text", ["15M", "65G", "16383K", "256", "1T", "abc", "", "-1M", "256MB", "1.5G",
                                  "9" * 400 + "M", 256, None])
def test_parse_size_refuses_naming_the_option(text):
    with pytest.raises(OptionError, match=r"^file_size: "):
        plan.parse_size(text)


@pytest.mark.parametrize("jobs,msg", [
    ([], r"^jobs: must list at least one job"),
    (["cpu", "seqread-1m", "cpu"], r"^jobs\[2\]: cpu is also given in jobs\[0\]: give each job once"),
    (["cpu", "disk"], r"^jobs\[1\]: unknown job 'disk'"),
])
def test_check_jobs(jobs, msg):
    with pytest.raises(OptionError, match=msg):
        plan.check_jobs(jobs, "jobs")


@pytest.mark.parametrize("value", ["", "tuning_benchmark_", "x" * 32])
def test_var_prefix_good(value):
    plan.check_var_prefix(value, "var_prefix")


@pytest.mark.parametrize("value", ["Tuning_", "a-b", "x" * 33, " ", "a\x00b", 5])
def test_var_prefix_bad(value):
    with pytest.raises(OptionError, match=r"^var_prefix: "):
        plan.check_var_prefix(value, "var_prefix")


def test_settings_device_and_directory_are_exclusive():
    with pytest.raises(plan.BenchError, match=r"^tuning_benchmark_device and tuning_benchmark_directory are "
                                              r"mutually exclusive"):
        plan.settings(params(device="/dev/vdb", var_prefix="tuning_benchmark_"))


def test_settings_fio_jobs_need_a_target():
    with pytest.raises(plan.BenchError, match=r"^jobs: the fio jobs seqread-1m need a target: set device .* or "
                                              r"directory"):
        plan.settings(params(directory=None, jobs=["cpu", "seqread-1m"]))


def test_settings_bound_on_the_whole_run_names_the_three_options():
    with pytest.raises(plan.BenchError) as err:
        plan.settings(params(repeats=50, runtime=10, var_prefix="tuning_benchmark_"))
    assert str(err.value).startswith("tuning_benchmark_jobs, tuning_benchmark_repeats, tuning_benchmark_runtime: "
                                     "9 jobs x 50 repeats x 10 s = 4500 s of runs, more than the 3600 s")
    assert plan.settings(params(repeats=40, runtime=10))["repeats"] == 40  # 9 x 40 x 10 = 3600: the bound itself


@pytest.mark.parametrize("kw,kind,writes", [
    ({}, "file", ["randwrite-4k-qd1", "randwrite-4k-qd32", "seqwrite-1m"]),
    ({"directory": None, "device": "/dev/vdb", "jobs": ["seqread-1m"]}, "device", []),
    ({"jobs": ["cpu", "switch"]}, "none", []),
    ({"directory": None, "jobs": ["memory"]}, "none", []),
])
def test_settings_kind_and_writes(kw, kind, writes):
    s = plan.settings(params(**kw))
    assert (s["kind"], s["writes"]) == (kind, writes)
    assert s["file_size_bytes"] == 256 * plan.MIB


@pytest.mark.parametrize("kw,tools", [
    ({"directory": None, "device": "/dev/vdb"}, ["blkid", "wipefs", "fio", "stress-ng"]),
    ({"jobs": ["seqread-1m"]}, ["fio"]),
    ({"jobs": ["cpu"]}, ["stress-ng"]),
])
def test_tools_needed(kw, tools):
    assert plan.tools_needed(plan.settings(params(**kw))) == tools


def test_missing_tools_name_the_packages():
    assert plan.missing_tools({"fio": "/usr/bin/fio"}) is None
    err = plan.missing_tools({"blkid": None, "wipefs": None, "fio": "/usr/bin/fio", "stress-ng": None})
    assert str(err) == ("blkid, wipefs, stress-ng not found on this host (PATH and the sbin directories): install the "
                        "packages stress-ng, util-linux")
    assert str(plan.missing_tools({"fio": None})).endswith("install the package fio")


# ---- data safety: recorded blkid / wipefs answers and sysfs facts ----------------------------------------------

DEVICE = {"directory": None, "device": DEV}


@pytest.mark.parametrize("kind,found", [
    ("ext4", f"ext4 signature (UUID={UUID1}, LABEL=kvmops-data, VERSION=1.0)"),
    ("dos", "dos partition table (PTUUID=4b564d31)"),
    ("gpt", f"gpt partition table (PTUUID={UUID1}); PMBR signature at offset 0x1fe"),
    ("lvm2", "LVM2_member signature (UUID=kvmops-Benc-hPv0-1234-5678-9abc-defghi, VERSION=LVM2\\ 001)"),
    ("md", f"linux_raid_member signature (UUID={UUID1}, LABEL=kvmops:bench, VERSION=1.2)"),
    ("drbd", "drbd signature (UUID=123456789abcdef, VERSION=v09)"),
    ("swap", f"swap signature (UUID={UUID1}, LABEL=kvmops-swap, VERSION=1)"),
    ("ext4_and_md", f"linux_raid_member signature (UUID={UUID1}, LABEL=kvmops:bench, VERSION=1.2); ext4 signature "
                    f"at offset 0x438 (UUID={UUID1}, LABEL=kvmops-data)"),
    ("ambivalent", f"more than one signature (blkid: ambivalent result); swap signature at offset 0xff6; ext4 "
                   f"signature at offset 0x438 (UUID={UUID1})"),
])
def test_a_signature_is_refused_without_force(kind, found):
    s = plan.settings(params(**DEVICE))
    with pytest.raises(plan.BenchError) as err:
        plan.verdict(facts(kind), s)
    assert str(err.value) == (f"device: {DEV} is not empty: {found}. The write jobs overwrite what is on it: wipe it "
                              "first, or set force=true to run over it")
    plan.verdict(facts(kind), plan.settings(params(force=True, **DEVICE)))  # force runs over it


def test_the_verdict_names_the_role_variables():
    s = plan.settings(params(var_prefix="tuning_benchmark_", **DEVICE))
    with pytest.raises(plan.BenchError, match=r"^tuning_benchmark_device: /dev/loop7 is not empty: ext4 .* set "
                                              r"tuning_benchmark_force=true"):
        plan.verdict(facts("ext4"), s)


def test_a_clean_device_passes():
    plan.verdict(facts("clean"), plan.settings(params(**DEVICE)))
    assert ds.blkid_findings(2, "", "") == ([], [])
    assert ds.parse_wipefs_json(probe("clean")["wipefs"]["stdout"]) == []
    assert ds.parse_wipefs_json("") == []


@pytest.mark.parametrize("kw,found", [
    ({"mounts": ["/mnt/x y"]}, "mounted at /mnt/x y"),
    ({"swap": True}, "in use as swap (/proc/swaps)"),
    ({"holders": ["dm-0 (LVM vg0-lv0)"]}, "held by dm-0 (LVM vg0-lv0)"),
    ({"holders": ["md127 (md RAID)", "drbd0 (DRBD)"]}, "held by md127 (md RAID); held by drbd0 (DRBD)"),
    ({"partitions": ["loop7p1", "loop7p2"]}, "has partitions (loop7p1, loop7p2)"),
    ({"openers": ["qemu-system-x86 (pid 4711)"]}, "open by qemu-system-x86 (pid 4711)"),
    ({"excl_error": "EBUSY: Device or resource busy"},
     "cannot be opened exclusively (EBUSY: Device or resource busy): something else claims it"),
    ({"read_only": True}, "read-only, and the write jobs randwrite-4k-qd1, randwrite-4k-qd32, seqwrite-1m would fail"),
])
@pytest.mark.parametrize("force", [False, True])
def test_in_use_is_refused_even_with_force(kw, found, force):
    s = plan.settings(params(force=force, **DEVICE))
    with pytest.raises(plan.BenchError) as err:
        plan.verdict(facts("clean", **kw), s)
    assert str(err.value) == (f"device: {DEV} is in use and is never benchmarked, not even with force: {found}")


def test_in_use_also_says_what_it_carries():
    s = plan.settings(params(**DEVICE))
    with pytest.raises(plan.BenchError) as err:
        plan.verdict(facts("ext4", mounts=["/mnt/x"], excl_error="EBUSY: Device or resource busy"), s)
    assert str(err.value) == (
        f"device: {DEV} is in use and is never benchmarked, not even with force: mounted at /mnt/x; cannot be opened "
        "exclusively (EBUSY: Device or resource busy): something else claims it; it also carries: ext4 signature "
        f"(UUID={UUID1}, LABEL=kvmops-data, VERSION=1.0)"
    )


def test_read_only_is_fine_for_read_jobs():
    plan.verdict(facts(read_only=True), plan.settings(params(jobs=["randread-4k-qd1", "seqread-1m"], **DEVICE)))


@pytest.mark.parametrize("kw,msg", [
    ({"exists": False}, f"device: {DEV} does not exist"),
    ({"is_block": False, "real": "/var/tmp/x"}, f"device: {DEV} (/var/tmp/x) is not a block device"),
    ({"size_bytes": 8 * plan.MIB}, f"device: {DEV} has 8388608 bytes, less than the 16 MiB a run needs"),
    ({"blkid_rc": -1, "blkid_out": "", "blkid_err": "no answer within 60 s"},
     f"device: {DEV} is not empty: no answer from blkid (rc -1: no answer within 60 s)"),
    ({"wipefs_rc": 1, "wipefs_out": "", "wipefs_err": "wipefs: error: /dev/loop7: probing initialization failed"},
     f"device: {DEV} is not empty: no answer from wipefs (rc 1: wipefs: error: /dev/loop7: probing initialization"),
])
def test_other_refusals(kw, msg):
    with pytest.raises(plan.BenchError) as err:
        plan.verdict(facts(**kw), plan.settings(params(**DEVICE)))
    assert str(err.value).startswith(msg)


def test_parse_blkid_export():
    assert ds.parse_blkid_export(probe("ext4")["blkid"]["stdout"]) == {
        "DEVNAME": DEV, "LABEL": "kvmops-data", "UUID": UUID1, "VERSION": "1.0", "BLOCK_SIZE": "1024",
        "TYPE": "ext4", "USAGE": "filesystem"}


def test_parse_wipefs_json():
    assert ds.parse_wipefs_json(probe("gpt")["wipefs"]["stdout"]) == [
        {"type": "gpt", "offset": "0x200", "uuid": None, "label": None},
        {"type": "gpt", "offset": "0x3fffe00", "uuid": None, "label": None},
        {"type": "PMBR", "offset": "0x1fe", "uuid": None, "label": None},
    ]


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 7:7 / /mnt/x\\040y rw,relatime shared:2 - ext4 /dev/loop7 rw
31 22 7:7 /sub /srv/bind rw,relatime shared:2 - ext4 /dev/loop7 rw
40 22 0:44 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
41 22 0:45 / /srv/opt\\040x rw - xfs /dev/vdc rw,optional:tag
"""


def test_parse_mountinfo():
    assert ds.parse_mountinfo(MOUNTINFO, "7:7") == ["/mnt/x y", "/srv/bind"]
    assert ds.parse_mountinfo(MOUNTINFO, "7:8") == []
    assert ds.parse_mountinfo(None, "7:7") == []


@pytest.mark.parametrize("path,fstype", [("/var/tmp", "ext4"), ("/dev/shm/kb", "tmpfs"), ("/dev/shm", "tmpfs"),
                                         ("/dev/shmx", "ext4"), ("/srv/opt x/d", "xfs"), ("/mnt/x y", "ext4")])
def test_fstype_of(path, fstype):
    assert ds.fstype_of(MOUNTINFO, path) == fstype


def test_parse_swaps():
    text = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0                              partition\t"
            "8388604\t\t0\t\t100\n/swap\\040file file 1024 0 -2\n")
    assert ds.parse_swaps(text) == ["/dev/zram0", "/swap file"]
    assert ds.parse_swaps("Filename\tType\tSize\tUsed\tPriority\n") == []


# ---- directories ----------------------------------------------------------------------------------------------

DIR_FACTS = {"path": "/var/tmp", "is_dir": True, "writable": True, "free_bytes": 10 * plan.GIB, "fstype": "ext4",
             "device": "vda", "odirect_error": None, "odirect_known": True}


@pytest.mark.parametrize("kw,msg", [
    ({"is_dir": False}, "directory: /var/tmp is not an existing directory"),
    ({"writable": False}, "directory: /var/tmp is not writable"),
    ({"free_bytes": 100 * plan.MIB}, "directory: /var/tmp has 104857600 bytes free, less than file_size (268435456 "
                                     "bytes)"),
    ({"fstype": "tmpfs", "odirect_error": "EINVAL"}, "direct: the filesystem of /var/tmp (tmpfs) refuses O_DIRECT "
                                                     "(EINVAL): set direct=false"),
])
def test_directory_refusals(kw, msg):
    with pytest.raises(plan.BenchError) as err:
        plan.check_directory(dict(DIR_FACTS, **kw), plan.settings(params()))
    assert str(err.value).startswith(msg)


def test_directory_without_o_direct_is_fine_buffered():
    plan.check_directory(dict(DIR_FACTS, odirect_error="EINVAL"), plan.settings(params(direct=False)))
    plan.check_directory(DIR_FACTS, plan.settings(params()))


# ---- tuning and versions -------------------------------------------------------------------------------------


def test_tuning():
    raw = {"scheduler": "[mq-deadline] kyber none\n", "read_ahead_kb": "128\n", "nr_requests": "256\n",
           "thp_enabled": "always [madvise] never\n", "thp_defrag": "always defer defer+madvise [madvise] never\n",
           "ksm_run": "0\n", "numa_balancing": None, "swappiness": "60\n", "tuned_profile": "virtual-host\n",
           "cmdline": "BOOT_IMAGE=/vmlinuz ro quiet\n"}
    assert plan.tuning(raw) == {"scheduler": "mq-deadline", "read_ahead_kb": 128, "nr_requests": 256,
                                "thp_enabled": "madvise", "thp_defrag": "madvise", "ksm_run": 0, "numa_balancing": None,
                                "swappiness": 60, "tuned_profile": "virtual-host",
                                "cmdline": "BOOT_IMAGE=/vmlinuz ro quiet"}
    empty = plan.tuning(dict.fromkeys(raw))
    assert set(empty.values()) == {None}
    assert plan.tuning(dict(raw, scheduler="none\n", tuned_profile="\n"))["scheduler"] == "none"
    assert plan.tuning(dict(raw, tuned_profile="\n"))["tuned_profile"] is None


def test_versions_from_the_recorded_answers():
    rec = json.loads((FIXTURES / "versions.json").read_text())
    assert plan.parse_version("fio", rec["fio"]) == "3.33"
    assert plan.parse_version("stress-ng", rec["stress-ng"]) == "0.15.06"
    assert plan.parse_version("fio", "") is None


# ---- parsing the recorded fio and stress-ng output ---------------------------------------------------------


@pytest.mark.parametrize("job", list(plan.FIO_JOBS))
def test_fio_metrics_from_real_output(job):
    data = plan.parse_fio(fio_json(job))
    side = data["jobs"][0][plan.FIO_JOBS[job][3]]
    other = data["jobs"][0]["read" if plan.FIO_JOBS[job][3] == "write" else "write"]
    assert other["io_bytes"] == 0 and side["io_bytes"] > 0  # the recorded job really did its kind of I/O
    assert data["jobs"][0]["job options"]["rw"] == plan.FIO_JOBS[job][0]
    m = plan.fio_metrics(data, job)
    assert m == {
        "iops": round(side["iops"], 3),
        "bw_mib_s": round(side["bw_bytes"] / 1048576, 3),
        "lat_mean_us": round(side["lat_ns"]["mean"] / 1000, 3),
        "lat_p99_us": round(side["lat_ns"]["percentile"]["99.000000"] / 1000, 3),
    }
    assert all(v > 0 for v in m.values())
    assert m["lat_p99_us"] >= side["lat_ns"]["min"] / 1000


def test_fio_metrics_fall_back_to_completion_latency():
    data = plan.parse_fio(fio_json("randread-4k-qd1"))
    read = data["jobs"][0]["read"]
    del read["lat_ns"]["percentile"]
    del read["bw_bytes"]
    m = plan.fio_metrics(data, "randread-4k-qd1")
    assert m["lat_mean_us"] == round(read["clat_ns"]["mean"] / 1000, 3)
    assert m["lat_p99_us"] == round(read["clat_ns"]["percentile"]["99.000000"] / 1000, 3)
    assert m["bw_mib_s"] == round(read["bw"] * 1024 / 1048576, 3)


def test_fio_error_output():
    rec = json.loads((FIXTURES / "fio-error.json").read_text())
    assert rec["rc"] == 1 and rec["stdout"].startswith("fio: pid=")  # a note before the JSON
    data = plan.parse_fio(rec["stdout"])
    with pytest.raises(plan.RunFailed, match=r"^fio reports error 1 for the job"):
        plan.fio_metrics(data, "randwrite-4k-qd1")
    assert ds.tail(rec["stderr"]) == ("fio: io_u error on file /dev/loop7: Operation not permitted: write "
                                      "offset=1011712, buflen=4096")


@pytest.mark.parametrize("text,msg", [
    ("", "no JSON in fio's output"), ("fio: engine libaio not loadable\n", "no JSON in fio's output"),
    ('{"jobs": [', "fio's JSON does not parse"), ('{"fio version": "fio-3.33"}', "fio's JSON has no jobs"),
])
def test_fio_output_without_numbers(text, msg):
    with pytest.raises(plan.RunFailed, match=msg):
        plan.parse_fio(text)


def test_fio_json_of_the_wrong_side():
    data = plan.parse_fio(fio_json("randread-4k-qd1"))
    with pytest.raises(plan.RunFailed, match="fio's JSON has no write I/O"):
        plan.fio_metrics(data, "randwrite-4k-qd1")


@pytest.mark.parametrize("job,stressor", [("cpu", "cpu"), ("memory", "stream"), ("switch", "switch")])
def test_stress_metrics_from_real_output(job, stressor):
    text = (FIXTURES / f"stress-ng-{job}.out").read_text()
    parsed = plan.parse_stress_yaml(text)
    assert parsed["system-info"]["stress-ng-version"] == "0.15.06"
    assert parsed["system-info"]["version"] == "#1 SMP PREEMPT_DYNAMIC @0"  # quoted scalars unquoted
    assert isinstance(parsed["system-info"]["cpus"], int)
    [entry] = parsed["metrics"]
    assert entry["stressor"] == stressor and isinstance(entry["bogo-ops"], int)
    line = next(x for x in text.splitlines() if "bogo-ops-per-second-real-time" in x)
    assert plan.stress_metrics(parsed, job) == {"bogo_ops_per_s": round(float(line.split(":")[1]), 3)}
    json.dumps(parsed)


def test_stress_metrics_missing():
    parsed = plan.parse_stress_yaml((FIXTURES / "stress-ng-cpu.out").read_text())
    with pytest.raises(plan.RunFailed, match="no metrics for the stream stressor"):
        plan.stress_metrics(parsed, "memory")
    parsed["metrics"][0]["bogo-ops-per-second-real-time"] = "n/a"
    with pytest.raises(plan.RunFailed, match="no bogo-ops-per-second-real-time for cpu"):
        plan.stress_metrics(parsed, "cpu")
    assert plan.parse_stress_yaml("") == {}


def test_metrics_shape():
    m = plan.empty_metrics(["seqread-1m", "cpu"])
    assert m == {
        "seqread-1m.iops": {"unit": "IO/s", "higher_is_better": True, "values": []},
        "seqread-1m.bw_mib_s": {"unit": "MiB/s", "higher_is_better": True, "values": []},
        "seqread-1m.lat_mean_us": {"unit": "\u00b5s", "higher_is_better": False, "values": []},
        "seqread-1m.lat_p99_us": {"unit": "\u00b5s", "higher_is_better": False, "values": []},
        "cpu.bogo_ops_per_s": {"unit": "bogo-ops/s", "higher_is_better": True, "values": []},
    }
    plan.add_values(m, "cpu", {"bogo_ops_per_s": 5.0})
    assert list(plan.drop_empty(m)) == ["cpu.bogo_ops_per_s"]


def test_tail():
    assert ds.tail("a\n\nb\nc\nd\ne\nf\ng\n") == "b | c | d | e | f | g"
    assert ds.tail("x" * 900, 100) == "..." + "x" * 100
    assert ds.tail(None) == ""


# ---- the host side on fixture trees ---------------------------------------------------------------------------


def _write(root, path, text):
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.fixture
def sysfs(tmp_path):
    """vdb with a partition vdb1 held by dm-0 (an LVM volume), dm-0 and loop7 with no holders."""
    root = tmp_path
    for name in ("vdb", "dm-0", "loop7"):
        (root / "sys/devices/virtual/block" / name / "holders").mkdir(parents=True)
    _write(root, "/sys/devices/virtual/block/vdb/queue/scheduler", "[mq-deadline] none\n")
    _write(root, "/sys/devices/virtual/block/vdb/queue/read_ahead_kb", "128\n")
    _write(root, "/sys/devices/virtual/block/vdb/queue/nr_requests", "256\n")
    _write(root, "/sys/devices/virtual/block/vdb/vdb1/partition", "1\n")
    (root / "sys/devices/virtual/block/vdb/vdb1/holders").mkdir(parents=True)
    (root / "sys/devices/virtual/block/vdb/vdb1/holders/dm-0").mkdir()
    _write(root, "/sys/devices/virtual/block/dm-0/dm/name", "vg0-lv0\n")
    _write(root, "/sys/devices/virtual/block/dm-0/dm/uuid", "LVM-abc\n")
    _write(root, "/sys/devices/virtual/block/dm-0/queue/scheduler", "none\n")
    (root / "sys/class/block").mkdir(parents=True)
    for name, rel in (("vdb", "vdb"), ("vdb1", "vdb/vdb1"), ("dm-0", "dm-0"), ("loop7", "loop7")):
        (root / "sys/class/block" / name).symlink_to(root / "sys/devices/virtual/block" / rel)
    return root


def test_holders_partitions_and_queues(sysfs):
    vdb = str(sysfs / "sys/class/block/vdb")
    assert dsio.partitions(vdb) == ["vdb1"]
    assert dsio.holders(str(sysfs / "sys/class/block/vdb1"), str(sysfs)) == ["dm-0 (LVM vg0-lv0)"]
    assert dsio.holders(vdb, str(sysfs)) == []
    assert dsio.partitions(str(sysfs / "sys/class/block/loop7")) == []
    assert io.queue_dir("vdb1", str(sysfs)) == str(sysfs / "sys/class/block/vdb/queue")
    assert io.queue_dir("dm-0", str(sysfs)) == str(sysfs / "sys/class/block/dm-0/queue")


@pytest.mark.parametrize("name,expected", [("md127", "md127 (md RAID)"), ("drbd0", "drbd0 (DRBD)"),
                                           ("bcache0", "bcache0 (bcache)"), ("dm-3", "dm-3 (device-mapper)"),
                                           ("sdz", "sdz")])
def test_holder_kinds(tmp_path, name, expected):
    assert dsio._holder(name, str(tmp_path)) == expected


def test_read_tuning_on_a_tree(sysfs):
    _write(sysfs, "/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    _write(sysfs, "/sys/kernel/mm/transparent_hugepage/defrag", "[always] defer never\n")
    _write(sysfs, "/sys/kernel/mm/ksm/run", "1\n")
    _write(sysfs, "/proc/sys/vm/swappiness", "10\n")
    _write(sysfs, "/proc/cmdline", "ro quiet\n")
    t = plan.tuning(io.read_tuning("vdb1", str(sysfs)))
    assert t == {"scheduler": "mq-deadline", "read_ahead_kb": 128, "nr_requests": 256, "thp_enabled": "madvise",
                 "thp_defrag": "always", "ksm_run": 1, "numa_balancing": None, "swappiness": 10,
                 "tuned_profile": None, "cmdline": "ro quiet"}
    assert plan.tuning(io.read_tuning("dm-0", str(sysfs)))["scheduler"] == "none"
    assert plan.tuning(io.read_tuning(None, str(sysfs)))["scheduler"] is None


def test_openers_on_a_tree(tmp_path):
    for pid, comm, targets in ((4711, "qemu-system-x86", ["/dev/null", DEV]), (12, "bash", ["/dev/pts/0"]),
                               (os.getpid(), "python", [DEV])):
        fd = tmp_path / "proc" / str(pid) / "fd"
        fd.mkdir(parents=True)
        _write(tmp_path, f"/proc/{pid}/comm", comm + "\n")
        for i, target in enumerate(targets):
            (fd / str(i)).symlink_to(target)
    (tmp_path / "proc" / "999" / "fd").mkdir(parents=True)
    (tmp_path / "proc" / "999" / "fd").chmod(0)  # another user's process: unreadable, skipped
    assert dsio.openers(DEV, str(tmp_path)) == ["qemu-system-x86 (pid 4711)"]  # this process itself is left out


def test_device_facts_of_what_is_not_a_block_device(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert dsio.device_facts(str(f), {}) == {"path": str(f), "exists": True, "real": str(f), "is_block": False}
    assert dsio.device_facts(str(tmp_path / "nope"), {})["exists"] is False


def test_directory_facts_and_the_file(tmp_path):
    d = io.directory_facts(str(tmp_path))
    assert d["is_dir"] and d["writable"] and d["free_bytes"] > 0 and d["fstype"]
    assert d["odirect_known"] in (True, False)
    path = io.create_file(str(tmp_path), "before", False)
    name = os.path.basename(path)
    assert name.startswith("kvmops-bench-before-") and name.endswith(".dat") and len(name) == len(
        "kvmops-bench-before-") + 8 + 4
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.path.getsize(path) == 0
    io.remove_file(path)
    io.remove_file(path)  # gone already: no error
    assert list(tmp_path.iterdir()) == []  # the O_DIRECT probe left nothing either
    assert io.directory_facts(str(tmp_path / "nope")) == {"path": str(tmp_path / "nope"), "is_dir": False}


def test_odirect_refused(monkeypatch, tmp_path):
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(io.os, "open", no_direct)
    assert io._odirect_error(str(tmp_path)) == "EINVAL"
    facts_ = io.directory_facts(str(tmp_path))
    assert facts_["odirect_error"] == "EINVAL" and facts_["odirect_known"] is True
    with pytest.raises(OSError):
        io.create_file(str(tmp_path), "x", True)  # a filesystem whose support was unknown: the file tells, and goes
    assert list(tmp_path.iterdir()) == []


def test_odirect_unknown_without_o_tmpfile(monkeypatch, tmp_path):
    def no_tmpfile(path, flags, *a):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(io.os, "open", no_tmpfile)
    assert io._odirect_error(str(tmp_path)) == "unknown"


def test_claim_a_file_is_not_a_claim_but_reports(tmp_path):
    fd, err = dsio.claim(str(tmp_path / "nope"))
    assert fd is None and err.startswith("ENOENT: ")


def test_run_tool():
    rc, out, err = cmd.run_tool([sys.executable, "-c", "import sys; print('o'); print('e', file=sys.stderr); "
                                                       "sys.exit(3)"], 30)
    assert (rc, out, err) == (3, "o\n", "e\n")


def test_run_tool_timeout_kills_the_whole_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pidfile)!r}, 'w').write(str(p.pid)); print('started', flush=True); "
              "time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(cmd.ToolTimeout) as err:
        cmd.run_tool([sys.executable, "-c", script], 1)
    assert time.monotonic() - start < 10
    assert str(err.value) == "did not finish within 1 s (killed)" and err.value.out == "started\n"
    child = int(pidfile.read_text())
    for _attempt in range(50):  # the worker (a grandchild, as stress-ng's are) is killed with its parent
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        status = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}/stat").exists() else "X"
        if status == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"pid {child} outlived the tool's timeout")


def test_find_tool_looks_in_sbin(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cmd.find_tool("sh") in ("/usr/bin/sh", "/bin/sh")
    assert cmd.find_tool("kvmops-no-such-tool") is None


def test_sigterm_raises_where_the_module_runs():
    proc = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _run_io\n"
         "_run_io.handle_sigterm()\n"
         "try:\n    os.kill(os.getpid(), signal.SIGTERM)\n    import time; time.sleep(5)\n"
         "except _run_io.Terminated as exc:\n    print('caught', exc)\n"],
        capture_output=True, text=True, timeout=30, check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert proc.stdout == "caught terminated (SIGTERM)\n", proc.stderr
