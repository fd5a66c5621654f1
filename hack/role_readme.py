"""Role READMEs: the variables section is generated from each role's meta/argument_specs.yml.

Every role under roles/ has a README.md with hand-written prose (what the role does, requirements, example
playbooks, check mode, idempotence, limits) and one generated section between two markers: every variable
of every entry point with its type, default, choices and meaning, rendered from meta/argument_specs.yml.

    python hack/role_readme.py            rewrite the generated section of every role's README (prose untouched)
    python hack/role_readme.py ROLE ...   only these roles (names under roles/)
    python hack/role_readme.py --check    change nothing; exit 1 naming the role and the variable when a README
                                          differs from its specs (or defaults/main.yml differs from the specs,
                                          or a required prose section is missing)

Controller-side tooling (Python 3.11, PyYAML); not shipped in the collection.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN variables: generated from meta/argument_specs.yml by hack/role_readme.py; edit the specs -->"
END = "<!-- END variables -->"
# hand-written sections every role README has (level-2 headings, in any order)
REQUIRED_SECTIONS = (
    "Requirements",
    "Role variables",
    "Example playbooks",
    "Check mode",
    "Idempotence",
    "Limits",
)
ENTRY_HEADING = "### Entry point `{}`"
VARIABLE_HEADING = "#### `{}`"
_ENTRY_RE = re.compile(r"^### Entry point `([^`]+)`$")
_VARIABLE_RE = re.compile(r"^#### `([^`]+)`$")

# Ansible's semantic markup (as in module and role docs) to Markdown
_MARKUP = re.compile(r"\b(?P<kind>RV|[IBMUCOVEPL])\((?P<arg>[^()]*)\)|\bHORIZONTALLINE\b")


class ReadmeError(Exception):
    """A README or spec that cannot be processed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Problem:
    """One difference --check reports: the role, what (entry point / variable / section) and how."""

    role: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"role {self.role}: {self.where}: {self.message}"


def _target(ref: str) -> str:
    """O(fqcn#module:opt=value) / RV(...) / P(fqcn#type) -> the part a reader needs (opt=value, fqcn)."""
    if "#" in ref:
        fqcn, rest = ref.split("#", 1)
        return rest.split(":", 1)[1] if ":" in rest else fqcn
    return ref


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markup(text: str) -> str:
    """One description paragraph in Ansible's markup -> Markdown."""

    def repl(m: re.Match) -> str:
        kind, arg = m.group("kind"), m.group("arg")
        if kind is None:
            return "\n\n---\n\n"
        if kind == "I":
            return f"*{arg}*"
        if kind == "B":
            return f"**{arg}**"
        if kind == "U":
            return f"<{arg}>"
        if kind == "L":
            label, url = arg.split(",", 1) if "," in arg else (arg, arg)
            return f"[{label.strip()}]({url.strip()})"
        if kind in ("O", "RV", "P"):
            return _code(_target(arg))
        return _code(arg)  # C, V, E, M

    out, pos = [], 0
    for m in _MARKUP.finditer(text):
        out.append(_escape(text[pos : m.start()]))
        out.append(repl(m))
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _escape(text: str) -> str:
    """Plain text: a ``<`` Markdown would take for HTML is escaped."""
    return text.replace("<", "&lt;")


def yaml_value(value) -> str:
    """A default or choice as it is written in YAML (what a user copies into group_vars)."""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def _paragraphs(description) -> list[str]:
    if description is None:
        return []
    if isinstance(description, str):
        description = [description]
    return [markup(" ".join(str(p).split())) for p in description]


def _type_of(opt: dict) -> str:
    kind = opt.get("type", "str")
    if kind == "list" and opt.get("elements"):
        return f"list of {opt['elements']}"
    return kind


def _facts(opt: dict) -> str:
    """The one line under a variable's heading: type, default or required, choices, no_log."""
    parts = [f"Type: {_code(_type_of(opt))}"]
    if opt.get("required"):
        parts.append("required")
    elif "default" in opt:
        parts.append(f"default: {_code(yaml_value(opt['default']))}")
    else:
        parts.append("no default (not set)")
    if opt.get("choices") is not None:
        parts.append("choices: " + ", ".join(_code(yaml_value(c)) for c in opt["choices"]))
    if opt.get("no_log"):
        parts.append("secret (never logged)")
    return "; ".join(parts) + "."


def _suboptions(options: dict, depth: int = 0) -> list[str]:
    """A dict's or list's sub-options, as a nested list under the variable (``name``: facts, meaning)."""
    lines = []
    indent = "  " * depth
    for name, spec in options.items():
        opt = spec or {}
        text = " ".join([_facts(opt), *_paragraphs(opt.get("description"))])
        lines.append(f"{indent}- {_code(name)}: {text}")
        if opt.get("options"):
            lines.extend(_suboptions(opt["options"], depth + 1))
    return lines


def variable_block(name: str, opt: dict) -> list[str]:
    opt = opt or {}
    lines = [VARIABLE_HEADING.format(name), "", _facts(opt), ""]
    for para in _paragraphs(opt.get("description")):
        lines += [para, ""]
    if opt.get("options"):
        lines += ["Sub-options:", "", *_suboptions(opt["options"]), ""]
    return lines


def entry_block(role_fqcn: str, entry: str, spec: dict) -> list[str]:
    spec = spec or {}
    lines = [ENTRY_HEADING.format(entry), ""]
    call = f"`{role_fqcn}`" if entry == "main" else f"`{role_fqcn}` with `tasks_from: {entry}`"
    short = spec.get("short_description")
    lines += [f"{call}: {markup(short)}." if short else f"{call}.", ""]
    for para in _paragraphs(spec.get("description")):
        lines += [para, ""]
    options = spec.get("options") or {}
    if not options:
        lines += ["This entry point has no variables.", ""]
    for name, opt in options.items():
        lines += variable_block(name, opt)
    return lines


def collection_fqcn() -> str:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    return f"{galaxy['namespace']}.{galaxy['name']}"


def load_specs(role_dir: Path) -> dict:
    path = role_dir / "meta" / "argument_specs.yml"
    if not path.is_file():
        raise ReadmeError(f"{path}: missing (every role documents its entry points there)")
    data = yaml.safe_load(path.read_text()) or {}
    specs = data.get("argument_specs")
    if not isinstance(specs, dict) or not specs:
        raise ReadmeError(f"{path}: no argument_specs")
    return specs


def generate(role_dir: Path, fqcn: str | None = None) -> str:
    """The generated section (without the markers) for one role."""
    fqcn = fqcn or collection_fqcn()
    specs = load_specs(role_dir)
    role_fqcn = f"{fqcn}.{role_dir.name}"
    entries = ", ".join(f"`{e}`" for e in specs)
    lines = [
        f"Every variable of every entry point ({entries}), as `meta/argument_specs.yml` declares it; "
        "`defaults/main.yml` holds the same defaults. The role checks these types and choices before any "
        "task runs.",
        "",
    ]
    for entry, spec in specs.items():
        lines += entry_block(role_fqcn, entry, spec)
    return "\n".join(lines).rstrip("\n")


def split_readme(text: str, path: Path) -> tuple[str, str, str]:
    """README text -> (before the BEGIN marker line, generated section, from the END marker line on)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ReadmeError(f"{path}: needs exactly one pair of markers around the variables:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    return head + BEGIN + "\n", body.strip("\n"), "\n" + END + tail


def _blocks(section: str) -> tuple[list[str], dict[str, tuple[list[str], dict[str, list[str]]]]]:
    """A generated section -> (its preamble, {entry: (entry preamble, {variable: lines})}), in order."""
    preamble: list[str] = []
    entries: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    current: list[str] = preamble
    entry = None
    for line in section.split("\n"):
        if m := _ENTRY_RE.match(line):
            entry = m.group(1)
            entries[entry] = ([line], {})
            current = entries[entry][0]
        elif (m := _VARIABLE_RE.match(line)) and entry is not None:
            current = entries[entry][1].setdefault(m.group(1), [])
            current.append(line)
        else:
            current.append(line)
    # the blank lines between blocks belong to no block (the last block of a section has none after it)
    for lines in [
        preamble,
        *(head for head, _vars in entries.values()),
        *(block for _head, blocks in entries.values() for block in blocks.values()),
    ]:
        while lines and not lines[-1].strip():
            lines.pop()
    return preamble, entries


def _first_difference(have: list[str], want: list[str]) -> str:
    for line in difflib.unified_diff(have, want, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        return ("README has " if line.startswith("-") else "argument_specs gives ") + repr(line[1:].strip())
    return "blank lines differ"


def compare(role: str, have: str, want: str) -> list[Problem]:
    """Problems naming each entry point and variable whose README text differs from the generated one."""
    if have == want:
        return []
    problems = []
    have_pre, have_entries = _blocks(have)
    want_pre, want_entries = _blocks(want)
    if have_pre != want_pre:
        problems.append(
            Problem(role, "variables section", "the introduction differs: " + _first_difference(have_pre, want_pre))
        )
    for entry, (want_head, want_vars) in want_entries.items():
        if entry not in have_entries:
            problems.append(Problem(role, f"entry point {entry}", "missing from README.md"))
            continue
        have_head, have_vars = have_entries[entry]
        found = len(problems)
        if have_head != want_head:
            problems.append(
                Problem(role, f"entry point {entry}", "description differs: " + _first_difference(have_head, want_head))
            )
        for name, lines in want_vars.items():
            if name not in have_vars:
                problems.append(Problem(role, f"entry point {entry}, variable {name}", "missing from README.md"))
            elif have_vars[name] != lines:
                problems.append(
                    Problem(
                        role,
                        f"entry point {entry}, variable {name}",
                        "differs from meta/argument_specs.yml: " + _first_difference(have_vars[name], lines),
                    )
                )
        for name in have_vars:
            if name not in want_vars:
                problems.append(
                    Problem(
                        role, f"entry point {entry}, variable {name}", "in README.md but not in meta/argument_specs.yml"
                    )
                )
        if len(problems) == found and list(have_vars) != list(want_vars):
            problems.append(Problem(role, f"entry point {entry}", "variables are not in the order of the specs"))
    for entry in have_entries:
        if entry not in want_entries:
            problems.append(Problem(role, f"entry point {entry}", "in README.md but not in meta/argument_specs.yml"))
    if not problems:
        problems.append(Problem(role, "variables section", "differs from the generated text (order or spacing)"))
    return problems


def check_defaults(role: str, role_dir: Path, specs: dict) -> list[Problem]:
    """defaults/main.yml against the specs: every default equal, no public default without a spec."""
    path = role_dir / "defaults" / "main.yml"
    defaults = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    problems = []
    declared = set()
    for entry, spec in specs.items():
        for name, opt in ((spec or {}).get("options") or {}).items():
            declared.add(name)
            if opt and "default" in opt:
                if name not in defaults:
                    problems.append(
                        Problem(
                            role,
                            f"entry point {entry}, variable {name}",
                            f"has a default in the specs but none in defaults/main.yml ({opt['default']!r})",
                        )
                    )
                elif defaults[name] != opt["default"]:
                    problems.append(
                        Problem(
                            role,
                            f"entry point {entry}, variable {name}",
                            f"default {opt['default']!r} in the specs, {defaults[name]!r} in defaults/main.yml",
                        )
                    )
    for name in defaults:
        if name not in declared and not name.startswith("_"):
            problems.append(Problem(role, f"variable {name}", "in defaults/main.yml but in no entry point's specs"))
    return problems


def check_sections(role: str, text: str) -> list[Problem]:
    headings = {line[3:].strip() for line in text.split("\n") if line.startswith("## ")}
    return [
        Problem(role, f"section {name!r}", "missing from README.md (a level-2 heading)")
        for name in REQUIRED_SECTIONS
        if name not in headings
    ]


def check_role(role_dir: Path, fqcn: str | None = None) -> list[Problem]:
    role = role_dir.name
    readme = role_dir / "README.md"
    if not readme.is_file():
        return [
            Problem(
                role,
                "README.md",
                f"missing; write one with the sections {', '.join(REQUIRED_SECTIONS)} and the markers {BEGIN} / {END}",
            )
        ]
    text = readme.read_text()
    specs = load_specs(role_dir)
    problems = check_sections(role, text)
    try:
        _head, body, _tail = split_readme(text, readme)
    except ReadmeError as e:
        return [*problems, Problem(role, "README.md", str(e))]
    problems += compare(role, body, generate(role_dir, fqcn))
    problems += check_defaults(role, role_dir, specs)
    return problems


def update_role(role_dir: Path, fqcn: str | None = None) -> bool:
    """Rewrite the generated section of one role's README; True when the file changed."""
    readme = role_dir / "README.md"
    if not readme.is_file():
        raise ReadmeError(
            f"{readme}: missing; write the prose and put the markers where the variables go:\n{BEGIN}\n{END}"
        )
    text = readme.read_text()
    head, _body, tail = split_readme(text, readme)
    new = head + generate(role_dir, fqcn) + tail
    if new != text:
        readme.write_text(new)
        return True
    return False


def role_dirs(roles_root: Path, names: list[str]) -> list[Path]:
    if names:
        dirs = [roles_root / n for n in names]
        for d in dirs:
            if not d.is_dir():
                raise ReadmeError(f"{d}: no such role")
        return dirs
    return sorted(d for d in roles_root.iterdir() if (d / "meta").is_dir() or (d / "tasks").is_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="change nothing; fail when a README differs")
    parser.add_argument("--roles-dir", type=Path, default=REPO / "roles", help="default: the collection's roles/")
    parser.add_argument("roles", nargs="*", help="role names (default: every role)")
    args = parser.parse_args(argv)
    try:
        dirs = role_dirs(args.roles_dir, args.roles)
        fqcn = collection_fqcn()
        if args.check:
            problems = [p for d in dirs for p in check_role(d, fqcn)]
            for p in problems:
                print(p, file=sys.stderr)
            if problems:
                print("run python hack/role_readme.py to regenerate the variables sections", file=sys.stderr)
                return 1
            print(f"{len(dirs)} role README(s) match their argument_specs")
            return 0
        for d in dirs:
            if update_role(d, fqcn):
                print(f"{d / 'README.md'}: variables section rewritten")
            problems = check_defaults(d.name, d, load_specs(d)) + check_sections(d.name, (d / "README.md").read_text())
            for p in problems:
                print(p, file=sys.stderr)
            if problems:
                return 1
    except ReadmeError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
