"""Helpers for the report tests: run ansible-playbook, read its recap, check a rendered report in Chromium,
parse the HTML and Markdown, keep screenshots under .build/artifacts/."""
from __future__ import annotations

import html.parser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import markdown_it

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / ".build" / "artifacts"
PLAYBOOK_BIN = str(Path(sys.executable).with_name("ansible-playbook"))
COUNT_KEYS = ("hosts", "hosts_diagnosed", "hosts_unreachable", "hosts_libvirt_failed", "hosts_not_diagnosed",
              "hosts_incomplete", "paused", "crashed", "unresponsive", "safe_to_resume")
FILES = {"json": "kvm-pause-report.json", "markdown": "kvm-pause-report.md", "html": "kvm-pause-report.html"}


def run_playbook(args: list, *, cwd: Path, timeout: float = 600, env_extra: dict | None = None):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_RETRY_FILES_ENABLED="0", **(env_extra or {}))
    proc = subprocess.run([PLAYBOOK_BIN, *[str(a) for a in args]], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout


def recap(out: str) -> dict:
    """PLAY RECAP -> {host: {"ok": n, "changed": n, ...}}."""
    res = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", out, re.MULTILINE):
        res[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return res


def task_status(out: str, task: str) -> list[str]:
    """The per-host result words (ok/changed/skipping/fatal) printed under TASK [... : task]."""
    m = re.search(r"^TASK \[[^\]]*" + re.escape(task) + r"\] \**\n(.*?)(?=^TASK |^PLAY RECAP)", out,
                  re.MULTILINE | re.DOTALL)
    assert m, f"task {task!r} not in the output:\n{out}"
    return re.findall(r"^(ok|changed|skipping|fatal|failed)\b", m.group(1), re.MULTILINE)


def summary_lines(out: str) -> list[str]:
    m = re.search(r"TASK \[[^\]]*Print the fleet summary\] \**\n.*?\"msg\": \[\n(.*?)\n\s*\]", out, re.DOTALL)
    assert m, out
    return [json.loads(line.strip().rstrip(",")) for line in m.group(1).splitlines()]


class Page(html.parser.HTMLParser):
    """Tags, attributes and text of an HTML document (for escaping and URL checks)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def parse_html(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


def render_markdown(text: str) -> str:
    """GitHub/GitLab-like rendering: CommonMark with raw HTML (for <details>) plus tables and strikethrough."""
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def assert_safe_html(page: Page, where: str) -> None:
    """No script, no event handler, no URL leaving the page (every link is an in-page anchor)."""
    assert "script" not in page.tags, where
    assert "iframe" not in page.tags and "object" not in page.tags and "embed" not in page.tags, where
    for tag, key, value in page.attrs:
        assert not key.startswith("on"), f"{where}: event handler {key} on <{tag}>"
        if key in ("href", "src", "action", "formaction", "srcset", "poster", "data"):
            assert value.startswith("#") or value == "data:,", f"{where}: <{tag} {key}={value!r}> leaves the page"
        assert "javascript:" not in value.lower(), f"{where}: {key}={value!r}"
    for css in page.styles:
        assert "url(" not in css and "@import" not in css, f"{where}: CSS loads something"
