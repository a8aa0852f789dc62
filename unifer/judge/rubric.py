"""The judge's rubric (``rubric.yaml`` beside this module, versioned): the prompt of one rating, the structured
output that constrains a rating (a JSON schema, or a regular expression), and the strict parser of a rating.

A rating is one JSON object, exactly ``visual_grounding``, ``consistency``, ``specificity`` (integers 1–5),
``hallucination`` ("yes" / "no") and ``rationale`` (a non-empty string). Anything else — another key, a number out
of range, a string where a number belongs, text around the object — is unparseable, with the reason: never a
default. A Markdown code fence around the object is taken off (vendors add one without ``response_format``).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from unifer.errors import UniferError

RUBRIC_FILE = Path(__file__).with_name("rubric.yaml")
SCORES = ("visual_grounding", "consistency", "specificity")
KEYS = (*SCORES, "hallucination", "rationale")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class Unparseable(ValueError):
    """A rating that is not the rubric's JSON object (the message says why)."""


@dataclass(frozen=True)
class Rubric:
    version: int
    name: str
    prompt: str
    ratings: dict
    notes: tuple[str, str]  # (with the image, without)
    max_new_tokens: int
    rationale_max_chars: int
    path: str

    @property
    def tag(self) -> str:
        return f"{self.name}/v{self.version}"

    @property
    def digest(self) -> str:
        """What the cache key holds of the rubric: its version and its prompt's bytes."""
        return hashlib.sha256(f"{self.version}\0{self.prompt}\0{json.dumps(self.ratings, sort_keys=True)}".encode()
                              ).hexdigest()[:16]

    def render(self, question: str, labels, answered: str, response: str, with_image: bool) -> str:
        return self.prompt.format(question=question, labels=", ".join(labels), answered=answered,
                                  response=response, image_note=self.notes[0 if with_image else 1], **self.ratings)

    def json_schema(self) -> dict:
        score = {"type": "integer", "minimum": 1, "maximum": 5}
        return {"type": "object", "additionalProperties": False, "required": list(KEYS),
                "properties": {**{k: dict(score) for k in SCORES}, "hallucination": {"enum": ["yes", "no"]},
                               "rationale": {"type": "string", "minLength": 1,
                                             "maxLength": self.rationale_max_chars}}}

    def regex(self) -> str:
        """The rating as a regular expression: the keys in order, one space after each colon and comma, the
        rationale a bounded run of plain characters (so a constrained answer always ends within budget)."""
        scores = ", ".join(f'"{k}": [1-5]' for k in SCORES)
        return (r'\{' + scores + r', "hallucination": "(yes|no)", "rationale": "[A-Za-z0-9 ,.;:()\'-]{1,'
                + str(self.rationale_max_chars) + r'}"\}')


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The rubric file (default: ``rubric.yaml`` here); a malformed one is refused in one line."""
    import yaml

    path = Path(path) if path else RUBRIC_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UniferError(f"{path}: cannot read the judge rubric: {e}") from None
    need = ("version", "name", "prompt", "ratings", "image_note_with", "image_note_without")
    missing = [k for k in need if not isinstance(data, dict) or k not in data]
    if missing:
        raise UniferError(f"{path}: the judge rubric lacks {', '.join(missing)}")
    if set(data["ratings"]) != set(KEYS[:4]):
        raise UniferError(f"{path}: ratings must describe exactly {', '.join(KEYS[:4])}")
    rubric = Rubric(int(data["version"]), str(data["name"]), str(data["prompt"]), dict(data["ratings"]),
                    (str(data["image_note_with"]), str(data["image_note_without"])),
                    int(data.get("max_new_tokens", 400)), int(data.get("rationale_max_chars", 200)), str(path))
    try:
        rubric.render("q", ["a"], "a", "r", True)
    except (KeyError, IndexError, ValueError) as e:
        raise UniferError(f"{path}: the judge prompt does not format ({type(e).__name__}: {e}); write literal "
                          "braces as {{ }}") from None
    return rubric


def parse_rating(text: str) -> dict:
    """The rating of a judge's answer (module docstring), or ``Unparseable`` with the reason."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise Unparseable(f"not a JSON object ({e.msg} at character {e.pos})") from None
    if not isinstance(obj, dict):
        raise Unparseable(f"expected a JSON object, got {type(obj).__name__}")
    if set(obj) != set(KEYS):
        extra, missing = sorted(set(obj) - set(KEYS)), sorted(set(KEYS) - set(obj))
        raise Unparseable("keys differ from the rubric's: " + "; ".join(
            x for x in (f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "") if x))
    out = {}
    for k in SCORES:
        v = obj[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
            raise Unparseable(f"{k} must be an integer 1-5, got {json.dumps(v)}")
        out[k] = v
    if obj["hallucination"] not in ("yes", "no"):
        raise Unparseable(f"hallucination must be \"yes\" or \"no\", got {json.dumps(obj['hallucination'])}")
    out["hallucination"] = obj["hallucination"] == "yes"
    if not isinstance(obj["rationale"], str) or not obj["rationale"].strip():
        raise Unparseable("rationale must be a non-empty string")
    out["rationale"] = obj["rationale"].strip()
    return out
