"""Several replicas of one teacher: ``API_BASE=http://a:8000/v1,http://b:8000/v1``.

A local teacher at the paper's scale (Qwen3-32B) is served by several vLLM replicas. Each
request goes to the endpoint with the fewest requests in flight (ties: the one that has had
the fewest requests), never to the one that just failed it when another is there. An endpoint
that fails ``failures_to_set_aside`` times in a row (transport faults: 5xx, 429, timeouts,
dropped connections) is set aside for ``cooldown`` seconds, doubling each time it is set
aside again, up to ``max_cooldown``; a success restores it. When every endpoint is set aside
the one due back first is used, so a run never stalls on the pool.

Which endpoint answered is not part of the cache key: replicas serve the same model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit


def safe_url(url: str | None) -> str | None:
    """scheme://host:port/path only: a URL's user-info or query could carry a secret."""
    if not url:
        return url
    p = urlsplit(url)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname or ''}{port}{p.path}"


def safe_bases(api_base: str | None) -> str | None:
    """``API_BASE`` (one URL or several, comma-separated) with every URL made ``safe_url``."""
    return ",".join(safe_url(b) for b in split_bases(api_base)) or None


def split_bases(api_base: str | None) -> list[str]:
    """``API_BASE`` as a list: comma-separated, blanks dropped, order kept, repeats removed."""
    if not api_base:
        return []
    return list(dict.fromkeys(b.strip() for b in api_base.split(",") if b.strip()))


@dataclass
class Endpoint:
    base: str
    in_flight: int = 0
    requests: int = 0
    ok: int = 0
    failed: int = 0
    set_aside: int = 0                 # how many times it was set aside
    consecutive_failures: int = 0
    back_at: float = 0.0               # monotonic time it may be used again

    def summary(self) -> dict:
        return {"requests": self.requests, "ok": self.ok, "failed": self.failed,
                "set_aside": self.set_aside}


@dataclass
class EndpointPool:
    bases: list[str]
    failures_to_set_aside: int = 3
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    clock: Callable[[], float] = time.monotonic
    endpoints: list[Endpoint] = field(init=False)

    def __post_init__(self) -> None:
        if not self.bases:
            raise ValueError("an endpoint pool needs at least one base URL")
        self.endpoints = [Endpoint(b) for b in self.bases]

    def healthy(self) -> list[Endpoint]:
        now = self.clock()
        return [e for e in self.endpoints if e.back_at <= now]

    def pick(self, avoid: Endpoint | None = None) -> Endpoint:
        """The endpoint for the next request; call ``release`` when it has answered."""
        candidates = self.healthy() or [min(self.endpoints, key=lambda e: e.back_at)]
        if avoid is not None and len(candidates) > 1:
            candidates = [e for e in candidates if e is not avoid]
        ep = min(candidates, key=lambda e: (e.in_flight, e.requests))
        ep.in_flight += 1
        ep.requests += 1
        return ep

    def release(self, ep: Endpoint, outcome: str) -> None:
        """``outcome``: "ok"; "fault" (the endpoint's health is in doubt); "refused" (the
        server answered but refused this request: says nothing about its health)."""
        ep.in_flight -= 1
        if outcome == "ok":
            ep.ok += 1
            ep.consecutive_failures = 0
            return
        ep.failed += 1
        if outcome != "fault" or ep.back_at > self.clock():
            return  # a refusal says nothing of health; requests sent before a set-aside do not extend it
        ep.consecutive_failures += 1
        if ep.consecutive_failures >= self.failures_to_set_aside:
            self.set_aside(ep)

    def set_aside(self, ep: Endpoint) -> None:
        ep.back_at = self.clock() + min(self.max_cooldown, self.cooldown * 2 ** ep.set_aside)
        ep.set_aside += 1
        ep.consecutive_failures = 0

    def summary(self) -> dict[str, dict]:
        return {safe_url(e.base): e.summary() for e in self.endpoints}
