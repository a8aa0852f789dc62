"""All of FERBench in one process (eval_total/code/infer_unifer.py, unifer ferbench run): one model load, one
stream over the four sets, per-set results byte-identical to the four per-set scripts', resume per set."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unifer.data.sets import REPO_ROOT, SET_KEYS, get_set
from unifer.infer import allsets
from unifer.infer.engines import EngineDeadError
from unifer.infer.runner import main as infer_main

TOKENS = 12
PY = sys.executable


def _qa(paths, key) -> list[dict]:
    s = get_set(key)
    return [{"image_path": str(p), "true_label": s.labels[n % len(s.labels)], "prompt": s.prompt,
             "candidate_labels": list(s.labels)} for n, p in enumerate(paths)]


@pytest.fixture(scope="module")
def qa_dir(photos, tmp_path_factory) -> Path:
    """The four sets, 3-5 real photos each (different counts, so batches straddle sets), plus a broken image."""
    d = tmp_path_factory.mktemp("qa")
    broken = d / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    paths = [p.path for p in photos][:16]
    start = 0
    for n, key in enumerate(SET_KEYS):
        chosen = paths[start:start + 3 + n % 3]
        start += len(chosen)
        if key == "ferplus":
            chosen.append(broken)
        (d / get_set(key).qa_filename).write_text(json.dumps(_qa(chosen, key)), encoding="utf-8")
    return d


def _flags(model, *extra):
    return ["--model", str(model), "--run", "unifer_7b", "--image-root", "/", "--max-new-tokens", str(TOKENS),
            "--dtype", "float32", *map(str, extra)]


@pytest.fixture(scope="module")
def per_set(tiny_model, qa_dir, tmp_path_factory) -> dict[str, bytes]:
    """The four per-set scripts' results (their main(), in-process), batch size 2."""
    out = tmp_path_factory.mktemp("per_set")
    results = {}
    for key in SET_KEYS:
        s = get_set(key)
        target = out / s.default_results_path().name
        assert infer_main(_flags(tiny_model, "--batch-size", 2) + [
            "--input", str(qa_dir / s.qa_filename), "--output", str(target)], key) == 0
        results[key] = target.read_bytes()
    return results


def test_one_process_writes_the_per_set_scripts_bytes_with_one_model_load(tiny_model, qa_dir, per_set, tmp_path,
                                                                          capsys):
    assert allsets.main(_flags(tiny_model, "--batch-size", 3, "--qa-dir", qa_dir, "--results-dir", tmp_path)) == 0
    said = capsys.readouterr()
    assert said.err.count("loading ") == 1, said.err  # the one model load (suite.answer_jobs says it)
    for key in SET_KEYS:
        assert (tmp_path / get_set(key).default_results_path().name).read_bytes() == per_set[key], key
    ferplus = json.loads((tmp_path / get_set("ferplus").default_results_path().name).read_text())
    assert ferplus[-1]["error"] is True and "broken.jpg" in ferplus[-1]["model_response"]
    assert not list(tmp_path.glob("*.progress.jsonl"))
    assert "4 sets, one model load" in said.out


def _fake(*extra):
    return ["--engine", "fake", "--model", "tiny", "--run", "unifer_7b", "--image-root", "/", *map(str, extra)]


def test_a_run_that_dies_midway_resumes_every_set_to_the_same_bytes(qa_dir, tmp_path):
    """The fake engine dies at its 4th generate call (an engine failure: the run stops, what finished is kept);
    the rerun finishes every set with the bytes of a run that never died."""
    clean = tmp_path / "clean"
    assert allsets.main(_fake("--batch-size", 2, "--qa-dir", qa_dir, "--results-dir", clean)) == 0
    out = tmp_path / "out"
    with pytest.raises(EngineDeadError, match="fake engine died at call 4"):
        allsets.main(_fake("--batch-size", 2, "--qa-dir", qa_dir, "--results-dir", out,
                           "--fake-engine-failure-at-call", 4))
    kept = {p.name: p.read_text().count('"index"') for p in out.glob("*.progress.jsonl")}
    assert sum(kept.values()) >= 6, kept  # three batches of two were recorded before the failure
    assert allsets.main(_fake("--batch-size", 2, "--qa-dir", qa_dir, "--results-dir", out)) == 0
    for key in SET_KEYS:
        name = get_set(key).default_results_path().name
        assert (out / name).read_bytes() == (clean / name).read_bytes(), key


def test_shards_of_the_four_sets_merge_to_the_same_bytes(tiny_model, qa_dir, per_set, tmp_path):
    for i in range(2):
        assert allsets.main(_flags(tiny_model, "--batch-size", 2, "--qa-dir", qa_dir, "--results-dir", tmp_path,
                                   "--shard", f"{i}/2")) == 0
    for key in SET_KEYS:
        assert (tmp_path / get_set(key).default_results_path().name).read_bytes() == per_set[key], key


def test_ferbench_run_answers_scores_and_prints_the_table(tiny_model, qa_dir, per_set, tmp_path):
    res = subprocess.run([PY, "-m", "unifer", "ferbench", "run", *_flags(tiny_model, "--batch-size", 4),
                          "--qa-dir", str(qa_dir), "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for key in SET_KEYS:
        s = get_set(key)
        assert (tmp_path / s.default_results_path().name).read_bytes() == per_set[key], key
        for suffix in ("", "_strict"):
            m = json.loads((tmp_path / f"{key}_unifer_7b_metrics{suffix}.json").read_text())
            assert m["counts"]["total"] == len(json.loads(per_set[key]))
    total = json.loads((tmp_path / "unifer_7b_results.json").read_text())
    table = (tmp_path / "unifer_7b_table.md").read_text()
    assert table.strip() in res.stdout
    assert f"{100 * total['overall']['accuracy']:.2f}" in res.stdout
    assert not any((REPO_ROOT / "figs").glob("*_unifer_7b*")), "scoring must not write into figs/"


def test_the_four_set_face_checks_its_flags_before_loading(tiny_model, qa_dir, tmp_path):
    face = REPO_ROOT / "eval_total" / "code" / "infer_unifer.py"
    res = subprocess.run([PY, str(face), "--model", str(tiny_model), "--qa-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "rafdb_qa.json" in res.stderr
    res = subprocess.run([PY, str(face), "--model", str(tiny_model), "--sets", "rafdb,ckplus", "--qa-dir",
                          str(qa_dir)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--sets: unknown FERBench set 'ckplus'" in res.stderr
    res = subprocess.run([PY, str(face), "--help"], capture_output=True, text=True, timeout=120)
    assert "--qa-dir" in res.stdout and "--input" not in res.stdout


@pytest.mark.slow
def test_vllm_streams_the_four_sets_and_answers_like_hf(tiny_model, qa_dir, per_set, tmp_path):
    pytest.importorskip("vllm")
    res = subprocess.run([PY, str(REPO_ROOT / "eval_total" / "code" / "infer_unifer.py"), "--engine", "vllm",
                          *_flags(tiny_model), "--qa-dir", str(qa_dir), "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                          "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    for key in SET_KEYS:
        got = json.loads((tmp_path / get_set(key).default_results_path().name).read_text())
        want = json.loads(per_set[key])
        assert [r.get("error", False) for r in got] == [r.get("error", False) for r in want]
        assert [r["model_response"] for r in got] == [r["model_response"] for r in want], key
