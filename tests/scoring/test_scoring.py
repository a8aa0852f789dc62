"""Scoring: every extraction rule by hand, metrics equal to scikit-learn, the scorers' files and errors."""
from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PY, REPO, dump, results_record, run

from unifer.data.sets import SETS, TOTAL_LABEL_MAP
from unifer.errors import DataError
from unifer.scoring.aggregate import (
    PROTOCOLS,
    csv_table,
    extract_label,
    load_results,
    markdown_table,
    predict,
    score_set,
    score_total,
)
from unifer.scoring.cli import set_main, total_main
from unifer.scoring.metrics import accuracy, confusion_matrix, macro_prf, per_class

RAF, FERP, AFF, SFEW = SETS["rafdb"], SETS["ferplus"], SETS["affectnet"], SETS["sfew_2.0"]

# ------------------------------------------------------------------------------------------- the paper protocol

PAPER_CASES = [
    # rule 1: the first <answer> match decides, case-insensitively, the first candidate (in candidate order) in it
    ("rafdb", "<think>looks angry</think><answer>fear</answer>", "fear"),
    ("rafdb", "<ANSWER>  Sadness </Answer>", "sadness"),
    ("rafdb", "<answer>sadness or surprise</answer>", "surprise"),  # RAF-DB lists surprise first
    ("affectnet", "<answer>sadness or surprise</answer>", "sadness"),  # AffectNet lists sadness first
    ("rafdb", "<answer>fear</answer> then <answer>anger</answer>", "fear"),
    ("ferplus", "<answer>unhappy</answer>", "happy"),  # a substring match, as the paper
    ("rafdb", "<answer>\n  anger \n</answer> surprise", "anger"),  # whitespace around the content may span lines
    ("sfew_2.0", "<answer>Happy.</answer> angry", "happy"),
    # ... but the content itself may not: no match, so rule 2 reads the whole response (surprise comes first)
    ("rafdb", "<answer>the face shows\nanger</answer> and surprise", "surprise"),
    ("sfew_2.0", "<answer>the face shows\nfear</answer>", "fear"),
    # an answer without a candidate falls through to rules 2 and 3 on the whole response
    ("rafdb", "<think>a clear fear response</think><answer>unsure</answer>", "fear"),
    ("rafdb", "<answer>joyful</answer>", "happiness"),
    ("ferplus", "<answer>none</answer>", "unknown"),
    # rule 2: the first candidate, in candidate order, anywhere in the lower-cased response
    ("ferplus", "The person looks SAD and angry.", "angry"),
    ("rafdb", "clearly FEARFUL", "fear"),
    ("affectnet", "some disgust and some anger", "disgust"),
    ("rafdb", "happiness, not sadness", "happiness"),
    ("ferplus", "I would not call it contempt; neutral.", "contempt"),
    ("rafdb", "<answer>fear</answer", "fear"),  # a broken tag is plain text
    # rule 3: the synonym walk, in the set's order
    ("rafdb", "The person looks sad and angry.", "anger"),  # no RAF-DB candidate; anger is walked before sadness
    ("affectnet", "pure madness", "anger"),
    ("sfew_2.0", "mad", "angry"),
    ("rafdb", "mad", "unknown"),  # RAF-DB has no 'mad'
    ("ferplus", "sorrow", "sad"),
    ("ferplus", "scorn", "contempt"),
    ("affectnet", "disdain", "contempt"),
    ("rafdb", "revulsion", "disgust"),
    ("sfew_2.0", "Repulsion", "disgust"),
    ("affectnet", "terror", "fear"),
    ("ferplus", "frightened", "fear"),
    ("rafdb", "joy and terror", "fear"),  # fear is walked before happiness
    ("ferplus", "calm but in shock", "neutral"),  # neutral is walked before surprise
    ("sfew_2.0", "a blank stare", "neutral"),
    ("affectnet", "normal", "neutral"),
    ("rafdb", "astonishment", "surprise"),
    ("rafdb", "happy", "happiness"),
    ("affectnet", "angry", "anger"),
    ("ferplus", "joy", "happy"),
    ("sfew_2.0", "unhappy", "happy"),  # rule 2 finds 'happy' inside 'unhappy' before the walk reaches 'sad'
    # rule 4
    ("rafdb", "", "unknown"),
    ("affectnet", "no idea", "unknown"),
    ("ferplus", "<answer></answer>", "unknown"),
]


@pytest.mark.parametrize("key,response,expected", PAPER_CASES)
def test_paper_rules_by_hand(key, response, expected):
    assert extract_label(response, key) == expected


STRICT_CASES = [
    ("rafdb", "<think>so sad</think><answer>fear</answer>", "fear"),
    ("rafdb", "<answer> Fear \n</answer>", "fear"),
    ("rafdb", "<answer>happy</answer>", "happiness"),  # a listed synonym counts
    ("ferplus", "<answer>ANGER</answer>", "angry"),
    ("affectnet", "<answer>mad</answer>", "anger"),
    ("rafdb", "<answer>mad</answer>", "unknown"),
    ("rafdb", "<answer>fear.</answer>", "unknown"),
    ("rafdb", "<answer>fear or anger</answer>", "unknown"),
    ("rafdb", "<answer>the face shows fear</answer>", "unknown"),
    ("rafdb", "I think it is fear", "unknown"),  # no tag
    ("rafdb", "<answer>maybe</answer><answer>fear</answer>", "unknown"),  # only the first tag counts
    ("ferplus", "<answer>unhappy</answer>", "sad"),
    ("sfew_2.0", "<answer>joy</answer>", "happy"),
]


@pytest.mark.parametrize("key,response,expected", STRICT_CASES)
def test_strict_rules_by_hand(key, response, expected):
    assert extract_label(response, key, "strict") == expected


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        extract_label("fear", "rafdb", "loose")


# ---------------------------------------------------------------------------------- differential, adversarial

_ALL_WORDS = sorted({w for s in SETS.values() for w in s.labels}
                    | {a for s in SETS.values() for _, alts in s.synonyms for a in alts})
# fragments, derived words that contain a label or a synonym, and characters whose lower case changes length
_OTHER = ["happ", "sadn", "angr", "disgus", "unhappy", "madness", "sadly", "fearful", "surprised", "happily",
          "contemptuous", "calmly", "joyful", "blanket", "nomad", "unknown", "the face shows", "not", "İ", "ẞ",
          "Ｈappy", " "]
_TAGS = ["<answer>", "</answer>", "<ANSWER>", "</Answer>", "<answer >", "<think>", "</think>"]
_SEPS = [" ", "", "\n", "\t", "\u00a0", ". ", ", ", "\r\n"]


def adversarial_response(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(0, 14)):
        r = rng.random()
        word = rng.choice(_ALL_WORDS) if r < 0.35 else rng.choice(_OTHER) if r < 0.55 else rng.choice(_TAGS)
        c = rng.random()
        word = word.upper() if c < 0.1 else word.capitalize() if c < 0.25 else word
        out.append(word + rng.choice(_SEPS))
    return "".join(out)


def reference_paper(response: str, fer_set) -> str:
    """The paper rule written from the issue's words, independently of unifer.scoring.aggregate."""
    lowered = response.lower()
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", response, flags=re.IGNORECASE)
    for zone in ([m.group(1).strip().lower()] if m else []) + [lowered]:
        hits = [label for label in fer_set.labels if re.search(re.escape(label), zone)]
        if hits:
            return hits[0]
    return next((label for label, alts in fer_set.synonyms if any(a in lowered for a in alts)), "unknown")


def reference_strict(response: str, fer_set) -> str:
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", response, flags=re.IGNORECASE)
    if m is None:
        return "unknown"
    text = m.group(1).strip().lower()
    if text in fer_set.labels:
        return text
    return next((label for label, alts in fer_set.synonyms if text in alts), "unknown")


def make_records(fer_set, n: int, rng: random.Random, error_rate: float = 0.02) -> list[dict]:
    records = []
    for i in range(n):
        r = results_record(fer_set, f"/x/{i}.jpg", rng.choice(fer_set.labels), adversarial_response(rng))
        if rng.random() < error_rate:
            r.update(model_response="ERROR: image missing", error=True)
        records.append(r)
    return records


@pytest.fixture(scope="module")
def adversarial_records():
    rng = random.Random(4)
    return {key: make_records(s, 1500, rng) for key, s in SETS.items()}


def test_extraction_matches_the_written_rules(adversarial_records):
    for key, records in adversarial_records.items():
        s = SETS[key]
        for r in records:
            resp = r["model_response"]
            assert extract_label(resp, s) == reference_paper(resp, s), (key, resp)
            assert extract_label(resp, s, "strict") == reference_strict(resp, s), (key, resp)


def _close(ours, ref, path=""):
    if isinstance(ref, dict):
        for k in ref:
            _close(ours[k], ref[k], f"{path}/{k}")
    elif isinstance(ref, list):
        assert len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref)):
            _close(a, b, f"{path}[{i}]")
    elif isinstance(ref, str):
        assert ours == ref, path
    else:
        assert abs(ours - ref) <= 1e-9, (path, ours, ref)


def sklearn_report(truths, preds, labels):
    """The paper's numbers, computed the paper's way (scikit-learn)."""
    sk = pytest.importorskip("sklearn.metrics")
    p, r, f, _ = sk.precision_recall_fscore_support(truths, preds, average="macro", zero_division=0)
    rep = sk.classification_report(truths, preds, labels=labels, target_names=labels, zero_division=0,
                                   output_dict=True)
    return {
        "overall": {"accuracy": sk.accuracy_score(truths, preds), "precision": p, "recall": r, "f1": f},
        "per_class": [{"emotion": e, "precision": rep[e]["precision"], "recall": rep[e]["recall"],
                       "f1": rep[e]["f1-score"], "support": rep[e]["support"]} for e in labels],
        "confusion_matrix": sk.confusion_matrix(truths, preds, labels=labels).tolist(),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_reports_equal_sklearn(adversarial_records, protocol):
    for key, records in adversarial_records.items():
        s = SETS[key]
        truths = [r["true_label"] for r in records if not r.get("error")]
        preds = [(reference_paper if protocol == "paper" else reference_strict)(r["model_response"], s)
                 for r in records if not r.get("error")]
        ours = score_set(records, s, protocol)
        _close(ours, sklearn_report(truths, preds, list(s.labels)), key)
        errors = sum(1 for r in records if r.get("error"))
        assert ours["counts"] == {"total": len(records), "errors": errors, "unknown": preds.count("unknown"),
                                  "valid": len(records) - errors}


def test_total_equals_the_papers_pooling(adversarial_records):
    truths, preds = [], []
    for key, records in adversarial_records.items():
        for r in records:
            if not r.get("error"):
                truths.append(TOTAL_LABEL_MAP.get(r["true_label"], r["true_label"]))
                p = reference_paper(r["model_response"], SETS[key])
                preds.append(TOTAL_LABEL_MAP.get(p, p))
    ours = score_total(adversarial_records)
    labels = sorted(set(truths))
    assert ours["labels"] == labels == ["anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness",
                                        "surprise"]
    _close(ours, sklearn_report(truths, preds, labels))
    per_set = [r["accuracy"] for r in ours["table"] if r["protocol"] == "paper" and r["set"] in
               {s.name for s in SETS.values()}]
    assert ours["mean_set_accuracy"] == pytest.approx(sum(per_set) / 4, abs=1e-12)


def _random_pairs(rng: random.Random):
    """Random and degenerate (truth, prediction) lists: one item, one class, all unknown, labels never predicted."""
    pool = ["anger", "fear", "happy", "sad", "unknown", "neutral"]
    n = rng.choice([1, 2, 3, 7, 50, 400])
    kind = rng.random()
    truths = [rng.choice(pool[:4]) for _ in range(n)]
    if kind < 0.1:
        preds = ["unknown"] * n
    elif kind < 0.2:
        preds = list(truths)
    elif kind < 0.3:
        truths = ["fear"] * n
        preds = [rng.choice(pool) for _ in range(n)]
    else:
        preds = [rng.choice(pool) for _ in range(n)]
    return truths, preds


def test_metrics_equal_sklearn_on_random_and_degenerate_lists():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    labels = ["anger", "fear", "happy", "sad", "neutral"]
    for i in range(1000):  # scikit-learn takes ~5 ms a call; the 6,000 adversarial records above add the rest
        truths, preds = _random_pairs(rng)
        p, r, f, _ = sk.precision_recall_fscore_support(truths, preds, average="macro", zero_division=0)
        assert macro_prf(truths, preds) == pytest.approx((p, r, f), abs=1e-9)
        assert accuracy(truths, preds) == pytest.approx(sk.accuracy_score(truths, preds), abs=1e-12)
        if i % 10 == 0:
            assert confusion_matrix(truths, preds, labels).tolist() == sk.confusion_matrix(
                truths, preds, labels=labels).tolist()
            _close({"per_class": per_class(truths, preds, labels)},
                   {"per_class": sklearn_report(truths, preds, labels)["per_class"]})


def test_unknown_is_a_class_of_the_macro_average():
    # two items right, one 'unknown': the unknown class adds a precision and recall of 0 to the means
    truths, preds = ["fear", "sad", "sad"], ["fear", "sad", "unknown"]
    assert macro_prf(truths, preds) == pytest.approx((2 / 3, (1 + 0.5 + 0) / 3, (1 + 2 / 3 + 0) / 3))
    assert confusion_matrix(truths, preds, ["fear", "sad"]).tolist() == [[1, 0], [0, 1]]


# -------------------------------------------------------------------------------------------- results files


def write(path: Path, obj) -> Path:
    return dump(path, obj, indent=None)


def small_records(fer_set, responses):
    return [results_record(fer_set, f"/x/{i}.jpg", fer_set.labels[i % len(fer_set.labels)], resp)
            for i, resp in enumerate(responses)]


def _bad(tmp_path, mutate):
    records = small_records(RAF, [f"<answer>{lab}</answer>" for lab in RAF.labels])
    out = mutate(records)
    return write(tmp_path / "bad.json", records if out is None else out)


BAD_FILES = [
    ("missing model_response", lambda rs: rs[3].pop("model_response") and None, r"record 3, field 'model_response'"),
    ("missing true_label", lambda rs: rs[2].pop("true_label") and None, r"record 2, field 'true_label'"),
    ("missing candidates", lambda rs: rs[1].pop("candidate_labels") and None, r"record 1, field 'candidate_labels'"),
    ("label outside", lambda rs: rs[4].update(true_label="contempt"), r"record 4, field 'true_label'.*contempt"),
    ("response not text", lambda rs: rs[0].update(model_response=7), r"record 0, field 'model_response'.*int"),
    ("other set", lambda rs: [dict(r, candidate_labels=list(FERP.labels), true_label="fear") for r in rs],
     r"record 0, field 'candidate_labels'.*FERPlus results.*eval_ferplus/code/eval_unifer.py"),
    ("foreign labels", lambda rs: rs[5].update(candidate_labels=["a", "b"]), r"record 5, field 'candidate_labels'"),
    ("empty list", lambda rs: [], r"no records"),
    ("not JSON", lambda rs: "[{\"true_label\": ", r"not valid JSON"),
    ("all errors", lambda rs: [dict(r, error=True, model_response="ERROR: x") for r in rs], r"all 7 records are error"),
]


@pytest.mark.parametrize("name,mutate,pattern", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_results_files_give_one_clear_line(tmp_path, capsys, name, mutate, pattern):
    path = _bad(tmp_path, mutate)
    rc = set_main("rafdb", ["--results", str(path), "--output", str(tmp_path / "m.json"), "--no-figs"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"error: {path}") and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "m.json").exists()


def test_error_records_are_counted_and_may_lack_a_response(tmp_path):
    records = small_records(RAF, ["<answer>surprise</answer>", "fear", "x", "y"])
    records[2].update(error=True, model_response=None)
    del records[3]["model_response"]
    records[3]["error"] = True
    report = score_set(load_results(write(tmp_path / "r.json", records), RAF), RAF)
    assert report["counts"] == {"total": 4, "errors": 2, "unknown": 0, "valid": 2}
    assert report["overall"]["accuracy"] == 1.0


def test_missing_file_names_it_and_the_inference_command(tmp_path, capsys):
    path = tmp_path / "nope.json"
    assert set_main("sfew_2.0", ["--results", str(path), "--no-figs"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"python eval_sfew_2.0/code/infer_unifer.py --output {path}" in err


def test_a_results_file_in_another_label_order_scores_in_registry_order(tmp_path):
    records = small_records(RAF, ["sadness or surprise"] * 7)
    for r in records:
        r["candidate_labels"] = sorted(RAF.labels)
    report = score_set(load_results(write(tmp_path / "r.json", records), RAF), RAF)
    assert report["labels"] == list(RAF.labels)
    assert [r["emotion"] for r in report["per_class"]] == list(RAF.labels)
    assert predict(records, RAF).preds == ["surprise"] * 7


def test_refuses_to_overwrite_the_results_it_reads(tmp_path, capsys):
    path = write(tmp_path / "r.json", small_records(RAF, ["fear"] * 3))
    before = path.read_bytes()
    assert set_main("rafdb", ["--results", str(path), "--output", str(path), "--no-figs"]) == 2
    assert "is the results file being scored" in capsys.readouterr().err
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------------- scripts


def _fake_home(tmp_path: Path, rng: random.Random, n: int = 60) -> Path:
    home = tmp_path / "home"
    for key, s in SETS.items():
        path = home / f"eval_{key}" / "results" / f"{key}_unifer_7b_results.json"
        path.parent.mkdir(parents=True)
        write(path, make_records(s, n, rng))
    return home


def _script(name: str, home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run([PY, REPO / name / "code" / "eval_unifer.py", *args], cwd=cwd, timeout=120, clean=False,
               UNIFER_HOME=home, MPLBACKEND="Agg")


def test_scripts_use_repository_defaults_from_any_directory(tmp_path):
    home = _fake_home(tmp_path, random.Random(1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = _script("eval_rafdb", home, elsewhere, "--no-figs")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((home / "eval_rafdb/results/rafdb_unifer_7b_metrics.json").read_text())
    assert list(metrics)[:3] == ["overall", "per_class", "confusion_matrix"]  # the paper's layout first
    assert metrics["protocol"] == "paper" and metrics["counts"]["total"] == 60
    assert all(isinstance(r["support"], int) for r in metrics["per_class"])
    assert "accuracy" in run.stdout and "confusion matrix" in run.stdout
    assert list(elsewhere.iterdir()) == []

    run = _script("eval_total", home, elsewhere, "--no-figs", "--protocol", "strict")
    assert run.returncode == 0, run.stderr
    total = json.loads((home / "eval_total/results/unifer_7b_results_strict.json").read_text())
    assert total["protocol"] == "strict" and total["counts"]["total"] == 240
    assert set(total["per_set"]) == set(SETS)
    rows = list(csv.DictReader(io.StringIO((home / "eval_total/results/unifer_7b_results_strict.json")
                                            .with_name("unifer_7b_table_strict.csv").read_text())))
    assert len(rows) == 12 and {r["protocol"] for r in rows} == set(PROTOCOLS)
    assert "| RAF-DB |" in (home / "eval_total/results/unifer_7b_table_strict.md").read_text()
    assert not (home / "figs").exists() and list(elsewhere.iterdir()) == []


def test_per_set_scripts_differ_only_in_their_set():
    texts = {key: (REPO / f"eval_{key}/code/eval_unifer.py").read_text() for key in SETS}
    for key, text in texts.items():
        assert text.replace(key, "KEY") == texts["rafdb"].replace("rafdb", "KEY")
        assert len(text.splitlines()) <= 15


# ------------------------------------------------------------------------------------------- tables and speed


def test_table_formats(adversarial_records):
    rows = score_total(adversarial_records)["table"]
    md = markdown_table(rows).splitlines()
    assert len(md) == 2 + 6  # header, rule, four sets, pooled, mean
    assert md[0].startswith("| Set | Items | Errors | Acc (paper)") and "Acc (strict)" in md[0]
    raf = next(r for r in rows if r["set"] == "RAF-DB" and r["protocol"] == "strict")
    assert f"| RAF-DB | {raf['total']} | {raf['errors']} |" in md[2] and f"{100 * raf['accuracy']:.2f}" in md[2]
    back = list(csv.DictReader(io.StringIO(csv_table(rows))))
    assert [(r["set"], r["protocol"]) for r in back] == [(r["set"], r["protocol"]) for r in rows]
    assert all(float(b["f1"]) == r["f1"] and int(b["valid"]) == r["valid"] for b, r in zip(back, rows))


def test_scoring_all_of_ferbench_takes_under_two_seconds(tmp_path):
    """11,072 items (the four sets' sizes) with realistic ~600-character responses: read, check, score both
    protocols, pool."""
    rng = random.Random(2)
    sizes = {"rafdb": 3068, "ferplus": 3573, "affectnet": 4000, "sfew_2.0": 431}
    paths = {}
    filler = " ".join(["the brows are raised and the mouth corners turn"] * 12)
    for key, n in sizes.items():
        s = SETS[key]
        records = small_records(s, [f"<think>{filler}</think><answer>{rng.choice(s.labels)}</answer>"
                                    if rng.random() < 0.9 else filler for _ in range(n)])
        paths[key] = write(tmp_path / f"{key}.json", records)
    start = time.perf_counter()
    report = score_total({key: load_results(p, SETS[key]) for key, p in paths.items()})
    elapsed = time.perf_counter() - start
    assert report["counts"]["total"] == 11072
    assert elapsed < 2.0, f"scoring FERBench took {elapsed:.2f} s"


def test_wrong_set_in_the_total_names_the_flag_file(tmp_path, capsys, adversarial_records):
    paths = {key: write(tmp_path / f"{key}.json", recs) for key, recs in adversarial_records.items()}
    argv = ["--rafdb", str(paths["rafdb"]), "--ferplus", str(paths["sfew_2.0"]), "--affectnet",
            str(paths["affectnet"]), "--sfew", str(paths["sfew_2.0"]), "--output", str(tmp_path / "t.json"),
            "--no-figs"]
    assert total_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{paths['sfew_2.0']}: record 0" in err and "SFEW 2.0 results" in err and "not FERPlus" in err


def test_load_results_raises_data_error_with_place(tmp_path):
    path = _bad(tmp_path, lambda rs: rs[6].update(true_label="joy"))
    with pytest.raises(DataError) as e:
        load_results(path, RAF)
    assert (e.value.index, e.value.field) == (6, "true_label")


def test_scoring_with_default_flags_writes_figures_beside_the_metrics_and_never_into_figs(tmp_path):
    """Scoring your own results must leave the checkout's tracked figs/ alone (only --figs-dir copies there)."""
    home = _fake_home(tmp_path, random.Random(2))
    (home / "figs").mkdir()
    for name in ("eval_rafdb", "eval_total"):
        run = _script(name, home, tmp_path)
        assert run.returncode == 0, run.stderr
    assert list((home / "figs").iterdir()) == []
    assert (home / "eval_rafdb/results/rafdb_unifer_7b_confusion.png").stat().st_size > 1000
    assert {p.name for p in (home / "eval_total/results").glob("*.png")} == {
        "unifer_7b_accuracy.png", "unifer_7b_confusion.png"}
