"""Reliability (issue 10): every bad input gets one clear line, every crash loses nothing.

Rows of the matrix that other test files already hold are not repeated here (the README's "what happens when…"
table points at them):

- missing / mistyped fields, labels outside the candidates, QA duplicates, per loader:
  test_data.py::test_loaders_name_file_record_and_field;
  results files: test_scoring.py::test_bad_results_files_give_one_clear_line
- another set's results to a set's scorer: test_scoring.py::test_bad_results_files_give_one_clear_line[other set],
  test_scoring.py::test_wrong_set_in_the_total_names_the_flag_file
- training-file warnings (duplicates, a label outside the prompt's list):
  test_data.py::test_warnings_do_not_stop_a_loader_but_check_reports_them
- odd and broken images at inference: test_infer.py::test_odd_images_are_answered_and_broken_ones_become_error_items
- model path missing, text-only model at inference: test_infer.py::test_bad_model_or_input_stops_with_one_line
- MODEL_PATH missing, NPROC_PER_NODE over CUDA_VISIBLE_DEVICES:
  test_sft.py::test_script_refuses_more_processes_than_gpus_and_a_missing_model
- SIGKILL then rerun: test_infer.py::test_sigkill_at_several_random_points_then_rerun_writes_the_same_bytes; two runs on one output:
  test_infer.py::test_a_second_process_on_the_same_output_is_refused
- resume after a kill: test_sft.py::test_resume_from_checkpoint_restores_weights_step_and_data_order,
  test_grpo.py::test_resume_from_checkpoint_continues_the_run
- the GRPO script's vLLM server dies / Ctrl-C: test_grpo.py::test_server_that_dies_is_reported,
  test_grpo.py::test_ctrl_c_stops_the_server_and_leaves_no_process

Command lines run as subprocesses (what a user runs), so "no traceback" and the exit status are real.
"""
from __future__ import annotations

import ast
import errno
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from proc_utils import session_members
from PIL import Image

from unifer.data.images import ImageLoadError, load_image
from unifer.data.sets import get_set

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
RAF = get_set("rafdb")
SFT_SCRIPT = REPO / "train_unifer" / "src" / "scripts" / "run_sft_fer.sh"
GRPO_SCRIPT = REPO / "train_unifer" / "src" / "scripts" / "run_grpo_vllm.sh"
HEAVY_IMPORT = re.compile(r"\|\s+(torch|transformers|trl|vllm|deepspeed)$")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("UNIFER_HOME", "UNIFER_MODEL", "UNIFER_IMAGE_ROOT", "CUDA_VISIBLE_DEVICES", "NPROC_PER_NODE",
                        "VLLM_MODE", "DEEPSPEED_CONFIG", "PREFLIGHT_IMAGES")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PYTHON=PY, REPORT_TO="none")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, cwd=REPO, timeout=180, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def one_clear_line(res: subprocess.CompletedProcess, *fragments: str, script: bool = False) -> str:
    """Exit 2, no traceback, one ``error:`` line holding every fragment (a shell script may print notes before it;
    ``import time:`` lines come from PYTHONPROFILEIMPORTTIME)."""
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and (script or len(lines) == 1), res.stderr[-3000:]
    assert lines[-1] == errors[0]
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def heavy_imports(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("import time:") and HEAVY_IMPORT.search(ln.rstrip())]


def listing(d: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def save_png(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# ============================================================================================ data files × CLIs
KEY_FIELD = {"qa": "true_label", "results": "model_response", "cot": "response", "rlvr": "solution"}
N_RECORDS = 6


def make_records(kind: str, label_of=lambda i: RAF.labels[i % len(RAF.labels)], n: int = N_RECORDS) -> list[dict]:
    out = []
    for i in range(n):
        path, label = f"/faces/{i}.png", label_of(i)
        if kind in ("qa", "results"):
            r = {"image_path": path, "true_label": label, "prompt": RAF.prompt, "candidate_labels": list(RAF.labels)}
            if kind == "results":
                r["model_response"] = f"<think>the mouth</think><answer>{label}</answer>"
        elif kind == "cot":
            r = {"image_path": path, "question": RAF.prompt,
                 "response": f"<think>the mouth</think><answer>{label}</answer>"}
        else:
            r = {"image_path": path, "problem": RAF.prompt, "solution": f"<answer>{label}</answer>"}
        out.append(r)
    return out


def dump(path: Path, records, jsonl=False, bom=False, indent=1) -> Path:
    if jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        text = json.dumps(records, indent=indent)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# Each fault: (d, records, kind) -> (path given to the command, fragment of the error line | None when accepted).
def f_not_found(d, recs, kind):
    return d / "absent.json", "not found"


def f_directory(d, recs, kind):
    (d / "adir.json").mkdir()
    return d / "adir.json", "is a directory"


def f_empty(d, recs, kind):
    (d / "f.json").write_bytes(b"")
    return d / "f.json", "is empty"


def f_not_utf8(d, recs, kind):
    (d / "f.json").write_bytes(json.dumps(recs).encode().replace(b"/faces/1.png", b"/faces/caf\xe9.png"))
    return d / "f.json", "not UTF-8 text"


def f_not_json(d, recs, kind):
    (d / "f.json").write_text("image_path,true_label\n/faces/0.png,happiness\n")
    return d / "f.json", "not valid JSON (line 1, column 1"


def f_json_object(d, recs, kind):
    (d / "f.json").write_text(json.dumps({"records": recs}, indent=1))
    return d / "f.json", "expected a JSON list of records (or JSON Lines), found a single JSON object"


def f_jsonl_broken_line(d, recs, kind):
    lines = [json.dumps(r) for r in recs]
    lines[2] = lines[2][:40]  # a line cut short
    (d / "f.jsonl").write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")  # a blank line 2 is allowed
    return d / "f.jsonl", "record 2: JSON Lines: line 4 is not valid JSON"


def f_missing_field(d, recs, kind):
    del recs[2][KEY_FIELD[kind]]
    return dump(d / "f.json", recs), f"record 2, field '{KEY_FIELD[kind]}': missing field"


def f_mistyped_field(d, recs, kind):
    recs[1][KEY_FIELD[kind]] = 7
    return dump(d / "f.json", recs), f"record 1, field '{KEY_FIELD[kind]}': expected str, found int"


def f_label_outside(d, recs, kind):
    recs[3] = make_records(kind, label_of=lambda i: "joy")[3]
    if kind in ("cot", "rlvr"):  # training files: a warning (the paper's reward scores such a record 0)
        return dump(d / "f.json", recs), None
    return dump(d / "f.json", recs), "record 3, field 'true_label': label 'joy' is not one of the candidates"


def f_duplicate(d, recs, kind):
    recs[4] = dict(recs[0])
    if kind in ("cot", "rlvr"):  # training files: identical records are a warning
        return dump(d / "f.json", recs), None
    return dump(d / "f.json", recs), "record 4, field 'image_path': duplicate image: also record 0"


def f_bom_array(d, recs, kind):
    return dump(d / "f.json", recs, bom=True), None


def f_bom_jsonl_blank_lines(d, recs, kind):
    path = dump(d / "f.jsonl", recs, jsonl=True, bom=True)
    path.write_text(path.read_text(encoding="utf-8-sig").replace("\n", "\n\n", 2), encoding="utf-8-sig")
    return path, None


FILE_FAULTS = [f_not_found, f_directory, f_empty, f_not_utf8, f_not_json, f_json_object, f_jsonl_broken_line,
               f_missing_field, f_mistyped_field, f_label_outside, f_duplicate, f_bom_array, f_bom_jsonl_blank_lines]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(N_RECORDS):
        save_png(root / "faces" / f"{i}.png", Image.new("RGB", (12, 10), (40 * i, 90, 200)))
    return root


def _cli(name: str, path: Path, work: Path, model: Path, images: Path) -> list:
    out = work / "out"
    return {
        "ferbench check": [PY, "-m", "unifer", "ferbench", "check", path, "--no-progress"],
        "data check": [PY, "-m", "unifer", "data", "check", path, "--kind", "cot", "--no-progress"],
        "eval_unifer.py": [PY, REPO / "eval_rafdb/code/eval_unifer.py", "--results", path, "--output",
                           out / "metrics.json", "--no-figs", "--figs-dir", ""],
        # --max-new-tokens 0 is checked right after the input: an accepted input ends there, before the model loads
        "infer_unifer.py": [PY, REPO / "eval_rafdb/code/infer_unifer.py", "--model", model, "--input", path,
                            "--output", out / "results.json", "--image-root", images, "--max-new-tokens", "0"],
        "SFT pre-flight": [PY, "-m", "unifer.train.common", "--kind", "cot", "--model", model, "--data", path,
                           "--image_root", images],
        "GRPO pre-flight": [PY, "-m", "unifer.train.common", "--kind", "rlvr", "--model", model, "--data", path,
                            "--image_root", images],
    }[name]


CLI_KINDS = {"ferbench check": "qa", "data check": "cot", "eval_unifer.py": "results", "infer_unifer.py": "qa",
             "SFT pre-flight": "cot", "GRPO pre-flight": "rlvr"}


@pytest.mark.parametrize("cli", list(CLI_KINDS))
@pytest.mark.parametrize("fault", FILE_FAULTS, ids=[f.__name__[2:] for f in FILE_FAULTS])
def test_data_file_faults_across_every_command(fault, cli, tiny_model, image_root, tmp_path):
    kind = CLI_KINDS[cli]
    path, fragment = fault(tmp_path, make_records(kind), kind)
    before = listing(tmp_path)
    res = run(_cli(cli, path, tmp_path, tiny_model, image_root), PYTHONPROFILEIMPORTTIME=1)
    assert not heavy_imports(res), "nothing heavy loads to judge a data file"
    if fragment is not None:
        one_clear_line(res, str(path), fragment)
        assert listing(tmp_path) == before, "nothing is written, the input is untouched"
        return
    # accepted: BOM, blank lines, and the training files' warnings
    if cli == "infer_unifer.py":
        one_clear_line(res, "--max-new-tokens must be at least 1")
    else:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "Traceback" not in res.stderr
    if cli in ("ferbench check", "data check"):
        assert "  OK" in res.stdout and f"{N_RECORDS} records" in res.stdout
        if fault in (f_label_outside, f_duplicate):
            assert "warnings: 1" in res.stdout
    elif cli == "eval_unifer.py":
        assert json.loads((tmp_path / "out" / "metrics.json").read_text())["counts"]["total"] == N_RECORDS
    elif cli.endswith("pre-flight"):
        assert f"pre-flight ok: {N_RECORDS} {kind} records, every image decodes" in res.stdout


# ====================================================================================================== images
def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb's signature)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def halves(size=(60, 40), left=(230, 20, 20), right=(20, 20, 230)) -> Image.Image:
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def _odd_images(d: Path) -> dict[str, Path]:
    import numpy as np

    out = {
        "grayscale": save_png(d / "gray.png", Image.new("L", (20, 16), 100)),
        "16-bit": save_png(d / "gray16.png", Image.fromarray(np.linspace(0, 4000, 40 * 30).reshape(30, 40)
                                                                .astype(np.uint16))),
        "palette": save_png(d / "palette.png", halves().convert("P")),
        "LA": save_png(d / "la.png", Image.new("LA", (10, 10), (30, 0))),
        "1-bit": save_png(d / "bilevel.png", Image.new("1", (10, 10), 1)),
        "3x3": save_png(d / "tiny.png", Image.new("RGB", (3, 3), (10, 200, 30))),
    }
    rgba = halves().convert("RGBA")
    rgba.putalpha(halves(left=(0, 0, 0), right=(255, 0, 0)).getchannel(0))  # left half fully transparent
    out["RGBA"] = save_png(d / "rgba.png", rgba)
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.paste(1, (5, 0, 10, 10))
    pal.save(d / "palette_transparent.png", transparency=0)
    out["palette + transparency"] = d / "palette_transparent.png"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    out["CMYK"] = d / "cmyk.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90° clockwise to display"
    halves().save(d / "exif_rotated.jpg", exif=exif, quality=95)
    out["EXIF-rotated"] = d / "exif_rotated.jpg"
    return out


def _broken_images(d: Path) -> dict[str, tuple[Path, str]]:
    halves().save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:400])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image at all\n")
    (d / "folder.png").mkdir()
    return {
        "missing": (d / "missing.png", "image not found"),
        "zero bytes": (d / "empty.png", "image file is empty (0 bytes)"),
        "truncated": (d / "truncated.jpg", "cannot decode image"),
        "not an image": (d / "text.jpg", "cannot decode image"),
        "a directory": (d / "folder.png", "image not found"),
        "decompression bomb": (png_claiming(d / "bomb.png", 20000, 20000), "image too large to decode safely"),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd images")
    return {"root": d, "odd": _odd_images(d), "broken": _broken_images(d)}


def _near(pixel, color, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, color))


ODD_CHECKS = {
    "grayscale": lambda im, native: _near(im.getpixel((100, 100)), (100, 100, 100), 1),
    # scaled to 8 bits over its range, not clipped at 255 (which would make it nearly all white)
    "16-bit": lambda im, native: native.getchannel(0).getextrema() == (0, 255)
    and native.getchannel(0).histogram()[255] < 20,
    "palette": lambda im, native: _near(im.getpixel((10, 112)), (230, 20, 20)) and _near(im.getpixel((214, 112)),
                                                                                         (20, 20, 230)),
    "palette + transparency": lambda im, native: _near(native.getpixel((1, 5)), (255, 255, 255), 0)
    and _near(native.getpixel((8, 5)), (200, 10, 10), 0),
    "RGBA": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0)  # transparent: white behind
    and _near(native.getpixel((55, 5)), (20, 20, 230), 0),
    "LA": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0),
    "1-bit": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0),
    "3x3": lambda im, native: _near(im.getpixel((112, 112)), (10, 200, 30), 2),
    "CMYK": lambda im, native: _near(im.getpixel((112, 112)), (255, 0, 0), 30),
    # turned upright: 40 wide, 60 high, the left (red) half now on top
    "EXIF-rotated": lambda im, native: native.size == (40, 60) and _near(native.getpixel((20, 5)), (230, 20, 20))
    and _near(native.getpixel((20, 55)), (20, 20, 230)),
}


@pytest.mark.parametrize("name", list(ODD_CHECKS))
def test_valid_but_odd_images_are_converted_and_used(images, name):
    img = load_image(images["odd"][name])
    assert img.size == (224, 224) and img.mode == "RGB"
    assert ODD_CHECKS[name](img, load_image(images["odd"][name], size=None))


@pytest.mark.parametrize("name", ["missing", "zero bytes", "truncated", "not an image", "a directory",
                                  "decompression bomb"])
def test_broken_images_raise_one_line_naming_the_file(images, name):
    path, reason = images["broken"][name]
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    message = str(e.value)
    assert reason in message and str(path) in message and "\n" not in message


def _image_records(images) -> tuple[list[dict], dict[int, str]]:
    """RLVR records for every odd image, then every broken one; {record index: expected reason} for the broken."""
    root = images["root"]
    paths = [(p, None) for p in images["odd"].values()] + list(images["broken"].values())
    records = [{"image_path": "/" + str(p.relative_to(root)), "problem": RAF.prompt,
                "solution": "<answer>fear</answer>"} for p, _ in paths]
    return records, {i: reason for i, (_, reason) in enumerate(paths) if reason}


def test_data_check_lists_every_broken_image_and_accepts_the_odd_ones(images, tmp_path):
    records, broken = _image_records(images)
    data = dump(tmp_path / "rlvr.json", records)
    res = run([PY, "-m", "unifer", "data", "check", data, "--kind", "rlvr", "--image-root", images["root"],
               "--no-progress"])
    one_clear_line(res, f"{len(broken)} problems; the first: record {min(broken)}, field 'image_path'")
    listed = {int(m.group(1)): m.group(2) for m in re.finditer(r"record (\d+), field 'image_path': (.*)", res.stdout)}
    assert set(listed) == set(broken)
    for i, reason in broken.items():
        assert reason in listed[i]
    assert f"images: {len(records)} distinct, {len(broken)} do not decode" in res.stdout


@pytest.mark.parametrize("name", ["zero bytes", "truncated", "not an image", "decompression bomb"])
def test_training_preflight_stops_before_training_on_a_broken_image(images, tiny_model, tmp_path, name):
    """Missing images: test_sft.py::test_missing_image_stops_the_trainer_before_training; these exist but are
    unusable, which only decoding finds (the pre-flight decodes every image; the trainer would find it mid-run)."""
    records, broken = _image_records(images)
    odd = [r for i, r in enumerate(records) if i not in broken]
    path, reason = images["broken"][name]
    bad = {**odd[0], "image_path": "/" + str(path.relative_to(images["root"]))}
    data = dump(tmp_path / "rlvr.json", odd + [bad])
    cmd = [PY, "-m", "unifer.train.common", "--kind", "rlvr", "--model", tiny_model, "--data", data, "--image_root",
           images["root"]]
    one_clear_line(run(cmd), str(data), f"record {len(odd)}, field 'image_path'", reason, str(path))
    if name != "decompression bomb":  # the opt-out only stats (a bomb is a real file too: it passes as well)
        assert run(cmd + ["--images", "exist"]).returncode == 0


def test_training_preflight_accepts_every_odd_image(images, tiny_model, tmp_path):
    records, broken = _image_records(images)
    data = dump(tmp_path / "rlvr.jsonl", [r for i, r in enumerate(records) if i not in broken], jsonl=True)
    res = run([PY, "-m", "unifer.train.common", "--kind", "rlvr", "--model", tiny_model, "--data", data,
               "--image_root", images["root"]])
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"pre-flight ok: {len(records) - len(broken)} rlvr records, every image decodes" in res.stdout


def test_a_decompression_bomb_is_an_error_item_at_inference(images):
    from unifer.infer.runner import load_batch

    bomb, _ = images["broken"]["decompression bomb"]
    records = [{"image_path": str(images["odd"]["3x3"])}, {"image_path": str(bomb)}]
    ok, failed = load_batch(records, [0, 1], "/")
    assert [i for i, _ in ok] == [0]
    assert failed[0][0] == 1 and failed[0][1]["error"] is True
    assert failed[0][1]["model_response"].startswith("ERROR: image too large to decode safely")


# ====================================================================================================== models
def _model_faults(d: Path, tiny_model: Path) -> dict[str, tuple[Path, str]]:
    def checkpoint(name: str, config: str | None, weights: bool = True) -> Path:
        p = d / name
        p.mkdir()
        if config is not None:
            (p / "config.json").write_text(config)
        if weights:
            (p / "model.safetensors").write_bytes(b"\0" * 8)
        return p

    (d / "a file").write_text("x")
    return {
        "path missing": (d / "no such model", "not found"),
        "a file": (d / "a file", ""),
        "not a checkpoint": (checkpoint("downloads", None),
                             "has no config.json, so it is not a Hugging Face checkpoint"),
        "unreadable config": (checkpoint("broken", "{model_type: qwen"), "config is unreadable"),
        "text-only model": (checkpoint("llama", json.dumps({"model_type": "llama"})),
                            "is a text-only model (model_type 'llama')"),
        "another vision model": (checkpoint("llava", json.dumps({"model_type": "llava", "vision_config": {}})),
                                 "is not a Qwen2.5-VL model (model_type 'llava')"),
        "no weights": (checkpoint("no weights", (tiny_model / "config.json").read_text(), weights=False),
                       "has a config but no weights"),
    }


@pytest.mark.parametrize("face", ["infer_unifer.py", "run_sft_fer.sh", "run_grpo_vllm.sh"])
def test_bad_model_is_one_line_before_anything_loads(face, tiny_model, image_root, tmp_path):
    qa = dump(tmp_path / "qa.json", make_records("qa"))
    cot = dump(tmp_path / "cot.json", make_records("cot"))
    rlvr = dump(tmp_path / "rlvr.json", make_records("rlvr"))
    models = tmp_path / "models"
    models.mkdir()
    for case, (model, fragment) in _model_faults(models, tiny_model).items():
        out = tmp_path / "out"
        if face == "infer_unifer.py":
            res = run([PY, REPO / "eval_rafdb/code/infer_unifer.py", "--model", model, "--input", qa, "--output",
                       out / "r.json", "--image-root", image_root], PYTHONPROFILEIMPORTTIME=1)
        else:
            script, data = (SFT_SCRIPT, cot) if face == "run_sft_fer.sh" else (GRPO_SCRIPT, rlvr)
            res = run(["bash", script], cwd=tmp_path, MODEL_PATH=model, DATA_PATH=data, IMAGE_ROOT=image_root,
                      OUTPUT_DIR=out, NPROC_PER_NODE=1, VLLM_MODE="none", PYTHONPROFILEIMPORTTIME=1)
        if face != "infer_unifer.py" and case in ("path missing", "a file"):
            fragment = "model (MODEL_PATH) not found (a directory)"  # the script's own check, before Python
        elif case == "a file":
            fragment = "model path is not a directory"
        elif case == "another vision model" and face == "infer_unifer.py":  # inference takes any VL model (issue 14)
            fragment = "has a broken weight file model.safetensors"
        one_clear_line(res, str(model), fragment, script=face != "infer_unifer.py")
        assert not heavy_imports(res), case
        assert not out.exists(), case


# =============================================================================================== command lines
@pytest.mark.parametrize("argv,fragment", [
    (["-m", "unifer", "infer", "--set", "ckplus"],
     "argument --set: invalid choice: 'ckplus' (choose from 'rafdb', 'ferplus', 'affectnet', 'sfew_2.0')"),
    (["eval_rafdb/code/infer_unifer.py", "--engine", "onnx"], "invalid choice: 'onnx' (choose from 'hf', 'vllm')"),
    (["eval_rafdb/code/infer_unifer.py", "--dtype", "int8"], "(choose from 'auto', 'bfloat16', 'float16', 'float32')"),
    (["eval_rafdb/code/infer_unifer.py", "--batch-size", "two"], "argument --batch-size: invalid int value: 'two'"),
    (["eval_rafdb/code/eval_unifer.py", "--protocol", "lax"], "invalid choice: 'lax' (choose from 'paper', 'strict')"),
    (["-m", "unifer", "data", "check", "x.json", "--kind", "sft"], "(choose from 'cot', 'qa', 'results', 'rlvr')"),
    (["-m", "unifer.train.common", "--kind", "rlvr", "--model", "m", "--data", "d", "--image_root", "r",
      "--images", "all"], "invalid choice: 'all' (choose from 'decode', 'exist')"),
])
def test_usage_errors_name_the_allowed_values(argv, fragment):
    res = run([PY, *argv])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("usage: ") and fragment in res.stderr.splitlines()[-1], res.stderr


def test_unknown_set_given_to_ferbench_check_names_the_sets(tmp_path):
    one_clear_line(run([PY, "-m", "unifer", "ferbench", "check", "ckplus"], cwd=tmp_path),
                   "unknown FERBench set 'ckplus'; choose one of: rafdb, ferplus, affectnet, sfew_2.0")


@pytest.mark.parametrize("flags,fragment", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),  # was silently taken as the default
    (["--batch-size", "-4"], "--batch-size must be at least 1, got -4"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--shard", "2/2"], "--shard 2/2: need 0 <= i < n"),
    (["--shard", "half"], "--shard must look like i/n (e.g. 0/4), got 'half'"),
    (["--shard", "0/2", "--merge"], "--merge combines the shards; run it without --shard"),
])
def test_bad_inference_numbers_stop_before_the_model_loads(flags, fragment, tiny_model, tmp_path):
    qa = dump(tmp_path / "qa.json", make_records("qa"))
    res = run([PY, REPO / "eval_rafdb/code/infer_unifer.py", "--model", tiny_model, "--input", qa, "--output",
               tmp_path / "out" / "r.json", *flags], PYTHONPROFILEIMPORTTIME=1)
    one_clear_line(res, fragment)
    assert not heavy_imports(res) and not (tmp_path / "out").exists()


@pytest.fixture
def fake_gpus(tmp_path) -> Path:
    """A directory with an ``nvidia-smi`` that lists two GPUs (CUDA_VISIBLE_DEVICES unset: the scripts ask it)."""
    bin_dir = tmp_path / "fake bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n"
                   "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("script,env,fragment", [
    (SFT_SCRIPT, {"NPROC_PER_NODE": "3"}, "NPROC_PER_NODE=3 but only 2 GPU(s) are visible on this node"),
    (GRPO_SCRIPT, {"NPROC_PER_NODE": "3", "VLLM_MODE": "colocate"},
     "NPROC_PER_NODE=3 but only 2 GPU(s) are visible on this node"),
    (SFT_SCRIPT, {"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE must be a positive integer, got '0'"),
    (SFT_SCRIPT, {"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE must be a positive integer, got 'two'"),
    (SFT_SCRIPT, {"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK must be in 0..1, got '2'"),
    (GRPO_SCRIPT, {"VLLM_MODE": "vllm"}, "VLLM_MODE must be server, colocate or none, got 'vllm'"),
    (SFT_SCRIPT, {"PREFLIGHT_IMAGES": "all"}, "PREFLIGHT_IMAGES must be decode or exist, got 'all'"),
], ids=["sft-nproc>gpus", "grpo-nproc>gpus", "nproc-0", "nproc-word", "node-rank", "vllm-mode", "preflight-images"])
def test_script_settings_are_checked_before_anything_starts(script, env, fragment, fake_gpus, tiny_model, image_root,
                                                            tmp_path):
    kind = "cot" if script == SFT_SCRIPT else "rlvr"
    data = dump(tmp_path / f"{kind}.json", make_records(kind))
    out = tmp_path / "out"
    res = run(["bash", script], cwd=tmp_path, PATH=f"{fake_gpus}:{os.environ['PATH']}", MODEL_PATH=tiny_model,
              DATA_PATH=data, IMAGE_ROOT=image_root, OUTPUT_DIR=out, **env)
    one_clear_line(res, fragment, script=True)
    assert not out.exists()


# ======================================================================================= paths with odd names
@pytest.fixture(scope="module")
def spaced(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The tracked files copied into ``…/with space & ü/repo``, the tiny model copied beside it, and a FERPlus test
    tree whose folders and files have spaces and non-ASCII letters in their names."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot list the tracked files")
    base = tmp_path_factory.mktemp("odd paths") / "with space & ü"
    checkout = base / "repo"
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    model = base / "models ü" / "tiny model"
    shutil.copytree(tiny_model, model)
    raw = base / "raw data (ü)"
    for i, label in enumerate(["happy", "sad", "angry", "happy"]):
        save_png(raw / "FERPlus" / "test" / label / f"face {i} é&.png", halves(left=(20 * i, 120, 80)))
    return {"base": base, "checkout": checkout, "model": model, "raw": raw}


@pytest.mark.slow
def test_build_check_infer_score_from_a_checkout_under_a_path_with_spaces(spaced):
    checkout, raw = spaced["checkout"], spaced["raw"]
    original = REPO / "eval_ferplus/data/ferplus_qa.json"
    original_before = original.read_bytes() if original.exists() else None
    env = {"PYTHONPATH": str(checkout)}
    res = run([PY, "-m", "unifer", "ferbench", "build", "--image-root", raw, "--datasets", "ferplus"], cwd=checkout,
              **env)
    assert res.returncode == 0, res.stderr
    qa = checkout / "eval_ferplus" / "data" / "ferplus_qa.json"  # the copy's own default, not the original's
    assert [r["image_path"] for r in json.loads(qa.read_text())][:2] == ["/FERPlus/test/angry/face 2 é&.png",
                                                                         "/FERPlus/test/happy/face 0 é&.png"]
    res = run([PY, "-m", "unifer", "ferbench", "check", "ferplus", "--image-root", raw, "--no-progress"], cwd=checkout,
              **env)
    assert res.returncode == 0 and "images: 4 distinct, all decode" in res.stdout, res.stdout + res.stderr
    # the faces run from anywhere and use their own checkout's package and defaults
    res = run([PY, checkout / "eval_ferplus/code/infer_unifer.py", "--model", spaced["model"], "--image-root", raw,
               "--max-new-tokens", "3", "--batch-size", "2", "--dtype", "float32"], cwd=spaced["base"], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = checkout / "eval_ferplus" / "results" / "ferplus_unifer_7b_results.json"
    answered = json.loads(results.read_text())
    assert len(answered) == 4 and not any(r.get("error") for r in answered)
    res = run([PY, checkout / "eval_ferplus/code/eval_unifer.py", "--no-figs"], cwd=spaced["base"])
    assert res.returncode == 0, res.stderr
    metrics = json.loads((checkout / "eval_ferplus/results/ferplus_unifer_7b_metrics.json").read_text())
    assert metrics["counts"]["total"] == 4 and metrics["results_file"] == str(results)
    assert (original.read_bytes() if original.exists() else None) == original_before




@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-script"])
def test_sft_script_under_a_path_with_spaces_trains_and_ctrl_c_stops_every_child(spaced, tmp_path, stop):
    psutil = pytest.importorskip("psutil")
    base, checkout = spaced["base"], spaced["checkout"]
    script = checkout / "train_unifer" / "src" / "scripts" / "run_sft_fer.sh"
    images = base / "images & more"
    records = []
    for i, label in enumerate(["happiness", "sadness"]):
        save_png(images / "faces ü" / f"face {i}.png", halves(left=(30 * i, 150, 60)))
        records.append({"image_path": f"/faces ü/face {i}.png", "question": RAF.prompt,
                        "response": f"<think>the mouth</think><answer>{label}</answer>"})
    bad = dump(base / "cot data ü (bad).json", [records[0], {"image_path": "/faces ü/face 1.png"}])
    data = dump(base / "cot data ü.json", records)
    out = base / f"out dir ü {stop}"
    env = {"MODEL_PATH": spaced["model"], "DATA_PATH": bad, "IMAGE_ROOT": images, "OUTPUT_DIR": out,
           "NPROC_PER_NODE": "1", "PYTHONPATH": ""}
    one_clear_line(run(["bash", script], cwd=tmp_path, **env), f"{bad}: record 1, field 'question': missing field",
                   script=True)
    assert not out.exists()

    env["DATA_PATH"] = data
    console = tmp_path / "console.txt"
    with open(console, "wb") as sink:
        proc = subprocess.Popen(
            ["bash", str(script), "--max_steps", "1000", "--logging_steps", "1", "--save_strategy", "no",
             "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "false"],
            cwd=tmp_path, env=clean_env(**env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    log = out / "train_sft.log"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and "'loss'" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, console.read_text(errors="replace")[-3000:]
        assert "'loss'" in log.read_text(errors="replace"), "training should have logged a step"
        tree = psutil.Process(proc.pid).children(recursive=True)
        commands = {}
        for p in tree:
            try:
                commands[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                pass
        workers = [pid for pid, command in commands.items() if "unifer.train.sft" in command]
        assert len(workers) >= 2, commands  # torchrun and its worker
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground job
        else:
            os.kill(proc.pid, signal.SIGTERM)  # a scheduler or `kill PID`: only the script itself is signalled
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert session_members(proc.pid) == []


# ====================================================================================================== faults
@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, leave_pages: int = 0) -> Path:
    """Fill ``disk`` with a ballast file, then give back ``leave_pages`` 4 KiB pages."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave_pages:
        pages = -(-ballast.stat().st_size // 4096)
        os.truncate(ballast, max(0, pages - leave_pages) * 4096)
    return ballast


def cli_in_process(main, argv) -> tuple[int, str]:
    from unifer.errors import run_cli

    err = io.StringIO()
    with redirect_stderr(err):
        rc = run_cli(main, argv)
    return rc, err.getvalue()


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_disk_full_during_inference_keeps_every_finished_item_and_resumes_to_the_same_bytes(
        tiny_model, small_disk, tmp_path, monkeypatch):
    from unifer.infer.runner import main as infer_main
    from unifer.infer.progress import progress_path, read_progress

    records = make_records("qa", n=12)
    for i in range(len(records)):
        save_png(tmp_path / "faces" / f"{i}.png", halves(left=(20 * i, 100, 50)))
    qa = dump(tmp_path / "qa.json", records)
    args = ["--model", str(tiny_model), "--input", str(qa), "--image-root", str(tmp_path), "--max-new-tokens", "4",
            "--dtype", "float32", "--batch-size", "2"]
    reference = tmp_path / "reference.json"
    assert cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(reference)])[0] == 0

    output = small_disk / "results" / "r.json"
    output.parent.mkdir()
    output.write_text("[] previous results\n")
    ballast = fill(small_disk, leave_pages=1)
    rc, err = cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output), "--overwrite"])
    progress = progress_path(output)
    line = _error_line(err)
    assert rc == 2 and f"cannot write {progress}: No space left on device" in line and "rerun to resume" in line
    header, done, intact = read_progress(progress)
    assert 2 <= len(done) < len(records) and f"the {len(done)} items finished before are kept there" in line
    assert intact == progress.stat().st_size, "only whole batches: no torn line"
    assert output.read_text() == "[] previous results\n"

    # Space again; but the disk fills up once more while the results file is written.
    ballast.unlink()
    real_fsync = os.fsync

    def fsync_full_for_results(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_full_for_results)
    rc, err = cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output)])
    line = _error_line(err)
    assert rc == 2 and f"cannot write {output}: No space left on device" in line
    assert f"every answer is kept in {progress}" in line and f"resuming: {len(done)} of" in err
    assert len(read_progress(progress)[1]) == len(records)
    assert output.read_text() == "[] previous results\n" and not list(output.parent.glob("*.tmp"))

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output)])[0] == 0
    assert output.read_bytes() == reference.read_bytes()
    assert not progress.exists()


@pytest.mark.parametrize("command", ["eval_unifer.py", "ferbench build"])
def test_disk_full_while_writing_keeps_the_previous_file(command, small_disk, tmp_path):
    if command == "eval_unifer.py":
        target = small_disk / "rafdb_metrics.json"
        cmd = [PY, REPO / "eval_rafdb/code/eval_unifer.py", "--results", dump(tmp_path / "r.json",
               make_records("results")), "--output", target, "--no-figs"]
    else:
        raw = tmp_path / "raw"
        for i, label in enumerate(["happy", "sad"] * 40):
            save_png(raw / "FERPlus" / "test" / label / f"{i}.png", Image.new("RGB", (4, 4)))
        target = small_disk / "ferplus_qa.json"
        cmd = [PY, "-m", "unifer", "ferbench", "build", "--image-root", raw, "--datasets", "ferplus", "--out-dir",
               small_disk]
    target.write_text("previous\n")
    fill(small_disk)
    res = run(cmd)
    one_clear_line(res, f"cannot write {target}: No space left on device; the file was left as it was", script=True)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in small_disk.iterdir()) == sorted(["ballast", target.name])


# ============================================================================================ security hygiene
def _python_sources() -> list[Path]:
    files = sorted((REPO / "unifer").rglob("*.py")) + sorted(REPO.glob("eval_*/code/*.py"))
    return files + sorted((REPO / "train_unifer").rglob("*.py"))


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_shell_true_no_remote_code_by_default_no_unsafe_torch_load():
    problems = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
                    problems.append(f"{where}: shell={ast.unparse(kw['shell'])}")
                if _is_true(kw.get("trust_remote_code")):
                    problems.append(f"{where}: trust_remote_code=True")
                func = ast.unparse(node.func)
                if func == "torch.load" and not _is_true(kw.get("weights_only")):
                    problems.append(f"{where}: torch.load without weights_only=True")
                if func in ("os.system", "os.popen", "eval", "exec"):
                    problems.append(f"{where}: {func}()")
                args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if any("trust_remote_code" in a or "trust-remote-code" in a for a in args) and \
                        _is_true(kw.get("default")):
                    problems.append(f"{where}: a trust_remote_code flag defaulting to True")
            elif isinstance(node, (ast.AnnAssign, ast.Assign)):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                names = [ast.unparse(t) for t in targets]
                if any(n.split(".")[-1] == "trust_remote_code" for n in names) and _is_true(node.value):
                    problems.append(f"{where}: trust_remote_code defaults to True")
    assert not problems, "\n".join(problems)


def test_shell_scripts_pass_arguments_whole():
    problems = []
    for path in sorted((REPO / "train_unifer").rglob("*.sh")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split(" #", 1)[0]
            if code.lstrip().startswith("#"):
                continue
            for m in re.finditer(r"\$[@*]|\$\{[@*]\}|\$\{\w+\[[@*]\][^}]*\}", code):
                if code[m.start() - 1: m.start()] != '"':  # "$@", "${args[@]}": each argument stays whole
                    problems.append(f"{path.name}:{n}: unquoted list expansion {m.group()}: {line.strip()}")
            if re.search(r"\beval\b", code) or "trust_remote_code true" in code.lower():
                problems.append(f"{path.name}:{n}: {line.strip()}")
    assert not problems, "\n".join(problems)


GUARD = r"""
import importlib, pkgutil, socket, sys
attempts = []
def refuse(what):
    def blocked(*args, **kwargs):
        attempts.append((what, repr(args)[:120]))
        raise OSError("network access during import: " + what)
    return blocked
real_connect = socket.socket.connect
def connect(self, address):
    if self.family == socket.AF_UNIX:
        return real_connect(self, address)
    return refuse("connect")(address)
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: refuse("connect_ex")(address)
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
socket.gethostbyname = refuse("gethostbyname")
import unifer
names = sorted(m.name for m in pkgutil.walk_packages(unifer.__path__, "unifer."))
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names), "modules")
print("failed:", failed)
print("attempts:", attempts)
"""


def test_importing_every_module_works_offline_and_opens_no_connection():
    res = run([PY, "-c", GUARD], timeout=300, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    assert res.returncode == 0, res.stderr[-3000:]
    count = int(res.stdout.split(" modules")[0].split()[-1])
    assert count >= 25, res.stdout
    assert "failed: []" in res.stdout and "attempts: []" in res.stdout, res.stdout
