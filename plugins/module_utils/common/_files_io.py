# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Files on a host: the one atomic writer and the one small-file reader of the collection's modules."""

from __future__ import annotations

import os
import tempfile


def under(root, path):
    """``path`` (absolute) below ``root``: ``/`` on a host, a fixture tree in the unit tests."""
    return os.path.join(root, path.lstrip("/"))


def read_text(path):
    """A small text file (sysfs, /proc, a configuration file), or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def write_atomic(path, text, mode=0o644):
    """``text`` into ``path`` with ``mode``, atomically: a temporary file in the same directory (created with
    its parents), then a rename over ``path``; a reader sees the old file or the new one, never a part."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kvmops-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
