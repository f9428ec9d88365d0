"""Trainer settings: dataclass defaults < preset file < flags, unknown keys are errors, the paper's
preset states exactly the defaults, and --dry-run prints every section without loading anything."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from synth.settings import ConfigError, load_preset, section_of
from train.__main__ import main, parse
from train.config import (
    PAPER_PRESET,
    SECTIONS,
    TINY_PRESET,
    AlignConfig,
    GRPOStageConfig,
    RunConfig,
    TrainConfig,
    cap,
    load,
)

REPO = Path(__file__).resolve().parents[1]


def _flags(*argv):
    _cmd, _config, _dry, flags = parse(["run", *argv])
    return flags


def test_paper_preset_states_exactly_the_dataclass_defaults():
    preset = load_preset(PAPER_PRESET)
    assert set(preset) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert cls.preset(PAPER_PRESET) == cls(), name
        stated = set(section_of(preset, name, str(PAPER_PRESET)))
        if name != "run":  # every training/evaluation setting is written out
            assert stated == {f.name for f in dataclasses.fields(cls)}, name


def test_every_setting_has_help():
    for cls in (*SECTIONS.values(),):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


def test_tiny_preset_is_what_tiny_returns_and_the_model_picks_it():
    assert AlignConfig.tiny() == AlignConfig.preset(TINY_PRESET)
    assert AlignConfig.tiny().history_loss and not AlignConfig().history_loss
    cfg, preset = load(None, _flags("--dataset", "d", "--model", "tiny"))
    assert preset == TINY_PRESET and cfg.grpo == GRPOStageConfig.tiny().resolved(cfg.run.seed)
    cfg, preset = load(None, _flags("--dataset", "d", "--model", "Qwen/Qwen3-0.6B"))
    assert preset == PAPER_PRESET and cfg.run.model == "Qwen/Qwen3-0.6B" and cfg.align.learning_rate == 3e-4


def test_flags_win_over_the_preset_and_aliases_reach_their_fields(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("run: {model: tiny, limit: 5}\nalign: {learning_rate: 0.5, epochs: 3}\n"
                      "grpo: {max_steps: 9}\neval: {modes: [direct]}\n")
    cfg, _ = load(str(preset), _flags("--dataset", "d"))
    assert (cfg.align.learning_rate, cfg.align.epochs, cfg.grpo.max_steps, cfg.run.limit) == (0.5, 3, 9, 5)
    assert cfg.eval.modes == ("direct",) and cfg.align.max_steps == -1  # unset in the file: the default
    cfg, _ = load(str(preset), _flags("--dataset", "d", "--align.learning-rate", "0.25", "--align-epochs", "2",
                                      "--grpo-steps", "4", "--modes", "thinking,direct", "--limit", "0",
                                      "--beams", "4", "--general-n", "7", "--seed", "3"))
    assert (cfg.align.learning_rate, cfg.align.epochs, cfg.grpo.max_steps, cfg.run.limit) == (0.25, 2, 4, 0)
    assert cfg.eval.modes == ("thinking", "direct") and cfg.eval.num_beams == 4 and cfg.align.general_n == 7
    # unset seeds follow the run's; bf16 / checkpointing are decided (no None left)
    assert cfg.align.seed == cfg.activate.seed == cfg.grpo.seed == 3
    assert all(isinstance(getattr(cfg, s).bf16, bool) for s in ("align", "activate", "grpo"))


def test_unknown_keys_are_errors_that_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("align: {learning_rat: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml \[align\]: unknown setting 'learning_rat'"):
        load(str(bad), _flags("--dataset", "d"))
    assert main(["run", "--dataset", "d", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "learning_rat" in err
    bad.write_text("aling: {epochs: 1}\n")
    assert main(["run", "--dataset", "d", "--config", str(bad), "--dry-run"]) == 2
    assert "unknown section 'aling'" in capsys.readouterr().err
    assert main(["run", "--dataset", "d", "--align.epoch", "1", "--dry-run"]) == 2
    assert "--align.epoch" in capsys.readouterr().err
    assert main(["run", "--dataset", "d", "--stages", "align,nope", "--dry-run"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["run", "--dataset", "d", "--grpo.max-steps", "many", "--dry-run"]) == 2
    assert "max_steps" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="epoch"):
        AlignConfig().override(epoch=1)  # no silent drop


def test_the_limit_rule():
    assert cap() is None and cap(0, 0) is None and cap(5, 0) == 5 and cap(0, 7) == 7 and cap(9, 4) == 4
    assert RunConfig(limit=24).cap(300) == 24 and RunConfig().cap(300) == 300 and RunConfig().cap() is None


# Runs the CLI, then says which of the heavy modules it imported.
DRY = ("import sys; from train.__main__ import main; rc = main(sys.argv[1:]); "
       "heavy = [m for m in ('transformers', 'trl', 'datasets', 'train.model', 'train.tasks') if m in sys.modules]; "
       "print('imported:', heavy, file=sys.stderr); sys.exit(rc)")


def test_dry_run_prints_every_section_without_data_or_model(tmp_path):
    """No data folder exists here: a dry run reads neither data nor a model, nor imports their code."""
    for argv in (["--model", "tiny"], ["--config", str(PAPER_PRESET)]):
        res = subprocess.run([sys.executable, "-c", DRY, "run", "--dataset", "office", "--data-dir",
                              str(tmp_path / "nowhere"), "--dry-run", *argv], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "imported: []" in res.stderr
        out = json.loads(res.stdout)
        assert set(out) == set(SECTIONS)
        for name, cls in SECTIONS.items():
            assert set(out[name]) == {f.name for f in dataclasses.fields(cls)}, name
        assert not (tmp_path / "nowhere").exists()
        # the output is itself a preset that resolves to the same settings
        again = tmp_path / "again.yaml"
        again.write_text(res.stdout)
        cfg, _ = load(str(again), {})
        assert cfg.to_dict() == out
    assert TrainConfig().to_dict()["run"]["model"] == "Qwen/Qwen3-1.7B"
