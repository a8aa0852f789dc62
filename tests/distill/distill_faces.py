"""Faces whose teacher answers are known: a labelled folder of solid-colour images and the fake engine's script
(``--fake-script``: the answers per top-left colour), shared by the distill tests."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import tiny_image


def t(label: str, why: str = "the mouth") -> str:
    return f"<think>{why}</think><answer>{label}</answer>"


#: name, class folder, colour, the K=4 samples the teacher answers
FACES = [
    ("a", "happiness", "#ff0000", [t("happiness", "a wide smile, cheeks raised"), t("happiness", "smile"),
                                   t("happiness", "smile"), t("happiness", "smile")]),
    ("b", "happiness", "#00ff00", [t("happiness", "teeth show"), t("sadness"), "<answer>happiness</answer>",
                                   t("happiness", "eyes crinkle")]),
    ("c", "happiness", "#0000ff", [t("anger"), t("fear"), t("neutral"), "happiness"[:0] + t("surprise")]),
    ("d", "sadness", "#ffff00", [t("Sadness", "x"), t("Sadness", "y"), t("sadness", "z"), t("anger")]),
    ("e", "sadness", "#00ffff", [t("sadness") + " done", t("anger"), t("anger"), t("fear")]),
]
#: per face: (accepted by the paper's rewards, accuracy paid) — written by hand from the rules, not computed
PAPER = {"a": (4, 4), "b": (2, 3), "c": (0, 0), "d": (1, 1), "e": (0, 1)}
STRICT = {"a": (4, 4), "b": (2, 3), "c": (0, 0), "d": (3, 3), "e": (0, 1)}


def write_faces(root: Path, tmp: Path, broken: bool = True) -> tuple[Path, Path]:
    """(the labelled folder inside ``root``, the script file). ``broken``: one anger face that does not decode."""
    folder = root / "lab"
    script = {}
    for name, label, colour, samples in FACES:
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        tiny_image(folder / label / f"{name}.png", size=(8, 8), color=rgb)
        script[colour] = samples
    if broken:
        (folder / "anger").mkdir(parents=True)
        (folder / "anger" / "f.png").write_bytes(b"not a png")
    path = tmp / "script.json"
    path.write_text(json.dumps(script))
    return folder, path
