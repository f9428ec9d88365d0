"""GRPO's rollout engine (``grpo.rollout_engine``): which one runs on which machine
(``train.grpo.resolve_rollout_engine``), what TRL is told for each (``grpo_args``), and a real GRPO run
with transformers' continuous batching on a CPU under bf16 that keeps the fp32 master weights: TRL's
continuous-batching rollout casts the policy to bf16 and ``trainer_class`` puts the fp32 tensors back."""
import pytest
import torch
from safetensors.torch import load_file

from synth.io import read_json
from synth.settings import ConfigError
from synth.sid import sid_string
from train.config import PAPER_PRESET, ROLLOUT_ENGINES, GRPOStageConfig
from train.grpo import (
    VLLM_INSTALL,
    continuous_batching_supported,
    grpo_args,
    kept_tensors,
    resolve_rollout_engine,
    reward_weights,
    rollout_engine,
    run_grpo,
)
from train.model import build_tiny
from train.templates import rec_messages, render_prompt

CODES = 4
SIDS = {str(i * CODES + j): [f"<a_{i}>", f"<b_{j}>"] for i in range(CODES) for j in range(CODES)}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def paper(**values) -> GRPOStageConfig:
    return GRPOStageConfig.preset(PAPER_PRESET).override(**values).resolved(42)


def resolve(engine="auto", constrained=False, *, gpu=True, vllm=True, cb=True) -> str:
    cfg = paper(rollout_engine=engine, constrained_answer=constrained)
    return resolve_rollout_engine(cfg, gpu=gpu, vllm_installed=vllm, continuous_batching_ok=cb)


@pytest.mark.parametrize("gpu, vllm, cb, expected", [
    (True, True, True, "vllm"),                   # a GPU with vLLM: vLLM
    (True, True, False, "vllm"),
    (True, False, True, "continuous_batching"),   # a GPU without vLLM: transformers' continuous batching
    (True, False, False, "generate"),             # ... unless this transformers has none
    (False, True, True, "generate"),              # no GPU: generate (vLLM needs one; CB is slower on a CPU)
    (False, False, True, "generate"),
    (False, False, False, "generate"),
])
def test_auto_picks_the_fastest_engine_the_machine_has(gpu, vllm, cb, expected):
    assert resolve(gpu=gpu, vllm=vllm, cb=cb) == expected


@pytest.mark.parametrize("gpu, vllm, cb", [(True, True, True), (True, False, True), (False, False, False)])
def test_auto_generates_when_the_answer_is_constrained(gpu, vllm, cb):
    assert resolve(constrained=True, gpu=gpu, vllm=vllm, cb=cb) == "generate"


@pytest.mark.parametrize("engine", ["generate", "continuous_batching", "vllm"])
def test_an_explicit_engine_the_machine_has_is_used(engine):
    assert resolve(engine) == engine


def test_generate_and_continuous_batching_run_without_a_gpu():
    assert resolve("generate", gpu=False, vllm=False, cb=False) == "generate"
    assert resolve("continuous_batching", gpu=False, vllm=False) == "continuous_batching"
    assert resolve("generate", constrained=True) == "generate"


def test_explicit_vllm_needs_vllm_installed_and_a_gpu():
    with pytest.raises(ConfigError, match="not installed") as e:
        resolve("vllm", vllm=False)
    assert VLLM_INSTALL in str(e.value) and VLLM_INSTALL == "pip install -e '.[vllm]'"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve("vllm", gpu=False)


def test_explicit_continuous_batching_needs_a_transformers_that_has_it():
    with pytest.raises(ConfigError, match="transformers >= 5.8.0"):
        resolve("continuous_batching", cb=False)


@pytest.mark.parametrize("engine", ["vllm", "continuous_batching"])
def test_engines_without_a_logits_processor_refuse_the_constrained_answer(engine):
    with pytest.raises(ConfigError, match=f"rollout_engine {engine} cannot constrain the answer"):
        resolve(engine, constrained=True)
    # refused by the config check too: a dry run or the start of `train run` says so, not the GRPO stage
    with pytest.raises(ConfigError, match="cannot constrain"):
        GRPOStageConfig(rollout_engine=engine, constrained_answer=True).check(1)


def test_an_unknown_engine_is_a_config_error_naming_the_engines():
    assert ROLLOUT_ENGINES == ("auto", "generate", "continuous_batching", "vllm")
    with pytest.raises(ConfigError, match="auto, generate, continuous_batching, vllm") as e:
        GRPOStageConfig(rollout_engine="sglang").check(1)
    assert "grpo.rollout_engine: 'sglang'" in str(e.value)
    with pytest.raises(ConfigError, match="expected one of"):
        resolve("sglang")


def test_the_presets():
    assert GRPOStageConfig().rollout_engine == "auto"
    assert GRPOStageConfig.preset(PAPER_PRESET).rollout_engine == "auto"
    tiny = GRPOStageConfig.tiny()
    assert tiny.rollout_engine == "auto" and tiny.constrained_answer
    assert rollout_engine(tiny)[0] == "generate"  # on any machine: the answer constraint needs generate
    # this machine (the tests run on CPUs): the paper preset generates with transformers' generate
    if not torch.cuda.is_available():
        engine, why = rollout_engine(paper())
        assert engine == "generate" and "no GPU" in why


def test_grpo_args_per_engine(tmp_path):
    cfg = paper()
    weights = reward_weights(cfg)
    plain = grpo_args(cfg, tmp_path, weights, world=1, engine="generate")
    assert not plain.use_vllm and not plain.use_transformers_continuous_batching

    cb = grpo_args(cfg, tmp_path, weights, world=1, engine="continuous_batching")
    assert cb.use_transformers_continuous_batching and not cb.use_vllm
    if not torch.cuda.is_available():
        # on a CPU the paged cache holds one generation batch of the longest prompt + completion (256-token
        # pages), not half the machine's RAM
        assert cb.transformers_continuous_batching_config == {"num_blocks": 128 * 8, "max_batch_tokens": 256}

    # GRPOConfig takes use_vllm without vLLM installed (the trainer checks it): what TRL is told
    vllm = grpo_args(cfg, tmp_path, weights, world=1, engine="vllm")
    assert vllm.use_vllm and vllm.vllm_mode == "colocate" and not vllm.use_transformers_continuous_batching
    assert vllm.vllm_enable_sleep_mode and vllm.vllm_gpu_memory_utilization == 0.3
    assert vllm.vllm_max_model_length == 1024 + 1024
    # the rest of the step is the same whatever generates the rollouts
    for args in (cb, vllm):
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation) == \
            (plain.per_device_train_batch_size, plain.gradient_accumulation_steps, plain.steps_per_generation)
        assert args.bf16 == plain.bf16 and args.beta == plain.beta and args.loss_type == plain.loss_type

    # without an engine, grpo_args resolves it for this machine
    default = grpo_args(cfg, tmp_path, weights, world=1)
    assert default.use_vllm == (rollout_engine(cfg)[0] == "vllm")
    with pytest.raises(ValueError, match="rollout engine 'auto'"):
        grpo_args(cfg, tmp_path, weights, world=1, engine="auto")


def test_kept_tensors_puts_back_the_fp32_weights_gradients_and_buffers(tmp_path):
    vocab = sorted({t for s in SIDS.values() for t in s})
    model, _ = build_tiny(vocab, None, hidden=64, layers=2, heads=2, vocab_size=2048, seed=0)
    model.float()
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # a step that spans several rollouts accumulates gradients across them
    params = {n: (p, p.detach().clone(), p.grad, p.grad.clone()) for n, p in model.named_parameters()}
    buffers = {n: (b, b.clone()) for n, b in model.named_buffers()}
    assert buffers, "the rotary frequencies are a buffer"
    with kept_tensors(model):
        model.to(torch.bfloat16)  # what TRL's continuous-batching rollout does under bf16
        assert next(model.parameters()).dtype == torch.bfloat16
    for n, p in model.named_parameters():
        param, value, grad, grad_value = params[n]
        assert p is param and p.dtype == torch.float32 and torch.equal(p.detach(), value), n
        assert p.grad is grad and p.grad.dtype == torch.float32 and torch.equal(p.grad, grad_value), n
    for n, b in model.named_buffers():
        assert b is buffers[n][0] and b.dtype == buffers[n][1].dtype and torch.equal(b, buffers[n][1]), n


@pytest.mark.skipif(not continuous_batching_supported(), reason="transformers without continuous batching")
def test_grpo_with_continuous_batching_under_bf16_keeps_fp32_master_weights(tmp_path):
    """A real GRPO run, rollouts by transformers' generate_batch on this CPU, bf16 autocast: at learning rate
    0 the saved policy is the starting one bit for bit, in fp32. Without ``trainer_class``'s guard TRL casts
    the policy to bf16 at the first rollout and the run trains (and saves) bf16 weights."""
    vocab = sorted({t for s in SIDS.values() for t in s})
    _, tok = build_tiny(vocab, tmp_path / "base", hidden=64, layers=2, heads=2, vocab_size=2048, seed=0)
    sid = {k: sid_string(v) for k, v in SIDS.items()}
    rows = [{"prompt": render_prompt(tok, rec_messages([sid[k]])), "target_sid": sid["9"]} for k in SIDS]
    cfg = GRPOStageConfig.tiny().override(
        learning_rate=0.0, num_generations=4, prompts_per_step=2, per_device_batch=8, generation_batch=8,
        max_completion_length=12, max_steps=2, eval_every=0, beta=0.0, seed=0, constrained_answer=False,
        rollout_engine="continuous_batching", bf16=True)
    summary = run_grpo(tmp_path / "base", tmp_path / "grpo", rows, cfg, set(sid.values()))

    assert summary["rollout_engine"] == "continuous_batching" and summary["steps"] == 2
    assert read_json(tmp_path / "grpo" / "summary.json")["rollout_engine"] == "continuous_batching"
    log = [h for h in read_json(tmp_path / "grpo" / "log_history.json") if "reward" in h]
    assert len(log) == 2 and all(h["completions/mean_length"] > 0 for h in log), log
    start = load_file(tmp_path / "base" / "model.safetensors")
    end = load_file(tmp_path / "grpo" / "model" / "model.safetensors")
    assert set(end) == set(start)
    for name, w in end.items():
        assert w.dtype == torch.float32, (name, w.dtype)
        assert torch.equal(w, start[name]), name
