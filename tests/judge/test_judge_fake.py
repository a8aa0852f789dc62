"""``unifer judge`` with the fake engine: ratings, strict parsing, the cache, resume, error lines (unifer.judge)."""
from __future__ import annotations

import argparse
import json

import pytest
from helpers import answer, dump, results_record

from unifer.cli import main as unifer_main
from unifer.data.runmeta import read_meta
from unifer.data.sets import get_set
from unifer.errors import UniferError
from unifer.infer.engines import EngineDeadError
from unifer.judge import cli as judge_cli
from unifer.judge.rubric import Unparseable, load_rubric, parse_rating
from unifer.judge.run import JudgeFile, judge
from unifer.scoring.reasoning_report import judge_path, read_judge_lines

RAF = get_set("rafdb")
GOOD = ('{{"visual_grounding": 4, "consistency": 5, "specificity": 3, "hallucination": "no", '
        '"rationale": "fits {label}"}}')


@pytest.fixture
def results(tmp_path):
    recs = [results_record(RAF, f"/f/{i}.png", label, answer(label, f"Raised cheeks; {label}."))
            for i, label in enumerate(RAF.labels[:5])]
    recs.insert(2, results_record(RAF, "/f/err.png", "fear", "ERROR: unreadable", error=True))
    return dump(tmp_path / "rafdb_r1_results.json", recs)


def plan(results, *extra, template=GOOD):
    ap = argparse.ArgumentParser()
    judge_cli.add_arguments(ap)
    return judge_cli.plan(ap.parse_args(["--set", "rafdb", "--results", str(results), "--engine", "fake",
                                         "--model", "judge-x", "--fake-template", template, *extra]))


def lines(results):
    return read_judge_lines(judge_path(results))


def test_every_answered_item_is_rated_with_its_judge_recorded(results, capsys):
    assert unifer_main(["judge", "--set", "rafdb", "--results", str(results), "--engine", "fake", "--model",
                        "judge-x", "--fake-template", GOOD]) == 0
    out = lines(results)
    assert [x["image_path"] for x in out] == [f"/f/{i}.png" for i in range(5)]  # the error item is not judged
    assert all(x["visual_grounding"] == 4 and x["hallucination"] is False and x["judge"] == "judge-x/"
               "ferbench-reasoning/v1" for x in out)
    assert out[0]["rationale"].startswith("fits ")
    meta = read_meta(judge_path(results))
    assert meta["rubric"] == "ferbench-reasoning/v1" and meta["engine"] == "fake" and meta["with_image"] is False
    assert meta["decoding"]["max_new_tokens"] == load_rubric().max_new_tokens
    assert "5 rated, 0 errors, 0 cached" in capsys.readouterr().out


def test_the_prompt_holds_the_response_and_the_answer(results):
    from unifer.infer.engines.fake import FakeEngine, FakeOptions

    job = plan(results)
    engine = FakeEngine("judge-x", options=FakeOptions(template=GOOD), decoding=job.config.decoding)
    judge(job, engine)
    prompt = engine.seen[0][0]
    assert "Raised cheeks; surprise." in prompt and "final answer was: surprise" in prompt
    assert "You do not see the image" in prompt


def test_a_rerun_costs_nothing_and_a_change_is_rated_again(results):
    first = judge(plan(results))
    before = judge_path(results).read_bytes()
    again = judge(plan(results))
    assert (first["rated"], again["rated"], again["cached"]) == (5, 0, 5)
    assert judge_path(results).read_bytes() == before
    recs = json.loads(results.read_text())
    recs[0]["model_response"] = answer("surprise", "Mouth open.")
    results.write_text(json.dumps(recs))
    changed = judge(plan(results))
    assert (changed["rated"], changed["cached"]) == (1, 4)
    other_judge = judge(plan(results, "--max-new-tokens", "300"))  # another decoding is another judge
    assert other_judge["rated"] == 5


def test_an_unparseable_rating_is_retried_then_an_error_line(results):
    stats = judge(plan(results, "--limit", "2", template="The grounding is good, 4/5."))
    assert (stats["rated"], stats["errors"], stats["parse_retries"]) == (0, 2, 4)
    err = lines(results)[0]["error"]
    assert err.startswith("unparseable after 3 attempts: not a JSON object") and "4/5" in err
    assert not any(k in lines(results)[0] for k in ("visual_grounding", "hallucination"))
    kept = judge(plan(results, "--limit", "2"))  # error lines are kept ...
    assert (kept["rated"], kept["cached"]) == (0, 2)
    retried = judge(plan(results, "--limit", "2", "--retry-errors"))  # ... unless asked
    assert retried["rated"] == 2 and all("error" not in x for x in lines(results))


def test_a_failed_request_is_an_error_line_with_its_reason(results):
    stats = judge(plan(results, "--fake-fail-items", "2"))
    assert (stats["rated"], stats["errors"]) == (4, 1)
    assert lines(results)[1]["error"] == "fake failure of request 2"


def test_kill_and_rerun_writes_what_one_run_writes(results, tmp_path):
    whole = tmp_path / "whole.jsonl"
    judge(plan(results, "--output", str(whole), "--batch-size", "2"))
    broken = tmp_path / "broken.jsonl"
    with pytest.raises(EngineDeadError):
        judge(plan(results, "--output", str(broken), "--batch-size", "2", "--fake-engine-failure-at-call", "2"))
    assert len(read_judge_lines(broken)) == 2
    with open(broken, "a") as f:
        f.write('{"image_path": "/f/3.png", "ke')  # a kill mid-line
    stats = judge(plan(results, "--output", str(broken), "--batch-size", "2"))
    assert (stats["cached"], stats["rated"]) == (2, 3)
    assert broken.read_bytes() == whole.read_bytes()


def test_a_second_run_on_the_same_file_is_refused(tmp_path):
    held = JudgeFile(tmp_path / "j.jsonl", overwrite=False)
    try:
        with pytest.raises(UniferError, match="another judge run is writing"):
            JudgeFile(tmp_path / "j.jsonl", overwrite=False)
    finally:
        held.close()


def test_structured_output_follows_the_engine(results):
    assert plan(results).config.decoding.json_schema is None  # fake: no constraint, strict parsing
    assert plan(results, "--structured", "regex").config.decoding.regex == load_rubric().regex()
    schema = plan(results, "--structured", "json").config.decoding.json_schema
    assert schema["required"] == ["visual_grounding", "consistency", "specificity", "hallucination", "rationale"]


GOOD_RATING = {"visual_grounding": 1, "consistency": 5, "specificity": 2, "hallucination": "yes", "rationale": "x"}
PARSE_CASES = [
    ("exact", json.dumps(GOOD_RATING), None),
    ("fenced", "```json\n" + json.dumps(GOOD_RATING) + "\n```", None),
    ("text around", "Sure! " + json.dumps(GOOD_RATING), "not a JSON object"),
    ("a list", "[1, 2]", "expected a JSON object"),
    ("missing key", json.dumps({k: v for k, v in GOOD_RATING.items() if k != "specificity"}), "missing specificity"),
    ("extra key", json.dumps({**GOOD_RATING, "score": 3}), "unexpected score"),
    ("out of range", json.dumps({**GOOD_RATING, "consistency": 6}), "consistency must be an integer 1-5"),
    ("a string score", json.dumps({**GOOD_RATING, "consistency": "5"}), "consistency must be an integer"),
    ("a boolean score", json.dumps({**GOOD_RATING, "consistency": True}), "consistency must be an integer"),
    ("hallucination true", json.dumps({**GOOD_RATING, "hallucination": True}), "hallucination must be"),
    ("empty rationale", json.dumps({**GOOD_RATING, "rationale": " "}), "rationale must be"),
]


@pytest.mark.parametrize("case,text,error", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_rating_is_strict(case, text, error):
    if error is None:
        assert parse_rating(text) == {**GOOD_RATING, "hallucination": True}
    else:
        with pytest.raises(Unparseable, match=error):
            parse_rating(text)


def test_the_regex_admits_what_the_parser_takes():
    import re

    rubric = load_rubric()
    text = ('{"visual_grounding": 3, "consistency": 4, "specificity": 2, "hallucination": "no", '
            '"rationale": "Brows (AU4) are named; it fits."}')
    assert re.fullmatch(rubric.regex(), text)
    assert parse_rating(text)["consistency"] == 4


def test_a_broken_rubric_is_one_line(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("version: 1\nname: x\nprompt: '{nope}'\nratings: {visual_grounding: a, consistency: b, "
                   "specificity: c, hallucination: d}\nimage_note_with: a\nimage_note_without: b\n")
    with pytest.raises(UniferError, match="does not format"):
        load_rubric(bad)


def _parse(argv):
    ap = argparse.ArgumentParser()
    judge_cli.add_arguments(ap)
    return ap.parse_args(argv)


@pytest.mark.parametrize("extra,fragment", [
    (["--engine", "fake", "--limit", "0"], "--limit must be at least 1"),
    (["--engine", "fake", "--parse-retries", "-1"], "--parse-retries must be >= 0"),
    (["--engine", "openai"], "needs --base-url"),
])
def test_bad_flags_are_one_line(results, extra, fragment):
    with pytest.raises(UniferError, match=fragment):
        judge_cli.plan(_parse(["--set", "rafdb", "--results", str(results), "--model", "judge-x", *extra]))


def test_a_local_engine_judges_with_the_image(results, tiny_model):
    argv = ["--set", "rafdb", "--results", str(results), "--engine", "hf", "--model", str(tiny_model)]
    with pytest.raises(UniferError, match="needs an image per request: add --with-image"):
        judge_cli.plan(_parse(argv))
    assert judge_cli.plan(_parse([*argv, "--with-image"])).config.with_image
