"""The Chromium helper itself: it must see console errors, uncaught exceptions, refused loads and the
data-kvmops-* values, so that a report test that finds none of them means something."""
from __future__ import annotations

from pathlib import Path

from browser import check_report

BROKEN = """<!doctype html><html><head><meta charset="utf-8"><title>broken &amp; page</title></head><body>
<p data-kvmops-count="paused">3</p><p data-kvmops-count="hosts">x</p>
<div data-kvmops-vm="h1/a" data-kvmops-cause="user_paused"></div>
<div data-kvmops-host="h1" data-kvmops-status="diagnosed"></div>
<p data-kvmops-metric="h1/cpu.bogo_ops_per_s" data-kvmops-verdict="better"></p>
<div data-kvmops-metric="h1/cpu.bogo_ops_per_s" data-kvmops-verdict="worse"></div>
<img src="https://example.invalid/pixel.png">
<script>console.error("boom", 42); console.log("not an error"); missingFunction();</script>
</body></html>
"""

CLEAN = """<!doctype html><html><head><meta charset="utf-8"><title>clean</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,"><style>body { font-family: sans-serif; }</style></head><body>
<p data-kvmops-count="paused">0</p>
<div data-kvmops-host="h1" data-kvmops-status="unreachable"></div>
</body></html>
"""


def test_errors_and_external_loads_are_seen(tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    res = check_report(page, screenshot=tmp_path / "broken.png")
    assert res.title == "broken & page"
    assert any(e.startswith("console.error: boom 42") for e in res.console_errors), res.console_errors
    assert any("missingFunction" in e for e in res.console_errors), res.console_errors
    assert any("example.invalid" in e for e in res.console_errors), res.console_errors
    assert not any("not an error" in e for e in res.console_errors)
    assert res.blocked == ["https://example.invalid/pixel.png"]
    assert res.duplicates == ['count hosts: "x"', "metric twice: h1/cpu.bogo_ops_per_s"]
    assert res.counts["paused"] == 3
    assert res.vms == {"h1/a": "user_paused"}
    assert res.hosts == {"h1": "diagnosed"}
    assert res.metrics == {"h1/cpu.bogo_ops_per_s": "worse"}
    assert res.scripts == 1
    assert (tmp_path / "broken.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clean_page(tmp_path: Path):
    page = tmp_path / "clean.html"
    page.write_text(CLEAN)
    res = check_report(page)
    assert res.console_errors == []
    assert res.blocked == []
    assert res.requests == [page.as_uri()]
    assert res.counts == {"paused": 0}
    assert res.hosts == {"h1": "unreachable"}
    assert res.vms == {}
    assert res.metrics == {}
    assert res.scripts == 0
