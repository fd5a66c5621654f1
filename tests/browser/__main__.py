"""python -m browser REPORT.html [--screenshot PNG] [--timeout S]: what headless Chromium sees, as JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from . import check_report


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m browser", description=__doc__)
    ap.add_argument("html", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--height", type=int, help="screenshot only the top HEIGHT pixels")
    a = ap.parse_args()
    res = check_report(a.html, screenshot=a.screenshot, timeout=a.timeout, screenshot_height=a.height)
    print(json.dumps(dataclasses.asdict(res), indent=2, default=str))
    return 1 if res.console_errors or res.blocked or res.duplicates else 0


if __name__ == "__main__":
    raise SystemExit(main())
