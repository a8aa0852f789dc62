"""FERBench inference: answer every QA item of a set with a vision-language model, resumably, in batches.

    python eval_rafdb/code/infer_unifer.py [--model PATH|PRESET] [--engine hf|vllm|...] [--batch-size N] ...
    unifer infer --set rafdb --model qwen3-vl-8b --run qwen3_vl_8b

The paper's run is reproduced by ``--batch-size 1 --dtype float32``: its loop, item for item, in float32 with sdpa
attention (the paper named no attention, which transformers 4.49 made sdpa; float32 always gets sdpa). The
defaults are faster and do not reproduce it on a GPU: bfloat16 there, and batches of 16; on a CPU the default
dtype is float32, and batched float32 gave the same answers on the tiny model (see ``unifer.infer.engines``). The
work itself — one stream of requests per process, progress files, resume, shards — is ``unifer.infer.suite``.
Output: each input record plus ``model_response``, in
input order; an image that cannot be read becomes ``"model_response": "ERROR: <reason>", "error": true``, as the
paper's loop writes it, and the run goes on; so does any other failure of one item (a prompt longer than the model
allows, an image its processor rejects, a refused request): a batch that raises is retried item by item, and
only the culprit becomes an error item. Only a failure of the engine itself (out of memory, a dead worker) stops
the run, resumably. Results are named by run (``--run``, default: the preset's, else the checkpoint folder's:
``model/UniFER-7B`` → ``unifer_7b``), and ``<results>.meta.json`` beside them records engine, model, image size
and decoding (``unifer.data.runmeta``). Finished items go to a progress file beside the output as they
complete (``unifer.infer.progress``), so a killed run resumes where it stopped; ``--shard i/n`` splits a set across
processes or GPUs (``CUDA_VISIBLE_DEVICES=i ... --shard i/n``) and the shard that finishes last writes the
single results file (``--merge`` does it by hand).
"""
from __future__ import annotations

import argparse

from unifer.data.images import IMAGE_SIZE
from unifer.data.sets import DEFAULT_RUN_NAME, SET_KEYS, get_set
from unifer.errors import run_cli
from unifer.infer.engines import ENGINES, add_decoding_arguments, add_option_arguments
from unifer.infer.plan import resolve_run


def describe(set_key: str | None = None) -> str:
    name = get_set(set_key).name if set_key else "a FERBench set"
    return f"Answer the FERBench QA items of {name} with a vision-language model (resumable, batched)."


def build_parser(set_key: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=None if set_key else "unifer infer", description=describe(set_key))
    add_arguments(ap, set_key)
    return ap


def add_arguments(ap: argparse.ArgumentParser, set_key: str | None = None, paths: bool = True) -> None:
    """The flags of ``unifer infer`` (``--set`` chooses the set) and of ``eval_<set>/code/infer_unifer.py``
    (``paths=False``: without ``--input`` / ``--output``, for the four-set face)."""
    if set_key is None:
        ap.add_argument("--set", required=True, choices=SET_KEYS, help="which FERBench set")
    ap.add_argument("--model", default=None,
                    help="checkpoint directory, or a preset name (unifer presets lists them), or the model an "
                         "endpoint serves (default: $UNIFER_MODEL, else model/UniFER-7B in the repository)")
    ap.add_argument("--presets", default=None, metavar="FILE",
                    help="a presets file of your own (default: unifer/infer/presets.yaml; unifer presets lists it)")
    ap.add_argument("--run", default=None,
                    help="run name: eval_<set>/results/<set>_<run>_results.json (default: the preset's, else the "
                         f"checkpoint folder's name; without --model {DEFAULT_RUN_NAME})")
    if paths:
        ap.add_argument("--input", default=None, help="QA file (default: eval_<set>/data/<set>_qa.json)")
        ap.add_argument("--output", default=None,
                        help="results file (default: eval_<set>/results/<set>_<run>_results.json)")
    ap.add_argument("--image-root", default=None,
                    help="prefix of the QA image paths (default: $UNIFER_IMAGE_ROOT, else /)")
    ap.add_argument("--engine", choices=ENGINES, default=None,
                    help="transformers (hf, the default), vllm, ...; a preset names its own")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="items per generate call (default: hf 16 on GPU / 4 on CPU; vllm 256 / 16); "
                         "1 with --dtype float32 is the paper's loop")
    add_decoding_arguments(ap)
    ap.add_argument("--image-size", default=None, metavar="N|native",
                    help=f"images resized to N×N ({IMAGE_SIZE}, the paper's, is the default for every model, so runs "
                         "compare), or native: as decoded (the processor then sizes them its own way)")
    ap.add_argument("--limit", type=int, default=None, help="answer only the first N items")
    ap.add_argument("--overwrite", action="store_true", help="start fresh, discarding earlier progress")
    ap.add_argument("--retry-errors", action="store_true",
                    help="on resume, answer the error items of earlier runs again (default: keep them)")
    ap.add_argument("--shard", default=None, metavar="I/N", help="answer every N-th item from I (0 <= I < N)")
    ap.add_argument("--merge", action="store_true",
                    help="only merge finished shard progress files into the results file (same arguments, no --shard)")
    add_option_arguments(ap)  # every engine's options, generated from its options dataclass


def main(argv: list[str] | None = None, set_key: str | None = None) -> int:
    return run(build_parser(set_key).parse_args(argv), set_key)


def run(args: argparse.Namespace, set_key: str | None = None) -> int:
    set_key = set_key or args.set
    from unifer.infer.suite import answer_sets

    return answer_sets({set_key: resolve_run(vars(args), set_key)})


def cli(set_key: str | None = None, argv: list[str] | None = None) -> int:
    """Entry point of ``eval_<set>/code/infer_unifer.py``: one-line errors, exit status 2."""
    return run_cli(lambda a: main(a, set_key), argv)
