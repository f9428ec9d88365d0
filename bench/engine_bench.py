"""Section "engine": the synthesis engine end to end against the loopback teacher server,
beside a bare aiohttp loop (the floor) and a bare ``litellm.acompletion`` loop (what a
user would write), on the same requests, in the same run.

Every measured client runs in its own fresh process (``python -m bench.engine_bench
client ...``), so its CPU time (``time.process_time``) and peak RSS (``VmHWM`` in
``/proc/self/status``) are its own; the teacher server runs in other processes (``... serve ...``, uvloop,
``SO_REUSEPORT`` workers), so the server's CPU is not charged to the client. Both share
the machine's cores, as a local vLLM would not: the figures are a lower bound.

Engine run: ``synth.engine.run`` on a synthetic dataset (``tests/synth_fixtures``) of
N/4 items and N/4 training sequences = N/2 records = N requests (stage 1 + stage 2),
fresh cache and corpus folders: templates, litellm routing and pricing, cache writes,
every check, MinHash dedup and the corpus files are all in the timed run.

"ideal" is concurrency / latency. With two dependent stages per record and ``c``
workers, a run of R records needs at least ceil(R / c) * 2 latencies, which caps what any
client carrying records through both stages can reach (e.g. 833 req/s at 1 s, c=1024,
2,500 records): that schedule bound is printed in the note. The bare loops send the
same 2 x R request bodies with no dependency between them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "openai/teacher"
DATASET = "bench"


# ---------------------------------------------------------------- the server process
def _peak_rss_mb() -> float:
    """This process's own peak RSS. ru_maxrss is not used: Linux carries it across exec, so a
    client started from a bench process that had grown (the 1M-text dedup section) reported
    the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(port: int, stats_port: int, latency: float) -> None:
    """One server worker: the test teacher on ``port`` (shared via SO_REUSEPORT) and its
    counter on ``stats_port`` (GET /stats), on uvloop."""
    import logging

    import uvloop
    from aiohttp import web

    from tests.teacher_server import ServerConfig, TeacherServer

    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    srv = TeacherServer(ServerConfig(latency=latency), port=port)

    async def stats(_request):
        return web.json_response({"requests": srv.requests, "max_in_flight": srv.max_in_flight,
                                  "statuses": srv.statuses})

    async def main() -> None:
        app = srv.app()
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=8192, reuse_port=True).start()
        await web.TCPSite(runner, "127.0.0.1", stats_port, backlog=128).start()
        print("ready", flush=True)
        srv.log = _NoLog()  # the request log would grow for the whole bench
        await asyncio.Event().wait()

    uvloop.run(main())


class _NoLog(list):
    def append(self, _x) -> None:  # noqa: D401 - a log that keeps nothing
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``workers`` server processes behind one port; ``requests()`` sums their counters."""

    def __init__(self, latency: float, workers: int):
        self.port = free_port()
        self.stats_ports = [free_port() for _ in range(workers)]
        self.procs = []
        for sp in self.stats_ports:
            p = subprocess.Popen([sys.executable, "-m", "bench.engine_bench", "serve", "--port", str(self.port),
                                  "--stats-port", str(sp), "--latency", str(latency)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
        for p in self.procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                self.stop()
                raise RuntimeError(f"bench teacher server did not start (said {line!r})")
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        import urllib.request

        total = {"requests": 0, "max_in_flight": 0}
        for sp in self.stats_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{sp}/stats", timeout=10) as r:
                d = json.loads(r.read())
            total["requests"] += d["requests"]
            total["max_in_flight"] += d["max_in_flight"]
        return total

    def requests(self) -> int:
        return self.stats()["requests"]

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server processes so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self.procs:
            try:
                f = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- the clients
def make_bench_dataset(root: Path, records: int) -> Path:
    from tests.synth_fixtures import make_dataset

    half = records // 2
    return make_dataset(root, DATASET, n_items=half, n_train=records - half, seed=7)


def request_bodies(data_dir: Path, records: int) -> list[dict]:
    """The bodies the engine sends for these records (stage 2 rendered with a stand-in for
    the stage-1 answer), in the engine's record order: the bare loops send these."""
    from synth.data.dataset import Dataset
    from synth.engine import SynthConfig
    from synth.prompts import PromptSet, item_context, user_context

    ds = Dataset(data_dir / DATASET)
    sids = ds.sids()
    ps = PromptSet()
    half = records // 2
    items = list(ds.items)[:half]
    samples = list(ds.samples("train"))[: records - half]
    insights = {"refined_description": "A reliable tool for the desk.", "primary_use_cases": ["filing"],
                "target_audiences": ["office workers"], "key_features": ["sturdy"], "related_keywords": ["desk"]}
    pairs = []
    for iid in items:
        ctx = item_context(ds.items[iid], "".join(sids[iid]))
        pairs.append(("item_analysis", ps.render("item_analysis", ctx)))
        pairs.append(("item_integration", ps.render("item_integration", {**ctx, "insights": insights})))
    for s in samples:
        ctx = user_context(s, ds.items, sids)
        pairs.append(("user_reasoning", ps.render("user_reasoning", ctx)))
        pairs.append(("user_narrative", ps.render("user_narrative", {**ctx, "reasoning": "I think they like paper."})))
    cfg = SynthConfig(DATASET)  # the first draw's parameters, as the engine sends them by default
    bodies = []
    for step, messages in pairs:
        b = {"model": "teacher", "messages": messages, "temperature": cfg.temperature,
             "max_tokens": cfg.max_tokens, "seed": cfg.seed}
        rf = ps.response_format(step)
        if rf is not None:
            b["response_format"] = rf
        bodies.append(b)
    return bodies


async def _bare_aiohttp(base: str, bodies: list[dict], c: int) -> int:
    import aiohttp
    import orjson

    url = f"{base}/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    connector = aiohttp.TCPConnector(limit=c, limit_per_host=c)  # the default holds only 100
    ok = 0
    it = iter(bodies)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal ok
            for body in it:
                async with session.post(url, data=orjson.dumps(body), headers=headers) as r:
                    data = orjson.loads(await r.read())
                ok += bool(data["choices"][0]["message"]["content"])
        await asyncio.gather(*(worker() for _ in range(c)))
    return ok


async def _bare_litellm(base: str, bodies: list[dict], c: int) -> int:
    from synth.teacher import import_litellm

    litellm = import_litellm()
    ok = 0
    it = iter(bodies)

    async def worker() -> None:
        nonlocal ok
        for b in it:
            kw = {k: v for k, v in b.items() if k not in ("model", "messages")}
            r = await litellm.acompletion(model=MODEL, messages=b["messages"], api_base=base,
                                          api_key="sk-bench", num_retries=0, **kw)
            ok += bool(r.choices[0].message.content)
    await asyncio.gather(*(worker() for _ in range(c)))
    return ok


def client(kind: str, base: str, c: int, records: int, data_dir: Path, work: Path) -> dict:
    """One measured run in this (fresh) process; returns its figures."""
    out: dict = {"kind": kind, "concurrency": c}
    if kind == "engine":
        from synth.engine import Engine, SynthConfig, run_engine

        cfg = SynthConfig(DATASET, teacher=MODEL, api_base=base, data_dir=str(data_dir),
                          corpora_dir=str(work / "corpora"), cache_dir=str(work / "cache"),
                          concurrency=c, limit=records // 2, progress=False)
        # synth.engine.run in its two parts, timed apart: set-up (dataset, catalogue, imports of
        # litellm and datasketch: once per run, whatever its size) and the run itself
        # (preflight, every request, check and cache write, dedup, corpus files).
        cpu0, t0 = time.process_time(), time.perf_counter()
        engine = Engine(cfg)
        setup_cpu, setup_wall = time.process_time() - cpu0, time.perf_counter() - t0
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = run_engine(engine)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        m = result.manifest
        out.update(requests=m["requests_sent"], ok=m["written"], records=m["requested"],
                   wall_s=wall, cpu_s=cpu, setup_s=setup_wall, setup_cpu_s=setup_cpu,
                   rejected=m["rejected"], failed=m["failed"], cache_hits=m["cache_hits"])
    else:
        if kind == "litellm":
            # Above the concurrency, before litellm is imported, or it holds 500 in flight.
            os.environ["AIOHTTP_CONNECTOR_LIMIT"] = os.environ["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] = str(c + 64)
            from synth.teacher import import_litellm

            import_litellm()
        bodies = request_bodies(data_dir, records)
        fn = _bare_aiohttp if kind == "aiohttp" else _bare_litellm
        loop_factory = None
        if kind == "aiohttp":  # the floor: the best event loop this machine has
            import uvloop

            loop_factory = uvloop.new_event_loop
        cpu0, t0 = time.process_time(), time.perf_counter()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            ok = runner.run(fn(base, bodies, c))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        out.update(requests=len(bodies), ok=ok, wall_s=wall, cpu_s=cpu)
    out["rss_mb"] = _peak_rss_mb()
    out["req_s"] = out["requests"] / out["wall_s"]
    out["cpu_ms"] = 1000 * out["cpu_s"] / max(1, out["requests"])
    return out


def measure(kind: str, base: str, c: int, records: int, data_dir: Path, timeout: float = 600,
            work: Path | None = None) -> dict:
    """Run ``client`` in a fresh process and return its figures. The engine's cache and
    corpora go under ``work`` (a fresh temporary folder unless given)."""
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        cmd = [sys.executable, "-m", "bench.engine_bench", "client", kind, "--base", base, "--concurrency",
               str(c), "--records", str(records), "--data", str(data_dir), "--work", str(work or tmp)]
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    if p.returncode != 0:
        raise RuntimeError(f"bench client {kind} c={c} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def schedule_bound(records: int, c: int, latency: float) -> float:
    """The most req/s a client carrying each record through two dependent stages can reach."""
    return 2 * records / (math.ceil(records / c) * 2 * latency)


# ---------------------------------------------------------------- the section
def run(quick: bool, requests: int | None = None, latencies: list[float] | None = None,
        concurrencies: list[int] | None = None, kinds: tuple[str, ...] = ("engine", "aiohttp", "litellm"),
        server_workers: int = 2) -> list[dict]:
    from bench.common import progress, row

    n = requests or (1000 if quick else 5000)
    records = n // 2
    latencies = latencies or ([0.2] if quick else [1.0, 0.2])
    # quick: 1,000 requests at 0.2 s, and c=64 left out (it only shows the latency bound)
    concurrencies = concurrencies or ([256, 1024] if quick else [64, 256, 1024])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-data-") as tmp:
        data_dir = Path(tmp)
        make_bench_dataset(data_dir, records)
        with Server(0.0, server_workers) as srv:
            t = measure("aiohttp", srv.base, 256, records, data_dir)  # the server's ceiling, as seen by the floor
            rows.append(row("server ceiling (latency 0, bare aiohttp c=256)", t["req_s"], "req/s",
                            note=f"{server_workers} uvloop server processes; client and server share the cores, "
                                 "so the server can answer at least this fast"))
            progress(f"engine: server ceiling {t['req_s']:.0f} req/s")
        for lat in latencies:
            with Server(lat, server_workers) as srv:
                for c in concurrencies:
                    res = {}
                    for kind in kinds:
                        before, cpu_before = srv.requests(), srv.cpu_s()
                        res[kind] = r = measure(kind, srv.base, c, records, data_dir)
                        sent = srv.requests() - before
                        r["server_ms"] = 1000 * (srv.cpu_s() - cpu_before) / max(1, sent)
                        progress(f"engine: latency {lat:g} s c={c} {kind}: {r['req_s']:.0f} req/s, "
                                 f"{r['cpu_ms']:.2f} ms CPU/request, {r['rss_mb']:.0f} MB, server saw {sent}")
                        if sent != r["requests"]:
                            raise RuntimeError(f"{kind} reported {r['requests']} requests, the server saw {sent}")
                    rows += _rows(res, lat, c, records, row)
    return rows


def _rows(res: dict, lat: float, c: int, records: int, row) -> list[dict]:
    e = res.get("engine")
    a, ll = res.get("aiohttp"), res.get("litellm")
    tag = f"{lat:g}s c={c}"
    rows = []
    if e:
        rows.append(row(f"engine {tag}", e["req_s"], "req/s", peer=c / lat, peer_name="ideal",
                        note=f"{e['requests']} requests, {e['ok']}/{e['records']} records written, "
                             f"schedule bound {schedule_bound(records, c, lat):.0f} req/s"))
        if a:
            rows.append(row(f"engine/aiohttp {tag}", e["req_s"], "req/s", peer=a["req_s"], peer_name="bare aiohttp"))
        if ll:
            rows.append(row(f"engine/litellm {tag}", e["req_s"], "req/s", peer=ll["req_s"],
                            peer_name="bare litellm"))
        rows.append(row(f"engine CPU {tag}", e["cpu_ms"], "ms/req", peer=a["cpu_ms"] if a else None,
                        peer_name="bare aiohttp" if a else "",
                        note=(f"litellm {ll['cpu_ms']:.2f} ms; " if ll else "")
                        + f"server {e['server_ms']:.2f} ms/req (own process)"))
        rows.append(row(f"engine peak RSS {tag}", e["rss_mb"], "MB", peer=a["rss_mb"] if a else None,
                        peer_name="bare aiohttp" if a else "",
                        note=f"litellm {ll['rss_mb']:.0f} MB" if ll else ""))
    else:
        for kind, r in res.items():
            rows.append(row(f"{kind} {tag}", r["req_s"], "req/s", peer=c / lat, peer_name="ideal",
                            note=f"{r['cpu_ms']:.2f} ms CPU/req, {r['rss_mb']:.0f} MB"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stats-port", type=int, required=True)
    s.add_argument("--latency", type=float, default=1.0)
    cl = sub.add_parser("client")
    cl.add_argument("kind", choices=["engine", "aiohttp", "litellm"])
    cl.add_argument("--base", required=True)
    cl.add_argument("--concurrency", type=int, required=True)
    cl.add_argument("--records", type=int, required=True)
    cl.add_argument("--data", required=True)
    cl.add_argument("--work", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.port, a.stats_port, a.latency)
        return 0
    print(json.dumps(client(a.kind, a.base, a.concurrency, a.records, Path(a.data), Path(a.work))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
