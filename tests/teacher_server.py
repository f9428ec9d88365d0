"""A real OpenAI-compatible teacher on 127.0.0.1 for tests and benchmarks (aiohttp).

``POST /v1/chat/completions`` answers are content-aware, so outputs pass or fail the
engine's checks on purpose:

- a request with a ``json_schema`` response format (item stage 1) gets a JSON object
  generated from that schema;
- any other request gets a paragraph of made-up words (never an item title) that
  mentions, in order, every SID found in the user turn except those on a line that names
  a hidden/held-out/next/target item (the reasoning stage's reference item), and ends by
  recommending the SIDs of a line that asks to *recommend* an item (the narrative stage's
  target, which a compliant teacher names last): a line asking for both is a recommendation.

Content modes (``mode``): ``good``; ``same`` (every answer has the same words: near
duplicates); ``leak`` (also copies the hidden item's line, title and SID when it has one,
into the answer: the reasoning stage fails ``leak_title``/``leak_sid``); ``title`` (also
copies the first history title, a ``Title:`` line of the reasoning prompt, into the answer:
the reasoning fails ``title_in_text``); ``nosid`` (no SIDs at all: stage 2 fails ``missing_sid``);
``badjson`` (stage-1 JSON is broken). ``reject_rate`` turns that share of answers bad
(chosen by a hash of the request, so the same request with the same ``seed`` always gets
the same answer, and a new seed gets a new draw: what the engine's resampling relies on).

Server behaviours of real OpenAI-compatible servers (what vLLM, Ollama, llama.cpp, LM
Studio do differently): ``accepts`` lists the ``response_format`` types the server takes
(llama.cpp's: ``json_object`` and ``text``); a refused one is answered in ``reject_style``:
``llamacpp`` (HTTP 500 with llama-cpp-python's validation message), ``422`` (FastAPI) or
``400``. A request that asks for JSON without a schema (``json_object``, or no
``response_format``) gets JSON made from the schema written in its system prompt, in plain
mode wrapped in prose and a code fence as chat models do. ``truncate_rate`` answers that
share with ``finish_reason: "length"`` and a cut text; ``status_all`` answers every route
(``/models`` too) with that status (a replica that is down: 503; a refused key: 401);
``models`` makes an unknown model a 404 as vLLM does. Counters: ``formats`` (requests by
``response_format`` type, ``text`` when absent).

Faults, by rate (seeded) or by request number (1-based, counted over chat requests):
``429`` (with ``Retry-After``), ``500``, ``503``, ``slow`` (answers after ``slow_s``),
``malformed`` (a body that is not JSON), ``empty`` (content ""), ``drop`` (closes the
connection without an answer). Counters: ``requests`` (chat completions received),
``statuses``, and a ``log`` of (time, request digest, seed, outcome).

Standalone, for benchmarks::

    python -m tests.teacher_server --port 8123 --latency 1.0
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

try:
    import orjson

    def _dumps(o) -> bytes:
        return orjson.dumps(o)

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def _dumps(o) -> bytes:
        return json.dumps(o).encode()

    _loads = json.loads

SID_RUN = re.compile(r"(?:<[a-z]_\d+>)+")
HIDDEN_LINE = re.compile(r"hidden|held[- ]out|next item|target|do not reveal|never (?:mention|reveal)",
                         re.IGNORECASE)
RECOMMEND_LINE = re.compile(r"\brecommend", re.IGNORECASE)
TITLE_LINE = re.compile(r"^\s*Title: (.+)$", re.MULTILINE)
SYLLABLES = ["lor", "vak", "tes", "min", "qua", "zer", "bol", "nix", "dra", "pel", "sur", "kov",
             "ith", "mon", "gal", "fey", "rud", "sol", "tam", "wex", "yor", "jin", "hap", "cel"]
FAULTS = ("429", "500", "503", "<any status>", "slow", "malformed", "empty", "drop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(n)]


def _sentence(rng: random.Random, n: int = 12) -> str:
    w = _words(rng, n)
    return " ".join(w).capitalize() + "."


def _string(rng: random.Random, schema: dict) -> str:
    lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = " ".join(_sentence(rng) for _ in range(2))
    while len(text) < lo:
        text += " " + _sentence(rng)
    return text[: int(hi)] if hi else text


def fake_from_schema(schema: dict, rng: random.Random, root: dict | None = None):
    """A value that satisfies a (simple) JSON schema: objects, arrays, strings, numbers, enums."""
    root = root or schema
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return fake_from_schema(node, rng, root)
    for comb in ("anyOf", "oneOf", "allOf"):
        if comb in schema:
            return fake_from_schema(schema[comb][0], rng, root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type", "string")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        return {k: fake_from_schema(v, rng, root) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = max(int(schema.get("minItems", 0)), 3)
        if "maxItems" in schema:
            n = min(n, int(schema["maxItems"]))
        item = schema.get("items", {"type": "string"})
        if item.get("type", "string") == "string" and "minLength" not in item:
            return [" ".join(_words(rng, 3)) for _ in range(n)]
        return [fake_from_schema(item, rng, root) for _ in range(n)]
    if t == "string":
        return _string(rng, schema)
    if t in ("integer", "number"):
        return schema.get("minimum", 1)
    if t == "boolean":
        return True
    return None


@dataclass
class ServerConfig:
    latency: float = 0.0
    latency_jitter: float = 0.0
    mode: str = "good"
    reject_rate: float = 0.0
    fault_rates: dict[str, float] = field(default_factory=dict)
    fault_at: dict[int, str] = field(default_factory=dict)
    retry_after: str = "1"
    slow_s: float = 30.0
    seed: int = 0
    require_key: str | None = None  # when set, requests must carry "Bearer <key>"
    sentences: int = 10
    keep_bodies: bool = False       # keep every chat request body (tests inspect prompts)
    accepts: tuple[str, ...] = ("json_schema", "json_object", "text")
    reject_style: str = "llamacpp"  # how a refused response_format is answered: llamacpp | 422 | 400
    truncate_rate: float = 0.0      # share of answers cut off with finish_reason "length"
    status_all: int | None = None   # every route answers this status
    models: tuple[str, ...] | None = None  # served model names; another one is a 404


LLAMACPP_REJECTION = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be 'text' or "
    "'json_object' [type=literal_error, input_value='json_schema', input_type=str]")
SCHEMA_HINT = re.compile(r"matches this JSON Schema: (\{.*\})\.\s*$", re.DOTALL)


class TeacherServer:
    """Start with ``start()`` (own thread and loop, random free port) or ``serve_forever``."""

    def __init__(self, config: ServerConfig | None = None, port: int = 0, host: str = "127.0.0.1"):
        self.config = config or ServerConfig()
        self.host, self.port = host, port or free_port()
        self.requests = 0
        self.model_requests = 0
        self.batch_lines = 0
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0  # requests waiting out their latency
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.statuses: dict[str, int] = {}
        self.formats: dict[str, int] = {}
        self.log: list[tuple[float, str, int | None, str]] = []
        self._rng = random.Random(self.config.seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- the app ----
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        # the OpenAI Batch API: upload a JSONL file, create a batch, poll it, download the output
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self.get_batch)
        return app

    def _count(self, outcome: str) -> None:
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1

    def _authorised(self, request: web.Request) -> bool:
        key = self.config.require_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    async def models(self, request: web.Request) -> web.Response:
        self.model_requests += 1
        if self.config.status_all:
            return web.Response(status=self.config.status_all, body=b'{"error":{"message":"injected"}}')
        if not self._authorised(request):
            return web.Response(status=401, body=b'{"error":{"message":"bad key"}}')
        return web.Response(body=_dumps({"object": "list", "data": [{"id": "teacher", "object": "model"}]}),
                            content_type="application/json")

    def _fault(self, n: int) -> str | None:
        if n in self.config.fault_at:
            return self.config.fault_at[n]
        for kind, rate in self.config.fault_rates.items():
            if rate and self._rng.random() < rate:
                return kind
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        n = self.requests
        raw = await request.read()
        if not self._authorised(request):
            self._count("401")
            return web.Response(status=401, body=b'{"error":{"message":"bad key"}}')
        try:
            body = _loads(raw)
        except ValueError:
            self._count("400")
            return web.Response(status=400, body=b'{"error":{"message":"not JSON"}}')
        seed = body.get("seed")
        if self.config.keep_bodies:
            self.bodies.append(body)
        refusal = self._refusal(body)
        if refusal is not None:
            return refusal
        fault = self._fault(n)
        self.log.append((time.monotonic(), _request_digest(body), seed, fault or "ok"))
        delay = self.config.latency
        if self.config.latency_jitter:
            delay += self._rng.uniform(0, self.config.latency_jitter)
        if fault == "slow":
            delay = max(delay, self.config.slow_s)
        if delay:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(delay)
            finally:
                self.in_flight -= 1
        if fault and fault.isdigit():  # "429", "500", "503", or any other status
            self._count(fault)
            headers = {"Retry-After": self.config.retry_after} if fault == "429" else {}
            return web.Response(status=int(fault), headers=headers,
                                body=b'{"error":{"message":"injected fault"}}')
        if fault == "drop":
            self._count("drop")
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("dropped on purpose")
        if fault == "malformed":
            self._count("malformed")
            return web.Response(body=b'{"choices": [ {"message": ', content_type="application/json")
        text = "" if fault == "empty" else self.answer(body)
        self._count("empty" if fault == "empty" else "200")
        return web.Response(body=_dumps(self.completion(body, text, n)), content_type="application/json")

    def _refusal(self, body: dict) -> web.Response | None:
        """What a real server answers before generating: a status for everything, an unknown
        model, a response_format it does not take."""
        cfg = self.config
        if cfg.status_all:
            self._count(str(cfg.status_all))
            return web.Response(status=cfg.status_all, body=b'{"error":{"message":"injected status"}}')
        if cfg.models is not None and body.get("model") not in cfg.models:
            self._count("404")
            return web.json_response({"object": "error", "message": f"The model `{body.get('model')}` does "
                                      "not exist.", "type": "NotFoundError", "code": 404}, status=404)
        kind = (body.get("response_format") or {}).get("type", "text")
        self.formats[kind] = self.formats.get(kind, 0) + 1
        if kind in cfg.accepts:
            return None
        self._count(f"refused_{kind}")
        if cfg.reject_style == "llamacpp":  # llama-cpp-python: pydantic's error, as a 500
            return web.json_response({"error": {"message": LLAMACPP_REJECTION, "type": "internal_server_error"}},
                                     status=500)
        if cfg.reject_style == "422":  # FastAPI servers
            return web.json_response({"detail": [{"loc": ["body", "response_format", "type"],
                                                  "msg": f"unsupported type {kind!r}"}]}, status=422)
        return web.json_response({"error": {"message": f"'response_format.type' must be one of {cfg.accepts}",
                                            "type": "invalid_request_error"}}, status=400)

    def _truncated(self, body: dict) -> bool:
        rate = self.config.truncate_rate
        return bool(rate) and random.Random(f"cut:{_request_digest(body)}:{body.get('seed')}").random() < rate

    def completion(self, body: dict, text: str, n: int) -> dict:
        prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
        finish = "stop"
        if self._truncated(body):
            text, finish = text[: max(1, len(text) // 3)], "length"
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "teacher"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(text) // 4,
                      "total_tokens": prompt_chars // 4 + len(text) // 4},
        }

    # ---- Batch API ----
    async def upload(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, body=b'{"error":{"message":"bad key"}}')
        form = await request.post()
        data = form["file"].file.read()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data),
                                  "purpose": form.get("purpose", "batch")})

    async def file_content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/jsonl")

    async def create_batch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, body=b'{"error":{"message":"bad key"}}')
        spec = _loads(await request.read())
        out_lines = []
        for line in self.files[spec["input_file_id"]].splitlines():
            if not line.strip():
                continue
            req = _loads(line)
            self.requests += 1
            self.batch_lines += 1
            text = self.answer(req["body"])
            out_lines.append(_dumps({"id": f"line-{self.requests}", "custom_id": req["custom_id"],
                                     "response": {"status_code": 200, "request_id": "x",
                                                  "body": self.completion(req["body"], text, self.requests)},
                                     "error": None}))
        out_id = f"file-{len(self.files) + 1}"
        self.files[out_id] = b"\n".join(out_lines) + b"\n"
        batch_id = f"batch-{len(self.batches) + 1}"
        # the batch completes after one poll: enough to exercise the polling loop
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "status": "in_progress",
                                  "input_file_id": spec["input_file_id"], "output_file_id": None,
                                  "error_file_id": None, "_output": out_id}
        return web.json_response({k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")})

    async def get_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["batch_id"])
        if b is None:
            return web.Response(status=404)
        if b["status"] == "in_progress":
            b["status"] = "finalizing"
        elif b["status"] == "finalizing":
            b.update(status="completed", output_file_id=b["_output"])
        return web.json_response({k: v for k, v in b.items() if not k.startswith("_")})

    # ---- content ----
    def answer(self, body: dict) -> str:
        digest = _request_digest(body)
        seed = body.get("seed") or 0
        mode = self.config.mode
        # "same": every answer draws the same words (near-duplicates on purpose).
        rng = random.Random(f"same:{seed}" if mode == "same" else f"{digest}:{seed}")
        bad_draw = bool(self.config.reject_rate) and rng.random() < self.config.reject_rate
        # SIDs are read from the user turn only: a system prompt may show an example SID.
        prompt = "\n".join(m.get("content") or "" for m in body.get("messages", [])
                           if m.get("role") == "user")
        rf = body.get("response_format") or {}
        system = "\n".join(m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "system")
        hinted = SCHEMA_HINT.search(system)
        if rf.get("type") in ("json_schema", "json_object") or hinted:
            if mode == "badjson" or bad_draw:
                return '{"refined_description": "unterminated'
            schema = ((rf.get("json_schema") or {}).get("schema")
                      or (_loads(hinted.group(1)) if hinted else {"type": "object"}))
            text = _dumps(fake_from_schema(schema, rng)).decode()
            # asked in prose only, a chat model wraps its JSON in words and a fence
            return text if rf else f"Here is the analysis you asked for:\n```json\n{text}\n```"
        lines = prompt.splitlines()
        recommend_lines = [line for line in lines if RECOMMEND_LINE.search(line) and SID_RUN.search(line)]
        hidden_lines = [line for line in lines if HIDDEN_LINE.search(line) and line not in recommend_lines]
        hidden = {s for line in hidden_lines for s in SID_RUN.findall(line)}
        recommended = [s for s in dict.fromkeys(SID_RUN.findall("\n".join(recommend_lines))) if s not in hidden]
        other = [line for line in lines if line not in recommend_lines]
        sids = [s for s in dict.fromkeys(SID_RUN.findall("\n".join(other))) if s not in hidden]
        sentences = [_sentence(rng) for _ in range(self.config.sentences)]
        if mode != "nosid" and not bad_draw:
            for i, sid in enumerate(sids):  # spread the SIDs over the sentences
                k = i % len(sentences)
                sentences[k] = sentences[k][:-1] + f" as {sid} shows."
            if recommended:
                sentences.append(f"So I recommend {' and '.join(recommended)} next.")
        if mode == "leak" and hidden_lines:
            sentences.append(" ".join(hidden_lines))
        if mode == "title" and (title := TITLE_LINE.search(prompt)):
            sentences.append(f"I liked {title.group(1)}.")
        return " ".join(sentences)

    # ---- running ----
    async def _start_async(self) -> None:
        # A dropped connection is on purpose: keep aiohttp from logging it as a server error.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096, reuse_address=True)
        await site.start()

    def start(self) -> "TeacherServer":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_async())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="teacher-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("teacher server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "TeacherServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        web.run_app(self.app(), host=self.host, port=self.port, access_log=None, backlog=4096,
                    print=lambda *a: None)


def _request_digest(body: dict) -> str:
    """Identifies a request independent of its seed: same prompt + params -> same digest."""
    key = {k: v for k, v in body.items() if k != "seed"}
    return hashlib.sha256(_dumps(key)).hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--latency", type=float, default=1.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--mode", default="good", choices=["good", "same", "leak", "title", "nosid", "badjson"])
    p.add_argument("--reject-rate", type=float, default=0.0)
    p.add_argument("--fault", action="append", default=[], metavar="KIND=RATE",
                   help=f"fault rate, KIND one of {FAULTS}; repeatable")
    p.add_argument("--require-key", default=None)
    p.add_argument("--accepts", default="json_schema,json_object,text",
                   help="response_format types taken (llama.cpp: json_object,text)")
    p.add_argument("--reject-style", default="llamacpp", choices=["llamacpp", "422", "400"])
    p.add_argument("--truncate-rate", type=float, default=0.0)
    p.add_argument("--status-all", type=int, default=None, help="answer every route with this status")
    a = p.parse_args()
    rates = {k: float(v) for k, v in (f.split("=", 1) for f in a.fault)}
    cfg = ServerConfig(latency=a.latency, latency_jitter=a.jitter, mode=a.mode, reject_rate=a.reject_rate,
                       fault_rates=rates, require_key=a.require_key, accepts=tuple(a.accepts.split(",")),
                       reject_style=a.reject_style, truncate_rate=a.truncate_rate, status_all=a.status_all)
    server = TeacherServer(cfg, port=a.port)
    print(f"teacher server on {server.base_url} (latency {a.latency} s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
