"""The diagnostics role with diagnostics_forecast=true on the real lab (issue 23): beside a domain paused for a
full filesystem, a running domain whose sparse 24 MiB raw disk (error_policy stop) sits on a 20 MiB loop ext4 is
reported in the report's "Pause risks" section: the storage overcommitted with statvfs's free bytes and the
growth du leaves, critical (the disk can fill it alone), the domain that would pause, the action; the same in the
Markdown and HTML files. A second run keeps the files (same fleet state); without the forecast the report has
no such section."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmlab import Lab
from kvmlab.storage import sparse_raw_on_loop

from .helpers import FILES, assert_safe_html, parse_html, recap, run_playbook, task_status

pytestmark = pytest.mark.lab
MAIN = Path(__file__).with_name("role_main.yml")
PREFIX = "kvmrisk"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    tmp = tmp_path_factory.mktemp("lab-forecast")
    made = {}

    def on_loop(d):
        fs, img, xml = sparse_raw_on_loop(d)
        made.update(fs=fs, img=img)
        return xml

    with Lab(prefix=PREFIX) as lab:
        paused = lab.create("enospc")
        risky = lab.create_running(on_loop, label="risk")
        inv = tmp / "inventory.json"
        inv.write_text(json.dumps({"all": {
            "vars": {"diagnostics_domains": [f"{PREFIX}-*"], "diagnostics_report_dir": str(tmp / "report"),
                     "diagnostics_forecast": True},
            "hosts": {"lab": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
        try:
            yield tmp, inv, paused, risky, made
        finally:
            risky.destroy()
            paused.destroy()


def test_report_shows_the_forecast_beside_the_pause(fleet):
    tmp, inv, paused, risky, made = fleet
    vfs = os.statvfs(made["fs"].mount_point)
    occupied = int(subprocess.run(["du", "--block-size=1", str(made["img"])], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
    rc, out = run_playbook(["-i", inv, MAIN], cwd=tmp)
    assert rc == 0, out
    assert task_status(out, "Forecast pause risks") == ["ok"]
    data = json.loads((tmp / "report" / FILES["json"]).read_text())
    (lab,) = data["hosts"]
    assert [(p["name"], p["cause"]) for p in lab["paused"]] == [(paused.name, "storage_full")]
    pr = data["pause_risks"]
    assert pr["hosts"][0]["status"] == "forecast" and pr["hosts"][0]["complete"] is True, pr["hosts"]
    (st,) = [s for s in pr["storages"] if s["name"] == str(made["fs"].mount_point)]
    free = vfs.f_bavail * vfs.f_frsize
    assert (st["host"], st["kind"], st["overcommitted"], st["severity"]) == ("lab", "filesystem", True, "critical")
    assert st["free_bytes"] == free and st["remaining_growth_bytes"] == 24 * MiB - occupied
    assert st["headroom_bytes"] == free - (24 * MiB - occupied) < 0
    assert st["would_pause"] == [risky.name] and st["can_fill_alone"] == [risky.name]
    assert st["would_see_errors"] == [] and st["paused_now"] == [paused.name]
    assert st["actions"][0].startswith(f"grow filesystem {made['fs'].mount_point} by ")
    assert pr["summary"]["overcommitted"] >= 1 and pr["summary"]["by_severity"]["critical"] >= 1
    md = (tmp / "report" / FILES["markdown"]).read_text()
    assert "## Pause risks" in md
    row = next(line for line in md.splitlines() if f"`{made['fs'].mount_point}`" in line)
    assert row.startswith("| 🔴 critical | lab | ") and "| **yes** |" in row and risky.name.replace("_", "\\_") in row
    html = (tmp / "report" / FILES["html"]).read_text()
    assert f'data-kvmops-would-pause="{risky.name}"' in html
    assert_safe_html(parse_html(html), "forecast report")
    assert any(line.strip().startswith('"Pause risks: ') for line in out.splitlines()), out


def test_second_run_keeps_the_files_and_without_forecast_no_section(fleet):
    tmp, inv, _paused, _risky, _made = fleet
    before = {n: (tmp / "report" / n).read_bytes() for n in FILES.values()}
    rc, out = run_playbook(["-i", inv, MAIN], cwd=tmp)
    assert rc == 0, out
    for task in ("Write the JSON report", "Write the Markdown report", "Write the HTML report"):
        assert task_status(out, task) == ["ok"], (task, out)
    assert sum(r["changed"] for r in recap(out).values()) == 0, out
    assert {n: (tmp / "report" / n).read_bytes() for n in FILES.values()} == before
    rc, out = run_playbook(["-i", inv, MAIN, "-e", "diagnostics_forecast=false"], cwd=tmp)
    assert rc == 0, out
    assert task_status(out, "Forecast pause risks") == ["skipping"]
    assert "pause_risks" not in json.loads((tmp / "report" / FILES["json"]).read_text())
