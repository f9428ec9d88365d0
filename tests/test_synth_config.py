"""One source of truth for every synthesis setting: SynthConfig's defaults, a preset file,
then the flags (what `make synth` passes for the variables set on its command line)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from synth.__main__ import config_from_args, main
from synth.engine import Engine, SynthConfig
from synth.settings import ConfigError
from tests.synth_fixtures import make_dataset

REPO = Path(__file__).resolve().parents[1]
# Variables `make synth` reads: unset here, so the caller's environment cannot leak into the test.
MAKE_VARS = ("DATASET", "DATA_DIR", "TEACHER", "SEED", "CORPORA_DIR", "CACHE_DIR", "CONFIG", "API_BASE",
             "CONCURRENCY", "RPM", "TPM", "LIMIT", "ONLY", "BUDGET_USD", "DRY_RUN", "BATCH", "TEMPERATURE",
             "MAX_TOKENS", "MAX_SAMPLES", "TIMEOUT", "MAX_ATTEMPTS", "BACKOFF", "STRUCTURED_OUTPUT",
             "EXTRA_BODY", "PROMPTS_DIR", "MAKEFLAGS", "MFLAGS")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", n_items=6, n_train=6)
    return root


def make_synth_argv(*assignments: str) -> list[str]:
    """The arguments `make synth VAR=...` hands to `python -m synth` (read with make -n)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    out = subprocess.run(["make", "-n", "--no-print-directory", "synth", *assignments], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    words = shlex.split(out.replace("\\\n", " "))
    at = next(i for i, w in enumerate(words) if w == "synth" and words[i - 1] == "-m")
    rest = words[at + 1:]
    return rest[: rest.index("&&")] if "&&" in rest else rest


def first_key(cfg: SynthConfig) -> str:
    """The cache key of the run's first request, through the engine's own path."""
    engine = Engine(cfg)
    step, ctx = engine.opening(0)
    return engine.request_key(step.name, engine.prompts.render(step.name, ctx), 0)


def test_make_synth_and_python_m_synth_resolve_to_the_same_config(data_dir):
    make = config_from_args(make_synth_argv("DATASET=tiny", f"DATA_DIR={data_dir}"))
    plain = config_from_args(["--dataset", "tiny", "--data-dir", str(data_dir)])
    assert make == plain
    assert make.seed == 42 and make.temperature == 0.7 and make.max_tokens == 1024 and make.teacher == "metadata"
    assert first_key(make) == first_key(plain)
    # an LLM teacher: the key covers seed, temperature, max_tokens, response format
    llm = ("TEACHER=openai/teacher",)
    make = config_from_args(make_synth_argv("DATASET=tiny", f"DATA_DIR={data_dir}", *llm))
    plain = config_from_args(["--dataset", "tiny", "--data-dir", str(data_dir), "--teacher", "openai/teacher"])
    assert make == plain and first_key(make) == first_key(plain)
    # a variable set on make's command line is passed, and changes the key
    seeded = config_from_args(make_synth_argv("DATASET=tiny", f"DATA_DIR={data_dir}", "SEED=7", *llm))
    assert seeded.seed == 7 and first_key(seeded) != first_key(plain)


def test_make_passes_only_the_variables_that_were_set():
    argv = make_synth_argv()
    assert argv == ["--dataset", "office"], argv
    argv = make_synth_argv("SEED=7", "LIMIT=3", "DRY_RUN=1", "EXTRA_BODY={\"a\": 1}", "ONLY=items")
    assert argv[:2] == ["--dataset", "office"]
    assert {"--seed", "7", "--limit", "3", "--dry-run", "--extra-body", '{"a": 1}', "--only", "items"} <= set(argv)


def test_paper_preset_through_make(data_dir, capsys, monkeypatch):
    argv = make_synth_argv("CONFIG=configs/synth/paper.yaml", "DATASET=tiny", f"DATA_DIR={data_dir}", "DRY_RUN=1")
    cfg = config_from_args(argv)
    assert (cfg.teacher, cfg.temperature, cfg.max_tokens, cfg.seed) == ("gpt-4o-mini", 0.7, 1024, 42)
    assert cfg.dry_run and cfg.limit is None and cfg.items and cfg.users
    monkeypatch.chdir(REPO)  # the preset path is relative to the repository, as in `make`
    assert main(argv) == 0
    assert "DRY RUN tiny with gpt-4o-mini: 12 records" in capsys.readouterr().out


def test_unknown_key_in_a_preset_is_exit_2_naming_file_and_key(tmp_path, data_dir, capsys):
    preset = tmp_path / "typo.yaml"
    preset.write_text("teacher: metadata\ntemprature: 0.3\n")
    argv = ["--dataset", "tiny", "--data-dir", str(data_dir), "--config", str(preset)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(preset) in err and "'temprature'" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="typo.yaml"):
        config_from_args(argv)
    assert main(["--dataset", "tiny", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_bad_values_are_exit_2(data_dir, capsys):
    base = ["--dataset", "tiny", "--data-dir", str(data_dir)]
    for extra, said in [(["--structured-output", "xml"], "structured_output"), (["--seed", "x"], "seed"),
                        (["--extra-body", "{oops"], "EXTRA_BODY is not JSON"), (["--max-samples", "0"], "max_samples")]:
        assert main([*base, *extra]) == 2, extra
        assert said in capsys.readouterr().err
    assert main([]) == 2 and "--dataset" in capsys.readouterr().err


def test_preset_then_flags(tmp_path, data_dir):
    preset = tmp_path / "p.yaml"
    preset.write_text("temperature: 0.3\nmax_samples: 2\nextra_body: {\"chat_template_kwargs\": {\"enable_thinking\": false}}\n")
    base = ["--dataset", "tiny", "--data-dir", str(data_dir), "--config", str(preset)]
    cfg = config_from_args(base)
    assert (cfg.temperature, cfg.max_samples, cfg.max_tokens) == (0.3, 2, 1024)  # preset over default
    assert cfg.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
    cfg = config_from_args([*base, "--temperature", "0.5", "--backoff", "0.01", "--only", "users", "--quiet"])
    assert (cfg.temperature, cfg.max_samples) == (0.5, 2)  # flag over preset
    assert cfg.backoff_initial == 0.01 and not cfg.items and cfg.users and not cfg.progress
    # make: the preset's teacher is not overridden by the Makefile's own TEACHER default
    cfg = config_from_args(make_synth_argv(f"CONFIG={preset}", "TEMPERATURE=0.9", "DATASET=tiny"))
    assert cfg.temperature == 0.9 and cfg.max_samples == 2 and cfg.teacher == "metadata"


def test_manifest_carries_the_resolved_config(tmp_path, data_dir):
    argv = ["--dataset", "tiny", "--data-dir", str(data_dir), "--corpora-dir", str(tmp_path / "corpora"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", "--limit", "2"]
    assert main(argv) == 0
    m = json.loads((tmp_path / "corpora" / "tiny" / "metadata" / "manifest.json").read_text())
    prov = m["provenance"]
    assert prov["config"] == {**json.loads(json.dumps(SynthConfig("tiny").__dict__)), "data_dir": str(data_dir),
                              "corpora_dir": str(tmp_path / "corpora"), "cache_dir": str(tmp_path / "cache"),
                              "progress": False, "limit": 2}
    assert set(prov["inputs"]) == {"items.jsonl", "train.jsonl", "sids.json"}
    assert m["dataset_files"] == {k: v["sha256"] for k, v in prov["inputs"].items()}
    assert m["seed"] == 42 and m["requested"] == 4 and m["versions"] == prov["versions"]
