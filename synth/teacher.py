"""Teachers: who answers a rendered prompt, and how the request travels.

A teacher is named by a litellm model string (``gpt-4o-mini``, ``ollama/qwen3:8b``,
``hosted_vllm/Qwen/Qwen3-32B``, ``openai/<name>`` with ``API_BASE``, anything litellm
routes) or ``metadata`` (the paper's rule-based baseline: no network, deterministic, and no
transport here: each step computes its answer, ``synth.metadata_teacher``).

litellm decides the route (provider, provider-local model name, default API base) and the
price (its bundled price map). OpenAI-compatible providers (OpenAI, vLLM, SGLang, Ollama's
``/v1``, llama.cpp, LM Studio, ``openai/<x>`` + ``API_BASE``...) are then served by our own
transport: one shared ``aiohttp`` session sized to the concurrency, over one or several
endpoints (``synth.endpoints``), because ``litellm.acompletion`` costs several times more CPU
per request than the teacher's own latency allows at high concurrency (bench/README.md).
Other providers (Anthropic, Bedrock, Vertex...) go through ``litellm.acompletion`` with its
own retries off, so one retry policy applies to every teacher.

What a server's answer means:

- 200 with content: an answer. ``finish_reason == "length"`` marks it truncated: the engine
  rejects it as ``truncated`` and draws again.
- 408/409/425/429/5xx, timeouts, dropped connections, malformed or empty bodies: transient;
  retried with exponential back-off and full jitter (``Retry-After`` honoured), on another
  endpoint when there is one, up to ``max_attempts``; then the record is "failed".
- The structured-output shape refused (400/422, or a 500 naming ``response_format``): the
  run steps down to a looser shape once (``synth.structured``) and sends again at once.
- 401/403 (key) and 404 (model or address): fatal for the run, with what to change.
- Any other 4xx: this request cannot succeed; it fails at once with the server's message.

The API key lives only in the request headers in memory: never logged, cached, or put in a
message (``_scrub`` removes it from any server text that is shown).
"""
from __future__ import annotations

import asyncio
import email.utils
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from synth.cache import Completion
from synth.endpoints import Endpoint, EndpointPool, safe_url, split_bases
from synth.errors import UserError
from synth.ratelimit import RateLimiter
from synth.structured import AUTO, PROMPT, next_mode, rejects_shape, shape_body, start_mode

_dumps = orjson.dumps
_loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError

METADATA = "metadata"
# Transient statuses: the same request may succeed later. Everything else is final.
RETRY_STATUS = frozenset({408, 409, 425, 429})
SERVER_MESSAGE_CHARS = 300


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUS or 500 <= status <= 599


def server_message(raw: bytes | str) -> str:
    """The human part of an error body: OpenAI's ``error.message``, FastAPI's ``detail``,
    or the text itself, on one line and bounded."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data = _loads(text)
    except (JSONDecodeError, ValueError):
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or data.get("detail") or data.get("message")
        if msg is not None:
            text = msg if isinstance(msg, str) else _dumps(msg).decode()
    return " ".join(text.split())[:SERVER_MESSAGE_CHARS]
# Providers whose chat endpoint is OpenAI's: sent by our own aiohttp transport.
OPENAI_COMPATIBLE = frozenset({
    "openai", "hosted_vllm", "ollama", "ollama_chat", "lm_studio", "llamafile", "litellm_proxy",
    "groq", "deepseek", "together_ai", "fireworks_ai", "deepinfra", "xinference",
})
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_JSON_HEADERS = {"Content-Type": "application/json"}


def import_litellm():
    """litellm, imported without reaching for the network (its price map is bundled)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


class PreflightError(UserError, RuntimeError):
    """The teacher cannot work (no key, server unreachable): says what to set."""


class TeacherError(Exception):
    """One request failed. ``reason`` is a short code that ends up in the failed record;
    ``detail`` says what happened (server text, key scrubbed); ``fatal`` means no request of
    this run can succeed (key refused, model unknown): the engine stops the run."""

    def __init__(self, reason: str, detail: str = "", retryable: bool = True,
                 retry_after: float | None = None, fatal: bool = False):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable and not fatal
        self.retry_after = retry_after
        self.fatal = fatal


def estimated_tokens(messages: list[dict]) -> int:
    """Prompt tokens, at ~4 characters a token for English: enough for TPM pacing and DRY_RUN."""
    return sum(len(m["content"]) for m in messages) // 4 + 8 * len(messages)


@dataclass(frozen=True)
class Request:
    """What the engine asks: the step, its rendered messages and the generation parameters."""

    step: str
    messages: list[dict]
    temperature: float
    max_tokens: int
    seed: int | None = None
    response_format: dict | None = None

    def estimated_tokens(self) -> int:
        return estimated_tokens(self.messages)


@dataclass(frozen=True)
class Route:
    teacher: str          # the TEACHER string as given
    provider: str         # litellm's provider name, or "metadata"
    model: str            # the provider-local model name sent in the request
    api_base: str | None  # chat endpoint's base URL (ends before /chat/completions); the first
    key_env: str | None   # the environment variable holding the key, if one is needed
    transport: str        # "metadata" | "http" | "litellm"
    api_bases: tuple[str, ...] = ()  # every endpoint (API_BASE may list several replicas)


@dataclass(frozen=True)
class TeacherConfig:
    """How requests travel; ``synth.engine.SynthConfig`` takes these defaults for its fields."""

    teacher: str                    # a litellm model string (TEACHER)
    api_base: str | None = None
    concurrency: int = 64
    timeout: float = 120.0          # seconds per request (per attempt)
    max_attempts: int = 6
    backoff_initial: float = 1.0    # seconds; doubles each attempt, full jitter
    backoff_max: float = 60.0
    max_retry_after: float = 600.0  # a Retry-After above this is clamped
    preflight_timeout: float = 3.0
    rpm: float | None = None
    tpm: float | None = None
    extra_body: dict | None = None   # merged into every request body (EXTRA_BODY)
    structured_output: str = AUTO    # where structured output starts: auto = json_schema


def _normalise_base(base: str, provider: str) -> str:
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        base = base[: -len("/chat/completions")]
    # vLLM/SGLang/Ollama serve the OpenAI API under /v1; accept the bare host too.
    if provider in {"hosted_vllm", "ollama", "ollama_chat"} and not base.endswith("/v1"):
        base += "/v1"
    return base


def resolve_route(teacher: str, api_base: str | None = None) -> Route:
    """Where requests for ``teacher`` go, decided by litellm's routing table."""
    if teacher == METADATA:
        return Route(teacher, METADATA, METADATA, None, None, METADATA)
    litellm = import_litellm()
    bases = split_bases(api_base)
    api_base = bases[0] if bases else None
    try:
        model, provider, _key, default_base = litellm.get_llm_provider(teacher, api_base=api_base)
    except Exception as e:  # litellm raises BadRequestError for unknown strings
        raise PreflightError(
            f"TEACHER={teacher!r} is not a model litellm can route ({type(e).__name__}); use e.g. "
            "gpt-4o-mini, ollama/qwen3:8b, hosted_vllm/<model> or openai/<model> with API_BASE=..., "
            "or TEACHER=metadata"
        ) from None
    env_base = {"hosted_vllm": "HOSTED_VLLM_API_BASE", "ollama": "OLLAMA_API_BASE",
                "ollama_chat": "OLLAMA_API_BASE", "openai": "OPENAI_BASE_URL"}.get(provider)
    base = api_base or (os.environ.get(env_base) if env_base else None) or default_base
    if provider in OPENAI_COMPATIBLE:
        if provider == "openai" and not base:
            base = os.environ.get("OPENAI_API_BASE") or OPENAI_DEFAULT_BASE
        if provider in {"ollama", "ollama_chat"} and not base:
            base = "http://localhost:11434"
        if not base:
            raise PreflightError(
                f"TEACHER={teacher} needs the server's address: set API_BASE=http://host:port/v1"
            )
        key_env = "OPENAI_API_KEY" if provider == "openai" else f"{provider.upper()}_API_KEY"
        all_bases = tuple(dict.fromkeys(_normalise_base(b, provider) for b in (bases or [base])))
        return Route(teacher, provider, model, all_bases[0], key_env, "http", all_bases)
    if len(bases) > 1:
        raise PreflightError(f"TEACHER={teacher} is served through litellm, which takes one API_BASE; "
                             f"{len(bases)} were given")
    return Route(teacher, provider, model, base, None, "litellm", (base,) if base else ())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; returns seconds (>= 0) or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Teacher:
    """Base: retries, rate limits, pricing, counters and the structured-output mode around
    one ``_attempt``."""

    transport = "abstract"

    def __init__(self, config: TeacherConfig, route: Route):
        self.config = config
        self.route = route
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self.attempts = 0
        self.retries: dict[str, int] = {}
        self._prices: tuple[float, float] | None = None
        self._unpriced = False
        self.structured_mode = start_mode(config.structured_output)
        self.fallbacks: list[dict] = []   # each step down of the structured-output mode

    @property
    def name(self) -> str:
        return self.route.teacher

    async def start(self) -> None:
        """Preflight: raises PreflightError fast when the teacher cannot work."""

    async def aclose(self) -> None:
        pass

    async def _attempt(self, request: Request, state: dict) -> Completion:
        """One try. ``state`` lives for one ``complete`` call: a transport keeps there what a
        retry should know (the endpoint that failed)."""
        raise NotImplementedError

    def _scrub(self, text: str) -> str:
        return text

    def _delay(self, exc: BaseException, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(exc, TeacherError) and exc.retry_after is not None:
            # The server said when: wait that long (plus a little jitter so the herd spreads).
            return min(exc.retry_after, self.config.max_retry_after) + random.uniform(0, 0.1)
        # exponential back-off with full jitter
        return random.uniform(0, min(self.config.backoff_max, self.config.backoff_initial * 2 ** (attempt - 1)))

    def _count_retry(self, exc: BaseException | None) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        self.retries[reason] = self.retries.get(reason, 0) + 1

    async def _try(self, request: Request, state: dict) -> Completion:
        if self.limiter.active:
            await self.limiter.acquire(request.estimated_tokens() + request.max_tokens)
        return await self._attempt(request, state)

    async def complete(self, request: Request) -> Completion:
        """One answer, with retries; raises TeacherError(reason) when it gives up.

        The first attempt runs outside tenacity: most requests succeed at once, and building
        a retry controller per request costs CPU (bench/README.md). Failures go to tenacity
        for the remaining ``max_attempts - 1`` attempts."""
        state: dict = {}
        try:
            return await self._try(request, state)
        except TeacherError as e:
            if not e.retryable or self.config.max_attempts <= 1:
                raise
            first = e
        self._count_retry(first)
        await asyncio.sleep(self._delay(first, 1))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_attempts - 1),
            wait=lambda rs: self._delay(rs.outcome.exception(), rs.attempt_number + 1),
            retry=retry_if_exception(lambda e: isinstance(e, TeacherError) and e.retryable),
            before_sleep=lambda rs: self._count_retry(rs.outcome.exception()),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._try(request, state)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- structured output ----
    def _shaped(self, request: Request, body: dict, mode: str) -> dict:
        """``body`` (model, messages, parameters) in the structured-output ``mode``, with EXTRA_BODY."""
        body = shape_body(body, request.response_format, mode)
        if self.config.extra_body:
            body.update(self.config.extra_body)
        return body

    def _step_down(self, sent_mode: str, where: str, status: int | str, message: str) -> bool:
        """The server refused ``sent_mode``: move the run to the next looser mode (once, however
        many requests saw the refusal). False when no looser mode is left."""
        if self.structured_mode != sent_mode:
            return True  # another request already stepped down: send again in the new mode
        looser = next_mode(sent_mode)
        if looser is None:
            return False
        self.fallbacks.append({"from": sent_mode, "to": looser, "endpoint": safe_url(where),
                               "status": status, "message": self._scrub(message)[:SERVER_MESSAGE_CHARS]})
        self.structured_mode = looser
        print(f"teacher {self.name}: {safe_url(where) or 'the server'} refused structured output "
              f"'{sent_mode}' (HTTP {status}: {self._scrub(message)[:160]}); using '{looser}' for the "
              "rest of this run", file=sys.stderr, flush=True)
        return True

    def structured_summary(self) -> dict:
        return {"start": start_mode(self.config.structured_output), "mode": self.structured_mode,
                "fallbacks": list(self.fallbacks)}

    def _refusal(self, status: int, message: str, where: str | None) -> TeacherError:
        """The error for a final (non-transient) HTTP status, saying what to change."""
        at = f"the teacher at {safe_url(where)}" if where else f"TEACHER={self.name}"
        msg = self._scrub(message)
        if status in (401, 403):
            key = self.route.key_env or "the provider's API key variable"
            return TeacherError(f"http_{status}", f"{at} refused the API key (HTTP {status}: {msg}): check {key}",
                                fatal=True)
        if status == 404:
            return TeacherError("http_404", f"{at} does not know model {self.route.model!r} or has no chat "
                                f"endpoint there (HTTP 404: {msg}): check the model name in TEACHER= and "
                                "API_BASE (an OpenAI-compatible base ends in /v1)", fatal=True)
        return TeacherError(f"http_{status}", f"{at} refused the request (HTTP {status}: {msg}): check "
                            "EXTRA_BODY, MAX_TOKENS and the model's context length", retryable=False)

    # ---- pricing (litellm's bundled map) ----
    def prices(self) -> tuple[float, float] | None:
        """USD per input token and per output token, or None when litellm does not know
        the model (a local server: free)."""
        if self._prices is None:
            litellm = import_litellm()
            for name in (self.route.teacher, self.route.model, f"{self.route.provider}/{self.route.model}"):
                try:
                    cin, cout = litellm.cost_per_token(model=name, prompt_tokens=1_000_000,
                                                       completion_tokens=1_000_000)
                    self._prices = (cin / 1e6, cout / 1e6)
                    break
                except Exception:
                    continue
            else:
                self._prices = (0.0, 0.0)
                self._unpriced = True
        return None if self._unpriced else self._prices

    def cost_usd(self, tokens_in: int, tokens_out: int, batch: bool = False) -> float:
        p = self.prices() or (0.0, 0.0)
        cost = tokens_in * p[0] + tokens_out * p[1]
        return cost / 2 if batch else cost


class HTTPTeacher(Teacher):
    """OpenAI-compatible chat completions over one shared aiohttp session, to one endpoint or
    several replicas (``synth.endpoints``)."""

    transport = "http"

    def __init__(self, config: TeacherConfig, route: Route):
        super().__init__(config, route)
        self.pool = EndpointPool(list(route.api_bases or (route.api_base,)))
        self._key = os.environ.get(route.key_env or "") or (
            os.environ.get("OPENAI_API_KEY") if route.provider != "openai" else None)
        # Only the key rides on the session; Content-Type is per request (the Batch API uploads
        # multipart forms through the same session).
        self._headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)

    @property
    def needs_key(self) -> bool:
        # OpenAI itself (and any hosted provider) needs a key; a self-hosted server
        # (API_BASE on a private address) usually does not.
        return self.route.api_base in (OPENAI_DEFAULT_BASE,) or (
            self.route.provider not in {"openai", "hosted_vllm", "ollama", "ollama_chat", "lm_studio",
                                        "llamafile", "litellm_proxy", "xinference"})

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def start(self) -> None:
        if self.needs_key and not self._key:
            raise PreflightError(
                f"TEACHER={self.name} needs an API key: set {self.route.key_env}=... in the environment "
                "(never on the command line), or point API_BASE=http://host:port/v1 at an "
                "OpenAI-compatible server"
            )
        n = max(1, self.config.concurrency)
        # Sized explicitly: aiohttp's default connector holds only 100 connections.
        connector = aiohttp.TCPConnector(limit=n, limit_per_host=n, ttl_dns_cache=300,
                                         keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers,
                                              json_serialize=lambda o: _dumps(o).decode(),
                                              auto_decompress=True)
        try:
            await self._probe_all()
        except PreflightError:
            await self.aclose()
            raise

    async def _probe(self, ep: Endpoint) -> str | None:
        """GET /models on one endpoint: None when it answers, else why not (for the warning).
        A refused key raises: no endpoint will take it."""
        assert self._session is not None
        try:
            async with self._session.get(
                f"{ep.base}/models", timeout=aiohttp.ClientTimeout(total=self.config.preflight_timeout)
            ) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as e:
            return f"{type(e).__name__}: {self._scrub(str(e)) or 'timed out'}"
        if status in (401, 403):
            raise PreflightError(
                f"the teacher at {safe_url(ep.base)} refused the API key (HTTP {status}): "
                f"check {self.route.key_env}"
            )
        return f"HTTP {status}" if is_retryable_status(status) else None

    async def _probe_all(self) -> None:
        """Fails in about a second if no endpoint listens or the key is refused; an endpoint
        that does not answer while others do is set aside (and tried again later)."""
        problems = await asyncio.gather(*(self._probe(ep) for ep in self.pool.endpoints))
        down = [(ep, why) for ep, why in zip(self.pool.endpoints, problems) if why]
        if len(down) == len(self.pool.endpoints):
            ep, why = down[0]
            where = ", ".join(safe_url(e.base) for e in self.pool.endpoints)
            raise PreflightError(
                f"cannot reach the teacher at {where} ({why}): start the server, or set "
                "API_BASE=http://host:port/v1 to where it listens"
            )
        for ep, why in down:
            self.pool.set_aside(ep)
            print(f"teacher {self.name}: {safe_url(ep.base)} does not answer ({why}); set aside, "
                  "the other endpoints take its requests", file=sys.stderr, flush=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body_dict(self, r: Request, mode: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.route.model, "messages": r.messages,
                                "temperature": r.temperature, "max_tokens": r.max_tokens}
        if r.seed is not None:
            body["seed"] = r.seed
        return self._shaped(r, body, mode or self.structured_mode)

    async def _post(self, ep: Endpoint, body: dict) -> tuple[int, bytes, str | None]:
        """Status, body and Retry-After of one POST; transport faults raise TeacherError."""
        assert self._session is not None, "call start() first"
        try:
            async with self._session.post(f"{ep.base}/chat/completions", data=_dumps(body),
                                          headers=_JSON_HEADERS, timeout=self._timeout) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except asyncio.TimeoutError:
            raise TeacherError("timeout", f"no answer within {self.config.timeout:g} s") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as e:
            raise TeacherError("connection", type(e).__name__) from None

    async def _attempt(self, request: Request, state: dict) -> Completion:
        while True:
            mode = self.structured_mode
            body = self._body_dict(request, mode)
            ep = self.pool.pick(avoid=state.get("avoid"))
            self.attempts += 1
            try:
                status, raw, retry_after = await self._post(ep, body)
                if status == 200:
                    comp = parse_chat_completion(raw)
                    self.pool.release(ep, "ok")
                    return comp
            except TeacherError:
                self.pool.release(ep, "fault")
                state["avoid"] = ep
                raise
            message = server_message(raw)
            if (request.response_format is not None and mode != PROMPT and rejects_shape(status, message)
                    and self._step_down(mode, ep.base, status, message)):
                self.pool.release(ep, "refused")
                continue  # the same request in the looser shape, at once: not a retry
            if is_retryable_status(status):
                self.pool.release(ep, "fault")
                state["avoid"] = ep
                raise TeacherError(f"http_{status}", self._scrub(message),
                                   retry_after=parse_retry_after(retry_after))
            self.pool.release(ep, "refused")
            raise self._refusal(status, message, ep.base)


def parse_chat_completion(raw: bytes) -> Completion:
    """The text, usage and finish reason of an OpenAI chat-completion body. Malformed or
    empty -> a retryable error; empty because it ran out of tokens -> a truncated answer."""
    try:
        data = _loads(raw)
        choice = data["choices"][0]
        text = choice["message"].get("content")
        finish = choice.get("finish_reason") or "stop"
    except (JSONDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise TeacherError("malformed", "body is not a chat completion") from None
    if not isinstance(finish, str):
        finish = "stop"
    if not isinstance(text, str) or not text.strip():
        if finish != "length":
            raise TeacherError("empty", "no content in the answer")
        text = ""  # a reasoning model that spent every token thinking: truncated
    usage = data.get("usage") or {}
    return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                      finish)


class BatchTeacher(HTTPTeacher):
    """BATCH=1: the OpenAI Batch API (half price, answers within 24 h).

    The engine does not change: each ``complete`` call parks its request in a pending list
    and awaits a future. A background task submits the pending requests as one batch once
    no new request has arrived for ``quiet`` seconds (all records are then waiting on a
    stage; in batch mode the engine runs one worker per record) or ``max_batch`` are
    pending: upload a JSONL file (``POST /files``, purpose "batch"), create the batch
    (``POST /batches``), poll it (``GET /batches/{id}``), download the output and error
    files, and resolve each future from its ``custom_id``. So stage 1 of every record goes
    out as one batch, then stage 2 (and resamples) as the next: the same cache, checks and
    corpus as a real-time run. A line that failed is retried in a later batch, up to
    ``max_attempts``."""

    transport = "batch"

    def __init__(self, config: TeacherConfig, route: Route, poll_interval: float = 10.0,
                 quiet: float = 0.5, max_batch: int = 50_000):
        super().__init__(config, route)
        self.poll_interval = float(os.environ.get("BATCH_POLL_S", poll_interval))
        self.quiet = quiet
        self.max_batch = max_batch
        self.batches = 0
        self._pending: list[tuple[str, dict, asyncio.Future]] = []
        self._last = 0.0
        self._ids = 0
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.route.provider != "openai":
            raise PreflightError(f"BATCH=1 needs an OpenAI teacher (the Batch API); TEACHER={self.name} "
                                 "is served by " + self.route.provider + ": run without BATCH")
        await super().start()
        self._loop_task = asyncio.create_task(self._batcher())

    async def aclose(self) -> None:
        for t in [self._loop_task, *self._tasks]:
            if t is not None:
                t.cancel()
        await super().aclose()

    async def complete(self, request: Request) -> Completion:
        body = self._body_dict(request)
        for attempt in range(1, self.config.max_attempts + 1):
            fut = asyncio.get_running_loop().create_future()
            self._ids += 1
            self._pending.append((f"r{self._ids}", body, fut))
            self._last = time.monotonic()
            self.attempts += 1
            try:
                return await fut
            except TeacherError as e:
                if not e.retryable or attempt == self.config.max_attempts:
                    raise
                self._count_retry(e)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _batcher(self) -> None:
        while True:
            await asyncio.sleep(min(self.quiet, 0.1))
            if self._pending and (len(self._pending) >= self.max_batch
                                  or time.monotonic() - self._last >= self.quiet):
                lines, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                task = asyncio.create_task(self._run_batch(lines))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _json(self, method: str, path: str, **kw) -> dict:
        assert self._session is not None
        async with self._session.request(method, f"{self.route.api_base}{path}", timeout=self._timeout,
                                         **kw) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise TeacherError(f"batch_http_{resp.status}", server_message(raw),
                                   retryable=is_retryable_status(resp.status))
        return _loads(raw)

    async def _run_batch(self, lines: list[tuple[str, dict, asyncio.Future]]) -> None:
        futures = {cid: fut for cid, _, fut in lines}
        try:
            jsonl = b"".join(_dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                                     "body": body}) + b"\n" for cid, body, _ in lines)
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", jsonl, filename="requests.jsonl", content_type="application/jsonl")
            uploaded = await self._json("POST", "/files", data=form)
            batch = await self._json("POST", "/batches", data=_dumps({
                "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h"}), headers={"Content-Type": "application/json"})
            self.batches += 1
            while batch.get("status") not in ("completed", "failed", "expired", "cancelled"):
                await asyncio.sleep(self.poll_interval)
                batch = await self._json("GET", f"/batches/{batch['id']}")
            if batch["status"] != "completed":
                raise TeacherError(f"batch_{batch['status']}")
            for key in ("output_file_id", "error_file_id"):
                if batch.get(key):
                    await self._resolve(batch[key], futures)
            for fut in futures.values():
                if not fut.done():
                    fut.set_exception(TeacherError("batch_missing", "no line for this request"))
        except (TeacherError, aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as e:
            err = e if isinstance(e, TeacherError) else TeacherError("batch_error", type(e).__name__)
            for fut in futures.values():
                if not fut.done():
                    fut.set_exception(TeacherError(err.reason, retryable=err.retryable))

    async def _resolve(self, file_id: str, futures: dict[str, asyncio.Future]) -> None:
        assert self._session is not None
        async with self._session.get(f"{self.route.api_base}/files/{file_id}/content",
                                     timeout=self._timeout) as resp:
            if resp.status != 200:
                raise TeacherError(f"batch_http_{resp.status}")
            raw = await resp.read()
        for line in raw.splitlines():
            if not line.strip():
                continue
            rec = _loads(line)
            fut = futures.get(rec.get("custom_id"))
            if fut is None or fut.done():
                continue
            response = rec.get("response") or {}
            status = response.get("status_code")
            try:
                if rec.get("error") or status != 200:
                    raise TeacherError(f"http_{status}" if status else "batch_line_error",
                                       retryable=status is None or is_retryable_status(status))
                fut.set_result(parse_chat_completion(_dumps(response.get("body"))))
            except TeacherError as e:
                fut.set_exception(e)


class LiteLLMTeacher(Teacher):
    """Providers that do not speak OpenAI's API: ``litellm.acompletion`` (several times the CPU
    per request of the aiohttp transport)."""

    transport = "litellm"

    async def start(self) -> None:
        litellm = import_litellm()
        env = litellm.validate_environment(self.route.teacher)
        if not env.get("keys_in_environment", True):
            missing = ", ".join(env.get("missing_keys") or [])
            raise PreflightError(f"TEACHER={self.name} needs {missing}: set it in the environment")
        self._litellm = litellm

    def _kwargs(self, request: Request, mode: str) -> dict[str, Any]:
        body = self._shaped(request, {"messages": request.messages}, mode)
        kwargs: dict[str, Any] = dict(
            model=self.route.teacher, messages=body.pop("messages"), temperature=request.temperature,
            max_tokens=request.max_tokens, timeout=self.config.timeout, num_retries=0, drop_params=True)
        if "response_format" in body:
            kwargs["response_format"] = body.pop("response_format")
        if body:  # EXTRA_BODY
            kwargs["extra_body"] = body
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if self.route.api_base:
            kwargs["api_base"] = self.route.api_base
        return kwargs

    async def _attempt(self, request: Request, state: dict) -> Completion:
        litellm = self._litellm
        while True:
            mode = self.structured_mode
            self.attempts += 1
            try:
                resp = await litellm.acompletion(**self._kwargs(request, mode))
                break
            except (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
                    litellm.APIConnectionError, litellm.Timeout) as e:
                status = getattr(e, "status_code", None)
                hdrs = getattr(getattr(e, "response", None), "headers", None) or {}
                raise TeacherError(f"http_{status}" if status else "connection", retryable=True,
                                   retry_after=parse_retry_after(hdrs.get("retry-after"))) from None
            except (litellm.APIError, litellm.AuthenticationError, litellm.PermissionDeniedError,
                    litellm.NotFoundError, litellm.BadRequestError, litellm.UnprocessableEntityError) as e:
                status = int(getattr(e, "status_code", None) or 0)
                message = server_message(str(getattr(e, "message", "") or e))
                if (request.response_format is not None and mode != PROMPT and rejects_shape(status, message)
                        and self._step_down(mode, self.route.api_base or "", status, message)):
                    continue
                if not status or is_retryable_status(status):
                    raise TeacherError(f"http_{status}", message, retryable=True) from None
                raise self._refusal(status, message, self.route.api_base) from None
        try:
            choice = resp.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError):
            raise TeacherError("malformed") from None
        finish = getattr(choice, "finish_reason", None) or "stop"
        if not isinstance(text, str) or not text.strip():
            if finish != "length":
                raise TeacherError("empty")
            text = ""
        usage = getattr(resp, "usage", None)
        return Completion(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0), finish)


def make_teacher(config: TeacherConfig, batch: bool = False) -> Teacher:
    """The transport for ``config.teacher``; ``batch`` picks the OpenAI Batch API. The metadata
    baseline has none: its steps answer from their context (``synth.steps``)."""
    route = resolve_route(config.teacher, config.api_base)
    if route.transport == METADATA:
        raise ValueError("TEACHER=metadata sends no requests: its answers are the steps' rules")
    if batch:
        if route.transport != "http" or route.provider != "openai":
            raise PreflightError(f"BATCH=1 needs an OpenAI teacher (the Batch API); TEACHER={config.teacher} "
                                 f"is served by {route.provider}: run without BATCH")
        return BatchTeacher(config, route)
    return {"http": HTTPTeacher, "litellm": LiteLLMTeacher}[route.transport](config, route)
