"""The asyncio synthesis engine: records in, checked corpus out.

A *record* is one item (item-centric flow) or one training sequence (user-centric flow);
each flow is two steps (``synth.steps``: render -> call -> check), the second seeing the
first one's value. ``concurrency`` workers each take the next record and carry it through
both steps, so a record's second step starts as soon as its first is accepted (no barrier
between steps) and at most ``concurrency`` requests are in flight. A rejected answer is
drawn again with a new sample index (a new cache key, a new ``seed``, temperature > 0) up
to ``max_samples`` times per step; then the record is rejected with the check's reason. A
request that still fails after the teacher's retries makes the record "failed" with the
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

from synth.cache import Completion, ResponseCache, cache_key
from synth.checks import Catalog
from synth.corpus import corpus_dir, write_corpus
from synth.data.dataset import Dataset, DatasetError, Item, Sample, dataset_dir
from synth.endpoints import safe_bases, safe_url
from synth.prompts import PromptSet, item_context, user_context
from synth.provenance import provenance
from synth.settings import ConfigError, to_dict
from synth.steps import TRUNCATED, Checked, Step, make_steps
from synth.structured import AUTO, MODES
from synth.teacher import (
    METADATA,
    PreflightError,
    Request,
    Teacher,
    TeacherConfig,
    TeacherError,
    estimated_tokens,
    import_litellm,
    make_teacher,
    resolve_route,
)
from synth.tracking import check_installed, parse_report_to, scalars, tracked

ITEM, USER = "item", "user"
# How much of a rejected output to keep in rejected.jsonl (enough to see why).
REJECTED_TEXT_CHARS = 4000
# The dataset files a corpus depends on (hashed into the manifest), besides the SID file of its SID set.
DATASET_FILES = ("items.jsonl", "train.jsonl")


class BudgetReached(Exception):
    """Raised inside a record when the run is stopping (BUDGET_USD spent, or a fatal teacher
    error): no new requests."""


class Rejected(Exception):
    """Every draw of a step failed its check: the record is rejected at that step."""

    def __init__(self, stage: str, reason: str, text: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason, self.text = stage, reason, text


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A SynthConfig field: its default and its ``--help`` line (plus ``flags``: aliases)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class SynthConfig:
    """Every setting of ``python -m synth`` / ``make synth``, and its one default.

    The command line is generated from these fields (``synth.settings``): ``max_tokens`` is
    ``--max-tokens``, which ``make synth MAX_TOKENS=...`` passes; a preset file
    (``--config configs/synth/paper.yaml``) is a mapping of these names. Transport settings
    take their defaults from ``TeacherConfig``."""

    dataset: str = field(metadata={"help": "the dataset to enrich: <data_dir>/<NAME>/ (DATASET)"})
    teacher: str = setting(METADATA, "a litellm model string (gpt-4o-mini, ollama/qwen3:8b, "
                           "hosted_vllm/<model>, openai/<model> with --api-base) or 'metadata', the rule-based "
                           "baseline (TEACHER)")
    data_dir: str = setting("data", "the folder holding the datasets (DATA_DIR)")
    sids: str = setting("own", "the SIDs the corpus names items by: own (sids.json), reference (the publishers' "
                        "reference_sids.json; written to <teacher>@reference/) or a SID map's path (SIDS)")
    corpora_dir: str = setting("corpora", "where corpora/<dataset>/<teacher>/ is written (CORPORA_DIR)")
    cache_dir: str = setting(".cache/synth", "the response cache's folder (CACHE_DIR)")
    prompts_dir: str | None = setting(None, "prompt templates; none: the shipped prompts/synth/ (PROMPTS_DIR)")
    api_base: str | None = setting(None, "OpenAI-compatible server, e.g. http://host:8000/v1, or several "
                                   "comma-separated replicas (API_BASE)")
    concurrency: int = setting(TeacherConfig.concurrency, "requests in flight (CONCURRENCY)")
    rpm: float | None = setting(None, "requests per minute at most (RPM)")
    tpm: float | None = setting(None, "tokens per minute at most (TPM)")
    limit: int | None = setting(None, "only the first N items and the first N training sequences (LIMIT)")
    dry_run: bool = setting(False, "count requests, tokens and dollars; send nothing (DRY_RUN=1)")
    budget_usd: float | None = setting(None, "stop cleanly once this many dollars are spent: exit 3, a re-run "
                                       "resumes (BUDGET_USD)")
    batch: bool = setting(False, "the OpenAI Batch API: half price, answers within 24 h (BATCH=1)")
    seed: int = setting(42, "generation seed; draw k of a request is sent with seed + k (SEED)")
    temperature: float = setting(0.7, "sampling temperature of a request's first draw (TEMPERATURE)")
    resample_temperature: float = setting(0.9, "at least this temperature for the draws after the first")
    max_tokens: int = setting(1024, "tokens an answer may take; a longer one is rejected as truncated "
                              "(MAX_TOKENS)")
    timeout: float = setting(TeacherConfig.timeout, "seconds per request attempt (TIMEOUT)")
    max_attempts: int = setting(TeacherConfig.max_attempts, "tries per request before its record fails "
                                "(MAX_ATTEMPTS)")
    backoff_initial: float = setting(TeacherConfig.backoff_initial, "seconds before the first retry, doubling "
                                     "each time, with jitter (BACKOFF)", flags=("--backoff",))
    backoff_max: float = setting(TeacherConfig.backoff_max, "longest wait between retries, seconds")
    max_samples: int = setting(3, "draws per step before the record is rejected (MAX_SAMPLES)")
    extra_body: dict | None = setting(TeacherConfig.extra_body, "a JSON object merged into every request body "
                                      "and into the cache key, e.g. '{\"chat_template_kwargs\": "
                                      "{\"enable_thinking\": false}}' (EXTRA_BODY)")
    structured_output: str = setting(TeacherConfig.structured_output, "the stage-1 JSON shape to start at: "
                                     "auto (= json_schema), json_schema, json_object or prompt; a server that "
                                     "refuses it moves the run to the next (STRUCTURED_OUTPUT)")
    dedup: bool | None = setting(None, "the MinHash near-duplicate pass; none: on for LLM teachers, off for "
                                 "metadata")
    items: bool = setting(True, "run the item-centric flow (--only users turns it off)")
    users: bool = setting(True, "run the user-centric flow (--only items turns it off)")
    progress: bool = setting(True, "print a progress line (--quiet turns it off)")
    progress_interval: float | None = setting(None, "seconds between progress lines; none: 0.5 on a terminal, "
                                              "10 otherwise")
    report_to: tuple[str, ...] = setting((), "experiment trackers the run logs its progress, rejections, tokens and "
                                         "dollars to: tensorboard, wandb and/or mlflow, comma-separated; none: no "
                                         "tracking (REPORT_TO; synth.tracking)")
    runs_dir: str = setting("runs", "where the trackers' files go: <runs_dir>/<dataset>/synth-<corpus>/ (RUNS_DIR)")
    track_interval: float = setting(5.0, "seconds between tracker points (REPORT_TO)")

    def __post_init__(self) -> None:
        if self.structured_output not in (AUTO, *MODES):
            raise ConfigError(f"structured_output: {self.structured_output!r} is not one of "
                              f"{', '.join((AUTO, *MODES))}")
        for name in ("concurrency", "max_samples", "max_attempts", "max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        object.__setattr__(self, "extra_body", self.extra_body or None)  # {} sends nothing extra
        object.__setattr__(self, "report_to", parse_report_to(self.report_to))  # "none" -> ()
        check_installed(self.report_to)  # before anything is sent

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
    requests_sent: int = 0         # answers drawn: sent to the teacher, or the rules' for metadata
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
class Tally:
    """The finished records sorted into the corpus files, with the counts the manifest keeps."""

    items: list[dict] = field(default_factory=list)
    users: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    rejected_by: dict[str, int] = field(default_factory=dict)
    failed_by: dict[str, int] = field(default_factory=dict)
    unfinished: int = 0


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
        self.config = config
        self.llm = config.teacher != METADATA  # else the steps' rules answer
        self.dataset = Dataset(dataset_dir(config.dataset, config.data_dir))
        self.items: dict[str, Item] = self.dataset.items
        self.sid_set = self.dataset.sid_set(config.sids)  # THE SID file (synth.data.dataset), in the manifest
        self.sids = self.sid_set.load()
        self.sid_str = {k: "".join(v) for k, v in self.sids.items()}
        self.prompts = PromptSet(config.prompts_dir)
        self.prompt_hashes = self.prompts.hashes()
        # once per run, not per request: the strict schema is built from the whole schema
        self.response_formats = {step: self.prompts.response_format(step) for step in self.prompt_hashes}
        # from_items: descriptions teach which title words are ordinary prose, brands are no fragments.
        self.catalog = Catalog.from_items(self.items, self.sids)
        self.steps = make_steps(self.prompts, self.catalog)
        self.item_ids = list(self.items)[: config.limit] if config.items else []
        self.samples: list[Sample] = []
        for s in self.dataset.samples("train") if config.users else ():
            if config.limit is not None and len(self.samples) >= config.limit:
                break
            self.samples.append(s)
        self._check_sids()
        self.records: list[tuple[str, Any]] = [(ITEM, i) for i in self.item_ids] + [
            (USER, s) for s in self.samples]
        if self._dedup_on():
            # Imported at set-up, not in _finish: datasketch pulls in scipy, whose import would
            # otherwise add seconds to the run's wall time after the last answer.
            import synth.dedup  # noqa: F401
        if self.llm:
            import_litellm()  # its import is set-up, not part of the first request
        self.stats = Stats()
        self.stopping = False
        self.fatal: TeacherError | None = None
        self.failure_detail: dict[str, str] = {}
        self.teacher: Teacher | None = None
        self.cache: ResponseCache | None = None
        self.tracker = None  # synth.tracking.TrackedRun of this run (REPORT_TO)
        self._t0 = time.monotonic()

    # ---- set-up checks ----
    def _check_sids(self) -> None:
        missing = [i for i in self.item_ids if i not in self.sids]
        for s in self.samples:
            missing += [i for i in (*s.history, s.target) if i not in self.sids]
        if missing:
            raise DatasetError(
                f"{self.sid_set.path} has no SID for item {missing[0]!r} "
                f"({len(set(missing))} items in all): re-run `make sids DATASET={self.dataset.name}`")

    def _dedup_on(self) -> bool:
        # The rule-based baseline writes every text from one template, so MinHash would call
        # most of them duplicates; dedup is there to catch an LLM teacher repeating itself.
        return self.config.dedup if self.config.dedup is not None else self.llm

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

    def request_key(self, step: str, messages: list[dict], sample: int) -> str:
        """The cache key of draw ``sample`` of ``step`` with these rendered ``messages``."""
        return cache_key(self.config.teacher, self._params(step, sample), messages, self.prompt_hashes[step])

    async def _ask(self, step: str, messages: list[dict], sample: int) -> Completion:
        """The teacher's answer, from the cache when it is there."""
        assert self.teacher is not None and self.cache is not None
        key = self.request_key(step, messages, sample)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            self._account(hit.tokens_in, hit.tokens_out, spent=False)
            return hit
        if self.stopping:
            raise BudgetReached()
        params = self._params(step, sample)
        comp = await self.teacher.complete(Request(step, messages, params["temperature"], params["max_tokens"],
                                                   params["seed"], params["response_format"]))
        self.stats.requests_sent += 1
        self.cache.put(key, comp)
        self._account(comp.tokens_in, comp.tokens_out, spent=True)
        return comp

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

    # ---- one step ----
    async def _draw(self, step: Step, ctx: dict, messages: list[dict] | None, sample: int) -> str | None:
        """One answer to ``step``: the teacher's, or the rule's for the metadata baseline;
        None when it was cut off at max_tokens."""
        if not self.llm:
            self.stats.requests_sent += 1
            return step.rule(ctx)
        comp = await self._ask(step.name, messages, sample)
        if comp.truncated:
            self.stats.truncated += 1
            return None
        return comp.text

    async def run_step(self, step: Step, ctx: dict) -> Any:
        """``step``'s checked value for the template context ``ctx``: drawn up to
        ``max_samples`` times; raises Rejected with the last draw's first problem."""
        messages = self.prompts.render(step.name, ctx) if self.llm else None
        checked = Checked()
        for sample in range(self.config.max_samples):
            answer = await self._draw(step, ctx, messages, sample)
            checked = TRUNCATED if answer is None else step.check(answer, ctx)
            if not checked.problems:
                return checked.value
        raise Rejected(step.name, checked.problems[0], checked.text)

    # ---- the two flows ----
    def opening(self, index: int) -> tuple[Step, dict]:
        """Record ``index``'s first step and that step's template context."""
        kind, what = self.records[index]
        if kind == ITEM:
            return self.steps.item_analysis, item_context(self.items[what], self.sid_str[what])
        return self.steps.user_reasoning, user_context(what, self.items, self.sids)

    async def _item(self, index: int, item_id: str) -> Outcome:
        step, ctx = self.opening(index)
        insights = await self.run_step(step, ctx)
        text = await self.run_step(self.steps.item_integration, {**ctx, "insights": insights})
        return Outcome("written", {"item_id": item_id, "sid": ctx["sid"], "text": text, "insights": insights})

    async def _user(self, index: int, s: Sample) -> Outcome:
        step, ctx = self.opening(index)
        reasoning = await self.run_step(step, ctx)
        text = await self.run_step(self.steps.user_narrative, {**ctx, "reasoning": reasoning})
        return Outcome("written", {"user_id": s.user_id, "history": list(s.history), "target": s.target,
                                   "reasoning": reasoning, "text": text})

    async def _record(self, index: int) -> Outcome:
        kind, what = self.records[index]
        try:
            return await (self._item(index, what) if kind == ITEM else self._user(index, what))
        except Rejected as r:
            return Outcome("rejected", stage=r.stage, reason=r.reason, text=r.text)
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

    def progress_scalars(self) -> dict[str, float]:
        """The progress line's numbers for the trackers (``synth/...``): counts, rates, ETA, tokens, dollars,
        how many records ended each way and for which reason so far, and the teacher's retries."""
        s, total = self.stats, len(self.records)
        el = max(time.monotonic() - self._t0, 1e-9)
        rate = s.done / el
        out = {"synth/records_done": s.done, "synth/records_total": total, "synth/progress": s.done / max(total, 1),
               "synth/records_per_s": rate, "synth/requests_per_s": s.requests_sent / el,
               "synth/eta_s": (total - s.done) / rate if rate > 0 else 0.0,
               "synth/requests_sent": s.requests_sent, "synth/cache_hits": s.cache_hits,
               "synth/truncated_answers": s.truncated, "synth/tokens_in": s.tokens_in, "synth/tokens_out": s.tokens_out,
               "synth/cost_usd": s.cost_usd, "synth/spent_usd": s.spent_usd}
        out.update({f"synth/outcomes/{k}": v for k, v in s.outcomes.items()})
        out.update({f"synth/reasons/{k}": v for k, v in s.reasons.items()})  # rejected or failed, by reason
        if self.teacher is not None:  # attempts retried, by what went wrong (http_429, timeout, ...)
            out.update({f"synth/retries/{k}": v for k, v in self.teacher.retries.items()})
        return {k: float(v) for k, v in out.items()}

    def _provenance(self) -> dict:
        """The run's provenance: resolved settings (server URLs without credentials) and the input files' hashes."""
        cfg = self.config
        return provenance({**to_dict(cfg), "api_base": safe_bases(cfg.api_base)},
                          {**{name: self.dataset.path / name for name in DATASET_FILES},
                           self.sid_set.path.name: self.sid_set.path})

    def _track(self) -> None:
        if self.tracker is not None:
            self.tracker.log(self.progress_scalars(), self.stats.done)

    def _open_tracker(self) -> None:
        """One tracked run per invocation (``<dataset>/synth-<corpus>/synth``), its parameters the resolved
        settings (server URLs without credentials), prompt hashes, SID set and dataset file hashes."""
        cfg = self.config
        if not cfg.report_to:
            return
        out = corpus_dir(self.dataset.name, cfg.teacher, cfg.corpora_dir, self.sid_set.name)
        prov = self._provenance()
        params = {"config": prov["config"], "prompt_hashes": self.prompt_hashes, "sid_set": self.sid_set.record(),
                  "inputs": {name: f["sha256"] for name, f in prov["inputs"].items()}, "versions": prov["versions"],
                  "commit": prov["commit"], "corpus": str(out)}
        self.tracker = tracked(cfg.report_to, folder=Path(cfg.runs_dir) / self.dataset.name / f"synth-{out.name}",
                               runs_dir=cfg.runs_dir, dataset=self.dataset.name, stage="synth", params=params,
                               resume=False, metric_names=("corpus/written", "corpus/cost_usd"),
                               step_key="synth/records_done")

    async def _ticker(self) -> None:
        tty = sys.stderr.isatty()
        interval = self.config.progress_interval or (0.5 if tty else 10.0)
        flush_every = 0.25
        next_print = time.monotonic() + interval
        next_track = time.monotonic() + self.config.track_interval
        while True:
            await asyncio.sleep(flush_every)
            if self.cache is not None:
                self.cache.flush()  # answers survive a kill -9 within a quarter second
            if self.config.progress and time.monotonic() >= next_print:
                next_print = time.monotonic() + interval
                print(("\r" if tty else "") + self.progress_line(), end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            if self.tracker is not None and time.monotonic() >= next_track:
                next_track = time.monotonic() + self.config.track_interval
                self._track()

    async def run_async(self) -> RunResult:
        cfg = self.config
        if self.llm:
            self.teacher = make_teacher(cfg.teacher_config(), batch=cfg.batch)
        if cfg.dry_run:
            return self._dry_run()
        try:
            self._open_tracker()  # first: a run that fails its preflight is on record too
            if self.teacher is not None:
                await self.teacher.start()  # preflight: fails fast, before anything is queued
                self.cache = ResponseCache(cfg.cache_dir)
            self._t0 = time.monotonic()
            self._track()  # the starting point: 0 of N
            return await self._run_records()
        finally:
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None

    async def _run_records(self) -> RunResult:
        cfg = self.config
        results: list[Outcome | None] = [None] * len(self.records)
        queue = list(range(len(self.records)))[::-1]  # pop() from the end = record order
        # Batch API: every record in flight at once, so each step goes out as one batch.
        batch_api = self.teacher is not None and self.teacher.transport == "batch"
        n_workers = len(self.records) if batch_api else cfg.concurrency
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
            if self.teacher is not None:
                await self.teacher.aclose()
        if cfg.progress:
            print(("\r" if sys.stderr.isatty() else "") + self.progress_line(), file=sys.stderr, flush=True)
        self._track()
        if self.fatal is not None:
            raise PreflightError(f"{self.fatal.detail or self.fatal.reason}; nothing was written (answers "
                                 "received so far are cached): fix it and re-run")
        return self._finish(results)

    # ---- the corpus ----
    def _finish(self, results: list[Outcome | None]) -> RunResult:
        assert all(r is not None for r in results)
        self._drop_near_duplicates(results)
        tally = self._tally(results)
        manifest = self._manifest(tally)
        out = write_corpus(corpus_dir(self.dataset.name, self.config.teacher, self.config.corpora_dir,
                                      self.sid_set.name),
                           tally.items, tally.users, tally.rejected, manifest)
        if self.tracker is not None:  # what the corpus holds, after the near-duplicate pass
            keys = ("written", "written_items", "written_users", "rejected", "failed", "unfinished", "cache_hits",
                    "requests_sent", "request_attempts", "truncated_answers", "tokens_in", "tokens_out", "cost_usd",
                    "spent_usd", "wall_time_s")
            self.tracker.log({**scalars({k: manifest[k] for k in keys}, "corpus"),
                              "corpus/rejected_total": float(sum(manifest["rejected"].values()))}, self.stats.done)
        if tally.unfinished:
            return RunResult(manifest, out, 3, f"budget reached (${self.stats.spent_usd:.4f} of "
                             f"${self.config.budget_usd:g}); {tally.unfinished} records unfinished; "
                             "re-run to resume")
        return RunResult(manifest, out, 0, self._summary(manifest, out))

    def _drop_near_duplicates(self, results: list[Outcome]) -> None:
        """Reject, in place, written records whose text near-duplicates an earlier one's."""
        if not self._dedup_on():
            return
        from synth.dedup import near_duplicate_indices

        written = [i for i, r in enumerate(results) if r.status == "written"]
        for j in sorted(near_duplicate_indices([results[i].record["text"] for i in written])):
            i = written[j]
            results[i] = Outcome("rejected", stage="dedup", reason="near_duplicate", text=results[i].record["text"])

    def _tally(self, results: list[Outcome]) -> Tally:
        t = Tally()
        for i, r in enumerate(results):
            kind, what = self.records[i]
            if r.status == "written":
                (t.items if kind == ITEM else t.users).append(r.record)
                continue
            if r.status == "unfinished":
                t.unfinished += 1
                continue
            _count(t.rejected_by if r.status == "rejected" else t.failed_by, r.reason)
            line = {"kind": kind, "index": i, "id": what if kind == ITEM else what.user_id,
                    "status": r.status, "stage": r.stage, "reason": r.reason,
                    "text": r.text[:REJECTED_TEXT_CHARS]}
            if r.detail:
                line["detail"] = r.detail
            t.rejected.append(line)
        return t

    def _teacher_fields(self) -> dict:
        """What the manifest says of the teacher: its route, structured output, endpoints, attempts."""
        t = self.teacher
        route = t.route if t is not None else resolve_route(METADATA)
        return {
            "route": {"provider": route.provider, "model": route.model, "api_base": safe_url(route.api_base),
                      "transport": route.transport},
            "structured_output": t.structured_summary() if t is not None else None,
            "endpoints": t.pool.summary() if hasattr(t, "pool") else None,
            "request_attempts": t.attempts if t is not None else self.stats.requests_sent,
            "retries": dict(sorted(t.retries.items())) if t is not None else {},
            "priced": t is None or t.prices() is not None,
        }

    def _manifest(self, tally: Tally) -> dict:
        cfg, s = self.config, self.stats
        prov = self._provenance()
        teacher = self._teacher_fields()
        n_written = len(tally.items) + len(tally.users)
        manifest = {
            "dataset": self.dataset.name,
            "teacher": cfg.teacher,
            "route": teacher["route"],
            "structured_output": teacher["structured_output"],
            "endpoints": teacher["endpoints"],
            "complete": tally.unfinished == 0,
            "requested": len(self.records),
            "written": n_written,
            "written_items": len(tally.items),
            "written_users": len(tally.users),
            "requested_items": len(self.item_ids),
            "requested_users": len(self.samples),
            "rejected": dict(sorted(tally.rejected_by.items())),
            "failed": sum(tally.failed_by.values()),
            "failed_reasons": dict(sorted(tally.failed_by.items())),
            "unfinished": tally.unfinished,
            "cache_hits": s.cache_hits,
            "requests_sent": s.requests_sent,
            "request_attempts": teacher["request_attempts"],
            "retries": teacher["retries"],
            "truncated_answers": s.truncated,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "cost_usd": round(s.cost_usd, 6),
            "spent_usd": round(s.spent_usd, 6),
            "priced": teacher["priced"],
            "batch": cfg.batch,
            "dedup": self._dedup_on(),
            "generation": cfg.generation(),
            "prompt_hashes": self.prompt_hashes,
            "dataset_files": {name: f["sha256"] for name, f in prov["inputs"].items()},
            "sid_set": self.sid_set.record(),  # {name, file, sha256}: a run with other SIDs refuses this corpus
            "limit": cfg.limit,
            "concurrency": cfg.concurrency,
            "seed": cfg.seed,
            "versions": prov["versions"],
            "wall_time_s": round(time.monotonic() - self._t0, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": prov["command"],
            "provenance": prov,
        }
        assert manifest["requested"] == (n_written + sum(tally.rejected_by.values()) + manifest["failed"]
                                         + tally.unfinished)
        return manifest

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
        cfg, t_in = self.config, 0
        for index in range(len(self.records)):
            step, ctx = self.opening(index)
            first = estimated_tokens(self.prompts.render(step.name, ctx))
            # the second step sees roughly the first one's prompt plus its answer (at most max_tokens)
            t_in += first + (first + cfg.max_tokens)
        n_req, t_out = 2 * len(self.records), 2 * cfg.max_tokens * len(self.records)
        cost = self.teacher.cost_usd(t_in, t_out, batch=cfg.batch) if self.teacher is not None else 0.0
        priced = self.teacher is None or self.teacher.prices() is not None
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
    """Set up an engine for ``config`` and run it (``run_engine``)."""
    return run_engine(Engine(config))


def run_engine(engine: Engine) -> RunResult:
    """Run an engine already set up (dataset, catalogue, imports), on uvloop when installed.

    The objects alive after set-up (litellm's and datasketch's modules, the catalogue's
    automaton) are frozen out of the cyclic garbage collector for the run, so its full
    collections do not walk them again and again while the requests churn (the effect is
    measured in bench/README.md). Unfrozen afterwards."""
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
