"""The functions of the FERBench lmms-eval tasks (``unifer ferbench export --format lmms-eval``).

A task's ``utils.py`` re-exports these, so lmms-eval asks the question as this repository does — the image (224×224,
as inference resizes it) then the set's prompt, one user turn — and scores each response with this repository's
scorer: ``accuracy`` under the paper protocol, ``accuracy_strict`` under the strict one, the numbers
``unifer eval`` gives on the same responses. The set of a document is the one its candidate labels name.
"""
from __future__ import annotations

from unifer.data.images import IMAGE_SIZE, resize, to_rgb
from unifer.data.sets import set_for_labels
from unifer.errors import UniferError
from unifer.scoring.extract import extract_label


def _set_of(doc: dict):
    fer_set = set_for_labels(doc["candidate_labels"])
    if fer_set is None:
        raise UniferError(f"{doc.get('image_path')}: candidate labels {list(doc['candidate_labels'])} are no "
                          "FERBench set's")
    return fer_set


def doc_to_visual(doc: dict) -> list:
    """The image at the size inference gives it (224×224)."""
    return [resize(to_rgb(doc["image"]), IMAGE_SIZE)]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["prompt"]


def doc_to_messages(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[dict]:
    """One user turn: the image, then the prompt (the order of this repository's engines)."""
    content = [{"type": "image", "url": image} for image in doc_to_visual(doc)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": doc_to_text(doc)}]}]


def doc_to_target(doc: dict) -> str:
    return doc["true_label"]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Both protocols' accuracy of one response (the whole response: reasoning tags are kept, as the paper's
    scorer reads it)."""
    fer_set = _set_of(doc)
    response = results[0] if results else ""
    return {f"accuracy{'' if protocol == 'paper' else '_strict'}":
            float(extract_label(response, fer_set, protocol) == doc["true_label"]) for protocol in ("paper", "strict")}
