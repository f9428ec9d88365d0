"""A training stage in its own process, for tests/test_resume.py (killed and rerun there).

    python -m tests.resume_worker grpo|sft <base model> <out dir> <steps> <save_steps>

Exit status: 0 done, 75 stopped on SIGTERM after a checkpoint (train.checkpoints.EXIT_PREEMPTED)."""
import sys
from pathlib import Path

from synth.sid import sid_string
from tests.test_grpo import SIDS, TARGET
from train.checkpoints import EXIT_PREEMPTED, Preempted
from train.config import AlignConfig, GRPOStageConfig
from train.model import load_tokenizer, set_threads
from train.templates import rec_messages, render_prompt, task_messages


def main(kind: str, base: str, out: str, steps: int, save_steps: int) -> int:
    set_threads(1)
    sid = {k: sid_string(v) for k, v in SIDS.items()}
    if kind == "grpo":
        from train.grpo import run_grpo

        tok = load_tokenizer(base)
        rows = [{"prompt": render_prompt(tok, rec_messages([sid[k]])), "target_sid": sid[TARGET], "target": TARGET}
                for k in SIDS for _ in range(2)]
        cfg = GRPOStageConfig.tiny().override(
            learning_rate=1e-3, num_generations=4, prompts_per_step=2, per_device_batch=8, generation_batch=8,
            max_completion_length=6, max_steps=steps, eval_every=0, beta=1e-3, seed=0, constrained_answer=False,
            save_steps=save_steps)
        run_grpo(base, Path(out), rows, cfg, set(sid.values()))
    else:
        from train.sft import run_sft

        rows = [{"messages": task_messages("sid2sid", sid[k], history=[sid[j]])} for k in SIDS for j in SIDS]
        cfg = AlignConfig.tiny().override(learning_rate=3e-3, batch_size=4, per_device_batch=4, max_steps=steps,
                                          epochs=100, warmup_steps=0.0, packing=False, logging_steps=1, seed=0,
                                          save_steps=save_steps)
        run_sft(base, Path(out), rows, None, cfg)
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    except Preempted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
