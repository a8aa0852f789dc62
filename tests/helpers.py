"""What the test files share: paths, record builders, tiny images, command runners and process checks.

Fixtures live in conftest.py; this module holds plain functions, imported as ``from helpers import …`` (pytest puts
tests/ on sys.path). A helper that differs between files takes the difference as a parameter.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from PIL import Image

from unifer.data.sets import get_set

# --------------------------------------------------------------------------------------------------------- paths
PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SFT_SCRIPT = REPO / "train_unifer" / "src" / "scripts" / "run_sft_fer.sh"
GRPO_SCRIPT = REPO / "train_unifer" / "src" / "scripts" / "run_grpo_vllm.sh"
RAF = get_set("rafdb")


# ----------------------------------------------------------------------------------------------- record builders
def answer(label: str, think: str | None = None) -> str:
    """A response in the paper's format: ``<think>…</think><answer>label</answer>`` (no think part when None)."""
    return (f"<think>{think}</think>" if think is not None else "") + f"<answer>{label}</answer>"


def qa_record(fer_set, image_path: str, label: str, **extra) -> dict:
    """A FERBench QA record of ``fer_set``; ``extra`` (``model_response``, ``error``) makes it a results record."""
    return {"image_path": image_path, "true_label": label, "prompt": fer_set.prompt,
            "candidate_labels": list(fer_set.labels), **extra}


def results_record(fer_set, image_path: str, label: str, response: str, **extra) -> dict:
    return qa_record(fer_set, image_path, label, model_response=response, **extra)


def cot_record(image_path: str, label: str, think: str = "the mouth", question: str = RAF.prompt) -> dict:
    return {"image_path": image_path, "question": question, "response": answer(label, think)}


def rlvr_record(image_path: str, label: str, problem: str = RAF.prompt) -> dict:
    return {"image_path": image_path, "problem": problem, "solution": answer(label)}


def make_records(kind: str, label_of=lambda i: RAF.labels[i % len(RAF.labels)], n: int = 6) -> list[dict]:
    """``n`` RAF-DB records of ``kind`` (qa, results, cot, rlvr) for images ``/faces/{i}.png``."""
    out = []
    for i in range(n):
        path, label = f"/faces/{i}.png", label_of(i)
        if kind == "qa":
            out.append(qa_record(RAF, path, label))
        elif kind == "results":
            out.append(results_record(RAF, path, label, answer(label, "the mouth")))
        elif kind == "cot":
            out.append(cot_record(path, label))
        else:
            out.append(rlvr_record(path, label))
    return out


def dump(path: Path, obj, jsonl: bool = False, bom: bool = False, indent: int | None = 1) -> Path:
    """Write records as a JSON array (``indent``) or JSON Lines, UTF-8, optionally with a byte-order mark; a str is
    written as it is."""
    if isinstance(obj, str):
        text = obj
    elif jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in obj)
    else:
        text = json.dumps(obj, indent=indent)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------------- tiny images
def save_png(path: Path, img: Image.Image) -> Path:
    """Save ``img`` at ``path`` (the format follows the suffix), creating the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def tiny_image(path: Path, size=(7, 5), color=(10, 200, 30), mode: str = "RGB") -> Path:
    """A small plain image at ``path`` (PNG or JPEG by suffix)."""
    return save_png(path, Image.new(mode, size, color))


def halves(size=(60, 40), left=(230, 20, 20), right=(20, 20, 230)) -> Image.Image:
    """An image whose left half is one colour and right half another (so flips and rotations show)."""
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def one_photo_per_label(photos, n: int = 4) -> list:
    """The first photo of each label, ``n`` of them."""
    by_label = {}
    for p in photos:
        by_label.setdefault(p.label, p)
    return list(by_label.values())[:n]


# ---------------------------------------------------------------------------------------------- command runners
def in_process(main, *args) -> tuple[int, str, str]:
    """Run a CLI ``main`` through ``unifer.errors.run_cli`` in this process: (exit status, stdout, stderr)."""
    from unifer.errors import run_cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = run_cli(main, [str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


UNIFER_SETTINGS = ("UNIFER_HOME", "UNIFER_MODEL", "UNIFER_IMAGE_ROOT", "CUDA_VISIBLE_DEVICES", "NPROC_PER_NODE",
                   "VLLM_MODE", "DEEPSPEED_CONFIG", "PREFLIGHT_IMAGES")


def clean_env(**extra) -> dict:
    """This environment without the settings the scripts read, importing this checkout, offline, no report_to."""
    env = {k: v for k, v in os.environ.items() if k not in UNIFER_SETTINGS}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PYTHON=PY, REPORT_TO="none")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, cwd=REPO, timeout=180, clean: bool = True, **env) -> subprocess.CompletedProcess:
    """A command line as a user runs it, in ``clean_env(**env)`` (``clean=False``: this environment plus ``env``);
    every argument may be a Path."""
    full_env = clean_env(**env) if clean else {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True,
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


HEAVY_IMPORT = re.compile(r"\|\s+(torch|transformers|trl|vllm|deepspeed)$")


def heavy_imports(res: subprocess.CompletedProcess) -> list[str]:
    """The model libraries a command run with PYTHONPROFILEIMPORTTIME=1 imported."""
    return [ln for ln in res.stderr.splitlines() if ln.startswith("import time:") and HEAVY_IMPORT.search(ln.rstrip())]


def listing(d: Path) -> dict[str, bytes | None]:
    """Every path under ``d`` with its bytes (None for a folder): what a command wrote shows as a difference."""
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


# --------------------------------------------------------------------------------------------------- processes
def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, read from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def checkpoint_digest(path) -> str:
    """sha256 over a checkpoint's weight files (to show a builder is deterministic)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------ API key hygiene
FAKE_KEY = "-".join(("sk", "test", "Zq8vJ3kLmN0pQrStUvWxYz1234567890abcdEFGH"))  # a fake key, joined at run time
_MID = len(FAKE_KEY) // 2
# the whole key and its head, middle and tail: a leak of any of them fails (the proxy echoes the key whole and
# as sk-...tail, as vendors do)
KEY_PIECES = {"whole key": FAKE_KEY, "head": FAKE_KEY[:14], "middle": FAKE_KEY[_MID - 6:_MID + 6],
              "tail": FAKE_KEY[-12:]}


def assert_key_nowhere(folder: Path, printed: str, when: str) -> None:
    """No piece of the key in any file under ``folder`` nor in ``printed`` (stdout, stderr and the log)."""
    for name, piece in KEY_PIECES.items():
        leaks = [str(p) for p in folder.rglob("*") if p.is_file() and piece.encode() in p.read_bytes()]
        assert not leaks, f"{when}: the key's {name} is written in {leaks}"
        assert piece not in printed, f"{when}: the key's {name} is printed or logged"
