"""Let PyPI's (CUDA-linked) torchvision import beside the CPU build of torch 2.13.0.

torchvision's meta registrations reference the ``torchvision::nms`` / ``qnms`` operators, which its compiled
extension would define; with the CUDA extension unusable on a CPU torch the import fails with
``operator torchvision::nms does not exist``. Defining the two schemas before torchvision is first imported is
enough: we never call those ops (qwen-vl-utils and transformers only need torchvision's Python transforms).

This file belongs to the CPU test environment only (loaded from a ``.pth`` file in ``.venv``), never to the
library. It installs an import hook so that torch is only imported when something imports torchvision.
"""
import importlib.abc
import sys

_LIB = None


def _define_ops():
    global _LIB
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - already defined (a working torchvision build)
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_ops()
        return None


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
