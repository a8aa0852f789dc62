"""RLVR ground truth: the data check and the reward agree on it (the first ``<answer>…</answer>`` of a solution,
whatever surrounds it, else the whole text), every record the paper's trainer accepts loads, and ``data check``
warns about the records the reward can never pay for an answered label."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest

from unifer.cli import main as unifer_main
from unifer.data.records import load_records, solution_label
from unifer.data.sets import get_set
from unifer.errors import run_cli
from unifer.rewards import accuracy_reward

FERPLUS = get_set("ferplus")

#: solution → the ground truth the paper's reward compares with.
SOLUTIONS = {
    "<answer>happy</answer>": "happy",
    "sad": "sad",
    "The answer is <answer> fear </answer>.": "fear",
    "<think>x</think>\n<answer>neutral\n</answer> trailing": "neutral",
    "<answer>angry</answer><answer>sad</answer>": "angry",
    "<answer>surprise": "<answer>surprise",
    "<answer></answer>": "",
    "   ": "",
}


@pytest.mark.parametrize("solution,truth", SOLUTIONS.items())
def test_the_reward_pays_exactly_an_answer_equal_to_the_ground_truth(solution, truth):
    assert solution_label(solution) == truth
    answered = f"<think>I look.</think><answer>{truth}</answer>"
    other = "<think>I look.</think><answer>contempt</answer>"
    assert accuracy_reward([answered, other], [solution, solution]) == [1.0, 0.0]


def test_every_solution_loads_and_check_warns_about_those_that_cannot_score(tmp_path):
    solutions = list(SOLUTIONS) + ["happiness"]  # the last: RAF-DB's label, not among FERPlus's candidates
    records = [{"image_path": f"/FERPlus/train/fer{i:07d}.png", "problem": FERPLUS.prompt, "solution": s}
               for i, s in enumerate(solutions)]
    path = tmp_path / "rlvr.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert load_records(path, "rlvr") == records  # what the paper trains on, we train on

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = run_cli(unifer_main, ["data", "check", str(path), "--kind", "rlvr", "--no-progress"])
    out = out.getvalue()
    assert rc == 0, err.getvalue()
    assert "warnings: 4" in out
    assert ("record 5, field 'solution': no closed <answer></answer> block, so the ground truth is the whole "
            "solution '<answer>surprise'") in out
    assert "record 6, field 'solution': empty ground truth: the reward can pay only an empty answer" in out
    assert "record 7, field 'solution': empty ground truth" in out
    assert "record 8, field 'solution': label 'happiness' is not among the candidates the problem lists" in out
    for i in range(5):  # text around the block, two blocks, a bare label: nothing to warn about
        assert f"record {i}," not in out
