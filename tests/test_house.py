"""The house: imports only point down the data flow, no cycles, no private helpers across modules, small modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "unifer"

#: The data flow, upstream first. A module may import from its own layer's package or from a layer above it.
LAYERS = [
    {"unifer", "unifer.errors"},
    {"unifer.data"},
    {"unifer.models"},
    {"unifer.rewards", "unifer.scoring", "unifer.infer"},
    {"unifer.train", "unifer.pipeline", "unifer.distill", "unifer.judge"},
    {"unifer.bench", "unifer.demo", "unifer.report", "unifer.predict", "unifer.leaderboard"},
    {"unifer.cli", "unifer.__main__"},
]
#: Packages of one layer that stay apart: training takes its model rules from unifer.models, not from inference;
#: inference and scoring meet only in unifer.pipeline.
APART = [("unifer.train", "unifer.infer"), ("unifer.infer", "unifer.scoring"), ("unifer.scoring", "unifer.infer")]
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of the package, at any depth of the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unifer"):
            assert node.level == 0, f"{path}: relative import (the house uses absolute imports)"
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("unifer")]
    return out


def _unit(module: str) -> str:
    """The package a module belongs to in the flow: unifer.data.sets → unifer.data, unifer.rewards → itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _layer(module: str) -> int:
    unit = _unit(module)
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{module}: its package {unit} has no place in the data flow (tests/test_house.py LAYERS)")


def test_every_module_has_a_place_in_the_flow():
    for name in MODULES:
        _layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_flow_and_take_no_private_names(name):
    for imported, names in _imports(MODULES[name]):
        if imported == "unifer":  # `from unifer import __version__`
            continue
        assert _layer(imported) <= _layer(name), f"{name} imports {imported}, which is downstream of it"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name} imports private {private} from {imported}"


@pytest.mark.parametrize("importer,imported", APART)
def test_packages_that_stay_apart_import_nothing_of_each_other(importer, imported):
    for name, path in MODULES.items():
        if _unit(name) == importer:
            taken = [m for m, _ in _imports(path) if _unit(m) == imported]
            assert not taken, f"{name} imports {taken}: {importer} must not import {imported}"


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for imported, _ in _imports(path):
            a, b = _unit(name), _unit(imported)
            if a != b and imported != "unifer":
                graph.setdefault(a, set()).add(b)
    seen, stack = set(), []

    def visit(node):
        assert node not in stack, "import cycle: " + " → ".join(stack[stack.index(node):] + [node])
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def test_no_import_cycle_between_modules():
    graph = {name: {m for m, _ in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " → ".join(trail[trail.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    n = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines; split it along a line the data draws"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_argparse_lives_only_in_command_modules(name):
    """A module that builds a parser is a command: the `unifer` command (or a process the library starts) runs it."""
    text = MODULES[name].read_text(encoding="utf-8")
    if "argparse" not in text:
        return
    tree = ast.parse(text)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    from unifer.cli import COMMANDS

    commands = {module for module, _ in COMMANDS.values()}
    workers = {"unifer.train.sft", "unifer.train.grpo", "unifer.bench.infer_worker",
               "unifer.bench.train", "unifer.scoring.cli", "unifer.cli"}
    assert name in commands | workers or "add_arguments" in functions, (
        f"{name} uses argparse but is no command (add it to unifer/cli.py COMMANDS) and adds no arguments")
    if name in commands:
        assert {"add_arguments", "run"} <= functions, f"{name} must offer add_arguments(parser) and run(args)"


def test_ruff_lint_and_import_order_pass():
    """`ruff check .` (pyproject.toml [tool.ruff]; the version .ci/env pins) finds nothing."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (make test installs it)")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
