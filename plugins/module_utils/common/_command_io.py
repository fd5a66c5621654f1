# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""External commands on a host, each under a timeout that kills its whole process group, and the lookup of a
tool in PATH plus the sbin directories. The one home of both for the modules that run tools (kvm_benchmark,
drbd_facts, drbd_resource). Stdlib only."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess

# tools live in sbin on most hosts (blkid, wipefs, drbdadm) and a module's PATH may lack it
EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class ToolTimeout(Exception):
    """A tool run did not end within its timeout; its process group was killed."""

    def __init__(self, timeout, out, err):
        super().__init__(f"did not finish within {timeout} s (killed)")
        self.timeout, self.out, self.err = timeout, out, err


def find_tool(name):
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += [d for d in EXTRA_PATH if d not in dirs]
    return shutil.which(name, path=os.pathsep.join(dirs))


def _decode(data):
    return (data or b"").decode("utf-8", errors="replace")


def run_tool(argv, timeout, cwd=None, stdin_text=None):
    """-> (rc, stdout, stderr). The tool runs in a session of its own; on the timeout, or when the module is
    interrupted while waiting, the whole group is killed (a tool's workers with it). Raises ToolTimeout."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    # Not AnsibleModule.run_command: it has no timeout, and a stuck tool's children must be killed as a group.
    proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
        argv,
        stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    data = None if stdin_text is None else stdin_text.encode("utf-8")
    try:
        out, err = proc.communicate(input=data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise ToolTimeout(timeout, _decode(out), _decode(err)) from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    return proc.returncode, _decode(out), _decode(err)


def _kill_group(proc):
    with contextlib.suppress(ProcessLookupError):  # the leader is not reaped yet: the group is still the tool's
        os.killpg(proc.pid, signal.SIGKILL)
