"""The collector on libvirt's test driver, the status-file fallback, and the bounded worker."""
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("libvirt")     # the Python 3.9 tier runs without libvirt-python: pure tests only

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _libvirt_io
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _collect_io
from kvmlab.testdriver import write_fleet


@pytest.fixture
def fleet(tmp_path):
    return write_fleet(tmp_path / "fleet.xml", 40)


def test_collect_on_test_driver(fleet, tmp_path):
    f = _collect_io.collect(fleet, 10, include_running=True, status_dir=str(tmp_path / "none"),
                            log_dir=str(tmp_path))
    s = f["summary"]
    assert (s["total"], s["running"], s["paused"], s["crashed"], s["shutoff"]) == (40, 24, 8, 4, 4)
    assert f["complete"] and f["collection"] == "getAllDomainStats" and not f["errors"]
    assert len(f["paused"]) == 12 and len(f["running"]) == 24
    names = [p["name"] for p in f["paused"]]
    assert names == sorted(names)
    for p in f["paused"]:
        assert p["responsive"] and p["source"] == "libvirt"
        assert p["disks"][0]["source"].startswith("/var/lib/libvirt/images/")
        assert p["cause"] == ("crashed" if p["state"] == "crashed" else "unknown")   # test driver: reason 0
        assert p["safe_to_resume"] is False


def test_domains_filter(fleet, tmp_path):
    f = _collect_io.collect(fleet, 10, ["vm000[0-9]", "vm0016"], status_dir=str(tmp_path))
    assert f["summary"]["total"] == 11 and "running" not in f
    assert {p["name"] for p in f["paused"]} == {"vm0006", "vm0007", "vm0009", "vm0016"}


def test_scale_1000_domains(tmp_path):
    uri = write_fleet(tmp_path / "big.xml", 1000)
    f = _collect_io.collect(uri, 20, status_dir=str(tmp_path / "none"), log_dir=str(tmp_path))
    assert f["complete"] and f["summary"]["total"] == 1000 and len(f["paused"]) == 300


STATUS = """<domstatus state='%s' reason='%s' pid='4242'>%s
<domain type='qemu'><name>%s</name><uuid>%s</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain></domstatus>"""


def test_busy_domain_from_status_file_is_never_queried(tmp_path, monkeypatch):
    sd = tmp_path / "status"
    sd.mkdir()
    started_ms = int((time.time() - 30) * 1000)
    job = f"<job type='none' async='save' asyncStarted='{started_ms}'/>"
    (sd / "kpf-busy.xml").write_text(STATUS % ("paused", "save", job, "kpf-busy",
                                               "11111111-1111-1111-1111-111111111111", tmp_path / "d.img"))
    monkeypatch.setattr(_collect_io, "local_system_uri", lambda uri: True)
    uri = write_fleet(tmp_path / "f.xml", 10)
    f = _collect_io.collect(uri, 10, status_dir=str(sd), log_dir=str(tmp_path))
    assert f["collection"] == "domainListGetStats"       # the bulk call is avoided while a domain is busy
    busy = next(p for p in f["paused"] if p["name"] == "kpf-busy")
    assert busy["cause"] == "save_job" and not busy["responsive"] and busy["source"] == "status_xml"
    assert busy["safe_to_resume"] is False and busy["job"]["kind"] == "save"
    assert 29 <= busy["paused_for_seconds"] < 60 and busy["paused_since_source"] == "status_xml_job_started"
    assert busy["disks"][0]["filesystem"]["mount_point"]
    assert f["unresponsive"][0]["name"] == "kpf-busy" and f["unresponsive"][0]["queried"] is False
    assert f["unresponsive"][0]["pid"] == 4242
    assert set(f["unresponsive"][0]) == {"name", "uuid", "state", "reason", "job", "job_seconds", "pid", "queried",
                                         "message"}          # as documented in RETURN (test_kvm_pause_facts)


def test_run_bounded_keeps_partial_results_and_reaps(forked_children):
    def body(emit):
        emit({"record": "one"})
        time.sleep(60)

    t = time.monotonic()
    records, finished = _libvirt_io.run_bounded(body, time.monotonic() + 0.5)
    assert time.monotonic() - t < 10                    # the body sleeps 60 s: it was cut off
    assert records == [{"record": "one"}] and finished is False
    forked_children.assert_reaped()                     # no child left behind


def test_run_bounded_reports_child_errors():
    def body(emit):
        raise ValueError("boom")

    records, finished = _libvirt_io.run_bounded(body, time.monotonic() + 5)
    assert finished and records[0]["kind"] == "internal" and "boom" in records[0]["message"]


def test_assemble_timeout_messages():
    f = _collect_io.assemble("qemu:///system", 3, [], False, {}, include_running=False, elapsed=3.0, now=time.time())
    assert f["errors"] == ["libvirt did not accept a connection to qemu:///system within 3s"]
    assert not f["complete"]
    f = _collect_io.assemble("qemu:///system", 3, [{"record": "connected"}], False, {}, include_running=False,
                             elapsed=3.0, now=time.time())
    assert "did not list the domains" in f["errors"][0]
    recs = [{"record": "connected"}, {"record": "stats", "via": "getAllDomainStats", "domains": [
        {"name": "a", "uuid": "u", "state": 3, "reason": 1, "block": []}]}]
    f = _collect_io.assemble("qemu:///system", 3, recs, False, {}, include_running=False, elapsed=3.0, now=time.time())
    assert f["errors"] == ["libvirt did not answer within 3s"]
    assert f["paused"][0]["responsive"] is False and f["paused"][0]["safe_to_resume"] is False
    assert f["unresponsive"][0]["queried"] is True
    # the worker finished, one domain's calls were abandoned: only that domain is unresponsive, and named
    recs.append({"record": "abandoned", "name": "a", "call": "disk_errors", "seconds": 1.5})
    f = _collect_io.assemble("qemu:///system", 3, recs, True, {}, include_running=False, elapsed=2.0, now=time.time())
    assert f["errors"] == ["libvirt did not answer within 1.5s while querying domain a (disk_errors)"]
    assert not f["complete"] and f["paused"][0]["responsive"] is False
    assert f["unresponsive"][0]["message"] == "libvirt did not answer for this domain within 1.5s (disk_errors)"


def test_connect_error_is_typed():
    recs = [{"record": "error", "kind": "LibvirtConnectError", "message": "libvirtd is not running"}]
    with pytest.raises(_libvirt_io.LibvirtConnectError, match="not running"):
        _collect_io.assemble("qemu:///system", 3, recs, True, {}, include_running=False, elapsed=0.1, now=time.time())


@pytest.mark.parametrize("msg,expect", [
    ("Failed to connect socket to '/run/libvirt/libvirt-sock-ro': No such file or directory", "not running"),
    ("Failed to connect socket to '/run/x.sock': Connection refused", "not running"),
    ("Failed to connect socket to '/run/x.sock': Permission denied", "Permission denied"),
    ("authentication failed: access denied by policy", "Permission denied"),
    # non-root qemu:///system without a system bus: polkit cannot authorise the user
    ("internal error: Unable to get system bus connection: Could not connect: No such file or directory",
     "Permission denied"),
    ("no connection driver available for bogus:///x", "Cannot use libvirt URI"),
    ("something else", "Cannot connect to libvirt"),
])
def test_classify_error(msg, expect):
    assert expect in _libvirt_io.classify_error(None, msg, "qemu:///system")


@pytest.mark.parametrize("uri", [
    "qemu:///system", "qemu+ssh://root@h1/system", "QEMU+TLS://h1/system", "test:///default",
    "test+unix:///tmp/host.xml?socket=/tmp/s", "lxc:///", "hail",  # an alias from libvirt.conf
])
def test_check_uri_accepts_what_libvirt_knows(uri):
    _libvirt_io.check_uri(uri)


@pytest.mark.parametrize("uri,expect", [
    ("bogus:///nothing", "unknown hypervisor driver 'bogus'"),
    ("qemu+carrier-pigeon://h1/system", "unknown transport 'carrier-pigeon'"),
])
def test_check_uri_refuses_unknown_driver_or_transport_before_connecting(uri, expect):
    with pytest.raises(_libvirt_io.LibvirtConnectError) as err:
        _libvirt_io.check_uri(uri)
    assert str(err.value).startswith(f"Cannot use libvirt URI {uri!r}: {expect}")


def test_job_from_stats():
    assert _collect_io.job_from_stats({"type": 0}) is None
    j = _collect_io.job_from_stats({"type": 2, "operation": 2, "data_total": 200, "data_processed": 50,
                                    "time_elapsed": 1500})
    assert j["kind"] == "save" and j["progress_percent"] == 25.0 and j["elapsed_seconds"] == 1.5


def test_busy_domain_outside_the_filter_still_prevents_enumeration(tmp_path, monkeypatch):
    sd = tmp_path / "status"
    sd.mkdir()
    (sd / "other.xml").write_text(STATUS % ("paused", "user", "<job type='none' async='dump'/>", "other",
                                            "22222222-2222-2222-2222-222222222222", tmp_path / "o.img"))
    (sd / "vm0006.xml").write_text(STATUS % ("paused", "ioerror", "", "vm0006",
                                             "00000000-0000-0000-0000-000000000007", tmp_path / "v.img"))
    monkeypatch.setattr(_collect_io, "local_system_uri", lambda uri: True)
    uri = write_fleet(tmp_path / "f.xml", 10)
    f = _collect_io.collect(uri, 10, ["vm0006"], status_dir=str(sd), log_dir=str(tmp_path))
    assert f["collection"] == "domainListGetStats" and f["unresponsive"] == []
    assert [p["name"] for p in f["paused"]] == ["vm0006"] and f["paused"][0]["responsive"]


def run_worker(uri, tmp_path, **plan):
    recs = []
    base = {"busy": {}, "bulk": True, "status_candidates": [], "patterns": [], "wall_deadline": time.time() + 10,
            "log_dir": str(tmp_path), "status_dir": str(tmp_path / "none")}
    _collect_io.worker(recs.append, uri, dict(base, **plan))
    return recs


def test_worker_ships_parsed_domains_not_xml_text(fleet, tmp_path):
    recs = run_worker(fleet, tmp_path)
    details = [r for r in recs if r["record"] == "domain"]
    assert len(details) == 12                           # paused + crashed only
    for r in details:
        assert "xml" not in r and r["dom"]["name"] == r["name"]
        assert r["dom"]["disks"][0]["path"].startswith("/var/lib/libvirt/images/")
    stats = next(r for r in recs if r["record"] == "stats")
    assert stats["via"] == "getAllDomainStats" and len(stats["domains"]) == 40


def test_a_record_with_xml_text_is_still_understood():
    xml = ("<domain type='kvm'><name>a</name><uuid>u</uuid><on_crash>preserve</on_crash><devices>"
           "<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>"
           "<source file='/srv/a.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>")
    recs = [{"record": "connected"}, {"record": "stats", "via": "getAllDomainStats", "domains": [
        {"name": "a", "uuid": "u", "state": 6, "reason": 0, "block": []}]},
        {"record": "domain", "name": "a", "xml": xml, "disk_errors": {}, "job": None, "control": None, "errors": []}]
    f = _collect_io.assemble("qemu:///system", 3, recs, True, {}, include_running=False, elapsed=0.1, now=time.time())
    p = f["paused"][0]
    assert (p["on_crash"], p["disks"][0]["source"], p["cause"]) == ("preserve", "/srv/a.img", "crashed")


def test_job_api_refusal_is_asked_once_per_run(fleet):
    """The test driver has neither jobStats nor jobInfo: the first domain asks both, the others none."""
    lv = _libvirt_io.libvirt
    conn = lv.openReadOnly(fleet)
    try:
        paused = [d for d, p in conn.getAllDomainStats(lv.VIR_DOMAIN_STATS_STATE) if p["state.state"] == 3]
        calls = []
        for dom in paused[:2]:
            for api in ("jobStats", "jobInfo"):
                real = getattr(dom, api)
                setattr(dom, api, lambda real=real, api=api: calls.append(api) or real())   # counts, then calls
        support = {}
        with pytest.raises(lv.libvirtError) as first:
            _collect_io._job_stats(paused[0], support)
        assert first.value.get_error_code() == lv.VIR_ERR_NO_SUPPORT
        assert support == {"stats": False, "info_error": first.value.get_error_message()}
        assert calls == ["jobStats", "jobInfo"]
        with pytest.raises(_collect_io.JobApiUnsupported) as again:
            _collect_io._job_stats(paused[1], support)
        assert str(again.value) == first.value.get_error_message() and calls == ["jobStats", "jobInfo"]
    finally:
        conn.close()


def test_every_paused_domain_reports_the_same_job_refusal(fleet, tmp_path):
    f = _collect_io.collect(fleet, 10, status_dir=str(tmp_path / "none"), log_dir=str(tmp_path))
    errors = {tuple(p["errors"]) for p in f["paused"]}
    assert len(errors) == 1 and len(next(iter(errors))) == 1
    assert next(iter(errors))[0].startswith("job: ") and "not supported" in next(iter(errors))[0]


def test_a_blocked_domain_costs_its_own_bound_and_not_the_others_records():
    """Per-domain queries run in threads: one that blocks is abandoned after its bound, the others' records
    all come in, and the whole run ends long before the deadline."""
    release = threading.Event()
    records = []

    def blocked():
        release.wait(30)
        return {"record": "domain", "name": "stuck"}

    jobs = [("stuck", blocked)] + [(f"ok{i}", lambda i=i: {"record": "domain", "name": f"ok{i}"})
                                   for i in range(10)]
    t0 = time.monotonic()
    try:
        abandoned = _collect_io._run_domains(jobs, records.append, 0.5, time.time() + 20)
    finally:
        release.set()
    assert time.monotonic() - t0 < 2.0
    assert set(abandoned) == {"stuck"} and abandoned["stuck"] >= 0.5
    assert {r["name"] for r in records} >= {f"ok{i}" for i in range(10)}


def test_as_many_blocked_domains_as_threads_do_not_starve_the_rest():
    release = threading.Event()
    records = []
    stuck = [(f"stuck{i}", lambda: release.wait(30) and {}) for i in range(_collect_io.DOMAIN_THREADS)]
    jobs = [*stuck, ("ok", lambda: {"record": "domain", "name": "ok"})]
    try:
        abandoned = _collect_io._run_domains(jobs, records.append, 0.3, time.time() + 20)
    finally:
        release.set()
    assert set(abandoned) == {n for n, _f in stuck} and [r["name"] for r in records] == ["ok"]


def test_probe_seconds_is_a_quarter_of_the_timeout_within_bounds():
    assert [_collect_io.probe_seconds(t) for t in (0.5, 2, 5, 10, 60)] == [0.5, 0.5, 1.25, 2.5, 3.0]
