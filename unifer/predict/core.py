"""``unifer predict``'s library: a photo → its faces → one FERBench question per face → labels, drawn.

A face is cropped as a square with a margin around the detector's box, resized to 224×224 as inference resizes
every FERBench image (``unifer.data.images``), and asked the FERBench question (``PROMPT_TEMPLATE``) with the
chosen candidate labels; the label is extracted with the paper's protocol (``unifer.scoring.extract``). Photos are
decoded by ``unifer.data.images.open_image``: EXIF orientation applied, grayscale / palette / RGBA / 16-bit
turned into 8-bit RGB, so boxes are in the pixels of the photo as a viewer shows it (after EXIF transpose).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from unifer.data.images import IMAGE_SIZE, ImageLoadError, open_image, resize
from unifer.data.sets import PROMPT_TEMPLATE, SETS, FERSet, get_set
from unifer.errors import UniferError
from unifer.predict.detect import Face, FaceDetector, crop_box, whole_image
from unifer.scoring.extract import UNKNOWN, LabelExtractor

DEFAULT_MARGIN = 0.25  # of the face box's side, on every side: the whole head, as FERBench's crops show it
THINK_PATTERN = re.compile(r"<think>\s*(.*?)\s*</think>", re.IGNORECASE | re.DOTALL)


def resolve_labels(spec: str) -> FERSet:
    """``rafdb|ferplus|affectnet|sfew`` → that set; ``a,b,c`` → a set of these labels with no synonyms."""
    spec = spec.strip()
    if "," not in spec:
        try:
            return get_set(spec)
        except ValueError:
            raise UniferError(f"--labels {spec!r}: name a set ({', '.join(SETS)}) or give labels as a,b,c") from None
    labels = tuple(dict.fromkeys(x.strip().lower() for x in spec.split(",") if x.strip()))
    if len(labels) < 2:
        raise UniferError(f"--labels {spec!r}: give at least two labels, as a,b,c")
    return FERSet(key="custom", name="custom labels", labels=labels, synonyms=())


def question(fer_set: FERSet) -> str:
    return PROMPT_TEMPLATE.format(labels=", ".join(fer_set.labels))


def reasoning(response: str) -> str:
    """What the model wrote between <think></think>, else its whole answer."""
    m = THINK_PATTERN.search(response)
    return (m.group(1) if m else response).strip()


def open_engine(flags: Mapping):
    """The engine the flags name, made as inference makes it (``unifer.infer.plan.plan_engine``): a checkpoint, a
    preset or a served model, any registered engine, its flags (``base_url``, ...), the key from the environment."""
    from unifer.infer.plan import plan_engine

    return plan_engine(flags, IMAGE_SIZE).open()


@dataclass(frozen=True)
class FaceAnswer:
    image: str
    box: tuple[int, int, int, int]
    score: float | None
    label: str
    response: str

    def as_json(self) -> dict:
        return {"image": self.image, "box": list(self.box), "label": self.label, "response": self.response,
                "score": self.score}


class Predictor:
    """Faces of a photo answered by one engine; ``predict(image, name)`` → one FaceAnswer per face."""

    def __init__(self, engine, fer_set: FERSet, *, margin: float = DEFAULT_MARGIN, whole_image: bool = False,
                 detector: FaceDetector | None = None, batch_size: int = 4):
        if margin < 0:
            raise UniferError(f"--margin must be 0 or more, got {margin}")
        self.engine, self.fer_set, self.margin, self.whole = engine, fer_set, margin, whole_image
        self.detector = None if whole_image else (detector or FaceDetector())
        self.extract = LabelExtractor(fer_set, "paper")
        self.prompt = question(fer_set)
        self.batch_size = max(1, batch_size)

    def faces(self, image: Image.Image) -> list[Face]:
        return [whole_image(image)] if self.whole else self.detector(image)

    def predict(self, image: Image.Image, name: str) -> list[FaceAnswer]:
        faces = self.faces(image)
        crops = [resize(image.crop(crop_box(f.box, image.size, self.margin)), IMAGE_SIZE) if not self.whole
                 else resize(image, IMAGE_SIZE) for f in faces]
        out = []
        for i in range(0, len(faces), self.batch_size):
            batch = crops[i:i + self.batch_size]
            answers = self.engine.generate(batch, [self.prompt] * len(batch))
            for face, a in zip(faces[i:i + self.batch_size], answers):
                if a.error:  # this face failed alone (an API's refusal, say): shown as the runner writes it
                    out.append(FaceAnswer(name, face.box, face.score, UNKNOWN, f"ERROR: {a.error}"))
                else:
                    out.append(FaceAnswer(name, face.box, face.score, self.extract(a.text), a.text))
        return out


def photo_paths(inputs) -> list[Path]:
    """Files as given, and the image files of each directory given (by extension, sorted, not recursive)."""
    exts = set(Image.registered_extensions())
    out = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
        else:
            out.append(p)
    return out


def load_photo(path: str | os.PathLike) -> Image.Image:
    """The photo as 8-bit RGB after its EXIF orientation (raises ImageLoadError with the reason)."""
    return open_image(path)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def annotate(image: Image.Image, answers: list[FaceAnswer]) -> Image.Image:
    """A copy with each face's box and label drawn."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(image.size) / 250))
    font = _font(max(12, round(max(image.size) / 30)))
    for n, a in enumerate(answers, 1):
        x0, y0, x1, y1 = a.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 40, 40), width=width)
        text = f"{n}: {a.label}" if len(answers) > 1 else a.label
        tb = draw.textbbox((0, 0), text, font=font)
        th, tw = tb[3] - tb[1], tb[2] - tb[0]
        ty = y0 - th - 2 * width if y0 - th - 2 * width >= 0 else min(y1 + width, image.height - th - 2 * width)
        draw.rectangle((x0, ty, x0 + tw + 2 * width, ty + th + 2 * width), fill=(255, 40, 40))
        draw.text((x0 + width - tb[0], ty + width - tb[1]), text, fill=(255, 255, 255), font=font)
    return out


__all__ = ["FaceAnswer", "ImageLoadError", "Predictor", "annotate", "load_photo", "open_engine", "photo_paths",
           "question", "reasoning", "resolve_labels"]
