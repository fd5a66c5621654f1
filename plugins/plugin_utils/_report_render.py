# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The report pages rendered with Jinja2 directly, as ansible.builtin.template would render them.

At fleet scale the pages are large (100 hosts x 1,000 domains: 10 MB of Markdown, 23 MB of HTML) and the
template module pays the controller's templating machinery for every value it reads (lazy containers, data
tags, per-access checks): 59 s for the Markdown page and 75 s for the HTML one in benchmarks/bench_fleet.py.
Here the same template runs on the plain report in one Jinja2 environment set up like the template module's
(trim_blocks, no lstrip, ``\\n`` newlines, the source's trailing newlines kept, undefined names fail) with the
two Ansible filters the role's templates use. tests/unit/plugins/filter/test_fleet_report_render.py renders the
role's templates both ways and compares the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache

import jinja2

__all__ = ["ReportRenderError", "render_report"]


class ReportRenderError(Exception):
    """The template could not be read or rendered; the message names the template and, when known, the line."""


def _regex_replace(value="", pattern="", replacement="", ignorecase=False, multiline=False, count=0, mandatory_count=0):
    # ansible.builtin.regex_replace's arguments and behaviour (a str in, a str out)
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    text, n = re.compile(pattern, flags=flags).subn(replacement, str(value), count=count)
    if mandatory_count and n != mandatory_count:
        raise jinja2.TemplateRuntimeError(f"regex_replace: {n} replacements made, {mandatory_count} required")
    return text


def _hash(value, hashtype="sha1"):
    # ansible.builtin.hash for the algorithms the templates may ask for
    if hashtype not in ("sha1", "sha256"):
        raise jinja2.TemplateRuntimeError(f"hash: {hashtype!r} is not offered here (sha1, sha256)")
    return hashlib.new(hashtype, str(value).encode("utf-8")).hexdigest()


def _finalize(value):
    # as Ansible prints None inside a template: an empty string
    return "" if value is None else value


@lru_cache(maxsize=8)
def _environment(searchpath: str) -> jinja2.Environment:
    """One environment per template directory, kept for the process (its loader reloads a changed file)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        trim_blocks=True,
        lstrip_blocks=False,
        newline_sequence="\n",
        keep_trailing_newline=False,
        # as the template module: the HTML template escapes every value itself (| e), the Markdown one must not
        autoescape=False,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        auto_reload=True,
    )
    env.filters["regex_replace"] = _regex_replace
    env.filters["hash"] = _hash
    return env


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def render_report(report: dict, template: str, variables: dict) -> str:
    """The page rendered from the file ``template`` with the report as ``__diagnostics_report``."""
    path = os.path.realpath(os.path.expanduser(template))
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        raise ReportRenderError(f"cannot read the template {template}: {e.strerror}") from e
    env = _environment(os.path.dirname(path))
    context = dict(variables)
    context["__diagnostics_report"] = report
    try:
        page = env.get_template(os.path.basename(path)).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise ReportRenderError(f"{template}:{e.lineno}: {e.message}") from e
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as e:
        line = _template_line(e, path)
        raise ReportRenderError(f"{template}{f':{line}' if line else ''}: {type(e).__name__}: {e}") from e
    # ansible.builtin.template keeps as many newlines at the end as the template source has
    missing = _trailing_newlines(source) - _trailing_newlines(page)
    return page + "\n" * missing if missing > 0 else page


def _template_line(error: BaseException, path: str):
    tb = error.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
