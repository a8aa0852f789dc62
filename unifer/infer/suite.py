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
from pathlib import Path

from unifer.data.jsonio import write_json_atomic
from unifer.errors import UniferError
from unifer.data.runmeta import write_meta
from unifer.infer.engines import make_engine
from unifer.infer.progress import ProgressFile, merge_shards, progress_path, results_in_order, shard_indices
from unifer.infer.stream import GroupWriter, Job, stream_answers


def open_engine(plan: dict):
    """The engine a run's plan names (loaded once per process); ``make_engine`` hands it the options it takes."""
    return make_engine(plan["engine"], plan["model"], plan["settings"], **plan["options"])


def answer_sets(args, plans: dict[str, dict]) -> int:
    """Answer every pending item of ``plans`` with one engine; write each set's results (or merge its shards)."""
    if args.merge:
        for key, plan in plans.items():
            merged, message = merge_shards(plan["output"], {**plan["run"], "shard": None}, len(plan["records"]))
            if not merged:
                raise UniferError(f"cannot merge into {plan['output']} yet: {message}")
            write_results_meta(plan, {})
            print(f"{plan['ferset'].name}: {message} -> {plan['output']}")
        return 0
    retry = getattr(args, "retry_errors", False)
    earlier = {}
    for key, plan in plans.items():
        ppath = progress_path(plan["output"], plan["shard"])
        if plan["output"].exists() and not ppath.exists() and not args.overwrite:
            if not retry:
                raise UniferError(f"{plan['output']} already exists; pass --overwrite to answer again, --retry-errors "
                                  "to answer its error items again, or choose another --output")
            earlier[key] = earlier_results(plan["output"], plan["records"],
                                           shard_indices(len(plan["records"]), plan["shard"]))
    started = time.perf_counter()
    with ExitStack() as stack:
        progress, indices, jobs = {}, {}, []
        for key, plan in plans.items():
            ppath = progress_path(plan["output"], plan["shard"])
            progress[key] = stack.enter_context(ProgressFile(
                ppath, plan["run"], overwrite=args.overwrite,
                wait_message=f"another run is writing {ppath}; let it finish or choose another --output"))
            if key in earlier:  # --retry-errors on a finished results file: its answers seed the progress file
                progress[key].append(earlier[key])
            indices[key] = shard_indices(len(plan["records"]), plan["shard"])
            done = progress[key].done
            jobs += [Job(key, i, plan["records"][i], str(plan["image_root"])) for i in indices[key]
                     if i not in done or (retry and done[i].get("error") is True)]
        stats = {"tokens": 0, "seconds": 0.0, "usage": {}}
        stopped = _answer(args, plans, progress, indices, jobs, stats) if jobs else None
        wall = time.perf_counter() - started
        left = {key: sum(1 for i in indices[key] if i not in progress[key].done) for key in plans}
        if stopped and any(left.values()):
            for key, plan in plans.items():
                n = len(indices[key])
                print(f"{plan['ferset'].name}: stopped, {stopped}: {n - left[key]} of {n} items done, {left[key]} left"
                      f"{usage_line(progress[key].done.values())}; every answer is kept in {progress[key].path}: "
                      "rerun the same command to go on")
            return 3
        summaries = {}
        for key, plan in plans.items():
            results = results_in_order(progress[key].done, indices[key])
            errors = sum(1 for r in results if r.get("error") is True)
            summaries[key] = (f"{plan['ferset'].name}: {len(results)} items, {errors} errors", usage_line(results))
            if plan["shard"] is None:
                try:
                    write_json_atomic(plan["output"], results)
                except OSError as e:
                    raise UniferError(f"{e}; every answer is kept in {progress[key].path}: free space and rerun to "
                                      "write the results") from None
                write_results_meta(plan, stats["usage"])
                progress[key].remove()
    n, s = len(jobs), stats["seconds"]
    rate = (f"{n} done now in {s:.1f}s: {n / max(s, 1e-9):.2f} items/s, {stats['tokens'] / max(s, 1e-9):.1f} "
            "tokens/s" if n else "nothing left to do")
    for key, plan in plans.items():
        head, usage = summaries[key]
        summary = head + (f" ({rate}; wall time {wall:.1f}s)" if len(plans) == 1 else "") + usage
        if plan["shard"] is None:
            print(f"{summary} -> {plan['output']}")
            continue
        # This shard is complete and unlocked: merge if every shard is.
        merged, message = merge_shards(plan["output"], {**plan["run"], "shard": None}, len(plan["records"]),
                                       shards=plan["shard"][1])
        if merged:
            write_results_meta(plan, stats["usage"])
        i, k = plan["shard"]
        print(f"{summary}; shard {i}/{k} done, " + (f"{message} -> {plan['output']}" if merged else
              f"not merged yet ({message}); the last shard to finish merges, or rerun with --merge"))
    if len(plans) > 1:
        print(f"{len(plans)} sets, one model load: {rate}; wall time {wall:.1f}s")
    return 0


def _answer(args, plans, progress, indices, jobs, stats) -> str | None:
    """Answer ``jobs`` with one engine, recording answers as they come; the engine's stop reason (a budget spent)
    or None."""
    from tqdm import tqdm

    first = next(iter(plans.values()))
    total = sum(len(v) for v in indices.values())
    done = total - len(jobs)
    names = ", ".join(p["ferset"].name for p in plans.values())
    where = f"resuming: {done} of {total} items already done, " if done else ""
    print(f"{names}: {where}loading {first['model']} ({first['engine']})", file=sys.stderr, flush=True)
    engine = open_engine(first)
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
                for job, result in stream_answers(engine, jobs, first["batch_size"], stats, first["image_size"]):
                    writer.add(job, result)
            finally:
                writer.flush()  # whatever finished is kept, also when the engine fails
            stats["seconds"] = time.perf_counter() - t0
        return getattr(engine, "stop_reason", None)
    finally:
        engine.close()


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


def write_results_meta(plan: dict, usage: dict) -> None:
    """The sidecar beside the results (``unifer.data.runmeta``): what produced them, counted from the file written."""
    import json

    output = plan["output"]
    results = json.loads(output.read_text(encoding="utf-8"))
    meta = {**plan["meta"], "items": len(results), "errors": sum(1 for r in results if r.get("error") is True),
            "shard": None}
    if usage:
        meta["usage_this_process"] = usage  # API token usage of the items answered by this process
    try:
        write_meta(output, meta)
    except OSError as e:
        raise UniferError(f"{e}; the results are written ({output}), only their description is missing: "
                          "free space and rerun") from None
