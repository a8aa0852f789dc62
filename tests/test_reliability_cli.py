"""Reliability, command lines: usage errors name the allowed values; bad inference numbers stop before the model
loads."""
from __future__ import annotations

import pytest
from helpers import PY, REPO, dump, heavy_imports, make_records, one_clear_line, run


@pytest.mark.parametrize("argv,fragment", [
    (["-m", "unifer", "infer", "--set", "ckplus"],
     "argument --set: invalid choice: 'ckplus' (choose from 'rafdb', 'ferplus', 'affectnet', 'sfew_2.0')"),
    (["eval_rafdb/code/infer_unifer.py", "--engine", "onnx"], "invalid choice: 'onnx' (choose from 'hf', 'vllm', 'openai', 'fake')"),
    (["eval_rafdb/code/infer_unifer.py", "--dtype", "int8"], "(choose from 'auto', 'bfloat16', 'float16', 'float32')"),
    (["eval_rafdb/code/infer_unifer.py", "--batch-size", "two"], "argument --batch-size: invalid int value: 'two'"),
    (["eval_rafdb/code/eval_unifer.py", "--protocol", "lax"], "invalid choice: 'lax' (choose from 'paper', 'strict')"),
    (["-m", "unifer", "data", "check", "x.json", "--kind", "sft"], "(choose from 'cot', 'qa', 'results', 'rlvr')"),
    (["-m", "unifer", "train", "preflight", "--kind", "rlvr", "--model", "m", "--data", "d", "--image_root", "r",
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
