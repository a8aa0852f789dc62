"""The report's reasoning: cues at their place in each response, the three reasoning flags per protocol, the rates
table and the judge's table (unifer.report.reasoning_view through build_payload; the page itself: a browser test
that runs where chromium is installed)."""
from __future__ import annotations

import json

import pytest
from helpers import answer

from unifer.data.sets import SETS
from unifer.report.build import build_payload, load_run, write_report
from unifer.report.reasoning_view import DISAGREE, TRUNCATED, WRONG_REASONS
from unifer.scoring.reasoning_report import judge_path

RESPONSES = [
    ("happiness", answer("happiness", "A broad smile and raised cheeks. Happy.")),  # right, supporting cues
    ("sadness", answer("sadness", "A broad smile; no frown. The face is happy.")),  # right, wrong reasons
    ("anger", "<think>The brows are furrowed and"),  # truncated
]


def write_runs(tmp_path):
    paths = {}
    for key, s in SETS.items():
        recs = []
        for n, label in enumerate(s.labels[:3]):
            response = answer(label, f"It is {label}.")
            if key == "rafdb":
                label, response = RESPONSES[n]
            recs.append({"image_path": f"/{key}/{n}.png", "true_label": label, "prompt": s.prompt,
                         "candidate_labels": list(s.labels), "model_response": response})
        paths[key] = tmp_path / f"{key}_r_results.json"
        paths[key].write_text(json.dumps(recs), encoding="utf-8")
    return paths


def test_payload_holds_cues_flags_and_tables(tmp_path):
    paths = write_runs(tmp_path)
    judge_path(paths["rafdb"]).write_text(json.dumps(
        {"image_path": "/rafdb/0.png", "visual_grounding": 5, "consistency": 4, "specificity": 3,
         "hallucination": False, "rationale": "ok", "judge": "j/v1"}) + "\n", encoding="utf-8")
    payload, _ = build_payload(load_run("r", paths), None, "/", "t")
    items, r = payload["items"], payload["reasoning"]
    raf = [i for i, s in enumerate(items["set"]) if payload["sets"][s]["key"] == "rafdb"]
    assert [items["rp"][i] for i in raf] == [0, WRONG_REASONS | DISAGREE, TRUNCATED]
    first = raf[0]
    cues, text = items["cues"][first], items["resp"][first]
    marked = [(text[cues[k]:cues[k + 1]], r["units"][cues[k + 2]]) for k in range(0, len(cues), 3)]
    assert marked == [("smile", "AU12 Lip corner puller"), ("raised cheeks", "AU6 Cheek raiser")]
    second = items["cues"][raf[1]]
    negated = [(items["resp"][raf[1]][second[k]:second[k + 1]], second[k + 2] < 0) for k in range(0, len(second), 3)]
    assert negated == [("smile", False), ("frown", True)]
    header, rows = r["table"]["header"], r["table"]["rows"]
    assert header[:3] == ["Set", "items", "think rate"] and rows[-1][0] == "Total (pooled)"
    assert rows[0][header.index("right for the right reasons")].startswith("33.3")
    assert items["judge"][raf[0]].startswith("judge j/v1: grounding 5, consistency 4") and items["judge"][raf[1]] == ""
    assert r["judge"]["rows"] == [["RAF-DB", "j/v1", "1", "0", "5.00 [5.00–5.00]", "4.00 [4.00–4.00]",
                                   "3.00 [3.00–3.00]", "0.0%"]]


def test_the_page_filters_on_the_reasoning_flags_and_marks_the_cues(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from test_report import chromium_path, opened

    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium found (.ci/run installs Debian's chromium with apt-get)")
    paths = write_runs(tmp_path)
    out = write_report(paths, tmp_path / "report", thumb_size=None)["out"]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            with opened(b, out) as page:
                page.select_option("#f-set", "0")
                page.check("#f-wrongreasons")
                assert int(page.get_attribute("#count", "data-count")) == 1
                page.uncheck("#f-wrongreasons")
                page.check("#f-truncated")
                assert int(page.get_attribute("#count", "data-count")) == 1
                page.uncheck("#f-truncated")
                page.check("#f-thinkdisagree")
                # the list re-renders after the filter: Playwright's expect retries until the re-rendered first card
                # shows it (10 s at most, then it fails)
                card = page.locator("#list article.item").first
                sync_api.expect(card.locator("mark.cue.neg").first).to_have_text("frown", timeout=10000)
                sync_api.expect(card.locator(".badges")).to_contain_text("right for the wrong reasons", timeout=10000)
                assert page.locator("#reasoning-table tr").count() >= 6 and page.is_visible("#judge-box") is False
        finally:
            b.close()
