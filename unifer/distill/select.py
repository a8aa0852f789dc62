"""From the teacher's samples to training data: score with the paper's rewards, keep, select, count, draw.

- Every sample is scored with the accuracy and format rewards GRPO trains with (``unifer.rewards``: ``paper`` →
  ``accuracy`` + ``format``; ``strict`` → ``accuracy_strict`` + ``format_strict``) against the face's solution
  ``<answer>LABEL</answer>``. A sample is *accepted* when both pay 1.
- ``cot.json``: per face, up to ``keep`` accepted samples, deduplicated (same text after stripping), the shortest or
  the first ones (``pick``), as UniFER-CoT records ``{image_path, question, response}``.
- ``rlvr.json``: per face, ``{image_path, problem, solution, pass_rate}`` where ``pass_rate`` is the share of its K
  samples the accuracy reward paid; only faces whose pass rate lies in ``[lo, hi]``.
- ``balance``: each output capped per class at its rarest class's count (faces chosen by their stable seed order,
  then written in input order).
- ``stats.json`` and ``distill.png``: pass-rate histogram per class, faces kept per class, class shares before and
  after.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from unifer.errors import UniferError
from unifer.rewards import accuracy_reward, accuracy_strict_reward, format_reward, format_strict_reward

REWARDS = {"paper": (accuracy_reward, format_reward), "strict": (accuracy_strict_reward, format_strict_reward)}
PICKS = ("shortest", "first")


@dataclass(frozen=True)
class Selection:
    keep: int = 1
    pick: str = "shortest"
    pass_rate: tuple[float, float] = (0.0, 1.0)
    balance: bool = False
    reward: str = "paper"


def parse_pass_rate(text: str | None) -> tuple[float, float]:
    """``"0.1,0.9"`` → (0.1, 0.9), both in [0, 1], lo <= hi."""
    if text is None:
        return 0.0, 1.0
    try:
        lo, hi = (float(x) for x in str(text).split(","))
    except ValueError:
        raise UniferError(f"--rlvr-pass-rate must look like LO,HI (e.g. 0.1,0.9), got {text!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise UniferError(f"--rlvr-pass-rate {text}: need 0 <= LO <= HI <= 1")
    return lo, hi


def solution_of(label: str) -> str:
    return f"<answer>{label}</answer>"


def score(result: dict, reward: str = "paper") -> tuple[list[float], list[float]]:
    """(accuracy, format) per sample of an answered item."""
    acc_fn, fmt_fn = REWARDS[reward]
    texts = [s["text"] for s in result["samples"]]
    return acc_fn(texts, [solution_of(result["label"])] * len(texts)), fmt_fn(texts)


def accepted_texts(result: dict, reward: str = "paper") -> list[str]:
    """The samples both rewards pay, in sample order."""
    if result.get("error") is not None:
        return []
    acc, fmt = score(result, reward)
    return [s["text"] for s, a, f in zip(result["samples"], acc, fmt) if a == 1.0 and f == 1.0]


def pass_rate(result: dict, reward: str = "paper") -> float:
    acc, _ = score(result, reward)
    return sum(acc) / len(acc)


def chosen_responses(texts: list[str], keep: int, pick: str) -> list[str]:
    """Deduplicated (stripped text), then the ``keep`` shortest (stable) or first."""
    seen, unique = set(), []
    for t in texts:
        if t.strip() not in seen:
            seen.add(t.strip())
            unique.append(t)
    if pick == "shortest":
        unique = sorted(unique, key=len)
    return unique[:keep]


def _balanced(indices: list[int], label_of, order_key) -> list[int]:
    """At most the rarest class's count per class; which faces: the first by ``order_key`` (a stable hash)."""
    by_class = defaultdict(list)
    for i in indices:
        by_class[label_of(i)].append(i)
    if not by_class:
        return []
    cap = min(len(v) for v in by_class.values())
    kept = {i for v in by_class.values() for i in sorted(v, key=order_key)[:cap]}
    return [i for i in indices if i in kept]


def select(records: list[dict], done: dict[int, dict], sel: Selection, order_key) -> dict:
    """The outputs and their counts from every finished item (``done``: index → progress result)."""
    answered = [i for i in sorted(done) if done[i].get("error") is None]
    label = {i: records[i]["true_label"] for i in range(len(records))}
    accepted = {i: accepted_texts(done[i], sel.reward) for i in answered}
    rates = {i: pass_rate(done[i], sel.reward) for i in answered}
    cot_faces = [i for i in answered if accepted[i]]
    rlvr_faces = [i for i in answered if sel.pass_rate[0] <= rates[i] <= sel.pass_rate[1]]
    cot_before, rlvr_before = list(cot_faces), list(rlvr_faces)
    if sel.balance:
        cot_faces = _balanced(cot_faces, label.get, order_key)
        rlvr_faces = _balanced(rlvr_faces, label.get, order_key)
    cot = [{"image_path": records[i]["image_path"], "question": records[i]["prompt"], "response": t}
           for i in cot_faces for t in chosen_responses(accepted[i], sel.keep, sel.pick)]
    rlvr = [{"image_path": records[i]["image_path"], "problem": records[i]["prompt"],
             "solution": solution_of(label[i]), "pass_rate": round(rates[i], 6)} for i in rlvr_faces]
    stats = _stats(records, done, answered, accepted, rates, label, sel,
                   {"cot_before": cot_before, "cot": cot_faces, "rlvr_before": rlvr_before, "rlvr": rlvr_faces})
    stats["cot_records"] = len(cot)
    return {"cot": cot, "rlvr": rlvr, "stats": stats}


def _stats(records, done, answered, accepted, rates, label, sel: Selection, kept: dict) -> dict:
    k = len(done[answered[0]]["samples"]) if answered else 0
    classes = list(dict.fromkeys(r["true_label"] for r in records))
    samples = sum(len(done[i]["samples"]) for i in answered)
    n_accepted = sum(len(accepted[i]) for i in answered)
    per_class = {}
    for c in classes:
        faces = [i for i in range(len(records)) if label[i] == c]
        mine = [i for i in answered if label[i] == c]
        hist = Counter(round(rates[i] * k) for i in mine)
        per_class[c] = {
            "faces": len(faces), "answered": len(mine), "errors": sum(1 for i in faces if i in done and i not in rates),
            "pass_rate_histogram": [hist.get(j, 0) for j in range(k + 1)],  # faces with j of K samples right
            "mean_pass_rate": round(sum(rates[i] for i in mine) / len(mine), 6) if mine else None,
            **{f"{name}_faces": sum(1 for i in v if label[i] == c) for name, v in kept.items()}}
    return {
        "faces": len(records), "answered": len(answered), "errors": len(done) - len(answered), "samples_per_face": k,
        "samples": samples, "accepted_samples": n_accepted,
        "accept_rate": round(n_accepted / samples, 6) if samples else None,
        "selection": {"keep": sel.keep, "pick": sel.pick, "rlvr_pass_rate": list(sel.pass_rate),
                      "balance": sel.balance, "reward": sel.reward},
        "cot_faces": len(kept["cot"]), "rlvr_records": len(kept["rlvr"]),
        "error_items": [{"image_path": done[i]["image_path"], "error": done[i]["error"]}
                        for i in sorted(done) if done[i].get("error") is not None][:100],
        "per_class": per_class}


def draw(stats: dict, out: Path) -> Path:
    """Three panels: pass-rate histogram per class, faces kept per class, class shares before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = stats["per_class"]
    classes = list(per)
    k = stats["samples_per_face"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    width = 0.8 / max(len(classes), 1)
    for n, c in enumerate(classes):
        hist = per[c]["pass_rate_histogram"]
        ax.bar([j + n * width for j in range(len(hist))], hist, width, label=c)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(k + 1)], [f"{j}/{k}" for j in range(k + 1)])
    ax.set_xlabel("pass rate (samples the accuracy reward paid)")
    ax.set_ylabel("faces")
    ax.set_title("pass rate per class")
    ax.legend(fontsize=7)
    ax = axes[1]
    x = range(len(classes))
    for off, key, name in ((-0.3, "faces", "input"), (-0.1, "cot_faces", "CoT kept"), (0.1, "rlvr_faces", "RLVR kept")):
        ax.bar([i + off for i in x], [per[c][key] for c in classes], 0.2, label=name)
    ax.set_xticks(list(x), classes, rotation=30, ha="right")
    ax.set_ylabel("faces")
    ax.set_title("faces kept per class")
    ax.legend(fontsize=7)
    ax = axes[2]
    cols = [("faces", "input"), ("cot_before_faces", "CoT before"), ("cot_faces", "CoT after"),
            ("rlvr_before_faces", "RLVR before"), ("rlvr_faces", "RLVR after")]
    bottom = [0.0] * len(cols)
    for c in classes:
        shares = []
        for key, _ in cols:
            total = sum(per[d][key] for d in classes)
            shares.append(per[c][key] / total if total else 0.0)
        ax.bar(range(len(cols)), shares, 0.6, bottom=bottom, label=c)
        bottom = [b + s for b, s in zip(bottom, shares)]
    ax.set_xticks(range(len(cols)), [name for _, name in cols], rotation=30, ha="right")
    ax.set_ylabel("share of faces")
    ax.set_title("class balance" + (" (--balance)" if stats["selection"]["balance"] else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
