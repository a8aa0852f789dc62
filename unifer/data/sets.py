"""The four FERBench sets as data: keys, label orders, synonyms, the prompt and default paths.

Everything that differs between RAF-DB, FERPlus, AffectNet and SFEW 2.0 lives here; every script and module
reads it instead of restating it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The repository root: defaults are resolved against it, never against the current directory.
#: ``UNIFER_HOME`` overrides it (e.g. for an installed, non-editable copy of the package).
REPO_ROOT = Path(os.environ.get("UNIFER_HOME") or Path(__file__).resolve().parents[2])

PROMPT_TEMPLATE = (
    "As an expert in facial expression recognition, which expression is most prominent in this image? "
    "Please select your answer from the following candidate labels: {labels}. Provide your detailed reasoning "
    "between the <think></think> tags, and then give your final answer between the <answer></answer> tags."
)

#: The aggregate ("total") maps the sets' spellings onto one vocabulary before pooling.
TOTAL_LABEL_MAP = {"angry": "anger", "happy": "happiness", "sad": "sadness"}

#: The results file name prefix the paper uses for its model.
DEFAULT_RUN_NAME = "unifer_7b"

#: The paper's new-token budget per answer.
DEFAULT_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class FERSet:
    key: str  # registry key and file-name stem: rafdb, ferplus, affectnet, sfew_2.0
    name: str  # display name
    labels: tuple[str, ...]  # candidate labels, in the published order
    synonyms: tuple[tuple[str, tuple[str, ...]], ...]  # (label, alternatives), in the scorer's walk order

    @property
    def folder(self) -> Path:
        return REPO_ROOT / f"eval_{self.key}"

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(labels=", ".join(self.labels))

    @property
    def qa_filename(self) -> str:
        return f"{self.key}_qa.json"

    def default_qa_path(self) -> Path:
        return self.folder / "data" / self.qa_filename

    def default_results_path(self, run: str = DEFAULT_RUN_NAME) -> Path:
        return self.folder / "results" / f"{self.key}_{run}_results.json"

    def default_metrics_path(self, run: str = DEFAULT_RUN_NAME) -> Path:
        return self.folder / "results" / f"{self.key}_{run}_metrics.json"

    def synonym_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.synonyms)


_CALM = ("normal", "calm", "blank")
_SURPRISE = ("shock", "astonishment")
_DISGUST = ("revulsion", "repulsion")
_FEAR = ("terror", "fright")
_CONTEMPT = ("scorn", "disdain")

SETS: dict[str, FERSet] = {
    s.key: s
    for s in (
        FERSet(
            key="rafdb",
            name="RAF-DB",
            labels=("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
            synonyms=(
                ("anger", ("angry",)),
                ("disgust", _DISGUST),
                ("fear", _FEAR),
                ("happiness", ("joy", "happy")),
                ("sadness", ("sad",)),
                ("neutral", _CALM),
                ("surprise", _SURPRISE),
            ),
        ),
        FERSet(
            key="ferplus",
            name="FERPlus",
            labels=("angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
            synonyms=(
                ("angry", ("anger",)),
                ("contempt", _CONTEMPT),
                ("disgust", _DISGUST),
                ("fear", _FEAR),
                ("happy", ("joy", "happiness")),
                ("sad", ("sorrow", "unhappy")),
                ("neutral", _CALM),
                ("surprise", _SURPRISE),
            ),
        ),
        FERSet(
            key="affectnet",
            name="AffectNet",
            labels=("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"),
            synonyms=(
                ("anger", ("angry", "mad")),
                ("contempt", _CONTEMPT),
                ("disgust", _DISGUST),
                ("fear", _FEAR),
                ("happiness", ("joy", "happy")),
                ("sadness", ("sad",)),
                ("neutral", _CALM),
                ("surprise", _SURPRISE),
            ),
        ),
        FERSet(
            key="sfew_2.0",
            name="SFEW 2.0",
            labels=("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
            synonyms=(
                ("angry", ("anger", "mad")),
                ("disgust", _DISGUST),
                ("fear", _FEAR),
                ("happy", ("joy", "happiness")),
                ("sad", ("sorrow", "unhappy")),
                ("neutral", _CALM),
                ("surprise", _SURPRISE),
            ),
        ),
    )
}

SET_KEYS = tuple(SETS)


def get_set(key: str) -> FERSet:
    """Look a set up by key (``rafdb``, ``ferplus``, ``affectnet``, ``sfew_2.0``; ``sfew`` is accepted)."""
    k = key.strip().lower()
    if k == "sfew":
        k = "sfew_2.0"
    try:
        return SETS[k]
    except KeyError:
        raise ValueError(f"unknown FERBench set {key!r}; choose one of: {', '.join(SET_KEYS)}") from None


def set_for_labels(labels) -> FERSet | None:
    """The set whose candidate labels are exactly ``labels`` (in order), or None."""
    labels = tuple(labels)
    for s in SETS.values():
        if s.labels == labels:
            return s
    return None


def resolve_path(p: str | os.PathLike) -> Path:
    """A user path: absolute as given, relative to the current directory (as a shell user expects)."""
    return Path(p).expanduser().resolve()
