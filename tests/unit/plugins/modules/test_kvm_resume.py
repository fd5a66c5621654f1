"""Black-box runs of kvm_resume (patch_module_args) on libvirt's test driver, and its failure messages.

The test driver's paused domains have reason 0 (unknown), so the real diagnosis refuses them unless
`unknown` is overridden; resume, destroy and start really happen in the driver. What the test driver cannot
do (pause again, refuse a resume, hang) is fed to the module as the bounded worker's records.
"""

from __future__ import annotations

import libvirt
import pytest
import yaml

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _libvirt_io
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _resume
from ansible_collections.kvmops.fleet.plugins.modules import kvm_resume
from kvmlab.testdriver import write_fleet

# write_fleet's default mix per 10: vm0000-0005 running, vm0006-0007 paused, vm0008 shut off, vm0009 crashed


@pytest.fixture
def uri(tmp_path):
    return write_fleet(tmp_path / "f.xml", 10)


def run(run_module, uri, name, **args):
    return run_module(kvm_resume, dict(args, uri=uri, name=name, settle=args.get("settle", 0)))


def test_refuses_what_the_diagnosis_does_not_clear(run_module, uri):
    out = run(run_module, uri, "vm0006")
    assert out["failed"] and (out["action"], out["changed"], out["resumed"]) == ("refused", False, False)
    assert out["msg"] == "refused to resume vm0006: " + out["reason"]
    assert out["reason"].startswith("unknown: the cause is unknown; inspect before resuming (list unknown in override")
    assert out["diagnosis"]["name"] == "vm0006" and out["diagnosis"]["cause"] == "unknown"
    assert out["state"] == "paused (unknown)"
    assert out["diff"] == {"before": {"state": "paused (unknown)"}, "after": {"state": "paused (unknown)"}}


def test_check_mode_then_real_run(run_module, uri):
    chk = run(run_module, uri, "vm0006", override=["unknown"], _ansible_check_mode=True)
    got = (chk.get("failed", False), chk["changed"], chk["action"], chk["resumed"])
    assert got == (False, True, "would_resume", False)
    assert chk["state"] == "paused (unknown)" and "overridden (override: unknown)" in chk["reason"]
    real = run(run_module, uri, "vm0006", override=["unknown"])
    got = (real.get("failed", False), real["changed"], real["action"], real["resumed"])
    assert got == (False, True, "resumed", True)
    assert real["state"] == "running" and real["reason"].endswith("resumed vm0006; it is running")
    assert chk["diff"] == real["diff"] == {"before": {"state": "paused (unknown)"}, "after": {"state": "running"}}


@pytest.mark.parametrize("check", [False, True])
def test_already_running(run_module, uri, check):
    out = run(run_module, uri, "vm0001", _ansible_check_mode=check)
    got = (out.get("failed", False), out["changed"], out["action"], out["state"])
    assert got == (False, False, "already_running", "running")
    assert out["diagnosis"] is None and out["reason"] == "vm0001 is already running"


def test_shut_off_is_not_started(run_module, uri):
    out = run(run_module, uri, "vm0008", override=sorted(_resume.OVERRIDABLE))
    assert out["failed"] and out["action"] == "refused" and out["diagnosis"] is None
    assert out["msg"] == ("refused to resume vm0008: vm0008 is shutoff (unknown), not paused: "
                          "kvm_resume does not start domains")


def test_crashed_is_restarted_only_with_override(run_module, uri):
    out = run(run_module, uri, "vm0009")
    assert out["failed"] and out["action"] == "refused" and out["state"] == "crashed (unknown)"
    assert "list crashed in override to restart the domain" in out["reason"]
    chk = run(run_module, uri, "vm0009", override=["crashed"], _ansible_check_mode=True)
    assert (chk["changed"], chk["action"]) == (True, "would_restart")
    real = run(run_module, uri, "vm0009", override=["crashed"])
    assert (real["changed"], real["action"], real["resumed"], real["state"]) == (True, "restarted", True, "running")


def test_a_name_with_glob_characters_matches_only_itself(run_module, tmp_path):
    uri = write_fleet(tmp_path / "g.xml", 10, prefix="w[e]b*")
    out = run(run_module, uri, "w[e]b*0006", override=["unknown"])
    assert out["action"] == "resumed" and out["diagnosis"]["name"] == "w[e]b*0006"


# -- failures before anything is done ------------------------------------------------------------------------------

@pytest.mark.parametrize("args,msg", [
    ({"min_free": "lots"}, "min_free: 'lots' is neither a size"),
    ({"min_free": "150%"}, "min_free: '150%' is more than 100 %"),
    ({"timeout": 0}, "timeout: must be more than 0 and at most 3600, got 0.0"),
    ({"settle": -1}, "settle: must be from 0 to 3600, got -1.0"),
    ({"override": ["save_job"]}, "value of override must be one or more of: api_error, crashed,"),
    ({"uri": "bogus:///x"}, "Cannot use libvirt URI 'bogus:///x': unknown hypervisor driver 'bogus'"),
])
def test_bad_options_fail_before_anything(run_module, monkeypatch, args, msg):
    def must_not_run(*_a, **_kw):
        raise AssertionError("libvirt work started despite a bad option")
    monkeypatch.setattr(kvm_resume, "collect", must_not_run)
    out = run_module(kvm_resume, dict({"name": "vm0006"}, **args))
    assert out["failed"] and out["msg"].startswith(msg), out["msg"]


def test_unknown_domain(run_module, uri):
    out = run(run_module, uri, "nope")
    assert out["failed"] and out["action"] == "error" and out["state"] is None
    assert out["msg"] == f"name: no domain named 'nope' exists on this host ({uri})"


def test_daemon_down(run_module, tmp_path):
    out = run_module(kvm_resume, {"name": "x", "uri": "qemu+unix:///system?socket=%s" % (tmp_path / "no.sock")})
    assert out["failed"] and out["msg"].startswith("libvirtd is not running on this host")


def test_permission_denied(monkeypatch, run_module):
    def denied(uri):
        raise libvirt.libvirtError("Failed to connect socket to '/run/libvirt/libvirt-sock-ro': Permission denied")
    monkeypatch.setattr(_libvirt_io.libvirt, "openReadOnly", denied)
    out = run_module(kvm_resume, {"name": "x"})
    assert out["failed"] and out["msg"].startswith("Permission denied connecting to qemu:///system")


def test_libvirt_missing(monkeypatch, run_module):
    monkeypatch.setattr(_libvirt_io, "HAS_LIBVIRT", False)
    out = run_module(kvm_resume, {"name": "x"})
    assert out["failed"] and "libvirt-python" in out["msg"]


# -- what the test driver cannot do: the worker's records ------------------------------------------------------------

def fake_worker(monkeypatch, records, finished=True):
    calls = []

    def fake(body, deadline, *args):
        calls.append(args)
        return [dict(r) for r in records] + ([{"record": "done"}] if finished else []), finished
    monkeypatch.setattr(kvm_resume, "run_bounded", fake)
    return calls


SEEN = {"record": "seen", "state": [3, 0], "persistent": True}


def test_paused_again_fails_with_the_state(run_module, uri, monkeypatch):
    calls = fake_worker(monkeypatch, [SEEN, {"record": "step", "step": "resume"}, {"record": "acted"},
                                      {"record": "after", "state": [3, 5]}])
    out = run(run_module, uri, "vm0006", override=["unknown"], settle=2)
    assert out["failed"] and (out["action"], out["changed"], out["resumed"]) == ("paused_again", True, False)
    assert out["state"] == "paused (ioerror)"
    assert out["msg"] == ("resumed vm0006, but it paused again within 2 s: now paused (ioerror); "
                          "the cause is still there")
    (uri_, name, entry, op, dry_run, settle), = calls
    assert (uri_, name, entry["cause"], op, dry_run, settle) == (uri, "vm0006", "unknown", "resume", False, 2)


def test_libvirt_refusing_the_resume(run_module, uri, monkeypatch):
    fake_worker(monkeypatch, [SEEN, {"record": "step", "step": "resume"},
                              {"record": "error", "kind": "LibvirtOperationError",
                               "message": "libvirt refused to resume vm0006: Requested operation is not valid"}])
    out = run(run_module, uri, "vm0006", override=["unknown"])
    # a resume libvirt refused changed nothing (issue 17: no false changed flag)
    assert out["failed"] and out["action"] == "error" and out["changed"] is False
    assert out["msg"] == "libvirt refused to resume vm0006: Requested operation is not valid"


def test_restart_whose_start_is_refused_after_the_destroy(run_module, uri, monkeypatch, libvirt_writes):
    # the destroy took effect, the start did not: changed=true, and the message says what was done and what not
    def refuse(self, *_a, **_kw):
        raise libvirt.libvirtError("spy: start refused")

    monkeypatch.setattr(libvirt.virDomain, "create", refuse)
    out = run(run_module, uri, "vm0009", override=["crashed"])
    assert out["failed"] and out["action"] == "error" and out["changed"] is True and out["resumed"] is False
    assert out["msg"] == ("destroyed vm0009 to restart it, but libvirt refused to start it: spy: start refused; "
                          "vm0009 is shut off now: start it once the cause is fixed")
    assert libvirt_writes() == ["destroy"]


def test_resume_that_hangs_is_bounded_and_said(run_module, uri, monkeypatch):
    fake_worker(monkeypatch, [SEEN, {"record": "step", "step": "resume"}], finished=False)
    out = run(run_module, uri, "vm0006", override=["unknown"], timeout=3)
    assert out["failed"] and out["action"] == "error"
    assert "libvirt did not answer within" in out["msg"]
    assert "while asked to resume vm0006 (calls made: resume)" in out["msg"]
    assert out["msg"].endswith("its state now: unknown")          # test driver: no status file to read


def test_state_changed_since_the_diagnosis(run_module, uri, monkeypatch):
    fake_worker(monkeypatch, [dict(SEEN, state=[3, 1])])
    out = run(run_module, uri, "vm0006", override=["unknown"])
    assert out["failed"] and out["action"] == "refused" and out["state"] == "paused (user)"
    assert "changed state since the diagnosis (paused (unknown) -> paused (user))" in out["msg"]


def test_resumed_by_someone_else_meanwhile(run_module, uri, monkeypatch):
    fake_worker(monkeypatch, [dict(SEEN, state=[1, 5])])
    out = run(run_module, uri, "vm0006", override=["unknown"])
    assert (out.get("failed", False), out["changed"], out["action"]) == (False, False, "already_running")


def test_transient_crashed_domain_is_not_destroyed(run_module, uri, monkeypatch):
    calls = fake_worker(monkeypatch, [{"record": "seen", "state": [6, 0], "persistent": False}])
    out = run(run_module, uri, "vm0009", override=["crashed"])
    assert out["failed"] and out["action"] == "refused" and "vm0009 is transient" in out["msg"]
    assert calls[0][3] == "restart"


# -- documentation --------------------------------------------------------------------------------------------------

def test_documentation_matches_the_code(run_module, uri):
    doc = yaml.safe_load(kvm_resume.DOCUMENTATION)
    assert set(doc["options"]) | {"uri", "timeout"} == set(kvm_resume.ARGUMENT_SPEC)   # + the _libvirt fragment
    assert doc["options"]["override"]["choices"] == sorted(_resume.OVERRIDABLE)
    ret = yaml.safe_load(kvm_resume.RETURN)
    ok = run(run_module, uri, "vm0006", override=["unknown"])
    failed = run(run_module, uri, "vm0007")
    assert set(ok) - {"changed", "diff", "invocation"} == set(ret) - {"msg"}
    assert set(failed) - {"changed", "diff", "invocation", "failed"} == set(ret)
    actions = ret["action"]["description"][0]
    for action in ("resumed", "restarted", "would_resume", "would_restart", "already_running", "refused",
                   "paused_again", "error"):
        assert f"V({action})" in actions
