"""``unifer ferbench run --executor ray``: the pending items of every set through a pool of engine replicas on Ray
Data (``unifer.infer.ray_pool``), each answer recorded by this process in its set's progress file as it streams
back — the same results files, resume and shards as the local stream (``unifer.infer.stream``)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict

from unifer.data.images import ImageLoadError, join_image_path, load_image
from unifer.infer.engines import GenerationSettings, make_engine
from unifer.infer.engines.base import Decoding
from unifer.infer.ray_pool import Executor, ray_map
from unifer.infer.stream import Job, generate_isolating


class InferReplica:
    """One engine replica (a Ray actor): the plan's engine, made once; each batch decoded and answered."""

    def __init__(self, engine: str, model: str, settings: dict, options: dict, decoding: dict,
                 image_size: int | None):
        settings = GenerationSettings(**{**settings, "eos_token_ids": tuple(settings["eos_token_ids"])})
        self.engine = make_engine(engine, model, settings, options, Decoding(**decoding))
        self.image_size = image_size

    def __call__(self, batch: dict) -> dict:
        jobs = [Job(str(k), int(i), json.loads(r), str(root)) for k, i, r, root in
                zip(batch["key"], batch["index"], batch["record"], batch["image_root"])]
        results: list[dict | None] = [None] * len(jobs)
        tokens = [0] * len(jobs)
        unsent = [""] * len(jobs)
        todo = []
        for n, job in enumerate(jobs):
            try:
                image = load_image(join_image_path(job.image_root, job.record["image_path"]), self.image_size)
                todo.append((n, image))
            except ImageLoadError as e:
                results[n] = job.error_result(str(e))
        if todo:
            answers, _ = generate_isolating(self.engine, [img for _, img in todo],
                                            [jobs[n].record["prompt"] for n, _ in todo])
            for (n, _), answer in zip(todo, answers):
                if not answer.sent:
                    unsent[n] = answer.unsent_reason or "a request budget is spent"
                else:
                    results[n], tokens[n] = jobs[n].answered(answer), answer.tokens
        return {"id": list(batch["id"]), "result": [json.dumps(r) if r is not None else "" for r in results],
                "tokens": tokens, "unsent": unsent}


def ray_stream(plan, jobs: list[Job], stats: dict, executor: Executor) -> Iterator[tuple[Job, dict]]:
    """Answer ``jobs`` on Ray Data with ``plan``'s engine; yield (job, result) as each comes back. ``stats``
    gains tokens and ``stopped`` (a spent budget) as the local stream's do."""
    by_id = {f"{j.key}/{j.index}": j for j in jobs}
    rows = [{"id": rid, "key": j.key, "index": j.index, "record": json.dumps(j.record, ensure_ascii=False),
             "image_root": j.image_root} for rid, j in by_id.items()]
    kwargs = {"engine": plan.engine, "model": str(plan.model), "settings": asdict(plan.settings),
              "options": dict(plan.options), "decoding": asdict(plan.decoding), "image_size": plan.image_size}
    for batch in ray_map(rows, InferReplica, kwargs, executor, plan.batch_size):
        for row in batch:
            if row["unsent"]:
                stats["stopped"] = stats.get("stopped") or str(row["unsent"])
                continue
            stats["tokens"] = stats.get("tokens", 0) + int(row["tokens"])
            yield by_id[str(row["id"])], json.loads(row["result"])
