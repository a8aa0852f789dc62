"""`unifer ferbench export`: the Hugging Face dataset loads with `datasets` and equals the QA files record for record,
images byte for byte (on the packaged photos' mini FERBench and on the published QA files with stand-in images); the
VLMEvalKit TSVs read back as VLMEvalKit reads them; the lmms-eval task folder has the shape lmms-eval loads; an image
missing under the root stops the export and is named."""
from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import yaml
from helpers import in_process
from PIL import Image

from unifer.cli import main as unifer_main
from unifer.data.images import join_image_path, open_image
from unifer.data.jsonio import read_records
from unifer.data.sets import SET_KEYS, get_set

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def mini(tmp_path_factory, photos):
    """The demo's mini FERBench: the packaged photos in the four raw layouts, built with `unifer ferbench build`."""
    from unifer.data.ferbench import build
    from unifer.demo.data import split_photos, write_raw_datasets

    base = tmp_path_factory.mktemp("mini")
    write_raw_datasets(base / "raw", split_photos(photos), with_train=False)
    build(base / "raw", out_dir=base / "qa")
    return base / "raw", base / "qa"


@pytest.fixture(scope="module")
def published(tmp_path_factory, shared_ferbench):
    """The published QA files over generated stand-in images (a different small picture per item, in the format
    the file name says)."""
    root = tmp_path_factory.mktemp("standin")
    for key in SET_KEYS:
        for i, r in enumerate(read_records(shared_ferbench / get_set(key).qa_filename)):
            path = join_image_path(root, r["image_path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            img = Image.new("RGB", (6, 4), (i % 251, (i // 251) % 251, 7 * SET_KEYS.index(key)))
            img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return root, shared_ferbench


def export(fmt: str, image_root, qa_dir, out, *extra) -> str:
    rc, stdout, stderr = in_process(unifer_main, "ferbench", "export", "--format", fmt, "--image-root", image_root,
                                    "--qa-dir", qa_dir, "--out", out, *extra)
    assert rc == 0, stderr
    return stdout


def assert_hf_equals_qa(out, image_root, qa_dir, cache):
    for key in SET_KEYS:
        records = read_records(qa_dir / get_set(key).qa_filename)
        # (datasets caches a local folder by its name and configuration: a fresh cache reads this one)
        ds = datasets.load_dataset(str(out), key, split="test", cache_dir=str(cache))
        assert ds.num_rows == len(records)
        assert isinstance(ds.features["image"], datasets.Image)
        raw = ds.cast_column("image", datasets.Image(decode=False))
        for r, row in zip(records, raw):
            assert {k: row[k] for k in r} == r
            assert row["image"]["bytes"] == join_image_path(image_root, r["image_path"]).read_bytes()
        first = ds[0]["image"]  # decodes: a PIL image of the file
        assert first.size == open_image(join_image_path(image_root, records[0]["image_path"])).size


def test_hf_export_loads_and_equals_the_mini_ferbench(mini, tmp_path):
    raw, qa = mini
    out = tmp_path / "hf"
    printed = export("hf", raw, qa, out)
    assert str(out) in printed
    assert_hf_equals_qa(out, raw, qa, tmp_path / "cache")
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == list(SET_KEYS)
    assert "Citation" in card and "2511.00389" in card and "licence" in card.lower()
    for key in SET_KEYS:
        assert f"| `{key}` | {get_set(key).name} | {len(read_records(qa / get_set(key).qa_filename))} |" in card


def test_hf_export_of_the_published_qa_files(published, tmp_path):
    root, qa = published
    export("hf", root, qa, tmp_path / "hf")
    assert_hf_equals_qa(tmp_path / "hf", root, qa, tmp_path / "cache")


def test_vlmevalkit_tsv_reads_back_as_vlmevalkit_reads_it(mini, tmp_path):
    import pandas as pd

    raw, qa = mini
    export("vlmevalkit", raw, qa, tmp_path / "vlm", "--sets", "rafdb,sfew")
    assert sorted(p.name for p in (tmp_path / "vlm").iterdir()) == ["FERBench_RAFDB.tsv", "FERBench_SFEW.tsv"]
    for key, name in (("rafdb", "FERBench_RAFDB"), ("sfew_2.0", "FERBench_SFEW")):
        records = read_records(qa / get_set(key).qa_filename)
        frame = pd.read_csv(tmp_path / "vlm" / f"{name}.tsv", sep="\t")  # VLMEvalKit's load() of a .tsv
        assert list(frame.columns[:4]) == ["index", "image", "question", "answer"]
        assert frame["index"].tolist() == list(range(len(records)))
        assert frame["question"].tolist() == [r["prompt"] for r in records]
        assert frame["answer"].tolist() == [r["true_label"] for r in records]
        assert frame["ferbench_image_path"].tolist() == [r["image_path"] for r in records]
        assert "image_path" not in frame.columns  # VLMEvalKit would read it as where to write the image
        for r, b64 in zip(records, frame["image"]):
            decoded = Image.open(io.BytesIO(base64.b64decode(b64)))  # VLMEvalKit's decode_base64_to_image
            original = open_image(join_image_path(raw, r["image_path"]))
            assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(original))


class _TaskLoader(yaml.SafeLoader):
    """lmms-eval's YAML: `!function utils.NAME` names a function of the task folder's utils.py."""


_TaskLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


def test_lmms_eval_task_folder_has_the_shape_lmms_eval_loads(mini, tmp_path, monkeypatch):
    import importlib.util

    raw, qa = mini
    out = tmp_path / "lmms"
    export("lmms-eval", raw, qa, out, "--sets", "rafdb,ferplus")
    tasks = out / "unifer_ferbench" / "tasks" / "ferbench"
    assert sorted(p.name for p in tasks.iterdir()) == ["ferbench.yaml", "ferbench_ferplus.yaml",
                                                       "ferbench_rafdb.yaml", "utils.py"]
    group = yaml.load((tasks / "ferbench.yaml").read_text(), Loader=_TaskLoader)
    assert group["group"] == "ferbench" and group["task"] == ["ferbench_rafdb", "ferbench_ferplus"]
    assert all(m["weight_by_size"] for m in group["aggregate_metric_list"])  # pooled, as the paper's total
    spec = importlib.util.spec_from_file_location("ferbench_utils", tasks / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    for key, task in (("rafdb", "ferbench_rafdb"), ("ferplus", "ferbench_ferplus")):
        config = yaml.load((tasks / f"{task}.yaml").read_text(), Loader=_TaskLoader)
        assert config["task"] == task and config["test_split"] == "test"
        assert config["output_type"] == "generate_until"
        assert config["reasoning_tags"] == "none"  # lmms-eval would strip <think> blocks before scoring otherwise
        assert config["generation_kwargs"]["max_new_tokens"] == 1024 and config["generation_kwargs"]["do_sample"] is False
        assert [m["metric"] for m in config["metric_list"]] == ["accuracy", "accuracy_strict"]
        for name in ("doc_to_messages", "doc_to_visual", "doc_to_text", "doc_to_target", "process_results"):
            kind, ref = config[name]
            assert kind == "function" and callable(getattr(utils, ref.split(".")[1]))
        assert config["dataset_kwargs"]["cache_dir"].startswith(str(out / "cache"))
        doc = datasets.load_dataset(config["dataset_path"], config["dataset_name"], split="test",
                                    cache_dir=config["dataset_kwargs"]["cache_dir"])[0]
        records = read_records(qa / get_set(key).qa_filename)
        assert doc["image_path"] == records[0]["image_path"]
        (message,) = utils.doc_to_messages(doc)
        image, text = message["content"]
        assert image["type"] == "image" and image["url"].size == (224, 224) and text["text"] == records[0]["prompt"]
        truth = doc["true_label"]
        other = next(lab for lab in get_set(key).labels if lab != truth)
        assert utils.process_results(doc, [f"<think>x</think><answer>{truth}</answer>"]) == {
            "accuracy": 1.0, "accuracy_strict": 1.0}
        assert utils.process_results(doc, [f"it looks {truth}"]) == {"accuracy": 1.0,
                                                                    "accuracy_strict": 0.0}
        assert utils.process_results(doc, [f"<answer>{other}</answer>"])["accuracy"] == 0.0
    # the plugin hook: LMMS_EVAL_PLUGINS imports PACKAGE.models (AVAILABLE_MODELS) and PACKAGE.tasks
    monkeypatch.syspath_prepend(str(out))
    assert importlib.import_module("unifer_ferbench.models").AVAILABLE_MODELS == {}
    assert importlib.util.find_spec("unifer_ferbench.tasks").submodule_search_locations[0] == str(tasks.parent)


def test_an_image_missing_under_the_root_stops_the_export_and_is_named(mini, tmp_path):
    raw, qa = mini
    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    first = read_records(qa / "ferplus_qa.json")[2]["image_path"]
    join_image_path(root, first).unlink()
    out = tmp_path / "hf"
    rc, _, stderr = in_process(unifer_main, "ferbench", "export", "--format", "hf", "--image-root", root,
                               "--qa-dir", qa, "--out", out)
    assert rc == 2 and stderr.count("\n") == 1, stderr
    assert "1 of" in stderr and first in stderr and "record 2" in stderr and "nothing exported" in stderr
    assert not out.exists()  # every set's images are checked before anything is written
    rc, _, stderr = in_process(unifer_main, "ferbench", "export", "--format", "vlmevalkit", "--image-root",
                               tmp_path / "nowhere", "--qa-dir", qa, "--out", out)
    assert rc == 2 and "is not a directory" in stderr


def test_export_refuses_a_qa_file_it_cannot_read(tmp_path, image_root):
    (tmp_path / "rafdb_qa.json").write_text(json.dumps([{"image_path": "/faces/0.png"}]))
    rc, _, stderr = in_process(unifer_main, "ferbench", "export", "--format", "hf", "--image-root", image_root,
                               "--qa-dir", tmp_path, "--out", tmp_path / "out", "--sets", "rafdb")
    assert rc == 2 and "rafdb_qa.json: record 0" in stderr and "true_label" in stderr
