"""Scoring results files into metrics files: what ``unifer eval`` and ``unifer ferbench run`` write.

``score_set_files`` scores one set's results (metrics JSON, confusion figure beside it); ``score_total_files`` the
four sets together (pooled JSON, the FERBench table as Markdown and CSV, two figures). Both return what they
computed and wrote; printing is the commands' (``unifer.scoring.cli``, ``unifer.pipeline.ferbench``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.jsonio import WriteError, write_json_atomic, write_text_atomic
from unifer.data.sets import DEFAULT_RUN_NAME, REPO_ROOT, SET_KEYS, SETS, get_set
from unifer.errors import UniferError
from unifer.scoring.aggregate import csv_table, load_results, markdown_table, score_set, score_total
from unifer.scoring.intervals import CIOptions
from unifer.scoring.reasoning_report import score_set_reasoning, score_total_reasoning

#: Metrics files carry 95% intervals unless a caller passes ``ci=None`` (``--no-ci``).
DEFAULT_CI = CIOptions()


@dataclass(frozen=True)
class Scored:
    """A scoring's report (the metrics JSON's content), the files written, and the total's Markdown table."""

    report: dict
    written: list[Path] = field(default_factory=list)
    table: str | None = None


def protocol_suffix(protocol: str) -> str:
    """The file name tag of a protocol: none for the paper's, ``_strict`` for the strict one."""
    return "" if protocol == "paper" else f"_{protocol}"


def set_metrics_path(results: Path, protocol: str) -> Path:
    """The metrics file beside a results file: ``x_results.json`` → ``x_metrics[_strict].json``."""
    return results.with_name(results.name.replace("_results.json", f"_metrics{protocol_suffix(protocol)}.json"))


def total_results_path(total_dir: Path, run: str, protocol: str) -> Path:
    return total_dir / f"{run}_results{protocol_suffix(protocol)}.json"


DEFAULT_TOTAL_DIR = REPO_ROOT / "eval_total" / "results"


def sibling(output: Path, old: str, new: str, ext: str) -> Path:
    """A file next to ``output`` named after it: ``x_metrics.json`` → ``x_confusion.png`` (last ``old`` replaced)."""
    stem = output.stem
    i = stem.rfind(old)
    stem = stem[:i] + new + stem[i + len(old):] if i >= 0 else f"{stem}{new}"
    return output.with_name(stem + ext)


def figs_name(base: str, run: str, protocol: str) -> str:
    run_part = "" if run == DEFAULT_RUN_NAME else f"_{run}"
    return f"{base}{run_part}{protocol_suffix(protocol)}.png"


def refuse_overwriting_inputs(output: Path, inputs: list[Path]) -> None:
    for p in inputs:
        if output.resolve() == p.resolve():
            raise UniferError(f"--output {output} is the results file being scored; choose another path")


def write_file(fn, path: Path, *args):
    try:
        return fn(path, *args)
    except WriteError:
        raise  # already one line, and it says the previous file is intact
    except OSError as e:
        raise UniferError(f"cannot write {path}: {e.strerror or e}") from None


def draw(drawer, path: Path, figs_dir: str | None, name: str) -> list[Path]:
    """Draw one figure at ``path`` and copy it into ``figs_dir`` (unless empty)."""
    from unifer.scoring.plots import copy_figure

    try:
        out = [drawer(path)]
        if figs_dir:
            out.append(copy_figure(path, Path(figs_dir).expanduser().resolve() / name))
    except OSError as e:
        raise UniferError(f"cannot write figure {path}: {e.strerror or e}") from None
    return out


def score_set_files(set_key: str, results: Path, output: Path, protocol: str = "paper",
                    run: str = DEFAULT_RUN_NAME, figs: bool = True, figs_dir: str | None = None,
                    ci: CIOptions | None = DEFAULT_CI, votes: Path | None = None) -> Scored:
    """Score one set's results file into ``output`` (and its confusion figure beside it, unless ``figs`` is off);
    ``ci``: the intervals' options (None: none); ``votes``: FERPlus' rater votes (``unifer.scoring.votes``)."""
    s = get_set(set_key)
    refuse_overwriting_inputs(output, [results])
    records = load_results(results, s)
    report = score_set(records, s, protocol, ci=ci)
    if votes is not None:
        from unifer.scoring.votes import add_votes

        add_votes(report, {set_key: records}, votes, protocol)
    report["results_file"] = str(results)
    report["reasoning"], items_file, items = score_set_reasoning(records, s, results, output.parent, protocol)
    write_file(write_json_atomic, output, report)
    written = [output, write_file(write_text_atomic, items_file, items)]
    if figs:
        from unifer.scoring.plots import confusion_figure

        title = f"{s.name} · {protocol} protocol · accuracy {100 * report['overall']['accuracy']:.2f}%"
        written += draw(lambda p: confusion_figure(report["confusion_matrix"], report["labels"], p, title,
                                                   report["unknown_per_class"]),
                        sibling(output, "_metrics", "_confusion", ".png"), figs_dir,
                        figs_name(f"confusion_{s.key}", run, protocol))
    return Scored(report, written)


def score_total_files(paths: dict[str, Path], output: Path, protocol: str = "paper", run: str = DEFAULT_RUN_NAME,
                      figs: bool = True, figs_dir: str | None = None, ci: CIOptions | None = DEFAULT_CI,
                      votes: Path | None = None) -> Scored:
    """Score the four sets' results files together into ``output``, the table beside it (``_table.md``/``.csv``)
    and, unless ``figs`` is off, the accuracy bars and the pooled confusion matrix."""
    refuse_overwriting_inputs(output, list(paths.values()))
    records = {key: load_results(path, SETS[key]) for key, path in paths.items()}
    report = score_total(records, protocol, ci=ci)
    if votes is not None:
        from unifer.scoring.votes import add_votes

        add_votes(report, records, votes, protocol)
    report["results_files"] = {key: str(p) for key, p in paths.items()}
    report["reasoning"] = score_total_reasoning(records, paths, protocol)
    table = markdown_table(report["table"])
    md, csv = sibling(output, "_results", "_table", ".md"), sibling(output, "_results", "_table", ".csv")
    write_file(write_json_atomic, output, report)
    write_file(write_text_atomic, md, table)
    write_file(write_text_atomic, csv, csv_table(report["table"]))
    written = [output, md, csv]
    if figs:
        from unifer.scoring.plots import accuracy_bars, confusion_figure

        acc = report["overall"]["accuracy"]
        written += draw(lambda p: accuracy_bars(report["table"], p, "FERBench accuracy per set",
                                                divider_before=len(SET_KEYS)),
                        sibling(output, "_results", "_accuracy", ".png"), figs_dir,
                        figs_name("ferbench_accuracy", run, "paper"))
        written += draw(lambda p: confusion_figure(report["confusion_matrix"], report["labels"], p,
                                                   f"FERBench total · {protocol} protocol · accuracy "
                                                   f"{100 * acc:.2f}%", report["unknown_per_class"]),
                        sibling(output, "_results", "_confusion", ".png"), figs_dir,
                        figs_name("confusion_total", run, protocol))
    return Scored(report, written, table)
