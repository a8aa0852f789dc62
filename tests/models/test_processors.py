"""The paper's preprocessing, bit for bit: transformers 5 picks the torchvision image processor, the paper's 4.49 ran
the numpy/PIL one, and the two differ in most pixel values by one float32 rounding step. Every path that promises
the paper's exact setting (float32 inference, SFT, GRPO) loads the PIL one (``unifer.models.processors``)."""
from __future__ import annotations

import numpy as np
import pytest

from unifer.data.images import load_image
from unifer.models.processors import exact_preprocessing, load_processor


def paper_pixel_values(image, ip) -> np.ndarray:
    """Qwen2-VL's image preprocessing as transformers 4.49 computed it, restated in numpy: RGB uint8 (a 224×224 image
    is already a multiple of 28, so no resize), rescale in float64 then float32, normalise in float32, then the
    temporal copies cut into 14×14 patches in 2×2 merge order."""
    x = (np.asarray(image.convert("RGB")).astype(np.float64) * (1 / 255)).astype(np.float32)
    x = ((x - np.array(ip.image_mean, dtype=np.float32)) / np.array(ip.image_std, dtype=np.float32)).transpose(2, 0, 1)
    c, h, w = x.shape
    p, t, m = 14, 2, 2
    gh, gw = h // p, w // p
    patches = np.stack([x] * t).reshape(1, t, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gh * gw, c * t * p * p)


@pytest.fixture(scope="module")
def photo(photos):
    return load_image(photos[0].path)


def test_the_exact_processor_is_the_pil_one_and_equals_the_papers_numpy_exactly(tiny_model, photo):
    exact = load_processor(tiny_model, exact=True)
    fast = load_processor(tiny_model)
    assert type(exact.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert type(fast.image_processor).__name__ != "Qwen2VLImageProcessorPil"
    reference = paper_pixel_values(photo, exact.image_processor)
    ours = exact.image_processor(images=[photo], return_tensors="np")["pixel_values"]
    assert ours.dtype == np.float32 and np.array_equal(ours, reference)
    theirs = fast.image_processor(images=[photo], return_tensors="np")["pixel_values"]
    differ = float(np.mean(theirs != reference))
    assert differ > 0.3, differ  # the torchvision backend rounds differently in most values
    assert np.abs(theirs - reference).max() < 1e-5  # ... each by a rounding step, no more


def test_the_faithful_paths_load_the_pil_processor(tiny_model):
    import torch

    from unifer.infer.engines import generation_settings
    from unifer.infer.engines.hf import HFEngine, HFOptions
    from unifer.train.grpo import load_grpo_processor

    assert exact_preprocessing(torch.float32) and exact_preprocessing("float32")
    assert not exact_preprocessing(torch.bfloat16) and not exact_preprocessing("bfloat16")
    grpo = load_grpo_processor(tiny_model, None, 3136, 501760)
    assert type(grpo.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    engine = HFEngine(tiny_model, generation_settings(tiny_model, max_new_tokens=4), HFOptions(dtype="float32"))
    assert type(engine.processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"


def test_a_checkpoint_saved_with_the_exact_processor_is_saved_as_before(tiny_model, tmp_path):
    """The trainers save the processor they trained with: the PIL backend leaves no trace in the saved files."""
    load_processor(tiny_model, exact=True).save_pretrained(tmp_path / "exact")
    load_processor(tiny_model).save_pretrained(tmp_path / "default")
    names = sorted(p.name for p in (tmp_path / "default").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "exact").iterdir())
    for name in names:
        assert (tmp_path / "exact" / name).read_bytes() == (tmp_path / "default" / name).read_bytes(), name
