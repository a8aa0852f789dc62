"""Figures: real PNGs with the right panels, written atomically, copied into figs/ only when asked."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import answer, dump, results_record
from PIL import Image

from unifer.data.sets import SETS
from unifer.scoring.cli import set_main, total_main
from unifer.scoring.plots import accuracy_bars, confusion_figure

LABELS = ["anger", "fear", "happy"]
MATRIX = [[5, 1, 0], [2, 3, 1], [0, 0, 9]]


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _blue_cells(pixels: np.ndarray) -> int:
    """Pixels of the 'Blues' colour map's dark end: the heat-map cells with the largest values."""
    r, b = pixels[..., 0].astype(int), pixels[..., 2].astype(int)
    return int(((b > 80) & (b - r > 60) & (r < 60)).sum())


def test_confusion_figure_has_two_panels_and_an_unknown_column(tmp_path):
    without = _png(confusion_figure(MATRIX, LABELS, tmp_path / "a.png", "test"))
    with_unknown = _png(confusion_figure(MATRIX, LABELS, tmp_path / "b.png", "test", unknown_per_class=[3, 0, 0]))
    # an extra column makes the figure wider, and both panels carry dark cells (the diagonal)
    assert with_unknown.shape[1] > without.shape[1]
    left, right = without[:, : without.shape[1] // 2], without[:, without.shape[1] // 2:]
    assert _blue_cells(left) > 500 and _blue_cells(right) > 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp files left behind


def test_confusion_figure_of_an_empty_row_draws(tmp_path):
    pixels = _png(confusion_figure([[0, 0], [0, 4]], ["a", "b"], tmp_path / "c.png", "one class empty"))
    assert pixels.std() > 10


def test_accuracy_bars_draw_one_bar_per_row_and_protocol(tmp_path):
    rows = [{"set": s.name, "protocol": p, "accuracy": a} for s, a in zip(SETS.values(), (0.9, 0.8, 0.6, 0.5))
            for p in ("paper", "strict")]
    one = _png(accuracy_bars([r for r in rows if r["protocol"] == "paper"], tmp_path / "one.png", "t"))
    two = _png(accuracy_bars(rows, tmp_path / "two.png", "t", divider_before=2))

    def orange(px):
        return int(((px[..., 0] > 200) & (px[..., 1] > 120) & (px[..., 1] < 180) & (px[..., 2] < 90)).sum())

    assert orange(one) == 0 and orange(two) > 1000  # the strict protocol's bars appear only when given


def test_plots_import_matplotlib_lazily_and_never_pyplot(tmp_path):
    code = (
        "import sys, unifer.scoring.plots, unifer.scoring.aggregate, unifer.scoring.cli\n"
        "assert 'matplotlib' not in sys.modules, 'imported eagerly'\n"
        "unifer.scoring.plots.confusion_figure([[1]], ['a'], sys.argv[1], 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert _png(tmp_path / "x.png").shape[0] > 50


def _results(path: Path, fer_set, n: int = 40) -> Path:
    recs = [results_record(fer_set, f"/x/{i}.jpg", fer_set.labels[i % len(fer_set.labels)],
                           answer(fer_set.labels[(i * 7 // 5) % len(fer_set.labels)]) if i % 9 else "no idea")
            for i in range(n)]
    return dump(path, recs, indent=None)


def test_set_scorer_writes_the_figure_beside_the_metrics_and_into_figs_dir(tmp_path):
    results = _results(tmp_path / "rafdb_r.json", SETS["rafdb"])
    figs = tmp_path / "figs"
    out = tmp_path / "out" / "rafdb_run_metrics.json"
    assert set_main("rafdb", ["--results", str(results), "--output", str(out), "--figs-dir", str(figs)]) == 0
    beside = out.with_name("rafdb_run_confusion.png")
    assert _png(beside).shape[0] > 300
    assert (figs / "confusion_rafdb.png").read_bytes() == beside.read_bytes()

    strict_out = tmp_path / "out2" / "m.json"
    assert set_main("rafdb", ["--results", str(results), "--output", str(strict_out), "--protocol", "strict",
                              "--figs-dir", "", "--run", "mine"]) == 0
    assert (strict_out.parent / "m_confusion.png").exists()
    assert sorted(p.name for p in figs.iterdir()) == ["confusion_rafdb.png"]  # '' skips the copy

    bare = tmp_path / "out3" / "m.json"
    assert set_main("rafdb", ["--results", str(results), "--output", str(bare), "--no-figs",
                              "--figs-dir", str(figs)]) == 0
    assert sorted(p.name for p in bare.parent.iterdir()) == ["m.json", "rafdb_r_items_paper.jsonl"]  # no figure


def test_total_scorer_writes_bars_and_pooled_confusion(tmp_path, capsys):
    paths = {k: _results(tmp_path / f"{k}.json", s) for k, s in SETS.items()}
    figs = tmp_path / "figs"
    out = tmp_path / "out" / "demo_results.json"
    argv = [f"--{'sfew' if k == 'sfew_2.0' else k}" for k in paths]
    argv = [x for flag, p in zip(argv, paths.values()) for x in (flag, str(p))]
    assert total_main(argv + ["--output", str(out), "--figs-dir", str(figs), "--run", "demo"]) == 0
    assert _png(out.with_name("demo_accuracy.png")).shape[1] > 500
    assert _png(out.with_name("demo_confusion.png")).shape[1] > 500
    assert sorted(p.name for p in figs.iterdir()) == ["confusion_total_demo.png", "ferbench_accuracy_demo.png"]
    assert "Mean of sets" in capsys.readouterr().out


@pytest.mark.parametrize("blocked", ["figs"])
def test_unwritable_figs_dir_is_one_clear_line(tmp_path, capsys, blocked):
    results = _results(tmp_path / "r.json", SETS["ferplus"])
    (tmp_path / blocked).write_text("a file where a folder should be")
    rc = set_main("ferplus", ["--results", str(results), "--output", str(tmp_path / "m.json"),
                              "--figs-dir", str(tmp_path / blocked)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: cannot write figure") and err.count("\n") == 1, err


def test_training_curves_from_trainer_state(tmp_path):
    import json

    from PIL import Image

    from unifer.scoring.plots import read_log_history, training_curves

    state = tmp_path / "trainer_state.json"
    history = [{"step": i, "loss": 10.0 / i, "reward": i / 10} for i in range(1, 6)]
    history.append({"train_runtime": 12.0, "total_flos": 1})  # the end-of-run summary has no step
    state.write_text(json.dumps({"log_history": history}))
    assert [e["step"] for e in read_log_history(state)] == [1, 2, 3, 4, 5]
    out = training_curves([("SFT", state, ["loss"]), ("GRPO", state, ["reward", "not_logged"])], tmp_path / "c.png")
    with Image.open(out) as im:
        assert im.size[0] > 2 * im.size[1] > 0  # two panels side by side
        assert len(im.convert("L").getcolors(maxcolors=256)) > 10  # something was drawn
