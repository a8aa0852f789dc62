"""`unifer distill --engine openai` against a scripted OpenAI-compatible teacher of the tests' own (loopback):
the answers are known per face (by the image's top-left colour), so the accept/reject counts are exact; a request
budget stops the run cleanly and the reruns finish it; the key comes from the environment and is written nowhere."""
from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from distill_faces import FACES, PAPER, write_faces
from helpers import in_process
from PIL import Image

from unifer.cli import main as unifer_main

pytest.importorskip("openai")
KEY = "-".join(("sk", "distill", "Qm4Lx8Rt2Vb6Nc0Zp3Wy7Hk"))  # a fake key, joined at run time


class ScriptedTeacher(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: dict = {}
    log: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        image, _text = req["messages"][0]["content"]
        png = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
        colour = "#{:02x}{:02x}{:02x}".format(*Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0)))
        answers = self.script[colour]
        n = int(req.get("n") or 1)
        self.log.append({"colour": colour, "n": n, "seed": req.get("seed"), "temperature": req.get("temperature"),
                         "authorization": self.headers.get("Authorization")})
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
                           "choices": [{"index": j, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": answers[j % len(answers)]}}
                                       for j in range(n)],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def teacher():
    ScriptedTeacher.script = {colour: samples for _, _, colour, samples in FACES}
    ScriptedTeacher.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedTeacher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_scripted_api_teacher_budget_stop_resume_and_exact_counts(teacher, tmp_path, monkeypatch):
    root = tmp_path / "root"
    folder, _ = write_faces(root, tmp_path)
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    out = tmp_path / "api"
    args = ("distill", "--records", folder, "--image-root", root, "--set", "rafdb", "--engine", "openai",
            "--base-url", teacher, "--model", "scripted", "--api-key-env", "DISTILL_TEST_KEY", "--samples", "4",
            "--temperature", "0.7", "--keep", "2", "--concurrency", "1", "--out", out)
    rc, stdout, err = in_process(unifer_main, *args, "--max-requests", "2")
    assert rc == 3, err
    assert "stopped, --max-requests 2 reached" in stdout and "rerun the same command" in stdout
    assert not (out / "cot.json").exists()
    assert len(ScriptedTeacher.log) == 2
    rc, stdout, err = in_process(unifer_main, *args, "--max-requests", "2")
    assert rc == 3 and len(ScriptedTeacher.log) == 4
    rc, stdout, err = in_process(unifer_main, *args)
    assert rc == 0, err
    assert len(ScriptedTeacher.log) == 5  # each face asked once, K samples in one request (n=4)
    assert {(e["n"], e["temperature"]) for e in ScriptedTeacher.log} == {(4, 0.7)}
    assert len({e["seed"] for e in ScriptedTeacher.log}) == 5  # a seed of its own per face
    assert {e["authorization"] for e in ScriptedTeacher.log} == {f"Bearer {KEY}"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accepted_samples"] == sum(a for a, _ in PAPER.values()) and stats["errors"] == 1
    rlvr = {r["image_path"].rsplit("/", 1)[1][0]: r["pass_rate"] for r in json.loads((out / "rlvr.json").read_text())}
    assert rlvr == {k: acc / 4 for k, (_, acc) in PAPER.items()}
    for f in out.rglob("*"):
        assert KEY.encode() not in f.read_bytes(), f
    assert KEY not in stdout + err
