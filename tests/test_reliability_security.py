"""Reliability, security hygiene: no `shell=True`, `eval`, remote code by default or unsafe `torch.load`; the
scripts pass arguments whole; importing every module works offline and opens no connection."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import PY, REPO, run


def _python_sources() -> list[Path]:
    files = sorted((REPO / "unifer").rglob("*.py")) + sorted(REPO.glob("eval_*/code/*.py"))
    return files + sorted((REPO / "train_unifer").rglob("*.py"))


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_shell_true_no_remote_code_by_default_no_unsafe_torch_load():
    problems = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
                    problems.append(f"{where}: shell={ast.unparse(kw['shell'])}")
                if _is_true(kw.get("trust_remote_code")):
                    problems.append(f"{where}: trust_remote_code=True")
                func = ast.unparse(node.func)
                if func == "torch.load" and not _is_true(kw.get("weights_only")):
                    problems.append(f"{where}: torch.load without weights_only=True")
                if func in ("os.system", "os.popen", "eval", "exec"):
                    problems.append(f"{where}: {func}()")
                args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if any("trust_remote_code" in a or "trust-remote-code" in a for a in args) and \
                        _is_true(kw.get("default")):
                    problems.append(f"{where}: a trust_remote_code flag defaulting to True")
            elif isinstance(node, (ast.AnnAssign, ast.Assign)):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                names = [ast.unparse(t) for t in targets]
                if any(n.split(".")[-1] == "trust_remote_code" for n in names) and _is_true(node.value):
                    problems.append(f"{where}: trust_remote_code defaults to True")
    assert not problems, "\n".join(problems)


def test_shell_scripts_pass_arguments_whole():
    problems = []
    for path in sorted((REPO / "train_unifer").rglob("*.sh")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split(" #", 1)[0]
            if code.lstrip().startswith("#"):
                continue
            for m in re.finditer(r"\$[@*]|\$\{[@*]\}|\$\{\w+\[[@*]\][^}]*\}", code):
                if code[m.start() - 1: m.start()] != '"':  # "$@", "${args[@]}": each argument stays whole
                    problems.append(f"{path.name}:{n}: unquoted list expansion {m.group()}: {line.strip()}")
            if re.search(r"\beval\b", code) or "trust_remote_code true" in code.lower():
                problems.append(f"{path.name}:{n}: {line.strip()}")
    assert not problems, "\n".join(problems)


GUARD = r"""
import importlib, pkgutil, socket, sys
attempts = []
def refuse(what):
    def blocked(*args, **kwargs):
        attempts.append((what, repr(args)[:120]))
        raise OSError("network access during import: " + what)
    return blocked
real_connect = socket.socket.connect
def connect(self, address):
    if self.family == socket.AF_UNIX:
        return real_connect(self, address)
    return refuse("connect")(address)
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: refuse("connect_ex")(address)
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
socket.gethostbyname = refuse("gethostbyname")
import unifer
names = sorted(m.name for m in pkgutil.walk_packages(unifer.__path__, "unifer."))
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names), "modules")
print("failed:", failed)
print("attempts:", attempts)
"""


def test_importing_every_module_works_offline_and_opens_no_connection():
    res = run([PY, "-c", GUARD], timeout=300, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    assert res.returncode == 0, res.stderr[-3000:]
    count = int(res.stdout.split(" modules")[0].split()[-1])
    assert count >= 25, res.stdout
    assert "failed: []" in res.stdout and "attempts: []" in res.stdout, res.stdout
