"""The `unifer` command: every subcommand listed, each one's flags reachable, the same code as the faces."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PY, REPO, answer, dump, results_record, run

from unifer.cli import COMMANDS

UNIFER = Path(sys.executable).with_name("unifer")


def unifer(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return run([PY, "-m", "unifer", *args], cwd=cwd, timeout=120, clean=False)


def test_help_lists_every_subcommand():
    res = unifer("--help")
    assert res.returncode == 0
    for name in ("ferbench", "data", "infer", "eval", "train", "bench", "demo", "tiny"):
        assert name in COMMANDS and f"    {name}" in res.stdout


@pytest.mark.skipif(not UNIFER.exists(), reason="the console script is installed by make venv (pip install -e .)")
def test_console_script_is_installed():
    res = subprocess.run([str(UNIFER), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("unifer ")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_its_own_help(name):
    res = unifer(name, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: unifer {name}")


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys, contextlib, io\nfrom unifer.cli import main\n"
            "for name in %r:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main([name, '--help'])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))" % (
                [n for n in COMMANDS if n != "train"],))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_unknown_command_and_bad_flags_are_usage_errors():
    res = unifer("nope")
    assert res.returncode == 2 and "invalid choice: 'nope'" in res.stderr
    res = unifer("eval")
    assert res.returncode == 2 and "one of the arguments --set --total is required" in res.stderr
    res = unifer("eval", "--set", "ckplus")
    assert res.returncode == 2 and "invalid choice: 'ckplus'" in res.stderr


def _results(path: Path, key: str, n: int = 12) -> Path:
    from unifer.data.sets import get_set

    s = get_set(key)
    records = [results_record(s, f"{key}/{i}.jpg", s.labels[i % len(s.labels)],
                              answer(s.labels[(i * 3) % len(s.labels)], "x")) for i in range(n)]
    return dump(path, records, indent=None)


def test_unifer_eval_equals_the_eval_scripts(tmp_path):
    results = _results(tmp_path / "r.json", "rafdb")
    via_cli = unifer("eval", "--set", "rafdb", "--results", str(results), "--output", str(tmp_path / "a.json"),
                     "--no-figs")
    assert via_cli.returncode == 0, via_cli.stderr
    face = subprocess.run([sys.executable, str(REPO / "eval_rafdb/code/eval_unifer.py"), "--results", str(results),
                           "--output", str(tmp_path / "b.json"), "--no-figs"], capture_output=True, text=True,
                          timeout=120)
    assert face.returncode == 0, face.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b and a["counts"]["total"] == 12

    paths = {k: _results(tmp_path / f"{k}.json", k) for k in ("rafdb", "ferplus", "affectnet", "sfew_2.0")}
    flags = ["--rafdb", str(paths["rafdb"]), "--ferplus", str(paths["ferplus"]), "--affectnet",
             str(paths["affectnet"]), "--sfew", str(paths["sfew_2.0"]), "--no-figs"]
    total = unifer("eval", "--total", *flags, "--output", str(tmp_path / "t_results.json"))
    assert total.returncode == 0, total.stderr
    assert json.loads((tmp_path / "t_results.json").read_text())["counts"]["total"] == 48
    mixed = unifer("eval", "--total", "--results", str(results))
    assert mixed.returncode == 2 and mixed.stderr.startswith("error: --results names one set's file")


def test_unifer_ferbench_check_and_data_check_run_the_library(tmp_path):
    qa = tmp_path / "qa.json"
    records = json.loads(_results(tmp_path / "x.json", "ferplus").read_text())
    qa.write_text(json.dumps([{k: v for k, v in r.items() if k != "model_response"} for r in records]))
    res = unifer("ferbench", "check", str(qa), "--no-progress")
    assert res.returncode == 0 and "set: FERPlus" in res.stdout and "OK" in res.stdout
    res = unifer("data", "check", str(qa), "--kind", "results", "--no-progress")
    assert res.returncode == 2 and "field 'model_response': missing field" in res.stderr
