"""The teacher transport against the real loopback server: retries, faults, preflight,
routing, pricing, rate limits. Every request goes through the production client path."""
from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from synth.ratelimit import RateLimiter, TokenBucket  # noqa: E402
from synth.teacher import (  # noqa: E402
    PreflightError,
    Request,
    TeacherConfig,
    TeacherError,
    make_teacher,
    parse_retry_after,
    resolve_route,
)
from tests.teacher_server import ServerConfig, TeacherServer, free_port  # noqa: E402

PROMPT = [{"role": "user", "content": "History: <a_1><b_2> then <a_3><b_4>\nHidden next item: Blue Lamp <a_9><b_9>"}]


def _request(seed: int = 1) -> Request:
    return Request("user_narrative", PROMPT, 0.7, 64, seed)


async def _complete(base: str, n: int = 1, **cfg):
    teacher = make_teacher(TeacherConfig("openai/teacher", api_base=base, **cfg))
    await teacher.start()
    try:
        results = await asyncio.gather(*(teacher.complete(_request(i)) for i in range(n)),
                                       return_exceptions=True)
    finally:
        await teacher.aclose()
    return teacher, results


def test_every_fault_kind_is_retried_until_an_answer():
    faults = {1: "429", 2: "500", 3: "503", 4: "malformed", 5: "empty", 6: "drop", 7: "slow"}
    with TeacherServer(ServerConfig(fault_at=faults, retry_after="0", slow_s=2.0)) as srv:
        teacher, [result] = asyncio.run(_complete(srv.base_url, timeout=0.5, backoff_initial=0.01,
                                                  max_attempts=10))
    assert not isinstance(result, Exception), result
    # the answer mentions the history's SIDs but not the hidden item's
    assert "<a_1><b_2>" in result.text and "<a_3><b_4>" in result.text and "<a_9>" not in result.text
    assert teacher.retries == {"http_429": 1, "http_500": 1, "http_503": 1, "malformed": 1,
                               "empty": 1, "connection": 1, "timeout": 1}
    assert srv.requests == 8 and teacher.attempts == 8


def test_attempts_are_bounded_and_the_reason_is_kept():
    with TeacherServer(ServerConfig(fault_rates={"503": 1.0})) as srv:
        teacher, [result] = asyncio.run(_complete(srv.base_url, backoff_initial=0.01, max_attempts=3))
    assert isinstance(result, TeacherError) and result.reason == "http_503"
    assert srv.requests == 3


def test_client_errors_are_not_retried():
    with TeacherServer(ServerConfig(fault_at={1: "400"})) as srv:
        teacher, [result] = asyncio.run(_complete(srv.base_url, backoff_initial=0.01, max_attempts=5))
    assert isinstance(result, TeacherError) and result.reason == "http_400" and not result.retryable
    assert srv.requests == 1


def test_retry_after_is_honoured():
    with TeacherServer(ServerConfig(fault_at={1: "429"}, retry_after="1")) as srv:
        teacher, [result] = asyncio.run(_complete(srv.base_url, backoff_initial=0.01))
    assert not isinstance(result, Exception)
    (t1, d1, _, o1), (t2, d2, _, o2) = srv.log
    assert (o1, o2) == ("429", "ok") and d1 == d2
    assert t2 - t1 >= 0.95, "the retry came before Retry-After"


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    assert 9 <= parse_retry_after(formatdate(now + 10, usegmt=True), now=now) <= 10.5
    assert parse_retry_after(formatdate(now - 100, usegmt=True), now=now) == 0.0


def test_timeout_then_failed():
    # The server would answer after 30 s; two attempts of 0.3 s each end long before that
    # (the bound is loose on purpose: it holds on a loaded machine and fails without a timeout).
    with TeacherServer(ServerConfig(fault_rates={"slow": 1.0}, slow_s=30.0)) as srv:
        t0 = time.monotonic()
        teacher, [result] = asyncio.run(_complete(srv.base_url, timeout=0.3, backoff_initial=0.01,
                                                  max_attempts=2))
        assert time.monotonic() - t0 < 15
        assert srv.requests == 2
    assert isinstance(result, TeacherError) and result.reason == "timeout"


def test_preflight_missing_key_is_fast_and_says_what_to_set(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    resolve_route("metadata")  # litellm imported once, outside the timing
    # OpenAI itself is out of reach here: the missing key is found before any connection is tried
    teacher = make_teacher(TeacherConfig("gpt-4o-mini", preflight_timeout=30))
    with pytest.raises(PreflightError, match="OPENAI_API_KEY"):
        asyncio.run(teacher.start())
    assert teacher.attempts == 0 and teacher._session is None


def test_preflight_unreachable_server_is_fast_and_says_what_to_set():
    resolve_route("openai/x", "http://127.0.0.1:1/v1")
    t0 = time.monotonic()
    with pytest.raises(PreflightError, match="API_BASE"):
        asyncio.run(make_teacher(TeacherConfig("openai/x", api_base=f"http://127.0.0.1:{free_port()}/v1",
                                               preflight_timeout=30)).start())
    assert time.monotonic() - t0 < 15  # a refused connection is an answer: no waiting out the 30 s


def test_preflight_refused_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with TeacherServer(ServerConfig(require_key="sk-right")) as srv:
        with pytest.raises(PreflightError, match="refused the API key"):
            asyncio.run(make_teacher(TeacherConfig("openai/x", api_base=srv.base_url)).start())
        assert srv.requests == 0


def test_routing_and_pricing():
    r = resolve_route("gpt-4o-mini")
    assert (r.provider, r.transport, r.api_base, r.key_env) == ("openai", "http", "https://api.openai.com/v1",
                                                               "OPENAI_API_KEY")
    r = resolve_route("ollama/qwen3:8b")
    assert r.transport == "http" and r.api_base == "http://localhost:11434/v1" and r.model == "qwen3:8b"
    r = resolve_route("hosted_vllm/Qwen/Qwen3-32B", "http://10.0.0.5:8000")
    assert r.api_base == "http://10.0.0.5:8000/v1" and r.model == "Qwen/Qwen3-32B"
    assert resolve_route("anthropic/claude-3-5-haiku-20241022").transport == "litellm"
    assert resolve_route("metadata").transport == "metadata"
    with pytest.raises(PreflightError, match="TEACHER"):
        resolve_route("no-such-provider/at-all")
    t = make_teacher(TeacherConfig("gpt-4o-mini"))
    assert t.cost_usd(1_000_000, 0) == pytest.approx(0.15) and t.cost_usd(0, 1_000_000, batch=True) == pytest.approx(0.3)
    assert make_teacher(TeacherConfig("openai/my-local", api_base="http://127.0.0.1:1/v1")).prices() is None


def test_token_bucket_paces_requests():
    async def go():
        bucket = TokenBucket(rate_per_minute=600, capacity=1)  # 10 per second, no burst
        t0 = time.monotonic()
        for _ in range(6):
            await bucket.acquire()
        return time.monotonic() - t0

    assert 0.45 <= asyncio.run(go()) < 10  # at least the pacing; the upper bound only catches a hang

    async def unlimited():
        lim = RateLimiter()
        assert not lim.active
        await lim.acquire(10**9)

    asyncio.run(unlimited())


def test_many_concurrent_requests_share_one_session():
    with TeacherServer(ServerConfig(latency=5.0)) as srv:  # long enough for all 200 to be sent meanwhile
        teacher, results = asyncio.run(_complete(srv.base_url, n=200, concurrency=200))
    assert all(not isinstance(r, Exception) for r in results)
    # all in flight at once: aiohttp's default connector would hold 100
    assert srv.requests == 200 and srv.max_in_flight > 150, srv.max_in_flight
