"""`make demo FAST=1`: the whole pipeline through the user's commands, on the tiny model and real photos."""
import json
import subprocess
import sys

import pytest

from unifer.demo.cli import GRPO_STEPS, Demo, format_table, grpo_signal

#: The demo's GRPO run must show groups with reward variance and a rising mean reward ...
MIN_VARIED_GROUPS = 0.6
#: ... by at least this much from its first steps to its last, which the same run at learning rate 0 misses.
MIN_REWARD_RISE = 0.25


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory, photos):
    """One fresh fast demo per module: (work dir, its command, the first run's result)."""
    work = tmp_path_factory.mktemp("fast-demo") / "demo"
    cmd = [sys.executable, "-m", "unifer", "demo", "--fast", "--work-dir", str(work)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1400)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return work, cmd, first


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_fast_demo_end_to_end_then_reuses(fast_demo):
    work, cmd, first = fast_demo
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
    assert "| GRPO reward (mean over" in first.stdout and "Groups with reward variance" in first.stdout
    # Idempotent: the second run rebuilds nothing.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    for what in ("tiny model: reusing", "mini FERBench + CoT/RLVR: reusing", "SFT: reusing", "GRPO: reusing"):
        assert what in second.stdout
    assert "run_sft_fer.sh" not in second.stdout


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_grpo_learns_where_a_zero_learning_rate_does_not(fast_demo, tmp_path):
    """GRPO's stage learns: most groups have reward variance (non-zero advantages) and the mean reward rises from
    the first steps to the last. The control, the same run from the same SFT model at learning rate 0 (same seed,
    same samples at step 1), shows the rise is the policy's doing, not the prompts' order. At learning rate 0 the
    policy stays the reference model, so the KL term is exactly 0: the control skips the reference forward pass
    (``--beta 0``), with the same samples and rewards."""
    work = fast_demo[0]
    learned = grpo_signal(work / "models" / "grpo" / "trainer_state.json")
    assert learned["steps"] == GRPO_STEPS
    assert learned["varied_groups"] >= MIN_VARIED_GROUPS, learned
    rise = learned["reward"]["last"] - learned["reward"]["first"]
    demo = Demo(work, fast=True, figs=None, sft_steps=0, grpo_steps=GRPO_STEPS)
    control_dir = demo.grpo(work / "models" / "sft", demo.datasets(), out=tmp_path / "grpo-lr0",
                            learning_rate=0.0, beta=0.0)
    control = grpo_signal(control_dir / "trainer_state.json")
    control_rise = control["reward"]["last"] - control["reward"]["first"]
    assert rise >= MIN_REWARD_RISE > control_rise, (learned, control)


def test_grpo_signal_compares_the_halves_of_the_run(tmp_path):
    rewards = [0.0, 0.5, 1.0, 1.5]
    log = [{"step": i + 1, "reward": r, "rewards/format_reward/mean": r / 2, "rewards/accuracy_reward/mean": r / 2,
            "frac_reward_zero_std": 0.5 if i == 0 else 0.0} for i, r in enumerate(rewards)]
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": [*log, {"step": 4, "train_loss": 0.1}]}))
    sig = grpo_signal(state)
    assert sig["steps"] == 4 and sig["k"] == 2
    assert sig["reward"] == {"first": 0.25, "last": 1.25} and sig["format"]["last"] == 0.625
    assert sig["varied_groups"] == 0.875


def test_table_lists_every_set_and_both_protocols():
    row = {k: {"paper": 0.5, "strict": 0.25} for k in ("rafdb", "ferplus", "affectnet", "sfew_2.0", "total")}
    row["total"]["answer_tag"] = 1.0
    table = format_table({"base": row, "sft": row})
    assert table.splitlines()[0].startswith("| model | RAF-DB | FERPlus | AffectNet | SFEW 2.0 | Total (pooled) |")
    assert "| + cold-start SFT | 50.0 / 25.0 |" in table and "| + GRPO |" not in table
