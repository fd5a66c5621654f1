"""The AWX survey shipped in docs/docsite/awx: well formed for AWX, and every answer it can give by default is
accepted by the role entry point's argument spec (the same validator the role runs at its start)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO = Path(__file__).resolve().parents[3]
SURVEYS = {  # survey file -> (role, entry point) whose variables it sets
    "survey_diagnose.json": ("diagnostics", "main"),
}
AWX_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# argument-spec types a survey answer of each AWX type can feed (a text answer becomes a list by comma split);
# bool is never fed: a survey answers "true"/"false" strings, and ansible-core 2.19 conditionals need booleans
COMPATIBLE = {
    "text": {"str", "path", "raw", "list"}, "textarea": {"str", "raw"}, "password": {"str", "raw"},
    "integer": {"int", "float", "raw"}, "float": {"float", "raw"},
    "multiplechoice": {"str", "raw"}, "multiselect": {"list"},
}


def entry_point(role: str, name: str) -> dict:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return specs[name]["options"]


def choices(q: dict) -> list[str]:
    c = q.get("choices") or []
    return [x for x in (c.splitlines() if isinstance(c, str) else c) if x]


def awx_value(q: dict, answer):
    """The extra var AWX passes for an answer of this question."""
    if q["type"] == "multiselect":
        return [x for x in (answer.splitlines() if isinstance(answer, str) else answer) if x]
    if q["type"] == "integer":
        return int(answer)
    if q["type"] == "float":
        return float(answer)
    return str(answer)


def validate(options: dict, params: dict) -> dict:
    result = ArgumentSpecValidator(options).validate(params)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


@pytest.mark.parametrize("survey", sorted(SURVEYS))
def test_survey_is_an_awx_survey_spec(survey):
    spec = json.loads((REPO / "docs" / "docsite" / "awx" / survey).read_text())
    assert set(spec) == {"name", "description", "spec"} and spec["name"] and spec["spec"]
    names = [q["variable"] for q in spec["spec"]]
    assert len(names) == len(set(names)), "a variable is asked twice"
    for q in spec["spec"]:
        assert {"question_name", "question_description", "required", "type", "variable", "default"} <= set(q), q
        assert q["type"] in AWX_TYPES, q
        if q["type"] in ("multiplechoice", "multiselect"):
            assert choices(q), f"{q['variable']}: no choices"
            default = awx_value(q, q["default"]) if q["type"] == "multiselect" else [q["default"]]
            assert set(default) <= set(choices(q)), f"{q['variable']}: default not among the choices"
        if q["type"] in ("integer", "float") and q.get("min") is not None:
            assert q["min"] <= q["default"] <= q["max"], q
        if q["type"] in ("text", "textarea") and q["required"]:
            assert q["min"] <= len(str(q["default"])) <= q["max"], q


@pytest.mark.parametrize("survey", sorted(SURVEYS))
def test_every_survey_variable_fits_the_role_argument_spec(survey):
    options = entry_point(*SURVEYS[survey])
    questions = json.loads((REPO / "docs" / "docsite" / "awx" / survey).read_text())["spec"]
    for q in questions:
        var = q["variable"]
        assert var in options, f"{survey}: {var} is not an option of roles/{'/'.join(SURVEYS[survey])}"
        opt = options[var]
        assert opt.get("type", "str") in COMPATIBLE[q["type"]], f"{var}: survey {q['type']} vs spec {opt.get('type')}"
        if q["type"] == "text" and opt.get("type") == "list":   # an empty answer would become [""]
            assert q["required"] and q["default"], f"{var}: a list from text must be required, with a default"
            assert validate(options, {var: ""})[var] == [""]
        if opt.get("choices") and q["type"] == "multiplechoice":
            assert set(choices(q)) <= set(opt["choices"]), var
        if q["type"] == "multiselect" and opt.get("choices"):
            assert set(choices(q)) <= set(opt["choices"]), f"{var}: a choice the role refuses"
        if q["type"] in ("multiplechoice", "multiselect"):                  # every single answer is valid
            for c in choices(q):
                validate(options, {var: [c] if q["type"] == "multiselect" else c})
    # the answers AWX sends when every default is kept, all at once
    params = {q["variable"]: awx_value(q, q["default"]) for q in questions}
    validated = validate(options, params)
    assert set(validated) >= set(params)


def test_diagnose_survey_answers_become_what_the_role_expects():
    options = entry_point("diagnostics", "main")
    validated = validate(options, {"diagnostics_domains": "web-*,db1", "diagnostics_timeout": 2.5,
                                   "diagnostics_report_formats": ["json", "html"]})
    assert validated["diagnostics_domains"] == ["web-*", "db1"]
    assert validated["diagnostics_timeout"] == 2.5
    with pytest.raises(AssertionError, match="diagnostics_report_formats"):
        validate(options, {"diagnostics_report_formats": ["pdf"]})
