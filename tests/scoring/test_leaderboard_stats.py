"""The leaderboard's intervals, its Holm-corrected marks of runs not significantly worse than the best, its power."""
from __future__ import annotations

import json
import random

import pytest
from helpers import answer, dump, in_process, results_record

from unifer.cli import main
from unifer.data.sets import SETS
from unifer.scoring.leaderboard_stats import holm


def test_holm_by_hand_and_against_statsmodels():
    ps = [0.01, 0.04, 0.03, 0.5]
    # sorted: 0.01·4 = 0.04, 0.03·3 = 0.09, 0.04·2 = 0.08 → 0.09 (monotone), 0.5·1 = 0.5
    assert holm(ps) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3]) == [0.3] and holm([]) == []
    mt = pytest.importorskip("statsmodels.stats.multitest")
    rng = random.Random(0)
    for _ in range(20):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 7))]
        assert holm(p) == pytest.approx(list(mt.multipletests(p, method="holm")[1]))


def _write_runs(root, spec, n=150):
    for run, acc, seed in spec:
        rng = random.Random(seed)
        for key, s in SETS.items():
            items = random.Random(11)
            recs = []
            for i in range(n):
                truth = items.choice(s.labels)
                resp = answer(truth) if rng.random() < acc else answer(rng.choice(s.labels))
                recs.append(results_record(s, f"/{key}/{i}.jpg", truth, resp))
            folder = root / f"eval_{key}" / "results"
            folder.mkdir(parents=True, exist_ok=True)
            dump(folder / f"{key}_{run}_results.json", recs, indent=None)
            (folder / f"{key}_{run}_metrics.json").write_text("{}")


def test_marks_and_power_under_the_table(tmp_path):
    _write_runs(tmp_path, [("best", 0.8, 1), ("close", 0.78, 2), ("poor", 0.3, 3)])
    out = tmp_path / "board"
    rc, text, err = in_process(main, "leaderboard", "--root", tmp_path, "--out", out, "--no-figs")
    assert rc == 0, err
    rows = {r["run"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert rows["best"]["pooled_best"] and rows["close"]["pooled_best"] and not rows["poor"]["pooled_best"]
    assert rows["poor"]["pooled_holm_p"] < 1e-6 <= rows["close"]["pooled_holm_p"]
    lo, hi = rows["best"]["pooled_paper_ci95"]
    assert lo < rows["best"]["pooled_paper"] < hi
    assert rows["best"]["pooled_uar_paper_ci95"][0] < rows["best"]["pooled_uar_paper"]
    md = (out / "leaderboard.md").read_text()
    poor_line = next(line for line in md.splitlines() if "`poor`" in line)
    assert "**" not in poor_line
    assert "SFEW 2.0" in md and "points (150 items" in md and "80% power" in md


def test_ranked_bars_draw_the_intervals(tmp_path):
    import numpy as np
    from PIL import Image

    from unifer.scoring.plots import ranked_bars

    rows = [{"run": "a", "pooled_paper": 0.6, "pooled_strict": 0.5}, {"run": "b", "pooled_paper": 0.4,
                                                                          "pooled_strict": 0.3}]

    def dark(png):  # the error bars' dark grey (and the text's black)
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
        return int((rgb.max(axis=2) < 110).sum())

    plain = dark(ranked_bars(rows, tmp_path / "plain.png"))
    for r in rows:
        for proto in ("paper", "strict"):
            v = r[f"pooled_{proto}"]
            r[f"pooled_{proto}_ci95"] = [v - 0.1, v + 0.1]
    assert dark(ranked_bars(rows, tmp_path / "ci.png")) > plain + 300  # four bars ~20 points long
