"""Model presets: known models as data (``presets.yaml`` beside this module), and how ``--model`` resolves.

``--model`` is a checkpoint path (any engine that runs one), a preset name (``gpt-4o``, ``qwen2.5-vl-72b``), or,
for an engine that asks an endpoint, the served model's name. A preset fills the engine, the model, the run name
and request/engine defaults; a flag given on the command line wins over it.

    unifer presets            # the table: name, display name, engine, model, run, what was checked here
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
_FIELDS = {"display", "engine", "model", "hub_id", "run", "base_url", "api_key_env", "request", "options", "checked"}
_REQUEST_FIELDS = {"max_new_tokens", "temperature", "top_p", "seed", "image_format", "image_detail", "extra_body"}


@dataclass(frozen=True)
class Preset:
    name: str
    display: str
    engine: str
    model: str
    run: str
    hub_id: str | None = None
    checked: str = ""
    #: engine options and request defaults, by the runner's option names (base_url, api_key_env,
    #: max_new_tokens, temperature, image_format, image_detail, extra_body, tensor_parallel_size, ...)
    defaults: dict = field(default_factory=dict)

    def model_path(self) -> Path:
        """The checkpoint directory of a local preset (relative paths: against the repository)."""
        p = Path(self.model).expanduser()
        return p if p.is_absolute() else REPO_ROOT / p


def load_presets(path: Path = PRESETS_FILE) -> dict[str, Preset]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UniferError(f"cannot read the presets file {path}: {e}") from None
    if not isinstance(data, dict):
        raise UniferError(f"{path}: expected a mapping of preset names")
    out = {}
    for name, entry in data.items():
        where = f"{path}: preset {name!r}"
        if not isinstance(entry, dict):
            raise UniferError(f"{where}: expected a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise UniferError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("engine", "model"):
            if not isinstance(entry.get(key), str):
                raise UniferError(f"{where}, field {key!r}: missing or not a string")
        request = entry.get("request") or {}
        if set(request) - _REQUEST_FIELDS:
            raise UniferError(f"{where}, field 'request': unknown key(s) {', '.join(sorted(set(request) - _REQUEST_FIELDS))}")
        defaults = {**(entry.get("options") or {}), **request}
        for key in ("base_url", "api_key_env"):
            if entry.get(key):
                defaults[key] = entry[key]
        out[name] = Preset(name=name, display=entry.get("display") or name, engine=entry["engine"],
                           model=entry["model"], run=entry.get("run") or run_name(name), hub_id=entry.get("hub_id"),
                           checked=entry.get("checked") or "", defaults=defaults)
    return out


def run_name(text: str) -> str:
    """A file-name-safe run name: ``UniFER-7B`` → ``unifer_7b``, ``Qwen2.5-VL-7B-Instruct`` → ``qwen2_5_vl_7b_instruct``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "model"


def default_run_name(model: str | Path, preset: Preset | None = None) -> str:
    """The preset's run name, else the checkpoint folder's name (``checkpoint-500`` keeps its parent's too)."""
    if preset is not None:
        return preset.run
    p = Path(str(model).rstrip("/"))
    name = p.name
    if re.fullmatch(r"checkpoint-\d+", name) and p.parent.name:
        name = f"{p.parent.name}_{name}"
    return run_name(name)


def find_preset(name: str | None, path: str | os.PathLike | None = None) -> Preset | None:
    """The preset ``name`` in ``path`` (default: the package's presets.yaml), or None."""
    if not name:
        return None
    return load_presets(Path(path) if path else PRESETS_FILE).get(name)


def preset_table(presets: dict[str, Preset]) -> str:
    rows = [("preset", "display", "engine", "model", "run", "checked here")]
    rows += [(p.name, p.display, p.engine, p.model, p.run, p.checked) for p in presets.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", default=str(PRESETS_FILE), help="presets file (default: the package's)")


def run(args: argparse.Namespace) -> int:
    print(preset_table(load_presets(Path(args.file))))
    print("\n--model NAME uses a preset; a checkpoint path with --engine needs none.")
    return 0
