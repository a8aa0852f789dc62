"""The one attention rule of inference and both trainers (``pick_attn_implementation``): flash-attention 2 only on
CUDA with flash-attn installed and a bf16/fp16 compute dtype, sdpa otherwise (float32, the paper's exact setting,
included). No GPU here: CUDA and flash-attn are stand-ins (monkeypatched facts), which is all the rule reads;
the engine and the trainers then load the real tiny model with the attention chosen."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

import unifer.infer.engines as engines
import unifer.infer.engines.hf as hf_engine
import unifer.models.device as device
import unifer.train.common as common
from unifer.models.device import pick_attn_implementation


@pytest.fixture
def gpu_with_flash_attn(monkeypatch):
    """A CUDA machine with flash-attn installed, as far as the rule and its callers can tell."""
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "flash_attn_available", lambda: True)
    monkeypatch.setattr(hf_engine, "cuda_available", lambda: True)
    monkeypatch.setattr(common, "cuda_available", lambda: True)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == device.__name__]


@pytest.mark.parametrize("dtype,expected", [
    (torch.bfloat16, "flash_attention_2"), (torch.float16, "flash_attention_2"), ("bf16", "flash_attention_2"),
    ("auto", "flash_attention_2"),  # auto is bfloat16 on CUDA
    (torch.float32, "sdpa"), ("float32", "sdpa"), ("fp32", "sdpa"),
])
def test_auto_on_a_gpu_follows_the_dtype(gpu_with_flash_attn, caplog, dtype, expected):
    assert pick_attn_implementation("auto", dtype=dtype) == expected
    assert pick_attn_implementation(None, dtype=dtype) == expected
    assert warnings_of(caplog) == []  # auto never warns


def test_explicit_flash_attention_in_float32_falls_back_with_one_warning(gpu_with_flash_attn, caplog):
    assert pick_attn_implementation("flash_attention_2", dtype=torch.float32) == "sdpa"
    assert warnings_of(caplog) == ["flash_attention_2 requested but flash-attn has no float32 kernels: "
                                   "using sdpa attention instead"]
    caplog.clear()
    assert pick_attn_implementation("flash_attention_2", dtype=torch.bfloat16) == "flash_attention_2"
    assert warnings_of(caplog) == []


def test_without_cuda_or_flash_attn_every_dtype_gets_sdpa(monkeypatch, caplog):
    monkeypatch.setattr(device, "flash_attn_available", lambda: True)
    assert pick_attn_implementation("auto", on_cuda=False, dtype=torch.bfloat16) == "sdpa"
    monkeypatch.setattr(device, "flash_attn_available", lambda: False)
    assert pick_attn_implementation("auto", on_cuda=True, dtype=torch.bfloat16) == "sdpa"
    assert warnings_of(caplog) == []
    assert pick_attn_implementation("flash_attention_2", on_cuda=True, dtype=torch.bfloat16) == "sdpa"
    assert warnings_of(caplog) == ["flash_attention_2 requested but flash-attn is not installed: "
                                   "using sdpa attention instead"]
    assert pick_attn_implementation("eager", on_cuda=True, dtype=torch.float32) == "eager"


def test_the_dtype_must_be_given():
    with pytest.raises(TypeError):
        pick_attn_implementation("auto", True)


@pytest.mark.parametrize("flags,expected", [
    ({"bf16": True, "fp16": False, "dtype": "float32"}, "flash_attention_2"),  # float32 weights, bf16 autocast
    ({"bf16": None, "fp16": False, "dtype": "float32"}, "flash_attention_2"),  # TRL's unset bf16 means bf16
    ({"bf16": False, "fp16": True, "dtype": "float32"}, "flash_attention_2"),
    ({"bf16": False, "fp16": False, "dtype": "float32"}, "sdpa"),  # a float32 forward
    ({"bf16": False, "fp16": False, "dtype": "bfloat16"}, "flash_attention_2"),
])
def test_trainers_choose_for_the_dtype_the_forward_computes_in(gpu_with_flash_attn, flags, expected):
    ns = SimpleNamespace(attn_implementation=None, use_cpu=False, deepspeed=None, **flags)
    common.adapt_namespace_to_device(ns)
    assert ns.attn_implementation == expected


def test_trainer_flags_parse_to_the_rule(gpu_with_flash_attn):
    """Both trainers' real parsers: TRL's default (bf16) gets flash-attention 2, a float32 run sdpa. (``--use_cpu``
    only lets TrainingArguments accept bf16 on this GPU-less machine; the rule does not read it.)"""
    from trl import ModelConfig, SFTConfig

    from unifer.train.grpo import GRPOPaperConfig, GRPOScriptArguments
    from unifer.train.sft import SFTScriptArguments

    for types in ((SFTScriptArguments, SFTConfig, ModelConfig), (GRPOScriptArguments, GRPOPaperConfig, ModelConfig)):
        argv = ["--output_dir", "unused", "--use_cpu", "true"]
        *_, model_args = common.parse_trainer_args(types, argv)
        assert model_args.attn_implementation == "flash_attention_2"
        *_, model_args = common.parse_trainer_args(types, [*argv, "--bf16", "false", "--dtype", "float32"])
        assert model_args.attn_implementation == "sdpa"


def test_float32_loads_with_sdpa_where_flash_attn_would_be_chosen(gpu_with_flash_attn, tiny_model):
    """The real engine and the trainers' loader, on the tiny model. flash-attn is not really installed here, so
    had they asked transformers for flash_attention_2 the load itself would fail."""
    from trl import ModelConfig

    settings = engines.generation_settings(tiny_model, max_new_tokens=4)
    engine = hf_engine.HFEngine(tiny_model, settings, hf_engine.HFOptions(dtype="float32", attn="auto"))
    assert engine.model.config._attn_implementation == "sdpa" and engine.model.dtype == torch.float32
    model_args = ModelConfig(model_name_or_path=str(tiny_model), dtype="float32", attn_implementation="auto")
    model = common.load_vl_model(model_args, training_args=SimpleNamespace(bf16=False, fp16=False))
    assert model.config._attn_implementation == "sdpa"
