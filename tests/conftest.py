"""Make this checkout importable as ``ansible_collections.kvmops.fleet``.

The collection's own imports (``from ansible_collections.kvmops.fleet.plugins.module_utils import ...``)
need the repository to sit at ``ansible_collections/kvmops/fleet``. A clone can live anywhere, so a
symlink tree under ``.build/collections`` points back at the checkout; the same tree is what
``ANSIBLE_COLLECTIONS_PATH`` names when tests run ansible-playbook.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS_ROOT = REPO / ".build" / "collections"


def _ensure_collection_tree() -> Path:
    if REPO.parts[-3:] == ("ansible_collections", "kvmops", "fleet"):
        return REPO.parents[2]  # already in place (a collection tree, e.g. the Python 3.9 tier)
    link = COLLECTIONS_ROOT / "ansible_collections" / "kvmops" / "fleet"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != REPO:
        tmp = link.with_name(f".fleet.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(REPO, target_is_directory=True)
        os.replace(tmp, link)
    return COLLECTIONS_ROOT


sys.path.insert(0, str(_ensure_collection_tree()))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS_ROOT))

# With KVMOPS_FAIL_ON_SKIP=1 (set by hack/tiers.sh) a skipped test fails the run: on the project's
# test machine every test must really run, so a missing daemon or tool cannot pass as "skipped".
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and os.environ.get("KVMOPS_FAIL_ON_SKIP") == "1" and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED and os.environ.get("KVMOPS_FAIL_ON_SKIP") == "1":
        terminalreporter.write_line(
            f"KVMOPS_FAIL_ON_SKIP=1: {len(_SKIPPED)} skipped test(s) fail this run: {', '.join(_SKIPPED)}",
            red=True,
        )


class ForkedChildren(list):
    """PIDs of the children ``os.fork`` made during one test (recorded in the parent)."""

    def assert_reaped(self) -> None:
        """Each child was waited for already: ``waitpid`` finds no such child (killed *and* reaped)."""
        assert self, "no child was forked"
        for pid in self:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            raise AssertionError(f"child {pid} was not reaped")


@pytest.fixture
def forked_children(monkeypatch) -> ForkedChildren:
    """Records every ``os.fork`` child of the test. A test proving "no worker is left behind" asserts on
    these PIDs, never on ``waitpid(-1)``: the test process has other, legitimate children (the lab's
    qemu-storage-daemon, for one), so a process-wide check fails or passes by test order."""
    pids = ForkedChildren()
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids
