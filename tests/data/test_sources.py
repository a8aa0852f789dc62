"""Sources of labelled faces: the four training layouts through `ferbench build --split train`, any labelled
folder, CSV and JSON Lines of image_path,label — and one line per bad row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import in_process, tiny_image

from unifer.cli import main as unifer_main
from unifer.data.ferbench import main as ferbench_main
from unifer.data.records import load_records
from unifer.data.sets import PROMPT_TEMPLATE, get_set

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal")


@pytest.fixture
def train_tree(tmp_path) -> Path:
    """The four datasets' training splits (and one test image, which --split train must leave out)."""
    root = tmp_path / "raw"
    raf = [("train_00001", 1), ("train_00002", 4), ("test_0001", 5)]
    for stem, _ in raf:
        tiny_image(root / f"RAF-DB/aligned/{stem}_aligned.jpg")
    (root / "RAF-DB/EmoLabel").mkdir(parents=True)
    (root / "RAF-DB/EmoLabel/list_patition_label.txt").write_text("".join(f"{s}.jpg {i}\n" for s, i in raf))
    for n in ("angry/d.png", "happy/e.png"):
        tiny_image(root / "FERPlus/train" / n)
    rows = [AFFECTNET_HEADER]
    for sub, expr in (("3/z.jpg", 6), ("3/w.jpg", 0)):
        tiny_image(root / "AffectNet/Manually_Annotated/train" / sub)
        rows.append(f"{sub},0,0,6,5,,{expr},0,0")
    (root / "AffectNet/training.csv").write_text("\n".join(rows) + "\n")
    tiny_image(root / "SFEW-2.0/Train/Train_Aligned_Faces/Fear/t1.png")
    return root


def test_build_split_train_writes_qa_shaped_train_records_for_the_four_sets(train_tree, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = in_process(ferbench_main, "build", "--image-root", train_tree, "--split", "train",
                                 "--out-dir", out)
    assert rc == 0, err
    got = {key: {r["image_path"]: r["true_label"] for r in load_records(out / f"{key}_train_qa.json", "qa",
                                                                         image_root=train_tree)}
           for key in ("rafdb", "ferplus", "affectnet", "sfew_2.0")}
    assert got == {
        "rafdb": {"/RAF-DB/aligned/train_00001_aligned.jpg": "surprise",
                  "/RAF-DB/aligned/train_00002_aligned.jpg": "happiness"},
        "ferplus": {"/FERPlus/train/angry/d.png": "angry", "/FERPlus/train/happy/e.png": "happy"},
        "affectnet": {"/AffectNet/Manually_Annotated/train/3/z.jpg": "anger",
                      "/AffectNet/Manually_Annotated/train/3/w.jpg": "neutral"},
        "sfew_2.0": {"/SFEW-2.0/Train/Train_Aligned_Faces/Fear/t1.png": "fear"}}
    first = json.loads((out / "ferplus_train_qa.json").read_text())[0]
    assert first["prompt"] == get_set("ferplus").prompt
    assert first["candidate_labels"] == list(get_set("ferplus").labels)
    assert not (out / "rafdb_qa.json").exists()  # the benchmark file is not touched by a train build


def records_cli(*args):
    return in_process(unifer_main, "data", "records", *args)


def test_labelled_folder_with_a_sets_synonyms(tmp_path):
    root = tmp_path / "root"
    for name in ("Happy/1.png", "joy/2.jpg", "Sad/3.png", "anger/4.png"):
        tiny_image(root / "lab" / "faces" / name)
    (root / "lab/faces/Happy/notes.txt").write_text("not an image")
    out = tmp_path / "qa.json"
    rc, stdout, err = records_cli(root / "lab" / "faces", "--image-root", root, "--set", "rafdb", "--out", out)
    assert rc == 0, err
    recs = load_records(out, "qa", image_root=root)
    assert {r["image_path"]: r["true_label"] for r in recs} == {
        "/lab/faces/Happy/1.png": "happiness", "/lab/faces/joy/2.jpg": "happiness",
        "/lab/faces/Sad/3.png": "sadness", "/lab/faces/anger/4.png": "anger"}
    assert recs[0]["prompt"] == get_set("rafdb").prompt
    assert "4 records" in stdout


def test_csv_and_jsonl_with_custom_labels_one_line_per_bad_row(tmp_path):
    root = tmp_path / "root"
    for n in ("a.png", "b.png", "c.png"):
        tiny_image(root / "img" / n)
    csv = tmp_path / "faces.csv"
    csv.write_text("image_path,label\nimg/a.png,Pain\n/img/b.png,calm\nimg/missing.png,pain\n"
                   "img/c.png,joy\nimg/a.png,calm\nonlyone\n")
    out = tmp_path / "qa.jsonl"
    rc, stdout, err = records_cli(csv, "--image-root", root, "--labels", "pain,calm", "--out", out)
    assert rc == 2 and not out.exists()
    bad = [line for line in err.splitlines() if line.startswith("bad row: ")]
    assert bad == [
        f"bad row: {csv}: line 4: image not found: {root / 'img/missing.png'}",
        f"bad row: {csv}: line 5: unknown label 'joy' (the labels are: pain, calm)",
        f"bad row: {csv}: line 6: /img/a.png is labelled 'calm' here and 'pain' at line 2",
        f"bad row: {csv}: line 7: expected image_path,label, found 'onlyone'"]
    assert "4 bad rows" in err and "--skip-bad-rows" in err

    rc, stdout, err = records_cli(csv, "--image-root", root, "--labels", "pain,calm", "--out", out, "--skip-bad-rows")
    assert rc == 0, err
    recs = load_records(out, "qa")
    assert [(r["image_path"], r["true_label"]) for r in recs] == [("/img/a.png", "pain"), ("/img/b.png", "calm")]
    assert recs[0]["prompt"] == PROMPT_TEMPLATE.format(labels="pain, calm")
    assert recs[0]["candidate_labels"] == ["pain", "calm"]

    jl = tmp_path / "faces.jsonl"
    jl.write_text('{"image_path": "img/c.png", "label": "calm"}\n{broken\n{"image_path": "img/b.png"}\n')
    rc, _, err = records_cli(jl, "--image-root", root, "--labels", "pain,calm", "--out", out)
    bad = [line for line in err.splitlines() if line.startswith("bad row: ")]
    assert rc == 2 and len(bad) == 2
    assert bad[0].startswith(f"bad row: {jl}: line 2: not JSON")
    assert bad[1] == f"bad row: {jl}: line 3: empty or missing label for img/b.png"


def test_a_source_without_a_vocabulary_or_with_two_is_refused(tmp_path):
    root = tmp_path / "root"
    tiny_image(root / "f" / "happy" / "1.png")
    rc, _, err = records_cli(root / "f", "--image-root", root, "--out", tmp_path / "x.json")
    assert rc == 2 and "--set KEY" in err and "--labels" in err
    rc, _, err = records_cli(root / "f", "--image-root", root, "--out", tmp_path / "x.json", "--set", "rafdb",
                             "--labels", "a,b")
    assert rc == 2 and "not both" in err


def test_qa_and_rlvr_files_are_sources_too(train_tree, tmp_path):
    from unifer.data.sources import load_source

    out = tmp_path / "out"
    rc, _, err = in_process(ferbench_main, "build", "--image-root", train_tree, "--split", "train", "--out-dir", out,
                            "--datasets", "rafdb")
    assert rc == 0, err
    qa = json.loads((out / "rafdb_train_qa.json").read_text())
    loaded = load_source(out / "rafdb_train_qa.json", train_tree)  # no --set needed: the records carry their labels
    assert loaded.records == qa and not loaded.bad
    raf = get_set("rafdb")
    rlvr = [{"image_path": r["image_path"], "problem": raf.prompt, "solution": f"<answer>{r['true_label']}</answer>"}
            for r in qa]
    rlvr.append({"image_path": "/RAF-DB/aligned/train_00001_aligned.jpg", "problem": raf.prompt,
                 "solution": "<answer>contempt</answer>"})
    (tmp_path / "rlvr.json").write_text(json.dumps(rlvr))
    loaded = load_source(tmp_path / "rlvr.json", train_tree)
    assert loaded.records == qa
    assert loaded.bad == [f"{tmp_path / 'rlvr.json'}: record 2: label 'contempt' is not one of the candidates "
                          f"{list(raf.labels)}"]
