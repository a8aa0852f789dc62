"""Scoring a run's answered sets: every set under both protocols (metrics beside each results file) and, once all
four are answered, the total (the FERBench table). Library code: returns what it scored, prints nothing."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from unifer.data.sets import SETS, resolve_path
from unifer.scoring.aggregate import PROTOCOLS
from unifer.scoring.files import Scored, score_set_files, score_total_files, set_metrics_path, total_results_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunScores:
    """Per set and protocol, the set's scoring; per protocol, the total's (empty unless all four sets ran)."""

    sets: dict[str, dict[str, Scored]]
    total: dict[str, Scored]
    total_dir: Path

    @property
    def table(self) -> str | None:
        """The FERBench table (per set and pooled, both protocols), None without all four sets."""
        return self.total[PROTOCOLS[0]].table if self.total else None


def score_run(results: dict[str, Path], run: str, total_dir: Path) -> RunScores:
    """Score ``results`` (set key → results file) of run ``run``; the total goes into ``total_dir``."""
    results = {key: resolve_path(path) for key, path in results.items()}
    sets = {}
    for key, path in results.items():
        sets[key] = {protocol: score_set_files(key, path, resolve_path(set_metrics_path(path, protocol)), protocol,
                                               run) for protocol in PROTOCOLS}
        log.info("scored %s: %s", SETS[key].name, ", ".join(str(s.written[0]) for s in sets[key].values()))
    total = {}
    if set(results) == set(SETS):
        paths = {key: results[key] for key in SETS}
        total = {protocol: score_total_files(paths, resolve_path(total_results_path(total_dir, run, protocol)),
                                             protocol, run) for protocol in PROTOCOLS}
    return RunScores(sets, total, total_dir)
