"""Bench section "trainer": SFT tokens/s, one GRPO step, evaluation rows/s, each against a peer
measured in the same run on the same model and the same inputs.

1. SFT through ``train.align.run_sft`` (TRL SFTTrainer, bfd packing, padding-free, as
   ``AlignConfig.tiny()``) on align rows of a synthetic catalogue (``train.tasks.align_rows``);
   peer: a plain PyTorch loop (forward + backward + AdamW step) over the very batches TRL's data
   loader yields (captured after training) = the floor. Ratio TRL / plain.
2. GRPO through ``train.grpo.run_grpo``: median seconds per optimizer step after the first; peer:
   ``model.generate`` sampling the same number of completions of the same length (the rollout).
   Ratio step / rollout.
3. Evaluation: test rows/s of ``train.decoding.recommend`` (beam 10, direct mode, trie constraint);
   peers: the same beam search (same batches, same shared-prompt cache, same SID length) without the
   trie constraint (ratio = the constraint's overhead), and a plain ``model.generate(num_beams=10)``
   as a user would write it. Thinking mode rows/s with a small reasoning budget, against direct.

Shapes (``BENCH_TRAINER_SHAPE``; ``BENCH_DEVICE`` = cpu | cuda):
- unset: ``MODEL=tiny`` exactly as the toolkit builds it (``train.model.build_tiny``), CPU, fp32.
- ``qwen3-1.7b``: Qwen3-1.7B's shape with RANDOM weights, bf16, activation checkpointing, on a GPU,
  with the stage defaults of ``GRPOStageConfig()`` (group 16, 256 completions a step). Needs only
  torch, transformers, trl, datasets (+ accelerate, tokenizers), jinja2, numpy: the tokenizer is a
  byte-level BPE trained here on the synthetic catalogue (not MiniLM's word list), and the model's
  embedding keeps Qwen3's 151,936 rows (ids past the tokenizer decode to nothing: fine for timing).
- ``tiny``: the same code path as ``qwen3-1.7b`` at a toy size, to test it on a CPU.

Step times come from the trainer's own step boundaries (``CallbackHandler.on_step_end``, patched for
the duration of a run only: ``run_sft``/``run_grpo`` take no callbacks and are measured unchanged).
"""
from __future__ import annotations

import contextlib
import gc
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import progress, row

SHAPES = {
    # Qwen3-1.7B (config.json of Qwen/Qwen3-1.7B), random weights.
    "qwen3-1.7b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=6144, vocab_size=151936, max_position_embeddings=40960,
                       rope_theta=1_000_000.0),
    # The same path at a toy size (vocab larger than the tokenizer, as with Qwen3's).
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=32, intermediate_size=192, vocab_size=6000, max_position_embeddings=4096,
                 rope_theta=1_000_000.0),
}


@dataclass(frozen=True)
class Sizes:
    items: int = 400
    samples: int = 120  # train samples -> 4 align rows each (+ 2 rows per touched item)
    sft_steps: int = 4
    sft_batch: int = 8  # packed sequences per step
    sft_len: int = 512
    grpo_steps: int = 3
    grpo_completions: int = 32  # per optimizer step
    grpo_group: int = 8
    grpo_per_device: int = 32
    grpo_len: int = 48
    eval_rows: int = 32
    eval_batch: int = 64
    think_rows: int = 16
    think_tokens: int = 16
    eval_repeats: int = 3
    sft_repeats: int = 5
    codebook: int = 256


QUICK = Sizes(sft_batch=4, sft_steps=3, sft_repeats=1, grpo_completions=16, grpo_per_device=16, grpo_len=32, think_rows=8)
FULL = Sizes(items=1000, samples=300, sft_steps=16, grpo_steps=4, eval_rows=96, think_rows=48, think_tokens=32)
GPU = Sizes(items=3000, samples=600, sft_steps=10, sft_batch=8, sft_len=1024, grpo_steps=3, grpo_completions=256,
            grpo_group=16, grpo_per_device=16, grpo_len=256, eval_rows=256, eval_batch=32, think_rows=256,
            think_tokens=64, eval_repeats=1, sft_repeats=1)
SHAPE_TEST = Sizes(items=200, samples=60, sft_steps=3, sft_len=256, grpo_steps=2, grpo_completions=16,
                   grpo_group=4, grpo_per_device=8, grpo_len=16, eval_rows=16, think_rows=8, think_tokens=8,
                   eval_repeats=1, sft_repeats=1)


# ---------------------------------------------------------------------------------------------
# a synthetic catalogue with SIDs: realistic align rows without any data download
# ---------------------------------------------------------------------------------------------
_BRANDS = ["Acme", "Paperline", "Inkwell", "Staplex", "Officely", "Deskmate", "Clipco", "Notewise", "Marko",
           "Bindex", "Swiftwrite", "Ledgerly", "Pinpoint", "Foldex", "Brightdesk", "Quillon"]
_ADJ = ["Premium", "Heavy Duty", "Retractable", "Refillable", "Recycled", "Ergonomic", "Compact", "Wireless",
        "Adjustable", "Waterproof", "Quick-Dry", "Fine Point", "Wide Ruled", "Self-Adhesive", "Assorted Colors"]
_NOUNS = ["Gel Pens", "Ballpoint Pens", "Highlighters", "Sticky Notes", "Binder Clips", "Stapler", "Paper Shredder",
          "Desk Organizer", "Composition Notebook", "File Folders", "Label Maker", "Printer Paper", "Ink Cartridge",
          "Whiteboard Markers", "Index Cards", "Tape Dispenser", "Envelopes", "Calculator", "Mouse Pad", "Planner"]
_EXTRA = ["Black Ink", "Blue Ink", "Letter Size", "8.5 x 11 Inches", "for Home and Office", "Smooth Writing",
          "Non-Toxic", "Acid-Free", "Jam-Free", "Bulk Pack", "Medium Point 0.7mm", "College Ruled", "BPA Free"]


def synthetic_dataset(root: Path, n_items: int, n_samples: int, codebook: int = 256, seed: int = 0) -> Path:
    """``root/bench`` in the normalized dataset form with a sids.json (3 levels x ``codebook``)."""
    from synth.data.dataset import Item, Sample, write_dataset
    from synth.io import write_json
    from synth.sid import tokens_from_codes

    rng = random.Random(seed)
    items, sids, seen = [], {}, set()
    for i in range(n_items):
        title = (f"{rng.choice(_BRANDS)} {rng.choice(_ADJ)} {rng.choice(_NOUNS)}, "
                 f"{', '.join(rng.sample(_EXTRA, rng.randint(1, 3)))}, {rng.choice([1, 2, 3, 5, 6, 12, 24, 36])} Pack")
        items.append(Item(item_id=str(i), title=title))
        while True:
            codes = (rng.randrange(codebook), rng.randrange(codebook), rng.randrange(codebook))
            if codes not in seen:
                seen.add(codes)
                break
        sids[str(i)] = tokens_from_codes(codes)
    ids = [it.item_id for it in items]
    splits: dict[str, list] = {"train": [], "valid": [], "test": []}
    for split, n in (("train", n_samples), ("valid", max(8, n_samples // 8)), ("test", max(8, n_samples))):
        for u in range(n):
            seq = rng.sample(ids, rng.randint(4, 11))  # history of 3..10 items, then the target
            splits[split].append(Sample(user_id=f"{split}{u}", history=seq[:-1], target=seq[-1]))
    out = root / "bench"
    write_dataset(out, items, splits, {"source": "bench.trainer_bench synthetic catalogue", "seed": seed})
    write_json(out / "sids.json", sids)
    return out


def bench_tokenizer(texts, vocab_size: int = 4096):
    """A byte-level BPE trained on ``texts`` only (no MiniLM word list), with the Qwen control and
    think tokens and THE chat template: the tokenizer of the random-weight shapes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from train.model import SPECIAL_TOKENS, THINK_TOKENS, chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.chat_template = chat_template()
    return fast


def build_shape(shape: str, sids_vocab, texts, save_dir: Path, device: str, seed: int = 0) -> None:
    """A random-weight Qwen3 of ``SHAPES[shape]`` with the SID tokens, saved (bf16 on a GPU)."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from train.model import save

    torch.manual_seed(seed)
    tok = bench_tokenizer(texts)
    tok.add_tokens(list(sids_vocab), special_tokens=False)
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(dims["vocab_size"], len(tok))  # SID rows already exist: no resize needed
    config = Qwen3Config(**dims, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=None)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=None)
    save(model, tok, save_dir)
    model = None  # free it before the thinking-mode pass
    _free(device)


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# the trainer's own step boundaries
# ---------------------------------------------------------------------------------------------
class StepClock:
    """Wall time at train begin and at each optimizer step's end, and (optionally) the first
    ``capture`` batches of the trainer's data loader, taken after training, moved to the CPU."""

    def __init__(self, device: str, capture: int = 0, profiler=None):
        self.device, self.capture, self.profiler = device, capture, profiler
        self.marks: list[float] = []
        self.batches: list[dict] = []
        self.rollout_s: list[float] = []  # TRL's own timing of its generate calls (GRPO), in order

    @contextlib.contextmanager
    def patched(self):
        from transformers.trainer_callback import CallbackHandler

        clock = self
        orig_begin, orig_step, orig_end = CallbackHandler.on_train_begin, CallbackHandler.on_step_end, \
            CallbackHandler.on_train_end

        def on_train_begin(handler, args, state, control):
            _sync(clock.device)
            clock.marks = [time.perf_counter()]
            return orig_begin(handler, args, state, control)

        def on_step_end(handler, args, state, control):
            _sync(clock.device)
            clock.marks.append(time.perf_counter())
            if clock.profiler is not None:
                clock.profiler.step()
            return orig_step(handler, args, state, control)

        def on_train_end(handler, args, state, control):
            if clock.capture and handler.train_dataloader is not None:
                for i, batch in enumerate(handler.train_dataloader):
                    if i >= clock.capture:
                        break
                    clock.batches.append({k: v.detach().cpu() for k, v in batch.items() if hasattr(v, "detach")})
            return orig_end(handler, args, state, control)

        from trl.extras.profiling import ProfilingContext

        orig_log = ProfilingContext._log_metrics

        def log_metrics(ctx, duration):  # TRL times its rollouts itself ("...generate...")
            if "generate" in ctx.name:
                clock.rollout_s.append(duration)
            return orig_log(ctx, duration)

        CallbackHandler.on_train_begin, CallbackHandler.on_step_end, CallbackHandler.on_train_end = \
            on_train_begin, on_step_end, on_train_end
        ProfilingContext._log_metrics = log_metrics
        try:
            yield self
        finally:
            CallbackHandler.on_train_begin, CallbackHandler.on_step_end, CallbackHandler.on_train_end = \
                orig_begin, orig_step, orig_end
            ProfilingContext._log_metrics = orig_log

    @property
    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


# ---------------------------------------------------------------------------------------------
# 1. SFT
# ---------------------------------------------------------------------------------------------
def plain_sft(model_dir: Path, batches: list[dict], lr: float, weight_decay: float, device: str, bf16: bool,
              checkpointing: bool, loss: str, attention: str, max_grad_norm: float = 1.0) -> list[float]:
    """The floor: forward + backward + gradient clipping + AdamW step over ``batches``, nothing else (no data
    loading, no logging); seconds per step. Same
    weights as the toolkit trains (``load_for_training``: fp32 masters, bf16 autocast on a GPU), same
    attention kernel, THE optimizer (fused AdamW). ``loss``: "labelled" (``train.sft.labelled_loss``, the
    loss the toolkit computes: LM head on the labelled positions; TRL's fused head does the same on a
    GPU) or "model" (the model's own loss: LM head on every position)."""
    import torch

    from train.model import load_for_training
    from train.sft import labelled_loss

    model, _ = load_for_training(model_dir, "fp32", attention)
    model.to(device)
    if checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device == "cuda" else contextlib.nullcontext()
    keep = ("input_ids", "labels", "position_ids", "attention_mask")
    times = []
    prof = profiler(device, f"sft_plain_{loss}")
    if prof is not None:
        prof.start()
    for batch in batches:
        _sync(device)
        t = time.perf_counter()
        inputs = {k: v.to(device) for k, v in batch.items() if k in keep}
        with autocast:
            out = labelled_loss(model, inputs)[0] if loss == "labelled" else model(**inputs, use_cache=False).loss
        out.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # as the Trainer clips (max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t)
        if prof is not None:
            prof.step()
    if prof is not None:
        prof.stop()
    del model, opt
    _free(device)
    return times


def profiler(device: str, name: str):
    """A torch profiler over steps 2-4 of a run when ``BENCH_PROFILE_DIR`` is set (GPU: CUDA activity too), its
    top operators written to ``<dir>/<name>.txt`` when the run ends; else None."""
    out = os.environ.get("BENCH_PROFILE_DIR")
    if not out:
        return None
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"

    def write(prof):
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"{name}.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=30))

    return profile(activities=activities, schedule=schedule(wait=1, warmup=0, active=3, repeat=1),
                   on_trace_ready=write)


# Dense bf16 peak of the GPUs the check runs on (TFLOP/s, no sparsity): MFU = 6 x parameters x tokens/s / peak.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def mfu(tokens_per_s: float, params: int, device: str) -> float | None:
    """Model FLOPs utilisation of SFT at ``tokens_per_s`` (forward + backward = 6 FLOPs a parameter a token)."""
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return None if peak is None else 6 * params * tokens_per_s / (peak * 1e12)


def quick_step(times: list[float]) -> float:
    """A run's step time without the machine's interference: the lower quartile of its steps. Every step pays
    the trainer's own work (data loading, bookkeeping), so it stays in; a neighbour's load spike only ever
    adds time, and on this shared 2-core machine it moved single rounds by up to 35% (timeit takes the
    minimum for the same reason)."""
    ordered = sorted(times)
    return ordered[len(ordered) // 4]


def bench_sft(base: Path, work: Path, rows: list[dict], sz: Sizes, device: str, label: str) -> list[dict]:
    """TRL through ``run_sft`` against plain loops over the same batches (the first ``sft_steps`` batches of
    the trainer's loader, captured after training): tokens/s = the batches' real tokens over the step times,
    the first step left out. Logging as the preset logs (every 20 steps tiny, 10 at 1.7B)."""
    from train.config import AlignConfig
    from train.model import activation_checkpointing, attention_kernel, load_model
    from train.sft import run_sft

    gpu = device == "cuda"
    preset = AlignConfig() if gpu else AlignConfig.tiny()
    cfg = preset.override(max_steps=sz.sft_steps, batch_size=sz.sft_batch, per_device_batch=sz.sft_batch,
                          max_length=sz.sft_len, bf16=gpu, warmup_steps=0.0)
    attention = attention_kernel(cfg.attention, cfg.packing, gpu)
    shape_model, shape_tok = load_model(base)
    params = sum(p.numel() for p in shape_model.parameters())
    ckpt = activation_checkpointing(None, shape_model, sz.sft_batch * sz.sft_len)  # what run_sft decides
    del shape_model
    # Interleaved rounds (TRL, plain, plain with the model's loss; again): a load spike on the shared machine
    # hits both sides alike, and the medians over rounds are reported.
    trl_s, plain_s, plain_model_s, batches = [], [], [], []
    for r in range(sz.sft_repeats):
        prof = profiler(device, "sft_toolkit") if r == 0 else None
        clock = StepClock(device, capture=sz.sft_steps if r == 0 else 0, profiler=prof)
        progress(f"trainer: SFT {sz.sft_steps} steps of {sz.sft_batch}x{sz.sft_len} tokens through run_sft, "
                 f"round {r + 1}/{sz.sft_repeats} ({label})")
        with clock.patched(), (prof if prof is not None else contextlib.nullcontext()):
            summary = run_sft(base, work / f"sft{r}", rows, None, cfg)
        _free(device)
        if len(clock.steps) < 2:
            raise RuntimeError(f"trainer bench: SFT ran {summary['steps']} step(s); need >= 2 (more rows?)")
        batches = batches or clock.batches
        trl_s.append(quick_step(clock.steps[1:]))  # the first step (allocations, warm-up) left out
        progress(f"trainer: plain PyTorch loops over the same {len(batches)} batches (labelled-position loss, "
                 f"then the model's own loss)")
        plain = plain_sft(base, batches, cfg.learning_rate, cfg.weight_decay, device, gpu, ckpt, "labelled", attention)
        plain_model = plain_sft(base, batches, cfg.learning_rate, cfg.weight_decay, device, gpu, ckpt, "model",
                                attention)
        plain_s.append(quick_step(plain[1:]))
        plain_model_s.append(quick_step(plain_model[1:]))
    # real tokens of each batch (packed rows are right-padded for sdpa: train.sft.packed_rows_collator)
    ptoks = [int(b["input_ids"].ne(shape_tok.pad_token_id).sum()) for b in batches]
    per_batch = statistics.mean(ptoks[1:])
    trl_rate = per_batch / statistics.median(trl_s)
    plain_rate = per_batch / statistics.median(plain_s)
    plain_model_rate = per_batch / statistics.median(plain_model_s)
    rounds = [p / t for t, p in zip(trl_s, plain_s)]  # TRL against the plain loop of the same time window
    per_round = ", ".join(f"{r:.2f}" for r in rounds)
    use = mfu(trl_rate, params, device)
    note = (f"{summary['steps']} steps of ~{round(per_batch):,} tokens, packed bfd {sz.sft_batch}x{sz.sft_len}, "
            f"first step left out; {'bf16 autocast over fp32 weights' if gpu else 'fp32'}, "
            f"act. ckpt {'on' if ckpt else 'off'}, {attention}, fused AdamW on both, logging every "
            f"{cfg.logging_steps} steps; ratio: median of {sz.sft_repeats} interleaved rounds ({per_round}); TRL wall "
            f"incl. setup {summary['wall_s']} s"
            + (f"; MFU {use:.1%} (plain loop {mfu(plain_rate, params, device):.1%})" if use is not None else ""))
    return [
        row(f"SFT tokens/s ({label})", round(trl_rate, 1), "tok/s", round(plain_rate, 1),
            "plain torch loop, same loss (floor)", ratio=statistics.median(rounds), note=note),
        row(f"SFT tokens/s vs model loss ({label})", round(trl_rate, 1), "tok/s", round(plain_model_rate, 1),
            "plain torch loop, model's own loss", note="the model's loss projects every position through the LM head"),
        row(f"SFT s/step ({label})", round(statistics.median(trl_s), 3), "s", round(statistics.median(plain_s), 3),
            "plain torch loop, same loss", note=f"lower-quartile step after the first, median over rounds; {round(per_batch)} "
                                                 "tokens/step"),
    ] + ([row(f"SFT MFU ({label})", round(use, 4), "", round(mfu(plain_rate, params, device), 4), "plain torch loop",
              note=f"6 x {params / 1e9:.2f}B FLOPs a token against the GPU's dense bf16 peak")] if use is not None else [])


# ---------------------------------------------------------------------------------------------
# 2. GRPO
# ---------------------------------------------------------------------------------------------
def rollout_time(model_dir: Path, prompts: list[str], group: int, max_new: int, device: str,
                 temperature: float, top_p: float) -> tuple[float, int]:
    """Seconds to sample ``len(prompts) x group`` completions in one ``generate`` call (as TRL does),
    after one small warm-up call; and the tokens generated."""
    import torch

    from train.model import load_model

    model, tok = load_model(model_dir)
    model.to(device).eval()
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=group,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, use_cache=True)
    with torch.inference_mode():
        model.generate(input_ids=enc["input_ids"][:1], attention_mask=enc["attention_mask"][:1], max_new_tokens=4, **kw)
        _sync(device)
        t = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=max_new, **kw)
        _sync(device)
        wall = time.perf_counter() - t
    gen = out[:, enc["input_ids"].shape[1]:]
    n_tokens = int((gen != tok.pad_token_id).sum())
    del model, out
    _free(device)
    return wall, n_tokens


def rollout_engines(device: str) -> list[str]:
    """The engines the GRPO bench compares: ``BENCH_ROLLOUT_ENGINES`` (comma-separated), else on a GPU generate
    and continuous batching (+ vLLM where installed), on a CPU generate."""
    chosen = os.environ.get("BENCH_ROLLOUT_ENGINES")
    if chosen:
        return [e.strip() for e in chosen.split(",") if e.strip()]
    if device != "cuda":
        return ["generate"]
    from train.grpo import vllm_installed

    return ["generate", "continuous_batching"] + (["vllm"] if vllm_installed() else [])


def bench_grpo(base: Path, work: Path, rows: list[dict], valid_sids: set[str], sz: Sizes, device: str,
               label: str) -> list[dict]:
    from synth.io import read_json
    from train.config import GRPOStageConfig
    from train.grpo import run_grpo

    gpu = device == "cuda"
    base_cfg = GRPOStageConfig() if gpu else GRPOStageConfig.tiny()
    cfg = base_cfg.override(num_generations=sz.grpo_group, prompts_per_step=sz.grpo_completions // sz.grpo_group,
                            generation_batch=sz.grpo_completions,  # one generate call per step (the peer's shape)
                            per_device_batch=sz.grpo_per_device, max_completion_length=sz.grpo_len,
                            max_steps=sz.grpo_steps, eval_every=0, bf16=gpu, activation_checkpointing=None,
                            constrained_answer=False)  # the peer (the rollout alone) is unconstrained generate
    prompts = [r["prompt"] for r in rows[: sz.grpo_completions // sz.grpo_group]]
    progress(f"trainer: rollout peer, generate {len(prompts)} x {sz.grpo_group} completions")
    gen_s, gen_tokens = rollout_time(base, prompts, sz.grpo_group, sz.grpo_len, device, cfg.temperature, cfg.top_p)
    out = []
    for engine in rollout_engines(device):
        clock = StepClock(device)
        progress(f"trainer: GRPO {sz.grpo_steps} steps of {sz.grpo_completions} completions (group {sz.grpo_group}, "
                 f"<= {sz.grpo_len} tokens) through run_grpo, rollouts by {engine} ({label})")
        with clock.patched():
            summary = run_grpo(base, work / f"grpo-{engine}", rows, cfg.override(rollout_engine=engine), valid_sids)
        _free(device)
        steps = clock.steps
        if len(steps) < 2:
            raise RuntimeError(f"trainer bench: GRPO ran {len(steps)} step(s); need >= 2")
        step_s = statistics.median(steps[1:])
        rollout_s = statistics.median(clock.rollout_s[1:]) if len(clock.rollout_s) > 1 else None
        lengths = [h.get("completions/mean_length") for h in read_json(work / f"grpo-{engine}" / "log_history.json")
                   if "reward" in h]
        mean_len = statistics.mean(x for x in lengths if x is not None) if any(x is not None for x in lengths) \
            else None
        rt = summary.get("runtime", {})
        out.append(row(
            f"GRPO s/step {engine} ({label})", round(step_s, 3), "s", rollout_s and round(rollout_s, 3),
            "its rollouts (TRL's own timing)",
            note=(f"median of steps 2..{len(steps)}; {sz.grpo_completions} completions/step, group {sz.grpo_group}, "
                  f"mean completion {mean_len if mean_len is None else round(mean_len, 1)} tokens; rollout share "
                  f"{'-' if rollout_s is None else f'{rollout_s / step_s:.0%}'}; plain generate of the same "
                  f"completions {gen_s:.3f} s ({gen_tokens / max(1, len(prompts) * sz.grpo_group):.1f} tokens each); "
                  f"beta {cfg.beta}, {'bf16 autocast' if gpu else 'fp32'}, act. ckpt "
                  f"{'on' if rt.get('activation_checkpointing') else 'off'}, {rt.get('attention')}")))
    return out


# ---------------------------------------------------------------------------------------------
# 3. evaluation
# ---------------------------------------------------------------------------------------------
def unconstrained_beams(model, ids: list[list[int]], *, num_beams: int, new_tokens: int, batch_size: int,
                        end_id: int, pad_id: int, share_prompt: bool) -> None:
    """``constrained_beam_search``'s batches and generate call without the trie processor, each beam
    forced to the SID length (``min_new_tokens``): what the constraint costs, nothing else."""
    import torch

    from train.decoding import left_pad, model_device, prompt_cache

    device = model_device(model)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [ids[i] for i in order[start: start + batch_size]]
            input_ids, attention_mask = left_pad(chunk, pad_id, device)
            extra = {}
            if share_prompt:
                cache = prompt_cache(model, input_ids, attention_mask, num_beams)
                if cache is not None:
                    extra["cache"] = cache
            model.generate(input_ids=input_ids, attention_mask=attention_mask, **extra, num_beams=num_beams,
                           num_return_sequences=num_beams, do_sample=False, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, length_penalty=0.0, early_stopping="never",
                           eos_token_id=end_id, pad_token_id=pad_id, output_scores=True,
                           return_dict_in_generate=True, use_cache=True)


def bench_eval(base: Path, eval_rows: list[dict], sids: dict, sz: Sizes, device: str, label: str) -> list[dict]:
    from train.decoding import EMPTY_THINK, DecodeConfig, encode, recommend, token_ids, with_suffix
    from train.model import load_model
    from train.trie import SidTrie

    model, tok = load_model(base)
    model.to(device).eval()
    trie = SidTrie.from_sids(sids, tok)
    prompts = [r["prompt"] for r in eval_rows]
    ids_ = token_ids(tok)
    direct = DecodeConfig(num_beams=10, num_return=10, mode="direct", batch_size=sz.eval_batch)
    recommend(model, tok, prompts[: min(4, len(prompts))], trie, direct)  # warm-up (allocator, kernels)

    def timed(fn):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t

    progress(f"trainer: evaluation, {len(prompts)} rows beam 10 direct, with and without the trie, "
             f"{sz.eval_repeats} interleaved round(s) ({label})")
    ids = encode(tok, [with_suffix(p, EMPTY_THINK) for p in prompts])
    common = dict(num_beams=10, new_tokens=trie.levels + 1, batch_size=sz.eval_batch, end_id=ids_.end, pad_id=ids_.pad)
    ranked: list = []
    trie_t, free_t, plain_t = [], [], []
    for _ in range(sz.eval_repeats):  # interleaved: a load spike on the shared machine hits all three alike
        ranked.clear()
        trie_t.append(timed(lambda: ranked.extend(recommend(model, tok, prompts, trie, direct))))
        free_t.append(timed(lambda: unconstrained_beams(model, ids, share_prompt=True, **common)))
        plain_t.append(timed(lambda: unconstrained_beams(model, ids, share_prompt=False, **common)))
    t_trie, t_free, t_plain = (statistics.median(x) for x in (trie_t, free_t, plain_t))
    full = sum(len(r) == 10 for r in ranked)
    n = len(prompts)
    think_prompts = prompts[: sz.think_rows]
    thinking = DecodeConfig(num_beams=10, num_return=10, mode="thinking", batch_size=sz.eval_batch,
                            max_think_tokens=sz.think_tokens)
    progress(f"trainer: evaluation, {len(think_prompts)} rows thinking mode (<= {sz.think_tokens} reasoning tokens)")
    t_think = timed(lambda: recommend(model, tok, think_prompts, trie, thinking))
    model = None  # free it before the thinking-mode pass
    _free(device)
    rate = n / t_trie
    return [
        row(f"eval rows/s beam 10 direct ({label})", round(rate, 2), "rows/s", round(n / t_free, 2),
            "same beam search without the trie", note=(f"{n} test rows, batch {sz.eval_batch}, {len(trie)} items, {full}/{n} rows with 10 "
                                                        f"items; median of {sz.eval_repeats}; ratio < 1 = the trie's cost")),
        row(f"eval rows/s vs plain generate ({label})", round(rate, 2), "rows/s", round(n / t_plain, 2),
            "generate(num_beams=10), prompt per beam", note="what recommend's shared prompt cache + trie give together"),
        row(f"eval rows/s thinking ({label})", round(len(think_prompts) / t_think, 2), "rows/s", round(rate, 2),
            "direct mode", note=f"{len(think_prompts)} rows, greedy reasoning <= {sz.think_tokens} tokens, then beam 10"),
    ]


# ---------------------------------------------------------------------------------------------
# the targets (issue 13): one row each, ratio >= 1 = met
# ---------------------------------------------------------------------------------------------
def target_rows(rows: list[dict], device: str, shape: str | None) -> list[dict]:
    """The throughput targets as rows: measured, the bound, ratio >= 1 when met. On a CPU: SFT >= 0.9 of the
    plain loop and constrained evaluation >= 0.95 of the unconstrained search; on a GPU at Qwen3-1.7B's
    shape: SFT >= 0.9 and MFU >= 25%, a GRPO step (256 x 256) <= 7.5 s with rollouts <= 40% of it,
    constrained evaluation >= 0.85."""
    if shape == "tiny":  # the toy shape is a smoke test of the GPU code path: too small for its ratios to mean much
        return []

    def first(prefix: str) -> dict | None:
        return next((r for r in rows if r["name"].startswith(prefix)), None)

    out = []

    def target(name: str, measured: float | None, bound: float, at_least: bool = True) -> None:
        if measured is None:
            return
        met = measured >= bound if at_least else measured <= bound
        out.append(row(f"target: {name}", round(measured, 3), "", bound, "bound",
                       ratio=(measured / bound) if at_least else (bound / measured if measured else None),
                       note="met" if met else "MISSED"))

    gpu = device == "cuda"
    sft, ev = first("SFT tokens/s ("), first("eval rows/s beam 10 direct")
    target("SFT / plain loop >= 0.9", sft and sft["ratio"], 0.9)
    target(f"constrained / unconstrained eval >= {0.85 if gpu else 0.95}", ev and ev["ratio"], 0.85 if gpu else 0.95)
    if gpu and shape == "qwen3-1.7b":
        use = first("SFT MFU")
        target("SFT MFU >= 25%", use and use["value"], 0.25)
        for grpo in (r for r in rows if r["name"].startswith("GRPO s/step")):
            engine = grpo["name"][len("GRPO s/step"):].split("(")[0].strip()
            target(f"GRPO step <= 7.5 s ({engine})", grpo["value"], 7.5, at_least=False)
            target(f"GRPO rollout share <= 40% ({engine})",
                   grpo["peer"] / grpo["value"] if grpo["value"] and grpo["peer"] else None, 0.4, at_least=False)
    return out


# ---------------------------------------------------------------------------------------------
# the section
# ---------------------------------------------------------------------------------------------
def _settings(quick: bool, shape: str | None, device: str | None) -> tuple[str | None, str, Sizes]:
    shape = shape if shape is not None else (os.environ.get("BENCH_TRAINER_SHAPE") or None)
    device = device or os.environ.get("BENCH_DEVICE") or "cpu"
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"BENCH_TRAINER_SHAPE={shape!r}: expected one of {sorted(SHAPES)} (or unset for MODEL=tiny)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"BENCH_DEVICE={device!r}: expected cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("BENCH_DEVICE=cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    if shape == "qwen3-1.7b":
        sizes = GPU if not quick else replace(GPU, sft_steps=4, grpo_steps=2, eval_rows=64, think_rows=32)
    elif shape == "tiny":
        sizes = SHAPE_TEST
    else:
        sizes = QUICK if quick else FULL
    return shape, device, sizes


def run(quick: bool, shape: str | None = None, device: str | None = None, sizes: Sizes | None = None,
        workdir: str | os.PathLike | None = None) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from synth.data.dataset import Dataset
    from synth.sid import sid_string, vocabulary_of
    from train.model import build_tiny, load_model, set_threads
    from train.tasks import Inputs, align_rows, rec_rows

    shape, device, default_sizes = _settings(quick, shape, device)
    sz = sizes or default_sizes
    if device == "cpu":
        set_threads(2)
    label = f"{shape or 'MODEL=tiny'} {device}"
    with tempfile.TemporaryDirectory(prefix="bench-trainer-", dir=workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        ds_dir = synthetic_dataset(work, sz.items, sz.samples, sz.codebook)
        ds = Dataset(ds_dir)
        sids = ds.sids()
        inputs = Inputs(ds, sids, None)
        rows = align_rows(inputs, limit=sz.samples)
        # Enough rows for the steps (~60 tokens a row, with margin), no more: TRL tokenises and packs them all.
        rows = rows[: max(64, sz.sft_steps * sz.sft_batch * sz.sft_len // 40)]
        texts = [it.title for it in ds.items.values()] + [m["content"] for r in rows[:2000] for m in r["messages"]]
        base = work / "base"
        if shape is None:
            build_tiny(vocabulary_of(sids.values()), base, texts=texts)
        else:
            build_shape(shape, vocabulary_of(sids.values()), texts, base, device)
        _, tok = load_model(base)
        grpo_rows = rec_rows(inputs, "train", tok, limit=max(64, sz.grpo_completions // sz.grpo_group * sz.grpo_steps))
        eval_rows = rec_rows(inputs, "test", tok, limit=max(sz.eval_rows, sz.think_rows))[: sz.eval_rows]
        progress(f"trainer: {len(ds.items)} items, {len(rows)} align rows, model {label} built in "
                 f"{time.perf_counter() - t0:.1f} s")
        out = bench_sft(base, work, rows, sz, device, label)
        out += bench_grpo(base, work, grpo_rows, {sid_string(t) for t in sids.values()}, sz, device, label)
        out += bench_eval(base, eval_rows, sids, sz, device, label)
    return out + target_rows(out, device, shape)
