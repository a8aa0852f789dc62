"""Face detection for ``unifer predict``: scikit-image's LBP frontal-face cascade, and the crop a face is asked on.

The cascade's weights (an OpenCV-trained LBP cascade, an XML file) ship inside scikit-image
(``skimage.data.lbp_frontal_face_cascade_filename()``): nothing is downloaded at run time. Why this detector and
not MTCNN or MediaPipe, measured on real photographs (``unifer bench detectors``), is in docs/predict.md.

The cascade has no probability. scikit-image merges the windows that fire into faces (windows overlapping by half
of the smaller one join; a face needs ``min_neighbors`` windows); a face's ``score`` is the number of windows of a
second, unmerged pass that lie on it at a similar scale — how many positions and scales agreed — so a larger score
is a surer face, and faces below ``MIN_SCORE`` are dropped. Boxes are in the pixels of the image given (for a
file: after its EXIF orientation is applied, as ``unifer.data.images.open_image`` returns it).
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

#: Photographs are searched at most this large (long side, pixels): the search's time grows with the pixels, and
#: a face that is small at this size is too small to read an expression from anyway.
SEARCH_SIZE = 640
MIN_FACE = 24  # pixels of the search image
#: Faces smaller than this share of the photo's short side are not looked for: on the photos measured (docs/predict.md)
#: every false alarm of the cascade was smaller (a badge, a shadow, CK+'s caption), every face larger.
MIN_FACE_SHARE = 0.1
SCALE_FACTOR = 1.2
MIN_NEIGHBORS = 4  # scikit-image's default
OVERLAP = 0.5  # intersection / smaller window, scikit-image's default
#: A face needs this many agreeing windows (its score): on the 62 face crops of unifer.demo.photos the faces scored
#: 5-51 and the cascade's nine other boxes (in EmoPy's CK+ frames) 1-5.
MIN_SCORE = 6


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive) in the image's pixels
    score: float | None  # the detector's: cascade windows that agreed; None for --whole-image


class FaceDetector:
    """``detector(image) -> list[Face]``, largest face first. Needs scikit-image (``pip install .[predict]``)."""

    def __init__(self, min_neighbors: int = MIN_NEIGHBORS, min_score: int = MIN_SCORE,
                 min_face_share: float = MIN_FACE_SHARE, search_size: int = SEARCH_SIZE):
        try:
            from skimage.data import lbp_frontal_face_cascade_filename
            from skimage.feature import Cascade
        except ImportError as e:
            from unifer.errors import UniferError

            raise UniferError(f"face detection needs scikit-image (pip install -e .[predict]): {e}") from None
        self.cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.min_neighbors, self.min_score, self.search_size = min_neighbors, min_score, search_size
        self.min_face_share = min_face_share

    def __call__(self, image: Image.Image) -> list[Face]:
        import numpy as np

        scale = min(1.0, self.search_size / max(image.size))
        gray = image.convert("L")  # the cascade was trained on gray images; colour input finds fewer faces
        if scale < 1.0:
            gray = gray.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                               Image.Resampling.BILINEAR)
        side = min(gray.size)
        smallest = max(MIN_FACE, round(side * self.min_face_share))
        if side < smallest:
            return []
        found = self.cascade.detect_multi_scale(
            img=np.asarray(gray), scale_factor=SCALE_FACTOR, step_ratio=1, min_size=(smallest, smallest),
            max_size=(side, side), min_neighbor_number=self.min_neighbors, intersection_score_threshold=OVERLAP)
        if not found:
            return []
        windows = self.cascade.detect_multi_scale(  # the same search, every window that fired (2.0: none merge)
            img=np.asarray(gray), scale_factor=SCALE_FACTOR, step_ratio=1, min_size=(smallest, smallest),
            max_size=(side, side), min_neighbor_number=1, intersection_score_threshold=2.0)
        windows = [(w["c"], w["r"], w["c"] + w["width"], w["r"] + w["height"]) for w in windows]
        faces = []
        for w in found:
            box = (w["c"], w["r"], w["c"] + w["width"], w["r"] + w["height"])
            votes = sum(_overlap(box, v) >= OVERLAP and _similar_size(box, v) for v in windows)
            if votes < self.min_score:
                continue
            x0, y0, x1, y1 = (v / scale for v in box)
            faces.append(Face((max(0, round(x0)), max(0, round(y0)), min(image.width, round(x1)),
                               min(image.height, round(y1))), float(votes)))
        return drop_nested(sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))


def _similar_size(a, b) -> bool:
    return 1 / 1.5 <= (a[2] - a[0]) / (b[2] - b[0]) <= 1.5


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def drop_nested(faces: list[Face], overlap: float = OVERLAP) -> list[Face]:
    """Drop a face lying mostly inside a larger one (a mouth or an eye pair found as a small face)."""
    kept: list[Face] = []
    for f in faces:  # largest first
        if all(_overlap(f.box, k.box) < overlap for k in kept):
            kept.append(f)
    return kept


def iou(a, b) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def whole_image(image: Image.Image) -> Face:
    return Face((0, 0, image.width, image.height), None)


def crop_box(box, size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around the face, ``margin`` × its side added on every side, moved (then clipped) into the image:
    FERBench's faces are square crops with the whole head, and a square is resized to 224×224 undistorted."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = min(side, size[0], size[1])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(0.0, cx - side / 2), size[0] - side)
    top = min(max(0.0, cy - side / 2), size[1] - side)
    return round(left), round(top), round(left + side), round(top + side)
