"""The ``openai`` engine: FERBench through any OpenAI-compatible chat-completions endpoint.

    unifer infer --set rafdb --engine openai --base-url http://127.0.0.1:8000/v1 --model NAME

One request per item, the paper's request in the chat API's words: one user message holding the image (a base64
data URL, lossless PNG by default, so a local server sees the very pixels the offline engines see) then the
FERBench prompt; ``temperature=0`` (greedy, unless ``--temperature`` or a preset says otherwise),
``max_tokens`` = ``--max-new-tokens``, and whatever ``--extra-body`` adds (vLLM's ``repetition_penalty``, for
instance; a vLLM server also applies the checkpoint's generation_config by default).

Robust by construction: ``concurrency`` requests in flight (threads; the official client is thread-safe), each
with a timeout; a retryable failure (429, 408, 409, 5xx, a dropped connection, a timeout, a body that is not
JSON) is retried with exponential backoff and full jitter, or after the server's ``Retry-After``. What still fails
is that item's error (the runner writes an error item and goes on); a refusal of the whole endpoint (401, 403,
404: a wrong key, base URL or model name) stops the run instead, the items of earlier batches kept.
``max_requests`` and ``max_tokens_budget`` stop sending new requests once spent: unsent items come back as
``Answer.unsent(why)`` (left pending for a rerun).

An image of ``None`` sends the prompt alone (a text-only request: ``unifer judge`` without ``--with-image``).
A sampling ``Decoding`` sends its ``temperature``, ``top_p``, ``n`` and ``seed``; a structured output goes as vLLM's
``structured_outputs`` extra body (and a JSON schema also as ``response_format``).

The API key is read from the environment only and scrubbed from every error text this engine produces.
"""
from __future__ import annotations

import base64
import email.utils
import io
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse

from unifer.errors import UniferError
from unifer.infer.engines import Answer, GenerationSettings
from unifer.infer.engines.base import Decoding, one_each, option, seeds_for, user_turn

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "jpeg")
IMAGE_DETAILS = ("low", "high", "auto")
LOCAL_PLACEHOLDER_KEY = "EMPTY"  # what vLLM / SGLang / Ollama accept when started without --api-key
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404})  # the endpoint refuses us altogether: no item can succeed
MAX_RETRY_AFTER_S = 120.0  # a server asking for longer gets the item's error instead of a stalled run


class EndpointError(UniferError):
    """The endpoint refuses every request (wrong key, base URL or model): the run stops, finished items kept."""


def is_loopback(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_key(api_key_env: str, base_url: str) -> str:
    """The key from ``$api_key_env``; a loopback server without one gets a placeholder, anything else an error."""
    key = os.environ.get(api_key_env, "")
    if key:
        return key
    if is_loopback(base_url):
        return LOCAL_PLACEHOLDER_KEY
    raise UniferError(f"--engine openai: ${api_key_env} is not set; export the API key for {base_url} there "
                      "(or name another variable with --api-key-env); keys are never read from flags or files")


class KeyScrubber:
    """Removes the key, and any run of 8+ characters cut from it (servers echo keys half-masked), from a text."""

    _WORD = re.compile(r"[A-Za-z0-9_\-.~+/=]{8,}")

    def __init__(self, key: str):
        self.key = key if key and key != LOCAL_PLACEHOLDER_KEY else ""

    def __call__(self, text: str) -> str:
        if not self.key:
            return text
        text = text.replace(self.key, "[api key]")
        return self._WORD.sub(lambda m: "[api key]" if self._from_key(m.group(0)) else m.group(0), text)

    def _from_key(self, word: str) -> bool:
        return any(len(part) >= 8 and part in self.key for part in re.split(r"[.]{2,}|\*+", word))


def image_data_url(image, image_format: str = "png") -> str:
    """``data:image/png;base64,...`` of a PIL image: PNG is lossless; JPEG (quality 95) for vendors that want it."""
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG")
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=95)
    return f"data:image/{image_format};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def chat_messages(image_url: str, prompt: str, detail: str | None = None) -> list[dict]:
    """The paper's request: one user turn, the image then the prompt, no system message of ours."""
    return [user_turn(prompt, {"url": image_url, **({"detail": detail} if detail else {})}, kind="image_url")]


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), None when absent."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)] (attempt 0 = first retry)."""
    return rng.uniform(0.0, min(cap, base * (2.0 ** attempt)))


DEFAULT_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class OpenAIOptions:
    """The openai engine's options (``--engine openai``: ``--model`` is the endpoint's model name; the key comes
    only from the environment). Checked when made, so a run plan refuses a bad value before anything loads."""

    base_url: str | None = option(None, "the endpoint, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1")
    api_key_env: str = option(DEFAULT_KEY_ENV, "environment variable holding the key (a loopback server needs none)")
    concurrency: int = option(4, "requests in flight")
    image_format: str = option("png", "png (lossless: a local server answers as the offline engines) or jpeg",
                               choices=IMAGE_FORMATS)
    image_detail: str | None = option(None, "the image part's detail (not sent by default)", choices=IMAGE_DETAILS)
    request_timeout: float = option(120.0, "seconds per request")
    max_retries: int = option(6, "retries of a failed request")
    retry_base_delay: float = option(1.0, "first backoff in seconds, doubled per retry, full jitter")
    retry_max_delay: float = option(60.0, "the longest backoff in seconds")
    extra_body: dict = option({}, 'extra request fields, e.g. \'{"repetition_penalty": 1.05}\' for a vLLM server',
                              type=str, metavar="JSON")
    max_requests: int | None = option(None, "send at most N requests in this run (retries count), then stop "
                                      "cleanly; rerun to go on", type=int)
    max_tokens_budget: int | None = option(None, "stop sending once this run's prompt + completion tokens reach N; "
                                           "rerun to go on", type=int)

    def __post_init__(self):
        if not self.base_url:
            raise UniferError("--engine openai needs --base-url URL and --model NAME (the endpoint's model name)")
        if isinstance(self.extra_body, str):  # the flag's JSON (a preset gives a mapping)
            object.__setattr__(self, "extra_body", parse_extra_body(self.extra_body))
        if self.image_format not in IMAGE_FORMATS:
            raise UniferError(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}")
        if self.image_detail is not None and self.image_detail not in IMAGE_DETAILS:
            raise UniferError(f"--image-detail must be one of {', '.join(IMAGE_DETAILS)}, got {self.image_detail!r}")
        if self.concurrency < 1 or self.max_retries < 0 or self.request_timeout <= 0:
            raise UniferError("--concurrency must be >= 1, --max-retries >= 0 and --request-timeout > 0")
        if any(v is not None and v < 1 for v in (self.max_requests, self.max_tokens_budget)):
            raise UniferError("--max-requests and --max-tokens-budget must be at least 1")


def structured_fields(decoding: Decoding) -> dict:
    """A structured output as request fields: vLLM's ``structured_outputs`` extension (extra body), and for a JSON
    schema also the API's own ``response_format`` (what OpenAI's servers read)."""
    if decoding.regex is not None:
        return {"extra_body": {"structured_outputs": {"regex": decoding.regex}}}
    if decoding.choice is not None:
        return {"extra_body": {"structured_outputs": {"choice": list(decoding.choice)}}}
    if decoding.json_schema is not None:
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": decoding.json_schema}},
                "extra_body": {"structured_outputs": {"json": decoding.json_schema}}}
    return {}


class OpenAIEngine:
    """Chat completions, ``concurrency`` in flight, retried; ``model`` is the endpoint's model name."""

    name = "openai"
    local = False  # --model names what the endpoint serves: no checkpoint here
    Options = OpenAIOptions

    @staticmethod
    def default_batch_size(options: OpenAIOptions) -> int:
        """A few rounds of ``concurrency`` requests per call, so none waits long."""
        return 4 * options.concurrency

    def __init__(self, model: str, settings: GenerationSettings, options: OpenAIOptions,
                 decoding: Decoding | None = None):
        try:
            import openai
        except ImportError as e:
            raise UniferError(f"--engine openai needs the openai package (pip install openai): {e}") from None
        self._openai = openai
        self.model, self.settings, self.options, self.base_url = model, settings, options, options.base_url
        self.decoding = decoding or Decoding(max_new_tokens=settings.max_new_tokens)
        o = options
        self.image_format, self.image_detail = o.image_format, o.image_detail
        self.max_retries, self.retry_base_delay = o.max_retries, o.retry_base_delay
        self.retry_max_delay = o.retry_max_delay
        self.extra_body = dict(o.extra_body)
        self.max_requests, self.max_tokens_budget = o.max_requests, o.max_tokens_budget
        key = read_api_key(o.api_key_env, o.base_url)
        self.scrub = KeyScrubber(key)
        # Our own retry loop (max_retries=0 here): it counts requests for --max-requests and scrubs every error.
        self.client = openai.OpenAI(base_url=o.base_url, api_key=key, max_retries=0, timeout=o.request_timeout)
        self.pool = ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="openai-request")
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.requests_sent = 0
        self.tokens_used = 0
        self.budget_spent: str | None = None

    def request_fields(self, decoding: Decoding, seed: int | None) -> dict:
        """The chat-completion fields a decoding asks for (greedy: ``temperature=0`` and the token budget only)."""
        fields = {"temperature": decoding.temperature, "max_tokens": decoding.max_new_tokens}
        if not decoding.greedy:
            fields.update(top_p=decoding.top_p)
            if seed is not None:
                fields["seed"] = seed
        if decoding.n != 1:
            fields["n"] = decoding.n
        structured = structured_fields(decoding)
        extra = {**self.extra_body, **decoding.extra, **structured.pop("extra_body", {})}
        fields.update(structured, extra_body=extra or None)
        return fields

    # -- budget ---------------------------------------------------------------------------------------------
    def _take_request(self) -> bool:
        """Count one request about to be sent; False (and ``budget_spent``) once a budget is spent."""
        with self._lock:
            if self.budget_spent is None:
                if self.max_requests is not None and self.requests_sent >= self.max_requests:
                    self.budget_spent = f"--max-requests {self.max_requests} reached"
                elif self.max_tokens_budget is not None and self.tokens_used >= self.max_tokens_budget:
                    self.budget_spent = f"--max-tokens-budget {self.max_tokens_budget} reached ({self.tokens_used} used)"
            if self.budget_spent is not None:
                return False
            self.requests_sent += 1
            return True

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        with self._lock:
            delay = backoff_delay(attempt, self.retry_base_delay, self.retry_max_delay, self._rng)
        time.sleep(retry_after if retry_after is not None else delay)

    # -- one item -------------------------------------------------------------------------------------------
    def _request(self, image, prompt: str, decoding: Decoding, seed: int | None) -> list[Answer]:
        openai = self._openai
        messages = (chat_messages(image_data_url(image, self.image_format), prompt, self.image_detail)
                    if image is not None else [{"role": "user", "content": [{"type": "text", "text": prompt}]}])
        fields = self.request_fields(decoding, seed)
        last = "no request sent"
        for attempt in range(self.max_retries + 1):
            if not self._take_request():
                return [Answer.unsent(self.budget_spent)] * decoding.n  # left pending, a rerun answers it
            retry_after = None
            try:
                reply = self.client.chat.completions.create(model=self.model, messages=messages, **fields)
                return self._answers(reply, decoding.n)
            except openai.APIStatusError as e:
                status = e.status_code
                last = f"HTTP {status}: {self.scrub(_short(e.message))}"
                if status in FATAL_STATUSES:
                    with self._lock:  # before raising: no item waiting in the pool may send another request
                        self.budget_spent = self.budget_spent or "the endpoint refused"
                    raise EndpointError(f"{self.base_url} refused the request ({last}); check the base URL, "
                                        "--model and the API key") from None
                if status not in RETRY_STATUSES:
                    return [Answer("", 0, error=f"not retried: {last}")] * decoding.n
                retry_after = parse_retry_after(e.response.headers)
                if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                    return [Answer("", 0, error=f"{last}; the server asks to wait {retry_after:.0f}s")] * decoding.n
            except openai.APITimeoutError:
                last = f"no answer within {self.client.timeout}s (--request-timeout)"
            except openai.APIConnectionError as e:
                last = f"connection failed: {self.scrub(_short(str(e.__cause__ or e)))}"
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, openai.APIResponseValidationError) as e:
                last = f"unreadable response ({type(e).__name__}: {self.scrub(_short(str(e)))})"
            if attempt < self.max_retries:
                log.info("request failed (%s); retry %d of %d", last, attempt + 1, self.max_retries)
                self._sleep(attempt, retry_after)
        return [Answer("", 0, error=f"failed after {self.max_retries + 1} attempts: {last}")] * decoding.n

    def _answers(self, reply, n: int) -> list[Answer]:
        """One answer per choice; the reply's usage (one per request) goes with the first."""
        if isinstance(reply, str):  # the client hands back a non-JSON body as text
            raise ValueError(f"expected a JSON chat completion, got {len(reply)} characters of text")
        choices = sorted(reply.choices, key=lambda c: c.index or 0)
        if len(choices) != n:
            raise ValueError(f"the chat completion holds {len(choices)} choices, {n} were asked for")
        texts = [c.message.content for c in choices]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("the chat completion holds no message content")
        usage = None
        if reply.usage is not None:
            usage = {"prompt_tokens": int(reply.usage.prompt_tokens or 0),
                     "completion_tokens": int(reply.usage.completion_tokens or 0)}
            with self._lock:
                self.tokens_used += usage["prompt_tokens"] + usage["completion_tokens"]
        tokens = usage["completion_tokens"] if usage else 0
        return [Answer(t, tokens if i == 0 else 0, usage=usage if i == 0 else None, stop_reason=c.finish_reason)
                for i, (t, c) in enumerate(zip(texts, choices))]

    # -- the engine's interface -----------------------------------------------------------------------------
    def sample(self, images, prompts, decoding: Decoding, seeds=None) -> list[list[Answer]]:
        """``decoding.n`` answers per item, in order; ``Answer.unsent`` for an item not sent (a budget spent)."""
        images, prompts = list(images), list(prompts)
        seeds = seeds_for(seeds, len(prompts), decoding)
        futures = [self.pool.submit(self._request, img, p, decoding, s) for img, p, s in zip(images, prompts, seeds)]
        answers, fatal = [], None
        for f in futures:
            try:
                answers.append(f.result())
            except EndpointError as e:
                fatal = fatal or e
                answers.append([])
        if fatal is not None:
            raise fatal
        return answers

    def generate(self, images, prompts, decoding: Decoding | None = None, seeds=None) -> list[Answer]:
        decoding = decoding or self.decoding
        one_each(self.name, decoding)
        return [a[0] for a in self.sample(images, prompts, decoding, seeds)]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_extra_body(text: str | None) -> dict:
    """``--extra-body '{"repetition_penalty": 1.05}'`` → dict (one line naming the flag when it is not JSON)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UniferError(f"--extra-body is not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise UniferError(f"--extra-body must be a JSON object, got {text!r}")
    return value
