"""The leaderboard's reasoning section and judge table (unifer.scoring.reasoning_report via unifer leaderboard)."""
from __future__ import annotations

import csv
import io
import json

from unifer.cli import main as unifer_main
from unifer.data.sets import SET_KEYS, get_set
from unifer.scoring.reasoning_report import judge_path, judge_summary, mean_interval

RESPONSES = {
    "grounded": lambda t: f"<think>Raised cheeks and a broad smile; the face is {t}.</think><answer>{t}</answer>",
    "bare": lambda t: f"<answer>{t}</answer>",
}


def write_run(root, run: str, kind: str) -> dict:
    files = {}
    for key in SET_KEYS:
        s = get_set(key)
        recs = [{"image_path": f"/{key}/{n}.jpg", "true_label": t, "prompt": s.prompt,
                 "candidate_labels": list(s.labels), "model_response": RESPONSES[kind](t)}
                for n, t in enumerate(s.labels)]
        folder = root / f"eval_{key}" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        files[key] = folder / f"{key}_{run}_results.json"
        files[key].write_text(json.dumps(recs), encoding="utf-8")
        (folder / f"{key}_{run}_metrics.json").write_text("{}", encoding="utf-8")
    return files


def test_reasoning_columns_and_judge_table(tmp_path, capsys):
    grounded = write_run(tmp_path, "grounded", "grounded")
    write_run(tmp_path, "bare", "bare")
    lines = [{"image_path": "/rafdb/0.jpg", "visual_grounding": 4, "consistency": 5, "specificity": 3,
              "hallucination": False, "rationale": "ok", "judge": "judge-m/v1"},
             {"image_path": "/rafdb/1.jpg", "visual_grounding": 2, "consistency": 3, "specificity": 1,
              "hallucination": True, "rationale": "invented", "judge": "judge-m/v1"},
             {"image_path": "/rafdb/2.jpg", "error": "unparseable after 3 attempts"}]
    judge_path(grounded["rafdb"]).write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn', "utf-8")
    out = tmp_path / "lb"
    assert unifer_main(["leaderboard", "--root", str(tmp_path), "--out", str(out), "--no-figs"]) == 0
    md = (out / "leaderboard.md").read_text()
    section = md[md.index("## Reasoning"):md.index("### Judge")]
    rows = {line.split("|")[2].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "100.0" in rows["`grounded`"].split("|")[3]  # every item thinks
    assert rows["`bare`"].split("|")[3].strip().startswith("0.0")
    judge = md[md.index("### Judge"):]
    assert "`grounded`" in judge and "`bare`" not in judge and "judge-m/v1" in judge
    assert "3.00 [" in judge and "50.0%" in judge  # mean grounding (4 + 2) / 2, one of two hallucinating
    table = {r["run"]: r for r in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    assert float(table["grounded"]["reasoning_right_for_right_reasons"]) > 0
    assert table["bare"]["reasoning_cues"] == "0.0" and table["bare"]["judge_items"] == ""
    assert table["grounded"]["judge_items"] == "3" and table["grounded"]["judge_errors"] == "1"


def test_judge_summary_and_intervals():
    s = judge_summary([{"image_path": "a", "visual_grounding": 5, "consistency": 5, "specificity": 5,
                        "hallucination": False}, {"image_path": "b", "error": "x"}])
    assert (s["rated"], s["errors"], s["visual_grounding"]["mean"]) == (1, 1, 5.0)
    m = mean_interval([1.0, 2.0, 3.0])
    assert m["mean"] == 2.0 and round(m["high"] - m["mean"], 4) == round(1.959964 / 3 ** 0.5, 4)
