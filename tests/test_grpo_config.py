"""GRPO and evaluation as released: the TRL GRPOConfig built from the Qwen3-1.7B preset scores 256
prompts x 16 completions per optimizer step on one process or eight, with 1,024-token prompts and
completions, KL beta 1e-3, lr 5e-7, 10 epochs, format weight 0.1; thinking-mode evaluation and the
GRPO validation callback reason for up to 1,024 tokens. The tiny preset keeps its CPU-sized values."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainingArguments

from synth.data.dataset import DatasetError
from synth.settings import ConfigError
from train.config import PAPER_PRESET, EvalConfig, GRPOStageConfig, load
from train.grpo import fit_prompts, grpo_args, reward_weights

REPO = Path(__file__).resolve().parents[1]


def paper_grpo() -> GRPOStageConfig:
    return GRPOStageConfig.preset(PAPER_PRESET).resolved(42)


@pytest.mark.parametrize("world", [1, 8])
def test_trl_config_of_the_paper_preset(world, tmp_path, monkeypatch):
    # TRL derives the generation batch from the process count it sees; make it see `world`.
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: world))
    cfg = paper_grpo().override(bf16=True)  # as on a GPU (bf16 autocast over fp32 weights)
    args = grpo_args(cfg, tmp_path, reward_weights(cfg), world=world)
    completions = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    assert completions == 256 * 16 == 4096
    assert args.num_generations == 16 and completions // args.num_generations == 256  # prompts per step
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 256 // world)
    # rollouts are generated 128 completions (8 prompts) at a time per process, whole groups, inside one step
    assert args.generation_batch_size == 128 * world and args.generation_batch_size % 16 == 0
    assert args.gradient_accumulation_steps % args.steps_per_generation == 0
    assert args.num_iterations == 1  # one update per batch, as released (ppo_mini_batch_size = batch)
    assert args.max_completion_length == 1024 and cfg.max_prompt_length == 1024
    assert args.beta == 1e-3 and args.learning_rate == 5e-7 and args.lr_scheduler_type == "constant"
    assert args.num_train_epochs == 10 and args.max_steps == -1
    assert args.reward_weights == [1.0, 0.1, 0.0]  # prefix, format (lambda), reasoning length (measured only)
    assert args.loss_type == "grpo" and args.temperature == 1.0 and args.top_p == 1.0
    assert args.bf16 and cfg.master_weights == "fp32"


def test_evaluation_and_validation_reason_for_1024_tokens():
    assert EvalConfig.preset(PAPER_PRESET).max_think_tokens == 1024
    # the validation callback's budget is the rollout length (train.grpo.run_grpo)
    assert paper_grpo().max_completion_length == 1024


def test_tiny_preset_keeps_its_cpu_sized_values(tmp_path):
    tiny = GRPOStageConfig.tiny().resolved(0)
    assert (tiny.prompts_per_step, tiny.num_generations, tiny.max_completion_length, tiny.epochs) == (8, 8, 160, 1)
    assert tiny.constrained_answer and not GRPOStageConfig().constrained_answer
    args = grpo_args(tiny, tmp_path, reward_weights(tiny), world=1)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 64
    assert EvalConfig.tiny().max_think_tokens == 160


def test_batch_settings_that_do_not_split_are_errors():
    cfg = paper_grpo()
    with pytest.raises(ConfigError, match="do not split"):
        cfg.override(per_device_batch=24).check(1)
    with pytest.raises(ConfigError, match="generation_batch"):
        cfg.override(generation_batch=100).check(1)
    with pytest.raises(ConfigError, match="whole groups"):
        cfg.override(per_device_batch=4, generation_batch=4).check(1)
    with pytest.raises(ConfigError, match="master_weights"):
        cfg.override(master_weights="fp16").check(1)
    cfg.check(8)


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_prompts_longer_than_max_prompt_length_are_left_out():
    rows = [{"prompt": "a " * n, "target_sid": "<a_1>"} for n in (3, 5, 9)]
    kept, dropped = fit_prompts(rows, WordTokenizer(), 5)
    assert [len(r["prompt"].split()) for r in kept] == [3, 5] and dropped == 1
    with pytest.raises(DatasetError, match="max_prompt_length"):
        fit_prompts(rows, WordTokenizer(), 2)


def test_dry_run_shows_the_released_settings(tmp_path):
    res = subprocess.run([sys.executable, "-m", "train", "run", "--dataset", "office", "--model", "Qwen/Qwen3-1.7B",
                          "--data-dir", str(tmp_path), "--dry-run"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    g = out["grpo"]
    assert (g["prompts_per_step"], g["num_generations"]) == (256, 16)
    assert (g["max_prompt_length"], g["max_completion_length"]) == (1024, 1024)
    assert out["eval"]["max_think_tokens"] == 1024
    assert all(out[s]["master_weights"] == "fp32" for s in ("align", "activate", "grpo"))
    assert "256 prompts x 16 completions" in res.stderr
    cfg, _ = load(str(PAPER_PRESET), {"run": {"dataset": "office"}})
    assert cfg.grpo.completions_per_step == 4096
