"""One distillation run end to end: the progress file (resume after SIGKILL, error items, a budget's stop), an
executor (local, or Ray), then selection and the outputs.

``DIR/samples.progress.jsonl`` holds every finished face's samples (``unifer.infer.progress``: a header naming
what decides the answers, one fsynced line per face, the lock, a torn last line cut on resume). It is kept when
the run is done: rerunning with other selection flags (``--keep``, ``--pick``, ``--rlvr-pass-rate``,
``--balance``, ``--reward``) asks the teacher nothing again and rewrites the outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from unifer.data.jsonio import write_json_atomic
from unifer.distill.select import Selection, accepted_texts, draw, select
from unifer.distill.work import Meter, TeacherPlan, item_seed, run_local
from unifer.errors import UniferError
from unifer.infer.engines import describe_error, is_engine_failure
from unifer.infer.progress import ProgressFile
from unifer.infer.ray_pool import Executor

PROGRESS_NAME = "samples.progress.jsonl"
OUTPUTS = ("cot.json", "rlvr.json", "stats.json", "distill.png")


def distill(plan: TeacherPlan, records: list[dict], records_sha256: str, out_dir: Path, sel: Selection,
            executor: Executor = Executor(), overwrite: bool = False, retry_errors: bool = False) -> int:
    """Ask what is pending, then write the outputs; 3 when a budget stopped the run (rerun to go on)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = plan.header(records_sha256)  # no executor in it: either executor resumes the other's work
    with ProgressFile(out_dir / PROGRESS_NAME, header, overwrite=overwrite,
                      wait_message=f"another distill run is writing {out_dir}; let it finish or choose another "
                                   "--out") as progress:
        done = progress.done
        pending = [i for i in range(len(records))
                   if i not in done or (retry_errors and done[i].get("error") is not None)]
        stats = {"executor": executor.kind}
        stopped = None
        if pending:
            if len(pending) < len(records):
                print(f"distill: resuming: {len(records) - len(pending)} of {len(records)} faces already done",
                      file=sys.stderr)
            meter = Meter(len(records), len(records) - len(pending), plan.decoding.n,
                          lambda r: len(accepted_texts(r, sel.reward)))

            def sink(finished):
                if finished:
                    progress.append(finished)
                    meter.update([r for _, r in finished])

            try:
                if executor.kind == "ray":
                    from unifer.distill.ray_exec import run_ray

                    stopped = run_ray(plan, records, pending, sink, executor)
                else:
                    stopped = run_local(plan, records, pending, sink)
            except UniferError as e:
                raise UniferError(f"{e} (every finished face is kept in {progress.path}: rerun to go on)") from None
            except Exception as e:
                if not is_engine_failure(e):
                    raise
                raise UniferError(f"the {plan.engine} engine failed: {describe_error(e)}; every finished face is kept "
                                  f"in {progress.path}: rerun to go on") from None
            finally:
                meter.close()
            stats.update(seconds=round(meter.seconds, 3), faces_this_run=meter.n,
                         faces_per_s=round(meter.n / max(meter.seconds, 1e-9), 3),
                         samples_per_s=round(meter.n * plan.decoding.n / max(meter.seconds, 1e-9), 3))
        left = sum(1 for i in range(len(records)) if i not in done)
        if stopped and left:
            print(f"distill: stopped, {stopped}: {len(records) - left} of {len(records)} faces done, {left} left; "
                  f"every sample is kept in {progress.path}: rerun the same command to go on")
            return 3
        return write_outputs(records, dict(done), out_dir, sel, plan, header, stats)


def write_outputs(records, done, out_dir: Path, sel: Selection, plan: TeacherPlan, header: dict,
                  run_stats: dict) -> int:
    seed = plan.decoding.seed or 0
    result = select(records, done, sel, order_key=lambda i: item_seed(records[i]["image_path"], seed + 1))
    write_json_atomic(out_dir / "cot.json", result["cot"])
    write_json_atomic(out_dir / "rlvr.json", result["rlvr"])
    stats = {**result["stats"], "run": header, "this_run": run_stats}
    write_json_atomic(out_dir / "stats.json", stats)
    draw(stats, out_dir / "distill.png")
    s = stats
    print(f"distill: {s['faces']} faces, {s['answered']} answered, {s['errors']} errors; {s['accepted_samples']} of "
          f"{s['samples']} samples accepted ({sel.reward} rewards)")
    print(f"  {out_dir / 'cot.json'}: {s['cot_records']} CoT records from {s['cot_faces']} faces")
    print(f"  {out_dir / 'rlvr.json'}: {s['rlvr_records']} RLVR records with pass rate in "
          f"[{sel.pass_rate[0]:g}, {sel.pass_rate[1]:g}]")
    print(f"  {out_dir / 'stats.json'}, {out_dir / 'distill.png'}")
    if "faces_per_s" in run_stats:
        print(f"  this run: {run_stats['faces_this_run']} faces in {run_stats['seconds']:.1f}s "
              f"({run_stats['faces_per_s']:.2f} faces/s, {run_stats['samples_per_s']:.1f} samples/s, "
              f"{run_stats['executor']} executor)")
    return 0
