"""The response cache: what the key covers, persistence, and survival of kill -9."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from synth.cache import CachedResponse, ResponseCache, cache_key

REPO = Path(__file__).resolve().parents[1]
MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "describe <a_1><b_2>"}]
PARAMS = {"temperature": 0.7, "max_tokens": 100, "seed": 0, "sample": 0, "response_format": None}


def test_key_covers_teacher_params_prompt_hash_and_messages():
    base = cache_key("gpt-4o-mini", PARAMS, MSGS, "h1")
    assert base == cache_key("gpt-4o-mini", dict(reversed(list(PARAMS.items()))), MSGS, "h1")  # order-free
    assert len({
        base,
        cache_key("ollama/qwen3:8b", PARAMS, MSGS, "h1"),
        cache_key("gpt-4o-mini", {**PARAMS, "sample": 1}, MSGS, "h1"),
        cache_key("gpt-4o-mini", {**PARAMS, "temperature": 0.0}, MSGS, "h1"),
        cache_key("gpt-4o-mini", {**PARAMS, "max_tokens": 101}, MSGS, "h1"),
        cache_key("gpt-4o-mini", PARAMS, MSGS, "h2"),
        cache_key("gpt-4o-mini", PARAMS, [MSGS[0], {"role": "user", "content": "describe <a_1><b_3>"}], "h1"),
    }) == 7


def test_put_get_flush_and_reopen(tmp_path):
    with ResponseCache(tmp_path) as c:
        c.put("k1", CachedResponse("answer one", 10, 20))
        assert c.get("k1") == CachedResponse("answer one", 10, 20)  # visible before the flush
        assert c.get("nope") is None
    with ResponseCache(tmp_path) as c:
        assert c.get("k1") == CachedResponse("answer one", 10, 20) and len(c) == 1
    # only text, usage and the finish reason are stored: nothing else to leak
    cols = [r[1] for r in sqlite3.connect(tmp_path / ResponseCache.FILENAME).execute("PRAGMA table_info(responses)")]
    assert cols == ["key", "text", "tokens_in", "tokens_out", "created", "finish_reason"]


def test_truncated_answers_stay_truncated_and_old_caches_still_open(tmp_path):
    with ResponseCache(tmp_path / "new") as c:
        c.put("cut", CachedResponse("half an ans", 5, 7, "length"))
    with ResponseCache(tmp_path / "new") as c:
        assert c.get("cut").finish_reason == "length"
    # a cache written before finish reasons were kept: opened, read as finished, written again
    (tmp_path / "old").mkdir()
    db = sqlite3.connect(tmp_path / "old" / ResponseCache.FILENAME)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER NOT NULL,"
               " tokens_out INTEGER NOT NULL, created REAL NOT NULL) WITHOUT ROWID")
    db.execute("INSERT INTO responses VALUES ('k', 'old answer', 1, 2, 0)")
    db.commit()
    db.close()
    with ResponseCache(tmp_path / "old") as c:
        assert c.get("k") == CachedResponse("old answer", 1, 2, "stop")
        c.put("k2", CachedResponse("new", 1, 1, "length"))
    with ResponseCache(tmp_path / "old") as c:
        assert c.get("k2").finish_reason == "length" and len(c) == 2


WRITER = """
import sys, itertools
from synth.cache import ResponseCache, CachedResponse
c = ResponseCache(sys.argv[1], flush_every=50)
for i in itertools.count():
    c.put(f"k{i}", CachedResponse("x" * 500 + str(i), i, i))
    if i == 500:
        print("ready", flush=True)
"""


def test_survives_kill_minus_9_at_any_moment(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(tmp_path / ResponseCache.FILENAME)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    with ResponseCache(tmp_path) as c:
        n = len(c)
        assert n >= 500 and n % 50 == 0  # whole batches only, never a torn one
        for i in range(n):  # every committed answer is intact
            assert c.get(f"k{i}") == CachedResponse("x" * 500 + str(i), i, i)
        c.put("after", CachedResponse("fine", 1, 1))  # and the file is writable again
