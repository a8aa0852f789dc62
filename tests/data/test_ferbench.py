"""FERBench build / check / rlvr: the published files rebuilt from a raw tree, every failure mode, the checker."""
from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import in_process
from helpers import tiny_image as plain_image

from unifer.data import sets as registry
from unifer.data.ferbench import main
from unifer.data.raw import AFFECTNET_EXPRESSIONS, RAFDB_IDS
from unifer.data.records import load_records
from unifer.data.sets import SET_KEYS, get_set

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal")


def cli(*args) -> tuple[int, str, str]:
    return in_process(main, *args)


def as_set(records) -> set[str]:
    return {json.dumps(r, sort_keys=True) for r in records}


def touch(root: Path, image_path: str, data: bytes = b"\xff\xd8\xff") -> None:
    p = root / image_path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


# ---------------------------------------------------------------- the published benchmark, rebuilt


@pytest.fixture(scope="module")
def published_tree(shared_ferbench, tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """The raw layouts holding exactly the published files' images (a few bytes each: build never decodes),
    plus what a real download also holds: RAF-DB train lines and images, AffectNet rows with expression 8–10,
    FERPlus and SFEW train folders."""
    root = tmp_path_factory.mktemp("raw")
    published = {k: json.loads((shared_ferbench / get_set(k).qa_filename).read_text()) for k in SET_KEYS}
    lines = ["train_00001.jpg 4", "train_00002.jpg 7"]
    touch(root, "/RAF-DB/aligned/train_00001_aligned.jpg")
    touch(root, "/RAF-DB/aligned/train_00002_aligned.jpg")
    for r in published["rafdb"]:
        touch(root, r["image_path"])
        name = Path(r["image_path"]).name.replace("_aligned.jpg", ".jpg")
        lines.append(f"{name} {RAFDB_IDS.index(r['true_label']) + 1}")
    (root / "RAF-DB/EmoLabel").mkdir()
    (root / "RAF-DB/EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for key in ("ferplus", "sfew_2.0"):
        for r in published[key]:
            touch(root, r["image_path"])
    touch(root, "/FERPlus/train/happy/fer0000001.png")
    touch(root, "/SFEW-2.0/Train/Train_Aligned_Faces/Happy/train_1.png")
    rows = [AFFECTNET_HEADER, "5/none.jpg,0,0,1,1,,8,0,0", "5/uncertain.jpg,0,0,1,1,,9,0,0"]
    for r in published["affectnet"]:
        touch(root, r["image_path"])
        sub = r["image_path"].split("/validation/", 1)[1]
        rows.append(f'{sub},10,12,200,200,"1.0;2.0",{AFFECTNET_EXPRESSIONS.index(r["true_label"])},0.5,-0.2')
    (root / "AffectNet/validation.csv").write_text("\n".join(rows) + "\n")
    return root, published


def test_build_reproduces_the_published_files(published_tree, tmp_path):
    root, published = published_tree
    start = time.perf_counter()
    rc, out, err = cli("build", "--image-root", root, "--out-dir", tmp_path)
    elapsed = time.perf_counter() - start
    assert rc == 0, err
    assert elapsed < 15, f"build took {elapsed:.1f} s for 11,072 records"
    total = 0
    for key in SET_KEYS:
        built = json.loads((tmp_path / get_set(key).qa_filename).read_text())
        assert as_set(built) == as_set(published[key]), key
        assert len(built) == len(published[key])
        assert [r["image_path"] for r in built] == sorted(r["image_path"] for r in built)
        assert load_records(tmp_path / get_set(key).qa_filename, "qa") == built
        total += len(built)
    assert total == 11072
    assert "dropped 2 rows with expression 8–10" in out


def test_build_defaults_to_each_sets_eval_data_folder(published_tree, tmp_path, monkeypatch):
    root, published = published_tree
    monkeypatch.setattr(registry, "REPO_ROOT", tmp_path)
    rc, out, err = cli("build", "--image-root", root, "--datasets", "sfew")
    assert rc == 0, err
    written = tmp_path / "eval_sfew_2.0" / "data" / "sfew_2.0_qa.json"
    assert as_set(json.loads(written.read_text())) == as_set(published["sfew_2.0"])
    assert not (tmp_path / "eval_rafdb").exists()


def test_check_accepts_a_published_file(published_tree, shared_ferbench):
    root, _ = published_tree
    rc, out, err = cli("check", shared_ferbench / "rafdb_qa.json", "--image-root", root, "--no-decode")
    assert rc == 0, err
    assert "3068 records" in out and "set: RAF-DB" in out and "all exist" in out and "OK" in out


# ---------------------------------------------------------------- a small raw tree with real images


tiny_image = partial(plain_image, size=(6, 5), color=(200, 120, 90))


@pytest.fixture
def raw(tmp_path) -> Path:
    """RAF-DB, FERPlus, AffectNet (validation and train) and SFEW 2.0 with a few decodable images each."""
    root = tmp_path / "raw"
    raf = [("test_0001", 4), ("test_0002", 6), ("test_0003", 7), ("train_00001", 1), ("train_00002", 4)]
    for stem, _ in raf:
        tiny_image(root / f"RAF-DB/aligned/{stem}_aligned.jpg")
    (root / "RAF-DB/EmoLabel").mkdir(parents=True)
    (root / "RAF-DB/EmoLabel/list_patition_label.txt").write_text("".join(f"{s}.jpg {i}\n" for s, i in raf))
    for split, names in (("test", ["happy/a.png", "contempt/b.png", "sad/c.png"]), ("train", ["angry/d.png"])):
        for n in names:
            tiny_image(root / "FERPlus" / split / n)
    for split, csv_name, items in (("validation", "validation.csv", [("1/x.jpg", 1), ("22/y.jpg", 7)]),
                                   ("train", "training.csv", [("3/z.jpg", 6), ("3/w.jpg", 0)])):
        rows = [AFFECTNET_HEADER]
        for sub, expr in items:
            tiny_image(root / "AffectNet/Manually_Annotated" / split / sub)
            rows.append(f"{sub},0,0,6,5,,{expr},0,0")
        rows.append("9/nonface.jpg,0,0,6,5,,10,0,0")
        (root / "AffectNet" / csv_name).write_text("\n".join(rows) + "\n")
    for split, names in (("Val", ["Happy/v1.png", "Neutral/v2.png"]), ("Train", ["Fear/t1.png"])):
        for n in names:
            tiny_image(root / "SFEW-2.0" / split / f"{split}_Aligned_Faces" / n)
    return root


def test_build_small_tree_all_sets(raw, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = cli("build", "--image-root", raw, "--out-dir", out)
    assert rc == 0, err
    rafdb = json.loads((out / "rafdb_qa.json").read_text())
    assert [(r["image_path"], r["true_label"]) for r in rafdb] == [
        ("/RAF-DB/aligned/test_0001_aligned.jpg", "happiness"),
        ("/RAF-DB/aligned/test_0002_aligned.jpg", "anger"),
        ("/RAF-DB/aligned/test_0003_aligned.jpg", "neutral")]
    assert rafdb[0]["prompt"] == get_set("rafdb").prompt
    assert rafdb[0]["candidate_labels"] == list(get_set("rafdb").labels)
    ferplus = json.loads((out / "ferplus_qa.json").read_text())
    assert {r["image_path"]: r["true_label"] for r in ferplus} == {
        "/FERPlus/test/contempt/b.png": "contempt", "/FERPlus/test/happy/a.png": "happy",
        "/FERPlus/test/sad/c.png": "sad"}
    affectnet = json.loads((out / "affectnet_qa.json").read_text())
    assert {r["image_path"]: r["true_label"] for r in affectnet} == {
        "/AffectNet/Manually_Annotated/validation/1/x.jpg": "happiness",
        "/AffectNet/Manually_Annotated/validation/22/y.jpg": "contempt"}
    sfew = json.loads((out / "sfew_2.0_qa.json").read_text())
    assert {r["true_label"] for r in sfew} == {"happy", "neutral"}
    # every built file passes check, images decoded
    for key in SET_KEYS:
        rc, stdout, err = cli("check", out / get_set(key).qa_filename, "--image-root", raw, "--no-progress")
        assert rc == 0, err
        assert "all decode" in stdout and "img/s" in stdout


def test_headerless_affectnet_csv_and_csv_flag(raw, tmp_path):
    csv = tmp_path / "val_noheader.csv"
    csv.write_text("1/x.jpg,0,0,6,5,,1,0,0\n22/y.jpg,0,0,6,5,,3,0,0\n")
    rc, _, err = cli("build", "--image-root", raw, "--datasets", "affectnet", "--out-dir", tmp_path,
                     "--affectnet-csv", csv)
    assert rc == 0, err
    built = json.loads((tmp_path / "affectnet_qa.json").read_text())
    assert [r["true_label"] for r in built] == ["happiness", "surprise"]


def test_absent_sets_are_skipped_with_a_note_unless_requested(raw, tmp_path):
    import shutil

    shutil.rmtree(raw / "SFEW-2.0")
    rc, out, err = cli("build", "--image-root", raw, "--out-dir", tmp_path)
    assert rc == 0, err
    assert "sfew_2.0: skipped" in out
    assert not (tmp_path / "sfew_2.0_qa.json").exists() and (tmp_path / "rafdb_qa.json").exists()
    rc, out, err = cli("build", "--image-root", raw, "--datasets", "sfew_2.0", "--out-dir", tmp_path / "b")
    assert rc == 2 and "SFEW-2.0/Val/Val_Aligned_Faces" in err
    assert not (tmp_path / "b").exists()


def _break_rafdb_missing_image(root: Path) -> str:
    (root / "RAF-DB/aligned/test_0002_aligned.jpg").unlink()
    return "test_0002_aligned.jpg"


def _break_rafdb_label_file(root: Path) -> str:
    (root / "RAF-DB/EmoLabel/list_patition_label.txt").unlink()
    return "list_patition_label.txt"


def _break_rafdb_label_id(root: Path) -> str:
    f = root / "RAF-DB/EmoLabel/list_patition_label.txt"
    f.write_text(f.read_text().replace("test_0002.jpg 6", "test_0002.jpg 8"))
    return "line 2: unknown label id '8'"


def _break_rafdb_conflict(root: Path) -> str:
    f = root / "RAF-DB/EmoLabel/list_patition_label.txt"
    f.write_text(f.read_text() + "test_0001.jpg 5\n")
    return "labeled both 'happiness' and 'sadness'"


def _break_ferplus_class(root: Path) -> str:
    tiny_image(root / "FERPlus/test/unknown/q.png")
    return "FERPlus/test/unknown"


def _break_affectnet_expression(root: Path) -> str:
    f = root / "AffectNet/validation.csv"
    f.write_text(f.read_text() + "1/x2.jpg,0,0,6,5,,12,0,0\n")
    return "line 5: unknown expression 12"


def _break_affectnet_missing_image(root: Path) -> str:
    (root / "AffectNet/Manually_Annotated/validation/22/y.jpg").unlink()
    return "validation/22/y.jpg"


def _break_sfew_empty(root: Path) -> str:
    for f in (root / "SFEW-2.0/Val/Val_Aligned_Faces").rglob("*.png"):
        f.unlink()
    return "no images found"


@pytest.mark.parametrize("key,breaker", [
    ("rafdb", _break_rafdb_missing_image), ("rafdb", _break_rafdb_label_file), ("rafdb", _break_rafdb_label_id),
    ("rafdb", _break_rafdb_conflict), ("ferplus", _break_ferplus_class),
    ("affectnet", _break_affectnet_expression), ("affectnet", _break_affectnet_missing_image),
    ("sfew_2.0", _break_sfew_empty)])
def test_a_broken_set_is_one_clear_error_and_is_not_written(raw, tmp_path, key, breaker):
    out = tmp_path / "out"
    out.mkdir()
    previous = out / get_set(key).qa_filename
    previous.write_text("[]\n")  # an earlier build: a failed rebuild must leave it as it was
    expected = breaker(raw)
    rc, stdout, err = cli("build", "--image-root", raw, "--out-dir", out)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], err
    assert "Traceback" not in err
    assert previous.read_text() == "[]\n"
    others = [k for k in SET_KEYS if k != key]
    for k in others:  # the healthy sets are still built
        assert load_records(out / get_set(k).qa_filename, "qa")


def test_two_broken_sets_each_reported(raw, tmp_path):
    _break_rafdb_label_file(raw)
    _break_ferplus_class(raw)
    rc, _, err = cli("build", "--image-root", raw, "--out-dir", tmp_path, "--datasets", "rafdb,ferplus,sfew")
    assert rc == 2
    assert "error: rafdb:" in err and "error: ferplus:" in err and "2 sets failed" in err
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["sfew_2.0_qa.json"]


def test_bad_flags_are_one_line(raw, tmp_path):
    rc, _, err = cli("build", "--image-root", tmp_path / "nowhere", "--out-dir", tmp_path)
    assert rc == 2 and "image root is not a directory" in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    rc, _, err = cli("build", "--image-root", raw, "--datasets", "ckplus", "--out-dir", tmp_path)
    assert rc == 2 and "unknown FERBench set 'ckplus'" in err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback


# ---------------------------------------------------------------- check


def test_check_lists_problems_with_record_indexes(raw, tmp_path):
    rc, _, err = cli("build", "--image-root", raw, "--datasets", "rafdb", "--out-dir", tmp_path)
    assert rc == 0, err
    records = json.loads((tmp_path / "rafdb_qa.json").read_text())
    good = records[0]
    (raw / "RAF-DB/aligned/test_0002_aligned.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    bad = [
        good,
        records[1],  # image that no longer decodes
        {**good, "image_path": "/RAF-DB/aligned/missing.jpg"},
        {**records[2], "true_label": "happy"},
        {**good, "image_path": "/RAF-DB/aligned/train_00001_aligned.jpg", "prompt": get_set("ferplus").prompt},
        {"image_path": "/RAF-DB/aligned/train_00002_aligned.jpg", "true_label": "anger", "prompt": good["prompt"]},
        good,  # a duplicate of record 0
    ]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    rc, out, err = cli("check", f, "--image-root", raw, "--no-progress")
    assert rc == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "record 1, field 'image_path': cannot decode image" in out
    assert "record 2, field 'image_path': image not found" in out
    assert "record 3, field 'true_label': label 'happy' is not one of the candidates" in out
    assert "record 4, field 'prompt': the prompt lists ['angry', 'contempt'" in out
    assert "record 5, field 'candidate_labels': missing field" in out
    assert "record 6, field 'image_path': duplicate image: also record 0" in out
    assert "FAILED: 6 problems" in out
    rc, out, _ = cli("check", f, "--image-root", raw, "--no-progress", "--max-listed", "2")
    assert "problems: 6 (the first 2)" in out and "record 3" not in out


def test_check_unreadable_and_missing_files(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[{"image_path": "a"},')
    rc, _, err = cli("check", f)
    assert rc == 2 and "not valid JSON" in err and str(f) in err
    rc, _, err = cli("check", tmp_path / "absent.json")
    assert rc == 2 and "not found" in err


# ---------------------------------------------------------------- rlvr


def test_rlvr_from_train_splits(raw, tmp_path):
    out = tmp_path / "rlvr.json"
    rc, stdout, err = cli("rlvr", "--image-root", raw, "--dataset", "rafdb,ferplus,affectnet,sfew_2.0",
                          "--split", "train", "--out", out)
    assert rc == 0, err
    records = load_records(out, "rlvr", image_root=raw)
    by_path = {r["image_path"]: r for r in records}
    assert by_path["/RAF-DB/aligned/train_00001_aligned.jpg"] == {
        "image_path": "/RAF-DB/aligned/train_00001_aligned.jpg", "problem": get_set("rafdb").prompt,
        "solution": "<answer>surprise</answer>"}
    assert by_path["/FERPlus/train/angry/d.png"]["solution"] == "<answer>angry</answer>"
    assert by_path["/FERPlus/train/angry/d.png"]["problem"] == get_set("ferplus").prompt
    assert by_path["/AffectNet/Manually_Annotated/train/3/z.jpg"]["solution"] == "<answer>anger</answer>"
    assert by_path["/SFEW-2.0/Train/Train_Aligned_Faces/Fear/t1.png"]["solution"] == "<answer>fear</answer>"
    assert len(records) == 6
    rc, stdout, err = run_data_check(out, "rlvr", raw)
    assert rc == 0, err


def run_data_check(path, kind, root):
    from unifer.cli import main as unifer_main

    return in_process(unifer_main, "data", "check", path, "--kind", kind, "--image-root", root, "--no-progress")


def test_rlvr_in_another_sets_vocabulary_and_from_any_folder(raw, tmp_path):
    out = tmp_path / "r.jsonl"
    rc, stdout, err = cli("rlvr", "--image-root", raw, "--dataset", "ferplus", "--split", "test", "--set", "rafdb",
                          "--out", out)
    assert rc == 0, err
    records = load_records(out, "rlvr")
    assert out.read_text().count("\n") == len(records) == 2  # JSON Lines by suffix
    assert {r["solution"] for r in records} == {"<answer>happiness</answer>", "<answer>sadness</answer>"}
    assert "skipped 1 'contempt' images (RAF-DB has no such label)" in stdout

    for name in ("Joy/1.png", "mad/2.jpg"):
        tiny_image(raw / "mine" / "faces" / name)
    rc, _, err = cli("rlvr", "--image-root", raw, "--dataset", "folder", "--folder", raw / "mine" / "faces",
                     "--set", "affectnet", "--out", tmp_path / "f.json")
    assert rc == 0, err
    assert {(r["image_path"], r["solution"]) for r in load_records(tmp_path / "f.json", "rlvr")} == {
        ("/mine/faces/Joy/1.png", "<answer>happiness</answer>"), ("/mine/faces/mad/2.jpg", "<answer>anger</answer>")}
    rc, _, err = cli("rlvr", "--image-root", raw, "--dataset", "folder", "--folder", raw / "mine" / "faces",
                     "--out", tmp_path / "g.json")
    assert rc == 2 and "--set" in err and not (tmp_path / "g.json").exists()
