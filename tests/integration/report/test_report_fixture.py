"""The fleet report rendered by the role's own report tasks (real ansible-playbook, real template module) from
recorded results covering every cause plus unreachable, libvirt-failed, not-diagnosed and incomplete hosts;
then checked in headless Chromium, parsed for escaping and external URLs, rendered as Markdown, and run
again for idempotence, check mode and diff. Screenshots: .build/artifacts/report-fixture*.png."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from browser import check_report
from browser.fixture import HOSTILE, fleet_results

from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _diagnose
from ansible_collections.kvmops.fleet.plugins.plugin_utils._fleet_report import build_report

from .helpers import (
    ARTIFACTS,
    COUNT_KEYS,
    FILES,
    assert_safe_html,
    parse_html,
    recap,
    render_markdown,
    run_playbook,
    summary_lines,
    task_status,
)

PLAYBOOK = Path(__file__).with_name("render_fixture.yml")
WRITE_TASKS = ("Write the JSON report", "Write the Markdown report", "Write the HTML report")


def prepare(tmp: Path, results: dict) -> tuple[Path, Path]:
    inv = tmp / "inventory.json"
    inv.write_text(json.dumps({"all": {"hosts": {
        h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} for h in results}}}))
    extra = tmp / "results.json"
    extra.write_text(json.dumps({"kvmops_test_results": results}))
    return inv, extra


def render(tmp: Path, out_dir: Path, results: dict | None = None, *args) -> tuple[int, str]:
    inv, extra = prepare(tmp, fleet_results() if results is None else results)
    return run_playbook(["-i", inv, PLAYBOOK, "-e", f"@{extra}", "-e", f"diagnostics_report_dir={out_dir}",
                         *args], cwd=tmp)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixture-report")
    rc, out = render(tmp, tmp / "report")
    assert rc == 0, out
    return tmp, tmp / "report", out


def test_files_and_json(rendered):
    _tmp, out_dir, out = rendered
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(FILES.values())
    for name in FILES.values():
        assert (out_dir / name).stat().st_mode & 0o777 == 0o644
    data = json.loads((out_dir / FILES["json"]).read_text())
    assert data == build_report(fleet_results(), generated_at=data["generated_at"])
    for task in WRITE_TASKS:
        assert task_status(out, task) == ["changed"], task
    lines = summary_lines(out)
    assert lines[0].endswith("6 hosts (3 diagnosed, 1 unreachable, 1 libvirt failed, 1 not diagnosed, 1 incomplete)")
    assert lines[1] == "62 domains: 26 paused, 1 crashed, 1 unresponsive, 4 safe to resume"
    assert lines[-4] == "Report written:"
    assert lines[-3:] == [f"  {out_dir / FILES[f]}" for f in ("json", "markdown", "html")]
    assert any(line.startswith("  hv-d.example.net unreachable: Failed to connect") for line in lines)
    assert any(line.startswith("  hv-c.example.net INCOMPLETE: libvirt did not list") for line in lines)


def test_html_in_chromium(rendered):
    _tmp, out_dir, _out = rendered
    page = out_dir / FILES["html"]
    data = json.loads((out_dir / FILES["json"]).read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    res = check_report(page, screenshot=ARTIFACTS / "report-fixture.png", timeout=120)
    top = check_report(page, screenshot=ARTIFACTS / "report-fixture-top.png", timeout=120, screenshot_height=1500)
    assert res.console_errors == [] and top.console_errors == []
    assert res.requests == [page.as_uri()] and res.blocked == []
    assert res.scripts == 0 and res.duplicates == []
    assert res.title.startswith("KVM pause report: 26 paused, 1 crashed on 6 hosts")
    assert res.counts == {k: data["summary"][k] for k in COUNT_KEYS}
    assert res.counts["paused"] == 26 and res.counts["hosts_unreachable"] == 1
    expected_vms = {f"{h}/{p['name']}": p["cause"]
                    for h, r in fleet_results().items() if r and "ansible_facts" in r
                    for p in r["ansible_facts"]["kvm_pause"]["paused"]}
    assert res.vms == expected_vms
    assert set(res.vms.values()) == set(_diagnose.CAUSES)
    assert f"hv-a.example.net/{HOSTILE}" in res.vms
    # DRBD beside the pauses: every resource of the hosts' drbd facts, with drbd_facts' verdict
    assert res.drbd == {"hv-a.example.net/r0": "diskless", "hv-b.example.net/vm1disk": "no-quorum",
                        "hv-b.example.net/vm3disk": "suspended"}
    assert res.hosts == {"hv-a.example.net": "diagnosed", "hv-b.example.net": "diagnosed",
                         "hv-c.example.net": "diagnosed", "hv-d.example.net": "unreachable",
                         "hv-e.example.net": "libvirt_failed", "hv-f.example.net": "not_diagnosed"}
    assert res.height > 1500
    assert (ARTIFACTS / "report-fixture.png").stat().st_size > 50_000


def test_html_is_escaped_and_self_contained(rendered):
    _tmp, out_dir, _out = rendered
    text = (out_dir / FILES["html"]).read_text()
    page = parse_html(text)
    assert_safe_html(page, "report")
    assert "http://" not in text and "https://" not in text  # and assert_safe_html: no attribute leaves the page
    # the hostile strings are text, never markup
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>bold?</b>" not in text
    joined = "".join(page.text)
    assert HOSTILE in joined and "<img src=x onerror=alert(1)> & </td>" in joined and "<b>bold?</b>" in joined
    csp = [v for tag, k, v in page.attrs if tag == "meta" and k == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_markdown_renders(rendered):
    _tmp, out_dir, _out = rendered
    md = (out_dir / FILES["markdown"]).read_text()
    html = render_markdown(md)
    page = parse_html(html)
    assert_safe_html(page, "markdown")
    # summary, by cause, hosts not fully diagnosed, one per diagnosed host
    assert page.tags.count("table") == 7
    assert page.tags.count("details") == 27
    text = "".join(page.text)
    for cause in _diagnose.CAUSES:
        assert cause in text
    for host in ("hv-d.example.net", "hv-e.example.net", "hv-f.example.net"):
        assert host in text
    assert HOSTILE in text and "<b>bold?</b>" in text
    assert "INCOMPLETE" in text
    assert "DRBD replication" in text and "drbdadm attach r0" in text
    # each table row has as many cells as its header
    for table in html.split("<table>")[1:]:
        head = len(re.findall(r"<th[ >]", table.split("</thead>")[0]))
        for row in table.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]:
            assert len(re.findall(r"<td[ >]", row)) == head, row


def test_second_run_changes_nothing(rendered):
    tmp, out_dir, _out = rendered
    before = {n: (out_dir / n).read_bytes() for n in FILES.values()}
    rc, out = render(tmp, out_dir)
    assert rc == 0, out
    for task in WRITE_TASKS:
        assert task_status(out, task) == ["ok"], task
    assert recap(out)["hv-a.example.net"]["changed"] == 0
    assert {n: (out_dir / n).read_bytes() for n in FILES.values()} == before
    assert summary_lines(out)[-4].startswith("Report unchanged, the fleet state is the one first seen at ")


def test_check_mode_predicts_and_writes_nothing(rendered, tmp_path):
    _tmp, out_dir, _out = rendered
    # a new directory: everything would be written, nothing is
    fresh = tmp_path / "new" / "report"
    rc, out = render(tmp_path, fresh, None, "--check")
    assert rc == 0, out
    for task in (*WRITE_TASKS, "Create the report directory"):
        assert task_status(out, task) == ["changed"], task
    assert not fresh.exists() and not fresh.parent.exists()
    assert summary_lines(out)[-4] == "Report would be written:"
    # the existing report, same state: no change predicted
    rc, out = render(tmp_path, out_dir, None, "--check")
    assert rc == 0, out
    assert recap(out)["hv-a.example.net"]["changed"] == 0
    # another state: the change is predicted and shown as a diff (JSON and Markdown; not the HTML), nothing written
    before = {n: (out_dir / n).read_bytes() for n in FILES.values()}
    results = fleet_results()
    results["hv-f.example.net"] = {"unreachable": True, "msg": "host went away"}
    rc, out = render(tmp_path, out_dir, results, "--check", "--diff")
    assert rc == 0, out
    for task in WRITE_TASKS:
        assert task_status(out, task) == ["changed"], task
    assert f"--- before: {out_dir / FILES['json']}" in out
    assert f"--- before: {out_dir / FILES['markdown']}" in out
    assert f"--- before: {out_dir / FILES['html']}" not in out
    assert '+      "message": "host went away",' in out
    assert {n: (out_dir / n).read_bytes() for n in FILES.values()} == before


def test_every_run_rewrites(tmp_path):
    out_dir = tmp_path / "r"
    for _round in range(2):
        rc, out = render(tmp_path, out_dir, None, "-e", "diagnostics_report_refresh=every_run")
        assert rc == 0, out
        assert task_status(out, "Write the JSON report") == ["changed"]
        assert task_status(out, "Read the previous report") == ["skipping"]


def test_formats(tmp_path):
    out_dir = tmp_path / "only-html"
    rc, out = render(tmp_path, out_dir, None, "-e", '{"diagnostics_report_formats": ["html"]}')
    assert rc == 0, out
    assert sorted(p.name for p in out_dir.iterdir()) == [FILES["html"]]
    rc, out = render(tmp_path, tmp_path / "none", None, "-e", '{"diagnostics_report_formats": []}')
    assert rc == 0, out
    assert not (tmp_path / "none").exists()
    assert "No report file requested" in out


def test_docs_screenshot_is_a_report_screenshot():
    """docs/docsite/images/fleet-report.png: the top of this report (cp .build/artifacts/report-fixture-top.png)."""
    data = (Path(__file__).resolve().parents[3] / "docs" / "docsite" / "images" / "fleet-report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == 1280 and int.from_bytes(data[20:24], "big") == 1500
