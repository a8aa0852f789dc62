"""`unifer distill` with the fake teacher whose answers are known per face: exact accept/reject counts, checked
against the paper's rewards sample by sample; the outputs pass `data check`; selection flags; one-line errors."""
from __future__ import annotations

import json

import pytest
from distill_faces import FACES, PAPER, STRICT, write_faces
from helpers import in_process

from unifer.cli import main as unifer_main
from unifer.data.sets import get_set
from unifer.rewards import accuracy_reward, accuracy_strict_reward, format_reward, format_strict_reward

RAF = get_set("rafdb")


def distill(root, folder, script, out, *extra):
    return in_process(unifer_main, "distill", "--records", folder, "--image-root", root, "--set", "rafdb",
                      "--engine", "fake", "--model", "teacher", "--fake-script", script, "--samples", "4",
                      "--temperature", "1.0", "--out", out, *extra)


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "root"
    folder, script = write_faces(root, tmp_path)
    return root, folder, script


def test_the_hand_written_counts_are_the_rewards_counts():
    """The expectations below are the rules applied by hand; the rewards GRPO trains with agree, sample by sample."""
    for table, acc_fn, fmt_fn in ((PAPER, accuracy_reward, format_reward),
                                  (STRICT, accuracy_strict_reward, format_strict_reward)):
        for name, label, _, samples in FACES:
            acc = acc_fn(samples, [f"<answer>{label}</answer>"] * len(samples))
            fmt = fmt_fn(samples)
            assert (sum(a * f for a, f in zip(acc, fmt)), sum(acc)) == table[name], name


def test_distill_counts_outputs_and_data_check(faces, tmp_path):
    root, folder, script = faces
    out = tmp_path / "out"
    rc, stdout, err = distill(root, folder, script, out, "--keep", "2")
    assert rc == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["faces"], stats["answered"], stats["errors"]) == (6, 5, 1)
    assert stats["samples"] == 20 and stats["accepted_samples"] == sum(a for a, _ in PAPER.values())
    assert stats["error_items"][0]["image_path"] == "/lab/anger/f.png"
    cot = json.loads((out / "cot.json").read_text())
    by_face = {}
    for r in cot:
        by_face.setdefault(r["image_path"].rsplit("/", 1)[1][0], []).append(r["response"])
    # a: 4 accepted, 2 distinct, the shorter first; b: its 2; d: its 1
    assert by_face == {"a": ["<think>smile</think><answer>happiness</answer>",
                             "<think>a wide smile, cheeks raised</think><answer>happiness</answer>"],
                       "b": ["<think>teeth show</think><answer>happiness</answer>",
                             "<think>eyes crinkle</think><answer>happiness</answer>"],
                       "d": ["<think>z</think><answer>sadness</answer>"]}
    assert all(r["question"] == RAF.prompt for r in cot)
    rlvr = {r["image_path"].rsplit("/", 1)[1][0]: r for r in json.loads((out / "rlvr.json").read_text())}
    assert {k: r["pass_rate"] for k, r in rlvr.items()} == {k: acc / 4 for k, (_, acc) in PAPER.items()}
    assert rlvr["d"]["solution"] == "<answer>sadness</answer>" and rlvr["d"]["problem"] == RAF.prompt
    per = stats["per_class"]
    assert per["happiness"]["pass_rate_histogram"] == [1, 0, 0, 1, 1]  # c 0/4, b 3/4, a 4/4
    assert per["sadness"]["pass_rate_histogram"] == [0, 2, 0, 0, 0]
    assert per["anger"]["errors"] == 1 and per["happiness"]["cot_faces"] == 2
    assert (out / "distill.png").stat().st_size > 10_000
    assert "accepted" in stdout and "samples/s" in stdout
    for kind in ("cot", "rlvr"):
        rc, o, e = in_process(unifer_main, "data", "check", out / f"{kind}.json", "--kind", kind,
                              "--image-root", root, "--no-progress")
        assert rc == 0 and "OK" in o, o + e

    # selection again from the kept samples: nothing asked (a teacher that would fail every call is not called)
    rc, stdout, err = distill(root, folder, script, out, "--rlvr-pass-rate", "0.01,0.99", "--balance",
                              "--pick", "first", "--fake-engine-failure-at-call", "1")
    assert rc == 0, err
    rlvr = json.loads((out / "rlvr.json").read_text())
    # in range: b (3/4), d (1/4), e (1/4) — one per class after --balance (happiness 1, sadness 1)
    kept = sorted(r["image_path"].rsplit("/", 1)[1][0] for r in rlvr)
    assert len(kept) == 2 and kept[0] == "b" and kept[1] in ("d", "e")
    cot = json.loads((out / "cot.json").read_text())
    faces_kept = {r["image_path"].rsplit("/", 1)[1][0] for r in cot}
    assert len(faces_kept) == 2 and "d" in faces_kept and len(cot) == 2  # --keep 1, one per class
    stats = json.loads((out / "stats.json").read_text())
    assert stats["per_class"]["happiness"]["cot_before_faces"] == 2 and stats["per_class"]["happiness"]["cot_faces"] == 1


def test_strict_rewards(faces, tmp_path):
    root, folder, script = faces
    rc, _, err = distill(root, folder, script, tmp_path / "s", "--reward", "strict", "--keep", "4")
    assert rc == 0, err
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert stats["accepted_samples"] == sum(a for a, _ in STRICT.values())
    rlvr = {r["image_path"].rsplit("/", 1)[1][0]: r["pass_rate"] for r in
            json.loads((tmp_path / "s" / "rlvr.json").read_text())}
    assert rlvr == {k: acc / 4 for k, (_, acc) in STRICT.items()}


def test_same_seeds_same_samples_other_seed_other_samples(tmp_path):
    root = tmp_path / "root"
    folder, _ = write_faces(root, tmp_path, broken=False)
    args = ("--records", folder, "--image-root", root, "--set", "rafdb", "--engine", "fake", "--model", "m",
            "--samples", "3")
    runs = {}
    for name, seed in (("one", "0"), ("two", "0"), ("three", "5")):
        rc, _, err = in_process(unifer_main, "distill", *args, "--seed", seed, "--out", tmp_path / name)
        assert rc == 0, err
        runs[name] = (tmp_path / name / "samples.progress.jsonl").read_text().splitlines()[1:]
    assert runs["one"] == runs["two"] and runs["one"] != runs["three"]


def test_bad_flags_are_one_line(faces, tmp_path):
    root, folder, script = faces
    rc, _, err = distill(root, folder, script, tmp_path / "x", "--temperature", "0")
    assert rc == 2 and "--temperature" in err and len(err.strip().splitlines()) == 1
    rc, _, err = distill(root, folder, script, tmp_path / "x", "--rlvr-pass-rate", "0.9,0.1")
    assert rc == 2 and "LO <= HI" in err


def test_a_dead_engine_stops_in_one_line_and_keeps_what_finished(faces, tmp_path):
    root, folder, script = faces
    out = tmp_path / "dead"
    rc, _, err = distill(root, folder, script, out, "--batch-size", "1", "--fake-engine-failure-at-call", "3")
    assert rc == 2 and "engine failed" in err and "rerun to go on" in err
    assert len(err.strip().splitlines()[-1:]) == 1 and "Traceback" not in err
    lines = (out / "samples.progress.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3  # the header, the broken image's error item, the two faces answered
    rc, _, err = distill(root, folder, script, out, "--batch-size", "1")
    assert rc == 0 and "resuming: 3 of 6" in err


def test_the_same_folder_read_in_another_sets_labels_is_another_run(faces, tmp_path):
    root, folder, script = faces
    out = tmp_path / "o"
    rc, _, err = distill(root, folder, script, out, "--limit", "2")
    assert rc == 0, err
    rc, _, err = in_process(unifer_main, "distill", "--records", folder, "--image-root", root, "--set", "affectnet",
                            "--engine", "fake", "--model", "teacher", "--fake-script", script, "--samples", "4",
                            "--temperature", "1.0", "--out", out, "--limit", "2")
    assert rc == 2 and "different arguments" in err and "records_sha256" in err


def test_a_qa_file_from_data_records_distils_as_its_folder_does(faces, tmp_path):
    root, folder, script = faces
    qa = tmp_path / "faces_qa.json"
    rc, _, err = in_process(unifer_main, "data", "records", folder, "--image-root", root, "--set", "rafdb",
                            "--out", qa)
    assert rc == 0, err
    assert "/lab/anger/f.png" in qa.read_text()  # it exists (records never decode): distill makes it an error item
    rc, _, err = distill(root, folder, script, tmp_path / "from_folder")
    assert rc == 0, err
    rc, _, err = in_process(unifer_main, "distill", "--records", qa, "--image-root", root, "--engine", "fake",
                            "--model", "teacher", "--fake-script", script, "--samples", "4", "--out",
                            tmp_path / "from_qa")
    assert rc == 0, err
    for name in ("cot.json", "rlvr.json"):
        assert (tmp_path / "from_qa" / name).read_bytes() == (tmp_path / "from_folder" / name).read_bytes()


def test_executor_ray_without_ray_installed_is_one_line(faces, tmp_path, monkeypatch):
    import sys

    root, folder, script = faces
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does where Ray is not installed
    rc, _, err = distill(root, folder, script, tmp_path / "x", "--executor", "ray")
    assert rc == 2 and "pip install -e .[ray]" in err and "Traceback" not in err
