"""kvmops.fleet.fleet_report_render: the role's report templates rendered in-process are byte for byte what Ansible's
templating (the template module's path: Templar, escape_backslashes off, trailing newlines kept) makes of them, for
reports with every cause, hostile names, DRBD rows, pause risks and an empty fleet; and bad input is named."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.filter import core as ansible_core
from ansible.template import Templar, trust_as_template
from browser.fixture import HOSTILE, fleet_results

from ansible_collections.kvmops.fleet.plugins.filter import fleet_report as report_plugin
from ansible_collections.kvmops.fleet.plugins.filter import fleet_report_render as render_plugin
from ansible_collections.kvmops.fleet.plugins.plugin_utils import _report_render

fleet_report = report_plugin.FilterModule().filters()["fleet_report"]
fleet_report_render = render_plugin.FilterModule().filters()["fleet_report_render"]
TEMPLATES = Path(__file__).parents[4] / "roles" / "diagnostics" / "templates"
PAGES = ["kvm-pause-report.md.j2", "kvm-pause-report.html.j2"]
T0 = "2026-12-06T03:00:00Z"


def reports():
    full = fleet_report(fleet_results(), generated_at=T0)
    empty = fleet_report({}, generated_at=T0)
    # a host whose name carries markup, newlines and backslashes
    results = fleet_results()
    first = sorted(results)[0]
    results["hv-\\n|`x`\r\nnext " + HOSTILE] = results.pop(first)
    odd = fleet_report(results, generated_at=T0)
    return {"full": full, "empty": empty, "odd": odd}


REPORTS = reports()
VARIABLES = [
    {},
    {"diagnostics_report_formats": ["json", "markdown", "html"], "diagnostics_report_refresh": "on_state_change"},
    {"diagnostics_report_formats": ["html"], "diagnostics_report_refresh": "always"},
]


def ansible_render(path: Path, report: dict, variables: dict) -> str:
    templar = Templar(loader=DataLoader(), variables={**variables, "__diagnostics_report": report})
    return templar.template(trust_as_template(path.read_text()), escape_backslashes=False)


@pytest.mark.parametrize("variables", VARIABLES, ids=["no-vars", "all-formats", "html-only"])
@pytest.mark.parametrize("name", sorted(REPORTS))
@pytest.mark.parametrize("page", PAGES)
def test_same_bytes_as_ansible_templating(page, name, variables):
    path = TEMPLATES / page
    ours = fleet_report_render(REPORTS[name], str(path), variables=variables)
    assert ours == ansible_render(path, REPORTS[name], variables)
    assert ours.endswith("\n") and not ours.endswith("\n\n")


def test_the_report_is_read_not_changed():
    report = copy.deepcopy(REPORTS["full"])
    fleet_report_render(report, str(TEMPLATES / PAGES[1]))
    assert report == REPORTS["full"]


def test_trailing_newlines_of_the_source_are_kept(tmp_path):
    (tmp_path / "t.j2").write_text("{% for h in __diagnostics_report.hosts %}{{ h.name }}\n{% endfor %}\n\n")
    (tmp_path / "none.j2").write_text("[{{ __diagnostics_report.hosts[1].name }}]")
    report = {"hosts": [{"name": "a"}, {"name": None}]}
    page = fleet_report_render(report, str(tmp_path / "t.j2"))
    assert page == "a\n\n" == ansible_render(tmp_path / "t.j2", report, {})  # None prints as nothing, as in Ansible
    none = tmp_path / "none.j2"
    assert fleet_report_render(report, str(none)) == "[]" == ansible_render(none, report, {})
    (tmp_path / "end.j2").write_text("x{{ '\n' }}\n\n\n")  # the source ends in three newlines, so does the page
    end = tmp_path / "end.j2"
    assert fleet_report_render(report, str(end)) == "x\n\n\n" == ansible_render(end, report, {})


@pytest.mark.parametrize(("report", "template", "variables", "message"), [
    (["not", "a", "dict"], "x.j2", None, "the input must be a fleet report (a dict), not list"),
    ({}, "", None, "template must be the path of a template file"),
    ({}, "x.j2", ["a"], "variables must be a dict, not list"),
    ({}, "/nonexistent/kvm-pause-report.md.j2", None,
     "cannot read the template /nonexistent/kvm-pause-report.md.j2: No such file or directory"),
])
def test_bad_input_is_named(report, template, variables, message):
    with pytest.raises(AnsibleFilterError, match=r"^fleet_report_render: ") as e:
        fleet_report_render(report, template, variables=variables)
    assert message in str(e.value)


def test_template_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "syntax.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(AnsibleFilterError, match=r"syntax\.j2:2: "):
        fleet_report_render({}, str(tmp_path / "syntax.j2"))
    (tmp_path / "undef.j2").write_text("line one\n{{ __diagnostics_report.summary.hosts }}\n")
    with pytest.raises(AnsibleFilterError, match=r"undef\.j2:2: UndefinedError: .*'summary'"):
        fleet_report_render({}, str(tmp_path / "undef.j2"))


@pytest.mark.parametrize("text", ["hv1", "a\r\nb\nc|d", HOSTILE, "ünïcode/αβ"])
def test_ansible_filters_behave_as_ansible_says(text):
    assert _report_render._regex_replace(text, "[\\r\\n]+", " ") == ansible_core.regex_replace(text, "[\\r\\n]+", " ")
    assert _report_render._regex_replace(text, "A", "x", ignorecase=True) == ansible_core.regex_replace(
        text, "A", "x", ignorecase=True)
    for algorithm in ("sha1", "sha256"):
        assert _report_render._hash(text, algorithm) == ansible_core.get_hash(text, algorithm)


def test_other_hashes_are_refused():
    with pytest.raises(Exception, match="'md5' is not offered here"):
        _report_render._hash("x", "md5")
