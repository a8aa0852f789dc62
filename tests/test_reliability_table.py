"""docs/reliability.md's "What happens when…" table says, for every row, what its tests run for real and what is a
stand-in of the tests' own."""
from __future__ import annotations

from test_readme import RELIABILITY


def test_every_row_says_what_is_real_and_what_is_a_stand_in():
    section = RELIABILITY.read_text(encoding="utf-8").split("\n## What happens when…\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    column = header.index("what is real, what is a stand-in")
    assert header[-1] == "shown by"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) >= 20
    missing = [r[0] for r in rows if len(r) != len(header) or not r[column].startswith(("real", "stand-in", "SFT"))]
    assert not missing, f"rows that do not say what is real and what is a stand-in: {missing}"
