"""``unifer compare``: McNemar's exact test, the paired accuracy interval, paired-bootstrap UAR / F1 differences."""
from __future__ import annotations

import json
import math
import random

import pytest
from helpers import answer, dump, in_process, results_record

from unifer.cli import main
from unifer.data.sets import SETS
from unifer.scoring.compare_cli import compare_runs, results_path
from unifer.scoring.intervals import CIOptions
from unifer.scoring.paired import Pairs, compare_pairs, mcnemar_p, paired_diff_ci, smallest_detectable_difference

KEYS = ("n", "a_correct", "b_correct", "a_only", "b_only", "accuracy_diff", "accuracy_diff_ci95", "mcnemar_p",
        "uar_diff", "uar_diff_ci95", "f1_diff", "f1_diff_ci95")


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (0, 5), (3, 9), (12, 12), (40, 61), (1, 0)])
def test_mcnemar_exact_matches_hand_and_statsmodels(a_only, b_only):
    n = a_only + b_only
    k = min(a_only, b_only)
    hand = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert mcnemar_p(a_only, b_only) == pytest.approx(hand, rel=1e-9)
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    ref = sm.mcnemar([[50, a_only], [b_only, 20]], exact=True).pvalue
    assert mcnemar_p(a_only, b_only) == pytest.approx(ref, rel=1e-9)


def test_newcombe_interval_edges_and_large_sample_agreement():
    # no discordant pairs: the difference is 0 and its interval holds 0 on both sides
    lo, hi = paired_diff_ci(40, 0, 0, 10)
    assert lo < 0 < hi
    # all of A right, all of B wrong: difference 1, interval up to 1
    lo, hi = paired_diff_ci(0, 20, 0, 0)
    assert hi == 1.0 and 0.5 < lo < 1.0
    # one item
    lo, hi = paired_diff_ci(0, 1, 0, 0)
    assert -1 <= lo < 1 and hi == 1.0
    # large n: close to the Wald interval of a paired difference
    both, b, c, d = 2000, 300, 200, 1500
    n = both + b + c + d
    diff = (b - c) / n
    se = math.sqrt(b + c - (b - c) ** 2 / n) / n
    lo, hi = paired_diff_ci(both, b, c, d)
    assert lo == pytest.approx(diff - 1.96 * se, abs=0.002) and hi == pytest.approx(diff + 1.96 * se, abs=0.002)


def _pairs(rng, n, labels, acc_a, acc_b):
    p = Pairs()
    for _ in range(n):
        t = rng.choice(labels)
        p.truths.append(t)
        p.a.append(t if rng.random() < acc_a else rng.choice(labels))
        p.b.append(t if rng.random() < acc_b else rng.choice(labels + ["unknown"]))
    return p


def test_paired_bootstrap_intervals_and_the_pooled_total():
    rng = random.Random(1)
    pairs = {"x": _pairs(rng, 400, ["a", "b", "c"], 0.8, 0.5), "y": _pairs(rng, 100, ["a", "b"], 0.5, 0.5)}
    out = compare_pairs(pairs, CIOptions(resamples=2000))
    assert set(out) == {"x", "y", "total"}
    for block in out.values():
        assert set(KEYS) <= set(block)
        for m in ("accuracy", "uar", "f1"):
            lo, hi = block[f"{m}_diff_ci95"]
            assert lo <= block[f"{m}_diff"] <= hi
    assert out["x"]["uar_diff_ci95"][0] > 0 and out["x"]["mcnemar_p"] < 1e-6  # A is clearly better on x
    assert out["total"]["n"] == 500 and out["total"]["a_only"] == out["x"]["a_only"] + out["y"]["a_only"]
    # identical runs: every difference and interval is exactly 0, p = 1
    same = Pairs(list(pairs["x"].truths), list(pairs["x"].a), list(pairs["x"].a))
    block = compare_pairs({"x": same}, CIOptions(resamples=500))["x"]
    assert block["mcnemar_p"] == 1.0 and block["uar_diff_ci95"] == [0.0, 0.0] and block["f1_diff"] == 0.0


def test_power_shrinks_with_more_items_and_more_agreement():
    big = smallest_detectable_difference(4000, 0.2)
    small = smallest_detectable_difference(431, 0.2)
    assert small > big > 0
    assert smallest_detectable_difference(431, 0.05) < small
    assert smallest_detectable_difference(431, 0.0) is None
    # Connor's formula holds at the answer: the pairs needed for that difference are the pairs we have
    za, zb, psi, d = 1.959964, 0.841621, 0.2, small
    assert (za * math.sqrt(psi) + zb * math.sqrt(psi - d * d)) ** 2 / d ** 2 == pytest.approx(431, rel=1e-3)


def _runs(root, rng, n=60, spec=(("good", 0.8), ("bad", 0.4))):
    for run, acc in spec:
        r2 = random.Random(7)  # same items and truths in every run
        for key, s in SETS.items():
            recs = []
            for i in range(n):
                truth = r2.choice(s.labels)
                resp = answer(truth) if rng.random() < acc else answer(rng.choice(s.labels))
                rec = results_record(s, f"/{key}/{i}.jpg", truth, resp)
                if i == 0 and run == "bad":
                    rec.update(error=True, model_response="ERROR")
                recs.append(rec)
            path = results_path(root, key, run)
            path.parent.mkdir(parents=True, exist_ok=True)
            dump(path, recs)


def test_compare_command_prints_the_table_and_the_json(tmp_path):
    _runs(tmp_path, random.Random(2))
    rc, out, err = in_process(main, *["compare", "good", "bad", "--root", str(tmp_path), "--resamples", "500"])
    assert rc == 0, err
    assert "| RAF-DB | 59 | 1 |" in out and "McNemar p" in out and "Total (pooled)" in out
    rc, out, err = in_process(main, *["compare", "good", "bad", "--root", str(tmp_path), "--json", "--resamples",
                                     "500", "--protocol", "strict"])
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["protocol"] == "strict" and list(obj["sets"]) == [*SETS, "total"]
    for block in obj["sets"].values():
        assert set(KEYS) <= set(block)
    assert obj["sets"]["total"]["n"] == 4 * 59 and obj["sets"]["total"]["excluded_errors"] == 4
    assert obj == compare_runs("good", "bad", tmp_path, "strict", CIOptions(resamples=500))


def test_mismatched_items_are_one_clear_line(tmp_path):
    _runs(tmp_path, random.Random(2))
    path = results_path(tmp_path, "ferplus", "bad")
    recs = json.loads(path.read_text())
    recs[3]["image_path"] = "/elsewhere/3.jpg"
    dump(path, recs)
    rc, out, err = in_process(main, *["compare", "good", "bad", "--root", str(tmp_path)])
    assert rc == 2 and err.count("\n") == 1
    assert "FERPlus: the runs answered different items" in err and "/ferplus/3.jpg" in err
    rc, out, err = in_process(main, *["compare", "good", "nothing", "--root", str(tmp_path)])
    assert rc == 2 and "no set answered by both" in err
