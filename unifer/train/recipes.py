"""The paper's runs as YAML recipes (``train_unifer/recipes/*.yaml``): the one place their settings are written.

A recipe is a mapping of trainer flags (TRL's ``TrlParser`` names: ``learning_rate``, ``beta``, ...) plus one
reserved section, ``launch``, that only the launcher reads (DeepSpeed config, master port, the vLLM server's
settings). The trainers take a recipe's values as their defaults; ``--config run.yaml`` (TRL's own) overrides
them, and a flag overrides both. ``--recipe none`` leaves TRL's defaults.
"""
from __future__ import annotations

import os
from pathlib import Path

from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError

RECIPES_DIR = REPO_ROOT / "train_unifer" / "recipes"
SFT_RECIPE = RECIPES_DIR / "sft_paper.yaml"
GRPO_RECIPE = RECIPES_DIR / "grpo_paper.yaml"
#: The section of a recipe that is the launcher's, not the trainer's.
LAUNCH_SECTION = "launch"
NO_RECIPE = "none"


def read_recipe(path: str | os.PathLike) -> dict:
    """The whole recipe (a YAML mapping), or UniferError naming the file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UniferError(f"recipe {p}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise UniferError(f"recipe {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UniferError(f"recipe {p}: expected a YAML mapping of settings")
    launch = data.get(LAUNCH_SECTION, {})
    if not isinstance(launch, dict):
        raise UniferError(f"recipe {p}: '{LAUNCH_SECTION}' must be a mapping")
    return data


def trainer_settings(path: str | os.PathLike | None) -> dict:
    """The recipe's trainer flags (everything but ``launch``); {} for ``none`` or no recipe."""
    if path is None or str(path) == NO_RECIPE:
        return {}
    return {k: v for k, v in read_recipe(path).items() if k != LAUNCH_SECTION}


def launch_settings(path: str | os.PathLike | None) -> dict:
    """The recipe's ``launch`` section; {} for ``none`` or no recipe."""
    if path is None or str(path) == NO_RECIPE:
        return {}
    return dict(read_recipe(path).get(LAUNCH_SECTION) or {})


def recipe_in_argv(argv: list[str], default: str | None) -> str | None:
    """The value of the last ``--recipe X`` / ``--recipe=X`` in ``argv``, else ``default``."""
    found = default
    for i, a in enumerate(argv):
        if a == "--recipe" and i + 1 < len(argv):
            found = argv[i + 1]
        elif a.startswith("--recipe="):
            found = a.split("=", 1)[1]
    return found
