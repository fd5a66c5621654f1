"""Open an HTML report in Debian's headless Chromium and say what a person would see (stdlib only).

    from browser import check_report
    res = check_report(Path("kvm-pause-report.html"), screenshot=Path("shot.png"))
    res.console_errors   # console.error/assert, uncaught exceptions, browser log errors (CSP, failed loads)
    res.counts           # {"paused": 3, ...} from the elements carrying data-kvmops-count
    res.vms              # {"host/name": cause} from data-kvmops-vm / data-kvmops-cause
    res.hosts            # {host: status} from data-kvmops-host / data-kvmops-status
    res.metrics          # {"host/metric": verdict} from data-kvmops-metric / data-kvmops-verdict
    res.drbd             # {"host/resource": verdict} from data-kvmops-drbd / data-kvmops-verdict
    res.title            # document.title
    res.requests         # every URL the page asked for (file:// and data: are served, the rest refused)

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3
and 4), so console messages are collected as events, reliably, instead of scraped from stderr. The page can
reach nothing: every request that is not file:// or data: is failed by the Fetch domain (and recorded in
``requests`` + ``blocked``), DNS resolves nothing and the proxy is a closed loopback port. The screenshot is
of the whole page at 1280 px width. Raises ``BrowserError`` with Chromium's stderr when it cannot run.

CLI: ``python -m browser REPORT.html [--screenshot PNG]`` prints the result as JSON.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("KVMOPS_CHROMIUM", "chromium")
WIDTH = 1280
# what the page exposes; evaluated in the page after load
EXTRACT = r"""
(() => {
  const out = {title: document.title, counts: {}, vms: {}, hosts: {}, metrics: {}, drbd: {}, bad: [], height: 0};
  for (const el of document.querySelectorAll('[data-kvmops-count]')) {
    const key = el.getAttribute('data-kvmops-count'), text = el.textContent.trim();
    if (!/^[0-9]+$/.test(text) || key in out.counts) { out.bad.push('count ' + key + ': ' + JSON.stringify(text)); }
    out.counts[key] = parseInt(text, 10);
  }
  for (const el of document.querySelectorAll('[data-kvmops-vm]')) {
    const key = el.getAttribute('data-kvmops-vm');
    if (key in out.vms) { out.bad.push('vm twice: ' + key); }
    out.vms[key] = el.getAttribute('data-kvmops-cause');
  }
  for (const el of document.querySelectorAll('[data-kvmops-host]')) {
    const key = el.getAttribute('data-kvmops-host');
    if (key in out.hosts) { out.bad.push('host twice: ' + key); }
    out.hosts[key] = el.getAttribute('data-kvmops-status');
  }
  for (const el of document.querySelectorAll('[data-kvmops-metric]')) {
    const key = el.getAttribute('data-kvmops-metric');
    if (key in out.metrics) { out.bad.push('metric twice: ' + key); }
    out.metrics[key] = el.getAttribute('data-kvmops-verdict');
  }
  for (const el of document.querySelectorAll('[data-kvmops-drbd]')) {
    const key = el.getAttribute('data-kvmops-drbd');
    if (key in out.drbd) { out.bad.push('drbd twice: ' + key); }
    out.drbd[key] = el.getAttribute('data-kvmops-verdict');
  }
  const body = document.body ? document.body.scrollHeight : 0;
  out.height = Math.ceil(Math.max(document.documentElement.scrollHeight, body));
  out.scripts = document.scripts.length;
  return out;
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer; the message carries its stderr."""


@dataclass
class BrowserResult:
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    vms: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    drbd: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    scripts: int = 0
    height: int = 0
    screenshot: Path | None = None


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe: send commands, wait for replies, keep events."""

    def __init__(self, proc: subprocess.Popen, wfd: int, rfd: int, deadline: float, stderr_path: Path) -> None:
        self.proc, self.wfd, self.rfd, self.deadline, self.stderr_path = proc, wfd, rfd, deadline, stderr_path
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(rfd, selectors.EVENT_READ)
        self.handlers: list = []

    def fail(self, what: str) -> BrowserError:
        err = self.stderr_path.read_text(errors="replace")[-4000:] if self.stderr_path.exists() else ""
        return BrowserError(f"chromium: {what} (exit status {self.proc.poll()}); its stderr:\n{err}")

    def _read_message(self) -> dict:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self.fail("no answer before the deadline")
            if not self.sel.select(timeout=min(left, 1.0)):
                if self.proc.poll() is not None:
                    raise self.fail("exited")
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise self.fail("closed the debugging pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data) :]
        return self.next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        mid = self.send(method, params, session)
        while True:
            msg = self._read_message()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise self.fail(f"{method} failed: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        if "method" not in msg:
            return
        self.events.append(msg)
        for handler in self.handlers:
            handler(msg)

    def wait_for(self, method: str) -> dict:
        for msg in self.events:
            if msg["method"] == method:
                return msg
        while True:
            msg = self._read_message()
            self._event(msg)
            if msg.get("method") == method:
                return msg


def _high_pipe() -> tuple[int, int]:
    """os.pipe() with both ends at fd >= 10, so that the child can dup2 them onto 3 and 4 in any order."""
    r, w = os.pipe()
    hr, hw = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(r)
    os.close(w)
    return hr, hw


def _console_text(params: dict) -> str:
    parts = []
    for arg in params.get("args", []):
        parts.append(str(arg.get("value", arg.get("description", arg.get("type")))))
    return " ".join(parts)


def check_report(html: Path, screenshot: Path | None = None, timeout: float = 60, *,
                 screenshot_height: int | None = None) -> BrowserResult:
    """Load ``html`` in headless Chromium; collect console errors, the data-kvmops-* values and a screenshot.

    The screenshot is of the whole page (up to 16000 px), or of its top ``screenshot_height`` pixels.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    exe = shutil.which(CHROMIUM)
    if not exe:
        raise BrowserError(f"{CHROMIUM} not found: install Debian's chromium package (hack/setup.sh does)")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="kvmops-browser-") as tmp:
        tmpdir = Path(tmp)
        stderr_path = tmpdir / "stderr.log"
        to_chrome_r, to_chrome_w = _high_pipe()
        from_chrome_r, from_chrome_w = _high_pipe()
        args = [
            exe,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={tmpdir / 'profile'}",
            "--no-sandbox",  # runs as root in the test containers/VMs
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--mute-audio",
            "--hide-scrollbars",
            # nothing leaves this machine: no name resolves and the proxy is a closed loopback port
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            f"--window-size={WIDTH},900",
            "about:blank",
        ]

        def child_fds() -> None:
            # Chromium reads commands on fd 3 and writes replies on fd 4 (the pipe fds are >= 10: no clash)
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=child_fds,  # noqa: PLW1509
                pass_fds=(3, 4), start_new_session=True,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(proc, to_chrome_w, from_chrome_r, deadline, stderr_path)
        try:
            return _drive(pipe, html, screenshot, screenshot_height)
        finally:
            with contextlib.suppress(OSError):
                pipe.send("Browser.close")
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
            os.close(to_chrome_w)
            os.close(from_chrome_r)


def _drive(pipe: _Pipe, html: Path, screenshot: Path | None, screenshot_height: int | None) -> BrowserResult:
    res = BrowserResult()
    targets = pipe.call("Target.getTargets")["targetInfos"]
    page = next((t for t in targets if t["type"] == "page"), None)
    page_id = page["targetId"] if page else pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": page_id, "flatten": True})["sessionId"]

    def on_event(msg: dict) -> None:
        if msg.get("sessionId") != session:
            return
        method, params = msg["method"], msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            res.console_errors.append(f"console.{params['type']}: {_console_text(params)}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            res.console_errors.append(
                "uncaught: {}".format((d.get("exception") or {}).get("description") or d.get("text"))
            )
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            if e.get("level") == "error":
                res.console_errors.append("{}: {}{}".format(
                    e.get("source"), e.get("text"), f" ({e['url']})" if e.get("url") else ""))
        elif method == "Fetch.requestPaused":
            url = params["request"]["url"]
            res.requests.append(url)
            if url.startswith(("file://", "data:")):
                pipe.send("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
            else:
                res.blocked.append(url)
                pipe.send("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                          session)

    pipe.handlers.append(on_event)
    for domain in ("Runtime", "Log", "Page"):
        pipe.call(f"{domain}.enable", {}, session)
    pipe.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
    pipe.call("Emulation.setDeviceMetricsOverride",
              {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
    pipe.events.clear()
    nav = pipe.call("Page.navigate", {"url": html.as_uri()}, session)
    if nav.get("errorText"):
        raise pipe.fail(f"could not open {html}: {nav['errorText']}")
    pipe.wait_for("Page.loadEventFired")
    out = pipe.call("Runtime.evaluate", {"expression": EXTRACT, "returnByValue": True}, session)
    if "exceptionDetails" in out:
        raise pipe.fail(f"reading the page failed: {out['exceptionDetails']}")
    value = out["result"]["value"]
    res.title, res.counts, res.vms, res.hosts = value["title"], value["counts"], value["vms"], value["hosts"]
    res.metrics = value["metrics"]
    res.drbd = value["drbd"]
    res.duplicates, res.scripts, res.height = value["bad"], value["scripts"], value["height"]
    if screenshot is not None:
        height = max(600, min(int(value["height"]), screenshot_height or 16000))
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
        shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip},
                         session)
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        res.screenshot = screenshot
    # late events (console messages emitted during the screenshot) are in by now: one round trip flushes
    pipe.call("Runtime.evaluate", {"expression": "0", "returnByValue": True}, session)
    return res
