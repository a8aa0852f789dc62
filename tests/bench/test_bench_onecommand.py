"""The bench's one-command section and the bare-engine rows (the overhead our paths add over the bare engine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_measures_one_command_and_the_bare_engine(tiny_model, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "unifer", "bench", "cpu", "--model", str(tiny_model), "--out", str(out), "--sections",
         "inference,onecommand", "--engines", "hf,bare", "--batch-sizes", "4", "--items", "8",
         "--max-new-tokens", "4", "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    names = [v["name"] for v in report["inference"]["variants"]]
    assert names == ["hf engine, batch 4", "bare generate loop, batch 4"], names
    assert all("error" not in v for v in report["inference"]["variants"])
    (over,) = report["inference"]["overheads"]
    assert over["same_answers"] is True  # the bare loop and ours send the same request
    assert over["generation"] > 0 and over["whole_process"] > 0
    one = report["onecommand"]
    assert one["items"] == 8 and sum(one["per_set"].values()) == 8
    (row,) = one["rows"]
    assert row["engine"] == "hf" and row["byte_identical"] is True
    assert row["one_process_s"] > 0 and row["four_processes_s"] > 0
    md = (out / "bench.md").read_text()
    assert "FERBench in one command" in md and "× bare (generation)" in md
