"""The ``fake`` engine: deterministic answers computed from the request, for tests of everything around an engine
(streaming, resume, shards, error items, budgets, sampling, distillation, judges) without a model. It loads
nothing and answers in microseconds, as lm-evaluation-harness's ``dummy`` model does.

An answer is ``template`` with ``{label}`` (one of the prompt's candidate labels, picked by a hash of the image's
pixels, the prompt, the seed and the sample's index — so it is the same on every run and differs between seeds)
and ``{n}`` (the sample's index); a ``Decoding`` with ``choice`` is answered with one of its choices. Told to,
it fails an item (``fail_items``: calls' 1-based item numbers answer an error), fails as an engine
(``engine_failure_at_call``: that generate call raises a dead-engine error), or stalls
(``stall_at_call``: that call sleeps ``stall_seconds`` first). ``script`` (a JSON file ``{"#rrggbb": [text, …]}``)
makes the answers known per face: an image whose top-left pixel has that colour is answered ``text[i]`` for
sample ``i`` (cycling); other images get the template. ``exit_once_file``: the process exits at once (as a
killed replica does) on its ``exit_at_call``-th call, the first time only (the file records that it happened).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from unifer.errors import UniferError
from unifer.infer.engines.base import Answer, Decoding, EngineDeadError, one_each, option, seeds_for

_CANDIDATES = re.compile(r"candidate labels:\s*(.+?)\.\s", re.S)


def item_numbers(text: str) -> tuple[int, ...]:
    """``--fake-fail-items 3,7`` → (3, 7)."""
    return tuple(int(x) for x in str(text).split(",") if x.strip())


@dataclass(frozen=True)
class FakeOptions:
    template: str = option("<think>The face looks {label}.</think><answer>{label}</answer>",
                           "the fake engine's answer: {label} (a candidate label of the prompt) and {n} filled in",
                           flag="--fake-template")
    fail_items: tuple[int, ...] = option((), "1-based request numbers answered with an item error",
                                         flag="--fake-fail-items", type=item_numbers, metavar="N,N")
    engine_failure_at_call: int | None = option(None, "the generate call (1-based) at which the fake engine dies",
                                                flag="--fake-engine-failure-at-call", type=int)
    stall_at_call: int | None = option(None, "the generate call that first sleeps --fake-stall-seconds",
                                       flag="--fake-stall-at-call", type=int)
    stall_seconds: float = option(0.0, "how long that call sleeps", flag="--fake-stall-seconds")
    script: str | None = option(None, "JSON file {\"#rrggbb\": [answer, ...]}: the answers of the images whose "
                                "top-left pixel has that colour, sample by sample", flag="--fake-script")
    exit_at_call: int | None = option(None, "the call (1-based) at which the process exits, once",
                                      flag="--fake-exit-at-call", type=int)
    exit_once_file: str | None = option(None, "where the once-only exit is recorded", flag="--fake-exit-once-file")

    def __post_init__(self):
        object.__setattr__(self, "fail_items", tuple(self.fail_items))


def candidate_labels(prompt: str) -> list[str]:
    """The labels a FERBench-style prompt lists ("... candidate labels: a, b, c. ..."); [] when none."""
    m = _CANDIDATES.search(prompt + " ")
    return [s.strip() for s in m.group(1).split(",") if s.strip()] if m else []


def _pixels(image) -> bytes:
    if image is None:
        return b""
    tobytes = getattr(image, "tobytes", None)
    return tobytes() if tobytes else repr(image).encode()


def _corner(image) -> str | None:
    """The top-left pixel of a PIL image as ``#rrggbb``."""
    getpixel = getattr(image, "getpixel", None)
    if getpixel is None:
        return None
    px = image.convert("RGB").getpixel((0, 0))
    return "#{:02x}{:02x}{:02x}".format(*px[:3])


class FakeEngine:
    name = "fake"
    local = False  # its "model" is any name: no checkpoint is read
    Options = FakeOptions

    def __init__(self, model, settings=None, options: FakeOptions | None = None, decoding: Decoding | None = None):
        self.model = str(model)
        self.options = options or FakeOptions()
        self.decoding = decoding or Decoding(max_new_tokens=getattr(settings, "max_new_tokens", 1024))
        self.calls = 0
        self.requests = 0
        self.seen: list[tuple[str, Decoding, int | None]] = []  # (prompt, decoding, seed) per request, for tests
        self.script: dict[str, list[str]] = {}
        if self.options.script:
            with open(self.options.script, encoding="utf-8") as f:
                self.script = {k.lower(): list(v) for k, v in json.load(f).items()}

    def _answer(self, image, prompt: str, decoding: Decoding, seed: int | None, index: int) -> Answer:
        self.requests += 1
        self.seen.append((prompt, decoding, seed))
        if self.requests in self.options.fail_items:
            return Answer("", 0, error=f"fake failure of request {self.requests}")
        scripted = self.script.get(_corner(image)) if self.script else None
        if scripted:
            text = scripted[index % len(scripted)]
            return Answer(text, len(text.split()), stop_reason="stop")
        labels = list(decoding.choice or ()) or candidate_labels(prompt) or ["neutral"]
        h = hashlib.sha256(_pixels(image) + prompt.encode() + f"|{seed}|{index}|{decoding.temperature}".encode())
        label = labels[int.from_bytes(h.digest()[:8], "big") % len(labels)]
        # a closed list of choices is answered with one of them; the template otherwise
        text = label if decoding.choice else self.options.template.format(label=label, n=index)
        words = text.split()
        stop = "stop"
        if len(words) > decoding.max_new_tokens:  # one "token" per word: the budget cuts the text
            text, stop = " ".join(words[: decoding.max_new_tokens]), "length"
        return Answer(text, min(len(words), decoding.max_new_tokens), stop_reason=stop)

    def _call(self) -> None:
        self.calls += 1
        marker = self.options.exit_once_file
        if self.options.exit_at_call == self.calls and marker and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(f"exited at call {self.calls} in process {os.getpid()}\n")
            os._exit(17)
        if self.options.stall_at_call == self.calls:
            time.sleep(self.options.stall_seconds)
        if self.options.engine_failure_at_call == self.calls:
            raise EngineDeadError(f"fake engine died at call {self.calls}")

    def sample(self, images: Sequence, prompts: Sequence[str], decoding: Decoding,
               seeds: Sequence[int | None] | None = None) -> list[list[Answer]]:
        images, prompts = list(images), list(prompts)
        if len(images) != len(prompts):
            raise UniferError(f"{len(images)} images for {len(prompts)} prompts")
        self._call()
        per = seeds_for(seeds, len(prompts), decoding)
        return [[self._answer(img, p, decoding, s, i) for i in range(decoding.n)]
                for img, p, s in zip(images, prompts, per)]

    def generate(self, images: Sequence, prompts: Sequence[str], decoding: Decoding | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[Answer]:
        decoding = decoding or self.decoding
        one_each(self.name, decoding)
        return [a[0] for a in self.sample(images, prompts, decoding, seeds)]

    def close(self) -> None:
        pass
