"""kvm_benchmark end to end through main(), with the host side replaced by a stand-in that answers with the REAL
outputs recorded in module_utils/fixtures/bench: the exact argv of every run in order, the result's shape (JSON
text and back), check mode that runs nothing and predicts ``changed``, refusals before any run, a run failing part
way (which runs completed, the file removed, changed only once a write job started on a device), timeouts,
SIGTERM, missing tools. The real tools run in tests/integration/modules/test_kvm_benchmark_local.py."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.bench import _plan, _run_io
from ansible_collections.kvmops.fleet.plugins.module_utils.common import _command_io, _disk_safety_io
from ansible_collections.kvmops.fleet.plugins.modules import kvm_benchmark

FIXTURES = Path(__file__).parents[1] / "module_utils" / "fixtures" / "bench"
VERSIONS = json.loads((FIXTURES / "versions.json").read_text())
TUNING = {"scheduler": "[none] mq-deadline\n", "read_ahead_kb": "128\n", "nr_requests": "128\n",
          "thp_enabled": "always [madvise] never\n", "thp_defrag": "[madvise] never\n", "ksm_run": "0\n",
          "numa_balancing": "1\n", "swappiness": "60\n", "tuned_profile": None, "cmdline": "ro quiet\n"}
DEV = "/dev/loop7"
GIB = 1024**3


class Host:
    """The stand-in host: records every tool run; ``fail`` maps (job, repeat) to (rc, stdout, stderr) or an
    exception to raise."""

    def __init__(self, tmp_path, probe="clean", **facts):
        self.tmp = tmp_path
        self.calls = []
        self.fail = {}
        self.released = []
        self.created = []
        self.tools = {t: f"/usr/bin/{t}" for t in ("fio", "stress-ng", "blkid", "wipefs")}
        rec = json.loads((FIXTURES / f"probe-{probe}.json").read_text())
        self.facts = {"path": DEV, "real": DEV, "exists": True, "is_block": True, "name": "loop7", "holders": [],
                      "partitions": [], "read_only": False, "mounts": [], "swap": False, "openers": []}
        for tool in ("blkid", "wipefs"):
            self.facts.update({f"{tool}_rc": rec[tool]["rc"], f"{tool}_out": rec[tool]["stdout"],
                               f"{tool}_err": rec[tool]["stderr"]})
        self.facts.update(facts)
        self.excl = None
        self.size = GIB
        self.dir = {"path": str(tmp_path), "is_dir": True, "writable": True, "free_bytes": 100 * GIB,
                    "fstype": "ext4", "device": "vda", "odirect_error": None, "odirect_known": True}

    def run_tool(self, argv, timeout, cwd=None):
        self.calls.append((list(argv), timeout))
        if argv[-1] == "--version":
            return 0, VERSIONS[os.path.basename(argv[0])], ""
        name = os.path.basename(argv[0])
        if "--create_only=1" in argv:
            return self.fail.get("layout", (0, "", ""))
        stressors = {"--cpu": "cpu", "--stream": "memory", "--switch": "switch"}
        job = argv[1][len("--name="):] if name == "fio" else stressors[argv[1]]
        repeat = sum(1 for a, _t in self.calls if a[:2] == argv[:2])
        failure = self.fail.get((job, repeat))
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            return failure
        if name == "fio":
            return 0, (FIXTURES / f"fio-{job}.json").read_text(), ""
        yaml = argv[argv.index("--yaml") + 1]
        Path(yaml).write_text((FIXTURES / f"stress-ng-{job}.out").read_text())
        return 0, "stress-ng: info: successful run completed\n", ""

    @staticmethod
    def read_tuning(name, *_a):
        queue = ("scheduler", "read_ahead_kb", "nr_requests")
        return {k: (None if name is None and k in queue else v) for k, v in TUNING.items()}

    def install(self, mp):
        mp.setattr(_command_io, "find_tool", self.tools.get)
        mp.setattr(_command_io, "run_tool", self.run_tool)
        mp.setattr(_disk_safety_io, "device_facts", lambda path, tools, *a, **kw: dict(self.facts, path=path))
        mp.setattr(_disk_safety_io, "claim", lambda real: (None, self.excl) if self.excl else (4242, None))
        mp.setattr(_disk_safety_io, "fd_size", lambda fd: self.size)
        mp.setattr(_disk_safety_io, "release", self.released.append)
        mp.setattr(_run_io, "directory_facts", lambda d, *a: dict(self.dir, path=d))
        mp.setattr(_run_io, "read_tuning", self.read_tuning)
        mp.setattr(_run_io, "handle_sigterm", lambda: None)
        real_create = _run_io.create_file

        def create(directory, label, direct):
            path = real_create(directory, label, False)
            self.created.append(path)
            return path

        mp.setattr(_run_io, "create_file", create)

    def runs(self):
        """The tool runs after the version queries (and the layout), as (tool, job argument)."""
        return [(os.path.basename(a[0]), a[1]) for a, _t in self.calls
                if a[-1] != "--version" and "--create_only=1" not in a]


@pytest.fixture
def host(tmp_path, monkeypatch):
    h = Host(tmp_path)
    h.install(monkeypatch)
    return h


def run(run_module, check=False, **args):
    return run_module(kvm_benchmark, dict(args, _ansible_check_mode=check))


def test_device_all_jobs(run_module, host):
    out = run(run_module, label="before", device=DEV, runtime=1, repeats=2)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True  # the write jobs overwrote the device
    b = json.loads(json.dumps(out["benchmark"]))
    assert b == out["benchmark"]
    assert set(b) == {"label", "host", "started", "finished", "target", "settings", "tuning", "metrics", "raw",
                      "versions"}
    assert b["label"] == "before" and b["host"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", b["started"]) and b["finished"] >= b["started"]
    assert b["target"] == {"kind": "device", "path": DEV, "size_bytes": 256 * 1024 * 1024, "device": "loop7"}
    assert b["settings"] == {"runtime": 1, "repeats": 2, "jobs": list(_plan.JOBS), "direct": True,
                             "file_size_bytes": 268435456, "stress_workers": 0}
    assert b["tuning"] == {"scheduler": "none", "read_ahead_kb": 128, "nr_requests": 128, "thp_enabled": "madvise",
                           "thp_defrag": "madvise", "ksm_run": 0, "numa_balancing": 1, "swappiness": 60,
                           "tuned_profile": None, "cmdline": "ro quiet"}
    assert b["versions"] == {"fio": "3.33", "stress-ng": "0.15.06"}
    assert len(b["metrics"]) == 6 * 4 + 3
    assert all(len(m["values"]) == 2 for m in b["metrics"].values())
    fio_rr = json.loads((FIXTURES / "fio-randread-4k-qd1.json").read_text())["jobs"][0]["read"]
    assert b["metrics"]["randread-4k-qd1.iops"] == {"unit": "IO/s", "higher_is_better": True,
                                                    "values": [round(fio_rr["iops"], 3)] * 2}
    assert b["metrics"]["seqwrite-1m.lat_p99_us"]["higher_is_better"] is False
    # interleaved: repeat 1 of every job, then repeat 2
    order = [(r["repeat"], r["job"]) for r in b["raw"]]
    assert order == [(1, j) for j in _plan.JOBS] + [(2, j) for j in _plan.JOBS]
    fio_raw = b["raw"][0]
    assert set(fio_raw) == {"job", "repeat", "tool", "argv", "output"} and fio_raw["output"]["jobs"][0]["jobname"]
    stress_raw = b["raw"][6]
    assert set(stress_raw) == {"job", "repeat", "tool", "argv", "output_text", "parsed"}
    assert stress_raw["parsed"]["metrics"][0]["stressor"] == "cpu"
    assert fio_raw["argv"] == ["/usr/bin/fio", "--name=randread-4k-qd1", f"--filename={DEV}", "--ioengine=libaio",
                               "--direct=1", "--rw=randread", "--bs=4k", "--iodepth=1", "--numjobs=1", "--time_based",
                               "--runtime=1", "--size=268435456", "--lat_percentiles=1", "--output-format=json"]
    assert stress_raw["argv"][:4] == ["/usr/bin/stress-ng", "--cpu", "0", "--oomable"]
    assert {t for a, t in host.calls if a[-1] != "--version"} == {121}  # runtime + 120 s each
    assert host.released == [4242]  # the exclusive open is held until the end, then closed
    tmpdir = os.path.dirname(stress_raw["argv"][stress_raw["argv"].index("--yaml") + 1])
    assert not os.path.exists(tmpdir)


def test_device_smaller_than_file_size(run_module, host):
    host.size = 100 * 1024 * 1024 + 512
    out = run(run_module, label="b", device=DEV, jobs=["seqread-1m"])
    assert out["benchmark"]["target"]["size_bytes"] == 100 * 1024 * 1024
    assert out["benchmark"]["raw"][0]["argv"][11] == "--size=104857600"
    assert out["changed"] is False  # read jobs only: the device is as it was


def test_check_mode_runs_nothing_and_predicts(run_module, host):
    out = run(run_module, check=True, label="before", device=DEV, runtime=2, repeats=2,
              jobs=["randwrite-4k-qd1", "cpu"])
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert host.runs() == []
    assert [a for a, _t in host.calls] == [["/usr/bin/fio", "--version"], ["/usr/bin/stress-ng", "--version"]]
    assert host.released == [4242]
    tmp = os.path.join(tempfile.gettempdir(), "kvmops-bench-XXXXXXXX")
    assert len(out["would_run"]) == 4
    assert out["would_run"][0].startswith(f"/usr/bin/fio --name=randwrite-4k-qd1 --filename={DEV} ")
    assert out["would_run"][1] == (f"/usr/bin/stress-ng --cpu 0 --oomable --timeout 2s --metrics-brief --yaml "
                                   f"{tmp}/cpu-1.yaml --temp-path {tmp}")
    assert out["would_run"][3].endswith(f"cpu-2.yaml --temp-path {tmp}")
    assert out["benchmark"]["metrics"] == {} and out["benchmark"]["raw"] == []
    out = run(run_module, check=True, label="before", device=DEV, jobs=["randread-4k-qd1", "cpu"])
    assert out["changed"] is False


def test_directory_target(run_module, host, tmp_path):
    out = run(run_module, label="after", directory=str(tmp_path), jobs=["randwrite-4k-qd1", "cpu"], runtime=1,
              repeats=2, file_size="32M")
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is False
    [path] = host.created
    assert re.match(rf"^{re.escape(str(tmp_path))}/kvmops-bench-after-[0-9a-f]{{8}}\.dat$", path)
    assert not os.path.exists(path) and list(tmp_path.iterdir()) == []
    layout = [(a, t) for a, t in host.calls if "--create_only=1" in a]
    assert layout == [(["/usr/bin/fio", "--name=layout", f"--filename={path}", "--size=33554432", "--rw=read",
                        "--bs=1m", "--create_only=1"], 122)]
    assert host.calls.index(layout[0]) == 2  # after the version queries, before the first run
    assert out["benchmark"]["target"] == {"kind": "file", "path": str(tmp_path), "size_bytes": 33554432,
                                          "device": "vda"}
    assert out["benchmark"]["raw"][0]["argv"][2] == f"--filename={path}"


def test_directory_check_mode(run_module, host, tmp_path):
    out = run(run_module, check=True, label="after", directory=str(tmp_path), jobs=["seqread-1m"], repeats=2)
    assert out["changed"] is False and host.created == [] and list(tmp_path.iterdir()) == []
    name = os.path.join(str(tmp_path), "kvmops-bench-after-XXXXXXXX.dat")
    assert out["would_run"] == [
        f"/usr/bin/fio --name=layout --filename={name} --size=268435456 --rw=read --bs=1m --create_only=1",
        *[f"/usr/bin/fio --name=seqread-1m --filename={name} --ioengine=libaio --direct=1 --rw=read --bs=1m "
          "--iodepth=8 --numjobs=1 --time_based --runtime=5 --size=268435456 --lat_percentiles=1 --output-format=json"]
        * 2,
    ]


def test_stress_only(run_module, host):
    out = run(run_module, label="cpu-only", jobs=["cpu", "memory", "switch"], repeats=3, stress_workers=2)
    assert out["changed"] is False
    assert out["benchmark"]["target"] == {"kind": "none", "path": None, "size_bytes": None, "device": None}
    assert out["benchmark"]["tuning"]["scheduler"] is None
    assert out["benchmark"]["versions"] == {"fio": None, "stress-ng": "0.15.06"}
    assert host.runs() == [("stress-ng", "--cpu"), ("stress-ng", "--stream"), ("stress-ng", "--switch")] * 3
    assert [a[2] for a, _t in host.calls if a[-1] != "--version"] == ["2"] * 9
    assert sorted(out["benchmark"]["metrics"]) == ["cpu.bogo_ops_per_s", "memory.bogo_ops_per_s",
                                                   "switch.bogo_ops_per_s"]


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(kvm_benchmark.AnsibleModule, "warn", lambda _self, msg: seen.append(msg))
    return seen


def test_target_without_fio_jobs_is_not_used(run_module, host, warnings):
    out = run(run_module, label="x", device=DEV, jobs=["cpu"], var_prefix="tuning_benchmark_")
    assert out["benchmark"]["target"]["kind"] == "none" and out["changed"] is False
    assert warnings == ["tuning_benchmark_device: not used, no fio job is selected"]


@pytest.mark.parametrize("probe,found", [("ext4", "ext4 signature"), ("gpt", "gpt partition table"),
                                         ("lvm2", "LVM2_member signature"), ("drbd", "drbd signature")])
def test_a_signature_is_refused_before_any_run(run_module, tmp_path, monkeypatch, probe, found):
    h = Host(tmp_path, probe)
    h.install(monkeypatch)
    out = run(run_module, label="before", device=DEV, var_prefix="tuning_benchmark_")
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith(f"tuning_benchmark_device: {DEV} is not empty: {found}")
    assert "set tuning_benchmark_force=true" in out["msg"]
    assert h.runs() == [] and h.released == [4242]
    out = run(run_module, check=True, label="before", device=DEV)
    assert out["failed"] is True and found in out["msg"]
    out = run(run_module, label="before", device=DEV, force=True, jobs=["seqread-1m"], repeats=2)
    assert not out.get("failed") and len(h.runs()) == 2


def test_busy_device_is_refused_even_with_force(run_module, tmp_path, monkeypatch):
    h = Host(tmp_path, "ext4", mounts=["/mnt/data"], holders=["dm-0 (LVM vg-lv)"])
    h.excl = "EBUSY: Device or resource busy"
    h.install(monkeypatch)
    out = run(run_module, label="before", device=DEV, force=True)
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"] == (
        f"device: {DEV} is in use and is never benchmarked, not even with force: mounted at /mnt/data; held by dm-0 "
        "(LVM vg-lv); cannot be opened exclusively (EBUSY: Device or resource busy): something else claims it; it "
        "also carries: ext4 signature (UUID=6b1f3c52-9a43-4c4e-8f0e-0d5a3c1b2a01, LABEL=kvmops-data, VERSION=1.0)"
    )
    assert h.runs() == [] and h.released == [None]


@pytest.mark.parametrize("args,msg", [
    ({"runtime": 601}, "tuning_benchmark_runtime: must be from 1 to 600, got 601"),
    ({"repeats": 1}, "tuning_benchmark_repeats: must be from 2 to 50, got 1"),
    ({"file_size": "1T"}, "tuning_benchmark_file_size: '1T' is not a size"),
    ({"jobs": ["cpu", "cpu"]}, "tuning_benchmark_jobs[1]: cpu is also given in jobs[0]"),
    ({"label": "a/b"}, "tuning_benchmark_label: 'a/b' is not valid"),
    ({"repeats": 50, "runtime": 10},
     "tuning_benchmark_jobs, tuning_benchmark_repeats, tuning_benchmark_runtime: 9 jobs x 50 repeats x 10 s = 4500 s"),
    ({"device": DEV}, "tuning_benchmark_device and tuning_benchmark_directory are mutually exclusive"),
    ({"directory": None}, "tuning_benchmark_jobs: the fio jobs randread-4k-qd1, randread-4k-qd32, randwrite-4k-qd1, "
                          "randwrite-4k-qd32, seqread-1m, seqwrite-1m need a target"),
])
def test_bad_options_name_the_role_variable(run_module, host, tmp_path, args, msg):
    base = {"label": "before", "directory": str(tmp_path), "var_prefix": "tuning_benchmark_"}
    out = run(run_module, **dict(base, **args))
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith(msg), out["msg"]
    assert host.calls == []


def test_missing_tools_name_the_package(run_module, host):
    host.tools["wipefs"] = None
    host.tools["stress-ng"] = None
    out = run(run_module, label="x", device=DEV)
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"] == ("wipefs, stress-ng not found on this host (PATH and the sbin directories): install the "
                          "packages stress-ng, util-linux")
    assert host.calls == []


def test_directory_refusals(run_module, host, tmp_path):
    host.dir.update(fstype="tmpfs", odirect_error="EINVAL")
    out = run(run_module, label="x", directory=str(tmp_path), var_prefix="tuning_benchmark_")
    assert out["failed"] is True and out["msg"].startswith(
        f"tuning_benchmark_direct: the filesystem of {tmp_path} (tmpfs) refuses O_DIRECT (EINVAL): set "
        "tuning_benchmark_direct=false")
    out = run(run_module, label="x", directory=str(tmp_path), direct=False, jobs=["seqread-1m"])
    assert not out.get("failed") and out["benchmark"]["raw"][0]["argv"][4] == "--direct=0"
    host.dir.update(free_bytes=1024)
    out = run(run_module, label="x", directory=str(tmp_path), direct=False, file_size="16M")
    assert out["msg"] == f"directory: {tmp_path} has 1024 bytes free, less than file_size (16777216 bytes)"
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_part_way_on_a_device(run_module, host):
    rec = json.loads((FIXTURES / "fio-error.json").read_text())
    host.fail[("seqwrite-1m", 2)] = (rec["rc"], rec["stdout"], rec["stderr"])
    out = run(run_module, label="before", device=DEV, jobs=["randread-4k-qd1", "seqwrite-1m", "cpu"], repeats=3)
    assert out["failed"] is True and out["changed"] is True  # seqwrite-1m #1 wrote to the device
    assert out["msg"] == (
        "seqwrite-1m, repeat 2 of 3: fio failed (rc 1): fio: io_u error on file /dev/loop7: Operation not permitted: "
        "write offset=1011712, buflen=4096. Completed runs: randread-4k-qd1 #1, seqwrite-1m #1, cpu #1, "
        "randread-4k-qd1 #2"
    )
    b = out["benchmark"]
    assert len(b["metrics"]["randread-4k-qd1.iops"]["values"]) == 2
    assert len(b["metrics"]["seqwrite-1m.iops"]["values"]) == 1 and len(b["raw"]) == 4
    assert host.runs()[-1] == ("fio", "--name=seqwrite-1m") and host.released == [4242]


def test_the_first_run_failing_changes_nothing(run_module, host):
    host.fail[("randwrite-4k-qd1", 1)] = (1, "", "fio: failed to open /dev/loop7\n")
    out = run(run_module, label="before", device=DEV, jobs=["randread-4k-qd1", "randwrite-4k-qd1"])
    assert out["failed"] is True and out["changed"] is True  # the write job had started: its writes may have landed
    host.fail = {("randread-4k-qd1", 1): (1, "", "fio: failed to open /dev/loop7\n")}
    host.calls.clear()
    out = run(run_module, label="before", device=DEV, jobs=["randread-4k-qd1", "randwrite-4k-qd1"])
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].endswith("Completed runs: none")


@pytest.mark.parametrize("failure,msg", [
    (_command_io.ToolTimeout(121, "", "stress-ng: info: stressor hung\n"),
     "cpu, repeat 1 of 2: stress-ng did not finish within 121 s (killed): stress-ng: info: stressor hung."),
    ((2, "", "stress-ng: error: [1] stream: mmap failed: Cannot allocate memory\n"),
     "cpu, repeat 1 of 2: stress-ng failed (rc 2): stress-ng: error: [1] stream: mmap failed"),
    (_run_io.Terminated("terminated (SIGTERM)"), "cpu, repeat 1 of 2: terminated (SIGTERM). Completed runs: "
                                                 "seqwrite-1m #1"),
])
def test_failures_in_a_file_run_remove_the_file(run_module, host, tmp_path, failure, msg):
    host.fail[("cpu", 1)] = failure
    out = run(run_module, label="x", directory=str(tmp_path), jobs=["seqwrite-1m", "cpu"], repeats=2)
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith(msg), out["msg"]
    [path] = host.created
    assert out["msg"].endswith(f"; {path} was removed")
    assert list(tmp_path.iterdir()) == []


def test_stress_ng_without_its_yaml(run_module, host, tmp_path, monkeypatch):
    monkeypatch.setattr(host, "fail", {("switch", 1): (0, "", "")})
    out = run(run_module, label="x", jobs=["switch"])
    assert out["failed"] is True and out["msg"].startswith(
        "switch, repeat 1 of 4: stress-ng wrote no --yaml file (No such file or directory)")


def test_layout_failure(run_module, host, tmp_path):
    host.fail["layout"] = (1, "", "fio: No space left on device\n")
    out = run(run_module, label="x", directory=str(tmp_path), jobs=["seqread-1m"])
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith(f"directory: fio could not lay out {tmp_path}/kvmops-bench-x-")
    assert out["msg"].endswith("(rc 1): fio: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_the_new_file_refusing_o_direct(run_module, host, tmp_path, monkeypatch, warnings):
    host.dir.update(odirect_known=False)

    def create(directory, label, direct):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(_run_io, "create_file", create)
    out = run(run_module, label="x", directory=str(tmp_path), jobs=["seqread-1m"])
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith(f"direct: the filesystem of {tmp_path} refuses O_DIRECT (EINVAL)")
    assert warnings == [f"{tmp_path}: whether its filesystem takes O_DIRECT is learnt from the file itself"]
