"""The deterministic reasoning metrics, one hand-written response per rule (unifer.scoring.reasoning)."""
from __future__ import annotations

import random
import time

import pytest

from unifer.data.sets import SETS
from unifer.errors import UniferError
from unifer.scoring.aggregate import extract_label
from unifer.scoring.reasoning import (
    analyze,
    analyze_records,
    cue_spans,
    find_cues,
    load_lexicon,
    phrase_variants,
    think_label,
)
from unifer.scoring.reasoning_report import aggregate, items_path, wilson


def resp(think: str | None, answer: str | None) -> str:
    return (f"<think>{think}</think>" if think is not None else "") + (f"<answer>{answer}</answer>" if answer else "")


# (case, set, response, answered label, expected flags (a subset))
CASES = [
    ("plain agreement", "rafdb", resp("The face looks sad.", "sadness"), "sadness",
     {"has_think": True, "has_answer": True, "truncated": False, "think_label": "sadness", "think_answer_agree": True}),
    ("negated label: not", "rafdb", resp("She is not happy; she looks angry.", "anger"), "anger",
     {"think_label": "anger", "think_answer_agree": True}),
    ("negated last label: rather than", "rafdb", resp("This is fear rather than surprise.", "fear"), "fear",
     {"think_label": "fear"}),
    ("negated: instead of", "rafdb", resp("I see disgust instead of anger", "disgust"), "disgust",
     {"think_label": "disgust"}),
    ("negated: unlike", "rafdb", resp("The mouth is open, unlike surprise", "surprise"), "surprise",
     {"think_label": None, "think_answer_agree": None}),
    ("negated: no", "rafdb", resp("There is no fear here", "fear"), "fear", {"think_label": None}),
    ("negated: n't", "ferplus", resp("He isn't happy", "sad"), "sad", {"think_label": None}),
    ("negation reaches three words only", "rafdb", resp("It is not at all like fear", "fear"), "fear",
     {"think_label": "fear"}),
    ("negation stops at the clause", "rafdb", resp("There is no frown. Happy.", "happiness"), "happiness",
     {"think_label": "happiness"}),
    ("synonym of the set", "rafdb", resp("A joyful, happy face.", "happiness"), "happiness",
     {"think_label": "happiness", "think_answer_agree": True}),
    ("synonym of another set's spelling", "ferplus", resp("Clear happiness.", "happy"), "happy",
     {"think_label": "happy"}),
    ("inflected form", "rafdb", resp("She appears surprised.", "surprise"), "surprise", {"think_label": "surprise"}),
    ("whole words: unhappy is not happy", "ferplus", resp("He seems unhappy.", "sad"), "sad",
     {"think_label": "sad"}),
    ("two labels named: the last counts", "rafdb", resp("At first fear, but on reflection sadness.", "fear"), "fear",
     {"think_label": "sadness", "think_answer_agree": False}),
    ("no think", "rafdb", resp(None, "anger"), "anger",
     {"has_think": False, "has_answer": True, "think_label": None, "think_answer_agree": None, "cues": []}),
    ("empty think", "rafdb", "<think> </think><answer>anger</answer>", "anger", {"has_think": False}),
    ("truncated in the think", "rafdb", "<think>The brows are furrowed and", "unknown",
     {"has_think": True, "has_answer": False, "truncated": True, "cues": ["AU4"], "cue_support": None}),
    ("truncated in the answer", "rafdb", "<think>sad</think><answer>sadn", "sadness",
     {"truncated": True, "has_answer": False}),
    ("no tags at all", "rafdb", "The person smiles. happiness", "happiness",
     {"has_think": False, "has_answer": False, "truncated": False, "cues": ["AU12"]}),
    ("unknown answer", "rafdb", resp("hard to say", "a face"), "unknown",
     {"think_answer_agree": None, "cue_support": "none"}),
    # the prototypes, one each
    ("happiness prototype", "rafdb", resp("Raised cheeks and lip corners pulled up.", "happiness"), "happiness",
     {"cues": ["AU6", "AU12"], "cue_support": "supports"}),
    ("sadness prototype", "rafdb",
     resp("Inner brows raised, brows drawn together, corners of the mouth turned down.", "sadness"), "sadness",
     {"cues": ["AU1", "AU4", "AU15"], "cue_support": "supports"}),
    ("surprise prototype", "rafdb", resp("Raised eyebrows, wide open eyes and the mouth open.", "surprise"),
     "surprise", {"cues": ["AU1", "AU2", "AU5", "AU26"], "cue_support": "supports"}),
    ("fear prototype", "rafdb",
     resp("Raised eyebrows, furrowed brows, eyes wide, tense eyelids, lips stretched, mouth open.", "fear"), "fear",
     {"cues": ["AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26"], "cue_support": "supports"}),
    ("anger prototype", "rafdb", resp("Furrowed brows, eyes wide, narrowed eyes, tightened lips.", "anger"), "anger",
     {"cues": ["AU4", "AU5", "AU7", "AU23"], "cue_support": "supports"}),
    ("disgust prototype", "rafdb",
     resp("A wrinkled nose, downturned mouth and the lower lip pulled down.", "disgust"), "disgust",
     {"cues": ["AU9", "AU15", "AU16"], "cue_support": "supports"}),
    ("contempt prototype", "ferplus", resp("A one-sided smile.", "contempt"), "contempt",
     {"cues": ["AU12", "AU14"], "cue_support": "supports"}),
    ("neutral prototype", "rafdb", resp("Relaxed facial muscles.", "neutral"), "neutral",
     {"cues": ["AU0"], "cue_support": "supports"}),
    ("contradicting cues", "rafdb", resp("A broad smile with raised cheeks.", "sadness"), "sadness",
     {"cues": ["AU6", "AU12"], "cue_support": "contradicts"}),
    ("mixed cues: a tie", "ferplus", resp("She is smiling.", "happy"), "happy",
     {"cues": ["AU12"], "cue_support": "mixed"}),
    ("mixed cues: another fits better", "rafdb", resp("Raised eyebrows, mouth open.", "fear"), "fear",
     {"cue_support": "mixed"}),
    ("a prototype absent from the set does not compete", "rafdb", resp("She is smiling.", "happiness"),
     "happiness", {"cue_support": "supports"}),
    ("no cue", "rafdb", resp("It is anger.", "anger"), "anger", {"cues": [], "cue_support": "none"}),
    ("negated cue", "rafdb", resp("There is no smile and no furrowed brows.", "neutral"), "neutral",
     {"cues": [], "cue_support": "none"}),
    ("cue outside a think block", "rafdb", "Her brows are furrowed. <answer>anger</answer>", "anger",
     {"cues": ["AU4"], "has_think": False}),
]


@pytest.mark.parametrize("case,set_key,response,answered,expected", CASES, ids=[c[0] for c in CASES])
def test_flags(case, set_key, response, answered, expected):
    got = analyze(response, set_key, answered)
    assert {k: got[k] for k in expected} == expected


def test_the_budget_marks_a_response_that_used_it_all():
    r = resp("sad", "sadness")
    assert analyze(r, "rafdb", "sadness", budget=100, usage={"completion_tokens": 100})["truncated"]
    assert not analyze(r, "rafdb", "sadness", budget=100, usage={"completion_tokens": 99})["truncated"]


def test_phrase_syntax():
    spelled = {" ".join(w) for w in phrase_variants("(eye)brow(s) (are |)(raised|lifted) crow(')s")}
    assert len(spelled) == 32 and {"brows raised crows", "eyebrow are lifted crow's"} <= spelled
    for text in ("brows raised", "eyebrows are lifted", "brow-raised", "Eyebrow  RAISED"):
        assert find_cues(f"the {text} here") == ["AU1", "AU2"], text
    for text in ("brows are", "ebrows raised", "brows were raised", "brows, raised", "eyebrowsraised"):
        assert find_cues(f"the {text} here") == [], text


def test_spans_point_into_the_original_text():
    text = "She SMILES, with Raised  Cheeks; no frown."
    spans = cue_spans(text)
    assert [(text[a:b], units, neg) for a, b, units, neg in spans] == [
        ("SMILES", ("AU12",), False), ("Raised  Cheeks", ("AU6",), False), ("frown", ("AU4",), True)]


def test_lexicon_covers_every_prototype_with_phrases():
    lex = load_lexicon()
    assert set(lex.prototypes) == {"happiness", "sadness", "surprise", "fear", "anger", "disgust", "contempt",
                                   "neutral"}
    assert set().union(*lex.prototypes.values()) <= lex.phrase_units
    assert lex.names["AU12"] == "Lip corner puller"
    # the label in a prototype's own name is not a cue: "smile" is, "happy" is not
    assert find_cues("happy sad angry fearful") == []


def test_a_malformed_lexicon_is_one_line(tmp_path):
    bad = tmp_path / "facs.yaml"
    bad.write_text("units:\n  AU1: {name: x, phrases: ['(unclosed']}\n")
    with pytest.raises(UniferError, match=r"facs.yaml: unclosed"):
        load_lexicon(str(bad))
    bad.write_text("units:\n  AU1: {name: x, phrases: []}\nprototypes:\n  joy: [AU99]\n")
    with pytest.raises(UniferError, match="prototype joy: unknown unit"):
        load_lexicon(str(bad))


def test_think_label_ignores_missing_text():
    assert think_label(None, "rafdb") is None and think_label("", "rafdb") is None


def test_aggregate_counts_rates_over_valid_items():
    records = [
        {"image_path": "a", "true_label": "happiness",
         "model_response": resp("A smile, raised cheeks. Happy.", "happiness")},
        {"image_path": "b", "true_label": "sadness", "model_response": resp("A smile. Happy.", "happiness")},
        {"image_path": "c", "true_label": "anger", "model_response": resp("A broad smile", "anger")},
        {"image_path": "d", "true_label": "fear", "error": True},
    ]
    preds = [extract_label(r["model_response"], "rafdb") if not r.get("error") else None for r in records]
    items = analyze_records(records, "rafdb", preds)
    assert items[3]["error"] and items[3]["correct"] is None
    assert [i["correct"] for i in items[:3]] == [True, False, True]
    agg = aggregate(items)
    r = agg["rates"]
    assert agg["items"] == 4 and agg["valid"] == 3
    assert r["think"]["k"] == 3 and r["think"]["n"] == 3
    assert r["agreement"]["n"] == 2 and r["agreement"]["k"] == 2  # c names no label
    assert r["supports"]["k"] == 2 and r["contradicts"]["k"] == 1
    assert r["right_for_right_reasons"]["k"] == 1 and r["right_with_contradicting_cues"]["k"] == 1
    assert r["think"]["low"] < 1 and r["think"]["high"] == 1.0


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0, 0) is None


def test_items_path(tmp_path):
    assert items_path(tmp_path / "rafdb_run1_results.json", "strict").name == "rafdb_run1_items_strict.jsonl"


def test_ferbench_size_in_a_few_seconds():
    """~11k responses of realistic length: every flag of every item in a few seconds."""
    rng = random.Random(0)
    phrases = ["the inner brows are raised", "furrowed brows", "a broad smile", "raised cheeks", "mouth open",
               "no frown", "the corners of the mouth turned down", "eyes wide", "the face", "looks", "not angry"]
    s = SETS["affectnet"]
    records = []
    for i in range(11_000):
        words = " ".join(rng.choice(phrases) for _ in range(60))
        label = rng.choice(s.labels)
        records.append({"image_path": f"{i}.png", "true_label": label,
                        "model_response": resp(f"{words}. It is {rng.choice(s.labels)}.", label)})
    start = time.perf_counter()
    preds = [extract_label(r["model_response"], s) for r in records]
    agg = aggregate(analyze_records(records, s.key, preds))
    seconds = time.perf_counter() - start
    assert agg["valid"] == 11_000 and agg["rates"]["think"]["rate"] == 1.0
    assert seconds < 8, f"{seconds:.1f}s for 11k responses"
