"""``python -m synth --dataset NAME [--config FILE] [--teacher T ...]``: write ``<corpora_dir>/<dataset>/<teacher>/``.

Every setting is a field of ``synth.engine.SynthConfig``, which holds its one default; the
flags are generated from it (``--help`` lists them). A value comes from, later winning: that
default, the preset given with ``--config`` (a YAML mapping of SynthConfig fields, e.g.
``configs/synth/paper.yaml``), then the flags (what ``make synth`` passes for the variables
set on its command line). The API key is read from the environment only (e.g.
``OPENAI_API_KEY``), never from a flag or a preset, so it cannot land in a manifest.

Exit status (``synth.errors``): 0 done (a note names records that failed and will be
retried by a re-run); 2 bad input, a bad setting or a failed preflight (the message says
what to set); 3 budget reached (re-run to resume from the cache).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from synth.engine import SynthConfig, run
from synth.errors import run_cli
from synth.settings import ConfigError, add_arguments, build, given, load_preset

ONLY = ("items", "users")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth", description=__doc__.splitlines()[0])
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="a YAML preset of the settings below, applied before the flags (CONFIG)")
    add_arguments(p, SynthConfig)
    extra = p.add_argument_group("shorthands")
    extra.add_argument("--only", choices=ONLY, default=argparse.SUPPRESS,
                       help="run one flow only: items sets --no-users, users sets --no-items (ONLY)")
    extra.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress line: --no-progress")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> SynthConfig:
    """The resolved config of a command line: SynthConfig's defaults < ``--config`` < flags."""
    flags = given(parser().parse_args(argv))
    preset = flags.pop("config", None)
    only = flags.pop("only", None)
    if only is not None:
        flags.update(items=only == "items", users=only == "users")
    if flags.pop("quiet", False):
        flags["progress"] = False
    if "extra_body" in flags:
        flags["extra_body"] = parse_extra_body(flags["extra_body"])
    layers = [(str(preset), load_preset(preset))] if preset is not None else []
    layers.append(("command line", flags))
    if not any("dataset" in mapping for _source, mapping in layers):
        raise ConfigError("say which dataset: --dataset NAME (make synth DATASET=NAME)")
    return build(SynthConfig, *layers)


def parse_extra_body(text: str | None) -> dict | None:
    """EXTRA_BODY's JSON object, or None when empty; ConfigError says what is wrong."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"EXTRA_BODY is not JSON ({e.msg} at character {e.pos}): give a JSON object, e.g. "
                          '\'{"chat_template_kwargs": {"enable_thinking": false}}\'') from None
    if not isinstance(value, dict):
        raise ConfigError(f"EXTRA_BODY must be a JSON object, not {type(value).__name__}")
    return value


def _main(argv: Sequence[str] | None = None) -> int:
    result = run(config_from_args(argv))
    print(result.message, file=sys.stderr if result.exit_code else sys.stdout)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
