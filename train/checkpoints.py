"""Training that survives preemption: complete checkpoints, resuming from the newest, a clean stop on SIGTERM.

- Every stage saves a full checkpoint (model, optimizer, scheduler, RNG states, trainer state with the data
  position and the callbacks' state) every ``save_steps`` optimizer steps into ``<stage>/checkpoints/checkpoint-N``
  (transformers' own format), keeping the last two (and the best, for align).
- A checkpoint is complete when it holds the ``COMPLETE`` marker, written after transformers has written every
  file of it (``CompleteMarker``, an ``on_save`` callback). A folder without it (a save killed half-way) is never
  loaded: ``resume_point`` moves it aside with a warning naming it.
- Rerunning the same command resumes each unfinished stage from its newest complete checkpoint
  (``resume_from_checkpoint``), says so in one log line, and ends at the same step count as an uninterrupted run.
- SIGTERM or SIGINT during training (``StopOnSignal``): a checkpoint at the next step boundary, then
  ``Preempted``, which ``python -m train`` turns into exit status ``EXIT_PREEMPTED`` (75: "interrupted, rerun to
  resume"), as SLURM's time limit or a spot reclaim sends SIGTERM before SIGKILL.
"""
from __future__ import annotations

import logging
import re
import shutil
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: interrupted, rerun the same command to resume
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; rerunning the same command resumes it."""

    exit_code = EXIT_PREEMPTED


def checkpoint_step(path: Path) -> int | None:
    m = _CHECKPOINT_RE.match(path.name)
    return int(m.group(1)) if m else None


def resume_point(folder: str | Path, quarantine: bool | None = None) -> Path | None:
    """The newest complete checkpoint under ``folder`` (None when there is none); incomplete ones (no marker:
    a save that was killed) are skipped with a warning and, by the main process alone (``quarantine``; every
    process of a launch picks the same checkpoint), moved aside to ``<name>.incomplete``."""
    from train.dist import is_main

    quarantine = is_main() if quarantine is None else quarantine
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete = []
    for path in sorted(folder.iterdir()):
        step = checkpoint_step(path)
        if step is None or not path.is_dir():
            continue
        if (path / COMPLETE).exists():
            complete.append((step, path))
        else:
            log.warning("%s has no %s marker (a save that was interrupted): skipped", path, COMPLETE)
            if quarantine:
                aside = path.with_name(path.name + ".incomplete")
                shutil.rmtree(aside, ignore_errors=True)
                path.rename(aside)
    return max(complete)[1] if complete else None


def note_resume(stage_dir: str | Path, step: int | None) -> list[dict]:
    """Every resume of a stage, in ``<stage>/resumes.json`` (kept across reruns, removed with the stage's
    output on FORCE=1): the list so far, with this one appended when ``step`` is not None."""
    from synth.io import read_json, write_json

    path = Path(stage_dir) / "resumes.json"
    resumes = read_json(path) if path.exists() else []
    if step is not None:
        resumes.append({"step": step, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json(path, resumes)
    return resumes


def trainer_callbacks():
    """The callbacks every stage's trainer gets: the completeness marker and the stop on SIGTERM/SIGINT."""
    from transformers import TrainerCallback

    class CompleteMarker(TrainerCallback):
        """Marks ``checkpoint-<step>`` complete once transformers has saved all of it (on_save comes after)."""

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                (path / COMPLETE).write_text(f"step {state.global_step}\n", encoding="utf-8")

    class StopOnSignal(TrainerCallback):
        """SIGTERM/SIGINT: save at the next step boundary and stop (``stopped`` tells the caller)."""

        def __init__(self):
            self.stopped = False
            self._signalled = False
            self._previous: dict = {}

        def _handler(self, signum, frame):
            self._signalled = True
            log.warning("signal %s: saving a checkpoint at the next step, then stopping", signum)

        def on_train_begin(self, args, state, control, **kwargs):
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not the main thread: leave the process's handlers alone
                    pass

        def on_step_end(self, args, state, control, **kwargs):
            if self._signalled:
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

        def on_train_end(self, args, state, control, **kwargs):
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()

    return CompleteMarker(), StopOnSignal()
