"""``python -m train run``: THE stage table and the one loop over it; ``train eval`` beside it.

Each stage is a row of ``TABLE``: its name, its settings (a section of ``TrainConfig``), a rows
function (what it trains or evaluates on), a train function, and its output. ``run_stages``
walks the table once, with one rule for each concern:

- skip: a stage whose output exists is skipped unless ``run.force`` (``Run.skip``); the same
  rule skips each (model, mode) evaluation that metrics.json already holds.
- selection: a stage left out of ``run.stages`` does not run, but its saved model, when there,
  still feeds the next stage (resume from existing earlier stages). ``base`` runs whenever a
  training stage does.
- evaluation: each trained stage's model is evaluated on the test split right after the stage
  (``evaluation_work``), so its metrics are on disk before the next stage starts.
- LIMIT: training rows are the first ``run.limit``; validation and test rows the smaller of
  ``run.limit`` and the stage's own cap (``RunConfig.cap``).
- records: manifest.json is the run's provenance (``train.records.run_provenance``), metrics.json
  the shared record of ``train.records``, written through ``Run.record`` on the main process.

Outputs: runs/<dataset>/<run>/{base,align,activate,grpo}/model, */log_history.json,
*/summary.json, manifest.json, metrics.json, *.png. Multi-GPU: every process trains and evaluates (a
share of the test rows each, ``train.evaluate.ranked_lists``); the main process decides what to evaluate
and writes the run files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from synth.io import read_json, write_json
from synth.settings import to_dict
from train import records, tasks
from train.config import TINY, EvalCommand, EvalConfig, TrainConfig, cap
from train.dist import from_main, is_main

log = logging.getLogger("train")


@dataclass
class Run:
    """One run folder: its settings, its inputs, and the model the next stage starts from."""

    cfg: TrainConfig
    inputs: tasks.Inputs
    dir: Path
    src: Path | None = None
    tracker: Any = None  # the stage's synth.tracking.TrackedRun while it trains and is evaluated (REPORT_TO)

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    def skip(self, exists: bool) -> bool:
        """THE skip rule: what exists is not redone, unless ``force``."""
        return exists and not self.cfg.run.force

    def cap(self, rows: int = 0) -> int | None:
        return self.cfg.run.cap(rows)

    def record(self, stage: str, results: dict | None = None, train_wall: float | None = None) -> None:
        """THE metrics writer: one stage's results and/or training time into metrics.json."""
        if is_main():
            records.update(self.metrics, stage, results, train_wall)

    def callbacks(self) -> list:
        """The experiment trackers' trainer callbacks for the stage being trained (none without REPORT_TO)."""
        return self.tracker.callbacks() if self.tracker is not None else []

    def track(self, stage: str, fresh: bool):
        """The stage's tracked run (``<dataset>/<run>/<stage>``) on the main process when REPORT_TO asks for one,
        its parameters the run's manifest (resolved config, input hashes, SID set, versions); ``fresh``: a new
        tracked run even where one was logged before (the stage trains again from scratch)."""
        from synth.tracking import tracked

        r = self.cfg.run
        if not r.report_to or not is_main():
            return None
        manifest = self.dir / "manifest.json"
        return tracked(r.report_to, folder=self.dir, runs_dir=r.runs_dir, dataset=r.dataset, stage=stage,
                       params=read_json(manifest) if manifest.exists() else {}, resume=not fresh,
                       metric_names=[f"test/{mode}/recall@10" for mode in self.cfg.eval.modes])

    def record_runtime(self, stage: str, runtime: dict | None) -> None:
        """What a stage ran with on this machine (attention kernel, activation checkpointing, rollout engine
        and why, processes) into manifest.json's ``runtime``: "auto" settings resolve by what is installed."""
        manifest = self.dir / "manifest.json"
        if is_main() and runtime and manifest.exists():
            doc = read_json(manifest)
            doc.setdefault("runtime", {})[stage] = runtime
            write_json(manifest, doc)


@dataclass(frozen=True)
class Stage:
    name: str
    section: str  # the attribute of TrainConfig that holds its settings
    rows: Callable[[Run, Any], Any]  # (run, settings) -> what the stage trains or evaluates on
    train: Callable[[Run, "Stage", Any, Any], None]  # (run, stage, rows, settings)
    output: str  # under the run folder; a model folder for the stages that train
    done: Callable[[Run, "Stage"], bool]  # whether the output exists

    @property
    def trains(self) -> bool:
        return self.output.endswith("/model")


# ---------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------
def model_saved(run: Run, stage: Stage) -> bool:
    return (run.dir / stage.output / "config.json").exists()


def base_rows(run: Run, cfg) -> list[str]:
    """The tiny model's tokenizer is trained on English words plus the item titles."""
    return [it.title for it in run.inputs.dataset.items.values()] if cfg.model == TINY else []


def train_base(run: Run, stage: Stage, texts: list[str], cfg) -> None:
    from train.model import prepare_model

    prepare_model(cfg.model, run.inputs.sids, run.dir / stage.output, texts=texts)


def align_rows(run: Run, cfg) -> tuple[list[dict], list[dict]]:
    rows = tasks.align_rows(run.inputs, run.cap(), cfg.general, cfg.general_n, run.cfg.run.seed, corpus=cfg.corpus,
                            task_weights=cfg.task_weights, history_loss=cfg.history_loss)
    valid = tasks.align_eval_rows(run.inputs, run.cap(cfg.eval_rows))
    log.info("align: %d training rows, %d validation rows", len(rows), len(valid))
    return rows, valid


def train_align(run: Run, stage: Stage, data, cfg) -> dict:
    from train.align import run_align

    return run_align(run.src, run.dir / stage.name, *data, cfg, resume_ok=not run.cfg.run.force,
                     callbacks=run.callbacks())


def activate_rows(run: Run, cfg) -> list[dict]:
    rows = tasks.activate_rows(run.inputs, run.cap())
    log.info("activate: %d training rows", len(rows))
    return rows


def train_activate(run: Run, stage: Stage, rows, cfg) -> dict:
    from train.activate import run_activate

    return run_activate(run.src, run.dir / stage.name, rows, cfg, resume_ok=not run.cfg.run.force,
                        callbacks=run.callbacks())


def grpo_rows(run: Run, cfg) -> dict:
    """Prompts rendered by the starting model's tokenizer (loaded alone), the trie of its SID tokens."""
    from synth.data.combined import of_part
    from train.model import load_tokenizer
    from train.trie import SidTrie, sid_strings

    tok = load_tokenizer(run.src)
    part = run.cfg.run.rl_dataset  # a combined dataset's part to reinforce on (None: all of it)
    data = {"train_rows": tasks.rec_rows(run.inputs, "train", tok, run.cap(), domain=part),
            "eval_rows": tasks.rec_rows(run.inputs, "valid", tok, run.cap(cfg.eval_rows), domain=part),
            "trie": SidTrie.from_sids(of_part(run.inputs.sids, part), tok), "valid_sids": sid_strings(run.inputs.sids)}
    log.info("grpo: %d prompts, %d validation rows%s", len(data["train_rows"]), len(data["eval_rows"]),
             f" of part {part}" if part else "")
    return data


def train_grpo(run: Run, stage: Stage, data: dict, cfg) -> dict:
    from train.grpo import run_grpo

    return run_grpo(run.src, run.dir / stage.name, cfg=cfg, resume_ok=not run.cfg.run.force,
                    callbacks=run.callbacks(), **data)


def evaluation_work(run: Run, cfg: EvalConfig, after: Stage) -> list[tuple[str, Path, list[str]]]:
    """(stage, model, modes) to evaluate once ``after`` has trained: its model, when evaluation is
    selected with it (or with no training stage at all), in the modes metrics.json lacks. So each
    stage's metrics are written as soon as it is done, not after the whole chain. Several processes: the
    main process reads the run files it writes and every process gets its list (all evaluate it)."""
    chosen = run.cfg.run.stages
    trained = [s.name for s in TABLE if s.trains and s.name != "base"]
    wanted = after.name in chosen or not any(name in chosen for name in trained)
    if "eval" not in chosen or after.name not in trained or not wanted:  # settings only: the same everywhere
        return []
    return from_main(stage_work(run, cfg, after) if is_main() else None)


def stage_work(run: Run, cfg: EvalConfig, after: Stage) -> list[tuple[str, Path, list[str]]]:
    """``evaluation_work`` as the run files say (read on the main process)."""
    if not model_saved(run, after):
        return []
    have = read_json(run.metrics).get("stages", {}) if run.metrics.exists() else {}
    todo = [m for m in cfg.modes if not run.skip(m in have.get(after.name, {}))]
    return [(after.name, run.dir / after.output, todo)] if todo else []


def evaluate(run: Run, stage: Stage, work, cfg: EvalConfig) -> None:
    """Every process evaluates ``work`` (a share of the rows each); ``run.record`` writes on the main one, and
    the stage's tracked run gets every number of the results as ``test/<mode>/...`` at the stage's last step."""
    from synth.tracking import scalars
    from train.evaluate import evaluate_checkpoint

    for name, model, modes in work:
        results = evaluate_checkpoint(model, lambda tok: tasks.rec_rows(run.inputs, "test", tok, run.cap(cfg.test_rows)),
                                      run.inputs.sids, modes, cfg)
        run.record(name, results=results)
        if run.tracker is not None:
            summary = run.dir / name / "summary.json"
            step = int(read_json(summary).get("steps") or 0) if summary.exists() else 0
            run.tracker.log(scalars(results, "test"), step)


TABLE: tuple[Stage, ...] = (
    Stage("base", "run", base_rows, train_base, "base/model", model_saved),
    Stage("align", "align", align_rows, train_align, "align/model", model_saved),
    Stage("activate", "activate", activate_rows, train_activate, "activate/model", model_saved),
    Stage("grpo", "grpo", grpo_rows, train_grpo, "grpo/model", model_saved),
)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def run_stages(cfg: TrainConfig, preset: Path | None = None) -> Run:
    chosen = selected(cfg)
    check_corpus(cfg, chosen)
    run = open_run(cfg, preset)
    for stage in TABLE:
        try:
            if stage.name in chosen and not run.skip(stage.done(run, stage)):
                if stage.name != "base":  # base only builds the model
                    run.tracker = run.track(stage.name, fresh=cfg.run.force)
                train_stage(run, stage, getattr(cfg, stage.section))
            if stage.trains and model_saved(run, stage):
                run.src = run.dir / stage.output
            work = evaluation_work(run, cfg.eval, stage)
            if work and run.tracker is None:  # an evaluation of a stage trained before: to its tracked run
                run.tracker = run.track(stage.name, fresh=False)
            evaluate(run, stage, work, cfg.eval)
        finally:
            if run.tracker is not None:
                run.tracker.close()
                run.tracker = None
    finish(run)
    return run


def train_stage(run: Run, stage: Stage, settings) -> None:
    t0 = time.time()
    summary = stage.train(run, stage, stage.rows(run, settings), settings)
    if stage.trains:
        wall = time.time() - t0
        log.info("stage %s finished in %.1f s", stage.name, wall)
        run.record(stage.name, train_wall=wall)
        if summary and summary.get("runtime"):  # the stages that train (base only builds)
            run.record_runtime(stage.name, {**summary["runtime"], "resumes": summary.get("resumes", [])})


def selected(cfg: TrainConfig) -> set[str]:
    """The stages of ``run.stages``, and ``base`` (model + SID tokens) when any of them trains."""
    chosen = set(cfg.run.stages)
    if any(s.trains and s.name in chosen for s in TABLE):
        chosen.add("base")
    return chosen


def input_files(cfg: TrainConfig, inputs: tasks.Inputs, preset: Path | None) -> dict[str, Path | None]:
    corpus = inputs.corpus_dir
    general = cfg.align.general
    return {"preset": preset, **records.dataset_files(inputs.dataset.path),
            "sids": inputs.sid_set.path,
            "corpus/items.jsonl": corpus / "items.jsonl" if corpus else None,
            "corpus/users.jsonl": corpus / "users.jsonl" if corpus else None,
            "general": Path(general) if general and Path(general).is_file() else None}


def run_name(cfg: TrainConfig) -> str:
    """<model>-<teacher> (S2), <model>-nocorpus-s1 / <model>-<teacher>-s1 (S1), <model>-<teacher>-s3 (S3);
    GRPO on one part of a combined dataset: -rl-<part>; with another SID set than the own one, @<set> after it
    (tiny-metadata@reference), as corpora are named."""
    from synth.data.dataset import sid_set_name

    variant = cfg.variant
    sids = sid_set_name(cfg.run.sids)
    return (f"{Path(cfg.run.model).name}-{cfg.run.teacher or 'nocorpus'}" + ("" if variant == "s2" else f"-{variant}")
            + (f"-rl-{cfg.run.rl_dataset}" if cfg.run.rl_dataset else "") + ("" if sids == "own" else f"@{sids}"))


def run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.dataset / (cfg.run.run or run_name(cfg))


def check_corpus(cfg: TrainConfig, chosen: set[str]) -> None:
    """Activation trains on the teacher's user reasoning: a run without a corpus stops before it starts."""
    from synth.data.dataset import DatasetError

    activate = next(s for s in TABLE if s.name == "activate")
    done = (run_dir(cfg) / activate.output / "config.json").exists() and not cfg.run.force
    if "activate" in chosen and not cfg.run.teacher and not done:
        raise DatasetError(
            "activate trains on a teacher corpus's user reasoning (users.jsonl) and this run has no corpus "
            "(TEACHER=none: the paper's S1 alignment). Train S1 alignment alone with STAGES=align,eval, or S1 "
            "through activation and GRPO with TEACHER=<name> ALIGN_CORPUS=0 (the corpus then feeds activation, "
            "not alignment)")


def open_run(cfg: TrainConfig, preset: Path | None) -> Run:
    """The run folder with its manifest (provenance) and the header of its metrics.json."""
    from train.model import set_threads

    set_threads()
    r = cfg.run
    inputs = tasks.load_inputs(r.dataset, r.data_dir, r.corpora_dir, r.teacher, r.sids, r.prompts)
    run = Run(cfg, inputs, run_dir(cfg))
    name = run.dir.name
    run.dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        prov = records.run_provenance(cfg.to_dict(), input_files(cfg, inputs, preset))
        sid_set = records.sid_set_block(inputs.sid_set, prov)
        check_run_sids(run, sid_set)
        # what earlier invocations of this run recorded per stage (runtime, resumes) stays: a rerun after an
        # interruption writes the provenance again, not the history of the stages it did not train
        earlier = read_json(run.dir / "manifest.json").get("runtime") if (run.dir / "manifest.json").exists() else None
        write_json(run.dir / "manifest.json", {**prov, "sid_set": sid_set, **({"runtime": earlier} if earlier else {})})
        records.start(run.metrics, records.record(
            kind="llm", model=r.model, dataset=r.dataset, run=name, limit=r.limit, config=cfg.to_dict(), prov=prov,
            data=records.data_block(inputs.dataset.path, prov), sid_set=sid_set, variant=cfg.variant,
            teacher=records.teacher_block(r.teacher, inputs.corpus_dir, prov)))
    return run


def check_run_sids(run: Run, sid_set: dict) -> None:
    """A run folder holds models of one SID set: resuming it with other SIDs is refused (unless FORCE=1)."""
    from synth.data.dataset import DatasetError

    old = (read_json(run.metrics).get("sid_set") if run.metrics.exists() else None) or {}
    if not old or (old.get("name"), old.get("sha256")) == (sid_set["name"], sid_set["sha256"]):
        return
    if run.cfg.run.force:  # retrained with these SIDs: the other SIDs' metrics go
        log.warning("%s: metrics of the %r SIDs dropped (FORCE=1 with the %r SIDs)", run.dir, old.get("name"),
                    sid_set["name"])
        run.metrics.unlink()
    else:
        raise DatasetError(
            f"{run.dir} was trained with the {old.get('name')!r} SIDs ({old.get('file')}, sha256 "
            f"{str(old.get('sha256'))[:12]}) and this run uses the {sid_set['name']!r} SIDs ({sid_set['file']}, "
            f"sha256 {sid_set['sha256'][:12]}): give another RUN=, or FORCE=1 to retrain it with these SIDs")


def finish(run: Run) -> None:
    """Plots, and the table of every stage's metrics."""
    from train.evaluate import format_table
    from train.plots import plot_run

    if not is_main():
        return
    plot_run(run.dir)
    print(format_table(read_json(run.metrics)))
    print(f"metrics: {run.metrics}")


# ---------------------------------------------------------------------------------------------
# train eval: one checkpoint
# ---------------------------------------------------------------------------------------------
def check_ckpt_sids(ckpt: Path, sid_set) -> None:
    """A checkpoint of a run folder (runs/<dataset>/<run>/<stage>/model) is evaluated with the SIDs it was
    trained with: its run's metrics.json says which; other SIDs are refused, naming the SIDS= to use."""
    from synth.data.dataset import DatasetError

    trained = ckpt.parent.parent / "metrics.json"
    old = (read_json(trained).get("sid_set") if trained.is_file() else None) or {}
    if old and old.get("name") != sid_set.name:
        raise DatasetError(f"{ckpt} was trained with the {old.get('name')!r} SIDs ({trained}) and this evaluation "
                           f"uses the {sid_set.name!r} SIDs: evaluate it with SIDS={old.get('name')}")


def trained_prompts(ckpt: Path) -> str | None:
    """The prompt set a run folder's checkpoint was trained with (its metrics.json config), if recorded:
    a model is evaluated on the prompts it learnt."""
    trained = ckpt.parent.parent / "metrics.json"
    run = ((read_json(trained).get("config") or {}).get("run") or {}) if trained.is_file() else {}
    if run.get("prompts"):
        log.info("%s was trained with the %r prompt set: evaluating with it", ckpt, run["prompts"])
    return run.get("prompts")


def evaluate_one(cmd: EvalCommand, cfg: EvalConfig, argv=None) -> Path:
    """Evaluate ``cmd.ckpt`` on the test split; the record goes to ``cmd.out`` (default <ckpt>/../eval.json)."""
    from train.evaluate import evaluate_checkpoint, format_table
    from train.model import set_threads

    set_threads()
    cmd = replace(cmd, prompts=trained_prompts(Path(cmd.ckpt)) or cmd.prompts)
    cmd.check_prompts()
    inputs = tasks.load_inputs(cmd.dataset, cmd.data_dir, sids=cmd.sids, prompts=cmd.prompts)
    check_ckpt_sids(Path(cmd.ckpt), inputs.sid_set)
    stage = Path(cmd.ckpt).parent.name
    results = evaluate_checkpoint(cmd.ckpt, lambda tok: tasks.rec_rows(inputs, "test", tok, cap(cfg.test_rows)),
                                  inputs.sids, cfg.modes, cfg)
    out = Path(cmd.out) if cmd.out else Path(cmd.ckpt).parent / "eval.json"
    if not is_main():  # several processes: each decoded a share of the rows; the main one writes
        return out
    config = {"command": to_dict(cmd), "eval": to_dict(cfg)}
    prov = records.run_provenance(config, {**records.dataset_files(inputs.dataset.path),
                                           "sids": inputs.sid_set.path}, "train", argv)
    records.write(out, records.record(kind="eval", model=str(cmd.ckpt), dataset=cmd.dataset, run=stage,
                                      data=records.data_block(inputs.dataset.path, prov), config=config, prov=prov,
                                      sid_set=records.sid_set_block(inputs.sid_set, prov), stages={stage: results}))
    print(format_table({"stages": {stage: results}}))
    print(f"metrics: {out}")
    return out

