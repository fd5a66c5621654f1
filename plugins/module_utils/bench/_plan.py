# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: kvm_benchmark's planner. The fixed job set and the command line of each run, the option checks, the
data-safety verdict on a block device (the collection's one verdict, ``common._disk_safety``, worded for the
benchmark), and the parsers of fio's JSON and stress-ng's YAML into metrics.

The job set (``JOBS``), one tool run per job and repeat, each ``runtime`` seconds:

============================  ======================================================================
job                           what runs
============================  ======================================================================
``randread-4k-qd1``           fio ``--rw=randread --bs=4k --iodepth=1``
``randread-4k-qd32``          fio ``--rw=randread --bs=4k --iodepth=32``
``randwrite-4k-qd1``          fio ``--rw=randwrite --bs=4k --iodepth=1``
``randwrite-4k-qd32``         fio ``--rw=randwrite --bs=4k --iodepth=32``
``seqread-1m``                fio ``--rw=read --bs=1m --iodepth=8``
``seqwrite-1m``               fio ``--rw=write --bs=1m --iodepth=8``
``cpu``                       stress-ng ``--cpu N`` (all of its CPU methods in turn)
``memory``                    stress-ng ``--stream N --stream-l3-size 64M`` (memory bandwidth: STREAM's
                              copy/scale/add/triad over three arrays of 256 MiB shared by the workers)
``switch``                    stress-ng ``--switch N`` (context switches between process pairs)
============================  ======================================================================

Every fio run: ``--ioengine=libaio --direct=0|1 --numjobs=1 --time_based --runtime=R --size=S
--lat_percentiles=1 --output-format=json`` on one file or device. Every stress-ng run: ``--oomable --timeout Rs
--metrics-brief --yaml FILE --temp-path DIR``, N workers (0: one per online CPU, stress-ng's own meaning of 0);
``--oomable`` makes its workers the OOM killer's first choice (stress-ng run by root otherwise protects them, and
the guests' QEMU processes would go first).
Runs are interleaved: repeat 1 of every job, then repeat 2 of every job, ...; a slow drift of the host (page
cache, thermal, a neighbour) then touches every job alike instead of the last job's repeats only.

No I/O and no ansible imports.
"""

from __future__ import annotations

import json
import re

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety
from ansible_collections.kvmops.fleet.plugins.module_utils.common._disk_safety import tail
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import OptionError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
FILE_SIZE_MIN = 16 * MIB
FILE_SIZE_MAX = 64 * GIB
RUNTIME_MAX = 600
REPEATS_MIN, REPEATS_MAX = 2, 50
WORKERS_MAX = 1024
# every run of a task together (jobs x repeats x runtime) may take at most this long
TOTAL_MAX_SECONDS = 3600
# a tool run gets runtime + this many seconds before it is killed (start-up, fio's file open, stress-ng's reaping)
TOOL_GRACE_SECONDS = 120
# a probe (a version query) gets this long; blkid and wipefs get _disk_safety_io.PROBE_TIMEOUT
PROBE_TIMEOUT = 60
# fio lays a file target out (writes it in full) once, before the first run: 120 s plus one per 16 MiB
LAYOUT_RATE = 16 * MIB
FILE_PREFIX = "kvmops-bench-"

FIO = "fio"
STRESS = "stress-ng"
# job -> fio's rw, bs, iodepth and the side of fio's JSON its numbers are on (read or write)
FIO_JOBS = {
    "randread-4k-qd1": ("randread", "4k", 1, "read"),
    "randread-4k-qd32": ("randread", "4k", 32, "read"),
    "randwrite-4k-qd1": ("randwrite", "4k", 1, "write"),
    "randwrite-4k-qd32": ("randwrite", "4k", 32, "write"),
    "seqread-1m": ("read", "1m", 8, "read"),
    "seqwrite-1m": ("write", "1m", 8, "write"),
}
# job -> stress-ng stressor
STRESS_JOBS = {"cpu": "cpu", "memory": "stream", "switch": "switch"}
# the stream stressor's arrays are 4 x this (shared by its workers), three of them: 768 MiB in all, beyond the last
# level cache of nearly every host, and the same on every host (stress-ng would size them from the L3 it detects,
# 480 MiB in some VMs: one pass then takes longer than the whole run)
STREAM_L3_SIZE = "64M"
JOBS = tuple(FIO_JOBS) + tuple(STRESS_JOBS)
WRITE_JOBS = tuple(j for j, spec in FIO_JOBS.items() if spec[3] == "write")
# the packages that ship each tool (Debian/Ubuntu and EL alike)
PACKAGES = {FIO: "fio", STRESS: "stress-ng", "blkid": "util-linux", "wipefs": "util-linux"}
# name, unit, higher_is_better of each quantity
FIO_QUANTITIES = (
    ("iops", "IO/s", True),
    ("bw_mib_s", "MiB/s", True),
    ("lat_mean_us", "\u00b5s", False),
    ("lat_p99_us", "\u00b5s", False),
)
STRESS_QUANTITIES = (("bogo_ops_per_s", "bogo-ops/s", True),)
VAR_PREFIX = r"^[a-z0-9_]{0,32}$"
LABEL = r"^[A-Za-z0-9_.-]{1,64}$"


class BenchError(ValueError):
    """Something the benchmark refuses or cannot do; the message names the option (with the caller's prefix)."""


class OptionValueError(BenchError, OptionError):
    """An option's own value is wrong (raised by the RULES' custom checks); the message starts with its path."""


# ---- option checks (RULES: Custom) -----------------------------------------------------------------------------


def parse_size(text, path="file_size"):
    """'256M' -> bytes. An integer with a suffix K, M or G (powers of 1024), from 16M to 64G."""
    if not isinstance(text, str):
        raise OptionValueError(f"{path}: must be a size such as 256M (a number with K, M or G), got {text!r}")
    m = re.match(r"^([0-9]{1,12})([KMG])$", text.strip().upper())
    if m is None:
        raise OptionValueError(f"{path}: {text[:80]!r} is not a size (expected a number with K, M or G, e.g. 256M)")
    size = int(m.group(1)) * {"K": KIB, "M": MIB, "G": GIB}[m.group(2)]
    if not FILE_SIZE_MIN <= size <= FILE_SIZE_MAX:
        raise OptionValueError(f"{path}: must be from 16M to 64G, got {text.strip()} ({size} bytes)")
    return size


def check_file_size(value, path):
    parse_size(value, path)


def check_jobs(value, path):
    if not isinstance(value, list) or not value:
        raise OptionValueError(f"{path}: must list at least one job (known: {', '.join(JOBS)})")
    seen = {}
    for i, job in enumerate(value):
        if job not in JOBS:  # Ansible's choices refuse it first; the check stands on its own for other callers
            raise OptionValueError(f"{path}[{i}]: unknown job {job!r} (known: {', '.join(JOBS)})")
        if job in seen:
            raise OptionValueError(f"{path}[{i}]: {job} is also given in {path}[{seen[job]}]: give each job once")
        seen[job] = i


def check_var_prefix(value, path):
    """'' (the default: messages name the module's options) or lower-case letters, digits and _, at most 32."""
    if not isinstance(value, str) or "\x00" in value or not re.match(VAR_PREFIX, value):
        shown = repr(value[:40]) if isinstance(value, str) else repr(value)
        raise OptionValueError(
            f"{path}: {shown} is not valid (lower-case letters, digits and _, at most 32; e.g. tuning_benchmark_)"
        )


def _opt(prefix, name):
    return f"{prefix}{name}"


def settings(p):
    """Module params (each already within its own rule) -> the run's settings; raises BenchError for what only
    the options together can refuse, naming them with ``var_prefix``."""
    prefix = p.get("var_prefix") or ""
    jobs = list(p["jobs"])
    fio_jobs = [j for j in jobs if j in FIO_JOBS]
    stress_jobs = [j for j in jobs if j in STRESS_JOBS]
    if p.get("device") is not None and p.get("directory") is not None:
        raise BenchError(
            f"{_opt(prefix, 'device')} and {_opt(prefix, 'directory')} are mutually exclusive: give one "
            "target (an empty block device, or a directory for a file)"
        )
    if fio_jobs and p.get("device") is None and p.get("directory") is None:
        raise BenchError(
            f"{_opt(prefix, 'jobs')}: the fio jobs {', '.join(fio_jobs)} need a target: set "
            f"{_opt(prefix, 'device')} (an empty block device) or {_opt(prefix, 'directory')} (a "
            "directory for a temporary file)"
        )
    total = len(jobs) * p["repeats"] * p["runtime"]
    if total > TOTAL_MAX_SECONDS:
        raise BenchError(
            f"{_opt(prefix, 'jobs')}, {_opt(prefix, 'repeats')}, {_opt(prefix, 'runtime')}: {len(jobs)} jobs x "
            f"{p['repeats']} repeats x {p['runtime']} s = {total} s of runs, more than the {TOTAL_MAX_SECONDS} s one "
            "task may take: fewer jobs, fewer repeats or a shorter runtime"
        )
    kind = ("device" if p.get("device") is not None else "file") if fio_jobs else "none"
    return {
        "prefix": prefix,
        "label": p["label"],
        "jobs": jobs,
        "fio_jobs": fio_jobs,
        "stress_jobs": stress_jobs,
        "kind": kind,
        "runtime": p["runtime"],
        "repeats": p["repeats"],
        "direct": bool(p["direct"]),
        "file_size_bytes": parse_size(p["file_size"]),
        "stress_workers": p["stress_workers"],
        "force": bool(p["force"]),
        "writes": [j for j in fio_jobs if j in WRITE_JOBS],
    }


def tools_needed(s):
    """-> the tools the run needs, in the order they are looked for."""
    out = []
    if s["kind"] == "device":
        out += ["blkid", "wipefs"]
    if s["fio_jobs"]:
        out.append(FIO)
    if s["stress_jobs"]:
        out.append(STRESS)
    return out


def missing_tools(found):
    """{tool: path or None} -> BenchError naming the packages to install, or None."""
    missing = [t for t, path in found.items() if path is None]
    if not missing:
        return None
    packages = sorted({PACKAGES[t] for t in missing})
    return BenchError(
        f"{', '.join(missing)} not found on this host (PATH and the sbin directories): install the "
        f"package{'s' if len(packages) > 1 else ''} {', '.join(packages)}"
    )


# ---- command lines ------------------------------------------------------------------------------------------


def fio_filename(path):
    """fio splits --filename at ':' (several files); a colon in a path is escaped."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def fio_argv(fio, job, filename, size_bytes, runtime, direct):
    rw, bs, iodepth, _side = FIO_JOBS[job]
    return [
        fio,
        f"--name={job}",
        f"--filename={fio_filename(filename)}",
        "--ioengine=libaio",
        f"--direct={1 if direct else 0}",
        f"--rw={rw}",
        f"--bs={bs}",
        f"--iodepth={iodepth}",
        "--numjobs=1",
        "--time_based",
        f"--runtime={runtime}",
        f"--size={size_bytes}",
        "--lat_percentiles=1",
        "--output-format=json",
    ]


def layout_argv(fio, filename, size_bytes):
    """fio writes the file target in full once (its setup phase only), so that read jobs read real blocks."""
    return [
        fio,
        "--name=layout",
        f"--filename={fio_filename(filename)}",
        f"--size={size_bytes}",
        "--rw=read",
        "--bs=1m",
        "--create_only=1",
    ]


def layout_timeout(size_bytes):
    return TOOL_GRACE_SECONDS + -(-size_bytes // LAYOUT_RATE)


def stress_argv(stress, job, workers, runtime, yaml_path, temp_dir):
    extra = ["--stream-l3-size", STREAM_L3_SIZE] if job == "memory" else []
    return [
        stress,
        f"--{STRESS_JOBS[job]}",
        str(workers),
        *extra,
        "--oomable",
        "--timeout",
        f"{runtime}s",
        "--metrics-brief",
        "--yaml",
        yaml_path,
        "--temp-path",
        temp_dir,
    ]


def schedule(jobs, repeats):
    """Interleaved: [(1, job1), (1, job2), ..., (2, job1), ...]."""
    return [(r, job) for r in range(1, repeats + 1) for job in jobs]


def runs(s, tools, filename, size_bytes, tmpdir):
    """Every tool run of the task, interleaved -> [{"job", "repeat", "tool", "argv", "yaml", "timeout"}]
    (``yaml``: the file stress-ng writes its metrics to, in ``tmpdir``)."""
    out = []
    for repeat, job in schedule(s["jobs"], s["repeats"]):
        if job in FIO_JOBS:
            tool, yaml = FIO, None
            argv = fio_argv(tools[FIO], job, filename, size_bytes, s["runtime"], s["direct"])
        else:
            tool, yaml = STRESS, f"{tmpdir}/{job}-{repeat}.yaml"
            argv = stress_argv(tools[STRESS], job, s["stress_workers"], s["runtime"], yaml, tmpdir)
        out.append(
            {
                "job": job,
                "repeat": repeat,
                "tool": tool,
                "argv": argv,
                "yaml": yaml,
                "timeout": s["runtime"] + TOOL_GRACE_SECONDS,
            }
        )
    return out


def device_size_used(file_size, device_bytes):
    """fio's --size on a device: the smaller of file_size and the device, down to a whole MiB."""
    return min(file_size, device_bytes) // MIB * MIB


def command_line(argv):
    """argv -> one shell-quoted line (for would_run and messages)."""
    return " ".join(_quote(a) for a in argv)


def _quote(arg):
    if arg and re.match(r"^[A-Za-z0-9_@%+=:,./\\-]+$", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


# ---- data safety ------------------------------------------------------------------------------------------------


def verdict(facts, s):
    """Facts of a block device (``_disk_safety_io.device_facts``) + the settings -> None, or raises BenchError
    naming the device and everything found. The collection's one data-safety verdict (``_disk_safety.examine``)
    decides what is in use and what the device carries; here it is worded for the benchmark. Refused always: not
    a block device, mounted, used as swap, held by another device (LVM, device-mapper, md, DRBD, bcache), with
    partitions, open by another process, busy for an exclusive open (EBUSY), read-only with write jobs. Refused
    without O(force): any signature blkid or wipefs finds, or a probe that does not answer."""
    prefix = s["prefix"]
    found = _disk_safety.examine(facts)
    dev, shown = facts["path"], found["device"]
    if not found["exists"]:
        raise BenchError(f"{_opt(prefix, 'device')}: {dev} does not exist")
    if not found["is_block"]:
        raise BenchError(
            f"{_opt(prefix, 'device')}: {shown} is not a block device (give an empty disk, partition or "
            f"volume; for a file use {_opt(prefix, 'directory')})"
        )
    always = list(found["in_use"])
    if facts.get("read_only") and s["writes"]:
        always.append(f"read-only, and the write jobs {', '.join(s['writes'])} would fail")
    signatures = found["signatures"]
    if always:
        also = f"; it also carries: {'; '.join(signatures)}" if signatures else ""
        raise BenchError(
            f"{_opt(prefix, 'device')}: {shown} is in use and is never benchmarked, not even with "
            f"{_opt(prefix, 'force')}: {'; '.join(always)}{also}"
        )
    if signatures and not s["force"]:
        raise BenchError(
            f"{_opt(prefix, 'device')}: {shown} is not empty: {'; '.join(signatures)}. The write jobs overwrite what "
            f"is on it: wipe it first, or set {_opt(prefix, 'force')}=true to run over it"
        )
    size = facts.get("size_bytes")
    if size is not None and size < FILE_SIZE_MIN:
        raise BenchError(f"{_opt(prefix, 'device')}: {shown} has {size} bytes, less than the 16 MiB a run needs")


def check_directory(facts, s):
    """Facts of a directory target (``_run_io.directory_facts``) -> None, or raises BenchError."""
    prefix = s["prefix"]
    d = facts["path"]
    if not facts.get("is_dir"):
        raise BenchError(f"{_opt(prefix, 'directory')}: {d} is not an existing directory")
    if not facts.get("writable"):
        raise BenchError(f"{_opt(prefix, 'directory')}: {d} is not writable")
    free = facts.get("free_bytes")
    if free is not None and free < s["file_size_bytes"]:
        raise BenchError(
            f"{_opt(prefix, 'directory')}: {d} has {free} bytes free, less than {_opt(prefix, 'file_size')} "
            f"({s['file_size_bytes']} bytes)"
        )
    if s["direct"] and facts.get("odirect_error"):
        raise BenchError(
            f"{_opt(prefix, 'direct')}: the filesystem of {d} ({facts.get('fstype') or 'unknown type'}) refuses "
            f"O_DIRECT ({facts['odirect_error']}): set {_opt(prefix, 'direct')}=false (reads and writes then go "
            "through the page cache) or use a directory on a disk filesystem"
        )


# ---- host tuning state ------------------------------------------------------------------------------------------


def bracketed(text):
    """'always [madvise] never' -> 'madvise'; a single bare word is itself; None when unknown."""
    if text is None:
        return None
    m = re.search(r"\[([^\]]+)\]", text)
    if m:
        return m.group(1)
    words = text.split()
    return words[0] if len(words) == 1 else None


def _int(text):
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def tuning(raw):
    """Raw texts read by ``_run_io.read_tuning`` (None when missing) -> the ``tuning`` return value."""
    profile = (raw.get("tuned_profile") or "").strip()
    return {
        "scheduler": bracketed(raw.get("scheduler")),
        "read_ahead_kb": _int(raw.get("read_ahead_kb")),
        "nr_requests": _int(raw.get("nr_requests")),
        "thp_enabled": bracketed(raw.get("thp_enabled")),
        "thp_defrag": bracketed(raw.get("thp_defrag")),
        "ksm_run": _int(raw.get("ksm_run")),
        "numa_balancing": _int(raw.get("numa_balancing")),
        "swappiness": _int(raw.get("swappiness")),
        "tuned_profile": profile or None,
        "cmdline": raw["cmdline"].strip() if raw.get("cmdline") is not None else None,
    }


def parse_version(tool, text):
    """'fio-3.33' -> '3.33'; 'stress-ng, version 0.15.06 (gcc ...)' -> '0.15.06'."""
    pattern = r"fio-(\S+)" if tool == FIO else r"version\s+(\S+)"
    m = re.search(pattern, text or "")
    return m.group(1) if m else None


# ---- results ----------------------------------------------------------------------------------------------------


class RunFailed(ValueError):
    """A run that gives no numbers: the tool failed or was killed, or its output lacks what the job needs."""


def parse_fio(text):
    """fio's stdout with --output-format=json -> the parsed JSON (fio may print notes before it)."""
    text = text or ""
    start = 0 if text.startswith("{") else text.find("\n{") + 1  # the first line that opens the JSON
    if start == 0 and not text.startswith("{"):
        raise RunFailed(f"no JSON in fio's output: {tail(text, 200)!r}")
    try:
        data, _end = json.JSONDecoder().raw_decode(text[start:])
    except ValueError as exc:
        raise RunFailed(f"fio's JSON does not parse: {exc}") from None
    if not isinstance(data, dict) or not data.get("jobs"):
        raise RunFailed("fio's JSON has no jobs")
    return data


def _percentile(lat, pct="99.000000"):
    p = (lat or {}).get("percentile") or {}
    return p.get(pct)


def fio_metrics(data, job):
    """fio's parsed JSON of one run of ``job`` -> {quantity: number}. Latency is the total (submission +
    completion, fio's lat_ns, percentiles with --lat_percentiles); completion latency (clat_ns) when fio gives
    no total."""
    entry = data["jobs"][0]
    if entry.get("error"):
        raise RunFailed(f"fio reports error {entry['error']} for the job")
    side = entry.get(FIO_JOBS[job][3])
    if not isinstance(side, dict) or not side.get("io_bytes"):
        raise RunFailed(f"fio's JSON has no {FIO_JOBS[job][3]} I/O for the job")
    lat = side.get("lat_ns") if _percentile(side.get("lat_ns")) is not None else side.get("clat_ns")
    bw_bytes = side.get("bw_bytes")
    if bw_bytes is None:
        bw_bytes = side["bw"] * KIB  # fio before 3.0 reports KiB/s only
    p99 = _percentile(lat)
    if lat is None or p99 is None:
        raise RunFailed("fio's JSON has no latency percentiles for the job")
    return {
        "iops": round(float(side["iops"]), 3),
        "bw_mib_s": round(bw_bytes / MIB, 3),
        "lat_mean_us": round(float(lat["mean"]) / 1000, 3),
        "lat_p99_us": round(float(p99) / 1000, 3),
    }


def _scalar(text):
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def parse_stress_yaml(text):
    """stress-ng's --yaml file -> {"system-info": {...}, "metrics": [{stressor, bogo-ops, ...}], ...}.

    A reader for the YAML stress-ng writes (yaml.c): sections of ``key: value`` maps and the ``metrics`` list of
    maps; no PyYAML on the hosts. Values become int, float or str."""
    out = {}
    section = None
    item = None
    for raw in (text or "").splitlines():
        if not raw.strip() or raw.strip() == "---" or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            key = raw.split(":", 1)[0].strip()
            section = key
            out[section] = {}
            item = None
            continue
        if section is None:
            continue
        line = raw.strip()
        if line.startswith("- "):
            if not isinstance(out[section], list):
                out[section] = []
            item = {}
            out[section].append(item)
            line = line[2:].strip()
        key, sep, value = line.partition(":")
        if not sep:
            continue
        target = item if isinstance(out[section], list) and item is not None else out[section]
        if isinstance(target, dict):
            target[key.strip()] = _scalar(value)
    return out


def stress_metrics(parsed, job):
    """stress-ng's parsed YAML of one run of ``job`` -> {"bogo_ops_per_s": number}."""
    stressor = STRESS_JOBS[job]
    for entry in parsed.get("metrics") or []:
        if isinstance(entry, dict) and entry.get("stressor") == stressor:
            value = entry.get("bogo-ops-per-second-real-time")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return {"bogo_ops_per_s": round(float(value), 3)}
            raise RunFailed(f"stress-ng's YAML has no bogo-ops-per-second-real-time for {stressor}")
    raise RunFailed(f"stress-ng's YAML has no metrics for the {stressor} stressor")


def empty_metrics(jobs):
    out = {}
    for job in jobs:
        for name, unit, higher in FIO_QUANTITIES if job in FIO_JOBS else STRESS_QUANTITIES:
            out[f"{job}.{name}"] = {"unit": unit, "higher_is_better": higher, "values": []}
    return out


def add_values(metrics, job, values):
    for name, value in values.items():
        metrics[f"{job}.{name}"]["values"].append(value)


def drop_empty(metrics):
    """A failed run leaves metrics without values: they are not returned (a metric always has values)."""
    return {k: v for k, v in metrics.items() if v["values"]}
