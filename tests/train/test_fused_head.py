"""On CPU, TRL's fused LM head scores only the labelled positions, as it does on CUDA
(``unifer.train.common.score_only_labelled_positions``): the same log-probabilities and entropies, the same
gradients up to float32 summation order, a fraction of the positions."""
from __future__ import annotations

import logging

import pytest
import torch


def _fused_model(tiny_model):
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model), dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def _score(model, decide, monkeypatch, apply):
    """One forward and backward through the fused head with ``decide`` as TRL's compact-or-not test; returns the
    outputs, the gradients and how many positions the chunked log-probabilities saw."""
    import trl.trainer.utils as trl_utils

    monkeypatch.setattr(trl_utils, "_use_triton", decide)
    seen = []
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: seen.append(hidden.shape[0]) or apply(hidden, *rest))
    ids = torch.randint(0, 150_000, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding, as GRPO's prompts have
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-9] = -100  # a 9-token completion: only it is scored
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + 0.1 * out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.log_probs.detach(), out.entropy.detach(), grads, seen


def test_cpu_training_scores_only_the_labelled_positions(tiny_model, monkeypatch):
    import trl.trainer.utils as trl_utils

    from unifer.train.common import score_only_labelled_positions

    assert score_only_labelled_positions() and score_only_labelled_positions()  # idempotent
    compact = trl_utils._use_triton
    trl_default = compact.__wrapped__
    assert compact(torch.device("cpu")) and not trl_default(torch.device("cpu"))

    model = _fused_model(tiny_model)
    apply = trl_utils._ChunkedLogProbFunction.apply
    every_logp, every_ent, every_grad, every_seen = _score(model, trl_default, monkeypatch, apply)
    logp, ent, grad, seen = _score(model, compact, monkeypatch, apply)

    assert every_seen == [3 * 39] and seen == [3 * 9]  # 40 tokens predict 39; 9 of them are labelled
    assert torch.equal(logp, every_logp) and torch.equal(ent, every_ent)
    assert logp.shape == (3, 39) and bool((logp[:, :-9] == 0).all()) and bool((logp[:, -9:] < 0).all())
    assert grad.keys() == every_grad.keys() and grad
    for name, g in grad.items():
        torch.testing.assert_close(g, every_grad[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_changed_trl_keeps_its_own_behaviour(monkeypatch, caplog):
    import trl.trainer.utils as trl_utils

    from unifer.train import common

    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: False)
    monkeypatch.setattr(trl_utils, "add_fused_lm_head", lambda model: None)
    with caplog.at_level(logging.WARNING, logger="unifer.train.common"):
        assert common.score_only_labelled_positions() is False
    assert trl_utils._use_triton(torch.device("cpu")) is False
    assert common.TRL_COMPACT_LINE in caplog.text


@pytest.mark.parametrize("module", ["unifer.train.sft", "unifer.train.grpo_trainer"])
def test_both_trainers_install_it(module, monkeypatch):
    import importlib

    import trl.trainer.utils as trl_utils

    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "__wrapped__", trl_utils._use_triton))
    importlib.import_module(module).make_trainer_class()
    assert trl_utils._use_triton(torch.device("cpu"))
