#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_benchmark
short_description: Run a short, fixed fio and stress-ng job set on a KVM host and return every repeat's numbers
version_added: 0.1.0
description:
  - Runs a fixed, documented job set, each job O(runtime) seconds and O(repeats) times, and returns every repeat's
    numbers, the raw tool output, and the host's tuning state at the time, so that runs before and after a tuning
    change can be compared (the P(kvmops.fleet.tuning#role) role's C(benchmark) entry point keeps and compares them).
  - "fio jobs (C(--ioengine=libaio --numjobs=1 --time_based --lat_percentiles=1 --output-format=json),
    C(--direct) from O(direct), C(--size) from O(file_size)): V(randread-4k-qd1) and V(randread-4k-qd32) (random
    4 KiB reads at queue depth 1 and 32), V(randwrite-4k-qd1) and V(randwrite-4k-qd32) (the same for writes),
    V(seqread-1m) and V(seqwrite-1m) (sequential 1 MiB reads and writes at queue depth 8)."
  - "stress-ng jobs (C(--oomable --timeout RUNTIMEs --metrics-brief --yaml FILE), O(stress_workers) workers):
    V(cpu) (C(--cpu), every CPU method in turn), V(memory) (C(--stream --stream-l3-size 64M), memory bandwidth:
    STREAM's copy, scale, add and triad over three arrays of 256 MiB shared by the workers, the same on every host),
    V(switch) (C(--switch), context switches between process pairs). C(--oomable) makes the workers the OOM
    killer's first choice rather than the guests."
  - The runs are interleaved, repeat 1 of every job, then repeat 2 of every job, and so on, so that a slow drift of
    the host (page cache, temperature, a busy neighbour) touches every job alike.
  - "Data safety, checked before any run and in check mode too: O(device) must be a block device that is not
    mounted, not swap, not held by another device (LVM, device-mapper, md, DRBD, bcache), has no partitions, is not
    open by another process and opens exclusively (O_EXCL); these are refused always. C(blkid -p) and
    C(wipefs --no-act) (read-only probes) must find no signature (filesystem, partition table, LVM, md, DRBD,
    swap, ...); a signature is refused unless O(force). Each refusal names the device and what was found."
  - The device stays open exclusively while the jobs run, so nothing can mount or claim it meanwhile.
  - "With O(directory) the module creates C(kvmops-bench-LABEL-RANDOM.dat) there (mode 0600, never an existing
    file), has fio write it in full once before the first run (so that the read jobs read real blocks), and removes
    it afterwards, also when a run fails or the module is terminated (SIGTERM)."
  - Each tool run is killed (with its workers) when it takes O(runtime) + 120 s; laying out the file gets 120 s plus
    one second per 16 MiB. A failure names the job, the repeat and the end of the tool's error output, and says
    which runs completed.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
attributes:
  check_mode:
    support: full
    details:
      - Runs every check the real run does (the device's safety probes and exclusive open, the directory's free
        space and O_DIRECT support, the tools), returns RV(would_run) and the V(changed) the real run would return,
        and runs nothing. The O_DIRECT probe opens an unnamed file (O_TMPFILE) that never appears in the directory.
  diff_mode:
    support: none
options:
  label:
    description:
      - Name of this run, such as V(before) or V(after) (1 to 64 letters, digits, V(_), V(.), V(-)); part of the
        file name with O(directory).
    type: str
    required: true
  device:
    description:
      - An empty block device (a whole disk, a partition, a logical volume) the fio jobs read and write, such as
        V(/dev/vdb); its contents are overwritten by the write jobs. Not together with O(directory); one of them is
        needed when O(jobs) has a fio job.
    type: path
  directory:
    description:
      - An existing directory the fio jobs work in, through a temporary file of O(file_size) bytes that is removed
        afterwards; it must have that much free space. Not together with O(device).
    type: path
  file_size:
    description:
      - How much of the target the fio jobs use, a number with V(K), V(M) or V(G) (powers of 1024), from V(16M) to
        V(64G). On a device, the smaller of this and the device's size.
    type: str
    default: 256M
  runtime:
    description:
      - Seconds each job runs, per repeat, from V(1) to V(600). All runs together (jobs x O(repeats) x O(runtime))
        may take at most 3600 s.
    type: int
    default: 5
  repeats:
    description:
      - How many times each job runs, from V(2) to V(50). A comparison needs at least 3 on each side.
    type: int
    default: 4
  jobs:
    description:
      - The jobs to run, each at most once, in this order within a repeat. The fio jobs need O(device) or
        O(directory); V(cpu), V(memory) and V(switch) (stress-ng) need neither.
    type: list
    elements: str
    choices: [randread-4k-qd1, randread-4k-qd32, randwrite-4k-qd1, randwrite-4k-qd32, seqread-1m, seqwrite-1m, cpu,
              memory, switch]
    default: [randread-4k-qd1, randread-4k-qd32, randwrite-4k-qd1, randwrite-4k-qd32, seqread-1m, seqwrite-1m, cpu,
              memory, switch]
  direct:
    description:
      - fio bypasses the page cache (O_DIRECT). A directory on a filesystem that refuses O_DIRECT (tmpfs before
        Linux 6.6, some FUSE filesystems) is refused unless this is V(false).
    type: bool
    default: true
  stress_workers:
    description:
      - Workers of each stress-ng job, from V(0) to V(1024); V(0) is one per online CPU.
    type: int
    default: 0
  force:
    description:
      - Run over a device that carries a signature (a filesystem, partition table, LVM, md or DRBD metadata,
        swap, ...); what is on it is destroyed by the write jobs. A device that is mounted, swap, held by another
        device, partitioned, open by another process or busy for an exclusive open is refused even so.
    type: bool
    default: false
  var_prefix:
    description:
      - Put before the option names in messages, so that they name the caller's variables (the
        P(kvmops.fleet.tuning#role) role passes V(tuning_benchmark_), and a message names
        C(tuning_benchmark_runtime)). Lower-case letters, digits and V(_), at most 32.
    type: str
    default: ''
requirements:
  - fio (package C(fio)) for the fio jobs, stress-ng (package C(stress-ng)) for the others, blkid and wipefs
    (package C(util-linux)) with O(device). A missing tool fails the task naming the package.
notes:
  - The numbers of a few seconds' runs show differences of tuning on one host, measured the same way before and
    after; they are not a capacity rating.
  - fio's latency is the total one (submission and completion, fio's C(lat_ns)); percentiles come from
    C(--lat_percentiles).
seealso:
  - name: fio
    description: fio's documentation, for the job options above.
    link: https://fio.readthedocs.io/en/latest/fio_doc.html
  - name: stress-ng
    description: stress-ng's manual page, for the stressors and bogo-ops.
    link: https://manpages.debian.org/bookworm/stress-ng/stress-ng.1.en.html
  - module: kvmops.fleet.kvm_host_tune
"""

EXAMPLES = r"""
- name: Benchmark an empty disk before tuning
  kvmops.fleet.kvm_benchmark:
    label: before
    device: /dev/vdb
  register: before

- name: The same jobs on a file in /var/tmp, CPU and memory only from stress-ng
  kvmops.fleet.kvm_benchmark:
    label: after
    directory: /var/tmp
    file_size: 1G
    runtime: 10
    repeats: 5
    jobs: [randread-4k-qd1, randwrite-4k-qd32, seqread-1m, cpu, memory]

- name: Median random-read IOPS of the first run
  ansible.builtin.debug:
    msg: "{{ before.benchmark.metrics['randread-4k-qd1.iops']['values'] | sort }}"
"""

RETURN = r"""
changed:
  description:
    - V(true) when write jobs ran (or in check mode would run) on O(device), whose contents they overwrite; V(false)
      for a file target (removed afterwards) and stress-ng-only runs.
  returned: always
  type: bool
  sample: true
would_run:
  description: The command lines the real run would run, in order (random parts of names as C(XXXXXXXX)).
  returned: check mode
  type: list
  elements: str
  sample: ["/usr/bin/fio --name=randread-4k-qd1 --filename=/dev/vdb --ioengine=libaio --direct=1 ..."]
benchmark:
  description:
    - The run. In check mode without RV(benchmark.metrics) values and RV(benchmark.raw) entries. When a run fails
      part-way, the failed task returns what completed.
  returned: success and when a run failed part-way
  type: dict
  contains:
    label:
      description: O(label).
      type: str
      returned: always
      sample: before
    host:
      description: The host's name (C(socket.gethostname())).
      type: str
      returned: always
      sample: hv1
    started:
      description: When the first run started, UTC, ISO 8601.
      type: str
      returned: always
      sample: "2026-12-05T12:00:00Z"
    finished:
      description: When the last run ended, UTC, ISO 8601.
      type: str
      returned: always
      sample: "2026-12-05T12:03:05Z"
    target:
      description: What the fio jobs worked on.
      type: dict
      returned: always
      contains:
        kind:
          description: V(device), V(file), or V(none) (no fio job).
          type: str
          returned: always
          sample: device
        path:
          description: O(device) or O(directory) as given (a file's own name changes from run to run); null for none.
          type: str
          returned: always
          sample: /dev/vdb
        size_bytes:
          description: The bytes the fio jobs used (O(file_size), on a device at most its size, in whole MiB).
          type: int
          returned: always
          sample: 268435456
        device:
          description:
            - Kernel name of the block device, or for a file of its filesystem's block device; null when that does
              not resolve (tmpfs, overlay, btrfs) or there is no target.
          type: str
          returned: always
          sample: vdb
    settings:
      description: The options the numbers depend on.
      type: dict
      returned: always
      sample: {"runtime": 5, "repeats": 4, "jobs": ["randread-4k-qd1", "cpu"], "direct": true,
               "file_size_bytes": 268435456, "stress_workers": 0}
      contains:
        runtime:
          description: O(runtime).
          type: int
          returned: always
        repeats:
          description: O(repeats).
          type: int
          returned: always
        jobs:
          description: O(jobs).
          type: list
          elements: str
          returned: always
        direct:
          description: O(direct).
          type: bool
          returned: always
        file_size_bytes:
          description: O(file_size) in bytes.
          type: int
          returned: always
        stress_workers:
          description: O(stress_workers).
          type: int
          returned: always
    tuning:
      description:
        - The host's tuning state when the run started; null where unknown. The queue values are the target's block
          device's (a partition's disk's); null without one.
      type: dict
      returned: always
      sample: {"scheduler": "mq-deadline", "read_ahead_kb": 128, "nr_requests": 256, "thp_enabled": "madvise",
               "thp_defrag": "madvise", "ksm_run": 0, "numa_balancing": 1, "swappiness": 60,
               "tuned_profile": "virtual-host", "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro"}
      contains:
        scheduler:
          description: The active I/O scheduler.
          type: str
          returned: always
        read_ahead_kb:
          description: Read-ahead in KiB.
          type: int
          returned: always
        nr_requests:
          description: Request queue depth.
          type: int
          returned: always
        thp_enabled:
          description: Transparent hugepages, the active choice of C(/sys/kernel/mm/transparent_hugepage/enabled).
          type: str
          returned: always
        thp_defrag:
          description: The active choice of C(/sys/kernel/mm/transparent_hugepage/defrag).
          type: str
          returned: always
        ksm_run:
          description: C(/sys/kernel/mm/ksm/run).
          type: int
          returned: always
        numa_balancing:
          description: C(kernel.numa_balancing).
          type: int
          returned: always
        swappiness:
          description: C(vm.swappiness).
          type: int
          returned: always
        tuned_profile:
          description: C(/etc/tuned/active_profile).
          type: str
          returned: always
        cmdline:
          description: The kernel command line.
          type: str
          returned: always
    metrics:
      description:
        - "C(JOB.QUANTITY) -> unit, direction and one value per completed repeat, in order. fio jobs: C(iops)
          (IO/s), C(bw_mib_s) (MiB/s), C(lat_mean_us) and C(lat_p99_us) (microseconds, lower is better); stress-ng
          jobs: C(bogo_ops_per_s) (bogo-ops per second of wall-clock time)."
      type: dict
      returned: always
      sample: {"randread-4k-qd1.iops": {"unit": "IO/s", "higher_is_better": true,
                                        "values": [16388.6, 16211.2, 16475.0, 16302.9]}}
    raw:
      description:
        - "Every run in order: C(job), C(repeat), C(tool), C(argv), and fio's parsed JSON as C(output), or
          stress-ng's YAML as C(output_text) with C(parsed), the same read into a dictionary."
      type: list
      elements: dict
      returned: always
      sample: [{"job": "cpu", "repeat": 1, "tool": "stress-ng", "argv": ["/usr/bin/stress-ng", "--cpu", "0"],
                "output_text": "---\nmetrics:\n    - stressor: cpu\n", "parsed": {"metrics": [{"stressor": "cpu"}]}}]
    versions:
      description: The versions of fio and stress-ng the run used (null for a tool it did not need).
      type: dict
      returned: always
      sample: {"fio": "3.33", "stress-ng": "0.15.06"}
"""

import datetime
import errno
import os
import re
import shutil
import socket
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _plan, _run_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _command_io, _disk_safety_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    Custom,
    Int,
    OptionError,
    Text,
    check,
)

ARGUMENT_SPEC = {
    "label": {"type": "str", "required": True},
    "device": {"type": "path"},
    "directory": {"type": "path"},
    "file_size": {"type": "str", "default": "256M"},
    "runtime": {"type": "int", "default": 5},
    "repeats": {"type": "int", "default": 4},
    "jobs": {"type": "list", "elements": "str", "choices": list(_plan.JOBS), "default": list(_plan.JOBS)},
    "direct": {"type": "bool", "default": True},
    "stress_workers": {"type": "int", "default": 0},
    "force": {"type": "bool", "default": False},
    "var_prefix": {"type": "str", "default": ""},
}
# every option's rule (common/_validate.py), checked first; what needs the options together (one target, the
# bound on the whole run) follows in _plan.settings, what needs the host in _plan.verdict / check_directory
RULES = {
    "label": Text("a run's name", pattern=_plan.LABEL, example="before", max_chars=64),
    "device": Text("a block device's path", pattern=r"^/", example="/dev/vdb"),
    "directory": Text("an existing directory", pattern=r"^/", example="/var/tmp"),
    "file_size": Custom(_plan.check_file_size, "16M to 64G: enough for a few seconds of I/O, bounded"),
    "runtime": Int(1, _plan.RUNTIME_MAX, "seconds per run; the whole task at most 3600 s"),
    "repeats": Int(_plan.REPEATS_MIN, _plan.REPEATS_MAX, "a comparison needs a spread; the whole task at most 3600 s"),
    "jobs": Custom(_plan.check_jobs, "at least one job, each once"),
    "stress_workers": Int(0, _plan.WORKERS_MAX, "0 is one per online CPU"),
    "var_prefix": Custom(_plan.check_var_prefix, "lower-case letters, digits and _, at most 32"),
}
PLACEHOLDER = "XXXXXXXX"


class RunError(Exception):
    """A run failed after the checks; ``changed``: a write job had started on the device; ``benchmark``: what
    completed."""

    def __init__(self, msg, changed, benchmark):
        super().__init__(msg)
        self.changed, self.benchmark = changed, benchmark


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _target(module, s, tools):
    """-> (target, what fio opens, the exclusive fd of a device or None). Raises BenchError before any run."""
    p = module.params
    if s["kind"] == "none":
        for name in ("device", "directory"):
            if p[name] is not None:
                module.warn(f"{s['prefix']}{name}: not used, no fio job is selected")
        return {"kind": "none", "path": None, "size_bytes": None, "device": None}, None, None
    if s["kind"] == "file":
        facts = _run_io.directory_facts(p["directory"])
        _plan.check_directory(facts, s)
        if s["direct"] and not facts.get("odirect_known"):
            module.warn(f"{p['directory']}: whether its filesystem takes O_DIRECT is learnt from the file itself")
        target = {
            "kind": "file",
            "path": p["directory"],
            "size_bytes": s["file_size_bytes"],
            "device": facts.get("device"),
        }
        return target, None, None
    facts = _disk_safety_io.device_facts(p["device"], tools)
    fd = None
    if facts.get("is_block"):
        fd, facts["excl_error"] = _disk_safety_io.claim(facts["real"])
        if fd is not None:
            facts["size_bytes"] = _disk_safety_io.fd_size(fd)
    try:
        _plan.verdict(facts, s)
    except _plan.BenchError:
        _disk_safety_io.release(fd)
        raise
    size = _plan.device_size_used(s["file_size_bytes"], facts["size_bytes"])
    target = {"kind": "device", "path": p["device"], "size_bytes": size, "device": facts.get("name")}
    return target, facts["real"], fd


def _versions(tools):
    out = {}
    for tool in (_plan.FIO, _plan.STRESS):
        version = None
        if tools.get(tool):
            try:
                rc, stdout, stderr = _command_io.run_tool([tools[tool], "--version"], _plan.PROBE_TIMEOUT)
            except _command_io.ToolTimeout:
                rc, stdout, stderr = -1, "", ""
            version = _plan.parse_version(tool, stdout + stderr) if rc == 0 else None
        out[tool] = version
    return out


def _fail_run(r, s, what, done, extra=""):
    where = f"{r['job']}, repeat {r['repeat']} of {s['repeats']}"
    completed = ", ".join(done) if done else "none"
    return f"{where}: {what}. Completed runs: {completed}{extra}"


def _one(r, s, bench):
    """Run one job once -> its values (and its raw entry in ``bench``); raises RunFailed."""
    try:
        rc, out, err = _command_io.run_tool(r["argv"], r["timeout"])
    except _command_io.ToolTimeout as exc:
        raise _plan.RunFailed(f"{r['tool']} {exc}: {_plan.tail(exc.err or exc.out)}") from None
    if r["tool"] == _plan.FIO:
        if rc != 0:
            raise _plan.RunFailed(f"fio failed (rc {rc}): {_plan.tail(err or out)}")
        data = _plan.parse_fio(out)
        values = _plan.fio_metrics(data, r["job"])
        bench["raw"].append(
            {"job": r["job"], "repeat": r["repeat"], "tool": r["tool"], "argv": r["argv"], "output": data}
        )
        return values
    if rc != 0:
        raise _plan.RunFailed(f"stress-ng failed (rc {rc}): {_plan.tail(err or out)}")
    try:
        with open(r["yaml"], encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise _plan.RunFailed(f"stress-ng wrote no --yaml file ({exc.strerror}): {_plan.tail(err or out)}") from None
    parsed = _plan.parse_stress_yaml(text)
    values = _plan.stress_metrics(parsed, r["job"])
    bench["raw"].append(
        {
            "job": r["job"],
            "repeat": r["repeat"],
            "tool": r["tool"],
            "argv": r["argv"],
            "output_text": text,
            "parsed": parsed,
        }
    )
    return values


def _execute(module, s, tools, target, fio_path, fd, bench):
    """The real run: the file, the layout, every run in order; whatever happens, the file, the temporary directory
    and the device's exclusive open are gone afterwards. -> changed."""
    p = module.params
    changed = False
    done = []
    filename = None
    tmpdir = tempfile.mkdtemp(prefix=_plan.FILE_PREFIX)
    metrics = _plan.empty_metrics(s["jobs"])
    current = None
    try:
        if target["kind"] == "file":
            try:
                filename = _run_io.create_file(p["directory"], p["label"], s["direct"])
            except OSError as exc:
                if exc.errno == errno.EINVAL and s["direct"]:  # the O_DIRECT open of the new file
                    raise _plan.BenchError(
                        f"{s['prefix']}direct: the filesystem of {p['directory']} refuses O_DIRECT (EINVAL): set "
                        f"{s['prefix']}direct=false or use a directory on a disk filesystem"
                    ) from None
                raise _plan.BenchError(
                    f"{s['prefix']}directory: cannot create the benchmark file in {p['directory']}: {exc.strerror}"
                ) from None
            fio_path = filename
            layout = _plan.layout_argv(tools[_plan.FIO], filename, s["file_size_bytes"])
            try:
                rc, out, err = _command_io.run_tool(layout, _plan.layout_timeout(s["file_size_bytes"]))
            except _command_io.ToolTimeout as exc:
                rc, out, err = -1, exc.out, f"{exc} {exc.err}"
            if rc != 0:
                raise _plan.BenchError(
                    f"{s['prefix']}directory: fio could not lay out {filename} (rc {rc}): {_plan.tail(err or out)}"
                )
        for r in _plan.runs(s, tools, fio_path, target["size_bytes"], tmpdir):
            current = r
            if target["kind"] == "device" and r["job"] in s["writes"]:
                changed = True  # from its first write on, the device's contents are not what they were
            _plan.add_values(metrics, r["job"], _one(r, s, bench))
            done.append(f"{r['job']} #{r['repeat']}")
            if r["yaml"]:
                _run_io.remove_file(r["yaml"])
            current = None
    except (_plan.RunFailed, _run_io.Terminated) as exc:
        bench["metrics"], bench["finished"] = _plan.drop_empty(metrics), _now()
        removed = f"; {filename} was removed" if filename else ""
        if current is None:
            raise RunError(f"{exc}{removed}", changed, bench) from None
        raise RunError(_fail_run(current, s, str(exc), done, removed), changed, bench) from None
    finally:
        _disk_safety_io.release(fd)
        _run_io.remove_file(filename)
        shutil.rmtree(tmpdir, ignore_errors=True)
    bench["metrics"], bench["finished"] = metrics, _now()
    return changed


def run(module):
    p = module.params
    s = _plan.settings(p)
    tools = {t: _command_io.find_tool(t) for t in _plan.tools_needed(s)}
    missing = _plan.missing_tools(tools)
    if missing is not None:
        raise missing
    target, fio_path, fd = _target(module, s, tools)
    try:
        bench = {
            "label": p["label"],
            "host": socket.gethostname(),
            "started": _now(),
            "finished": None,
            "target": target,
            "settings": {
                k: s[k] for k in ("runtime", "repeats", "jobs", "direct", "file_size_bytes", "stress_workers")
            },
            "tuning": _plan.tuning(_run_io.read_tuning(target["device"])),
            "metrics": {},
            "raw": [],
            "versions": _versions(tools),
        }
        would_change = target["kind"] == "device" and bool(s["writes"])
        if module.check_mode:
            _disk_safety_io.release(fd)
            return {
                "changed": would_change,
                "would_run": _would_run(s, tools, target, fio_path),
                "benchmark": dict(bench, finished=_now()),
            }
    except BaseException:
        _disk_safety_io.release(fd)
        raise
    changed = _execute(module, s, tools, target, fio_path, fd, bench)
    return {"changed": changed, "benchmark": bench}


def _would_run(s, tools, target, fio_path):
    tmpdir = os.path.join(tempfile.gettempdir(), _plan.FILE_PREFIX + PLACEHOLDER)
    out = []
    if target["kind"] == "file":
        fio_path = os.path.join(target["path"], f"{_plan.FILE_PREFIX}{s['label']}-{PLACEHOLDER}.dat")
        out.append(_plan.command_line(_plan.layout_argv(tools[_plan.FIO], fio_path, s["file_size_bytes"])))
    out += [_plan.command_line(r["argv"]) for r in _plan.runs(s, tools, fio_path, target["size_bytes"], tmpdir)]
    return out


def _named(module, msg):
    """A message that starts with an option's path names the caller's variable (O(var_prefix))."""
    prefix = module.params["var_prefix"]
    if not prefix or not re.match(_plan.VAR_PREFIX, prefix) or msg.startswith("var_prefix"):
        return msg
    return prefix + msg if re.match(r"^[a-z_]+[\[.:]", msg) else msg


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:  # check_module(), with the caller's variable names (O(var_prefix)) in the message
        check(module.params, ARGUMENT_SPEC, RULES)
    except OptionError as exc:
        module.fail_json(msg=_named(module, str(exc)), changed=False)
    _run_io.handle_sigterm()
    try:
        out = run(module)
    except _plan.BenchError as exc:  # refused before any run
        module.fail_json(msg=str(exc), changed=False)
    except RunError as exc:
        module.fail_json(msg=str(exc), changed=exc.changed, benchmark=exc.benchmark)
    except _run_io.Terminated as exc:
        module.fail_json(msg=f"{exc} before the first run", changed=False)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
