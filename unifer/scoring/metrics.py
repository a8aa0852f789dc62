"""Classification metrics with numpy, numerically equal to scikit-learn's.

The paper's scorers call ``accuracy_score``, ``precision_recall_fscore_support(average="macro", zero_division=0)``,
``confusion_matrix(labels=...)`` and ``classification_report(labels=..., zero_division=0)``. scikit-learn is a
heavy import for four divisions, so the same definitions live here (scikit-learn stays a test dependency, and the
tests compare the two on thousands of random label lists):

- per class: precision = tp / predicted, recall = tp / true, F1 = 2·tp / (true + predicted); 0 where the
  denominator is 0 (``zero_division=0``);
- macro averages run over every label that occurs in the truths or the predictions — so a prediction outside the
  candidates (``unknown``) is a class of its own, with recall 0 and a precision that drags the mean down;
- the confusion matrix and the per-class table run over a given label list; pairs with a label outside that list
  (again: ``unknown`` predictions) are left out of the matrix, as scikit-learn does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ClassCounts:
    """Sufficient statistics per label: true positives, how often a label is true, how often it is predicted."""

    labels: tuple[str, ...]
    tp: np.ndarray
    true_sum: np.ndarray
    pred_sum: np.ndarray

    def precision(self) -> np.ndarray:
        return _divide(self.tp, self.pred_sum)

    def recall(self) -> np.ndarray:
        return _divide(self.tp, self.true_sum)

    def f1(self) -> np.ndarray:
        return _divide(2.0 * self.tp, self.true_sum + self.pred_sum)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _encode(truths: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of truths and predictions in ``labels`` (-1 for a label outside the list)."""
    index = {label: i for i, label in enumerate(labels)}
    t = np.fromiter((index.get(x, -1) for x in truths), dtype=np.int64, count=len(truths))
    p = np.fromiter((index.get(x, -1) for x in preds), dtype=np.int64, count=len(preds))
    return t, p


def confusion_matrix(truths: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Rows true, columns predicted, over ``labels``; pairs with a label outside ``labels`` are not counted."""
    _check_lengths(truths, preds)
    k = len(labels)
    t, p = _encode(truths, preds, labels)
    keep = (t >= 0) & (p >= 0)
    flat = np.bincount(t[keep] * k + p[keep], minlength=k * k)
    return flat.reshape(k, k)


def class_counts(truths: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> ClassCounts:
    """tp / true / predicted counts per label of ``labels`` (a label absent from the data counts zeros)."""
    _check_lengths(truths, preds)
    k = len(labels)
    t, p = _encode(truths, preds, labels)
    true_sum = np.bincount(t[t >= 0], minlength=k)
    pred_sum = np.bincount(p[p >= 0], minlength=k)
    hit = (t == p) & (t >= 0)
    tp = np.bincount(t[hit], minlength=k)
    return ClassCounts(tuple(labels), tp, true_sum, pred_sum)


def observed_labels(truths: Sequence[str], preds: Sequence[str]) -> list[str]:
    """Every label that occurs in truths or predictions, sorted (scikit-learn's ``unique_labels``)."""
    return sorted(set(truths) | set(preds))


def accuracy(truths: Sequence[str], preds: Sequence[str]) -> float:
    _check_lengths(truths, preds)
    if not truths:
        raise ValueError("accuracy of zero items is undefined")
    return sum(1 for t, p in zip(truths, preds) if t == p) / len(truths)


def macro_prf(truths: Sequence[str], preds: Sequence[str]) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the observed labels, as
    ``precision_recall_fscore_support(truths, preds, average="macro", zero_division=0)``."""
    if not truths:
        raise ValueError("macro averages of zero items are undefined")
    counts = class_counts(truths, preds, observed_labels(truths, preds))
    return float(counts.precision().mean()), float(counts.recall().mean()), float(counts.f1().mean())


def uar(truths: Sequence[str], preds: Sequence[str]) -> float:
    """Unweighted average recall: the mean recall over the labels that are some item's truth (FER's UAR;
    scikit-learn's ``balanced_accuracy_score``). Unlike the macro recall of ``macro_prf`` it leaves out labels that
    are only predicted (``unknown``, or a class absent from the truths), whose recall is 0 by definition."""
    if not truths:
        raise ValueError("UAR of zero items is undefined")
    counts = class_counts(truths, preds, sorted(set(truths)))
    return float(counts.recall().mean())


def per_class(truths: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """One row per label of ``labels``: the paper's per-class table (``classification_report`` numbers)."""
    counts = class_counts(truths, preds, labels)
    precision, recall, f1 = counts.precision(), counts.recall(), counts.f1()
    return [
        {
            "emotion": label,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(counts.true_sum[i]),
        }
        for i, label in enumerate(labels)
    ]


def rank_by_f1(rows: list[dict]) -> list[dict]:
    """Per-class rows from best to worst F1 (stable: ties keep the label order, as the paper's ``sorted``)."""
    return sorted(rows, key=lambda r: r["f1"], reverse=True)


def _check_lengths(truths: Sequence[str], preds: Sequence[str]) -> None:
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths but {len(preds)} predictions")
