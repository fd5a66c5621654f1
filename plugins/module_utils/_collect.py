# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deprecated import path: the collection lives in ``pause/_collect_io.py`` (I/O).

Kept only for code outside plugins/module_utils that still imports ``module_utils._collect``
(tests/unit/plugins/filter); remove it once it imports ``module_utils.pause._collect_io``. Nothing is
defined here.
"""

from __future__ import annotations

from ansible_collections.kvmops.fleet.plugins.module_utils.pause._collect_io import collect

__all__ = ["collect"]
