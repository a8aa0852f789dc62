"""Write the report folder: ``index.html``, ``report.js``, ``report.css`` (package files, copied as they are),
``data.js`` (one JSON blob the page reads) and ``thumbs/``.

The data is a script, not a JSON file, because a page opened from ``file://`` may not fetch files. The blob is
JSON with every ``<``, ``>``, ``&``, U+2028, U+2029 and lone surrogate written as a ``\\u`` escape, so no model text
can end the script or open a comment, whatever it holds; the page puts it on screen with ``textContent`` only.

Every number comes from ``unifer.scoring``: the accuracy table is ``markdown_table`` of ``score_total``'s rows —
the very cells ``eval_total`` prints — and the confusion matrices are ``score_set`` / ``score_total``'s.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from unifer.data.sets import SET_KEYS, SETS
from unifer.errors import UniferError
from unifer.report.items import describe, label_space, pooled
from unifer.report.reasoning_view import budgets, item_columns, judge_table, judge_texts, rates_table, unit_names
from unifer.report.thumbs import DEFAULT_SIZE, write_thumbnails
from unifer.scoring.aggregate import PROTOCOLS, load_results, markdown_table, score_set, score_total
from unifer.scoring.intervals import CIOptions

ASSETS = ("index.html", "report.js", "report.css")
DATA_FILE = "data.js"
THUMBS = "thumbs"
#: The page tells an item of the compared run that is missing from it apart from an error item (-1).
ABSENT = -2


@dataclass
class Run:
    """One model's answers to FERBench: its name on the page and the checked records of each set."""

    name: str
    paths: dict[str, Path]
    records: dict[str, list[dict]] = field(default_factory=dict)


def load_run(name: str, paths: dict[str, Path]) -> Run:
    return Run(name, dict(paths), {key: load_results(p, SETS[key]) for key, p in paths.items()})


# ------------------------------------------------------------------------------------------------ the numbers


def parse_markdown_table(text: str) -> dict:
    """``markdown_table``'s text as header and rows of cells (the page shows these very strings)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    notes = [line.strip() for line in text.split(lines[-1], 1)[1].splitlines() if line.strip()]
    return {"header": cells[0], "rows": cells[2:], "notes": notes}


def scores(run: Run) -> dict:
    """The accuracy table and every confusion matrix of a run, under both protocols."""
    totals = {p: score_total(run.records, p, ci=CIOptions() if p == PROTOCOLS[0] else None) for p in PROTOCOLS}
    matrices: dict[str, dict] = {"all": {}}
    for p in PROTOCOLS:
        matrices["all"][p] = totals[p]
        for key, recs in run.records.items():
            matrices.setdefault(key, {})[p] = score_set(recs, SETS[key], p)
    return {"table": parse_markdown_table(markdown_table(totals["paper"]["table"])),
            "mean_set_accuracy": {p: totals[p]["mean_set_accuracy"] for p in PROTOCOLS}, "matrices": matrices}


# ------------------------------------------------------------------------------------------------ the payload


def item_key(set_key: str, record: dict, index: int) -> tuple[str, str]:
    """How the items of two runs are matched: set and image path (the record's position where it has none)."""
    path = record.get("image_path")
    return set_key, path if isinstance(path, str) else f"#{index}"


def build_payload(run: Run, compare: Run | None, image_root: str, title: str) -> tuple[dict, list[str]]:
    """The page's data (columns of equal length, one entry per item of ``run``) and the distinct image paths."""
    numbers = scores(run)
    names, index = label_space(numbers["matrices"]["all"]["paper"]["labels"])

    def matrix(report: dict) -> dict:
        return {"labels": [index[label] for label in report["labels"]], "m": report["confusion_matrix"],
                "unknown": report["unknown_per_class"], "accuracy": report["overall"]["accuracy"]}

    items = {k: [] for k in ("set", "index", "truth", "pp", "ps", "flags", "resp", "path", "thumb", "rp", "rs",
                             "cues", "judge")}
    paths: dict[str, int] = {}
    budget, units, reasoned = budgets(run.paths), {}, {key: [] for key in run.records}  # the reasoning's
    judged = judge_texts(run.paths)
    for s_i, key in enumerate(run.records):
        for r_i, record in enumerate(run.records[key]):
            d = describe(record, key)
            image = record.get("image_path") if isinstance(record.get("image_path"), str) else ""
            preds = d["preds"] or (None, None)
            items["set"].append(s_i)
            items["index"].append(r_i)
            items["truth"].append(index[record["true_label"]])
            items["pp"].append(index[preds[0]] if preds[0] else -1)
            items["ps"].append(index[preds[1]] if preds[1] else -1)
            items["flags"].append(d["flags"])
            items["resp"].append(d["response"])
            items["path"].append(image)
            items["thumb"].append(paths.setdefault(image, len(paths)) if image else -1)
            bits, cues, paper = item_columns(record, key, d["preds"], budget[key], units)
            items["rp"].append(bits[0]), items["rs"].append(bits[1]), items["cues"].append(cues)
            reasoned[key] += [paper] if paper else []
            items["judge"].append(judged.get((key, image), ""))
    payload = {
        "title": title, "runs": [run.name] + ([compare.name] if compare else []), "imageRoot": str(image_root),
        "protocols": list(PROTOCOLS), "labels": names, "pooled": [index[pooled(n)] for n in names],
        "sets": [{"key": key, "name": SETS[key].name, "labels": [index[label] for label in SETS[key].labels]}
                 for key in run.records],
        "table": numbers["table"], "meanSetAccuracy": numbers["mean_set_accuracy"],
        "matrices": {k: {p: matrix(rep) for p, rep in by_p.items()} for k, by_p in numbers["matrices"].items()},
        "items": items, "compare": None,
        "reasoning": {"units": unit_names(units), "table": rates_table(reasoned), "judge": judge_table(run.paths)},
    }
    if compare is not None:
        payload["compare"] = compare_columns(run, compare, index)
        payload["compare"]["table"] = scores(compare)["table"]
        payload["compare"]["paired"] = paired_table(run, compare)
    return payload, list(paths)


def paired_table(run: Run, other: Run) -> dict:
    """``unifer compare``'s table of the two runs (paper protocol) as the page's header and rows, and its notes;
    ``{"error": line}`` where the runs answered different items."""
    from unifer.errors import UniferError
    from unifer.scoring.compare_cli import format_comparison
    from unifer.scoring.paired import compare_records

    try:
        sets = compare_records(run.records, other.records, "paper", CIOptions(), (run.name, other.name))
    except UniferError as e:
        return {"error": str(e)}
    text = format_comparison({"protocol": "paper", "runs": {"a": run.name, "b": other.name}, "sets": sets})
    table = parse_markdown_table(text)
    table["title"] = text.splitlines()[0]
    return table


def compare_columns(run: Run, other: Run, index: dict[str, int]) -> dict:
    """The compared run's predictions, flags and response per item of ``run`` (ABSENT where it lacks the item)."""
    theirs = {}
    for key, recs in other.records.items():
        for r_i, record in enumerate(recs):
            theirs[item_key(key, record, r_i)] = (key, record)
    cols = {k: [] for k in ("pp", "ps", "flags", "resp")}
    matched = 0
    for key, recs in run.records.items():
        for r_i, record in enumerate(recs):
            hit = theirs.get(item_key(key, record, r_i))
            if hit is None:
                row = (ABSENT, ABSENT, 0, "")
            else:
                matched += 1
                d = describe(hit[1], key)
                preds = d["preds"] or (None, None)
                row = (index[preds[0]] if preds[0] else -1, index[preds[1]] if preds[1] else -1, d["flags"],
                       d["response"])
            for column, value in zip(("pp", "ps", "flags", "resp"), row):
                cols[column].append(value)
    cols["onlyInCompare"] = sum(len(v) for v in other.records.values()) - matched
    return cols


# ------------------------------------------------------------------------------------------------ writing


_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def script_json(obj) -> str:
    """JSON that is also safe inside any script: no ``</script>``, ``<!--``, line separators or lone surrogates."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _ESCAPES:  # str.replace, not str.translate: ten times faster on 20 MB
        text = text.replace(raw, escaped)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def asset_files():
    return resources.files("unifer.report").joinpath("assets")


def _is_report_folder(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or ((path / "index.html").is_file() and
                                                          (path / DATA_FILE).is_file()))


def write_folder(out: Path, payload: dict, image_paths: list[str], image_root: str, thumb_size: int | None) -> dict:
    """Build the folder beside ``out`` and swap it in, so an earlier report stays whole until the new one is."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not _is_report_folder(out):
        raise UniferError(f"--out {out} exists and is not a report folder (no index.html + {DATA_FILE}); "
                          "choose another path or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in ASSETS:
            (tmp / name).write_bytes(asset_files().joinpath(name).read_bytes())
        names = (write_thumbnails(image_paths, image_root, tmp / THUMBS, thumb_size) if thumb_size
                 else [None] * len(image_paths))
        found = {i for i, n in enumerate(names) if n}
        payload["items"]["thumb"] = [t if t in found else -1 for t in payload["items"]["thumb"]]
        (tmp / DATA_FILE).write_text(f"window.UNIFER_REPORT = {script_json(payload)};\n", encoding="utf-8")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UniferError(f"cannot write the report into {out}: {e.strerror or e}") from None
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"out": out, "index": out / "index.html", "thumbnails": len(found), "images": len(image_paths),
            "bytes": size}


def write_report(paths: dict[str, Path], out: str | os.PathLike, image_root: str | os.PathLike = "/",
                 compare: dict[str, Path] | None = None, names: tuple[str, str] = ("run", "compared run"),
                 title: str | None = None, thumb_size: int | None = DEFAULT_SIZE) -> dict:
    """The report of the results files ``paths`` (set key → file, the four sets) into folder ``out``; with
    ``compare`` (another run's files) also the items on which the two disagree. Returns what was written."""
    start = time.perf_counter()
    missing = [key for key in SET_KEYS if key not in paths]
    if missing:
        raise UniferError(f"no results file for {', '.join(SETS[k].name for k in missing)}")
    run = load_run(names[0], {key: Path(paths[key]) for key in SET_KEYS})
    other = load_run(names[1], {key: Path(compare[key]) for key in SET_KEYS}) if compare else None
    payload, image_paths = build_payload(run, other, str(image_root), title or f"FERBench report: {names[0]}")
    summary = write_folder(Path(out), payload, image_paths, str(image_root), thumb_size)
    summary["items"] = len(payload["items"]["set"])
    summary["seconds"] = time.perf_counter() - start
    return summary
