"""The paper's runs as recipes (train_unifer/recipes): the trainers' defaults, the order of precedence (recipe <
--config < flags), and the mapping documents' key-by-key tables checked against the recipes and TRL's defaults."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from unifer.errors import UniferError
from unifer.train.recipes import GRPO_RECIPE, SFT_RECIPE, read_recipe, trainer_settings

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = {"sft": (REPO / "train_unifer" / "SFT_MAPPING.md", SFT_RECIPE),
            "grpo": (REPO / "train_unifer" / "GRPO_MAPPING.md", GRPO_RECIPE)}


def parsers(stage):
    from trl import ModelConfig, SFTConfig

    if stage == "sft":
        from unifer.train.sft import SFTScriptArguments

        return (SFTScriptArguments, SFTConfig, ModelConfig)
    from unifer.train.grpo import GRPOPaperConfig, GRPOScriptArguments

    return (GRPOScriptArguments, GRPOPaperConfig, ModelConfig)


def trl_defaults(stage) -> dict:
    """TRL's own defaults for the trainer config and ModelConfig (our script arguments are not TRL's)."""
    out = {}
    for t in parsers(stage)[1:]:
        for base in t.__mro__:  # GRPOPaperConfig -> TRL's GRPOConfig
            if dataclasses.is_dataclass(base) and base.__module__.startswith("trl"):
                t = base
                break
        for f in dataclasses.fields(t):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out.setdefault(f.name, f.default_factory())
    return out


def key_table(doc: Path) -> dict[str, tuple[str, str, str]]:
    text = doc.read_text(encoding="utf-8")
    section = text.split("### The recipe, key by key" if "### The recipe" in text else "## The recipe, key by key")[1]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \| (.*?) \| (.*?) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
        elif rows and not line.startswith("|"):
            break
    return rows


def cell_value(cell: str):
    """A cell's YAML value (its first `code` span), or the text when it has none."""
    m = re.search(r"`([^`]*)`", cell)
    return yaml.safe_load(m.group(1)) if m else cell


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_the_mapping_table_is_the_recipe_and_trls_defaults(stage):
    doc, recipe = MAPPINGS[stage]
    settings = trainer_settings(recipe)
    table = key_table(doc)
    assert set(table) == set(settings), "every recipe key has a row and every row is a recipe key"
    defaults = trl_defaults(stage)
    for key, (paper, trl, ours) in table.items():
        assert cell_value(ours) == settings[key], (key, ours)
        if trl.strip() == "—":
            assert key not in defaults, f"{key}: TRL has it (default {defaults.get(key)!r})"
        else:
            assert cell_value(trl) == defaults[key], (key, trl, defaults[key])
        if paper.strip() != "—" and cell_value(paper) != settings[key]:
            assert "†" in paper, f"{key}: the paper's {paper} differs from the recipe without a †"


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_the_recipe_is_the_trainers_defaults_and_flags_and_config_override_it(stage, tmp_path):
    from unifer.train.common import parse_trainer_args

    types = parsers(stage)
    settings = trainer_settings(MAPPINGS[stage][1])
    parsed = parse_trainer_args(types, [])
    values = {k: getattr(ns, k) for ns in parsed for k in vars(ns)}
    # no CUDA here: adapted after the recipe applies; TrainingArguments turns report_to "none" into []
    adapted = {"bf16": False, "attn_implementation": "sdpa", "report_to": []}
    for key, value in settings.items():
        assert values[key] == adapted.get(key, value), key
    user = tmp_path / "run.yaml"
    user.write_text("learning_rate: 3.0e-4\nlogging_steps: 7\n")
    parsed = parse_trainer_args(types, ["--config", str(user), "--logging_steps", "9"])
    assert parsed[1].learning_rate == 3e-4 and parsed[1].logging_steps == 9  # config over recipe, flag over both
    assert parsed[1].lr_scheduler_type == "cosine"  # the rest of the recipe stays
    bare = parse_trainer_args(types, ["--recipe", "none"])[1]
    assert bare.lr_scheduler_type == "linear" and bare.gradient_accumulation_steps == 1  # TRL's own


def test_a_bad_recipe_is_one_line(tmp_path):
    from unifer.train.common import parse_trainer_args

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0e-5\nlearnig_rate: 2\n")
    with pytest.raises(UniferError, match=r"recipe .*bad\.yaml: settings no trainer flag takes: learnig_rate"):
        parse_trainer_args(parsers("sft"), ["--recipe", str(bad)])
    bad.write_text("- a list\n")
    with pytest.raises(UniferError, match="expected a YAML mapping"):
        read_recipe(bad)
    with pytest.raises(UniferError, match="cannot read it"):
        read_recipe(tmp_path / "absent.yaml")
