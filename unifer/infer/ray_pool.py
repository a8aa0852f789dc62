"""Engine replicas on Ray Data: rows in, a pool of actors (each one engine, made once) answering batches of them,
rows streamed back to this process as they finish — for ``unifer distill --executor ray`` and
``unifer ferbench run --executor ray``.

``ray.data.llm``'s vLLM processor is not used: it builds its own vLLM engine from a CUDA vLLM wheel, with its own
chat templating, while this repository's engines (``unifer.infer.engines``) carry the paper's request (one user
turn, the image then the prompt, the checkpoint's template and generation_config) and the per-item seeds; so each
replica is one of these engines inside a Ray Data actor pool (``map_batches`` with a callable class and an
``ActorPoolStrategy`` of ``replicas`` actors, each with ``gpus_per_replica`` GPUs; vLLM's tensor parallel size
inside a replica is the engine's own ``--tensor-parallel-size``).

Nothing is lost when a replica dies: Ray Data restarts the actor and retries its batch (actor pools default to
unlimited restarts and task retries), and rows that still have not come back when the dataset ends are sent
again, up to ``ROUNDS`` times; a row answered twice is passed on once. A row comes back with ``unsent`` set when
its replica did not ask (a spent request budget — budgets are per replica): the stream then ends after the
current dataset, the row left for a rerun.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

from unifer.errors import UniferError

ROUNDS = 3  # datasets run over what is still missing before giving up (a replica that keeps dying)
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """Where the engine runs: ``local`` (this process) or ``ray`` (``replicas`` actors on a cluster)."""

    kind: str = "local"
    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray started for the run
    replicas: int = 1
    gpus_per_replica: float = 0.0

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise UniferError(f"unknown executor {self.kind!r}; choose one of: {', '.join(EXECUTORS)}")
        if self.replicas < 1 or self.gpus_per_replica < 0:
            raise UniferError("--replicas must be at least 1 and --gpus-per-replica at least 0")


def add_executor_arguments(ap) -> None:
    """``--executor local|ray``, ``--ray-address``, ``--replicas``, ``--gpus-per-replica``."""
    g = ap.add_argument_group("executor")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one engine in this process; ray: a pool of engine replicas on Ray Data")
    g.add_argument("--ray-address", default=None,
                   help="the Ray cluster (default: $RAY_ADDRESS, else a local Ray started for the run)")
    g.add_argument("--replicas", type=int, default=1, help="engine replicas (Ray actors; default 1)")
    g.add_argument("--gpus-per-replica", type=float, default=0.0,
                   help="GPUs each replica holds (vLLM's tensor parallel size inside it; default 0)")


def executor_from(flags) -> Executor:
    import os

    get = flags.get if isinstance(flags, dict) else lambda k, d=None: getattr(flags, k, d)
    return Executor(get("executor") or "local", get("ray_address") or os.environ.get("RAY_ADDRESS"),
                    int(get("replicas") or 1), float(get("gpus_per_replica") or 0.0))


def connect(executor: Executor) -> bool:
    """Join the cluster at the executor's address or start a local Ray; True when this call started it."""
    try:
        import ray
    except ImportError:
        raise UniferError("--executor ray needs Ray: pip install -e .[ray]") from None
    if ray.is_initialized():
        return False
    if executor.address:
        ray.init(address=executor.address)
    else:
        ray.init(include_dashboard=False)
    want = executor.gpus_per_replica * executor.replicas
    have = ray.cluster_resources().get("GPU", 0)
    if want and have < want:
        print(f"note: {executor.replicas} replicas × {executor.gpus_per_replica:g} GPUs asked, the cluster has "
              f"{have:g}; replicas wait for GPUs", file=sys.stderr)
    return True


def rows_of(batch: dict) -> list[dict]:
    keys = list(batch)
    return [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]


def ray_map(rows: list[dict], replica_cls, constructor_kwargs: dict, executor: Executor,
            batch_size: int) -> Iterator[list[dict]]:
    """Send ``rows`` (each with a unique ``id``) through ``replica_cls`` actors; yield the rows that come back, a
    batch at a time (each with ``id`` and ``unsent``: "" or why it was not asked — such a row was not answered)."""
    started = connect(executor)  # first: without Ray installed, one line saying how to get it
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller's bar counts items
    try:
        left = list(rows)
        for _ in range(ROUNDS):
            back: set = set()
            unsent = False
            ds = ray.data.from_items(left, override_num_blocks=max(1, min(len(left), executor.replicas * 4)))
            ds = ds.map_batches(replica_cls, fn_constructor_kwargs=constructor_kwargs, batch_size=batch_size,
                                compute=ray.data.ActorPoolStrategy(size=executor.replicas),
                                num_gpus=executor.gpus_per_replica or None, num_cpus=1, batch_format="numpy")
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                out = []
                for row in rows_of(batch):
                    rid = row["id"].item() if hasattr(row["id"], "item") else row["id"]
                    if row["unsent"]:  # passed on, so the caller can say why; not counted as back
                        unsent = True
                        out.append({**row, "id": rid})
                    elif rid not in back:
                        back.add(rid)
                        out.append({**row, "id": rid})
                yield out
            left = [r for r in left if r["id"] not in back]
            if unsent or not left:
                return
            print(f"{len(left)} items did not come back (a replica died); sending them again", file=sys.stderr)
        raise UniferError(f"{len(left)} items did not come back from the Ray replicas after {ROUNDS} rounds; every "
                          "finished item is kept: rerun to go on")
    finally:
        if started:
            ray.shutdown()
