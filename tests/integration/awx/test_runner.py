"""The diagnose job as AWX runs it: ansible-runner on a private data dir, against a real lab on this machine.

The private data dir is laid out as AWX lays it out for a job: project/ (the example AWX project shipped in
docs/docsite/awx/project, whose playbooks import the collection's), inventory/hosts (an executable inventory
script printing JSON, as AWX writes it), env/extravars (the survey's answers), env/envvars, env/settings and
env/cmdline. The inventory has a real hypervisor (this machine, local connection, with a domain paused for
lack of space and a user-paused one), a host whose libvirt cannot be reached and a host that is unreachable.
The set_stats artifact kvmops_fleet_summary is read where AWX reads it, in the playbook_on_stats event; the
workflow gate of the AWX guide then runs with those artifacts as its extra vars, as AWX passes them, and the
remediation job (check mode first) resumes the user-paused domain and leaves the one whose storage is full.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import ansible_runner
import pytest

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
AWX_DOCS = REPO / "docs" / "docsite" / "awx"
HV, NOLIBVIRT, DOWN = "kvmawx-hv1", "kvmawx-nolibvirt", "kvmawx-down"


def survey_answers(**answers) -> dict:
    """The extra vars AWX sends for the diagnose survey: its defaults, with the given answers."""
    spec = json.loads((AWX_DOCS / "survey_diagnose.json").read_text())["spec"]
    out = {}
    for q in spec:
        value = answers.get(q["variable"], q["default"])
        if q["type"] == "multiselect" and isinstance(value, str):
            value = [x for x in value.splitlines() if x]
        elif q["type"] == "float":
            value = float(value)
        out[q["variable"]] = value
    return out


def inventory_script(hosts: dict[str, dict]) -> str:
    data = {"all": {"children": ["hypervisors"]}, "hypervisors": {"hosts": sorted(hosts)},
            "_meta": {"hostvars": hosts}}
    return (f"#!{sys.executable}\n# written like AWX's inventory script: the whole inventory as JSON on --list\n"
            f"import json\nprint(json.dumps(json.loads({json.dumps(data)!r})))\n")


def private_data_dir(root: Path, hosts: dict[str, dict], extravars: dict) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(AWX_DOCS / "project", root / "project")
    (root / "inventory").mkdir()
    inv = root / "inventory" / "hosts"
    inv.write_text(inventory_script(hosts))
    inv.chmod(0o700)
    (root / "env").mkdir()
    (root / "env" / "extravars").write_text(json.dumps(extravars))
    (root / "env" / "envvars").write_text(json.dumps({
        # in the execution environment the collection is under /usr/share/ansible/collections
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".build" / "collections"),
        "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1",
    }))
    (root / "env" / "settings").write_text(json.dumps({"job_timeout": 600, "suppress_ansible_output": True}))
    (root / "env" / "cmdline").write_text("--forks 5")
    return root


def run_job(pdd: Path, playbook: str) -> ansible_runner.Runner:
    return ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True)


@pytest.fixture
def closed_port():
    """A loopback TCP port bound by nobody listening: SSH to it is refused at once (an unreachable host)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_diagnose_job_publishes_the_fleet_summary_and_gates_remediation(lab_domain, tmp_path, closed_port):
    full, user = lab_domain("enospc"), lab_domain("user")
    hosts = {
        HV: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        NOLIBVIRT: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    "diagnostics_uri": f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"},
        DOWN: {"ansible_host": "127.0.0.1", "ansible_port": closed_port, "ansible_user": "root",
               "ansible_connection": "ssh",
               "ansible_ssh_common_args": "-o ConnectTimeout=10 -o StrictHostKeyChecking=no "
                                          "-o UserKnownHostsFile=/dev/null -o BatchMode=yes"},
    }
    extravars = survey_answers(diagnostics_domains=f"{full.name},{user.name}")
    extravars["diagnostics_report_dir"] = str(tmp_path / "report")
    pdd = private_data_dir(tmp_path / "job-diagnose", hosts, extravars)

    r = run_job(pdd, "diagnose.yml")
    stdout = r.stdout.read()
    assert (r.status, r.rc) == ("successful", 0), stdout

    # where AWX reads the artifacts: event_data.artifact_data of the playbook_on_stats event
    (stats,) = [e for e in r.events if e["event"] == "playbook_on_stats"]
    artifacts = stats["event_data"]["artifact_data"]
    summary = artifacts["kvmops_fleet_summary"]
    assert summary["schema_version"] == 1
    assert (summary["hosts"], summary["hosts_diagnosed"], summary["hosts_unreachable"],
            summary["hosts_libvirt_failed"]) == (3, 1, 1, 1), summary
    assert summary["unreachable_hosts"] == [DOWN] and summary["libvirt_failed_hosts"] == [NOLIBVIRT], summary
    assert (summary["paused"], summary["crashed"], summary["unresponsive"], summary["safe_to_resume"]) == (2, 0, 0, 1)
    assert summary["by_cause"] == {"storage_full": 1, "user_paused": 1}, summary
    assert summary["safe_to_resume_domains"] == [{"host": HV, "name": user.name, "cause": "user_paused"}], summary
    assert summary["generated_at"].endswith("Z")

    # the job's artifacts directory, as AWX keeps it: status, rc, stdout and one file per job event
    art = pdd / "artifacts" / r.config.ident
    assert (art / "status").read_text() == "successful" and (art / "rc").read_text() == "0"
    events = [json.loads(p.read_text()) for p in (art / "job_events").glob("*.json")]
    kinds = {e["event"] for e in events}
    assert {"playbook_on_start", "playbook_on_play_start", "runner_on_ok", "playbook_on_stats"} <= kinds, kinds
    assert any(e["event"] == "runner_on_unreachable" and e["event_data"]["host"] == DOWN for e in events)
    (on_disk,) = [e for e in events if e["event"] == "playbook_on_stats"]
    assert on_disk["event_data"]["artifact_data"] == artifacts

    # the workflow gate of the AWX guide, given the artifacts as extra vars (as AWX passes them to the next node)
    gate = run_job(private_data_dir(tmp_path / "job-gate", {}, artifacts), "gate_safe_to_resume.yml")
    out = gate.stdout.read()
    assert (gate.status, gate.rc) == ("successful", 0), out
    assert f"1 domain(s) safe to resume: {user.name}" in out, out
    nothing = dict(artifacts, kvmops_fleet_summary=dict(summary, safe_to_resume=0, safe_to_resume_domains=[]))
    gate = run_job(private_data_dir(tmp_path / "job-gate-nothing", {}, nothing), "gate_safe_to_resume.yml")
    out = gate.stdout.read()
    assert gate.status == "failed" and gate.rc != 0, out
    assert "nothing safe to resume: 2 paused and 0 crashed domain(s) on 1 diagnosed host(s)" in out, out
    gate = run_job(private_data_dir(tmp_path / "job-gate-alone", {}, {}), "gate_safe_to_resume.yml")
    out = gate.stdout.read()
    assert gate.status == "failed" and "no kvmops_fleet_summary (schema_version 1)" in out, out

    # nothing was changed by the diagnosis: both domains are still paused
    assert full.state() == full.expected and user.state() == user.expected
    assert os.path.isfile(tmp_path / "report" / "kvm-pause-report.json")

    # the gate passed, so the workflow starts remediation with the same artifacts as extra vars; the domain
    # filter keeps it to this test's domains (the machine's libvirtd is shared). Job type "Check" first.
    remediate_vars = dict(artifacts, diagnostics_domains=[full.name, user.name])
    pdd = private_data_dir(tmp_path / "job-remediate-check", hosts, remediate_vars)
    (pdd / "env" / "cmdline").write_text("--forks 5 --check")
    r = run_job(pdd, "remediate.yml")
    out = r.stdout.read()
    assert (r.status, r.rc) == ("successful", 0), out
    assert user.state() == user.expected, "check mode resumed a domain"
    r = run_job(private_data_dir(tmp_path / "job-remediate", hosts, remediate_vars), "remediate.yml")
    out = r.stdout.read()
    assert (r.status, r.rc) == ("successful", 0), out
    assert user.state()[0] == 1, f"{user.name} was not resumed:\n{out}"          # VIR_DOMAIN_RUNNING
    assert full.state() == full.expected, "the domain whose storage is still full was resumed"
    (stats,) = [e for e in r.events if e["event"] == "playbook_on_stats"]
    assert user.name in json.dumps(stats["event_data"]["artifact_data"].get("kvmops_fleet_remediation", {}).get(HV))
