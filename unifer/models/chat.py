"""The paper's request as a chat message, built in one place for inference, training and the bench."""
from __future__ import annotations

from typing import Any


def user_turn(prompt: str, image: Any = None, kind: str = "image") -> dict:
    """The paper's request as a chat message: ONE user turn, the image then the prompt (no system message of ours).
    ``kind`` names the image part as the consumer wants it: ``image`` (a chat template's placeholder, or a PIL image
    for a processor), ``image_pil`` (vLLM's chat), ``image_url`` (the OpenAI API: ``image`` is ``{"url": ...}``)."""
    part: dict = {"type": kind}
    if image is not None:
        part[kind] = image
    return {"role": "user", "content": [part, {"type": "text", "text": prompt}]}
