"""Asking the teacher: the plan of a distillation run, the per-item seeds, one batch answered, the local executor.

Every face is one item: its record's prompt, asked ``samples`` times with sampling (``Decoding.n``; the engines
answer ``n`` per request where they can), seeded by ``item_seed(image_path, seed)`` — a stable hash, so a rerun or
another executor (``unifer.distill.ray_exec``) asks exactly the same. An item's result (what the progress file
holds) is ``{"image_path", "label", "samples": [{"text", "tokens", "stop"}]}``, or ``{..., "error": reason}`` when
its image cannot be read or the engine failed it alone. Scoring and selection happen afterwards, from the
progress file (``unifer.distill.select``), so changing ``--keep`` or ``--rlvr-pass-rate`` asks nothing again.
"""
from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from unifer.data.images import ImageLoadError, join_image_path, load_image
from unifer.errors import UniferError
from unifer.infer.engines import GenerationSettings, describe_error, is_engine_failure, make_engine
from unifer.infer.engines.base import Answer, Decoding
from unifer.infer.stream import Job, decode_ahead

#: What a progress file's lines are written under (a run with other values is refused, not mixed in).
HEADER_KEYS = ("records_sha256", "image_root", "image_size", "engine", "model", "base_url", "samples", "temperature",
               "top_p", "max_new_tokens", "seed")


def item_seed(image_path: str, seed: int) -> int:
    """The sampling seed of one face: a stable hash of its image path and the run's base seed (31 bits)."""
    digest = hashlib.sha256(f"{seed}\0{image_path}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class TeacherPlan:
    """Everything an executor (here, or a Ray replica) needs to make the engine and ask: plain values only."""

    engine: str
    model: str
    settings: GenerationSettings
    options: dict
    decoding: Decoding  # n = samples, the temperature; its seed is the base seed of item_seed
    image_root: str
    image_size: int | None
    batch_size: int

    def open(self):
        return make_engine(self.engine, self.model, self.settings, self.options, self.decoding.with_(seed=None))

    def header(self, records_sha256: str) -> dict:
        d = self.decoding
        run = {"records_sha256": records_sha256, "image_root": self.image_root, "image_size": self.image_size,
               "engine": self.engine, "model": self.model, "base_url": self.options.get("base_url"),
               "samples": d.n, "temperature": d.temperature, "top_p": d.top_p, "max_new_tokens": d.max_new_tokens,
               "seed": d.seed}
        return {k: run[k] for k in HEADER_KEYS}

    def as_dict(self) -> dict:
        return asdict(self)


def item_result(record: dict, answers: list[Answer]) -> dict:
    """An item's progress line from its K answers (an error item when any sample failed)."""
    base = {"image_path": record["image_path"], "label": record["true_label"]}
    failed = [a.error for a in answers if a.error is not None]
    if failed:
        return {**base, "error": failed[0]}
    return {**base, "samples": [{"text": a.text, "tokens": a.tokens, "stop": a.stop_reason} for a in answers]}


def error_result(record: dict, reason: str) -> dict:
    return {"image_path": record["image_path"], "label": record["true_label"], "error": reason}


def sample_isolating(engine, decoding: Decoding, images: list, prompts: list[str],
                     seeds: list[int]) -> list[list[Answer]]:
    """``engine.sample`` for a batch; a batch that raises anything but an engine failure is asked again item by
    item, and an item that raises alone gets its reason as an error answer."""
    try:
        out = engine.sample(images, prompts, decoding, seeds=seeds)
    except Exception as e:
        if is_engine_failure(e):
            raise
        if len(prompts) == 1:
            return [[Answer("", 0, error=describe_error(e))]]
        return [sample_isolating(engine, decoding, [i], [p], [s])[0] for i, p, s in zip(images, prompts, seeds)]
    if len(out) != len(prompts) or any(len(a) != decoding.n for a in out):
        raise RuntimeError(f"{engine.name} engine returned {len(out)} answer lists for {len(prompts)} requests")
    return out


def answer_items(engine, plan: TeacherPlan, items: list[tuple[int, dict, object]]) -> list[tuple[int, dict | None]]:
    """Ask one batch: ``items`` are (index, record, image); (index, result) back, result None for an item not
    sent (a budget spent: it stays pending)."""
    if not items:
        return []
    seeds = [item_seed(r["image_path"], plan.decoding.seed or 0) for _, r, _ in items]
    answers = sample_isolating(engine, plan.decoding.with_(seed=None), [img for _, _, img in items],
                               [r["prompt"] for _, r, _ in items], seeds)
    out = []
    for (i, record, _), a in zip(items, answers):
        out.append((i, None if any(not x.sent for x in a) else item_result(record, a)))
    return out


def load_item_image(plan: TeacherPlan, record: dict):
    """(image, None) or (None, reason): what a Ray replica does per item (the local executor decodes ahead)."""
    try:
        return load_image(join_image_path(plan.image_root, record["image_path"]), plan.image_size), None
    except ImageLoadError as e:
        return None, str(e)


Sink = Callable[[list[tuple[int, dict]]], None]


def run_local(plan: TeacherPlan, records: list[dict], pending: list[int], sink: Sink) -> str | None:
    """The local executor: one engine in this process, images decoded ahead, ``batch_size`` items per call.
    Finished items go to ``sink`` batch by batch; returns why it stopped early (a spent budget), or None."""
    jobs = [Job("distill", i, records[i], plan.image_root) for i in pending]
    print(f"distill: loading {plan.model} ({plan.engine})", file=sys.stderr, flush=True)
    engine = plan.open()
    try:
        batch: list[tuple[int, dict, object]] = []

        def flush() -> str | None:
            done = answer_items(engine, plan, batch)
            batch.clear()
            sink([(i, r) for i, r in done if r is not None])
            if any(r is None for _, r in done):
                return getattr(engine, "budget_spent", None) or "a request budget is spent"
            return None

        for job, image, reason in decode_ahead(jobs, plan.image_size):
            if reason is not None:
                sink([(job.index, error_result(job.record, reason))])
                continue
            batch.append((job.index, job.record, image))
            if len(batch) >= plan.batch_size and (why := flush()):
                return why
        if batch:
            return flush()
        return None
    finally:
        engine.close()


class Meter:
    """The progress bar: items, samples/s, the share of samples accepted so far (a tqdm bar on stderr)."""

    def __init__(self, total: int, initial: int, samples: int, accepted: Callable[[dict], int], desc="distill"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="face", desc=desc, dynamic_ncols=True, file=sys.stderr)
        self.samples, self.accepted = samples, accepted
        self.t0, self.n, self.kept = time.perf_counter(), 0, 0

    def update(self, results: list[dict]) -> None:
        self.n += len(results)
        self.kept += sum(self.accepted(r) for r in results)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(len(results))
        self.bar.set_postfix_str(f"{self.n * self.samples / dt:.1f} samples/s, {self.kept} accepted", refresh=False)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def close(self) -> None:
        self.bar.close()


def check_samples(samples: int, temperature: float) -> None:
    if samples < 1:
        raise UniferError(f"--samples must be at least 1, got {samples}")
    if samples > 1 and temperature == 0:
        raise UniferError(f"--samples {samples} with --temperature 0 asks the same greedy answer {samples} times; "
                          "give a temperature above 0 (e.g. 1.0)")
