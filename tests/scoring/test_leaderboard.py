"""``unifer leaderboard`` (issue 14): several runs side by side in eval_<set>/results/, scored with ``--run``,
gathered into one table (Markdown, CSV) with the numbers each run was built to have, and drawn."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifer.cli import main as unifer_main
from unifer.data.runmeta import write_meta
from unifer.data.sets import REPO_ROOT, SET_KEYS, get_set
from unifer.errors import UniferError
from unifer.scoring.cli import run_set

ITEMS = 8  # per set


def responses(kind: str, labels, truths) -> list[str]:
    """alpha: 6 of 8 right, always tagged; beta: 3 right tagged, 2 right untagged (the paper counts them, strict
    does not), 3 wrong tagged."""
    out = []
    for n, t in enumerate(truths):
        wrong = next(label for label in labels if label != t)
        if kind == "alpha":
            out.append(f"<think>the mouth</think><answer>{t if n < 6 else wrong}</answer>")
        elif n < 3:
            out.append(f"<think>eyes</think><answer>{t}</answer>")
        elif n < 5:
            out.append(f"The expression is {t}.")
        else:
            out.append(f"<think>eyes</think><answer>{wrong}</answer>")
    return out


def write_run(root: Path, run: str, kind: str, sets=SET_KEYS, score=True) -> None:
    for key in sets:
        s = get_set(key)
        truths = [s.labels[n % len(s.labels)] for n in range(ITEMS)]
        records = [{"image_path": f"/{key}/{n}.jpg", "true_label": t, "prompt": s.prompt,
                    "candidate_labels": list(s.labels), "model_response": r}
                   for n, (t, r) in enumerate(zip(truths, responses(kind, s.labels, truths)))]
        folder = root / f"eval_{key}" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        results = folder / f"{key}_{run}_results.json"
        results.write_text(json.dumps(records), encoding="utf-8")
        if score:
            assert run_set(key, ["--results", str(results), "--output", str(folder / f"{key}_{run}_metrics.json"),
                                 "--no-figs"]) == 0


@pytest.fixture
def runs(tmp_path, capsys) -> Path:
    root = tmp_path / "checkout"
    write_run(root, "alpha", "alpha")
    write_run(root, "beta", "beta")
    write_run(root, "gamma", "alpha", sets=("rafdb", "ferplus"))
    write_run(root, "unscored", "alpha", score=False)
    write_meta(root / "eval_rafdb" / "results" / "rafdb_alpha_results.json",
               {"run": "alpha", "display_name": "Alpha-VL 7B", "engine": "vllm", "model_id": "org/alpha-vl",
                "image_size": 224})
    capsys.readouterr()
    return root


def _colour_pixels(png: Path, hex_colour: str) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).sum(axis=2) < 12).sum())


def test_leaderboard_ranks_the_scored_runs_with_their_numbers_and_draws_them(runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert unifer_main(["leaderboard", "--root", str(runs), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert [r["run"] for r in rows] == ["alpha", "beta", "gamma"], "ranked by pooled accuracy; unscored left out"
    alpha, beta, gamma = rows
    for proto, a, b in (("paper", 6 / 8, 5 / 8), ("strict", 6 / 8, 3 / 8)):
        assert float(alpha[f"pooled_{proto}"]) == pytest.approx(a) and float(alpha[f"mean_{proto}"]) == pytest.approx(a)
        assert float(beta[f"pooled_{proto}"]) == pytest.approx(b) and float(beta[f"mean_{proto}"]) == pytest.approx(b)
        for key in SET_KEYS:
            assert float(beta[f"{key}_{proto}"]) == pytest.approx(b)
    assert float(alpha["answer_share"]) == 1.0 and float(beta["answer_share"]) == pytest.approx(6 / 8)
    assert 0 < float(beta["pooled_f1_paper"]) <= 1
    assert (alpha["rank"], beta["rank"], gamma["rank"]) == ("1", "2", "")
    assert gamma["sets"] == "2" and gamma["pooled_paper"] == "" and float(gamma["rafdb_paper"]) == 0.75
    assert (alpha["model"], alpha["engine"], alpha["model_id"]) == ("Alpha-VL 7B", "vllm", "org/alpha-vl")

    md = (out / "leaderboard.md").read_text()
    # paper [95% interval] / strict; bold: the best run and those not significantly worse
    assert "| 1 | Alpha-VL 7B | `alpha` | vllm | **75.0** [40.9, 92.9] / 75.0 |" in md
    assert "| 2 | beta | `beta` | – | **62.5** [30.6, 86.3] / 37.5 |" in md and "| 75% |" in md
    assert "Holm-corrected" in md and "80% power" in md
    assert md in capsys.readouterr().out
    board = json.loads((out / "leaderboard.json").read_text())["rows"]
    # pooled: 4 items only alpha got right, none only beta: McNemar p = 2 / 2**4, one comparison (Holm: itself)
    assert board[0]["pooled_best"] is True and board[1]["pooled_holm_p"] == pytest.approx(2 / 2 ** 4)

    # The figures: a runs × sets heatmap, one row per run, and the ranking with a bar per protocol and run.
    heat, ranked = out / "leaderboard_heatmap.png", out / "leaderboard_ranked.png"
    three_rows = Image.open(heat).size[1]
    paper, strict = _colour_pixels(ranked, "#3b6ea8"), _colour_pixels(ranked, "#e59a3a")
    assert strict > 0 and paper > 1.2 * strict, "paper bars: 75 + 62.5; strict bars: 75 + 37.5"
    assert unifer_main(["leaderboard", "--root", str(runs), "--out", str(out), "--runs", "alpha"]) == 0
    assert Image.open(heat).size[1] < three_rows
    assert _colour_pixels(ranked, "#3b6ea8") == pytest.approx(_colour_pixels(ranked, "#e59a3a"), rel=0.05)

    assert unifer_main(["leaderboard", "--root", str(runs), "--out", str(out), "--include-unscored",
                        "--no-figs", "--no-ci"]) == 0
    assert "| 1 | Alpha-VL 7B | `alpha` | vllm | 75.0 / 75.0 |" in (out / "leaderboard.md").read_text()
    assert "unscored" in (out / "leaderboard.csv").read_text()
    with pytest.raises(UniferError, match="no scored results for run.s. nope"):
        unifer_main(["leaderboard", "--root", str(runs), "--out", str(out), "--runs", "nope"])
    with pytest.raises(UniferError, match="no scored runs under"):
        unifer_main(["leaderboard", "--root", str(tmp_path / "empty"), "--out", str(out)])


def test_scorers_take_the_run_name_for_their_default_paths(runs):
    """eval_<set>/code/eval_unifer.py --run NAME reads <set>_NAME_results.json and writes <set>_NAME_metrics.json
    (the repository root moved to a scratch checkout with UNIFER_HOME)."""
    env = {**os.environ, "UNIFER_HOME": str(runs)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "eval_ferplus" / "code" / "eval_unifer.py"), "--run",
                           "unscored", "--no-figs"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = runs / "eval_ferplus" / "results" / "ferplus_unscored_metrics.json"
    assert json.loads(metrics.read_text())["overall"]["accuracy"] == pytest.approx(0.75)
