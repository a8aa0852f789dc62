"""Training and QA data: loaders validate the whole file up front, never decode images, and `data check`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import RAF, cot_record, dump, in_process, qa_record, rlvr_record, tiny_image

from unifer.cli import main as unifer_main
from unifer.data import records as data
from unifer.data.images import load_image
from unifer.data.records import PAPER_IMAGE_ROOT, SCHEMAS, image_file, load_records, prompt_candidates, solution_label
from unifer.data.sets import REPO_ROOT, SETS, get_set
from unifer.errors import DataError

FERPLUS = get_set("ferplus")


def cot(i: int, label: str = "happiness") -> dict:
    return cot_record(f"/RAF-DB/aligned/train_{i:05d}_aligned.jpg", label, think="the lip corners rise")


def rlvr(i: int, label: str = "happy", fer_set=FERPLUS) -> dict:
    return rlvr_record(f"/FERPlus/train/{label}/fer{i:07d}.png", label, problem=fer_set.prompt)


def qa(i: int, label: str = "anger") -> dict:
    return qa_record(RAF, f"/RAF-DB/aligned/test_{i:04d}_aligned.jpg", label)


MAKERS = {"cot": cot, "rlvr": rlvr, "qa": qa}


def write(path: Path, records, jsonl: bool = False) -> Path:
    return dump(path, records, jsonl=jsonl)


def data_cli(*args) -> tuple[int, str, str]:
    return in_process(unifer_main, "data", *args)


def test_public_api_is_kept():
    assert set(SCHEMAS) == {"qa", "cot", "rlvr", "results"}
    assert PAPER_IMAGE_ROOT == "/dataset/"
    # the paper concatenates "/dataset/" + "/RAF-DB/…": a leading '/' never discards the root
    assert image_file("/dataset/", "/RAF-DB/aligned/a.jpg") == Path("/dataset/RAF-DB/aligned/a.jpg")


@pytest.mark.parametrize("kind,change,expected", [
    ("cot", lambda r: r.pop("response"), "record 3, field 'response': missing field"),
    ("cot", lambda r: r.update(image_path="  "), "record 3, field 'image_path': empty image path"),
    ("cot", lambda r: r.update(question=""), "record 3, field 'question': empty text"),
    ("rlvr", lambda r: r.update(solution=3), "record 3, field 'solution': expected str, found int"),
    ("rlvr", lambda r: r.update(problem=None), "record 3, field 'problem': expected str, found NoneType"),
    ("qa", lambda r: r.update(true_label="happy"), "record 3, field 'true_label': label 'happy' is not one"),
    ("qa", lambda r: r.update(candidate_labels=[]), "record 3, field 'candidate_labels': expected a non-empty"),
    ("qa", lambda r: r.update(prompt=FERPLUS.prompt), "record 3, field 'prompt': the prompt lists ['angry'"),
    ("qa", lambda r: r.update(image_path="/RAF-DB/aligned/test_0000_aligned.jpg"),
     "record 3, field 'image_path': duplicate image: also record 0"),
])
@pytest.mark.parametrize("jsonl", [False, True])
def test_loaders_name_file_record_and_field(tmp_path, kind, change, expected, jsonl):
    records = [MAKERS[kind](i) for i in range(6)]
    change(records[3])
    path = write(tmp_path / f"{kind}.json", records, jsonl)
    with pytest.raises(DataError) as e:
        load_records(path, kind)
    assert str(e.value).startswith(str(path)) and expected in str(e.value)


def test_json_array_and_json_lines_load_the_same(tmp_path):
    records = [rlvr(i, label) for i, label in enumerate(FERPLUS.labels)]
    records.append({**rlvr(99), "solution": "  sad "})  # a bare label is the paper's other solution form
    a = load_records(write(tmp_path / "a.json", records), "rlvr")
    b = load_records(write(tmp_path / "b.jsonl", records, jsonl=True), "rlvr")
    assert a == b == records
    assert [solution_label(r["solution"]) for r in a][-2:] == ["surprise", "sad"]
    assert load_records(write(tmp_path / "c.json", [cot(1)]), "cot")[0]["question"] == RAF.prompt
    assert load_records(write(tmp_path / "q.json", [qa(1), qa(2, "fear")]), "qa")[1]["true_label"] == "fear"


@pytest.mark.parametrize("text,label", [
    ("<answer>happy</answer>", "happy"), (" <answer> fear </answer>\n", "fear"), ("neutral", "neutral"),
    ("", ""), ("<answer></answer>", ""), ("<answer>sad", "<answer>sad"), ("x <answer>sad</answer>", "sad"),
])
def test_solution_label(text, label):
    assert solution_label(text) == label


def test_prompt_candidates_reads_every_registry_prompt():
    for s in SETS.values():
        assert prompt_candidates(s.prompt) == s.labels
    assert prompt_candidates("Which expression is this?") is None


def test_360k_rlvr_records_load_in_seconds_without_touching_images(tmp_path):
    """The paper's RLVR set is 360K records; none of the images exists here, so any decode would fail."""
    sets = list(SETS.values())
    problems = [json.dumps(s.prompt) for s in sets]
    n = 360_000
    with open(tmp_path / "rlvr.json", "w") as f:
        f.write("[")
        for i in range(n):
            k = i % 4
            label = sets[k].labels[i % len(sets[k].labels)]
            f.write(f'{"," if i else ""}{{"image_path": "/AffectNet/train/{i}.jpg", "problem": {problems[k]}, '
                    f'"solution": "<answer>{label}</answer>"}}\n')
        f.write("]")
    start = time.perf_counter()
    try:
        records = load_records(tmp_path / "rlvr.json", "rlvr")
    finally:
        (tmp_path / "rlvr.json").unlink()  # 170 MB: pytest keeps the last runs' temp dirs
    elapsed = time.perf_counter() - start
    print(f"loaded {n} RLVR records in {elapsed:.2f} s")
    assert len(records) == n
    assert elapsed < 30, f"{n} records took {elapsed:.1f} s to load"
    # one copy of each prompt for the whole file, not 360K
    assert len({id(r["problem"]) for r in records}) == 4
    assert records[-1]["solution"] == f"<answer>{sets[3].labels[(n - 1) % len(sets[3].labels)]}</answer>"


def test_loaders_check_images_exist_on_request_and_decode_lazily(tmp_path):
    records = [rlvr(i) for i in range(4)]
    for r in records:
        tiny_image(image_file(tmp_path, r["image_path"]))
    path = write(tmp_path / "r.json", records)
    assert load_records(path, "rlvr", image_root=tmp_path) == records
    image_file(tmp_path, records[2]["image_path"]).unlink()
    with pytest.raises(DataError, match=r"record 2, field 'image_path': image not found: .*fer0000002.png"):
        load_records(path, "rlvr", image_root=tmp_path)
    img = load_image(image_file(tmp_path, records[1]["image_path"]))
    assert img.size == (224, 224) and img.mode == "RGB"


def test_warnings_do_not_stop_a_loader_but_check_reports_them(tmp_path):
    records = [cot(0), cot(1), cot(0), cot(2, "happy"), {**cot(3), "response": "It is happiness."},
               {**cot(1), "response": cot(1, "sadness")["response"]}]
    for r in records:
        tiny_image(image_file(tmp_path, r["image_path"]))
    path = write(tmp_path / "cot.json", records)
    assert len(load_records(path, "cot")) == 6
    rc, out, err = data_cli("check", path, "--kind", "cot", "--image-root", tmp_path, "--no-progress")
    assert rc == 0, err
    assert "warnings: 4" in out and "OK" in out and "img/s" in out and "images: 4 distinct, all decode" in out
    assert "record 2: duplicate record: same as record 0" in out
    assert "record 3, field 'response': label 'happy' is not among the candidates the question lists" in out
    assert "record 4, field 'response': no <answer></answer> in the response" in out
    assert "record 5, field 'response': record 1 has the same image and question but a different response" in out


def test_data_check_fails_on_broken_images_and_records(tmp_path):
    records = [rlvr(i) for i in range(5)]
    records[4]["solution"] = ""
    for r in records:
        tiny_image(image_file(tmp_path, r["image_path"]))
    image_file(tmp_path, records[1]["image_path"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    image_file(tmp_path, records[3]["image_path"]).unlink()
    path = write(tmp_path / "r.jsonl", records, jsonl=True)
    rc, out, err = data_cli("check", path, "--kind", "rlvr", "--image-root", tmp_path, "--no-progress")
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"error: {path}: 2 problems; the first: record 1, field 'image_path'")
    assert "record 1, field 'image_path': cannot decode image" in out
    assert "record 3, field 'image_path': image not found" in out
    assert "record 4, field 'solution'" in out
    rc, out, _ = data_cli("check", path, "--kind", "rlvr", "--image-root", tmp_path, "--no-decode")
    assert rc == 2 and "images: 5 distinct, 1 do not exist" in out
    rc, _, err = data_cli("check", path, "--kind", "rlvr", "--image-root", tmp_path / "absent")
    assert rc == 2 and "image root is not a directory" in err


def test_python_dash_m_entry_points(tmp_path):
    path = write(tmp_path / "c.json", [cot(1), {"image_path": "a.jpg", "question": "q"}])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    p = subprocess.run([sys.executable, "-m", "unifer", "data", "check", str(path), "--kind", "cot"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"error: {path}: 1 problems; the first: record 1, field 'response': missing field")
    assert "images: not checked" in p.stdout
    p = subprocess.run([sys.executable, "-m", "unifer", "ferbench", "check", str(path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "record 0, field 'true_label': missing field" in p.stdout


def test_modules_stay_importable_without_model_libraries():
    """The data tools must run where torch / transformers are not installed (the core install)."""
    code = ("import sys; import unifer.data.ferbench, unifer.data.records, unifer.data.check; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
    assert data.__name__ == "unifer.data.records"
