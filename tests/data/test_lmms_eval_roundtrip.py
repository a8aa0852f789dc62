"""The round trip through a real lmms-eval: `unifer ferbench export --format lmms-eval` on the packaged photos' mini
FERBench, lmms-eval's OpenAI-compatible model against a real vLLM server of the tiny model (`--limit`,
`--log_samples`), `unifer import lmms-eval` of its samples, and `unifer eval` on them: lmms-eval's accuracy is
this repository's, set by set, under both protocols."""
from __future__ import annotations

import json
import sys

import pytest
from helpers import PY, in_process, run

from unifer.cli import main as unifer_main
from unifer.data.jsonio import read_records
from unifer.data.sets import SET_KEYS, get_set

LIMIT = 3
TASKS = {"rafdb": "ferbench_rafdb", "ferplus": "ferbench_ferplus", "affectnet": "ferbench_affectnet",
         "sfew_2.0": "ferbench_sfew"}

#: lmms-eval 0.7.3 patches ``filelock._api``, a module filelock 4 no longer has; where it is missing, the patch (a
#: guard for several processes sharing a datasets lock) is skipped — one process runs here.
LAUNCHER = """
import sys
try:
    import filelock._api  # noqa: F401
except ImportError:
    import lmms_eval.evaluator
    lmms_eval.evaluator._enable_reentrant_filelocks._patched = True
from lmms_eval.__main__ import cli_evaluate
sys.exit(cli_evaluate())
"""


@pytest.mark.slow
def test_lmms_eval_accuracy_on_the_exported_tasks_is_unifer_eval_on_the_imported_samples(
        tiny_vllm_server, photos, tmp_path):
    pytest.importorskip("lmms_eval")
    from unifer.data.ferbench import build
    from unifer.demo.data import split_photos, write_raw_datasets

    base_url, served, _log = tiny_vllm_server
    write_raw_datasets(tmp_path / "raw", split_photos(photos), with_train=False)
    build(tmp_path / "raw", out_dir=tmp_path / "qa")
    rc, _, err = in_process(unifer_main, "ferbench", "export", "--format", "lmms-eval", "--image-root",
                                  tmp_path / "raw", "--qa-dir", tmp_path / "qa", "--out", tmp_path / "lmms",
                                  "--max-new-tokens", "48")  # CI time: the paper's 1024 is the default
    assert rc == 0, err
    tasks = tmp_path / "lmms" / "unifer_ferbench" / "tasks"
    res = run([PY, "-c", LAUNCHER, "--model", "openai",
               "--model_args", f"model={served},base_url={base_url},api_key=EMPTY,num_concurrent=2",
               "--include_path", tasks, "--tasks", "ferbench", "--limit", LIMIT, "--log_samples",
               "--output_path", tmp_path / "out", "--batch_size", "1"],
              timeout=600, HF_DATASETS_OFFLINE=1, OPENAI_API_KEY="EMPTY")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    (results_json,) = (tmp_path / "out").rglob("*_results.json")
    reported = json.loads(results_json.read_text())["results"]
    samples = sorted((tmp_path / "out").rglob("*_samples_ferbench_*.jsonl"))
    assert len(samples) == len(SET_KEYS)
    rc, _, err = in_process(unifer_main, "import", "lmms-eval", *samples, "--qa-dir", tmp_path / "qa",
                                  "--results-dir", tmp_path / "results")
    assert rc == 0, err
    answered = 0
    for key in SET_KEYS:
        s = get_set(key)
        results = tmp_path / "results" / f"{key}_{served}_results.json"
        records = read_records(results)
        assert [r["image_path"] for r in records] == [r["image_path"] for r in
                                                      read_records(tmp_path / "qa" / s.qa_filename)[:LIMIT]]
        answered += sum(1 for r in records if r["model_response"].strip())
        for protocol, metric in (("paper", "accuracy,none"), ("strict", "accuracy_strict,none")):
            metrics = tmp_path / f"{key}_{protocol}_metrics.json"
            rc, _, err = in_process(unifer_main, "eval", "--set", key, "--results", results, "--output", metrics,
                                    "--protocol", protocol, "--no-figs")
            assert rc == 0, err
            ours = json.loads(metrics.read_text())["overall"]["accuracy"]
            assert ours == pytest.approx(reported[TASKS[key]][metric], abs=1e-12), (key, protocol)
    assert answered > 0  # the server answered (a run of empty responses would agree trivially)
    print(f"lmms-eval round trip: {sys.version.split()[0]}, {answered} answered of {LIMIT * len(SET_KEYS)}")
