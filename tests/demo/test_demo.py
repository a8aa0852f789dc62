"""`make demo FAST=1`: the whole pipeline through the user's commands, on the tiny model and real photos."""
import json
import subprocess
import sys

import pytest

from unifer.demo.cli import format_table


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_fast_demo_end_to_end_then_reuses(tmp_path, photos):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "unifer", "demo", "--fast", "--work-dir", str(work)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1400)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary = json.loads((work / "summary.json").read_text())["summary"]
    # The learning signal the cold start exists for: the random base model never closes an <answer> tag ...
    assert summary["base"]["total"]["answer_tag"] <= 0.1
    # ... the SFT model nearly always does, and the strict protocol (exact label in the tag) finds its answers.
    assert summary["sft"]["total"]["answer_tag"] >= 0.9
    assert summary["sft"]["total"]["strict"] > 0
    # ... and GRPO keeps that format (a run that lost it would print answers the strict protocol cannot read).
    assert summary["grpo"]["total"]["answer_tag"] >= 0.8
    for key in ("rafdb", "ferplus", "affectnet", "sfew_2.0", "total"):
        for tag in ("base", "sft", "grpo"):
            assert 0.0 <= summary[tag][key]["paper"] <= 1.0
    assert (work / "training_curves.png").stat().st_size > 10_000
    assert (work / "results" / "grpo" / "rafdb_confusion.png").is_file() or list((work / "results" / "grpo").glob("*.png"))
    assert "FERBench (mini, real photos)" in first.stdout and "| + GRPO |" in first.stdout
    # Idempotent: the second run rebuilds nothing.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    for what in ("tiny model: reusing", "mini FERBench + CoT/RLVR: reusing", "SFT: reusing", "GRPO: reusing"):
        assert what in second.stdout
    assert "run_sft_fer.sh" not in second.stdout


def test_table_lists_every_set_and_both_protocols():
    row = {k: {"paper": 0.5, "strict": 0.25} for k in ("rafdb", "ferplus", "affectnet", "sfew_2.0", "total")}
    row["total"]["answer_tag"] = 1.0
    table = format_table({"base": row, "sft": row})
    assert table.splitlines()[0].startswith("| model | RAF-DB | FERPlus | AffectNet | SFEW 2.0 | Total (pooled) |")
    assert "| + cold-start SFT | 50.0 / 25.0 |" in table and "| + GRPO |" not in table
