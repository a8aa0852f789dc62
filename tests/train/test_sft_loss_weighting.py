"""SFT loss weighting (``--loss_weighting``): on a real optimizer step of the tiny model over samples of unequal
lengths (batch 2 × accumulation 2), ``sample`` (the paper's) and ``token`` (TRL's) each give the loss they claim,
computed here independently from each sample's per-token cross-entropy under a plain forward."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from unifer.data.images import join_image_path, load_image

#: Four responses of very different lengths: token weighting is dominated by the long ones.
RESPONSES = (
    "<think>Smile.</think><answer>{label}</answer>",
    "<think>" + "The corners of the mouth rise and the cheeks lift while the eyes narrow. " * 12
    + "</think><answer>{label}</answer>",
    "<think>Brows.</think><answer>{label}</answer>",
    "<think>" + "I look at the eyebrows, the eyelids, the nose and the lips, one after another. " * 6
    + "</think><answer>{label}</answer>",
)


@pytest.fixture(scope="module")
def cot_files(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("cot_weighting")
    records = []
    for i, (photo, response) in enumerate(zip(photos, RESPONSES)):
        name = f"face{i}{photo.path.suffix}"
        shutil.copy(photo.path, root / name)
        records.append({"image_path": "/" + name, "question": "Which expression?",
                        "response": response.format(label=photo.label)})
    assert len(records) == len(RESPONSES)
    data = root / "cot.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    return root, data, records


@pytest.fixture(scope="module")
def per_sample_losses(tiny_model, cot_files):
    """Each sample alone through the unpatched model: (sum of its token losses, number of trained tokens)."""
    from transformers import AutoModelForImageTextToText

    from unifer.models.processors import load_processor
    from unifer.train.sft import CoTCollator

    root, _, records = cot_files
    collator = CoTCollator(load_processor(tiny_model, exact=True))
    model = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32).eval()
    sums = []
    for r in records:
        batch = collator([{**r, "image": load_image(join_image_path(root, r["image_path"]))}])
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.float()
        losses = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100,
                                                   reduction="none")
        sums.append((losses.sum().item(), int((labels[0, 1:] != -100).sum())))
    return sums


def first_step_loss(tiny_model, cot_files, out, weighting: str) -> float:
    """The loss of one optimizer step (2 micro-batches of 2), as the Trainer reports it: computed on the
    initial weights, with the accumulation scaling included."""
    from trl import ModelConfig, SFTConfig

    from unifer.models.processors import load_processor
    from unifer.train.common import load_vl_model
    from unifer.train.preflight import records_dataset, with_lazy_images
    from unifer.train.sft import COT_FIELDS, CoTCollator, apply_paper_settings, make_trainer_class

    root, data, records = cot_files
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                     max_steps=1, bf16=False, use_cpu=True, report_to=[], save_strategy="no",
                     gradient_checkpointing=False, logging_steps=1, seed=0)
    model_args = ModelConfig(model_name_or_path=str(tiny_model), dtype="float32", attn_implementation="sdpa")
    apply_paper_settings(SimpleNamespace(), args, model_args)
    processor = load_processor(tiny_model, exact=True)
    trainer = make_trainer_class()(
        model=load_vl_model(model_args, training_args=args), args=args,
        train_dataset=with_lazy_images(records_dataset(records, COT_FIELDS), root, data),
        data_collator=CoTCollator(processor), processing_class=processor, loss_weighting=weighting)
    return trainer.train().training_loss


@pytest.mark.slow
def test_each_weighting_gives_the_loss_it_claims(tiny_model, cot_files, per_sample_losses, tmp_path):
    sample_expected = sum(s / n for s, n in per_sample_losses) / len(per_sample_losses)
    token_expected = sum(s for s, _ in per_sample_losses) / sum(n for _, n in per_sample_losses)
    tolerance = 1e-4
    # The set-up tells the two apart by far more than the tolerance (long responses differ in mean token loss).
    assert abs(sample_expected - token_expected) > 20 * tolerance, (sample_expected, token_expected)
    sample = first_step_loss(tiny_model, cot_files, tmp_path / "sample", "sample")
    token = first_step_loss(tiny_model, cot_files, tmp_path / "token", "token")
    assert sample == pytest.approx(sample_expected, abs=tolerance)
    assert token == pytest.approx(token_expected, abs=tolerance)


def test_the_paper_weighting_is_the_default_and_unknown_ones_are_refused():
    from unifer.errors import UniferError
    from unifer.train.sft import LossWeightingMixin, SFTScriptArguments

    assert SFTScriptArguments().loss_weighting == "sample"
    with pytest.raises(UniferError, match="--loss_weighting must be one of sample, token"):
        LossWeightingMixin(loss_weighting="tokens")
