"""FERBench for any vision-language model (issue 14) through the hf engine, and per-item failures (issue 17.8):
tiny random Qwen3-VL and LLaVA-OneVision checkpoints on the real Qwen2 vocabulary answered by the runner, the model
check for any vision-language checkpoint, presets, run names and the results sidecar, and every per-item failure
becoming an error item while the run goes on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from unifer.data.runmeta import meta_path, read_meta
from unifer.data.sets import REPO_ROOT, get_set
from unifer.errors import UniferError
from unifer.infer.runner import build_parser
from unifer.infer.runner import main as infer_main

PY = sys.executable
TOKENS = 12


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> dict[str, Path]:
    from unifer.demo.tiny_families import BUILDERS

    root = tmp_path_factory.mktemp("families")
    return {name: build(root / f"tiny-{name}", seed=0) for name, build in BUILDERS.items()}


def qa(path: Path, images, prompts=None) -> Path:
    records = []
    for n, image in enumerate(images):
        s = get_set(("rafdb", "ferplus")[n % 2])  # two prompt lengths: a batch is left-padded
        records.append({"image_path": str(image), "true_label": s.labels[n % len(s.labels)],
                        "prompt": prompts[n] if prompts and prompts[n] else s.prompt,
                        "candidate_labels": list(s.labels)})
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def infer(model, qa_file, out, *extra):
    argv = ["--model", str(model), "--input", str(qa_file), "--output", str(out), "--image-root", "/",
            "--max-new-tokens", str(TOKENS), "--dtype", "float32", *map(str, extra)]
    assert infer_main(argv, "rafdb") == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("family", ["qwen3-vl", "llava-onevision"])
def test_a_new_family_answers_through_hf_alike_at_any_batch_size(family, family_models, photos, tmp_path):
    model = family_models[family]
    q = qa(tmp_path / "qa.json", [p.path for p in photos[:5]])
    one = infer(model, q, tmp_path / "b1.json", "--batch-size", 1)
    three = infer(model, q, tmp_path / "b3.json", "--batch-size", 3)
    answers = [r["model_response"] for r in one]
    assert answers == [r["model_response"] for r in three], "left-padded batches answer as one item at a time"
    assert all(a and "error" not in r for a, r in zip(answers, one))
    assert len(set(answers)) >= 4, "answers depend on the image"
    meta = read_meta(tmp_path / "b3.json")
    assert meta["engine"] == "hf" and meta["model_type"] == {"qwen3-vl": "qwen3_vl",
                                                             "llava-onevision": "llava_onevision"}[family]
    assert meta["image_size"] == 224 and meta["decoding"]["greedy"] is True
    assert meta["decoding"]["max_new_tokens"] == TOKENS and meta["items"] == 5 and meta["errors"] == 0
    assert meta["run"] == f"tiny_{family.replace('-', '_')}", "the run is named after the checkpoint folder"
    # The results file itself stays the paper's: the QA records plus model_response, nothing else.
    assert set(three[0]) == {"image_path", "true_label", "prompt", "candidate_labels", "model_response"}


def test_tiny_family_builders_are_deterministic_and_load_as_their_family(family_models, tmp_path):
    from helpers import checkpoint_digest

    from unifer.demo.tiny_families import build_tiny_llava_onevision

    again = build_tiny_llava_onevision(tmp_path / "again", seed=0)
    assert checkpoint_digest(again) == checkpoint_digest(family_models["llava-onevision"])
    for name, d in family_models.items():
        cfg = json.loads((d / "config.json").read_text())
        weights = sum(f.stat().st_size for f in d.glob("*.safetensors"))
        assert weights < 45e6, (name, weights)  # the 151,936 × 64 embedding table is 39 MB of it
        tok = json.loads((d / "tokenizer_config.json").read_text())
        assert "chat_template" in tok
        assert cfg["text_config"]["vocab_size"] == 151936 and cfg["text_config"]["hidden_size"] == 64


def _checkpoint(d: Path, name: str, config, weights: bytes | None = b"ok") -> Path:
    p = d / name
    p.mkdir()
    (p / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights is not None:
        (p / "model.safetensors").write_bytes(weights)
    return p


def test_the_model_check_takes_any_vision_language_checkpoint_and_refuses_the_rest(family_models, tiny_model,
                                                                                    tmp_path):
    from unifer.models.checkpoints import check_model_dir

    for d in [tiny_model, *family_models.values()]:
        assert check_model_dir(d, model_types=None) == d
    real_weights = (family_models["qwen3-vl"] / "model.safetensors").read_bytes()
    header = real_weights[:8 + int.from_bytes(real_weights[:8], "little")]
    qwen3_cfg = json.loads((family_models["qwen3-vl"] / "config.json").read_text())
    cases = {
        "a text-only model (model_type 'llama')": _checkpoint(tmp_path, "llama", {"model_type": "llama"}),
        "a vision model that writes no text (model_type 'clip')": _checkpoint(
            tmp_path, "clip", {"model_type": "clip", "vision_config": {}, "text_config": {}}),
        "config is broken (it has 'vision_config' as a str, not an object)": _checkpoint(
            tmp_path, "bad-vision", {"model_type": "llava", "vision_config": "siglip"}),
        "config is broken (it has no model_type)": _checkpoint(tmp_path, "no-type", {"vision_config": {}}),
        "has a broken weight file model.safetensors": _checkpoint(tmp_path, "cut", qwen3_cfg, header[:-5]),
        "has a config but no weights": _checkpoint(tmp_path, "none", qwen3_cfg, None),
    }
    sharded = _checkpoint(tmp_path, "sharded", qwen3_cfg, None)
    (sharded / "model-00001-of-00002.safetensors").write_bytes(header)
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    cases["lacks weight shards named in model.safetensors.index.json: model-00002-of-00002"] = sharded
    for fragment, d in cases.items():
        with pytest.raises(UniferError) as e:
            check_model_dir(d, model_types=None)
        assert fragment in str(e.value) and str(d) in str(e.value) and "\n" not in str(e.value), str(e.value)
    # The trainers still take Qwen2.5-VL (and Qwen2-VL) only.
    with pytest.raises(UniferError, match="not a Qwen2.5-VL model .model_type 'qwen3_vl'"):
        check_model_dir(family_models["qwen3-vl"])


def test_every_per_item_failure_is_an_error_item_and_the_run_goes_on(tiny_model, photos, tmp_path, capsys):
    """Issue 17.8 on a CPU: a prompt longer than the model's 4096 positions, and an image the Qwen2.5-VL
    processor rejects (a 3×900 strip at --image-size native: aspect ratio over its limit of 200), in batches of 3."""
    tiny = tmp_path / "strip.png"
    Image.new("RGB", (3, 900), (200, 120, 90)).save(tiny)
    good = [p.path for p in photos[:5]]
    images = [good[0], tiny, good[1], good[2], good[4], good[3]]
    long_prompt = "Describe the face in great detail. " * 700 + get_set("rafdb").prompt
    prompts = [None, None, None, None, long_prompt, None]
    results = infer(tiny_model, qa(tmp_path / "qa.json", images, prompts), tmp_path / "out.json",
                    "--batch-size", 3, "--image-size", "native")
    errors = {n: r["model_response"] for n, r in enumerate(results) if r.get("error")}
    assert set(errors) == {1, 4}, errors
    assert errors[1].startswith("ERROR: ValueError: ") and "aspect ratio must be smaller than 200" in errors[1]
    assert errors[4].startswith("ERROR: the prompt is ") and "longer than the model's 4096 positions" in errors[4]
    assert "answering its items one at a time" in capsys.readouterr().err
    # The others are answered as in a run without the culprits.
    clean_qa = tmp_path / "clean.json"
    clean_qa.write_text(json.dumps([{k: v for k, v in results[n].items() if k != "model_response"}
                                    for n in (0, 2, 3, 5)]), encoding="utf-8")
    clean = infer(tiny_model, clean_qa, tmp_path / "clean_out.json", "--batch-size", 3, "--image-size", "native")
    assert [results[n]["model_response"] for n in (0, 2, 3, 5)] == [r["model_response"] for r in clean]
    meta = read_meta(tmp_path / "out.json")
    assert meta["image_size"] == "native" and meta["errors"] == 2 and meta["items"] == 6


def test_items_that_all_fail_alone_stop_the_run_with_the_reason(tiny_model, tmp_path):
    tiny = tmp_path / "strip.png"
    Image.new("RGB", (900, 3)).save(tiny)
    copies = []
    for n in range(17):
        copies.append(tmp_path / f"t{n}.png")
        copies[-1].write_bytes(tiny.read_bytes())
    out = tmp_path / "out.json"
    with pytest.raises(UniferError, match=r"first 1[67] items all failed in the hf engine \(first: ValueError"):
        infer(tiny_model, qa(tmp_path / "qa.json", copies), out, "--batch-size", 8, "--image-size", "native")
    assert not out.exists()


def test_engine_failures_are_told_from_an_items_own(tiny_model):
    import torch

    from unifer.infer.engines import is_engine_failure

    assert is_engine_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_engine_failure(MemoryError())
    assert is_engine_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_engine_failure(UniferError("a dead worker"))
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        pass
    else:
        assert is_engine_failure(EngineDeadError())
    for own in (ValueError("absolute aspect ratio must be smaller than 200, got 300.0"), KeyError("image"),
                RuntimeError("The size of tensor a (5) must match the size of tensor b (4)"),
                TypeError("expected str")):
        assert not is_engine_failure(own), own


def test_presets_cover_the_families_and_fill_the_run(tiny_model, tmp_path):
    from unifer.infer.plan import resolve_run
    from unifer.infer.presets import load_presets

    presets = load_presets()
    engines = {p.engine for p in presets.values()}
    assert {"hf", "vllm", "openai"} <= engines
    for wanted in ("qwen2-vl-7b", "qwen2.5-vl-7b", "qwen2.5-vl-72b", "qwen3-vl-8b", "internvl3-8b",
                   "llava-onevision-7b", "gemma-3-12b", "minicpm-v-2.6", "gpt-4o", "gemini-2.5-pro"):
        assert wanted in presets and presets[wanted].checked, wanted
    assert presets["unifer-7b"].run == "unifer_7b"
    assert "generativelanguage.googleapis.com" in presets["gemini-2.5-pro"].defaults["base_url"]

    listing = subprocess.run([PY, "-m", "unifer", "presets"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "qwen2.5-vl-72b" in listing.stdout and "gemini-2.5-pro" in listing.stdout

    q = qa(tmp_path / "qa.json", [tiny_model / "config.json"])  # never read: nothing is answered here
    with pytest.raises(UniferError, match=r"model path not found: .*Qwen2.5-VL-72B-Instruct \(preset "
                                          r"qwen2.5-vl-72b: download Qwen/Qwen2.5-VL-72B-Instruct into it"):
        resolve_run(build_parser("rafdb").parse_args(["--model", "qwen2.5-vl-72b", "--input", str(q)]), "rafdb")

    mine = tmp_path / "mine.yaml"
    mine.write_text(f"my-tiny:\n  display: My tiny\n  engine: hf\n  model: {tiny_model}\n  run: my_tiny\n"
                    "  request: {max_new_tokens: 3}\n", encoding="utf-8")
    args = ["--model", "my-tiny", "--presets", str(mine), "--input", str(q)]
    plan = resolve_run(build_parser("rafdb").parse_args(args), "rafdb")
    assert plan.engine == "hf" and plan.model == tiny_model and plan.settings.max_new_tokens == 3
    assert plan.output == REPO_ROOT / "eval_rafdb" / "results" / "rafdb_my_tiny_results.json"
    assert plan.meta()["display_name"] == "My tiny" and plan.meta()["preset"] == "my-tiny"
    plan = resolve_run(build_parser("rafdb").parse_args(args + ["--max-new-tokens", "5", "--run", "x"]), "rafdb")
    assert plan.settings.max_new_tokens == 5 and plan.output.name == "rafdb_x_results.json"
    # Without --model the paper's file names stay; a checkpoint path names the run after its folder.
    plain = resolve_run(build_parser("rafdb").parse_args(["--model", str(tiny_model), "--input", str(q)]), "rafdb")
    assert plain.output.name == f"rafdb_{tiny_model.name.replace('-', '_').replace('.', '_')}_results.json"
    header = plain.header()
    assert header == {k: header[k] for k in ("model", "model_fingerprint", "input", "input_sha256",
                                             "image_root", "engine", "dtype", "max_new_tokens", "shard")}
    assert meta_path(plain.output).name.endswith("_results.meta.json")
