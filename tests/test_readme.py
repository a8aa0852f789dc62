"""The README is the front page: short, with the two commands CI and a newcomer run and the map of the docs. The
"What happens when…" table (docs/reliability.md) names real tests: every `file::test_name` in its "shown by" column
is a test function of that file (``::test_name`` alone is in the file named before it in the same cell)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO

TESTS = REPO / "tests"
REFERENCE = re.compile(r"`((?:(?:\w+/)*test_\w+\.py)?)::(test_\w+)(?:\[([^\]]+)\])?`")


RELIABILITY = REPO / "docs" / "reliability.md"


def table_rows(readme: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """For each row of the table (by its "when…" cell): (file, test function, parameter id or None) it names."""
    section = readme.split("\n## What happens when…\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for row in section.splitlines():
        if not row.startswith("|") or row.startswith(("| when…", "|---")):
            continue
        shown_by = row.rstrip().rstrip("|").rsplit("|", 1)[1]
        file, named = None, []
        for m in REFERENCE.finditer(shown_by):
            file = m.group(1) or file
            assert file, f"'::{m.group(2)}' names no file before it: {row}"
            named.append((file, m.group(2), m.group(3)))
        rows[row.split("|")[1].strip()] = named
    return rows


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test_")}


def test_every_row_of_what_happens_when_names_existing_tests():
    rows = table_rows(RELIABILITY.read_text(encoding="utf-8"))
    assert len(rows) >= 20, "the table went missing"
    problems = [f"row '{when}' names no test" for when, named in rows.items() if not named]
    for file, name, param in sorted({ref for named in rows.values() for ref in named}, key=str):
        path = TESTS / file
        if not path.is_file():
            problems.append(f"{file}: no such test file")
        elif name not in defined_tests(path):
            problems.append(f"{file}::{name}: no such test")
        elif param is not None and param not in path.read_text(encoding="utf-8"):
            problems.append(f"{file}::{name}[{param}]: no such parameter id in the file")
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_page_with_the_two_commands_and_the_map():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160, "the README is the front page: move the detail into docs/"
    fenced = "\n".join(readme.split("```")[1::2])
    for command in ("make demo", "make test"):          # .ci/run runs `make test`; the Makefile defines both
        assert re.search(rf"^{command}\b", fenced, re.MULTILINE), f"the README shows no '{command}'"
        assert re.search(rf"^{command.split()[1]}:", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert "\n## Docs map\n" in readme
    for page in ("paper-workflow", "fidelity", "reliability", "performance"):
        assert f"](docs/{page}.md)" in readme, f"the map does not link docs/{page}.md"
