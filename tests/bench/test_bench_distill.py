"""`unifer bench distill`: the local executor and Ray side by side on the same faces, each row timed and checked to
write the local executor's outputs byte for byte (the fake teacher here, for speed; the recorded run uses the tiny
model, bench/results/distill.md)."""
from __future__ import annotations

import json

import pytest
from helpers import in_process

from unifer.bench.distill import markdown, replica_counts
from unifer.cli import main as unifer_main
from unifer.errors import UniferError

pytest.importorskip("ray")


@pytest.mark.slow  # a local Ray starts in ~10 s on two cores
def test_bench_distill_times_local_and_ray_side_by_side(tmp_path):
    out = tmp_path / "distill.json"
    rc, stdout, err = in_process(unifer_main, "bench", "distill", "--engine", "fake", "--faces", "6", "--samples",
                                 "2", "--replicas", "2", "--work-dir", tmp_path / "work", "--output", out)
    assert rc == 0, err
    sec = json.loads(out.read_text(encoding="utf-8"))
    assert [r["executor"] for r in sec["rows"]] == ["local", "ray, 2 replicas"]
    for row in sec["rows"]:
        assert "error" not in row and row["wall_s"] > 0 and row["same_outputs"] is True, row
        assert row["samples_per_s"] == pytest.approx(2 * row["faces_per_s"], rel=0.01)
    assert sec["rows"][0]["speedup"] == 1.0
    assert sec["rows"][1]["speedup"] == pytest.approx(sec["rows"][0]["wall_s"] / sec["rows"][1]["wall_s"], abs=0.006)
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert table == markdown(sec) and "| ray, 2 replicas |" in table and table in stdout


def test_replica_counts_are_checked():
    assert replica_counts("1, 2,4") == [1, 2, 4]
    for bad in ("", "two", "0,1"):
        with pytest.raises(UniferError, match="--replicas"):
            replica_counts(bad)


def test_a_failed_executor_is_a_row_that_says_so():
    sec = {"date": "d", "machine": "m", "load_before": 0.1, "command": "c", "engine": "fake", "model": "fake",
           "faces": 2, "samples": 1, "max_new_tokens": 4,
           "rows": [{"executor": "local", "wall_s": 1.0, "faces_per_s": 2.0, "samples_per_s": 2.0, "speedup": 1.0,
                     "same_outputs": True}, {"executor": "ray, 1 replica", "error": "exit status 2: boom", "wall_s": 3}]}
    md = markdown(sec)
    assert "| local | 1.0 | 2.00 | 2.00 | 1.00 | yes |" in md and "| ray, 1 replica | failed: exit status 2: boom" in md
