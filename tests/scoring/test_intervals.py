"""95% intervals and UAR: against statsmodels / scipy / hand-computed values, at the edges, in the files."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from helpers import answer, dump, results_record

from unifer.data.sets import SETS
from unifer.scoring.aggregate import markdown_table, score_set, score_total
from unifer.scoring.cli import set_main, total_main
from unifer.scoring.intervals import CIOptions, multinomial, proportion_ci, stratified
from unifer.scoring.metrics import uar

Z = 1.959963984540054


def write(path, obj):
    return dump(path, obj, indent=None)


def run_records(fer_set, n: int, rng: random.Random, acc: float = 0.6) -> list[dict]:
    """Results records of ``fer_set``: right with probability ``acc``, else a random label or no answer; 2% errors."""
    out = []
    for i in range(n):
        truth = rng.choice(fer_set.labels)
        r = rng.random()
        resp = answer(truth) if r < acc else answer(rng.choice(fer_set.labels)) if r < 0.95 else "no idea"
        rec = results_record(fer_set, f"/{fer_set.key}/{i}.jpg", truth, resp)
        if rng.random() < 0.02:
            rec.update(model_response="ERROR", error=True)
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def adversarial_records():
    rng = random.Random(4)
    return {key: run_records(s, n, rng) for (key, s), n in zip(SETS.items(), (300, 250, 200, 80))}


def wilson(k, n, z=Z):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 1), (0, 1), (7, 431), (300, 431), (2210, 3068)])
def test_wilson_matches_the_formula_and_statsmodels(k, n):
    lo, hi = proportion_ci(k, n, "wilson")
    assert (lo, hi) == pytest.approx(wilson(k, n), abs=1e-12)
    assert lo <= k / n <= hi
    sm = pytest.importorskip("statsmodels.stats.proportion")
    assert (lo, hi) == pytest.approx(sm.proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 1), (7, 431), (300, 431)])
def test_clopper_pearson_matches_its_edges_and_statsmodels(k, n):
    lo, hi = proportion_ci(k, n, "clopper-pearson")
    if k == 0:
        assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-12)
    if k == n:
        assert hi == 1 and lo == pytest.approx(0.025 ** (1 / n), abs=1e-12)
    assert lo <= k / n <= hi
    assert hi - lo >= wilson(k, n)[1] - wilson(k, n)[0] - 1e-12  # exact is the wider one
    sm = pytest.importorskip("statsmodels.stats.proportion")
    assert (lo, hi) == pytest.approx(sm.proportion_confint(k, n, alpha=0.05, method="beta"), abs=1e-9)


def test_no_items_has_no_interval():
    assert proportion_ci(0, 0) is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_uar_is_balanced_accuracy_and_leaves_predicted_only_labels_out():
    truths = ["anger"] * 8 + ["fear"] * 2
    preds = ["anger"] * 6 + ["unknown"] * 2 + ["fear", "sad"]
    assert uar(truths, preds) == pytest.approx((6 / 8 + 1 / 2) / 2)  # sad and unknown are never true
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(50):
        n = rng.choice([1, 5, 40])
        t = [rng.choice("abcd") for _ in range(n)]
        p = [rng.choice("abcdu") for _ in range(n)]
        assert uar(t, p) == pytest.approx(sk.balanced_accuracy_score(t, p), abs=1e-12)


def test_multinomial_draws_have_the_multinomial_moments():
    counts = np.array([50, 30, 15, 5])
    draws = multinomial(np.random.default_rng(1), counts, 20000)
    assert (draws.sum(axis=1) == 100).all() and (draws >= 0).all()
    p = counts / 100
    assert draws.mean(axis=0) == pytest.approx(100 * p, rel=0.02)
    assert draws.var(axis=0) == pytest.approx(100 * p * (1 - p), rel=0.05)


def _pairs(rng, n, labels, acc):
    t = [rng.choice(labels) for _ in range(n)]
    return t, [x if rng.random() < acc else rng.choice(labels + ["unknown"]) for x in t]


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_agrees_with_scipy_bootstrap(method):
    """Our cell-multinomial bootstrap of UAR and macro F1 against scipy.stats.bootstrap over item indices."""
    from scipy.stats import bootstrap

    from unifer.scoring.metrics import macro_prf

    rng = random.Random(5)
    t, p = _pairs(rng, 120, ["anger", "fear", "happy", "sad"], 0.6)
    ours = stratified({"x": (t, p)}, CIOptions(bootstrap=method, resamples=4000))["sets"]["x"]
    ta, pa = np.array(t), np.array(p)

    def stat(i, which):
        i = i.astype(int)
        return uar(list(ta[i]), list(pa[i])) if which == "uar" else macro_prf(list(ta[i]), list(pa[i]))[2]

    for which in ("uar", "f1"):
        ref = bootstrap((np.arange(len(t)),), lambda i: stat(i, which), vectorized=False, n_resamples=1500,
                        method="BCa" if method == "bca" else "percentile", random_state=0).confidence_interval
        assert ours[which][0] == pytest.approx(ref.low, abs=0.025), which
        assert ours[which][1] == pytest.approx(ref.high, abs=0.025), which


def test_edges_all_right_all_wrong_one_item_no_support():
    opts = CIOptions(resamples=500)
    right = stratified({"a": (["fear"] * 20, ["fear"] * 20)}, opts)["sets"]["a"]
    assert right["uar"] == [1.0, 1.0] and right["f1"] == [1.0, 1.0]
    assert right["accuracy"][1] == 1.0 and right["accuracy"][0] == pytest.approx(wilson(20, 20)[0])
    wrong = stratified({"a": (["fear"] * 20, ["unknown"] * 20)}, opts)["sets"]["a"]
    assert wrong["uar"] == [0.0, 0.0] and wrong["accuracy"][0] == 0.0
    one = stratified({"a": (["fear"], ["fear"])}, CIOptions(resamples=500, bootstrap="bca"))["sets"]["a"]
    assert one["uar"] == [1.0, 1.0] and one["accuracy"] == pytest.approx(list(wilson(1, 1)))
    # a class of the set with no support: no recall interval, and UAR averages over the classes that occur
    s = SETS["sfew_2.0"]
    recs = [results_record(s, f"/{i}.jpg", t, answer(p)) for i, (t, p) in
            enumerate([("happy", "happy"), ("happy", "sad"), ("sad", "happy")])]
    rep = score_set(recs, s, ci=opts)
    rows = {r["emotion"]: r for r in rep["per_class"]}
    assert rows["fear"]["support"] == 0 and rows["fear"]["recall_ci95"] is None
    assert rows["happy"]["recall_ci95"] == pytest.approx(list(wilson(1, 2)))
    assert rep["overall"]["uar"] == pytest.approx((1 / 2 + 0 / 1) / 2)
    lo, hi = rep["overall"]["ci95"]["uar"]
    assert 0 <= lo <= 0.25 <= hi <= 1


def test_seeded_and_the_same_for_a_set_alone_and_in_the_total(adversarial_records):
    opts = CIOptions(resamples=1000, seed=3)
    total = score_total(adversarial_records, ci=opts)
    again = score_total(adversarial_records, ci=opts)
    assert total["overall"]["ci95"] == again["overall"]["ci95"]
    other = score_total(adversarial_records, ci=CIOptions(resamples=1000, seed=4))
    assert other["overall"]["ci95"]["uar"] != total["overall"]["ci95"]["uar"]
    for key, recs in adversarial_records.items():
        alone = score_set(recs, SETS[key], ci=opts)
        assert alone["overall"]["ci95"] == total["per_set"][key]["overall"]["ci95"]
        assert alone["overall"]["uar"] == total["per_set"][key]["overall"]["uar"]
    mean = total["mean_of_sets"]
    assert mean["ci95"]["accuracy"][0] <= mean["accuracy"] <= mean["ci95"]["accuracy"][1]
    assert mean["accuracy"] == pytest.approx(total["mean_set_accuracy"])
    for block in (total["overall"]["ci95"], mean["ci95"]):
        assert all(0 <= block[m][0] <= block[m][1] <= 1 for m in ("accuracy", "uar", "f1"))


def test_stratified_pooled_accuracy_bootstrap_agrees_with_wilson():
    rng = random.Random(9)
    pairs = {k: _pairs(rng, n, ["a", "b", "c"], acc) for k, n, acc in (("x", 800, 0.7), ("y", 300, 0.4))}
    opts = CIOptions(resamples=4000)
    out = stratified(pairs, opts)
    # the pooled accuracy's bootstrap (internal) and Wilson agree closely for these sizes
    hits = sum(a == b for t, p in pairs.values() for a, b in zip(t, p))
    assert out["pooled"]["accuracy"] == pytest.approx(list(wilson(hits, 1100)), abs=1e-12)
    # the mean of sets: half-width about the root of the mean of the two variances over 2
    p1, p2 = [sum(a == b for a, b in zip(*pairs[k])) / len(pairs[k][0]) for k in ("x", "y")]
    se = math.sqrt(p1 * (1 - p1) / 800 + p2 * (1 - p2) / 300) / 2
    lo, hi = out["mean"]["accuracy"]
    assert (hi - lo) / 2 == pytest.approx(Z * se, rel=0.1)


def test_table_cells_carry_intervals_and_the_files_carry_ci95(tmp_path, adversarial_records):
    total = score_total(adversarial_records, ci=CIOptions(resamples=500))
    md = markdown_table(total["table"])
    assert "UAR (paper)" in md and "95% intervals" in md
    raf = next(r for r in total["table"] if r["set"] == "RAF-DB" and r["protocol"] == "paper")
    lo, hi = raf["ci95"]["accuracy"]
    assert f"{100 * raf['accuracy']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" in md
    paths = {k: write(tmp_path / f"{k}.json", r) for k, r in adversarial_records.items()}
    flags = {"rafdb": "--rafdb", "ferplus": "--ferplus", "affectnet": "--affectnet", "sfew_2.0": "--sfew"}
    argv = [a for k, p in paths.items() for a in (flags[k], str(p))] + ["--no-figs", "--resamples", "500"]
    assert total_main(argv + ["--output", str(tmp_path / "t_results.json")]) == 0
    assert total_main(argv + ["--output", str(tmp_path / "n_results.json"), "--no-ci"]) == 0
    with_ci = json.loads((tmp_path / "t_results.json").read_text())
    without = json.loads((tmp_path / "n_results.json").read_text())
    assert "ci95" not in without["overall"] and "ci" not in without and "UAR (paper)" in (
        tmp_path / "n_table.md").read_text()
    assert {k: v for k, v in with_ci["overall"].items() if k != "ci95"} == without["overall"]
    assert set(with_ci["overall"]["ci95"]) == {"accuracy", "uar", "f1"} and "uar_f1" in with_ci["ci"]
    assert "accuracy_lo" in (tmp_path / "t_table.csv").read_text().splitlines()[0]
    out = tmp_path / "s_metrics.json"
    assert set_main("sfew_2.0", ["--results", str(paths["sfew_2.0"]), "--output", str(out), "--no-figs",
                                 "--ci-accuracy", "clopper-pearson", "--resamples", "500"]) == 0
    metrics = json.loads(out.read_text())
    assert "clopper-pearson" in metrics["ci"]["accuracy"] and "recall_ci95" in metrics["per_class"][0]
    k, n = round(metrics["overall"]["accuracy"] * metrics["counts"]["valid"]), metrics["counts"]["valid"]
    assert metrics["overall"]["ci95"]["accuracy"] == pytest.approx(proportion_ci(k, n, "clopper-pearson"))
