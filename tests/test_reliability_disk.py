"""Reliability, a full disk: inference keeps every finished item and resumes to the same bytes; the scorer and the
FERBench build leave the previous file as it was. The small disk is a real 64 KiB tmpfs (skipped where mounting is
not allowed); only the fill at inference's final write is simulated (os.fsync fails with ENOSPC for the results
file's temporary), as a real fill cannot be timed to land between the last progress line and that write."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import PY, REPO, dump, halves, in_process, make_records, one_clear_line, run, save_png
from PIL import Image


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, leave_pages: int = 0) -> Path:
    """Fill ``disk`` with a ballast file, then give back ``leave_pages`` 4 KiB pages."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave_pages:
        pages = -(-ballast.stat().st_size // 4096)
        os.truncate(ballast, max(0, pages - leave_pages) * 4096)
    return ballast


def cli_in_process(main, argv) -> tuple[int, str]:
    rc, _, err = in_process(main, *argv)
    return rc, err


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_disk_full_during_inference_keeps_every_finished_item_and_resumes_to_the_same_bytes(
        small_disk, tmp_path, monkeypatch):
    """The fake engine answers (deterministic, milliseconds): what is checked is the disk handling around it."""
    from unifer.infer.progress import progress_path, read_progress
    from unifer.infer.runner import main as infer_main

    records = make_records("qa", n=12)
    for i in range(len(records)):
        save_png(tmp_path / "faces" / f"{i}.png", halves(left=(20 * i, 100, 50)))
    qa = dump(tmp_path / "qa.json", records)
    args = ["--engine", "fake", "--model", "tiny", "--input", str(qa), "--image-root", str(tmp_path),
            "--max-new-tokens", "4", "--batch-size", "2"]
    reference = tmp_path / "reference.json"
    assert cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(reference)])[0] == 0

    output = small_disk / "results" / "r.json"
    output.parent.mkdir()
    output.write_text("[] previous results\n")
    ballast = fill(small_disk, leave_pages=1)
    rc, err = cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output), "--overwrite"])
    progress = progress_path(output)
    line = _error_line(err)
    assert rc == 2 and f"cannot write {progress}: No space left on device" in line and "rerun to resume" in line
    header, done, intact = read_progress(progress)
    assert 2 <= len(done) < len(records) and f"the {len(done)} items finished before are kept there" in line
    assert intact == progress.stat().st_size, "only whole batches: no torn line"
    assert output.read_text() == "[] previous results\n"

    # Space again; but the disk fills up once more while the results file is written.
    ballast.unlink()
    real_fsync = os.fsync

    def fsync_full_for_results(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_full_for_results)
    rc, err = cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output)])
    line = _error_line(err)
    assert rc == 2 and f"cannot write {output}: No space left on device" in line
    assert f"every answer is kept in {progress}" in line and f"resuming: {len(done)} of" in err
    assert len(read_progress(progress)[1]) == len(records)
    assert output.read_text() == "[] previous results\n" and not list(output.parent.glob("*.tmp"))

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert cli_in_process(lambda a: infer_main(a, "rafdb"), args + ["--output", str(output)])[0] == 0
    assert output.read_bytes() == reference.read_bytes()
    assert not progress.exists()


@pytest.mark.parametrize("command", ["eval_unifer.py", "ferbench build"])
def test_disk_full_while_writing_keeps_the_previous_file(command, small_disk, tmp_path):
    if command == "eval_unifer.py":
        target = small_disk / "rafdb_metrics.json"
        cmd = [PY, REPO / "eval_rafdb/code/eval_unifer.py", "--results", dump(tmp_path / "r.json",
               make_records("results")), "--output", target, "--no-figs"]
    else:
        raw = tmp_path / "raw"
        for i, label in enumerate(["happy", "sad"] * 40):
            save_png(raw / "FERPlus" / "test" / label / f"{i}.png", Image.new("RGB", (4, 4)))
        target = small_disk / "ferplus_qa.json"
        cmd = [PY, "-m", "unifer", "ferbench", "build", "--image-root", raw, "--datasets", "ferplus", "--out-dir",
               small_disk]
    target.write_text("previous\n")
    fill(small_disk)
    res = run(cmd)
    one_clear_line(res, f"cannot write {target}: No space left on device; the file was left as it was", script=True)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in small_disk.iterdir()) == sorted(["ballast", target.name])
