"""FERBench scoring: results files, per-set and pooled metrics, the FERBench table (extraction: ``extract``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.jsonio import read_records
from unifer.data.sets import REPO_ROOT, SETS, TOTAL_LABEL_MAP, FERSet, get_set, resolve_path
from unifer.errors import DataError, UniferError
from unifer.scoring.extract import PROTOCOLS, UNKNOWN, LabelExtractor, extract_label, extractor_for  # noqa: F401
from unifer.scoring.intervals import CIOptions, add_set_intervals, fmt_ci, recall_intervals, stratified
from unifer.scoring.metrics import accuracy, confusion_matrix, macro_prf, per_class, rank_by_f1, uar

# ---------------------------------------------------------------------------------------------------- results files


def is_error(record: dict) -> bool:
    """A failed item: the paper's scorer skips any record whose ``error`` field is truthy."""
    return bool(record.get("error"))


def infer_command(fer_set: FERSet, results_path: Path) -> str:
    """The command that writes ``results_path`` (named in the missing-file message)."""
    cmd = f"python eval_{fer_set.key}/code/infer_unifer.py"
    if Path(results_path).resolve() != fer_set.default_results_path().resolve():
        cmd += f" --output {results_path}"
    return cmd


def load_results(path: str | os.PathLike, fer_set: FERSet) -> list[dict]:
    """Read and check a results file of ``fer_set``: the QA records plus ``model_response`` (``"error": true`` on
    failed items, whose response may be absent). Any problem raises DataError naming file, record and field."""
    path = Path(path)
    records = read_records(path, what="results file", hint=f"create it with: {infer_command(fer_set, path)}")
    own = set(fer_set.labels)
    first_seen: dict[str, int] = {}  # image path → its first record
    for i, r in enumerate(records):
        cands = r.get("candidate_labels")
        if cands is None:
            raise DataError(path, "missing field", index=i, field="candidate_labels")
        if not isinstance(cands, list) or not cands or not all(isinstance(c, str) for c in cands):
            raise DataError(path, "expected a non-empty list of strings", index=i, field="candidate_labels")
        if set(cands) != own:
            other = next((s for s in SETS.values() if set(s.labels) == set(cands)), None)
            if other is not None:
                raise DataError(
                    path,
                    f"these are {other.name} results (candidates {', '.join(cands)}), not {fer_set.name}; "
                    f"score them with eval_{other.key}/code/eval_unifer.py",
                    index=i,
                    field="candidate_labels",
                )
            raise DataError(
                path, f"candidates {cands} are not {fer_set.name}'s {list(fer_set.labels)}", index=i,
                field="candidate_labels",
            )
        truth = r.get("true_label")
        if truth is None:
            raise DataError(path, "missing field", index=i, field="true_label")
        if not isinstance(truth, str):
            raise DataError(path, f"expected str, found {type(truth).__name__}", index=i, field="true_label")
        if truth not in own:
            raise DataError(path, f"label {truth!r} is not one of the candidates {cands}", index=i, field="true_label")
        image = r.get("image_path")
        if isinstance(image, str):
            if image in first_seen:
                raise DataError(path, f"duplicate image: also record {first_seen[image]} (an item scored twice "
                                      "skews every metric)", index=i, field="image_path")
            first_seen[image] = i
        if is_error(r):  # skipped unread, as in the paper: its response may be absent or anything
            continue
        response = r.get("model_response")
        if "model_response" not in r:
            raise DataError(path, "missing field", index=i, field="model_response")
        if not isinstance(response, str):
            raise DataError(path, f"expected str, found {type(response).__name__}", index=i, field="model_response")
    if all(is_error(r) for r in records):
        raise DataError(path, f"all {len(records)} records are error items (\"error\": true); nothing to score — "
                              f"rerun inference: {infer_command(fer_set, path)}")
    return records


# ---------------------------------------------------------------------------------------------------- metrics


@dataclass
class Predictions:
    """(true, predicted) pairs of the scored items, with the item counts the report prints."""

    truths: list[str] = field(default_factory=list)
    preds: list[str] = field(default_factory=list)
    total: int = 0
    errors: int = 0

    @property
    def counts(self) -> dict:
        return {
            "total": self.total,
            "errors": self.errors,
            "unknown": sum(1 for p in self.preds if p == UNKNOWN),
            "valid": len(self.truths),
        }

    def extend(self, other: "Predictions", label_map: dict[str, str] | None = None) -> None:
        m = label_map or {}
        self.truths += [m.get(t, t) for t in other.truths]
        self.preds += [m.get(p, p) for p in other.preds]
        self.total += other.total
        self.errors += other.errors


def predict(records: list[dict], fer_set: FERSet, protocol: str = "paper") -> Predictions:
    """Extract a label from every non-error record (the paper's loop)."""
    extractor = extractor_for(fer_set.key, protocol)
    out = Predictions(total=len(records))
    for r in records:
        if is_error(r):
            out.errors += 1
            continue
        out.truths.append(r["true_label"])
        out.preds.append(extractor(r["model_response"]))
    return out


def overall_metrics(p: Predictions) -> dict:
    if not p.truths:
        raise UniferError(f"all {p.total} items are error items; there is nothing to score (rerun inference)")
    precision, recall, f1 = macro_prf(p.truths, p.preds)
    return {"accuracy": accuracy(p.truths, p.preds), "precision": precision, "recall": recall, "f1": f1,
            "uar": uar(p.truths, p.preds)}


def build_report(p: Predictions, labels: list[str] | tuple[str, ...], protocol: str) -> dict:
    """The paper's metrics JSON (overall, per_class, confusion_matrix) plus counts, protocol and the label order.
    ``unknown_per_class`` counts, per true label, the predictions outside ``labels`` (the matrix leaves them out)."""
    overall = overall_metrics(p)  # first: it refuses an empty list
    labels = list(labels)
    rows = per_class(p.truths, p.preds, labels)
    in_labels = set(labels)
    outside = {label: 0 for label in labels}
    for t, pr in zip(p.truths, p.preds):
        if pr not in in_labels and t in outside:
            outside[t] += 1
    return {
        "overall": overall,
        "per_class": rows,
        "confusion_matrix": confusion_matrix(p.truths, p.preds, labels).tolist(),
        "labels": labels,
        "ranked_by_f1": [r["emotion"] for r in rank_by_f1(rows)],
        "unknown_per_class": [outside[label] for label in labels],
        "counts": p.counts,
        "protocol": protocol,
    }


def score_set(records: list[dict], fer_set: FERSet, protocol: str = "paper", ci: CIOptions | None = None) -> dict:
    """Metrics of one set's results under ``protocol``; the confusion matrix runs over the set's candidates.
    With ``ci``, the 95% intervals too (``unifer.scoring.intervals``)."""
    p = predict(records, fer_set, protocol)
    report = build_report(p, fer_set.labels, protocol)
    report["set"] = fer_set.key
    if ci is not None:
        add_set_intervals(report, p.truths, p.preds, ci, fer_set.key)
    return report


def pool(per_set: dict[str, Predictions]) -> Predictions:
    """The aggregate's pairs: every set's pairs with angry→anger, happy→happiness, sad→sadness."""
    pooled = Predictions()
    for p in per_set.values():
        pooled.extend(p, TOTAL_LABEL_MAP)
    return pooled


def total_intervals(preds: dict[str, Predictions], ci: CIOptions) -> dict:
    """The sets', pooled and mean-of-sets intervals of one protocol (one bootstrap stratified by set)."""
    return stratified({k: (p.truths, p.preds) for k, p in preds.items() if p.truths}, ci, TOTAL_LABEL_MAP)


def score_total(records_by_set: dict[str, list[dict]], protocol: str = "paper", ci: CIOptions | None = None) -> dict:
    """The aggregate report: pooled metrics over the sorted distinct true labels (the paper's total), the
    unweighted mean of the per-set accuracies, and every set's numbers under both protocols (``table``).
    With ``ci``, every number's 95% interval (``ci95``; the pooled and mean ones stratified by set)."""
    table: list[dict] = []
    per_set: dict[str, Predictions] = {}
    blocks: dict = {}
    for proto in PROTOCOLS:
        preds = {key: predict(recs, get_set(key), proto) for key, recs in records_by_set.items()}
        set_rows = [table_row(get_set(key).name, proto, p.counts, overall_metrics(p)) for key, p in preds.items()]
        pooled = pool(preds)
        rows = set_rows + [table_row(POOLED_ROW, proto, pooled.counts, overall_metrics(pooled)),
                           mean_row(set_rows, proto)]
        if ci is not None:
            b = total_intervals(preds, ci)
            for row, key in zip(rows, [*preds, "pooled", "mean"]):
                row["ci95"] = b["sets"][key] if key in preds else b[key]
            if proto == protocol:
                blocks = b
        table += rows
        if proto == protocol:
            per_set = preds
    pooled = pool(per_set)
    report = build_report(pooled, sorted(set(pooled.truths)), protocol)
    report["set"] = "total"
    report["per_set"] = {key: {"name": get_set(key).name, "counts": p.counts, "overall": overall_metrics(p)}
                         for key, p in per_set.items()}
    report["mean_set_accuracy"] = sum(v["overall"]["accuracy"] for v in report["per_set"].values()) / len(per_set)
    report["mean_of_sets"] = {m: sum(v["overall"][m] for v in report["per_set"].values()) / len(per_set)
                              for m in ("accuracy", "uar", "f1")}
    if ci is not None:
        report["overall"]["ci95"] = blocks["pooled"]
        for key, v in report["per_set"].items():
            v["overall"]["ci95"] = blocks["sets"][key]
        report["mean_of_sets"]["ci95"] = blocks["mean"]
        recall_intervals(report["per_class"], ci)
        report["ci"] = ci.describe()
    report["table"] = table
    return report


# ---------------------------------------------------------------------------------------------------- table rows

POOLED_ROW = "Total (pooled)"
MEAN_ROW = "Mean of sets"
TABLE_COLUMNS = ("set", "protocol", "total", "errors", "unknown", "valid", "accuracy", "precision", "recall", "f1",
                 "uar", "accuracy_lo", "accuracy_hi", "uar_lo", "uar_hi", "f1_lo", "f1_hi")
CI_METRICS = ("accuracy", "uar", "f1")


def table_row(name: str, protocol: str, counts: dict, overall: dict) -> dict:
    return {"set": name, "protocol": protocol, **counts, **overall}


def mean_row(set_rows: list[dict], protocol: str) -> dict:
    """Unweighted mean of the per-set metrics (pooled accuracy is dominated by AffectNet and FERPlus)."""
    row = {"set": MEAN_ROW, "protocol": protocol}
    for c in ("total", "errors", "unknown", "valid"):
        row[c] = sum(r[c] for r in set_rows)
    for m in ("accuracy", "precision", "recall", "f1", "uar"):
        row[m] = sum(r[m] for r in set_rows) / len(set_rows)
    return row


def resolve_default(path: str | os.PathLike | None, default: Path) -> Path:
    """A user path as given (relative to the current directory), else the repository-relative default."""
    return resolve_path(path) if path else default


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (for messages), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------- formatting


def format_report(report: dict, title: str) -> str:
    """The compact console table: counts, the overall line, the confusion matrix, per-class lines."""
    labels, c, o = report["labels"], report["counts"], report["overall"]
    width = max(10, max(len(label) for label in labels) + 1)
    lines = [
        f"{title} · {report['protocol']} protocol",
        f"items {c['total']}  errors {c['errors']}  valid {c['valid']}  unknown {c['unknown']}",
        f"accuracy {o['accuracy']:.4f}  precision {o['precision']:.4f}  recall {o['recall']:.4f}  "
        f"f1 {o['f1']:.4f}  (macro)  uar {o['uar']:.4f}",
        *(["95% intervals (%): " + "  ".join(f"{m} {fmt_ci(o[m], o['ci95'][m])}" for m in CI_METRICS)]
          if o.get("ci95") else []),
        "",
        "confusion matrix (rows true, columns predicted)",
        " " * width + "".join(f"{label[:7]:>8}" for label in labels) + f"{'unknown':>8}",
    ]
    for label, row, unk in zip(labels, report["confusion_matrix"], report["unknown_per_class"]):
        lines.append(f"{label:<{width}}" + "".join(f"{n:>8}" for n in row) + f"{unk:>8}")
    lines += ["", f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for r in report["per_class"]:
        lines.append(f"{r['emotion']:<{width}}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}"
                     f"{r['support']:>9}")
    by_f1 = {r["emotion"]: r["f1"] for r in report["per_class"]}
    lines.append("ranked by F1: " + " > ".join(f"{e} {by_f1[e]:.3f}" for e in report["ranked_by_f1"]))
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The FERBench table, one line per set, both protocols side by side (percentages, as the paper reports)."""
    protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in rows)]
    names = list(dict.fromkeys(r["set"] for r in rows))
    by = {(r["set"], r["protocol"]): r for r in rows}
    head = ["Set", "Items", "Errors"]
    for p in protocols:
        head += [f"Acc ({p})", f"UAR ({p})", f"P ({p})", f"R ({p})", f"F1 ({p})", f"Unknown ({p})"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name in names:
        first = by[(name, protocols[0])]
        cells = [name, str(first["total"]), str(first["errors"])]
        for p in protocols:
            r = by.get((name, p))
            if r is None:
                cells += ["–"] * 6
                continue
            ci = r.get("ci95") or {}
            cells += [fmt_ci(r[m], ci.get(m)) for m in ("accuracy", "uar", "precision", "recall", "f1")]
            cells.append(str(r["unknown"]))
        out.append("| " + " | ".join(cells) + " |")
    if any(r.get("ci95") for r in rows):
        out.append(TABLE_NOTE)
    return "\n".join(out) + "\n"


TABLE_NOTE = ("\nPercent, with 95% intervals in brackets: accuracy Wilson (or Clopper–Pearson), UAR and macro F1 "
              "bootstrap over items; the pooled total and the mean of sets resampled within each set.")


def csv_table(rows: list[dict]) -> str:
    """The same rows as CSV, one line per (set, protocol), fractions at full precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat = dict(r)
        for m, ci in (r.get("ci95") or {}).items():
            flat[f"{m}_lo"], flat[f"{m}_hi"] = ci if ci else ("", "")
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in flat.items()})
    return buf.getvalue()
