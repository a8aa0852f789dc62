"""FERPlus' ten raters (``--ferplus-votes``): hand-made votes always; Microsoft's file from ../shared when present."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from helpers import SHARED, answer, dump, in_process, results_record

from unifer.cli import main
from unifer.data.sets import SETS
from unifer.scoring.aggregate import score_set
from unifer.scoring.votes import VOTE_COLUMNS, add_votes, read_votes, vote_index, votes_metrics

FER = SETS["ferplus"]
#: Microsoft's label.csv of the FERPlus test faces (never in the repository); UNIFER_FERPLUS_VOTES overrides.
VOTES_FILE = Path(os.environ.get("UNIFER_FERPLUS_VOTES", SHARED / "ferplus" / "FER2013Test_label.csv"))
QA_FILE = VOTES_FILE.parent.parent / "ferbench" / "ferplus_qa.json"


def votes_csv(path: Path, rows: dict[str, dict[str, int]]) -> Path:
    lines = []
    for name, v in rows.items():
        lines.append(",".join([name, '"(0, 0, 48, 48)"'] + [str(v.get(c, 0)) for c in VOTE_COLUMNS]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hand_computed_votes(tmp_path):
    path = votes_csv(tmp_path / "label.csv", {
        "a.png": {"happiness": 9, "neutral": 1},                 # agreed, answered happy: right
        "b.png": {"sadness": 5, "neutral": 3, "anger": 2},      # ambiguous, answered angry: wrong, 2 raters chose it
        "c.png": {"neutral": 6, "surprise": 4},                 # neither, answered surprise: wrong, 4 chose it
        "d.png": {"fear": 8, "surprise": 1, "NF": 1},           # agreed, answered contempt: wrong, nobody chose it
        "e.png": {"contempt": 4, "neutral": 4, "disgust": 2},   # ambiguous, no answer: wrong
        "f.png": {"anger": 10},                                  # an error item: left out
    })
    items = [("a.png", "happy", "happy"), ("b.png", "sad", "angry"), ("c.png", "neutral", "surprise"),
             ("d.png", "fear", "contempt"), ("e.png", "contempt", None), ("f.png", "angry", "angry")]
    recs = [results_record(FER, f"/FERPlus/test/{t}/{n}", t, answer(p) if p else "no idea") for n, t, p in items]
    recs[-1].update(error=True)
    v = votes_metrics(recs, read_votes(path), path)
    assert v["items"] == 5
    assert v["soft_accuracy"] == pytest.approx((0.9 + 0.2 + 0.4 + 0.0 + 0.0) / 5)
    assert v["agreed"] == {"items": 2, "accuracy": 0.5, "min_votes": 8}
    assert v["ambiguous"] == {"items": 2, "accuracy": 0.0, "max_votes": 5}
    assert v["errors"] == 4 and v["errors_raters_chose"] == 2 and v["errors_raters_chose_share"] == 0.5
    assert VOTE_COLUMNS[vote_index("happy")] == "happiness" and VOTE_COLUMNS[vote_index("contempt")] == "contempt"


def test_a_face_without_votes_or_a_bad_row_is_one_clear_line(tmp_path):
    path = votes_csv(tmp_path / "label.csv", {"a.png": {"happiness": 10}})
    recs = [results_record(FER, "/FERPlus/test/happy/zzz.png", "happy", answer("happy"))]
    rc, out, err = _eval(tmp_path, recs, path)
    assert rc == 2 and err.count("\n") == 1 and "no votes for FERPlus image '/FERPlus/test/happy/zzz.png'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text('a.png,"(0, 0, 48, 48)",1,2,3\n')
    rc, out, err = _eval(tmp_path, recs, bad)
    assert rc == 2 and f"{bad}: record 0" in err and "vote counts" in err
    rc, out, err = _eval(tmp_path, recs, tmp_path / "absent.csv")
    assert rc == 2 and "no such FERPlus votes file" in err
    rafdb = dump(tmp_path / "r.json", [results_record(SETS["rafdb"], "/x.jpg", "fear", answer("fear"))], indent=None)
    rc, out, err = in_process(main, "eval", "--set", "rafdb", "--results", rafdb, "--output", tmp_path / "m.json",
                              "--no-figs", "--ferplus-votes", path)
    assert rc == 2 and "has none" in err


def _eval(tmp_path, recs, votes):
    results = dump(tmp_path / "ferplus_results.json", recs, indent=None)
    return in_process(main, "eval", "--set", "ferplus", "--results", results, "--output",
                      tmp_path / "ferplus_metrics.json", "--no-figs", "--no-ci", "--ferplus-votes", votes)


@pytest.fixture(scope="module")
def microsoft_votes():
    if not VOTES_FILE.is_file() or not QA_FILE.is_file():
        pytest.skip("../shared/ferplus/FER2013Test_label.csv or ../shared/ferbench is absent")
    return read_votes(VOTES_FILE), json.loads(QA_FILE.read_text())


def test_ferbench_ferplus_items_are_microsofts_faces_labelled_by_majority(microsoft_votes):
    votes, qa = microsoft_votes
    assert len(qa) == len(votes) == 3573
    names = {os.path.basename(r["image_path"]) for r in qa}
    assert names == set(votes)
    for r in qa:
        v = votes[os.path.basename(r["image_path"])]
        assert v[vote_index(r["true_label"])] == v[:8].max()


def test_votes_of_a_run_over_all_of_ferplus(tmp_path, microsoft_votes):
    votes, qa = microsoft_votes
    rng = random.Random(0)
    recs = [dict(r, model_response=answer(r["true_label"] if rng.random() < 0.7 else rng.choice(FER.labels)))
            for r in qa]
    report = add_votes(score_set(recs, FER), {"ferplus": recs}, VOTES_FILE)
    v = report["ferplus_votes"]
    assert v["items"] == 3573 and 0 < v["soft_accuracy"] < report["overall"]["accuracy"] + 0.2
    assert v["agreed"]["items"] > 0 and v["ambiguous"]["items"] > 0
    assert v["agreed"]["accuracy"] > v["ambiguous"]["accuracy"] - 0.1  # right answers are drawn independently
    perfect = votes_metrics([dict(r, model_response=answer(r["true_label"])) for r in qa], votes, VOTES_FILE)
    assert perfect["agreed"]["accuracy"] == perfect["ambiguous"]["accuracy"] == 1.0 and perfect["errors"] == 0
    # the total carries it too
    paths = {}
    for key in SETS:
        part = recs if key == "ferplus" else [results_record(SETS[key], f"/{i}.jpg", SETS[key].labels[0],
                                                             answer(SETS[key].labels[0])) for i in range(5)]
        paths[key] = dump(tmp_path / f"{key}.json", part, indent=None)
    flags = {"rafdb": "--rafdb", "ferplus": "--ferplus", "affectnet": "--affectnet", "sfew_2.0": "--sfew"}
    rc, out, err = in_process(main, "eval", "--total", *[a for k, p in paths.items() for a in (flags[k], p)],
                              "--output", tmp_path / "t_results.json", "--no-figs", "--resamples", "200",
                              "--ferplus-votes", VOTES_FILE)
    assert rc == 0, err
    assert "soft accuracy" in out
    assert json.loads((tmp_path / "t_results.json").read_text())["ferplus_votes"] == v
