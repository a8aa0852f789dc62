"""Streams, not barriers: every pending item goes to the engine as one stream; each answer comes back as it finishes.

An item is a ``Job`` (which set, which record, which image). ``stream_answers`` decodes the images ahead in a thread
(Pillow releases the GIL), turns an unreadable image into an error item at once, and hands the rest to the engine:

- a ``StreamingEngine`` (vLLM) gets a window of requests far larger than one batch and answers them in its own
  continuous batching, returning each request as it finishes — a long answer no longer holds back the rest of its
  batch;
- any other engine (hf, openai, fake) gets ``generate`` calls of ``batch_size`` items; an engine that
  ``prefers_length_sorted`` (hf) gets them sorted by prompt length, so a batch pads little (answers do not depend
  on the batch: see ``unifer.infer.engines``).

An answer the engine did not send (``Answer.unsent``: a budget spent) leaves its item pending and ends the stream;
``stats["stopped"]`` says why.

Results come back as ``(job, result_record)``; the caller records them (progress files) in small groups.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from unifer.data.images import IMAGE_SIZE, ImageLoadError, join_image_path, load_image
from unifer.errors import UniferError
from unifer.infer.engines import Answer, StreamingEngine, describe_error, is_engine_failure

#: Requests a streaming engine holds at once: enough to keep its scheduler full, few enough to bound memory.
STREAM_WINDOW = 512
_DECODE_AHEAD = 64  # images decoded ahead of the engine
#: The first items that all fail on their own in the engine, with no answer yet, stop the run (a broken model
#: or engine, not broken items).
ALL_FAILED_STOP = 16


@dataclass(frozen=True)
class Job:
    key: str  # the set
    index: int  # the record's position in its QA file
    record: dict
    image_root: str

    def error_result(self, reason: str) -> dict:
        return {**self.record, "model_response": f"ERROR: {reason}", "error": True}

    def answered(self, answer) -> dict:
        if answer.error is not None:  # this item alone failed: an error item, the run goes on
            return self.error_result(answer.error)
        result = {**self.record, "model_response": answer.text}
        if answer.usage is not None:  # what an API reported, per item
            result["usage"] = answer.usage
        return result


def order_for(engine, jobs: list[Job]) -> list[Job]:
    """Shortest prompts first for an engine that ``prefers_length_sorted`` (stable, so one set keeps its order);
    as given for the others."""
    if getattr(engine, "prefers_length_sorted", False):
        return sorted(jobs, key=lambda j: len(j.record["prompt"]))
    return jobs


def decode_ahead(jobs: Iterable[Job], image_size: int | None = IMAGE_SIZE) -> Iterator[tuple[Job, object, str | None]]:
    """(job, image, None) or (job, None, reason), in order, decoding ahead in one thread."""

    def decode(job: Job):
        try:
            path = join_image_path(job.image_root, job.record["image_path"])
            return job, load_image(path, image_size), None  # image_size None: as decoded (--image-size native)
        except ImageLoadError as e:
            return job, None, str(e)

    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = []
        for job in jobs:
            ahead.append(pool.submit(decode, job))
            if len(ahead) > _DECODE_AHEAD:
                yield ahead.pop(0).result()
        for fut in ahead:
            yield fut.result()


def _engine_failure(engine, e: BaseException, batch_size: int) -> BaseException:
    if type(e).__name__ == "OutOfMemoryError":
        return UniferError(f"{engine.name} engine ran out of memory at batch size {batch_size}; finished items are "
                           "saved: rerun with a smaller --batch-size to resume")
    e.add_note("finished items are saved in the progress files; rerun to resume")
    return e


def generate_isolating(engine, images: list, prompts: list[str]) -> tuple[list[Answer], list[int]]:
    """``engine.generate``, with an item's own failure kept to that item: a batch that raises anything but an
    engine failure is answered again one item at a time, and an item that raises alone gets its reason as an
    ``Answer.error``. Returns (answers, positions of the items that raised). (In float32 the other items' answers
    do not depend on the batch; in bfloat16 they may round differently alone.)"""
    try:
        answers = engine.generate(images, prompts)
    except Exception as e:
        if is_engine_failure(e):
            raise
        if len(prompts) == 1:
            return [Answer("", 0, error=describe_error(e))], [0]
        print(f"a batch of {len(prompts)} failed ({describe_error(e, 160)}); answering its items one at a time",
              file=sys.stderr, flush=True)
        answers, raised = [], []
        for n, (img, p) in enumerate(zip(images, prompts)):
            (answer,), alone = generate_isolating(engine, [img], [p])
            answers.append(answer)
            raised += [n] if alone else []
        return answers, raised
    if len(answers) != len(prompts):
        raise RuntimeError(f"{engine.name} engine returned {len(answers)} answers for {len(prompts)} requests")
    return answers, []


def _count(stats: dict, answer) -> None:
    """Tokens, answered items, API usage and the reasons of items that failed on their own, into ``stats``."""
    stats["tokens"] += answer.tokens
    if answer.error is None:
        stats["answered"] += 1
    else:
        stats["failed_alone"].append(answer.error)
    for k, v in (answer.usage or {}).items():
        if isinstance(v, (int, float)):
            stats["usage"][k] = stats["usage"].get(k, 0) + v
    if stats["answered"] == 0 and len(stats["failed_alone"]) >= ALL_FAILED_STOP:
        raise UniferError(f"the first {len(stats['failed_alone'])} items all failed in the {stats['engine']} engine (first: "
                          f"{stats['failed_alone'][0]}); that is the model or the engine, not the items: stopping")


def stream_answers(engine, jobs: list[Job], batch_size: int, stats: dict | None = None,
                   image_size: int | None = IMAGE_SIZE) -> Iterator[tuple[Job, dict]]:
    """Answer every job; yield ``(job, result record)`` as each finishes (error items included).
    ``stats`` (if given) accumulates ``tokens``, ``usage`` (API token counts) and ``answered``."""
    stats = stats if stats is not None else {}
    for k, v in (("tokens", 0), ("answered", 0), ("failed_alone", []), ("usage", {}), ("stopped", None)):
        stats.setdefault(k, v)
    stats["engine"] = getattr(engine, "name", "the")
    decoded = decode_ahead(order_for(engine, jobs), image_size)
    if isinstance(engine, StreamingEngine):
        yield from _streamed(engine, decoded, stats, batch_size)
        return
    batch: list[tuple[Job, object]] = []

    def flush():
        try:
            answers, _ = generate_isolating(engine, [img for _, img in batch], [job.record["prompt"] for job, _ in batch])
        except Exception as e:
            raise _engine_failure(engine, e, batch_size) from None
        out = []
        for (job, _), answer in zip(batch, answers):
            if not answer.sent:  # not sent (a budget spent): the item stays pending, the stream ends
                stats["stopped"] = stats["stopped"] or answer.unsent_reason
                continue
            _count(stats, answer)
            out.append((job, job.answered(answer)))
        batch.clear()
        return out

    for job, image, reason in decoded:
        if reason is not None:
            yield job, job.error_result(reason)
            continue
        batch.append((job, image))
        if len(batch) >= batch_size:
            yield from flush()
            if stats["stopped"]:  # a budget is spent: stop cleanly, everything kept
                return
    if batch:
        yield from flush()


def _streamed(engine, decoded, stats: dict, batch_size: int) -> Iterator[tuple[Job, dict]]:
    errors: list[tuple[Job, dict]] = []

    def requests():
        for job, image, reason in decoded:
            if reason is not None:
                errors.append((job, job.error_result(reason)))
                continue
            yield job, image, job.record["prompt"]

    try:
        for job, answer in engine.stream(requests(), window=STREAM_WINDOW):
            while errors:
                yield errors.pop(0)
            if not answer.sent:
                stats["stopped"] = stats["stopped"] or answer.unsent_reason
                continue
            _count(stats, answer)
            yield job, job.answered(answer)
    except UniferError:
        raise
    except Exception as e:
        raise _engine_failure(engine, e, batch_size) from None
    while errors:
        yield errors.pop(0)


class GroupWriter:
    """Collects finished results per set and appends them to that set's progress file in small groups (every
    ``group`` items or ``seconds``), so a kill loses at most a group's worth of answers' bookkeeping."""

    def __init__(self, progress: dict, group: int = 16, seconds: float = 5.0, on_write=None):
        self.progress, self.group, self.seconds, self.on_write = progress, group, seconds, on_write
        self.pending: dict[str, list[tuple[int, dict]]] = {k: [] for k in progress}
        self.last = time.monotonic()

    def add(self, job: Job, result: dict) -> None:
        self.pending[job.key].append((job.index, result))
        if len(self.pending[job.key]) >= self.group or time.monotonic() - self.last > self.seconds:
            self.flush()

    def flush(self) -> None:
        for key, items in self.pending.items():
            if items:
                self.progress[key].append(sorted(items))
                if self.on_write:
                    self.on_write(key, len(items))
                items.clear()
        self.last = time.monotonic()
