"""The diagnostics role against the real lab: real QEMU domains paused for real reasons on this machine's
libvirtd (localhost, local connection), an inventory host that is unreachable (ssh to a closed loopback port)
and one whose libvirt URI names a socket nobody listens on. The report is checked in headless Chromium
against the JSON (screenshot kept as .build/artifacts/report-lab.png); then a second run changes nothing,
check mode predicts, and remediation resumes only what is safe, reports a refusal without failing the play,
and is idempotent."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from browser import check_report

from kvmlab import Lab

from .helpers import ARTIFACTS, COUNT_KEYS, FILES, assert_safe_html, parse_html, recap, run_playbook, task_status

pytestmark = pytest.mark.lab
HERE = Path(__file__).parent
MAIN, REMEDIATE = HERE / "role_main.yml", HERE / "role_remediate.yml"
PREFIX = "kvmdiag"


@pytest.fixture(scope="module")
def diag_lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with Lab(prefix=PREFIX) as lab:
        yield lab


@pytest.fixture(scope="module")
def fleet(diag_lab, tmp_path_factory):
    """running + user + enospc + crashed domains of our own; inventory lab / gone / deadlibvirt."""
    tmp = tmp_path_factory.mktemp("lab-report")
    doms = {state: diag_lab.create(state) for state in ("running", "user", "enospc", "crashed")}
    inv = tmp / "inventory.json"
    inv.write_text(json.dumps({"all": {
        "vars": {"diagnostics_domains": [f"{PREFIX}-*"], "diagnostics_report_dir": str(tmp / "report")},
        "hosts": {
            "lab": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "gone": {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh",
                     "ansible_ssh_common_args": "-o ConnectTimeout=5"},
            "deadlibvirt": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                            "diagnostics_uri": f"qemu:///system?socket={tmp}/no-libvirtd.sock"},
        }}}))
    yield tmp, inv, doms
    for d in doms.values():
        d.destroy()


def main(tmp: Path, inv: Path, *args):
    rc, out = run_playbook(["-i", inv, MAIN, *args], cwd=tmp)
    assert rc == 0, out
    return out


def test_report_of_the_real_lab(fleet):
    tmp, inv, doms = fleet
    out = main(tmp, inv)
    report_dir = tmp / "report"
    data = json.loads((report_dir / FILES["json"]).read_text())
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts["gone"]["status"] == "unreachable" and "Connection refused" in hosts["gone"]["message"]
    assert hosts["deadlibvirt"]["status"] == "libvirt_failed"
    assert hosts["deadlibvirt"]["message"].startswith("libvirtd is not running on this host")
    lab = hosts["lab"]
    assert lab["status"] == "diagnosed" and lab["complete"] is True, lab
    causes = {p["name"]: p["cause"] for p in lab["paused"]}
    assert causes == {doms["user"].name: "user_paused", doms["enospc"].name: "storage_full",
                      doms["crashed"].name: "crashed"}
    s = data["summary"]
    assert (s["hosts"], s["hosts_diagnosed"], s["hosts_unreachable"], s["hosts_libvirt_failed"]) == (3, 1, 1, 1)
    assert (s["domains_total"], s["running"], s["paused"], s["crashed"], s["safe_to_resume"]) == (4, 1, 2, 1, 1)
    enospc = next(p for p in lab["paused"] if p["cause"] == "storage_full")
    assert enospc["disks"][0]["filesystem"]["mount_point"] == str(doms["enospc"].mount_point)
    assert enospc["safe_to_resume"] is False and enospc["remediation"]
    # the HTML, in the browser, says the same as the JSON
    page = report_dir / FILES["html"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    res = check_report(page, screenshot=ARTIFACTS / "report-lab.png", timeout=120)
    assert res.console_errors == [] and res.blocked == [] and res.scripts == 0
    assert res.counts == {k: s[k] for k in COUNT_KEYS}
    assert res.vms == {f"lab/{name}": cause for name, cause in causes.items()}
    assert res.hosts == {"lab": "diagnosed", "gone": "unreachable", "deadlibvirt": "libvirt_failed"}
    assert_safe_html(parse_html(page.read_text()), "lab report")
    # the per-VM table still printed per host, and the summary names the files
    assert "VM                           CAUSE" in out
    assert f"{report_dir / FILES['html']}" in out
    assert "gone: not diagnosed (unreachable)" in out


def test_second_run_and_check_mode_change_nothing(fleet):
    tmp, inv, _doms = fleet
    report_dir = tmp / "report"
    before = {n: (report_dir / n).read_bytes() for n in FILES.values()}
    for args in ((), ("--check",)):
        out = main(tmp, inv, "--diff", *args)
        for task in ("Write the JSON report", "Write the Markdown report", "Write the HTML report"):
            assert task_status(out, task) == ["ok"], (args, task, out[out.find("Write the JSON report"):])
        assert sum(r["changed"] for r in recap(out).values()) == 0, out
        assert {n: (report_dir / n).read_bytes() for n in FILES.values()} == before


def test_bad_report_format_is_refused_before_anything(fleet):
    tmp, inv, _doms = fleet
    rc, out = run_playbook(["-i", inv, MAIN, "-e", '{"diagnostics_report_formats": ["pdf"]}'], cwd=tmp)
    assert rc != 0
    assert "diagnostics_report_formats" in out and "pdf" in out
    assert "Diagnose the host" not in out


def test_remediation(fleet):
    tmp, inv, doms = fleet
    user, enospc = doms["user"], doms["enospc"]
    # check mode: predicted, nothing resumed
    out = main(tmp, inv, "--check", "-e", "diagnostics_remediate=true")
    assert task_status(out, "Resume the domains that are safe to resume") == ["changed"], out
    assert f"lab: would resume: {user.name}" in out
    assert user.state()[0] == 3
    # real: only the user-paused domain is resumed; the full one is not even tried
    out = main(tmp, inv, "-e", "diagnostics_remediate=true")
    assert f"lab: resumed: {user.name}" in out and enospc.name not in out.split("Print the outcome")[1]
    assert user.state()[0] == 1
    assert enospc.state()[0] == 3
    # space freed: the diagnosis says safe, but the operator's min_free (99 %) is not met: refused, play ok
    enospc.clear()
    rc, out = run_playbook(["-i", inv, REMEDIATE, "-e", "diagnostics_resume_min_free=99%"], cwd=tmp)
    assert rc == 0, out
    assert f"lab: resumed: nothing; refused: {enospc.name}: " in out
    assert recap(out)["lab"]["failed"] == 0
    assert enospc.state()[0] == 3
    # with the default min_free it is resumed; a second run has nothing left to do
    rc, out = run_playbook(["-i", inv, REMEDIATE], cwd=tmp)
    assert rc == 0, out
    assert f"lab: resumed: {enospc.name}" in out
    assert enospc.state()[0] == 1
    rc, out = run_playbook(["-i", inv, REMEDIATE], cwd=tmp)
    assert rc == 0, out
    assert "lab: resumed: nothing" in out
    assert recap(out)["lab"]["changed"] == 0
