"""`unifer import lmms-eval|vlmevalkit`: another tool's per-sample outputs become results files + .meta.json that
score like the original results, with every sample that matches no item and every item without a sample listed;
a file of the wrong shape is one line naming the row and the field."""
from __future__ import annotations

import json

import pytest
from helpers import answer, in_process, make_records, results_record

from unifer.cli import main as unifer_main
from unifer.data.jsonio import read_records
from unifer.data.runmeta import read_meta
from unifer.data.sets import get_set
from unifer.scoring.aggregate import load_results, score_set
from unifer.scoring.leaderboard import score_run

RAF, SFEW = get_set("rafdb"), get_set("sfew_2.0")


def responses(fer_set, n):
    """A mix the two protocols score differently: exact answers, wrong ones, a label named only in prose."""
    out = []
    for i in range(n):
        truth = fer_set.labels[i % len(fer_set.labels)]
        wrong = fer_set.labels[(i + 1) % len(fer_set.labels)]
        out.append([answer(truth, "the mouth"), answer(wrong), f"I would say {truth}", "no idea"][i % 4])
    return out


@pytest.fixture
def qa_dir(tmp_path):
    """QA files of two sets (RAF-DB: 6 items, SFEW 2.0: 5) and the results a run of our own gave on them."""
    d = tmp_path / "qa"
    d.mkdir()
    raf = make_records("qa")
    sfew = [{**r, "image_path": f"/sfew/{i}.png", "true_label": SFEW.labels[i], "prompt": SFEW.prompt,
             "candidate_labels": list(SFEW.labels)} for i, r in enumerate(make_records("qa", n=5))]
    (d / RAF.qa_filename).write_text(json.dumps(raf))
    (d / SFEW.qa_filename).write_text(json.dumps(sfew))
    return d


def original_results(qa_dir, fer_set):
    records = read_records(qa_dir / fer_set.qa_filename)
    return [results_record(fer_set, r["image_path"], r["true_label"], resp)
            for r, resp in zip(records, responses(fer_set, len(records)))]


def unifer(*args):
    return in_process(unifer_main, *args)


def test_vlmevalkit_predictions_score_like_the_original_results(qa_dir, tmp_path):
    """A predictions file in VLMEvalKit's layout (the exported TSV's columns minus the image, plus `prediction`),
    as .xlsx and as .tsv."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    for fer_set, name, fmt in ((RAF, "FERBench_RAFDB", "xlsx"), (SFEW, "FERBench_SFEW", "tsv")):
        original = original_results(qa_dir, fer_set)
        frame = pd.DataFrame({"index": range(len(original)), "question": [r["prompt"] for r in original],
                              "answer": [r["true_label"] for r in original],
                              "ferbench_image_path": [r["image_path"] for r in original],
                              "candidate_labels": [",".join(r["candidate_labels"]) for r in original],
                              "prediction": [r["model_response"] for r in original]})
        frame = frame.iloc[::-1]  # the order of the rows is not what pairs them
        path = tmp_path / f"Qwen2.5-VL-7B_{name}.{fmt}"
        frame.to_excel(path, index=False) if fmt == "xlsx" else frame.to_csv(path, sep="\t", index=False)
        rc, _, err = unifer("import", "vlmevalkit", path, "--qa-dir", qa_dir, "--results-dir", tmp_path / "res")
        assert rc == 0, err
        results = tmp_path / "res" / f"{fer_set.key}_Qwen2.5-VL-7B_results.json"
        assert read_records(results) == original  # the QA file's order, each record plus the response
        for protocol in ("paper", "strict"):
            assert score_set(load_results(results, fer_set), fer_set, protocol) == score_set(original, fer_set,
                                                                                              protocol)
        meta = read_meta(results)
        assert meta["engine"] == "vlmevalkit" and meta["run"] == "Qwen2.5-VL-7B" and meta["items"] == len(original)
        assert meta["unmatched_samples"] == [] and meta["items_without_sample"] == []


def lmms_line(image_path, response, prompt=RAF.prompt, **extra):
    """One line of lmms-eval 0.7's --log_samples file (the document itself is not kept)."""
    return json.dumps({"doc_id": 0, "target": "x", "filtered_resps": response, "input_media": [image_path],
                       "input": prompt, "accuracy": 0.0, **extra})


def test_lmms_eval_samples_import_and_list_what_did_not_pair(qa_dir, tmp_path):
    original = original_results(qa_dir, RAF)
    out = tmp_path / "lmms" / "tiny"
    out.mkdir(parents=True)
    lines = [lmms_line(r["image_path"], r["model_response"]) for r in original[:4]]
    lines.append(lmms_line("/faces/99.png", answer("anger")))  # an image FERBench does not have
    lines.append(lmms_line(original[0]["image_path"], "second"))  # a second sample of item 0
    lines.append(json.dumps({"doc_id": 5, "doc": {"image_path": original[5]["image_path"]},  # older lmms-eval:
                             "resps": [[original[5]["model_response"]]], "filtered_resps": ["x"]}))  # the doc kept
    samples = out / "20260101_000000_samples_ferbench_rafdb.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    (out / "20260101_000000_results.json").write_text(json.dumps({
        "config": {"model_args": "model=org/Tiny-VL,base_url=http://127.0.0.1:8000/v1"},
        "configs": {"ferbench_rafdb": {"generation_kwargs": {"max_new_tokens": 64, "temperature": 0,
                                                             "do_sample": False, "until": []}}}}))
    rc, printed, err = unifer("import", "lmms-eval", samples, "--qa-dir", qa_dir, "--results-dir", tmp_path / "res")
    assert rc == 0, err
    results = tmp_path / "res" / "rafdb_Tiny-VL_results.json"
    kept = [original[i] for i in (0, 1, 2, 3, 5)]
    assert read_records(results) == kept
    assert score_set(load_results(results, RAF), RAF) == score_set(kept, RAF)
    meta = read_meta(results)
    assert meta["model"] == "org/Tiny-VL" and meta["engine"] == "lmms-eval"
    assert meta["decoding"]["max_new_tokens"] == 64 and meta["decoding"]["greedy"] is True
    assert meta["items_without_sample"] == [original[4]["image_path"]]
    assert [u.split(": ")[0] for u in meta["unmatched_samples"]] == [f"{samples.name}:5", f"{samples.name}:6"]
    assert "/faces/99.png" in printed and "second sample" in printed and "1 of 6 RAF-DB items have no sample" in printed
    row = score_run("Tiny-VL", {"rafdb": results})  # the leaderboard reads it like any run
    assert row["model"] == "org/Tiny-VL" and row["engine"] == "lmms-eval" and row["items"] == 5
    rc, _, err = unifer("import", "lmms-eval", samples, "--qa-dir", qa_dir, "--results-dir", tmp_path / "res")
    assert rc == 2 and "already exists" in err  # never over an earlier import without --overwrite


def test_a_failed_request_becomes_an_error_item(qa_dir, tmp_path):
    records = read_records(qa_dir / RAF.qa_filename)
    samples = tmp_path / "s_samples_ferbench_rafdb.jsonl"
    samples.write_text(lmms_line(records[0]["image_path"], "[LMMS_EVAL_REQUEST_FAILED after 5 retries] boom") + "\n"
                       + lmms_line(records[1]["image_path"], answer(records[1]["true_label"])) + "\n")
    rc, _, err = unifer("import", "lmms-eval", samples, "--qa-dir", qa_dir, "--results-dir", tmp_path, "--run", "r")
    assert rc == 0, err
    results = read_records(tmp_path / "rafdb_r_results.json")
    assert results[0]["error"] is True and "error" not in results[1]
    assert score_set(results, RAF)["counts"]["errors"] == 1


@pytest.mark.parametrize("line, fragments", [
    ("{not json", ["line 1 is not JSON"]),
    (json.dumps({"doc_id": 0, "input_media": ["/faces/0.png"]}), ["line 1", "'filtered_resps'", "missing field"]),
    (json.dumps({"doc_id": 0, "filtered_resps": "x", "input_media": "/faces/0.png"}),
     ["line 1", "'input_media'", "expected list"]),
    (json.dumps({"filtered_resps": 3, "input_media": ["/faces/0.png"]}), ["line 1", "'filtered_resps'"]),
])
def test_an_lmms_eval_file_of_the_wrong_shape_is_one_line(qa_dir, tmp_path, line, fragments):
    samples = tmp_path / "x_samples_ferbench_rafdb.jsonl"
    samples.write_text(line + "\n")
    rc, _, err = unifer("import", "lmms-eval", samples, "--qa-dir", qa_dir, "--results-dir", tmp_path)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for f in [str(samples), *fragments]:
        assert f in err, err


def test_a_vlmevalkit_file_of_the_wrong_shape_is_one_line(qa_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "M_FERBench_RAFDB.tsv"
    pd.DataFrame({"index": [0], "question": [RAF.prompt], "answer": ["anger"], "image_path": ["/faces/0.png"]}).to_csv(
        path, sep="\t", index=False)
    rc, _, err = unifer("import", "vlmevalkit", path, "--qa-dir", qa_dir, "--results-dir", tmp_path)
    assert rc == 2 and err.count("\n") == 1 and "'ferbench_image_path'" in err and "no column" in err, err
    pd.DataFrame({"ferbench_image_path": [""], "prediction": ["x"], "question": [RAF.prompt]}).to_csv(
        path, sep="\t", index=False)
    rc, _, err = unifer("import", "vlmevalkit", path, "--qa-dir", qa_dir, "--results-dir", tmp_path)
    assert rc == 2 and "row 2" in err and "'ferbench_image_path'" in err, err


def test_samples_of_no_known_set_ask_for_set(qa_dir, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(lmms_line("/faces/0.png", "x", prompt="Describe the image.") + "\n")
    rc, _, err = unifer("import", "lmms-eval", samples, "--qa-dir", qa_dir, "--results-dir", tmp_path)
    assert rc == 2 and "--set" in err, err
    rc, _, err = unifer("import", "lmms-eval", samples, "--set", "rafdb", "--qa-dir", qa_dir, "--results-dir",
                        tmp_path, "--run", "given")
    assert rc == 0, err
    assert read_meta(tmp_path / "rafdb_given_results.json")["items"] == 1
