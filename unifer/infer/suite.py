"""Answering sets: one model load for any number of FERBench sets, every pending item in one stream.

``answer_sets`` is what both faces run: ``eval_<set>/code/infer_unifer.py`` (one set, ``unifer.infer.runner``) and
``eval_total/code/infer_unifer.py`` / ``unifer ferbench run`` (the four sets, or ``--sets``: ``unifer.infer.allsets``). Per set it keeps what a
set's run always had — its progress file with its lock and run header, resume, ``--shard``, error items, the
results file built from the progress file in input order — so the results of one run over four sets are
byte-identical to those of four per-set runs with the same engine, dtype and greedy decoding.
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack

from unifer.data.jsonio import write_json_atomic
from unifer.errors import UniferError
from unifer.infer.engines import generation_settings, make_engine
from unifer.infer.progress import ProgressFile, merge_shards, progress_path, results_in_order, shard_indices
from unifer.infer.stream import GroupWriter, Job, stream_answers


def open_engine(args, plan: dict):
    """The engine a run's flags ask for (loaded once per process)."""
    return make_engine(args.engine, plan["model"], generation_settings(plan["model"], args.max_new_tokens),
                       dtype=args.dtype, attn=args.attn_implementation,
                       tensor_parallel_size=args.tensor_parallel_size,
                       gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len)


def answer_sets(args, plans: dict[str, dict]) -> int:
    """Answer every pending item of ``plans`` with one engine; write each set's results (or merge its shards)."""
    if args.merge:
        for key, plan in plans.items():
            merged, message = merge_shards(plan["output"], {**plan["run"], "shard": None}, len(plan["records"]))
            if not merged:
                raise UniferError(f"cannot merge into {plan['output']} yet: {message}")
            print(f"{plan['ferset'].name}: {message} -> {plan['output']}")
        return 0
    for plan in plans.values():
        ppath = progress_path(plan["output"], plan["shard"])
        if plan["output"].exists() and not ppath.exists() and not args.overwrite:
            raise UniferError(f"{plan['output']} already exists; pass --overwrite to answer again, or choose another "
                              "--output")
    started = time.perf_counter()
    with ExitStack() as stack:
        progress, indices, jobs = {}, {}, []
        for key, plan in plans.items():
            ppath = progress_path(plan["output"], plan["shard"])
            progress[key] = stack.enter_context(ProgressFile(
                ppath, plan["run"], overwrite=args.overwrite,
                wait_message=f"another run is writing {ppath}; let it finish or choose another --output"))
            indices[key] = shard_indices(len(plan["records"]), plan["shard"])
            jobs += [Job(key, i, plan["records"][i], str(plan["image_root"]))
                     for i in indices[key] if i not in progress[key].done]
        stats = {"tokens": 0, "seconds": 0.0}
        if jobs:
            _answer(args, plans, progress, indices, jobs, stats)
        wall = time.perf_counter() - started
        summaries = {}
        for key, plan in plans.items():
            results = results_in_order(progress[key].done, indices[key])
            errors = sum(1 for r in results if r.get("error") is True)
            summaries[key] = f"{plan['ferset'].name}: {len(results)} items, {errors} errors"
            if plan["shard"] is None:
                try:
                    write_json_atomic(plan["output"], results)
                except OSError as e:
                    raise UniferError(f"{e}; every answer is kept in {progress[key].path}: free space and rerun to "
                                      "write the results") from None
                progress[key].remove()
    n, s = len(jobs), stats["seconds"]
    rate = (f"{n} done now in {s:.1f}s: {n / max(s, 1e-9):.2f} items/s, {stats['tokens'] / max(s, 1e-9):.1f} "
            "tokens/s" if n else "nothing left to do")
    for key, plan in plans.items():
        tail = f" ({rate}; wall time {wall:.1f}s)" if len(plans) == 1 else ""
        if plan["shard"] is None:
            print(f"{summaries[key]}{tail} -> {plan['output']}")
            continue
        # This shard is complete and unlocked: merge if every shard is.
        merged, message = merge_shards(plan["output"], {**plan["run"], "shard": None}, len(plan["records"]),
                                       shards=plan["shard"][1])
        i, k = plan["shard"]
        print(f"{summaries[key]}{tail}; shard {i}/{k} done, " + (f"{message} -> {plan['output']}" if merged else
              f"not merged yet ({message}); the last shard to finish merges, or rerun with --merge"))
    if len(plans) > 1:
        print(f"{len(plans)} sets, one model load: {rate}; wall time {wall:.1f}s")
    return 0


def _answer(args, plans, progress, indices, jobs, stats) -> None:
    from tqdm import tqdm

    first = next(iter(plans.values()))
    total = sum(len(v) for v in indices.values())
    done = total - len(jobs)
    names = ", ".join(p["ferset"].name for p in plans.values())
    where = f"resuming: {done} of {total} items already done, " if done else ""
    print(f"{names}: {where}loading {first['model']} ({args.engine})", file=sys.stderr, flush=True)
    engine = open_engine(args, first)
    try:
        desc = first["ferset"].name if len(plans) == 1 else "FERBench"
        with tqdm(total=total, initial=done, unit="item", desc=desc, dynamic_ncols=True) as bar:
            t0 = time.perf_counter()

            def shown(_key, n):
                bar.update(n)
                bar.set_postfix_str(f"{stats['tokens'] / max(time.perf_counter() - t0, 1e-9):.1f} tokens/s",
                                    refresh=False)

            writer = GroupWriter(progress, group=max(1, first["batch_size"]), on_write=shown)
            try:
                for job, result in stream_answers(engine, jobs, first["batch_size"], stats):
                    writer.add(job, result)
            finally:
                writer.flush()  # whatever finished is kept, also when the engine fails
            stats["seconds"] = time.perf_counter() - t0
    finally:
        engine.close()
