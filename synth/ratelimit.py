"""Client-side rate limits: requests per minute and tokens per minute, as async token buckets.

A provider's limits are per minute; going over them only earns 429s and back-off, so the
engine spends its budget before sending instead. Each bucket refills continuously at
``rate/60`` per second up to ``capacity`` (by default one minute's worth, the burst a
provider tolerates). Waiters are served in arrival order (a lock around the wait), so a
large token request is not starved by a stream of small ones.

Concurrency itself is bounded by the engine's worker count (one request in flight per
worker), not here.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


class TokenBucket:
    """``await bucket.acquire(n)`` returns once ``n`` units are available and takes them."""

    def __init__(self, rate_per_minute: float, capacity: float | None = None):
        if rate_per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0  # units per second
        self.capacity = float(capacity if capacity is not None else rate_per_minute)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        # A single request larger than the bucket could never pass: let it through at a full bucket.
        amount = min(float(amount), self.capacity)
        async with self._lock:
            self._refill()
            while self._level < amount:
                await asyncio.sleep((amount - self._level) / self.rate)
                self._refill()
            self._level -= amount


@dataclass
class RateLimiter:
    """RPM and TPM limits together; ``None`` means unlimited (the fast path costs nothing)."""

    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        self._requests = TokenBucket(self.rpm) if self.rpm else None
        self._tokens = TokenBucket(self.tpm) if self.tpm else None

    @property
    def active(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def acquire(self, tokens: int = 0) -> None:
        if self._requests is not None:
            await self._requests.acquire(1)
        if self._tokens is not None and tokens > 0:
            await self._tokens.acquire(tokens)
