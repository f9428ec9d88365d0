"""GRPO learns: TRL's GRPOTrainer through ``train.grpo.run_grpo`` with THE reward functions raises the
mean reward of a tiny model on a small learnable task, clearly and reproducibly (seeded).

Task: 16 items with 2-level SIDs (4 x 4 codes). Users have one-item histories (every item appears);
every user's next item is the same item (a "best seller"): a target set by the data that the
policy can only find through the reward. A short SFT warm start teaches only the answer format
with targets drawn uniformly at random, so GRPO starts at chance level:
E[prefix] = P(first level right, second wrong) x 0.5 + P(both right) x 1 = 3/16 x 0.5 + 1/16 = 0.156,
plus lambda x format (0.1) = about 0.26, against 1.1 for a perfect policy.

Why a common target and not a per-user mapping: at the size a CPU test affords (2 layers, hidden
64, ~100 steps), the tiny model does not learn to condition its answer on the history SID within
the prompt, by SFT or by RL (measured: an SFT on a deterministic 4-item mapping stays at the
marginal's loss). A common target still needs the policy gradient to move probability mass level
by level towards what the step-wise prefix reward pays for.

The test fails when the trainer or the reward is broken: with learning rate 0 (``GRPO_TEST_LR=0``)
or a reward that ignores the target, the mean reward stays at chance level.

``max_completion_length`` equals the length of the canonical answer
``<think>\\n\\n</think>\\n\\n<a_i><b_j>`` (the end token not counted): the reward strips end tokens,
so the test measures the choice of item, not whether the tiny model learnt to stop.
"""
import os
import random

import pytest
import torch

from synth.io import read_json
from synth.sid import sid_string
from train.align import run_sft
from train.config import AlignConfig, GRPOStageConfig
from train.grpo import run_grpo
from train.model import build_tiny, load_model
from train.templates import answer, rec_messages, render_prompt, task_messages

CODES = 4
SIDS = {str(i * CODES + j): [f"<a_{i}>", f"<b_{j}>"] for i in range(CODES) for j in range(CODES)}
TARGET = "9"  # <a_2><b_1>
STEPS = 30
K = 6  # steps averaged at each end


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_grpo_raises_mean_reward(tmp_path):
    rng = random.Random(0)
    vocab = sorted({t for s in SIDS.values() for t in s})
    build_tiny(vocab, tmp_path / "base", hidden=64, layers=2, heads=2, vocab_size=2048, seed=0)
    sid = {k: sid_string(v) for k, v in SIDS.items()}
    # Format-only warm start: answers are uniformly random items, so the target is not taught here.
    fmt_rows = [{"messages": task_messages("sid2sid", sid[rng.choice(list(SIDS))], history=[sid[k]])}
                for k in SIDS for _ in range(8)]
    sft = AlignConfig.tiny().override(epochs=10, learning_rate=1e-2, batch_size=16, per_device_batch=16,
                                      logging_steps=10, warmup_steps=0.05, packing=False, max_steps=-1)
    run_sft(tmp_path / "base", tmp_path / "fmt", fmt_rows, None, sft)

    _, tok = load_model(tmp_path / "fmt" / "model")
    canonical = tok(answer(sid[TARGET]), add_special_tokens=False)["input_ids"]
    rows = [{"prompt": render_prompt(tok, rec_messages([sid[k]])), "target_sid": sid[TARGET], "target": TARGET}
            for k in SIDS for _ in range(8)]
    rng.shuffle(rows)
    lr = float(os.environ.get("GRPO_TEST_LR", "1e-3"))
    cfg = GRPOStageConfig.tiny().override(
        learning_rate=lr, num_generations=8, prompts_per_step=4, per_device_batch=32, generation_batch=32,
        max_completion_length=len(canonical), max_steps=STEPS, eval_every=0, beta=1e-3, seed=0,
        constrained_answer=False,  # free rollouts: the format is part of what is learnt here
    )
    summary = run_grpo(tmp_path / "fmt" / "model", tmp_path / "grpo", rows, cfg, set(sid.values()))

    log = [h for h in read_json(tmp_path / "grpo" / "log_history.json") if "reward" in h]
    rewards = [h["reward"] for h in log]
    assert len(rewards) == STEPS
    start, end = sum(rewards[:K]) / K, sum(rewards[-K:]) / K
    print(f"GRPO mean reward: first {K} steps {start:.3f}, last {K} steps {end:.3f}; per step {rewards}")
    # Chance level is ~0.26 (see the docstring); the warm start must have taught the format.
    assert 0.1 < start < 0.45, (start, rewards)
    assert end > start + 0.3, (start, end, rewards)
    assert (tmp_path / "grpo" / "model" / "model.safetensors").exists()
    assert summary["steps"] == STEPS
    # The per-step log carries the components, the KL and the reasoning length.
    last = log[-1]
    assert "rewards/sid_prefix_reward/mean" in last and "rewards/sid_format_reward/mean" in last
    assert "rewards/reasoning_tokens/mean" in last and "kl" in last


def _random_tiny(tmp_path):
    vocab = sorted({t for s in SIDS.values() for t in s})
    return build_tiny(vocab, tmp_path / "base", hidden=64, layers=2, heads=2, vocab_size=2048, seed=0)


@pytest.mark.parametrize("budget", [8, 40])
def test_constrained_rollouts_always_end_in_a_valid_sid(tmp_path, budget):
    """Sampled from an untrained model, every rollout still has one ``</think>``, the separator, an
    existing item's SID and the end token: forced when the budget runs out (8), free before (40)."""
    from transformers import LogitsProcessorList

    from train.decoding import AnswerConstraint, answer_separator, left_pad, token_ids
    from train.reward import format_reward
    from train.trie import SidTrie

    model, tok = _random_tiny(tmp_path)
    trie = SidTrie.from_sids(SIDS, tok)
    ids, sep = token_ids(tok), answer_separator(tok)
    prompts = [tok(render_prompt(tok, rec_messages([sid_string(SIDS[k])])), add_special_tokens=False)["input_ids"]
               for k in list(SIDS)[:4]]
    input_ids, mask = left_pad(prompts, ids.pad, "cpu")
    proc = AnswerConstraint(trie, input_ids.shape[1], ids.think_end, sep, ids.end, budget)
    torch.manual_seed(0)
    out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                         max_new_tokens=budget, num_return_sequences=8, eos_token_id=ids.end, pad_token_id=ids.pad,
                         logits_processor=LogitsProcessorList([proc]))
    valid = {sid_string(v) for v in SIDS.values()}
    for row in out[:, input_ids.shape[1]:].tolist():
        assert row.count(ids.think_end) == 1 and ids.end in row, tok.decode(row)
        answer_ids = row[row.index(ids.think_end) + 1: row.index(ids.end)]
        assert answer_ids[: len(sep)] == sep
        assert tuple(answer_ids[len(sep):]) in set(trie.sequences.values())
        text = tok.decode(row, skip_special_tokens=True)
        assert format_reward(text, valid) == 1.0, text


def test_constrained_grpo_scores_every_rollout(tmp_path):
    """Through run_grpo: with constrained_answer every rollout of every step is a well-formed SID answer
    (format reward 1.0 throughout), although the model is untrained and its reasoning is noise."""
    from train.trie import SidTrie

    _, tok = _random_tiny(tmp_path)
    sid = {k: sid_string(v) for k, v in SIDS.items()}
    rows = [{"prompt": render_prompt(tok, rec_messages([sid[k]])), "target_sid": sid[TARGET], "target": TARGET}
            for k in SIDS]
    cfg = GRPOStageConfig.tiny().override(
        learning_rate=1e-4, num_generations=4, prompts_per_step=2, per_device_batch=8, generation_batch=8,
        max_completion_length=16, max_steps=2, eval_every=0, beta=0.0, seed=0, constrained_answer=True)
    run_grpo(tmp_path / "base", tmp_path / "grpo", rows, cfg, set(sid.values()), trie=SidTrie.from_sids(SIDS, tok))
    log = [h for h in read_json(tmp_path / "grpo" / "log_history.json") if "reward" in h]
    assert len(log) == 2
    assert all(h["rewards/sid_format_reward/mean"] == 1.0 for h in log), log
