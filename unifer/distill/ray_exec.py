"""The Ray executor of ``unifer distill``: the pending faces through a pool of engine replicas on Ray Data
(``unifer.infer.ray_pool``: why this repository's engines and not ``ray.data.llm``, restarts, rounds), the results
recorded by this process in the same progress file as the local executor. Faces are seeded as there
(``unifer.distill.work.item_seed``), so both write the same samples where the engine honours a seed."""
from __future__ import annotations

import json

from unifer.distill.work import Sink, TeacherPlan, answer_items, error_result, load_item_image
from unifer.infer.engines import GenerationSettings
from unifer.infer.engines.base import Decoding
from unifer.infer.ray_pool import Executor, ray_map


def plan_from_dict(d: dict) -> TeacherPlan:
    settings = GenerationSettings(**{**d["settings"], "eos_token_ids": tuple(d["settings"]["eos_token_ids"])})
    return TeacherPlan(**{**d, "settings": settings, "decoding": Decoding(**d["decoding"])})


class Replica:
    """One engine replica (a Ray actor): made once, then asked batch after batch."""

    def __init__(self, plan: dict):
        self.plan = plan_from_dict(plan)
        self.engine = self.plan.open()

    def __call__(self, batch: dict) -> dict:
        indices = [int(i) for i in batch["id"]]
        records = [json.loads(r) for r in batch["record"]]
        results: dict[int, dict | None] = {}
        items = []
        for i, record in zip(indices, records):
            image, reason = load_item_image(self.plan, record)
            if reason is not None:
                results[i] = error_result(record, reason)
            else:
                items.append((i, record, image))
        for start in range(0, len(items), self.plan.batch_size):
            results.update(answer_items(self.engine, self.plan, items[start:start + self.plan.batch_size]))
        why = getattr(self.engine, "budget_spent", None) or "a request budget is spent"
        return {"id": indices, "result": [json.dumps(results[i]) if results[i] is not None else "" for i in indices],
                "unsent": [why if results[i] is None else "" for i in indices]}


def run_ray(plan: TeacherPlan, records: list[dict], pending: list[int], sink: Sink, executor: Executor) -> str | None:
    """Answer ``pending`` on Ray Data; finished faces go to ``sink`` as they stream back. Returns why the run
    stopped early (a spent budget), or None."""
    rows = [{"id": i, "record": json.dumps(records[i], ensure_ascii=False)} for i in pending]
    stopped = None
    for batch in ray_map(rows, Replica, {"plan": plan.as_dict()}, executor, plan.batch_size):
        stopped = stopped or next((str(r["unsent"]) for r in batch if r["unsent"]), None)
        sink([(int(r["id"]), json.loads(r["result"])) for r in batch if not r["unsent"]])
    return stopped
