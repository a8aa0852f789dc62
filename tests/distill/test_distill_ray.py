"""`unifer distill --executor ray` on a local Ray (two replicas on this CPU) writes what the local executor writes
— the same seeded samples face by face — and loses nothing when a replica dies midway."""
from __future__ import annotations

import json

import pytest
from distill_faces import write_faces
from helpers import in_process

from unifer.cli import main as unifer_main
from unifer.infer.progress import read_progress

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a local Ray starts in ~10 s on two cores


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "root"
    folder, _ = write_faces(root, tmp_path)  # five faces (fake answers seeded per face) and one broken image
    for n in range(6):
        from helpers import tiny_image

        tiny_image(folder / "neutral" / f"n{n}.png", size=(8, 8), color=(10 * n, 100, 50))
    return root, folder


def distill(root, folder, out, *extra):
    return in_process(unifer_main, "distill", "--records", folder, "--image-root", root, "--set", "rafdb",
                      "--engine", "fake", "--model", "teacher", "--samples", "3", "--temperature", "0.8",
                      "--seed", "7", "--batch-size", "2", "--keep", "3", "--out", out, *extra)


def samples(out) -> dict:
    return read_progress(out / "samples.progress.jsonl")[1]


def test_ray_writes_the_same_records_as_local_and_a_dead_replica_loses_nothing(local_ray, faces, tmp_path):
    root, folder = faces
    rc, _, err = distill(root, folder, tmp_path / "local")
    assert rc == 0, err
    rc, stdout, err = distill(root, folder, tmp_path / "ray", "--executor", "ray", "--replicas", "2")
    assert rc == 0, err
    assert samples(tmp_path / "ray") == samples(tmp_path / "local")  # 12 faces, seeded alike
    for name in ("cot.json", "rlvr.json"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert "ray executor" in stdout

    marker = tmp_path / "died"
    rc, stdout, err = distill(root, folder, tmp_path / "killed", "--executor", "ray", "--replicas", "2",
                              "--fake-exit-at-call", "2", "--fake-exit-once-file", marker)
    assert rc == 0, err
    assert marker.exists(), "a replica process exited midway"
    assert samples(tmp_path / "killed") == samples(tmp_path / "local")
    for name in ("cot.json", "rlvr.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    stats = json.loads((tmp_path / "killed" / "stats.json").read_text())
    assert stats["answered"] == 11 and stats["errors"] == 1

    # a run stopped on the local executor resumes on Ray (and the other way round): one progress file
    rc, _, err = distill(root, folder, tmp_path / "mixed", "--fake-engine-failure-at-call", "3")
    assert rc == 2 and "engine failed" in err
    rc, _, err = distill(root, folder, tmp_path / "mixed", "--executor", "ray", "--replicas", "2")
    assert rc == 0 and "resuming: " in err, err
    assert samples(tmp_path / "mixed") == samples(tmp_path / "local")


def test_ferbench_run_on_ray_writes_the_local_results(local_ray, tmp_path):
    from helpers import qa_record, tiny_image

    from unifer.data.sets import get_set

    qa_dir = tmp_path / "qa"
    qa_dir.mkdir()
    for key in ("rafdb", "ferplus"):
        s = get_set(key)
        recs = []
        for n in range(5):
            p = tiny_image(tmp_path / "img" / key / f"{n}.png", size=(8, 8), color=(40 * n, 10, 99))
            recs.append(qa_record(s, str(p), s.labels[n % len(s.labels)]))
        (qa_dir / s.qa_filename).write_text(json.dumps(recs))
    (tmp_path / "img" / "rafdb" / "4.png").write_bytes(b"broken")  # an error item on both executors
    base = ("ferbench", "run", "--engine", "fake", "--model", "tiny", "--run", "r", "--image-root", "/",
            "--qa-dir", qa_dir, "--sets", "rafdb,ferplus", "--batch-size", "2")
    rc, _, err = in_process(unifer_main, *base, "--results-dir", tmp_path / "local")
    assert rc == 0, err
    rc, stdout, err = in_process(unifer_main, *base, "--results-dir", tmp_path / "ray", "--executor", "ray",
                                 "--replicas", "2")
    assert rc == 0, err
    for key in ("rafdb", "ferplus"):
        name = f"{key}_r_results.json"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert "2 Ray replicas" in err
