"""The report's intervals and, with a compared run, its paired test per set (the payload the page shows)."""
from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from helpers import answer, dump, results_record
from unifer.data.sets import SETS
from unifer.report.build import write_report
from unifer.scoring.compare_cli import format_comparison
from unifer.scoring.intervals import CIOptions
from unifer.scoring.paired import compare_records


def _run(folder, acc, seed, n=40):
    rng, items = random.Random(seed), random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, s in SETS.items():
        recs = []
        for i in range(n):
            truth = items.choice(s.labels)
            recs.append(results_record(s, f"/{key}/{i}.jpg", truth,
                                       answer(truth if rng.random() < acc else rng.choice(s.labels))))
        paths[key] = dump(folder / f"{key}_results.json", recs, indent=None)
    return paths


def _payload(out):
    text = (out / "data.js").read_text()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def test_report_tables_carry_intervals_and_the_paired_test(tmp_path):
    a, b = _run(tmp_path / "a", 0.8, 1), _run(tmp_path / "b", 0.5, 2)
    write_report(a, tmp_path / "rep", compare=b, names=("mine", "theirs"), thumb_size=None)
    data = _payload(tmp_path / "rep")
    assert "UAR (paper)" in data["table"]["header"] and "[" in data["table"]["rows"][0][3]
    assert any("95% intervals" in line for line in data["table"]["notes"])
    paired = data["compare"]["paired"]
    assert "McNemar p" in paired["header"] and [r[0] for r in paired["rows"]] == [
        *(s.name for s in SETS.values()), "Total (pooled)"]
    assert paired["title"].startswith("A = mine, B = theirs")
    # the very cells ``unifer compare`` prints
    from unifer.scoring.aggregate import load_results

    recs = {side: {k: load_results(p, SETS[k]) for k, p in run.items()} for side, run in (("a", a), ("b", b))}
    sets = compare_records(recs["a"], recs["b"], "paper", CIOptions(), ("mine", "theirs"))
    text = format_comparison({"protocol": "paper", "runs": {"a": "mine", "b": "theirs"}, "sets": sets})
    assert all(f"| {' | '.join(row)} |" in text for row in paired["rows"])
    assert any("pooled: A is better" in line for line in paired["notes"])


def test_paired_test_of_runs_on_other_items_is_one_line_on_the_page(tmp_path):
    a, b = _run(tmp_path / "a", 0.8, 1), _run(tmp_path / "b", 0.5, 2, n=39)
    write_report(a, tmp_path / "rep", compare=b, thumb_size=None)
    paired = _payload(tmp_path / "rep")["compare"]["paired"]
    assert "the runs answered different items" in paired["error"] and "\n" not in paired["error"]


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to check the page's script")
def test_the_page_script_parses():
    from unifer.report.build import asset_files

    code = asset_files().joinpath("report.js").read_text()
    assert "paired-table" in code
    res = subprocess.run(["node", "--check", "-"], input=code, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
