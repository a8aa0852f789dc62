"""One judging run: every answered item of a set's results rated on the rubric, into ``<set>_<run>_judge.jsonl``.

The engine is any engine of the registry (``unifer.infer.engines``), made with the judge's decoding: greedy, the
rubric's token budget, and a structured output where the engine has one (vLLM's JSON schema or regex through the
``openai`` engine's ``structured_outputs``, and ``response_format`` for a vendor). Requests, concurrency, retries of
failed requests, request and token budgets and key hygiene are the engine's own (``--concurrency``,
``--max-retries``, ``--max-requests``, ``--max-tokens-budget``, ``--api-key-env``). What this module adds:

- **strict parsing** (``unifer.judge.rubric.parse_rating``): an unparseable rating is asked again
  ``parse_retries`` times (sampling at temperature 0.7, a seed per attempt, so a greedy judge does not repeat
  itself), then written as an error line with the reason and the answer's start — never a default;
- **the cache**: each line carries a key, the hash of the judge's configuration (engine, model, endpoint, rubric
  version and prompt, decoding, image or not) with the item and its response. A rerun rates only the items whose
  key has no line yet (error lines too with ``retry_errors``), so the same judge on the same answers costs nothing
  and a changed response, rubric or judge is rated again;
- **resume**: finished lines are appended to the judge file (fsynced) as each batch ends; a killed run leaves at
  worst a torn last line, which is skipped; at the end the file is rewritten in the results' order, so a resumed
  run and an uninterrupted one write the same bytes. A spent budget stops the run cleanly, the rest pending. The
  judge file is locked while a run writes it.

The judge's configuration is written beside the scores, ``<set>_<run>_judge.meta.json`` (``unifer.data.runmeta``).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.images import ImageLoadError, join_image_path, load_image
from unifer.data.jsonio import write_text_atomic
from unifer.data.runmeta import write_meta
from unifer.data.sets import FERSet
from unifer.errors import UniferError
from unifer.infer.engines import Decoding, describe_error, is_engine_failure, make_engine
from unifer.infer.stream import generate_isolating
from unifer.judge.rubric import Rubric, Unparseable, parse_rating
from unifer.scoring.extract import extract_label
from unifer.scoring.reasoning_report import read_judge_lines

RETRY_TEMPERATURE = 0.7


@dataclass(frozen=True)
class JudgeConfig:
    """What decides a rating besides the item: the judge's engine, model, endpoint, rubric and decoding."""

    engine: str
    model: str
    options: dict  # the engine's options as given (make_engine fills the defaults)
    settings: object  # GenerationSettings
    decoding: Decoding
    rubric: Rubric
    with_image: bool
    image_size: int | None

    def as_dict(self) -> dict:
        return {"engine": self.engine, "model": self.model, "base_url": self.options.get("base_url"),
                "extra_body": self.options.get("extra_body") or None, "rubric": self.rubric.tag,
                "rubric_digest": self.rubric.digest, "decoding": self.decoding.as_dict(),
                "with_image": self.with_image, "image_size": self.image_size if self.with_image else None}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        """What each line names its judge by: ``model/rubric-name/vN``."""
        return f"{self.model}/{self.rubric.tag}"


def item_key(config: JudgeConfig, set_key: str, record: dict) -> str:
    """The cache key of one rating: the judge's configuration, the item and its response."""
    text = "\0".join((config.digest, set_key, str(record.get("image_path")), record["model_response"]))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class JudgeRun:
    """One set's judging: the checked results records (error items left out), where the ratings go, how."""

    ferset: FERSet
    records: list[dict]
    output: Path
    config: JudgeConfig
    image_root: str = "/"
    batch_size: int = 16
    parse_retries: int = 2
    retry_errors: bool = False
    overwrite: bool = False
    stats: dict = field(default_factory=lambda: {"rated": 0, "errors": 0, "cached": 0, "pending": 0,
                                                 "stopped": None, "parse_retries": 0})


def _prompt(run: JudgeRun, record: dict) -> str:
    answered = extract_label(record["model_response"], run.ferset, "paper")
    return run.config.rubric.render(run.ferset.prompt, run.ferset.labels, answered, record["model_response"],
                                    run.config.with_image)


def _image(run: JudgeRun, record: dict):
    if not run.config.with_image:
        return None
    return load_image(join_image_path(run.image_root, record["image_path"]), run.config.image_size)


class JudgeFile:
    """The judge file, locked: its cached lines by key, appended to as batches finish."""

    def __init__(self, path: Path, overwrite: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UniferError(f"another judge run is writing {self.path}; let it finish, or choose another "
                              "--output") from None
        if overwrite:
            os.ftruncate(self.fd, 0)
        self.lines = {x["key"]: x for x in read_judge_lines(self.path) if isinstance(x.get("key"), str)}
        self._torn = self._ends_torn()

    def _ends_torn(self) -> bool:
        size = os.fstat(self.fd).st_size
        if size == 0:
            return False
        return os.pread(self.fd, 1, size - 1) != b"\n"

    def append(self, lines: list[dict]) -> None:
        if not lines:
            return
        text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
        if self._torn:  # a killed run's torn last line: start on a line of our own
            text, self._torn = "\n" + text, False
        os.write(self.fd, text.encode("utf-8"))
        os.fsync(self.fd)
        self.lines.update((x["key"], x) for x in lines)

    def finish(self, keys_in_order: list[str]) -> int:
        """Rewrite the file: one line per rated item of the results, in their order. Returns the line count."""
        ordered = [self.lines[k] for k in keys_in_order if k in self.lines]
        write_text_atomic(self.path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in ordered))
        return len(ordered)

    def close(self) -> None:
        os.close(self.fd)


def _line(run: JudgeRun, record: dict, key: str, rating: dict | None = None, error: str | None = None) -> dict:
    base = {"image_path": record.get("image_path"), "key": key, "judge": run.config.tag}
    if error is not None:
        run.stats["errors"] += 1
        return {**base, "error": error}
    run.stats["rated"] += 1
    return {**base, **rating}


def _rate_batch(run: JudgeRun, engine, batch: list[tuple[dict, str]]) -> list[dict]:
    """Lines for one batch (fewer when a budget is spent: ``stats["stopped"]`` then says why)."""
    lines, asked = [], []
    for record, key in batch:
        try:
            asked.append((record, key, _image(run, record), _prompt(run, record)))
        except ImageLoadError as e:
            lines.append(_line(run, record, key, error=f"image: {e}"))
    if not asked:
        return lines
    answers, _ = generate_isolating(engine, [a[2] for a in asked], [a[3] for a in asked])
    unparsed = []
    for item, answer in zip(asked, answers):
        if not answer.sent:
            run.stats["stopped"] = run.stats["stopped"] or answer.unsent_reason
            continue
        if answer.error is not None:
            lines.append(_line(run, item[0], item[1], error=answer.error))
            continue
        try:
            lines.append(_line(run, item[0], item[1], parse_rating(answer.text)))
        except Unparseable as e:
            unparsed.append((item, str(e), answer.text))
    for attempt in range(run.parse_retries):
        if not unparsed or run.stats["stopped"]:
            break
        run.stats["parse_retries"] += len(unparsed)
        decoding = run.config.decoding.with_(temperature=max(RETRY_TEMPERATURE, run.config.decoding.temperature),
                                             seed=attempt + 1)
        try:
            again = engine.generate([u[0][2] for u in unparsed], [u[0][3] for u in unparsed], decoding)
        except Exception as e:
            if is_engine_failure(e):
                raise
            again = [None] * len(unparsed)
            reason = describe_error(e)
            unparsed = [(u[0], f"{u[1]}; retry failed: {reason}", u[2]) for u in unparsed]
        still = []
        for (item, reason, text), answer in zip(unparsed, again):
            if answer is None or not answer.sent or answer.error is not None:
                still.append((item, reason, text))
                continue
            try:
                lines.append(_line(run, item[0], item[1], parse_rating(answer.text)))
            except Unparseable as e:
                still.append((item, str(e), answer.text))
        unparsed = still
    for item, reason, text in unparsed:
        lines.append(_line(run, item[0], item[1], error=f"unparseable after {run.parse_retries + 1} attempts: "
                                                       f"{reason}; answer began {json.dumps(text[:120])}"))
    return lines


def judge(run: JudgeRun, engine=None) -> dict:
    """Rate every item of ``run`` not cached yet; returns the stats (rated, errors, cached, pending, stopped)."""
    keyed = [(r, item_key(run.config, run.ferset.key, r)) for r in run.records]
    file = JudgeFile(run.output, run.overwrite)
    own_engine = engine is None
    try:
        todo = [(r, k) for r, k in keyed if k not in file.lines or (run.retry_errors and file.lines[k].get("error"))]
        run.stats["cached"] = len(keyed) - len(todo)
        if todo and engine is None:
            c = run.config
            engine = make_engine(c.engine, c.model, c.settings, c.options, c.decoding)
        done = 0
        for start in range(0, len(todo), run.batch_size):
            lines = _rate_batch(run, engine, todo[start:start + run.batch_size])
            file.append(lines)
            done += len(lines)
            if run.stats["stopped"]:
                break
        run.stats["pending"] = len(todo) - done
    finally:
        run.stats["lines"] = file.finish([k for _, k in keyed])
        file.close()
        if own_engine and engine is not None:
            engine.close()
    write_meta(run.output, {"set": run.ferset.key, "judge": run.config.tag, **run.config.as_dict(),
                            "items": len(keyed), "lines": run.stats["lines"]})
    return run.stats
