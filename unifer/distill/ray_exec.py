"""The Ray executor: the pending faces as a Ray Data dataset, a pool of engine replicas as actors, the results
streamed back to this process, which records them in the same progress file as the local executor.

``ray.data.llm``'s vLLM processor is not used: it builds its own vLLM engine from a CUDA vLLM wheel and its own
chat templating, while this repository's engines (``unifer.infer.engines``: hf, vllm, openai, fake) carry the
paper's request (one user turn, image then prompt, the checkpoint's template and generation_config) and the
per-face seeds; so each replica is one of these engines inside a Ray Data actor pool (``map_batches`` with a
callable class, ``concurrency=replicas``, ``num_gpus=gpus_per_replica``; vLLM's tensor parallel size inside a
replica is the engine's ``--tensor-parallel-size``).

Nothing is lost when a replica dies: Ray Data restarts the actor and retries its batch (actor pools default to
unlimited restarts and task retries), and whatever still is not back when the dataset ends is asked again, up to
``ROUNDS`` times. Faces are seeded as on the local executor (``unifer.distill.work.item_seed``), so both write the
same samples where the engine honours a seed. A request budget (``--max-requests``) is per replica.
"""
from __future__ import annotations

import json
import sys

from unifer.errors import UniferError
from unifer.infer.engines import GenerationSettings
from unifer.infer.engines.base import Decoding
from unifer.distill.work import Sink, TeacherPlan, answer_items, error_result, load_item_image

ROUNDS = 3  # datasets run over what is still pending before the run gives up (a replica that keeps dying)


def plan_from_dict(d: dict) -> TeacherPlan:
    settings = GenerationSettings(**{**d["settings"], "eos_token_ids": tuple(d["settings"]["eos_token_ids"])})
    decoding = Decoding(**d["decoding"])
    return TeacherPlan(**{**d, "settings": settings, "decoding": decoding})


class Replica:
    """One engine replica (a Ray actor): made once, then asked batch after batch."""

    def __init__(self, plan: dict):
        self.plan = plan_from_dict(plan)
        self.engine = self.plan.open()

    def __call__(self, batch: dict) -> dict:
        records = [json.loads(r) for r in batch["record"]]
        indices = [int(i) for i in batch["index"]]
        results: dict[int, dict | None] = {}
        items = []
        for i, record in zip(indices, records):
            image, reason = load_item_image(self.plan, record)
            if reason is not None:
                results[i] = error_result(record, reason)
            else:
                items.append((i, record, image))
        for start in range(0, len(items), self.plan.batch_size):
            for i, result in answer_items(self.engine, self.plan, items[start:start + self.plan.batch_size]):
                results[i] = result
        why = getattr(self.engine, "budget_spent", None) or ""
        return {"index": indices, "result": [json.dumps(results[i]) if results[i] is not None else "" for i in indices],
                "unsent": [why or "a request budget is spent" if results[i] is None else "" for i in indices]}


def connect(address: str | None, replicas: int, gpus: float) -> bool:
    """Join the cluster at ``address`` or start a local Ray; True when this call started it (and shuts it down)."""
    try:
        import ray
    except ImportError:
        raise UniferError("--executor ray needs Ray: pip install -e .[ray]") from None
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False)
    res = ray.cluster_resources()
    if gpus and res.get("GPU", 0) < gpus * replicas:
        print(f"distill: note: {replicas} replicas × {gpus:g} GPUs asked, the cluster has {res.get('GPU', 0):g}; "
              "replicas wait for GPUs", file=sys.stderr)
    return True


def run_ray(plan: TeacherPlan, records: list[dict], pending: list[int], sink: Sink, executor) -> str | None:
    """Answer ``pending`` on Ray Data; finished faces go to ``sink`` as they stream back. Returns why the run
    stopped early (a spent budget), or None."""
    import ray
    import ray.data

    started = connect(executor.address, executor.replicas, executor.gpus_per_replica)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the run's own bar counts faces
    try:
        left = list(pending)
        for _ in range(ROUNDS):
            stopped, left = _one_round(plan, records, left, sink, executor)
            if stopped or not left:
                return stopped
            print(f"distill: {len(left)} faces did not come back (a replica died); asking them again",
                  file=sys.stderr)
        raise UniferError(f"{len(left)} faces did not come back from the Ray replicas after {ROUNDS} rounds; every "
                          "finished face is kept: rerun to go on")
    finally:
        if started:
            ray.shutdown()


def _one_round(plan, records, pending, sink, executor) -> tuple[str | None, list[int]]:
    import ray.data

    rows = [{"index": i, "record": json.dumps(records[i], ensure_ascii=False)} for i in pending]
    per_call = plan.batch_size
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), executor.replicas * 4)))
    ds = ds.map_batches(Replica, fn_constructor_kwargs={"plan": plan.as_dict()}, batch_size=per_call,
                        compute=ray.data.ActorPoolStrategy(size=executor.replicas),
                        num_gpus=executor.gpus_per_replica or None,
                        num_cpus=1, batch_format="numpy")
    back: set[int] = set()
    stopped = None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        finished = []
        for i, result, unsent in zip(batch["index"], batch["result"], batch["unsent"]):
            i = int(i)
            if unsent:
                stopped = stopped or str(unsent)
                continue
            if i in back:
                continue  # a retried batch answered twice: the first answer is kept
            back.add(i)
            finished.append((i, json.loads(result)))
        sink(finished)
    return stopped, [i for i in pending if i not in back]
