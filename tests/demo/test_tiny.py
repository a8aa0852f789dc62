"""The tiny offline Qwen2.5-VL: real tokenizer ids, the Qwen2.5-VL chat template, loads and generates."""
import json

from helpers import checkpoint_digest

from unifer.demo.tiny import SPECIAL_IDS, build_tiny_model


def test_special_token_ids_match_qwen2_5_vl(tiny_model):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model)
    tok = proc.tokenizer
    for text, want in SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(text) == want
    # The Qwen3 additions are gone: <think> is plain text, split by BPE, not one added token.
    assert len(tok("<think>")["input_ids"]) > 1
    assert max(tok.get_added_vocab().values()) < 151665
    # Real BPE: a word is one id, and ids round-trip.
    ids = tok("happiness")["input_ids"]
    assert tok.decode(ids) == "happiness"


def test_chat_template_is_qwen2_5_vl(tiny_model):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_generates_from_a_real_photograph(tiny_model):
    import torch
    from PIL import Image
    from skimage.data import astronaut
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    img = Image.fromarray(astronaut()).resize((224, 224))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which expression?"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[img], return_tensors="pt")
    # 224×224 → 16×16 patches of 14 px → 2×2 merge → 64 image tokens.
    assert int((inputs["input_ids"] == SPECIAL_IDS["<|image_pad|>"]).sum()) == 64
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert len(new) == 6
    assert proc.decode(new, skip_special_tokens=True) != ""
    # The image matters: another picture changes the greedy continuation's logits.
    black = Image.new("RGB", (224, 224))
    inputs2 = proc(text=[text], images=[black], return_tensors="pt")
    with torch.no_grad():
        a = model(**inputs).logits[0, -1]
        b = model(**inputs2).logits[0, -1]
    assert not torch.allclose(a, b)


def test_deterministic_for_a_seed_and_small(tmp_path, tiny_model):
    other = build_tiny_model(tmp_path / "again", seed=0)
    assert checkpoint_digest(other) == checkpoint_digest(tiny_model)
    size = sum(f.stat().st_size for f in other.iterdir() if f.is_file())
    assert size < 100e6
    assert json.loads((other / "config.json").read_text())["model_type"] == "qwen2_5_vl"
