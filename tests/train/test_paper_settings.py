"""The "paper" column of train_unifer/SFT_MAPPING.md and GRPO_MAPPING.md, and the recipes' launch sections, against
the paper's settings written once as data from its scripts (tests/train/paper_settings.yaml) — not against the recipes,
which tests/train/test_recipes.py checks the other columns with."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_recipes import MAPPINGS, cell_value, key_table

from unifer.train.recipes import launch_settings

PAPER = yaml.safe_load((Path(__file__).with_name("paper_settings.yaml")).read_text(encoding="utf-8"))


def paper_cell_says(cell: str, value) -> bool:
    """A cell shows ``value``: its code span is it, or (no code span, prose like '1 prompt × 8 generations')
    the prose starts with it."""
    if "`" in cell:
        return cell_value(cell) == value
    return cell.strip().startswith(str(value))


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_the_mapping_paper_column_is_the_papers_scripts(stage):
    doc, _ = MAPPINGS[stage]
    table = key_table(doc)
    paper = {**PAPER[stage]["script"], **PAPER[stage]["defaults"]}
    wrong = {}
    for key, value in paper.items():
        if key not in table:
            continue  # a setting the recipe does not carry (the mapping lists recipe keys only)
        cell = table[key][0]
        # attn_implementation in SFT: passed but unused — the cell says what ran, marked †
        if not paper_cell_says(cell, value) and not (stage == "sft" and key == "attn_implementation" and "†" in cell):
            wrong[key] = (cell, value)
    assert not wrong, f"{doc.name}: paper cells that are not the paper's scripts: {wrong}"
    # every paper cell that names a value names one of the paper's (no invented settings)
    invented = [k for k, (cell, _, _) in table.items() if cell.strip() != "—" and k not in paper]
    assert not invented, f"{doc.name}: paper cells with no source in tests/train/paper_settings.yaml: {invented}"


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_the_recipes_launch_is_the_papers(stage):
    _, recipe = MAPPINGS[stage]
    launch, paper = launch_settings(recipe), PAPER[stage]["launch"]
    assert launch["deepspeed"] == paper["deepspeed"] and launch["master_port"] == paper["master_port"]
    if stage == "grpo":
        assert launch["vllm_server"]["gpu_memory_utilization"] == paper["vllm_gpu_memory_utilization"]
