"""The asyncio synthesis engine: records in, checked corpus out.

A *record* is one item (item-centric flow) or one training sequence (user-centric flow):

- item: ``item_analysis`` (JSON insights, parsed and schema-checked) -> ``item_integration``
  (one paragraph; SID-only: the item's own SID required, no unknown SID, no title);
- user: ``user_reasoning`` (leak check against the held-out next item) ->
  ``user_narrative`` (SID-only with every history SID required, plus the leak check).

Flow: ``concurrency`` workers each take the next record and carry it through both stages,
so a record's stage 2 starts as soon as its stage 1 is accepted (no barrier between
stages) and at most ``concurrency`` requests are in flight. A rejected output is drawn
again with a new sample index (a new cache key, a new ``seed``, temperature > 0) up to
``max_samples`` times per stage; then the record is rejected with the check's reason.
A request that still fails after the teacher's retries makes the record "failed" with the
transport's reason. Every record ends written, rejected, failed, or (only when the budget
stops the run) unfinished; the counts add up to ``requested``.

Determinism: answers are cached by request (``synth.cache``); the corpus is assembled in
record order after all workers finish, and the MinHash near-duplicate pass runs over the
accepted texts in that order, so the corpus does not depend on the order answers arrive.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synth.cache import CachedResponse, ResponseCache, cache_key
from synth.corpus import (command_line, corpus_dir, dataset_hashes, package_versions,
                          write_corpus)
from synth.data.dataset import Dataset, DatasetError, Item, Sample, dataset_dir
from synth.endpoints import safe_url
from synth.structured import AUTO
from synth.teacher import (METADATA, Completion, PreflightError, Request, Teacher, TeacherConfig,
                           TeacherError, import_litellm, make_teacher)

ITEM, USER = "item", "user"
# How much of a rejected output to keep in rejected.jsonl (enough to see why).
REJECTED_TEXT_CHARS = 4000


class BudgetReached(Exception):
    """Raised inside a record when the run is stopping (BUDGET_USD spent, or a fatal teacher
    error): no new requests."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything ``python -m synth`` / ``make synth`` can set. Defaults = the paper's run."""

    dataset: str
    teacher: str = METADATA
    data_dir: str | None = None       # parent of data/<dataset>/ (DATA_DIR)
    corpora_dir: str | None = None    # CORPORA_DIR
    cache_dir: str | None = None      # CACHE_DIR
    prompts_dir: str | None = None
    api_base: str | None = None
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    limit: int | None = None          # first N items and first N training sequences
    dry_run: bool = False
    budget_usd: float | None = None
    batch: bool = False
    seed: int = 0
    temperature: float = 0.7
    resample_temperature: float = 0.9  # at least this for samples after the first
    max_tokens: int = 1024
    timeout: float = 120.0
    max_attempts: int = 6
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_samples: int = 3
    extra_body: dict | None = None    # EXTRA_BODY: merged into every request body, part of the cache key
    structured_output: str = AUTO     # STRUCTURED_OUTPUT: json_schema, json_object or prompt to start at
    dedup: bool | None = None         # MinHash pass; None = on for LLM teachers, off for metadata
    items: bool = True                # run the item-centric flow
    users: bool = True                # run the user-centric flow
    progress: bool = True
    progress_interval: float | None = None  # seconds; default 0.5 on a terminal, 10 otherwise

    def generation(self) -> dict:
        return {"temperature": self.temperature, "resample_temperature": self.resample_temperature,
                "max_tokens": self.max_tokens, "max_samples": self.max_samples, "seed": self.seed,
                "timeout": self.timeout, "max_attempts": self.max_attempts,
                "extra_body": self.extra_body, "structured_output": self.structured_output}

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(teacher=self.teacher, api_base=self.api_base, concurrency=self.concurrency,
                             timeout=self.timeout, max_attempts=self.max_attempts,
                             backoff_initial=self.backoff_initial, backoff_max=self.backoff_max,
                             rpm=self.rpm, tpm=self.tpm, extra_body=self.extra_body,
                             structured_output=self.structured_output)


@dataclass
class Outcome:
    """How one record ended. ``record`` is the corpus line when written."""

    status: str                    # written | rejected | failed | unfinished
    record: dict | None = None
    stage: str = ""
    reason: str = ""
    text: str = ""
    detail: str = ""               # failed: what the teacher said (server text, key scrubbed)


@dataclass
class Stats:
    requests_sent: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0          # every answer the corpus used, cached or not
    spent_usd: float = 0.0         # sent by this run
    done: int = 0
    truncated: int = 0             # answers that hit max_tokens (each drawn again)
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    manifest: dict
    out_dir: Path | None
    exit_code: int
    message: str = ""


def _count(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


def _fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Engine:
    def __init__(self, config: SynthConfig):
        # Imported here: H3a's content modules (prompts, checks, dedup) and their dependencies.
        from synth.checks import Catalog
        from synth.prompts import PromptSet

        self.config = config
        self.dataset = Dataset(dataset_dir(config.dataset, config.data_dir))
        self.items: dict[str, Item] = self.dataset.items
        self.sids = self.dataset.sids()
        self.sid_str = {k: "".join(v) for k, v in self.sids.items()}
        self.prompts = PromptSet(config.prompts_dir)
        self.prompt_hashes = self.prompts.hashes()
        # computed once: building the strict schema per request showed up in the profile
        self.response_formats = {step: self.prompts.response_format(step) for step in self.prompt_hashes}
        # from_items: descriptions teach which title words are ordinary prose, brands are no fragments.
        self.catalog = Catalog.from_items(self.items, self.sids)
        self.item_ids = list(self.items)
        samples = self.dataset.samples("train")
        self.samples: list[Sample] = []
        if config.users:
            for s in samples:
                if config.limit is not None and len(self.samples) >= config.limit:
                    break
                self.samples.append(s)
        if not config.items:
            self.item_ids = []
        elif config.limit is not None:
            self.item_ids = self.item_ids[: config.limit]
        self._check_sids()
        self.records: list[tuple[str, Any]] = [(ITEM, i) for i in self.item_ids] + [
            (USER, s) for s in self.samples]
        if config.dedup or (config.dedup is None and config.teacher != METADATA):
            # Imported now, not in _finish: datasketch pulls in scipy (~2 s of CPU), which
            # the profile showed inside the run's wall time, after the last answer.
            import synth.dedup  # noqa: F401
        if config.teacher != METADATA:
            import_litellm()  # its import (~1 s of CPU) is set-up, not part of the first request
        self.stats = Stats()
        self.stopping = False
        self.fatal: TeacherError | None = None
        self.failure_detail: dict[str, str] = {}
        self.teacher: Teacher | None = None
        self.cache: ResponseCache | None = None
        self._t0 = time.monotonic()

    # ---- set-up checks ----
    def _check_sids(self) -> None:
        missing = [i for i in self.item_ids if i not in self.sids]
        for s in self.samples:
            missing += [i for i in (*s.history, s.target) if i not in self.sids]
        if missing:
            raise DatasetError(
                f"{self.dataset.path}/sids.json has no SID for item {missing[0]!r} "
                f"({len(set(missing))} items in all): re-run `make sids DATASET={self.dataset.name}`")

    # ---- one request ----
    def _params(self, step: str, sample: int) -> dict:
        t = self.config.temperature if sample == 0 else max(self.config.temperature,
                                                              self.config.resample_temperature)
        params = {"temperature": t, "max_tokens": self.config.max_tokens,
                  "seed": self.config.seed + sample, "sample": sample,
                  "response_format": self.response_formats[step]}
        if self.config.extra_body:  # only when set: keys of runs without it stay as they were
            params["extra_body"] = self.config.extra_body
        return params

    async def _ask(self, step: str, messages: list[dict], context: dict, sample: int) -> Completion:
        assert self.teacher is not None
        params = self._params(step, sample)
        key = None
        if self.teacher.cacheable:
            key = cache_key(self.teacher.name, params, messages, self.prompt_hashes.get(step, ""))
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                self._account(hit.tokens_in, hit.tokens_out, spent=False)
                return Completion(hit.text, hit.tokens_in, hit.tokens_out, hit.finish_reason)
        if self.stopping:
            raise BudgetReached()
        request = Request(step, messages, context, params["temperature"], params["max_tokens"],
                          params["seed"], params["response_format"])
        comp = await self.teacher.complete(request)
        self.stats.requests_sent += 1
        if key is not None:
            self.cache.put(key, CachedResponse(comp.text, comp.tokens_in, comp.tokens_out, comp.finish_reason))
        self._account(comp.tokens_in, comp.tokens_out, spent=True)
        return comp

    async def _text(self, step: str, messages: list[dict], context: dict, sample: int) -> str | None:
        """The cleaned answer, or None when it was cut off at max_tokens (rejected as truncated)."""
        comp = await self._ask(step, messages, context, sample)
        if comp.truncated:
            self.stats.truncated += 1
            return None
        return comp.text

    def _account(self, tokens_in: int, tokens_out: int, spent: bool) -> None:
        self.stats.tokens_in += tokens_in
        self.stats.tokens_out += tokens_out
        cost = self.teacher.cost_usd(tokens_in, tokens_out, batch=self.config.batch)
        self.stats.cost_usd += cost
        if spent:
            self.stats.spent_usd += cost
            budget = self.config.budget_usd
            if budget is not None and self.stats.spent_usd >= budget:
                self.stopping = True

    # ---- the two flows ----
    async def _item(self, item_id: str) -> Outcome:
        from synth.prompts import OutputFormatError, clean_generation, item_context, paragraph_problems

        sid = self.sid_str[item_id]
        ctx = item_context(self.items[item_id], sid)
        messages = self.prompts.render("item_analysis", ctx)
        insights, reason, last = None, "", ""
        for sample in range(self.config.max_samples):
            last = await self._text("item_analysis", messages, ctx, sample)
            if last is None:
                reason, last = "truncated", ""
                continue
            try:
                insights = self.prompts.parse_item_analysis(last)
                break
            except OutputFormatError as e:
                reason = getattr(e, "reason", "bad_json") or "bad_json"
        if insights is None:
            return Outcome("rejected", stage="item_analysis", reason=reason, text=last)
        ctx2 = {**ctx, "insights": insights}
        messages = self.prompts.render("item_integration", ctx2)
        for sample in range(self.config.max_samples):
            raw = await self._text("item_integration", messages, ctx2, sample)
            text = clean_generation(raw or "")
            problems = (["truncated"] if raw is None
                        else paragraph_problems(text) + self.catalog.sid_only_problems(text, [item_id]))
            if not problems:
                return Outcome("written", {"item_id": item_id, "sid": sid, "text": text,
                                           "insights": insights})
            reason, last = problems[0], text
        return Outcome("rejected", stage="item_integration", reason=reason, text=last)

    async def _user(self, s: Sample) -> Outcome:
        from synth.prompts import clean_generation, paragraph_problems, user_context

        ctx = user_context(s, self.items, self.sids)
        messages = self.prompts.render("user_reasoning", ctx)
        reasoning, reason, last = None, "", ""
        for sample in range(self.config.max_samples):
            raw = await self._text("user_reasoning", messages, ctx, sample)
            text = clean_generation(raw or "")
            problems = (["truncated"] if raw is None
                        else self.catalog.leak_problems(text, s.target, s.history) if text.strip()
                        else ["empty_after_cleaning"])
            if not problems:
                reasoning = text
                break
            reason, last = problems[0], text
        if reasoning is None:
            return Outcome("rejected", stage="user_reasoning", reason=reason, text=last)
        ctx2 = {**ctx, "reasoning": reasoning}
        messages = self.prompts.render("user_narrative", ctx2)
        for sample in range(self.config.max_samples):
            raw = await self._text("user_narrative", messages, ctx2, sample)
            text = clean_generation(raw or "")
            problems = ["truncated"] if raw is None else (paragraph_problems(text) + self.catalog.sid_only_problems(text, s.history)
                        + self.catalog.leak_problems(text, s.target, s.history))
            if not problems:
                return Outcome("written", {"user_id": s.user_id, "history": list(s.history),
                                           "target": s.target, "reasoning": reasoning, "text": text})
            reason, last = problems[0], text
        return Outcome("rejected", stage="user_narrative", reason=reason, text=last)

    async def _record(self, index: int) -> Outcome:
        kind, what = self.records[index]
        try:
            return await (self._item(what) if kind == ITEM else self._user(what))
        except TeacherError as e:
            if e.fatal:  # no request of this run can succeed: stop sending
                self.fatal = self.fatal or e
                self.stopping = True
                return Outcome("unfinished", reason="stopped")
            self.failure_detail.setdefault(e.reason, e.detail)
            return Outcome("failed", reason=e.reason, detail=e.detail)
        except BudgetReached:
            return Outcome("unfinished", reason="budget_reached")

    # ---- running ----
    async def _worker(self, queue: list[int], results: list[Outcome | None]) -> None:
        while queue:
            i = queue.pop()
            out = await self._record(i)
            results[i] = out
            self.stats.done += 1
            _count(self.stats.outcomes, out.status)
            if out.status in ("rejected", "failed"):
                _count(self.stats.reasons, out.reason)

    def progress_line(self) -> str:
        s, total = self.stats, len(self.records)
        el = max(time.monotonic() - self._t0, 1e-9)
        rate = s.done / el
        eta = (total - s.done) / rate if rate > 0 else float("inf")
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items())) or "none"
        return (f"synth {self.dataset.name}/{self.config.teacher}: {s.done}/{total} records  "
                f"{s.requests_sent / el:.0f} req/s  cache hits {s.cache_hits}  rejected/failed: {rej}  "
                f"${s.spent_usd:.4f} spent  ETA {_fmt_duration(eta)}")

    async def _ticker(self) -> None:
        tty = sys.stderr.isatty()
        interval = self.config.progress_interval or (0.5 if tty else 10.0)
        flush_every = 0.25
        next_print = time.monotonic() + interval
        while True:
            await asyncio.sleep(flush_every)
            if self.cache is not None:
                self.cache.flush()  # answers survive a kill -9 within a quarter second
            if self.config.progress and time.monotonic() >= next_print:
                next_print = time.monotonic() + interval
                print(("\r" if tty else "") + self.progress_line(), end="" if tty else "\n",
                      file=sys.stderr, flush=True)

    async def run_async(self) -> RunResult:
        cfg = self.config
        self.teacher = make_teacher(cfg.teacher_config(), self.catalog, batch=cfg.batch)
        if cfg.dry_run:
            return self._dry_run()
        await self.teacher.start()  # preflight: fails fast, before anything is queued
        self.cache = ResponseCache(cfg.cache_dir) if self.teacher.cacheable else None
        self._t0 = time.monotonic()
        results: list[Outcome | None] = [None] * len(self.records)
        queue = list(range(len(self.records)))[::-1]  # pop() from the end = record order
        # Batch API: every record in flight at once, so each stage goes out as one batch.
        n_workers = len(self.records) if self.teacher.transport == "batch" else cfg.concurrency
        workers = [asyncio.create_task(self._worker(queue, results))
                   for _ in range(max(1, min(n_workers, len(self.records))))]
        ticker = asyncio.create_task(self._ticker())
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self.cache is not None:
                self.cache.close()
            await self.teacher.aclose()
        if cfg.progress:
            print(("\r" if sys.stderr.isatty() else "") + self.progress_line(), file=sys.stderr, flush=True)
        if self.fatal is not None:
            raise PreflightError(f"{self.fatal.detail or self.fatal.reason}; nothing was written (answers "
                                 "received so far are cached): fix it and re-run")
        return self._finish(results)

    # ---- the corpus ----
    def _finish(self, results: list[Outcome | None]) -> RunResult:
        from synth.dedup import near_duplicate_indices

        cfg = self.config
        assert all(r is not None for r in results)
        written = [i for i, r in enumerate(results) if r.status == "written"]
        dedup = cfg.dedup if cfg.dedup is not None else self.teacher.transport != METADATA
        # The rule-based baseline writes every text from one template, so MinHash would call
        # most of them duplicates; dedup is there to catch an LLM teacher repeating itself.
        dup = near_duplicate_indices([results[i].record["text"] for i in written]) if dedup else set()
        for j in sorted(dup):
            i = written[j]
            r = results[i]
            results[i] = Outcome("rejected", stage="dedup", reason="near_duplicate", text=r.record["text"])
        items, users, rejected = [], [], []
        rejected_by: dict[str, int] = {}
        failed_by: dict[str, int] = {}
        unfinished = 0
        for i, r in enumerate(results):
            kind, what = self.records[i]
            if r.status == "written":
                (items if kind == ITEM else users).append(r.record)
                continue
            if r.status == "unfinished":
                unfinished += 1
                continue
            _count(rejected_by if r.status == "rejected" else failed_by, r.reason)
            line = {"kind": kind, "index": i, "id": what if kind == ITEM else what.user_id,
                    "status": r.status, "stage": r.stage, "reason": r.reason,
                    "text": r.text[:REJECTED_TEXT_CHARS]}
            if r.detail:
                line["detail"] = r.detail
            rejected.append(line)
        s = self.stats
        prices = self.teacher.prices()
        n_written = len(items) + len(users)
        manifest = {
            "dataset": self.dataset.name,
            "teacher": cfg.teacher,
            "route": {"provider": self.teacher.route.provider, "model": self.teacher.route.model,
                      "api_base": safe_url(self.teacher.route.api_base),
                      "transport": self.teacher.transport},
            "structured_output": (self.teacher.structured_summary()
                                  if self.teacher.transport != METADATA else None),
            "endpoints": self.teacher.pool.summary() if hasattr(self.teacher, "pool") else None,
            "complete": unfinished == 0,
            "requested": len(self.records),
            "written": n_written,
            "written_items": len(items),
            "written_users": len(users),
            "requested_items": len(self.item_ids),
            "requested_users": len(self.samples),
            "rejected": dict(sorted(rejected_by.items())),
            "failed": sum(failed_by.values()),
            "failed_reasons": dict(sorted(failed_by.items())),
            "unfinished": unfinished,
            "cache_hits": s.cache_hits,
            "requests_sent": s.requests_sent,
            "request_attempts": self.teacher.attempts,
            "retries": dict(sorted(self.teacher.retries.items())),
            "truncated_answers": s.truncated,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "cost_usd": round(s.cost_usd, 6),
            "spent_usd": round(s.spent_usd, 6),
            "priced": prices is not None,
            "batch": cfg.batch,
            "dedup": dedup,
            "generation": cfg.generation(),
            "prompt_hashes": self.prompt_hashes,
            "dataset_files": dataset_hashes(self.dataset.path),
            "limit": cfg.limit,
            "concurrency": cfg.concurrency,
            "seed": cfg.seed,
            "versions": package_versions(),
            "wall_time_s": round(time.monotonic() - self._t0, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command_line(),
        }
        assert manifest["requested"] == n_written + sum(rejected_by.values()) + manifest["failed"] + unfinished
        out = write_corpus(corpus_dir(self.dataset.name, cfg.teacher, cfg.corpora_dir),
                           items, users, rejected, manifest)
        if unfinished:
            return RunResult(manifest, out, 3, f"budget reached (${s.spent_usd:.4f} of "
                             f"${cfg.budget_usd:g}); {unfinished} records unfinished; re-run to resume")
        return RunResult(manifest, out, 0, self._summary(manifest, out))

    def _summary(self, manifest: dict, out: Path) -> str:
        """The closing line: what was written, and what to change when something went wrong."""
        msg = f"wrote {manifest['written']}/{manifest['requested']} records to {out}"
        if manifest["failed"]:
            msg += f"; {manifest['failed']} failed ({manifest['failed_reasons']}): re-run to retry them"
            details = [f"{k}: {v}" for k, v in sorted(self.failure_detail.items()) if v]
            if details:
                msg += "\n  " + "\n  ".join(details)
        rejected = manifest["rejected"]
        if rejected.get("truncated", 0) * 2 > sum(rejected.values()):
            msg += (f"\n  most rejections ({rejected['truncated']}) are answers cut off at MAX_TOKENS="
                    f"{self.config.max_tokens}: raise MAX_TOKENS (a thinking teacher needs room for its "
                    "reasoning too, or EXTRA_BODY to turn thinking off)")
        return msg

    def _dry_run(self) -> RunResult:
        """Requests, tokens and dollars if every first answer passes; nothing is sent."""
        from synth.prompts import item_context, user_context

        cfg, n_req, t_in, t_out = self.config, 0, 0, 0
        for kind, what in self.records:
            if kind == ITEM:
                ctx = item_context(self.items[what], self.sid_str[what])
                step = "item_analysis"
            else:
                ctx = user_context(what, self.items, self.sids)
                step = "user_reasoning"
            msgs = self.prompts.render(step, ctx)
            r = Request(step, msgs, ctx, cfg.temperature, cfg.max_tokens)
            first = r.estimated_tokens()
            # stage 2 sees roughly stage 1's prompt plus its answer; answers bounded by max_tokens
            n_req += 2
            t_in += first + (first + cfg.max_tokens)
            t_out += 2 * cfg.max_tokens
        cost = self.teacher.cost_usd(t_in, t_out, batch=cfg.batch)
        priced = self.teacher.prices() is not None
        manifest = {"dry_run": True, "teacher": cfg.teacher, "dataset": self.dataset.name,
                    "records": len(self.records), "requests": n_req, "tokens_in_est": t_in,
                    "tokens_out_max": t_out, "cost_usd_max": round(cost, 4), "priced": priced}
        price = f"${cost:,.2f} at most" if priced else "price unknown to litellm (local teacher: free)"
        msg = (f"DRY RUN {self.dataset.name} with {cfg.teacher}: {len(self.records)} records "
               f"({len(self.item_ids)} items, {len(self.samples)} sequences), {n_req} requests, "
               f"~{t_in:,} input tokens, <= {t_out:,} output tokens, {price}"
               f"{' (Batch API price)' if cfg.batch else ''}; nothing was sent")
        return RunResult(manifest, None, 0, msg)


def run(config: SynthConfig) -> RunResult:
    """Run the engine on uvloop when installed (a cheaper event loop per request)."""
    return run_engine(Engine(config))


def run_engine(engine: Engine) -> RunResult:
    """Run an engine already set up (dataset, catalogue, imports), on uvloop when installed.

    The objects alive after set-up (litellm's and datasketch's modules, the catalogue's
    automaton: hundreds of thousands) are frozen out of the cyclic garbage collector for
    the run: its full collections walked them over and over while the requests churned
    (gc.freeze: 10-20% less engine CPU per request in the bench). Unfrozen afterwards."""
    factory = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(engine.run_async())
    finally:
        gc.unfreeze()
