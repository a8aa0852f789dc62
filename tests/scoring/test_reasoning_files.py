"""The per-set and total scorers write the reasoning block and the per-item files (unifer.scoring.files)."""
from __future__ import annotations

import json

from helpers import answer, dump, results_record

from unifer.data.runmeta import write_meta
from unifer.data.sets import SETS, get_set
from unifer.scoring.files import score_set_files, score_total_files

RAF = get_set("rafdb")


def rafdb_results(tmp_path):
    recs = [
        results_record(RAF, "/f/0.png", "happiness", answer("happiness", "A broad smile and raised cheeks.")),
        results_record(RAF, "/f/1.png", "sadness", answer("happiness", "A broad smile.")),
        results_record(RAF, "/f/2.png", "anger", answer("anger", "A broad smile; she looks happy")),
        results_record(RAF, "/f/3.png", "fear", "<think>Eyes wide and the mouth", usage={"completion_tokens": 8}),
        results_record(RAF, "/f/4.png", "fear", "ERROR: unreadable", error=True),
    ]
    (tmp_path / "eval_rafdb" / "results").mkdir(parents=True)
    path = dump(tmp_path / "eval_rafdb" / "results" / "rafdb_r1_results.json", recs)
    write_meta(path, {"run": "r1", "decoding": {"max_new_tokens": 8}})
    return path


def test_set_scorer_writes_the_block_and_the_items(tmp_path):
    results = rafdb_results(tmp_path)
    out = results.with_name("rafdb_r1_metrics_strict.json")
    scored = score_set_files("rafdb", results, out, "strict", run="r1", figs=False)
    items_file = results.with_name("rafdb_r1_items_strict.jsonl")
    assert scored.written == [out, items_file]
    metrics = json.loads(out.read_text())
    block = metrics["reasoning"]
    assert block == scored.report["reasoning"] and block["items_file"] == str(items_file)
    items = [json.loads(line) for line in items_file.read_text().splitlines()]
    assert [i["image_path"] for i in items] == [f"/f/{n}.png" for n in range(5)]
    assert set(items[0]) >= {"image_path", "true_label", "predicted", "correct", "has_think", "has_answer",
                             "truncated", "think_label", "think_answer_agree", "cues", "cue_support"}
    assert [i["predicted"] for i in items] == ["happiness", "happiness", "anger", "unknown", None]
    assert [i["cue_support"] for i in items[:4]] == ["supports", "supports", "contradicts", None]
    assert items[2]["think_label"] == "happiness" and items[2]["think_answer_agree"] is False
    assert items[3]["truncated"] and items[4]["error"]
    r = block["rates"]
    assert block["valid"] == 4
    assert (r["right_for_right_reasons"]["k"], r["right_with_contradicting_cues"]["k"]) == (1, 1)
    assert (r["truncated"]["k"], r["agreement"]["k"], r["agreement"]["n"]) == (1, 0, 1)


def test_items_go_beside_a_metrics_file_written_elsewhere(tmp_path):
    results = rafdb_results(tmp_path)
    out = tmp_path / "elsewhere" / "m.json"
    score_set_files("rafdb", results, out, figs=False)
    assert (tmp_path / "elsewhere" / "rafdb_r1_items_paper.jsonl").is_file()


def test_the_total_holds_every_set_and_the_pooled_rates(tmp_path):
    paths = {}
    for key, s in SETS.items():
        recs = [results_record(s, f"/{key}/{i}.png", label, answer(label, f"It shows {label}; a smile."))
                for i, label in enumerate(s.labels)]
        paths[key] = dump(tmp_path / f"{key}.json", recs)
    scored = score_total_files(paths, tmp_path / "total_results.json", figs=False)
    block = json.loads((tmp_path / "total_results.json").read_text())["reasoning"]
    assert set(block["per_set"]) == set(SETS)
    total = sum(len(s.labels) for s in SETS.values())
    assert block["valid"] == total and block["rates"]["agreement"]["k"] == total
    assert block["rates"]["cues"]["k"] == total
    assert scored.report["reasoning"]["per_set"]["rafdb"]["rates"]["think"]["n"] == len(RAF.labels)
