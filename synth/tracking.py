"""Experiment tracking (``REPORT_TO=tensorboard,wandb,mlflow``), shared by ``make synth`` and ``make train``.

A *tracked run* is one stage of a training run, named ``<dataset>/<run>/<stage>``, or one corpus's
synthesis, ``<dataset>/synth-<corpus>/synth``; the runs of one folder form a group (``<dataset>/<run>``),
so a run's three stages and their evaluations sit together and an ablation's runs side by side.

- tensorboard: event files in ``<runs_dir>/<dataset>/<run>/tb/<stage>/`` (``tensorboard --logdir
  runs/<dataset>``); the config and provenance as text and as the HParams dashboard's parameters.
- wandb: project ``$WANDB_PROJECT`` (default ``sidreasoner``), group ``<dataset>/<run>``, job type
  ``<stage>``. Offline (a folder under ``<run folder>/wandb/`` that ``wandb sync`` uploads later) unless
  ``WANDB_MODE`` says otherwise or an API key is configured (``WANDB_API_KEY`` or ``wandb login``).
- mlflow: tracking URI ``$MLFLOW_TRACKING_URI`` (default ``sqlite:///<runs_dir>/mlflow.db``), experiment
  ``$MLFLOW_EXPERIMENT_NAME`` (default ``sidreasoner``); the stages are child runs of one parent run per
  run folder.

Training logs through transformers' own integration callbacks (``TrackedRun.callbacks``) bound to the run
opened here; what happens outside a trainer (evaluation, synthesis progress) goes through ``TrackedRun.log``.
The run ids are kept in ``<run folder>/tracking.json``: a resumed stage, or an evaluation run later, logs
to the same tracked run. Nothing here touches the network unless a tracker is configured to (W&B online,
a remote MLflow server); the trackers' packages are imported only when asked for.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from synth.io import read_json, write_json
from synth.settings import ConfigError

log = logging.getLogger(__name__)

NONE = "none"
# tracker -> (the module it needs, the pyproject extra that installs it)
TRACKERS: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"),
                                        "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
WANDB_PROJECT = "sidreasoner"
MLFLOW_EXPERIMENT = "sidreasoner"
STATE_FILE = "tracking.json"
# MLflow's metric and parameter names: what transformers' MLflowCallback keeps (others become "_")
_MLFLOW_NAME = re.compile(r"[^0-9A-Za-z_\-\.\ :/]")


def parse_report_to(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``REPORT_TO``'s trackers: a comma-separated string or a list; ``none`` or empty = no tracking."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    names = [n for n in names if n != NONE]
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ConfigError(f"report_to (REPORT_TO): unknown tracker {bad[0]!r}; expected a comma-separated list of "
                          f"{', '.join(TRACKERS)}, or {NONE}")
    return tuple(dict.fromkeys(names))


def check_installed(trackers: Iterable[str]) -> None:
    """A tracker asked for but not installed stops the run before it starts, naming what to install."""
    for name in trackers:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"REPORT_TO={name}: the {module!r} package is not installed: "
                              f"pip install -e '.[{extra}]' (or pip install {module}), or leave {name} out of REPORT_TO")


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online when an API key is configured, offline otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return "online" if netrc.netrc().authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def mlflow_uri(runs_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a local SQLite store beside the run folders."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def flat(tree: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested mappings as one level: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flat(value, name, sep))
        else:
            out[name] = value
    return out


def scalars(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested result (booleans and text left out), flattened: what a tracker plots."""
    return {k: float(v) for k, v in flat(tree, prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def param_values(params: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """Run parameters as flat scalar values (lists and None as JSON text)."""
    return {k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
            for k, v in flat(params, sep=".").items()}


class TrackedRun:
    """One tracked run on every tracker in ``trackers``: open it, hand ``callbacks()`` to a trainer, ``log``
    what happens outside one, close it. ``folder`` is the run folder (``<runs_dir>/<dataset>/<run>``);
    ``resume`` false starts a new tracked run even when ``tracking.json`` names one for this stage (a
    stage trained again from scratch)."""

    def __init__(self, trackers: Iterable[str], folder: str | os.PathLike, runs_dir: str | os.PathLike,
                 dataset: str, stage: str, params: Mapping[str, Any] | None = None, resume: bool = True,
                 metric_names: Iterable[str] = (), step_key: str = "train/global_step"):
        self.trackers = tuple(trackers)
        self.folder = Path(folder)
        self.runs_dir = Path(runs_dir)
        self.group = f"{dataset}/{self.folder.name}"
        self.stage = stage
        self.name = f"{self.group}/{stage}"
        self.params = dict(params or {})
        self.resume = resume
        self.metric_names = tuple(metric_names)
        self.step_key = step_key  # W&B's x axis: the trainer's own in training
        self.tb = None
        self.wandb = None
        self.mlflow = None

    @property
    def tb_dir(self) -> Path:
        return self.folder / "tb" / self.stage

    # ---- the ids that let a later process log to the same run ----
    def _ids(self) -> dict:
        path = self.folder / STATE_FILE
        return read_json(path) if path.exists() else {}

    def _keep_id(self, tracker: str, key: str, run_id: str) -> None:
        ids = self._ids()
        ids.setdefault(tracker, {})[key] = run_id
        write_json(self.folder / STATE_FILE, ids)

    def _earlier_id(self, tracker: str, key: str) -> str | None:
        return self._ids().get(tracker, {}).get(key) if self.resume or key == "parent" else None

    # ---- open / close ----
    def open(self) -> "TrackedRun":
        check_installed(self.trackers)
        self.folder.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in self.trackers:
            self._open_tensorboard()
        if "wandb" in self.trackers:
            self._open_wandb()
        if "mlflow" in self.trackers:
            self._open_mlflow()
        log.info("tracking %s on %s", self.name, ", ".join(self.trackers))
        return self

    def _open_tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.tb = SummaryWriter(log_dir=str(self.tb_dir))
        self.tb.add_text("sidreasoner/run", self.name)
        rest = {k: v for k, v in self.params.items() if k != "config"}
        for key, value in (("config", self.params.get("config")), ("provenance", rest)):
            if value:
                self.tb.add_text(f"sidreasoner/{key}", "```json\n" + json.dumps(value, indent=2) + "\n```")
        # the HParams dashboard: every run's flattened config next to its metrics, to compare runs
        values = {k: v for k, v in param_values(self.params.get("config", {})).items()}
        writer = self.tb._get_file_writer()
        for summary in hparams(values, {name: 0.0 for name in self.metric_names}):
            writer.add_summary(summary)
        self.tb.flush()

    def _open_wandb(self) -> None:
        import wandb

        mode = wandb_mode()
        earlier = self._earlier_id("wandb", self.stage)
        self.wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=self.name, group=self.group,
            job_type=self.stage, dir=str(self.folder), mode=mode, id=earlier, resume="allow" if earlier else None,
            config={"sidreasoner": self.params}, save_code=False, settings=wandb.Settings(silent=True, console="off"))
        self.wandb.define_metric(self.step_key)
        self.wandb.define_metric("*", step_metric=self.step_key, step_sync=True)
        self._keep_id("wandb", self.stage, self.wandb.id)
        if mode == "offline":
            log.info("W&B offline: %s (upload with `wandb sync %s`)", self.wandb.dir, Path(self.wandb.dir).parent)

    def _open_mlflow(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri(self.runs_dir))
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", MLFLOW_EXPERIMENT))
        parent = self._earlier_id("mlflow", "parent")
        if parent is None:  # one parent run per run folder: the stages are its children
            with mlflow.start_run(run_name=self.group, tags={"sidreasoner.group": self.group}) as run:
                parent = run.info.run_id
            self._keep_id("mlflow", "parent", parent)
        earlier = self._earlier_id("mlflow", self.stage)
        if earlier:
            self.mlflow = mlflow.start_run(run_id=earlier)
        else:
            self.mlflow = mlflow.start_run(run_name=self.name, parent_run_id=parent,
                                           tags={"sidreasoner.group": self.group, "sidreasoner.stage": self.stage})
            self._keep_id("mlflow", self.stage, self.mlflow.info.run_id)
            params = {_MLFLOW_NAME.sub("_", k)[:250]: str(v)[:6000] for k, v in param_values(self.params).items()}
            items = sorted(params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
                mlflow.log_params(dict(items[i:i + 100]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
        if self.mlflow is not None:
            import mlflow

            mlflow.end_run()
            self.mlflow = None

    def __enter__(self) -> "TrackedRun":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- logging ----
    def callbacks(self) -> list:
        """transformers' integration callbacks, bound to this run: the TensorBoard callback writes with this
        run's writer; the W&B and MLflow callbacks find this run active and log to it (without ending it)."""
        from transformers.integrations import MLflowCallback, TensorBoardCallback, WandbCallback

        out = []
        if self.tb is not None:
            out.append(TensorBoardCallback(tb_writer=self.tb))
        if self.wandb is not None:
            out.append(WandbCallback())
        if self.mlflow is not None:
            out.append(MLflowCallback())
        return out

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars at ``step`` on every tracker (W&B: ``step`` is the value of ``step_key``, its x axis)."""
        if not metrics:
            return
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({**metrics, self.step_key: step})
        if self.mlflow is not None:
            import mlflow

            mlflow.log_metrics({_MLFLOW_NAME.sub("_", k): v for k, v in metrics.items()}, step=step)


def tracked(trackers: Iterable[str], **kwargs) -> TrackedRun | None:
    """An opened ``TrackedRun`` when any tracker is asked for, else None."""
    trackers = tuple(trackers)
    return TrackedRun(trackers, **kwargs).open() if trackers else None
