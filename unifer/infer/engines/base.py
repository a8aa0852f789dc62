"""The engine contract: what every generation engine (hf, vllm, openai, fake, and any new one) offers, as types.

An engine answers requests of one image and one prompt. How it decodes is a value, ``Decoding``: greedy by default
(the paper), or sampling (``temperature``, ``top_p``, ``n`` samples per request, a ``seed``), with an optional
structured output (a JSON schema, a regular expression, or a closed list of choices) where the engine supports it.

- ``generate(images, prompts, decoding=None, seeds=None) -> list[Answer]``: one answer per request (``decoding.n``
  must be 1); ``decoding=None`` means the engine's own decoding (what it was made with: greedy unless a preset or
  flag said otherwise).
- ``sample(images, prompts, decoding, seeds=None) -> list[list[Answer]]``: ``decoding.n`` answers per request.
  ``seeds[i]`` seeds request ``i`` (a rerun, or another executor, asks the same); None leaves it to the engine.
- ``close()``; ``name`` (the registry key) and ``local`` (True: ``model`` is a checkpoint directory here; False: a
  name an endpoint serves).
- optional class attributes: ``prefers_length_sorted = True`` (requests are answered in padded batches, so the
  stream hands them over sorted by prompt length), ``default_batch_size = N`` (items per ``generate`` call), and
  ``Options`` (the engine's options dataclass: ``make_engine`` builds it from a dict, refusing unknown keys).

A streaming engine (``StreamingEngine``) also answers a long stream of requests in its own scheduling and yields
each answer as it finishes. An item that fails on its own comes back as ``Answer(error=reason)``; a failure of the
engine itself raises.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from unifer.data.sets import DEFAULT_MAX_NEW_TOKENS
from unifer.errors import UniferError
from unifer.models.chat import user_turn  # noqa: F401  (the engines' one user turn)


class Answer(NamedTuple):
    """One request's outcome. ``error`` set: this item failed on its own (the runner writes an error item with
    the reason and goes on); a failure of the engine itself raises instead."""

    text: str
    tokens: int  # generated tokens, up to and including the first eos
    error: str | None = None
    usage: dict | None = None  # what an API reported (prompt_tokens, completion_tokens), where it did
    stop_reason: str | None = None  # "stop" (an eos or stop string), "length" (the token budget), where known;
    #                                 "unsent: WHY" — not asked at all (a run's request budget is spent)

    @classmethod
    def unsent(cls, why: str) -> Answer:
        """A request the engine did not send (``why``: a spent budget): the item stays pending for a rerun."""
        return cls("", 0, stop_reason=f"{UNSENT}{why}")

    @property
    def sent(self) -> bool:
        return not (self.stop_reason or "").startswith(UNSENT)

    @property
    def unsent_reason(self) -> str | None:
        return None if self.sent else self.stop_reason[len(UNSENT):]


UNSENT = "unsent: "


@dataclass(frozen=True)
class Decoding:
    """How an engine turns a request into text. ``temperature == 0`` is greedy (the paper's decoding): ``top_p``
    and ``seed`` are then moot. ``json_schema``, ``regex`` and ``choice`` constrain the output (structured output;
    at most one of them), on the engines that support it (vllm, openai)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # the paper's budget
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    json_schema: dict | None = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)  # engine-specific request fields (an API's extra_body)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UniferError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UniferError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UniferError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise UniferError(f"n (samples per request) must be at least 1, got {self.n}")
        if sum(x is not None for x in (self.json_schema, self.regex, self.choice)) > 1:
            raise UniferError("structured output takes one of json_schema, regex or choice, not several")
        if self.choice is not None:
            object.__setattr__(self, "choice", tuple(self.choice))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def structured(self) -> bool:
        return self.json_schema is not None or self.regex is not None or self.choice is not None

    def with_(self, **changes) -> Decoding:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """What a run's metadata records: the fields that decide answers, defaults included."""
        out: dict[str, Any] = {"greedy": self.greedy, "max_new_tokens": self.max_new_tokens}
        if not self.greedy:
            out.update(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        if self.n != 1:
            out["n"] = self.n
        for k in ("json_schema", "regex", "choice"):
            if getattr(self, k) is not None:
                out[k] = list(self.choice) if k == "choice" else getattr(self, k)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


GREEDY = Decoding()


class EngineDeadError(RuntimeError):
    """The engine itself failed (a dead worker, a lost server): every later item would fail too, so the run stops,
    resumably, instead of writing error items."""


@runtime_checkable
class Engine(Protocol):
    name: str
    local: bool

    def generate(self, images: Sequence, prompts: Sequence[str], decoding: Decoding | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[Answer]: ...

    def sample(self, images: Sequence, prompts: Sequence[str], decoding: Decoding,
               seeds: Sequence[int | None] | None = None) -> list[list[Answer]]: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingEngine(Engine, Protocol):
    def stream(self, requests: Iterable[tuple[Any, Any, str]], window: int = 512, decoding: Decoding | None = None,
               seeds: Iterable[int | None] | None = None) -> Iterator[tuple[Any, Answer]]:
        """``requests`` yields (key, image, prompt); yields (key, answer) as each finishes, in any order; ``seeds``
        (if given) yields one seed per request, in the requests' order."""
        ...


def check_decoding(engine_name: str, decoding: Decoding, *, sampling: bool = True, n: bool = True,
                   structured: bool = True, extra: bool = True) -> None:
    """Refuse, in one line, a decoding the engine cannot apply (nothing is recorded and then dropped)."""
    if not sampling and not decoding.greedy:
        raise UniferError(f"engine {engine_name} decodes greedily only; it cannot sample (temperature "
                          f"{decoding.temperature})")
    if not n and decoding.n != 1:
        raise UniferError(f"engine {engine_name} answers one sample per request; n={decoding.n} is not supported")
    if not structured and decoding.structured:
        raise UniferError(f"engine {engine_name} has no structured output (json_schema / regex / choice)")
    if not extra and decoding.extra:
        raise UniferError(f"engine {engine_name} takes no engine-specific request fields (Decoding.extra: "
                          f"{', '.join(sorted(decoding.extra))})")


def one_each(engine_name: str, decoding: Decoding) -> None:
    """``generate`` answers one sample per request: n > 1 belongs to ``sample``."""
    if decoding.n != 1:
        raise UniferError(f"engine {engine_name}: generate() answers one sample per request; use sample() for "
                          f"n={decoding.n}")


def seeds_for(seeds: Sequence[int | None] | None, count: int, decoding: Decoding) -> list[int | None]:
    """One seed per request: the given ones, else ``decoding.seed`` for each (None: the engine's choice)."""
    if seeds is None:
        return [decoding.seed] * count
    seeds = list(seeds)
    if len(seeds) != count:
        raise UniferError(f"{len(seeds)} seeds for {count} requests")
    return seeds


# -- options: one dataclass per engine, the one place its defaults are written ---------------------------------------

def option(default: Any, help: str, flag: str | None = None, **flag_kwargs) -> Any:
    """A field of an engine's options dataclass, with what its command-line flag needs (``help``; ``flag`` when it
    is not ``--field-name``; ``choices``, ``type``, ``metavar``). Mutable defaults are copied per instance."""
    meta = {"help": help, "flag": flag, **flag_kwargs}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def option_default(f) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def build_options(options_cls, values: dict | None, engine_name: str):
    """``options_cls(**values)``, refusing in one line a key the engine does not take (none is silently dropped)."""
    values = dict(values or {})
    known = {f.name for f in fields(options_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UniferError(f"engine {engine_name} takes no option {', '.join(unknown)} (it takes: "
                          f"{', '.join(sorted(known)) or 'none'})")
    return options_cls(**values)
