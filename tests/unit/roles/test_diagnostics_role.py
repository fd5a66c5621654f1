"""kvmops.fleet.diagnostics: defaults equal the argument specs, every option is typed and described, the
shared options of the entry points agree, and bad variables are refused before any task runs (ansible-playbook
against localhost on libvirt's test driver)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kvmlab.testdriver import write_fleet

ROLE = Path(__file__).resolve().parents[3] / "roles" / "diagnostics"
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
COLLECTOR = "diagnostics_collector_"  # the collector entry point's own block (monitoring)


def test_defaults_equal_the_main_spec():
    main = SPECS["main"]["options"]
    ours = {k: v for k, v in DEFAULTS.items() if not k.startswith(COLLECTOR)}
    assert set(ours) == set(main)
    for name, value in ours.items():
        assert main[name]["default"] == value, name


def test_every_option_is_typed_and_described():
    for entry, spec in SPECS.items():
        assert spec.get("short_description"), entry
        for name, opt in spec["options"].items():
            assert name.startswith("diagnostics_"), name
            assert opt.get("type") and opt.get("description"), (entry, name)
            if opt["type"] == "list":
                assert opt.get("elements"), (entry, name)


def test_remediate_shares_the_main_options():
    for name, opt in SPECS["remediate"]["options"].items():
        main = SPECS["main"]["options"][name]
        for key in ("type", "default", "elements", "choices"):
            assert opt.get(key) == main.get(key), (name, key)


def test_choices():
    opts = SPECS["main"]["options"]
    assert opts["diagnostics_report_formats"]["choices"] == ["json", "markdown", "html"]
    assert opts["diagnostics_report_refresh"]["choices"] == ["on_state_change", "every_run"]


def run_main(tmp_path: Path, extra: dict, entry: str = "main", check: bool = False) -> subprocess.CompletedProcess:
    uri = write_fleet(tmp_path / "fleet.xml", 10)
    play = [{"name": "Diagnostics", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Role", "ansible.builtin.include_role": {
                 "name": "kvmops.fleet.diagnostics", "tasks_from": entry}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    args = dict({"diagnostics_uri": uri, "diagnostics_report_dir": str(tmp_path / "report")}, **extra)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(args),
                           *(["--check"] if check else []), str(tmp_path / "play.yml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("entry,extra,message", [
    ("main", {"diagnostics_report_formats": ["pdf"], "diagnostics_timeout": "soon"},
     ("diagnostics_report_formats", "diagnostics_timeout")),
    ("main", {"diagnostics_report_refresh": "hourly"}, ("diagnostics_report_refresh",)),
    ("remediate", {"diagnostics_domains": {"a": 1}}, ("diagnostics_domains",)),
])
def test_bad_variables_are_refused_before_anything(tmp_path, entry, extra, message):
    res = run_main(tmp_path, extra, entry)
    assert res.returncode == 2, res.stdout
    assert "Validating arguments against arg spec" in res.stdout
    for name in message:
        assert name in res.stdout, name
    assert "Diagnose the host" not in res.stdout
    assert not (tmp_path / "report").exists()


def test_main_on_the_test_driver(tmp_path):
    res = run_main(tmp_path, {})
    assert res.returncode == 0, res.stdout
    assert "10 domains: 6 running, 2 paused, 1 crashed, 0 unresponsive, 0 safe to resume" in res.stdout
    data = json.loads((tmp_path / "report" / "kvm-pause-report.json").read_text())
    assert data["summary"]["paused"] == 2 and data["hosts"][0]["name"] == "localhost"


def printed(out: str, task: str) -> list[str]:
    """The lines a debug task printed (its msg list)."""
    m = re.search(r"TASK \[[^\]]*" + re.escape(task) + r"\] \**\nok: \[localhost\] => \{\n\s*\"msg\": \[\n(.*?)\n\s*\]",
                  out, re.DOTALL)
    assert m, out
    return [json.loads(line.strip().rstrip(",")) for line in m.group(1).splitlines()]


def test_printed_table_and_summary(tmp_path):
    """The role's console text, through ansible-playbook: the per-VM table and the fleet summary (filters
    kvmops.fleet.pause_table and fleet_report_text, wired to the role's files, write results and check mode)."""
    res = run_main(tmp_path, {})
    assert res.returncode == 0, res.stdout
    table = printed(res.stdout, "Print the per-VM table")
    assert table[0] == "VM                           CAUSE                SEVERITY SAFE    PAUSED  SUMMARY"
    assert table[1] == ("vm0006                       unknown              warning  NO           ?  QEMU is stopped"
                        " but libvirt does not know why")
    assert table[2] == "    safe to resume: the cause is unknown; inspect before resuming"
    assert table[3].startswith("    -> Look at the QEMU log (/var/log/libvirt/qemu/vm0006.log)")
    assert table[7].startswith("vm0009                       crashed              critical NO           ?  the guest "
                               "crashed")
    assert table[-1] == "10 domains: 6 running, 2 paused, 1 crashed, 0 unresponsive, 0 safe to resume"
    assert len(table) == 11
    report = tmp_path / "report"
    summary = printed(res.stdout, "Print the fleet summary")
    assert re.fullmatch(r"Fleet at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: 1 host \(1 diagnosed, 0 unreachable, "
                        r"0 libvirt failed, 0 not diagnosed, 0 incomplete\)", summary[0]), summary
    assert summary[1:] == [
        "10 domains: 2 paused, 1 crashed, 0 unresponsive, 0 safe to resume",
        "  critical crashed                1  localhost/vm0009",
        "  warning  unknown                2  localhost/vm0006, localhost/vm0007",
        "Report written:",
        f"  {report / 'kvm-pause-report.json'}",
        f"  {report / 'kvm-pause-report.md'}",
        f"  {report / 'kvm-pause-report.html'}",
    ]
    # check mode with a fresh report every run: predicted, nothing written; only the requested file is listed
    before = (report / "kvm-pause-report.json").read_bytes()
    check = run_main(tmp_path, {"diagnostics_report_refresh": "every_run", "diagnostics_report_formats": ["json"],
                                "diagnostics_print_table": False}, check=True)
    assert check.returncode == 0, check.stdout
    assert printed(check.stdout, "Print the fleet summary")[-2:] == [
        "Report would be written:", f"  {report / 'kvm-pause-report.json'}"]
    assert (report / "kvm-pause-report.json").read_bytes() == before
    assert re.search(r"Print the per-VM table\] \**\nskipping: \[localhost\]", check.stdout), check.stdout
