"""Reliability, images: odd but valid images are converted and used, broken ones are one line naming the file, in
the loader, in `data check`, in the training pre-flight and at inference."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from helpers import PY, RAF, dump, halves, one_clear_line, run, save_png
from PIL import Image

from unifer.data.images import ImageLoadError, load_image


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb's signature)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _odd_images(d: Path) -> dict[str, Path]:
    import numpy as np

    out = {
        "grayscale": save_png(d / "gray.png", Image.new("L", (20, 16), 100)),
        "16-bit": save_png(d / "gray16.png", Image.fromarray(np.linspace(0, 4000, 40 * 30).reshape(30, 40)
                                                                .astype(np.uint16))),
        "palette": save_png(d / "palette.png", halves().convert("P")),
        "LA": save_png(d / "la.png", Image.new("LA", (10, 10), (30, 0))),
        "1-bit": save_png(d / "bilevel.png", Image.new("1", (10, 10), 1)),
        "3x3": save_png(d / "tiny.png", Image.new("RGB", (3, 3), (10, 200, 30))),
    }
    rgba = halves().convert("RGBA")
    rgba.putalpha(halves(left=(0, 0, 0), right=(255, 0, 0)).getchannel(0))  # left half fully transparent
    out["RGBA"] = save_png(d / "rgba.png", rgba)
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.paste(1, (5, 0, 10, 10))
    pal.save(d / "palette_transparent.png", transparency=0)
    out["palette + transparency"] = d / "palette_transparent.png"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    out["CMYK"] = d / "cmyk.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90° clockwise to display"
    halves().save(d / "exif_rotated.jpg", exif=exif, quality=95)
    out["EXIF-rotated"] = d / "exif_rotated.jpg"
    return out


def _broken_images(d: Path) -> dict[str, tuple[Path, str]]:
    halves().save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:400])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image at all\n")
    (d / "folder.png").mkdir()
    return {
        "missing": (d / "missing.png", "image not found"),
        "zero bytes": (d / "empty.png", "image file is empty (0 bytes)"),
        "truncated": (d / "truncated.jpg", "cannot decode image"),
        "not an image": (d / "text.jpg", "cannot decode image"),
        "a directory": (d / "folder.png", "image not found"),
        "decompression bomb": (png_claiming(d / "bomb.png", 20000, 20000), "image too large to decode safely"),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd images")
    return {"root": d, "odd": _odd_images(d), "broken": _broken_images(d)}


def _near(pixel, color, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, color))


ODD_CHECKS = {
    "grayscale": lambda im, native: _near(im.getpixel((100, 100)), (100, 100, 100), 1),
    # scaled to 8 bits over its range, not clipped at 255 (which would make it nearly all white)
    "16-bit": lambda im, native: native.getchannel(0).getextrema() == (0, 255)
    and native.getchannel(0).histogram()[255] < 20,
    "palette": lambda im, native: _near(im.getpixel((10, 112)), (230, 20, 20)) and _near(im.getpixel((214, 112)),
                                                                                         (20, 20, 230)),
    "palette + transparency": lambda im, native: _near(native.getpixel((1, 5)), (255, 255, 255), 0)
    and _near(native.getpixel((8, 5)), (200, 10, 10), 0),
    "RGBA": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0)  # transparent: white behind
    and _near(native.getpixel((55, 5)), (20, 20, 230), 0),
    "LA": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0),
    "1-bit": lambda im, native: _near(native.getpixel((5, 5)), (255, 255, 255), 0),
    "3x3": lambda im, native: _near(im.getpixel((112, 112)), (10, 200, 30), 2),
    "CMYK": lambda im, native: _near(im.getpixel((112, 112)), (255, 0, 0), 30),
    # turned upright: 40 wide, 60 high, the left (red) half now on top
    "EXIF-rotated": lambda im, native: native.size == (40, 60) and _near(native.getpixel((20, 5)), (230, 20, 20))
    and _near(native.getpixel((20, 55)), (20, 20, 230)),
}


@pytest.mark.parametrize("name", list(ODD_CHECKS))
def test_valid_but_odd_images_are_converted_and_used(images, name):
    img = load_image(images["odd"][name])
    assert img.size == (224, 224) and img.mode == "RGB"
    assert ODD_CHECKS[name](img, load_image(images["odd"][name], size=None))


@pytest.mark.parametrize("name", ["missing", "zero bytes", "truncated", "not an image", "a directory",
                                  "decompression bomb"])
def test_broken_images_raise_one_line_naming_the_file(images, name):
    path, reason = images["broken"][name]
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    message = str(e.value)
    assert reason in message and str(path) in message and "\n" not in message


def _image_records(images) -> tuple[list[dict], dict[int, str]]:
    """RLVR records for every odd image, then every broken one; {record index: expected reason} for the broken."""
    root = images["root"]
    paths = [(p, None) for p in images["odd"].values()] + list(images["broken"].values())
    records = [{"image_path": "/" + str(p.relative_to(root)), "problem": RAF.prompt,
                "solution": "<answer>fear</answer>"} for p, _ in paths]
    return records, {i: reason for i, (_, reason) in enumerate(paths) if reason}


def test_data_check_lists_every_broken_image_and_accepts_the_odd_ones(images, tmp_path):
    records, broken = _image_records(images)
    data = dump(tmp_path / "rlvr.json", records)
    res = run([PY, "-m", "unifer", "data", "check", data, "--kind", "rlvr", "--image-root", images["root"],
               "--no-progress"])
    one_clear_line(res, f"{len(broken)} problems; the first: record {min(broken)}, field 'image_path'")
    listed = {int(m.group(1)): m.group(2) for m in re.finditer(r"record (\d+), field 'image_path': (.*)", res.stdout)}
    assert set(listed) == set(broken)
    for i, reason in broken.items():
        assert reason in listed[i]
    assert f"images: {len(records)} distinct, {len(broken)} do not decode" in res.stdout


@pytest.mark.parametrize("name", ["zero bytes", "truncated", "not an image", "decompression bomb"])
def test_training_preflight_stops_before_training_on_a_broken_image(images, tiny_model, tmp_path, name):
    """Missing images: test_sft.py::test_missing_image_stops_the_trainer_before_training; these exist but are
    unusable, which only decoding finds (the pre-flight decodes every image; the trainer would find it mid-run)."""
    records, broken = _image_records(images)
    odd = [r for i, r in enumerate(records) if i not in broken]
    path, reason = images["broken"][name]
    bad = {**odd[0], "image_path": "/" + str(path.relative_to(images["root"]))}
    data = dump(tmp_path / "rlvr.json", odd + [bad])
    cmd = [PY, "-m", "unifer", "train", "preflight", "--kind", "rlvr", "--model", tiny_model, "--data", data, "--image_root",
           images["root"]]
    one_clear_line(run(cmd), str(data), f"record {len(odd)}, field 'image_path'", reason, str(path))
    if name != "decompression bomb":  # the opt-out only stats (a bomb is a real file too: it passes as well)
        assert run(cmd + ["--images", "exist"]).returncode == 0


def test_training_preflight_accepts_every_odd_image(images, tiny_model, tmp_path):
    records, broken = _image_records(images)
    data = dump(tmp_path / "rlvr.jsonl", [r for i, r in enumerate(records) if i not in broken], jsonl=True)
    res = run([PY, "-m", "unifer", "train", "preflight", "--kind", "rlvr", "--model", tiny_model, "--data", data,
               "--image_root", images["root"]])
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"pre-flight ok: {len(records) - len(broken)} rlvr records, every image decodes" in res.stdout


def test_a_decompression_bomb_is_an_error_item_at_inference(images, tiny_model, tmp_path):
    """Through the inference command (the runner, the tiny model): the bomb is an error item, the run goes on."""
    import json

    from helpers import qa_record

    from unifer.data.sets import get_set
    from unifer.infer.runner import main as infer_main

    bomb, _ = images["broken"]["decompression bomb"]
    rafdb = get_set("rafdb")
    qa = dump(tmp_path / "qa.json", [qa_record(rafdb, str(images["odd"]["3x3"]), rafdb.labels[0]),
                                     qa_record(rafdb, str(bomb), rafdb.labels[1])])
    out = tmp_path / "out.json"
    assert infer_main(["--model", str(tiny_model), "--input", str(qa), "--output", str(out), "--image-root", "/",
                       "--max-new-tokens", "2", "--dtype", "float32"], "rafdb") == 0
    answered, failed = json.loads(out.read_text(encoding="utf-8"))
    assert "error" not in answered and answered["model_response"]
    assert failed["error"] is True
    assert failed["model_response"].startswith("ERROR: image too large to decode safely")
    assert str(bomb) in failed["model_response"] or bomb.name in failed["model_response"]
