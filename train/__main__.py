"""CLI of the trainer.

  python -m train run --dataset office --teacher metadata --model tiny [--limit N] [--force]
                      [--runs-dir runs] [--run NAME] [--stages align,activate,grpo,eval]
                      [--data-dir data] [--corpora-dir corpora] [--general P --general-n N]
  python -m train eval --ckpt runs/office/tiny-metadata/grpo/model --dataset office
                      [--mode direct|thinking|both] [--beams 10] [--limit N] [--best-of-n N]

``run`` does base (model + SID tokens) -> align -> activate -> GRPO, each stage skipped when its
saved model exists (``--force`` redoes), and evaluates every stage's model on the test split in each
mode (skipped when metrics.json already has it). Outputs: runs/<dataset>/<run>/{base,align,activate,
grpo}/model, */log_history.json, */summary.json, metrics.json, manifest.json, *.png.
Multi-GPU: ``accelerate launch --config_file configs/accelerate/zero2.yaml -m train run ...``;
evaluation runs on the main process only.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

STAGES = ("align", "activate", "grpo", "eval")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="align -> activate -> GRPO -> evaluation")
    r.add_argument("--dataset", required=True)
    r.add_argument("--teacher", default=None, help="corpus under corpora/<dataset>/<teacher>")
    r.add_argument("--model", default=os.environ.get("MODEL", "Qwen/Qwen3-1.7B"),
                   help="'tiny', a Hub id or a local path")
    r.add_argument("--limit", type=int, default=0, help="shrink every split/corpus to N rows (smoke runs)")
    r.add_argument("--force", action="store_true", help="redo stages whose output exists")
    r.add_argument("--runs-dir", default=os.environ.get("RUNS_DIR", "runs"))
    r.add_argument("--run", default=None, help="run name (default <model>-<teacher>)")
    r.add_argument("--stages", default=",".join(STAGES))
    r.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    r.add_argument("--corpora-dir", default=os.environ.get("CORPORA_DIR", "corpora"))
    r.add_argument("--sids", default=None, help="SID map to use instead of data/<dataset>/sids.json")
    r.add_argument("--general", default=None, help="general chat data: jsonl with 'messages' or Hub id")
    r.add_argument("--general-n", type=int, default=0)
    r.add_argument("--modes", default="direct,thinking")
    r.add_argument("--align-epochs", type=float, default=None)
    r.add_argument("--activate-epochs", type=float, default=None)
    r.add_argument("--grpo-steps", type=int, default=None)
    r.add_argument("--grpo-eval-every", type=int, default=None)
    r.add_argument("--max-think-tokens", type=int, default=None)
    r.add_argument("--beams", type=int, default=10)
    r.add_argument("--best-of-n", type=int, default=1)
    r.add_argument("--seed", type=int, default=42)
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--dataset", required=True)
    e.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    e.add_argument("--sids", default=None)
    e.add_argument("--mode", default="both", choices=["direct", "thinking", "both"])
    e.add_argument("--beams", type=int, default=10)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--max-think-tokens", type=int, default=256)
    e.add_argument("--best-of-n", type=int, default=1)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--out", default=None, help="write the metrics JSON here (default: <ckpt>/../eval.json)")
    return ap.parse_args(argv)


def _manifest(args, configs: dict, inputs) -> dict:
    import torch
    import transformers
    import trl

    from synth.io import sha256_file

    sids_file = Path(args.sids) if args.sids else inputs.dataset.path / "sids.json"
    return {
        "argv": sys.argv,
        "args": vars(args),
        "configs": configs,
        "inputs": {
            "dataset": str(inputs.dataset.path),
            "sids_sha256": sha256_file(sids_file),
            "corpus": str(inputs.corpus_dir) if inputs.corpus_dir else None,
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def cmd_run(args) -> int:
    from synth.io import write_json
    from train import tasks
    from train.activate import run_activate
    from train.align import run_align
    from train.config import ActivateConfig, AlignConfig, EvalConfig, GRPOStageConfig
    from train.evaluate import evaluate_checkpoint, format_table, update_metrics
    from train.grpo import run_grpo
    from train.model import TINY, prepare_model, set_threads
    from train.plots import plot_run
    from train.trie import SidTrie

    set_threads()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SystemExit(f"--stages: unknown {bad}; expected a subset of {','.join(STAGES)}")
    tiny = args.model == TINY
    align_cfg = (AlignConfig.tiny() if tiny else AlignConfig()).override(
        epochs=args.align_epochs, seed=args.seed, general_n=args.general_n)
    act_cfg = (ActivateConfig.tiny() if tiny else ActivateConfig()).override(epochs=args.activate_epochs,
                                                                             seed=args.seed)
    grpo_cfg = (GRPOStageConfig.tiny() if tiny else GRPOStageConfig()).override(
        max_steps=args.grpo_steps, eval_every=args.grpo_eval_every, seed=args.seed)
    eval_cfg = EvalConfig.tiny() if tiny else EvalConfig()
    eval_cfg.num_beams = args.beams
    eval_cfg.best_of_n = args.best_of_n
    if args.max_think_tokens:
        eval_cfg.max_think_tokens = args.max_think_tokens
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())

    inputs = tasks.load_inputs(args.dataset, args.data_dir, args.corpora_dir, args.teacher, args.sids)
    model_name = "tiny" if tiny else Path(str(args.model)).name
    run_dir = Path(args.runs_dir) / args.dataset / (args.run or f"{model_name}-{args.teacher or 'nocorpus'}")
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    limit = args.limit or None
    configs = {"align": align_cfg.to_dict(), "activate": act_cfg.to_dict(), "grpo": grpo_cfg.to_dict(),
               "eval": eval_cfg.to_dict(), "modes": modes}
    if _is_main():
        write_json(run_dir / "manifest.json", _manifest(args, configs, inputs))
    log = logging.getLogger("train")

    def done(stage: str) -> bool:
        return (run_dir / stage / "model" / "config.json").exists() and not args.force

    def timed(stage: str, fn):
        t0 = time.time()
        out = fn()
        wall = round(time.time() - t0, 1)
        log.info("stage %s finished in %.1f s", stage, wall)
        if _is_main():
            update_metrics(metrics_path, stage, {}, {"train_wall_s": {stage: wall}})
        return out

    # Stage 0: base model with SID tokens (tiny: tokenizer trained on English words + item titles).
    base = run_dir / "base" / "model"
    if not done("base"):
        texts = [it.title for it in inputs.dataset.items.values()] if tiny else ()
        timed("base", lambda: prepare_model(args.model, inputs.sids, base, texts=texts))

    def test_rows(tok):
        return tasks.rec_rows(inputs, "test", tok, limit)

    def evaluate(stage: str):
        if "eval" not in stages or not _is_main():
            return
        import json

        have = {}
        if metrics_path.exists():
            have = json.loads(metrics_path.read_text()).get("stages", {}).get(stage, {})
        todo = [m for m in modes if args.force or m not in have]
        if not todo:
            return
        res = evaluate_checkpoint(run_dir / stage / "model", test_rows, inputs.sids, todo, eval_cfg)
        update_metrics(metrics_path, stage, res)

    prev = base

    def resume_from(stage: str) -> None:
        # A stage left out of --stages still feeds the next one when its model exists.
        nonlocal prev
        if (run_dir / stage / "model" / "config.json").exists():
            prev = run_dir / stage / "model"

    if "align" not in stages:
        resume_from("align")
    if "align" in stages:
        if not done("align"):
            rows = tasks.align_rows(inputs, limit, args.general, args.general_n, args.seed)
            ev = tasks.align_eval_rows(inputs, min(n for n in (limit, align_cfg.eval_rows) if n) if (limit or align_cfg.eval_rows) else None)
            log.info("align: %d training rows, %d validation rows", len(rows), len(ev))
            timed("align", lambda: run_align(prev, run_dir / "align", rows, ev, align_cfg))
        prev = run_dir / "align" / "model"
        evaluate("align")
    if "activate" not in stages:
        resume_from("activate")
    if "activate" in stages:
        if not done("activate"):
            rows = tasks.activate_rows(inputs, limit)
            log.info("activate: %d training rows", len(rows))
            timed("activate", lambda: run_activate(prev, run_dir / "activate", rows, act_cfg))
        prev = run_dir / "activate" / "model"
        evaluate("activate")
    if "grpo" in stages:
        if not done("grpo"):
            from train.model import load_model
            from train.trie import sid_strings

            _, tok = load_model(prev)
            rows = tasks.rec_rows(inputs, "train", tok, limit)
            val = tasks.rec_rows(inputs, "valid", tok, min(limit or grpo_cfg.eval_rows, grpo_cfg.eval_rows))
            trie = SidTrie.from_sids(inputs.sids, tok)
            log.info("grpo: %d prompts, %d validation rows", len(rows), len(val))
            timed("grpo", lambda: run_grpo(prev, run_dir / "grpo", rows, grpo_cfg, sid_strings(inputs.sids),
                                           val, trie))
        prev = run_dir / "grpo" / "model"
        evaluate("grpo")
    if _is_main():
        plot_run(run_dir)
        if metrics_path.exists():
            import json

            data = json.loads(metrics_path.read_text())
            data.update({"dataset": args.dataset, "teacher": args.teacher, "model": str(args.model),
                         "limit": args.limit, "run": run_dir.name})
            write_json(metrics_path, data)
            print(format_table(data))
            print(f"metrics: {metrics_path}")
    return 0


def cmd_eval(args) -> int:
    from synth.io import write_json
    from train import tasks
    from train.config import EvalConfig
    from train.evaluate import evaluate_checkpoint, format_table
    from train.model import set_threads

    set_threads()
    inputs = tasks.load_inputs(args.dataset, args.data_dir, sids_path=args.sids)
    cfg = EvalConfig(num_beams=args.beams, max_think_tokens=args.max_think_tokens, batch_size=args.batch_size,
                     best_of_n=args.best_of_n)
    modes = ("direct", "thinking") if args.mode == "both" else (args.mode,)
    res = evaluate_checkpoint(args.ckpt, lambda tok: tasks.rec_rows(inputs, "test", tok, args.limit or None),
                              inputs.sids, modes, cfg)
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "eval.json"
    write_json(out, {"ckpt": str(args.ckpt), "dataset": args.dataset, "stages": {"ckpt": res}})
    print(format_table({"stages": {Path(args.ckpt).parent.name: res}}))
    print(f"metrics: {out}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parse(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
