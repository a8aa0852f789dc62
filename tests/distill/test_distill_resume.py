"""`unifer distill` killed with SIGKILL mid-run resumes where it stopped: no face asked twice, a torn last line
cut, and the outputs equal an uninterrupted run's."""
from __future__ import annotations

import json
import signal
import subprocess
import time

from distill_faces import write_faces
from helpers import PY, REPO, clean_env, in_process

from unifer.cli import main as unifer_main


def _lines(path) -> int:
    return path.read_text().count("\n") - 1 if path.exists() else 0


def test_sigkill_then_rerun_writes_what_an_uninterrupted_run_writes(tmp_path):
    root = tmp_path / "root"
    folder, script = write_faces(root, tmp_path)
    base = ["--records", str(folder), "--image-root", str(root), "--set", "rafdb", "--engine", "fake", "--model",
            "teacher", "--fake-script", str(script), "--samples", "4", "--batch-size", "1", "--keep", "2"]
    reference = tmp_path / "reference"
    rc, _, err = in_process(unifer_main, "distill", *base, "--out", reference)
    assert rc == 0, err

    out = tmp_path / "killed"
    progress = out / "samples.progress.jsonl"
    # the 4th engine call stalls: the kill lands with 3 or 4 faces recorded (the broken image's error among them)
    cmd = [PY, "-m", "unifer", "distill", *base, "--out", str(out), "--fake-stall-at-call", "4",
           "--fake-stall-seconds", "120"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _lines(progress) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    recorded = _lines(progress)
    assert 3 <= recorded < 6 and not (out / "cot.json").exists()
    with open(progress, "ab") as f:  # a write cut short by the kill
        f.write(b'{"index": 5, "result": {"image_pa')

    rc, stdout, err = in_process(unifer_main, "distill", *base, "--out", out)
    assert rc == 0, err
    assert f"resuming: {recorded} of 6 faces already done" in err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["this_run"]["faces_this_run"] == 6 - recorded  # nothing asked twice
    for name in ("cot.json", "rlvr.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    ref_stats = json.loads((reference / "stats.json").read_text())
    assert {k: v for k, v in stats.items() if k != "this_run"} == {k: v for k, v in ref_stats.items()
                                                                   if k != "this_run"}

    # another run's arguments are refused, not mixed in
    rc, _, err = in_process(unifer_main, "distill", *base[:-4], "--samples", "3", "--out", out)
    assert rc == 2 and "different arguments" in err and "samples" in err
