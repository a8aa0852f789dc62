"""Answering sets: one model load for any number of FERBench sets, every pending item in one stream.

``answer_sets(plans)`` is what both faces run: ``eval_<set>/code/infer_unifer.py`` (one set,
``unifer.infer.runner``) and ``eval_total/code/infer_unifer.py`` / ``unifer ferbench run`` (the four sets, or
``--sets``: ``unifer.infer.allsets``), each handing over frozen ``RunPlan``s. Per set it keeps what a set's run
always had — its progress file with its lock and run header, resume, ``--shard``, error items, the results file
built from the progress file in input order — so the results of one run over four sets are byte-identical to those
of four per-set runs with the same engine, dtype and greedy decoding. Its steps, one function each: merge shards
(``merge_sets``), refuse or reuse finished results (``finished_results``), open the progress files
(``open_set``), list what is pending (``pending_jobs``), answer it (``answer_jobs``), write the results
(``write_results``) and report (``report_stop`` / ``report_done``).
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from unifer.data.jsonio import write_json_atomic
from unifer.data.runmeta import write_meta
from unifer.errors import UniferError
from unifer.infer.engines import make_engine
from unifer.infer.plan import RunPlan
from unifer.infer.progress import ProgressFile, merge_shards, progress_path, results_in_order, shard_indices
from unifer.infer.stream import GroupWriter, Job, stream_answers


def open_engine(plan: RunPlan):
    """The engine a run's plan names (loaded once per process), with the plan's options and decoding."""
    return make_engine(plan.engine, plan.model, plan.settings, plan.options, plan.decoding)


@dataclass
class SetWork:
    """One set's share of a run: its plan, its locked progress file, its items (this shard's)."""

    plan: RunPlan
    progress: ProgressFile
    indices: list[int]

    def left(self) -> int:
        return sum(1 for i in self.indices if i not in self.progress.done)


def answer_sets(plans: dict[str, RunPlan], executor=None) -> int:
    """Answer every pending item of ``plans`` with one engine (or, ``executor`` of kind ray, a pool of replicas on
    Ray: ``unifer.infer.ray_answers``); write each set's results (or merge its shards)."""
    first = next(iter(plans.values()))
    if first.merge:
        return merge_sets(plans)
    earlier = finished_results(plans)
    started = time.perf_counter()
    with ExitStack() as stack:
        work = {key: open_set(stack, plan, earlier.get(key)) for key, plan in plans.items()}
        jobs = pending_jobs(work)
        stats = {"tokens": 0, "seconds": 0.0, "usage": {}, "stopped": None}
        if jobs:
            answer_jobs(work, jobs, stats, executor)
        wall = time.perf_counter() - started
        if stats["stopped"] and any(w.left() for w in work.values()):
            report_stop(work, stats["stopped"])
            return 3
        summaries = {key: write_results(w, stats["usage"]) for key, w in work.items()}
    report_done(plans, summaries, len(jobs), stats, wall)
    return 0


def merge_sets(plans: dict[str, RunPlan]) -> int:
    """``--merge``: each set's finished shard progress files into its results file."""
    for plan in plans.values():
        merged, message = merge_shards(plan.output, {**plan.header(), "shard": None}, len(plan.records))
        if not merged:
            raise UniferError(f"cannot merge into {plan.output} yet: {message}")
        write_results_meta(plan, {})
        print(f"{plan.ferset.name}: {message} -> {plan.output}")
    return 0


def finished_results(plans: dict[str, RunPlan]) -> dict[str, list[tuple[int, dict]]]:
    """Sets whose results file is already written: refused, or (``--retry-errors``) their items to start from."""
    earlier = {}
    for key, plan in plans.items():
        if plan.output.exists() and not progress_path(plan.output, plan.shard).exists() and not plan.overwrite:
            if not plan.retry_errors:
                raise UniferError(f"{plan.output} already exists; pass --overwrite to answer again, --retry-errors "
                                  "to answer its error items again, or choose another --output")
            earlier[key] = earlier_results(plan.output, plan.records, shard_indices(len(plan.records), plan.shard))
    return earlier


def open_set(stack: ExitStack, plan: RunPlan, earlier: list | None) -> SetWork:
    """The set's progress file, locked for the run (seeded with a finished file's items on --retry-errors)."""
    ppath = progress_path(plan.output, plan.shard)
    progress = stack.enter_context(ProgressFile(
        ppath, plan.header(), overwrite=plan.overwrite,
        wait_message=f"another run is writing {ppath}; let it finish or choose another --output"))
    if earlier:
        progress.append(earlier)
    return SetWork(plan, progress, shard_indices(len(plan.records), plan.shard))


def pending_jobs(work: dict[str, SetWork]) -> list[Job]:
    """The items no progress file holds yet (and, on --retry-errors, the error items), set after set."""
    jobs = []
    for key, w in work.items():
        done, retry = w.progress.done, w.plan.retry_errors
        jobs += [Job(key, i, w.plan.records[i], str(w.plan.image_root)) for i in w.indices
                 if i not in done or (retry and done[i].get("error") is True)]
    return jobs


def answer_jobs(work: dict[str, SetWork], jobs: list[Job], stats: dict, executor=None) -> None:
    """Answer ``jobs`` with one engine, recording answers as they come; ``stats["stopped"]`` says why the engine
    stopped early (a budget spent), if it did."""
    from tqdm import tqdm

    first = next(iter(work.values())).plan
    total = sum(len(w.indices) for w in work.values())
    done = total - len(jobs)
    names = ", ".join(w.plan.ferset.name for w in work.values())
    where = f"resuming: {done} of {total} items already done, " if done else ""
    on_ray = executor is not None and executor.kind == "ray"
    print(f"{names}: {where}loading {first.model} ({first.engine}"
          f"{f', {executor.replicas} Ray replicas' if on_ray else ''})", file=sys.stderr, flush=True)
    engine = None if on_ray else open_engine(first)
    try:
        desc = first.ferset.name if len(work) == 1 else "FERBench"
        with tqdm(total=total, initial=done, unit="item", desc=desc, dynamic_ncols=True) as bar:
            t0 = time.perf_counter()

            def shown(_key, n):
                bar.update(n)
                bar.set_postfix_str(f"{stats['tokens'] / max(time.perf_counter() - t0, 1e-9):.1f} tokens/s",
                                    refresh=False)

            writer = GroupWriter({k: w.progress for k, w in work.items()}, group=max(1, first.batch_size),
                                 on_write=shown)
            try:
                if on_ray:
                    from unifer.infer.ray_answers import ray_stream

                    answers = ray_stream(first, jobs, stats, executor)
                else:
                    answers = stream_answers(engine, jobs, first.batch_size, stats, first.image_size)
                for job, result in answers:
                    writer.add(job, result)
            finally:
                writer.flush()  # whatever finished is kept, also when the engine fails
            stats["seconds"] = time.perf_counter() - t0
    finally:
        if engine is not None:
            engine.close()


def report_stop(work: dict[str, SetWork], why: str) -> None:
    for w in work.values():
        n, left = len(w.indices), w.left()
        print(f"{w.plan.ferset.name}: stopped, {why}: {n - left} of {n} items done, {left} left"
              f"{usage_line(w.progress.done.values())}; every answer is kept in {w.progress.path}: "
              "rerun the same command to go on")


def write_results(w: SetWork, usage: dict) -> tuple[str, str]:
    """A finished set's results file (in input order) and its sidecar, the progress file removed; a shard's stay
    in its progress file. Returns the set's summary (head, usage)."""
    plan = w.plan
    results = results_in_order(w.progress.done, w.indices)
    errors = sum(1 for r in results if r.get("error") is True)
    if plan.shard is None:
        try:
            write_json_atomic(plan.output, results)
        except OSError as e:
            raise UniferError(f"{e}; every answer is kept in {w.progress.path}: free space and rerun to "
                              "write the results") from None
        write_results_meta(plan, usage)
        w.progress.remove()
    return f"{plan.ferset.name}: {len(results)} items, {errors} errors", usage_line(results)


def report_done(plans: dict[str, RunPlan], summaries: dict, n: int, stats: dict, wall: float) -> None:
    """Each set's summary line; a finished shard merges when every shard is done."""
    s = stats["seconds"]
    rate = (f"{n} done now in {s:.1f}s: {n / max(s, 1e-9):.2f} items/s, {stats['tokens'] / max(s, 1e-9):.1f} "
            "tokens/s" if n else "nothing left to do")
    for key, plan in plans.items():
        head, usage = summaries[key]
        summary = head + (f" ({rate}; wall time {wall:.1f}s)" if len(plans) == 1 else "") + usage
        if plan.shard is None:
            print(f"{summary} -> {plan.output}")
            continue
        # This shard is complete and unlocked: merge if every shard is.
        merged, message = merge_shards(plan.output, {**plan.header(), "shard": None}, len(plan.records),
                                       shards=plan.shard[1])
        if merged:
            write_results_meta(plan, stats["usage"])
        i, k = plan.shard
        print(f"{summary}; shard {i}/{k} done, " + (f"{message} -> {plan.output}" if merged else
              f"not merged yet ({message}); the last shard to finish merges, or rerun with --merge"))
    if len(plans) > 1:
        print(f"{len(plans)} sets, one model load: {rate}; wall time {wall:.1f}s")


def earlier_results(output: Path, records: list[dict], indices: list[int]) -> list[tuple[int, dict]]:
    """The items of a finished results file, checked against the input item by item (--retry-errors)."""
    from unifer.data.jsonio import read_records

    old = read_records(output)
    if len(old) != len(records):
        raise UniferError(f"{output} holds {len(old)} items, the input {len(records)}: not this input's results; "
                          "pass --overwrite to answer again")
    for i in indices:
        if not isinstance(old[i], dict) or any(old[i].get(k) != v for k, v in records[i].items()):
            raise UniferError(f"{output}: record {i} is not the input's item {i}; pass --overwrite to answer again")
    return [(i, old[i]) for i in indices]


def usage_line(results) -> str:
    """``"; usage: P prompt + C completion tokens"`` over the items whose API reported usage ("" where none did)."""
    reported = [r["usage"] for r in results if isinstance(r.get("usage"), dict)]
    if not reported:
        return ""
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in reported)
    completion = sum(int(u.get("completion_tokens") or 0) for u in reported)
    return f"; usage: {prompt} prompt + {completion} completion tokens over {len(reported)} items"


def write_results_meta(plan: RunPlan, usage: dict) -> None:
    """The sidecar beside the results (``unifer.data.runmeta``): what produced them, counted from the file written."""
    import json

    output = plan.output
    results = json.loads(output.read_text(encoding="utf-8"))
    meta = {**plan.meta(), "items": len(results), "errors": sum(1 for r in results if r.get("error") is True),
            "shard": None}
    if usage:
        meta["usage_this_process"] = usage  # API token usage of the items answered by this process
    try:
        write_meta(output, meta)
    except OSError as e:
        raise UniferError(f"{e}; the results are written ({output}), only their description is missing: "
                          "free space and rerun") from None
