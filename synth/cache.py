"""The persistent response cache: one SQLite file in the run's ``cache_dir`` (``CACHE_DIR``).

Why SQLite in WAL mode: every committed transaction survives ``kill -9`` at any moment
(the write-ahead log is replayed or discarded whole on the next open), lookups by primary
key cost microseconds, and several runs may share one cache file. Writes are buffered in
memory and committed in batches by the engine (``flush`` every fraction of a second and at
the end): a run killed between two flushes loses only the answers of that fraction of a
second, which the next run sends again. ``synchronous=NORMAL`` is safe against a killed
process (not against a power cut, where at most the last transactions are lost, never the
file's integrity).

What is stored: the answer's text, its token usage and its finish reason (a truncated
answer is rejected again on a re-run, not taken as finished). Never request headers, never the
API key, never the prompt (the key is a hash of it).

The cache key is defined here and only here (``cache_key``).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import orjson


def _canonical(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


KEY_VERSION = 1


def cache_key(
    teacher: str,
    params: Mapping,
    messages: Sequence[Mapping],
    prompt_hash: str = "",
) -> str:
    """sha256 over the teacher, the generation parameters (temperature, max_tokens, seed,
    sample index, response format...), the template's hash and the rendered messages."""
    payload = {
        "v": KEY_VERSION,
        "teacher": teacher,
        "params": dict(params),
        "prompt_hash": prompt_hash,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


@dataclass(frozen=True)
class Completion:
    """One teacher answer: what a transport returns, the cache keeps and the engine checks."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"

    @property
    def truncated(self) -> bool:
        """The answer hit ``max_tokens``: not a finished text."""
        return self.finish_reason == "length"


CachedResponse = Completion  # what the cache's callers call a stored answer


class ResponseCache:
    """Single-writer cache: all calls come from the engine's event-loop thread."""

    FILENAME = "responses.sqlite3"

    def __init__(self, directory: str | os.PathLike, flush_every: int = 512):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER NOT NULL,"
            " tokens_out INTEGER NOT NULL, created REAL NOT NULL,"
            " finish_reason TEXT NOT NULL DEFAULT 'stop') WITHOUT ROWID"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "finish_reason" not in columns:  # a cache written before finish reasons were kept
            self._db.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT NOT NULL DEFAULT 'stop'")
        self._pending: dict[str, Completion] = {}
        self.flush_every = flush_every

    def get(self, key: str) -> Completion | None:
        hit = self._pending.get(key)
        if hit is not None:
            return hit
        row = self._db.execute(
            "SELECT text, tokens_in, tokens_out, finish_reason FROM responses WHERE key = ?", (key,)
        ).fetchone()
        return Completion(*row) if row else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, response: Completion) -> None:
        self._pending[key] = response
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> int:
        """Commit buffered answers in one transaction; returns how many."""
        if not self._pending:
            return 0
        now = time.time()
        rows = [(k, r.text, r.tokens_in, r.tokens_out, now, r.finish_reason) for k, r in self._pending.items()]
        with self._db:  # one transaction: all of these rows or none survive a kill
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO responses (key, text, tokens_in, tokens_out, created,"
                                 " finish_reason) VALUES (?, ?, ?, ?, ?, ?)", rows)
        self._pending.clear()
        return len(rows)

    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        return n + len(self._pending)

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
