"""``python -m synth --dataset NAME --teacher T ...``: write ``corpora/<dataset>/<teacher>/``.

Every option also reads the environment variable named in its help (what ``make synth``
passes), so ``DATASET=games TEACHER=gpt-4o-mini python -m synth`` works too. The defaults
are the paper's full run. The API key is read from the environment only (e.g.
``OPENAI_API_KEY``), never from the command line, so it cannot land in a manifest.

Exit status: 0 done (a note names records that failed and will be retried by a re-run);
2 bad input or preflight failure (what to set is in the message); 3 budget reached
(re-run to resume from the cache).
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _env(name: str, default=None):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def _flag(name: str) -> bool:
    return _env(name, "0").lower() not in ("0", "false", "no", "")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--dataset", default=_env("DATASET"), help="data/<NAME>/ to enrich (DATASET)")
    a("--teacher", default=_env("TEACHER", "metadata"),
      help="litellm model string or 'metadata' (TEACHER; default metadata)")
    a("--api-base", default=_env("API_BASE"), help="OpenAI-compatible server, e.g. http://host:8000/v1 (API_BASE)")
    a("--concurrency", type=int, default=int(_env("CONCURRENCY", 64)), help="requests in flight (CONCURRENCY)")
    a("--rpm", type=float, default=_env("RPM") and float(_env("RPM")), help="requests per minute (RPM)")
    a("--tpm", type=float, default=_env("TPM") and float(_env("TPM")), help="tokens per minute (TPM)")
    a("--limit", type=int, default=_env("LIMIT") and int(_env("LIMIT")),
      help="first N items and N training sequences (LIMIT)")
    a("--dry-run", action="store_true", default=_flag("DRY_RUN"), help="count and price, send nothing (DRY_RUN=1)")
    a("--budget-usd", type=float, default=_env("BUDGET_USD") and float(_env("BUDGET_USD")),
      help="stop cleanly once this much is spent (BUDGET_USD)")
    a("--batch", action="store_true", default=_flag("BATCH"), help="OpenAI Batch API (BATCH=1)")
    a("--corpora-dir", default=_env("CORPORA_DIR"), help="corpora root (CORPORA_DIR; default corpora)")
    a("--cache-dir", default=_env("CACHE_DIR"), help="response cache (CACHE_DIR; default .cache/synth)")
    a("--data-dir", default=_env("DATA_DIR"), help="datasets root (DATA_DIR; default data)")
    a("--prompts-dir", default=_env("PROMPTS_DIR"), help="templates (default prompts/synth)")
    a("--seed", type=int, default=int(_env("SEED", 0)))
    a("--temperature", type=float, default=float(_env("TEMPERATURE", 0.7)))
    a("--max-tokens", type=int, default=int(_env("MAX_TOKENS", 1024)))
    a("--timeout", type=float, default=float(_env("TIMEOUT", 120)), help="seconds per request attempt")
    a("--max-attempts", type=int, default=int(_env("MAX_ATTEMPTS", 6)), help="tries per request")
    a("--max-samples", type=int, default=int(_env("MAX_SAMPLES", 3)), help="draws per stage before rejecting")
    a("--extra-body", default=_env("EXTRA_BODY"), metavar="JSON",
      help='JSON object merged into every request body, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\' '
           "(EXTRA_BODY; part of the cache key)")
    a("--structured-output", default=_env("STRUCTURED_OUTPUT", "auto"),
      choices=["auto", "json_schema", "json_object", "prompt"],
      help="stage-1 JSON shape to start with; a server that refuses it moves the run to the next "
           "(STRUCTURED_OUTPUT; default auto = json_schema)")
    a("--backoff", type=float, default=float(_env("BACKOFF", 1.0)), help="first retry back-off, seconds")
    a("--dedup", action=argparse.BooleanOptionalAction, default=None,
      help="MinHash near-duplicate pass (default: on for LLM teachers, off for metadata)")
    a("--only", choices=["items", "users"], default=_env("ONLY"), help="run one flow only")
    a("--quiet", action="store_true", help="no progress line")
    return p


def parse_extra_body(text: str | None) -> dict | None:
    """EXTRA_BODY's JSON object, or None; ValueError says what is wrong."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"EXTRA_BODY is not JSON ({e.msg} at character {e.pos}): give a JSON object, e.g. "
                         '\'{"chat_template_kwargs": {"enable_thinking": false}}\'') from None
    if not isinstance(value, dict):
        raise ValueError(f"EXTRA_BODY must be a JSON object, not {type(value).__name__}")
    return value or None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.dataset:
        print("error: say which dataset: --dataset NAME (or DATASET=NAME)", file=sys.stderr)
        return 2
    try:
        extra_body = parse_extra_body(args.extra_body)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from synth.data.dataset import DatasetError
    from synth.engine import SynthConfig, run
    from synth.teacher import PreflightError

    cfg = SynthConfig(
        dataset=args.dataset, teacher=args.teacher, data_dir=args.data_dir, corpora_dir=args.corpora_dir,
        cache_dir=args.cache_dir, prompts_dir=args.prompts_dir, api_base=args.api_base,
        concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, limit=args.limit, dry_run=args.dry_run,
        budget_usd=args.budget_usd, batch=args.batch, seed=args.seed, temperature=args.temperature,
        max_tokens=args.max_tokens, timeout=args.timeout, max_attempts=args.max_attempts,
        max_samples=args.max_samples, backoff_initial=args.backoff, dedup=args.dedup, extra_body=extra_body,
        structured_output=args.structured_output,
        items=args.only in (None, "items"), users=args.only in (None, "users"), progress=not args.quiet)
    try:
        result = run(cfg)
    except (PreflightError, DatasetError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.message, file=sys.stderr if result.exit_code else sys.stdout)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
