"""unifer app in a real headless Chromium: upload a real photo, read the faces' labels off the page, and check that
the page shows what the library's Predictor answers for the same photo and that no request leaves loopback."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

pytest.importorskip("gradio", reason="gradio is not installed (pip install -e .[predict])")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
skimage_data = pytest.importorskip("skimage.data")
if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

MAX_NEW_TOKENS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"unifer app exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"unifer app did not answer on {url} within {seconds} s")


@pytest.mark.slow
def test_app_shows_what_predict_answers(tiny_model, tmp_path):
    from PIL import Image

    from unifer.data.sets import get_set
    from unifer.predict.core import Predictor, load_photo, open_engine

    photo = tmp_path / "astronaut.png"  # PNG: the upload reaches the app with the same pixels
    Image.fromarray(skimage_data.astronaut()).save(photo)
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "unifer", "app", "--model", str(tiny_model), "--dtype", "float32",
         "--max-new-tokens", str(MAX_NEW_TOKENS), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        engine = open_engine({"engine": "hf", "model": str(tiny_model), "max_new_tokens": MAX_NEW_TOKENS,
                              "dtype": "float32"})
        expected = Predictor(engine, get_set("rafdb")).predict(load_photo(photo), photo.name)
        engine.close()
        assert len(expected) == 1
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, proc)
        hosts = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-background-networking"])
            page = browser.new_page()
            page.on("request", lambda r: hosts.append((urlsplit(r.url).scheme, urlsplit(r.url).hostname)))
            page.goto(url, wait_until="networkidle")
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.locator("#photo img").first.wait_for(timeout=30_000)
            page.locator("#answer").click()
            page.wait_for_selector("#faces :text('Face 1')", timeout=120_000)
            shown = page.locator("#faces").inner_text()
            annotated = page.locator("#annotated img").count()
            browser.close()
        face = expected[0]
        assert f"Face 1: {face.label}" in shown and f"box {list(face.box)}" in shown, shown
        assert "Face 2" not in shown
        assert annotated == 1
        assert hosts and all(scheme in ("data", "blob") or host == "127.0.0.1" for scheme, host in hosts), hosts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
