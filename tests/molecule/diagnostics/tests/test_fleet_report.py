"""Verify the fleet report of the diagnostics scenario (testinfra, podman connection).

Expectations come from vars/fleet.yml, the file prepare.yml built the fleet from. Three sources are
compared: the JSON report converge.yml wrote on the controller, the HTML report as headless Chromium
renders it, and what each host's libvirt (or its absence) says right now. Report files and the
screenshot are kept under ${KVMOPS_BUILD}/artifacts/diagnostics/.

The host tests run on the fleet's hosts that are still up (testinfra_hosts below: the scenario's
verifier names no hosts); the stopped one is checked from the controller (podman inspect).
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml
from browser import check_report

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
FLEET = yaml.safe_load((SCENARIO / "vars" / "fleet.yml").read_text())
HOSTS = FLEET["fleet_hosts"]
STATES = FLEET["fleet_states"]
EXPECTED = FLEET["fleet_expected"]
DIAGNOSED = sorted(name for name, spec in HOSTS.items() if "fate" not in spec)
(KILLED,) = [name for name, spec in HOSTS.items() if spec.get("fate") == "libvirtd_killed"]
(STOPPED,) = [name for name, spec in HOSTS.items() if spec.get("fate") == "stopped"]
testinfra_hosts = [f"podman://{name}" for name in sorted(HOSTS) if name != STOPPED]
REPORT_DIR = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "report"
REPO = SCENARIO.parents[2]
ARTIFACTS = pathlib.Path(os.environ.get("KVMOPS_BUILD", REPO / ".build")) / "artifacts" / "diagnostics"
URI = "qemu:///system"
COUNT_KEYS = (
    "hosts",
    "hosts_diagnosed",
    "hosts_unreachable",
    "hosts_libvirt_failed",
    "paused",
    "crashed",
    "unresponsive",
    "safe_to_resume",
)
# the play of playbooks/diagnose.yml (converge.yml imports it after the collector's play)
DIAGNOSE_PLAY = "Diagnose paused and crashed VMs"
# what the diagnosis run may change: the report files, on the controller (delegated to localhost)
REPORT_TASKS = {
    "task: kvmops.fleet.diagnostics : Create the report directory",
    "task: kvmops.fleet.diagnostics : Write the JSON report",
    "task: kvmops.fleet.diagnostics : Write the Markdown report",
    "task: kvmops.fleet.diagnostics : Write the HTML report",
}


def guests(host, *states):
    return [g for g in HOSTS[host]["guests"] if not states or g["state"] in states]


def paused_guests(host):
    return [g for g in HOSTS[host]["guests"] if g["state"] != "running"]


@pytest.fixture(scope="module")
def report():
    return json.loads((REPORT_DIR / "kvm-pause-report.json").read_text())


@pytest.fixture(scope="module")
def hosts(report):
    return {h["name"]: h for h in report["hosts"]}


@pytest.fixture(scope="module")
def browser(report):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in ("kvm-pause-report.json", "kvm-pause-report.md", "kvm-pause-report.html"):
        shutil.copyfile(REPORT_DIR / name, ARTIFACTS / name)
    shot = ARTIFACTS / "kvm-pause-report.png"
    shot.unlink(missing_ok=True)
    result = check_report(REPORT_DIR / "kvm-pause-report.html", screenshot=shot, timeout=180)
    print(f"\ndiagnostics: report and Chromium screenshot kept in {ARTIFACTS}")
    return result


# -- the JSON report -----------------------------------------------------------------------------------
def test_every_host_once(report):
    assert sorted(h["name"] for h in report["hosts"]) == sorted(HOSTS)
    assert report["schema_version"] == 1


def test_stopped_host_is_unreachable(hosts):
    entry = hosts[STOPPED]
    assert entry["status"] == "unreachable", entry
    assert entry["message"], entry
    assert entry["paused"] == [] and not entry["complete"]


def test_killed_libvirtd_host_is_libvirt_failed(hosts):
    entry = hosts[KILLED]
    assert entry["status"] == "libvirt_failed", entry
    # the module's own word: nothing listens on the sockets any more (no socket activation either)
    assert "libvirtd is not running" in entry["message"], entry["message"]
    assert URI in entry["message"] and "Connection refused" in entry["message"], entry["message"]
    assert entry["paused"] == [] and not entry["complete"]


@pytest.mark.parametrize("name", DIAGNOSED)
def test_diagnosed_host_counts(hosts, name):
    entry = hosts[name]
    assert entry["status"] == "diagnosed", entry["message"]
    assert entry["complete"] and entry["errors"] == [], entry["errors"]
    summary = entry["summary"]
    assert summary["total"] == len(guests(name))
    assert summary["running"] == len(guests(name, "running"))
    assert summary["crashed"] == len(guests(name, "crashed"))
    assert summary["paused"] == len(paused_guests(name)) - len(guests(name, "crashed"))
    assert summary["unresponsive"] == 0
    assert summary["safe_to_resume"] == sum(EXPECTED[g["state"]]["safe_to_resume"] for g in paused_guests(name))


@pytest.mark.parametrize("name", DIAGNOSED)
def test_diagnosed_host_causes(hosts, name):
    paused = {vm["name"]: vm for vm in hosts[name]["paused"]}
    assert sorted(paused) == sorted(g["name"] for g in paused_guests(name))
    for guest in paused_guests(name):
        vm, want = paused[guest["name"]], EXPECTED[guest["state"]]
        assert (vm["cause"], vm["safe_to_resume"]) == (want["cause"], want["safe_to_resume"]), vm
        assert vm["state"] == STATES[guest["state"]]["domstate"].split()[0]
        assert vm["responsive"] and vm["source"] == "libvirt" and vm["errors"] == [], vm
        assert vm["remediation"] and vm["summary"] and vm["safe_to_resume_reason"], vm


def test_full_disks_name_the_tmpfs(hosts):
    mount = FLEET["fleet_tmpfs_mount"]
    full = [(name, g["name"]) for name in DIAGNOSED for g in guests(name, "enospc")]
    assert len(full) >= 2  # on a Debian 12 and a Debian 13 host
    for host, guest in full:
        (vm,) = [vm for vm in hosts[host]["paused"] if vm["name"] == guest]
        (disk,) = vm["disks"]
        assert disk["source"] == f"{mount}/{guest}.img"
        assert disk["error"] == "no_space" and disk["error_policy"] == "stop"
        fs = disk["filesystem"]
        assert (fs["mount_point"], fs["fstype"]) == (mount, "tmpfs"), fs
        assert fs["available_bytes"] < 1024 * 1024, fs
        assert mount in vm["summary"]
        assert any(step.startswith(f"{mount} is full") for step in vm["remediation"]), vm["remediation"]


def test_fleet_summary(report):
    diagnosed = [g for name in DIAGNOSED for g in guests(name)]
    paused = [g for g in diagnosed if g["state"] != "running"]
    by_cause = {}
    for guest in paused:
        cause = EXPECTED[guest["state"]]["cause"]
        by_cause[cause] = by_cause.get(cause, 0) + 1
    want = {
        "hosts": len(HOSTS),
        "hosts_diagnosed": len(DIAGNOSED),
        "hosts_unreachable": 1,
        "hosts_libvirt_failed": 1,
        "domains_total": len(diagnosed),
        "running": sum(g["state"] == "running" for g in diagnosed),
        "crashed": sum(g["state"] == "crashed" for g in diagnosed),
        "paused": sum(g["state"] not in ("running", "crashed") for g in diagnosed),
        "unresponsive": 0,
        "safe_to_resume": sum(EXPECTED[g["state"]]["safe_to_resume"] for g in paused),
        "by_cause": by_cause,
    }
    assert {key: report["summary"][key] for key in want} == want
    assert len(by_cause) >= 4  # storage_full, user_paused, watchdog, crashed, unknown


def test_causes_list_every_paused_domain(report):
    listed = {(d["host"], d["name"]): c["cause"] for c in report["causes"] for d in c["domains"]}
    want = {(name, g["name"]): EXPECTED[g["state"]]["cause"] for name in DIAGNOSED for g in paused_guests(name)}
    assert listed == want
    for cause in report["causes"]:
        assert cause["count"] == len(cause["domains"])


def test_markdown_names_the_bad_hosts():
    text = (REPORT_DIR / "kvm-pause-report.md").read_text()
    for name in (STOPPED, KILLED, *DIAGNOSED):
        assert name in text


def test_diagnosis_changed_nothing_but_the_report():
    # the hosts are only read: the diagnosis's only changes are the report files, written on the
    # controller; in every run of converge.yml (check mode's prediction too), whatever the collector's
    # play beside it changed on its own host
    records = [json.loads(line) for line in pathlib.Path(os.environ["KVMOPS_CHANGED_LOG"]).read_text().splitlines()]
    converges = [r for r in records if r["playbook"] == "converge.yml"]
    assert [r for r in converges if not r["check"]], records
    for record in converges:
        assert DIAGNOSE_PLAY in record["plays"], record["plays"]
        for host, changed in record["plays"][DIAGNOSE_PLAY].items():
            assert set(changed) <= REPORT_TASKS, (host, changed)


def test_set_stats_artifact_names_the_bad_hosts(report):
    # kvmops_fleet_summary as AWX / Automation Controller keeps it (set_stats, aggregate)
    path = pathlib.Path(os.environ["KVMOPS_CUSTOM_STATS_LOG"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    converges = [r for r in records if r["playbook"] == "converge.yml"]
    assert converges, records
    summary = converges[-1]["custom"]["_run"]["kvmops_fleet_summary"]
    assert summary["unreachable_hosts"] == [STOPPED]
    assert summary["libvirt_failed_hosts"] == [KILLED]
    keys = ("hosts", "hosts_diagnosed", "hosts_unreachable", "hosts_libvirt_failed", "paused", "crashed", "by_cause")
    assert {key: summary[key] for key in keys} == {key: report["summary"][key] for key in keys}
    want = [
        {"host": name, "name": g["name"], "cause": EXPECTED[g["state"]]["cause"]}
        for name in DIAGNOSED
        for g in paused_guests(name)
        if EXPECTED[g["state"]]["safe_to_resume"]
    ]

    def order(domain):
        return domain["host"], domain["name"]

    assert sorted(summary["safe_to_resume_domains"], key=order) == sorted(want, key=order)


# -- the HTML report in Chromium ---------------------------------------------------------------------
def test_html_loads_without_errors_or_external_requests(browser):
    assert browser.console_errors == []
    assert browser.blocked == [], browser.requests
    assert browser.duplicates == []
    assert browser.title


def test_html_counts_equal_the_json(browser, report):
    assert set(COUNT_KEYS) <= set(browser.counts), browser.counts
    assert {key: browser.counts[key] for key in COUNT_KEYS} == {key: report["summary"][key] for key in COUNT_KEYS}


def test_html_hosts_and_statuses(browser, report):
    assert browser.hosts == {h["name"]: h["status"] for h in report["hosts"]}
    assert browser.hosts[STOPPED] == "unreachable" and browser.hosts[KILLED] == "libvirt_failed"


def test_html_every_paused_vm_with_its_cause(browser):
    want = {f"{name}/{g['name']}": EXPECTED[g["state"]]["cause"] for name in DIAGNOSED for g in paused_guests(name)}
    assert browser.vms == want
    assert (ARTIFACTS / "kvm-pause-report.png").stat().st_size > 10_000


# -- the fleet itself, now: the report describes what is really there -----------------------------------
def test_host_state_matches_the_report(host, hosts):
    name = host.backend.get_hostname()
    if name == KILLED:
        version = host.run("virsh -c %s version", URI)
        assert version.rc != 0 and "Connection refused" in version.stderr, version.stderr
        assert host.run("pgrep -x libvirtd").rc == 1
        assert host.run("systemctl is-active libvirtd.service libvirtd.socket").stdout.split() != ["active"] * 2
        # the guests' QEMU processes outlived their libvirtd
        for guest in guests(name):
            pid = host.file(f"/run/libvirt/qemu/{guest['name']}.pid").content_string.strip()
            assert host.file(f"/proc/{pid}/exe").linked_to == "/usr/bin/qemu-system-x86_64", guest
        return
    assert name in DIAGNOSED
    for guest in guests(name):
        state = host.run("virsh -c %s domstate --reason %s", URI, guest["name"])
        assert state.rc == 0, state.stderr
        assert state.stdout.strip() == STATES[guest["state"]]["domstate"], guest


def test_stopped_host_is_down():
    status = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Status}}", STOPPED], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert status == "exited"
