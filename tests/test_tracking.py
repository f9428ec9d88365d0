"""Experiment tracking (REPORT_TO): what each tracker's own files hold, read back with its own reader
(TensorBoard's EventAccumulator, MLflow's client on its SQLite store, the W&B offline run file), against
what the run wrote to metrics.json, log_history.json and the corpus manifest."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth.settings import ConfigError
from synth.tracking import check_installed, flat, parse_report_to, scalars, wandb_mode
from tests.synth_fixtures import make_dataset
from tests.teacher_server import ServerConfig, TeacherServer
from tests.wandb_records import run_of

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
def test_report_to_parses_lists_and_none():
    assert parse_report_to("none") == parse_report_to("") == parse_report_to(None) == ()
    assert parse_report_to("TensorBoard, wandb,wandb") == ("tensorboard", "wandb")
    assert parse_report_to(["mlflow", "none"]) == ("mlflow",)
    with pytest.raises(ConfigError, match="unknown tracker 'comet'.*tensorboard, wandb, mlflow"):
        parse_report_to("tensorboard,comet")


@pytest.fixture()
def without_wandb(monkeypatch):
    """wandb looks uninstalled (the others keep their real answer)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))


def test_a_tracker_not_installed_stops_the_run_naming_the_extra(without_wandb):
    from synth.engine import SynthConfig
    from train import config as tc

    check_installed(("tensorboard", "mlflow"))  # installed: no error
    with pytest.raises(ConfigError, match=r"REPORT_TO=wandb: the 'wandb' package is not installed: "
                                          r"pip install -e '\.\[wandb\]'"):
        check_installed(("tensorboard", "wandb"))
    with pytest.raises(ConfigError, match=r"\.\[wandb\]"):
        tc.load(None, {"run": {"dataset": "office", "model": "tiny", "report_to": "tensorboard,wandb"}})
    with pytest.raises(ConfigError, match=r"\.\[wandb\]"):
        SynthConfig("tiny", report_to="wandb")
    cfg, _ = tc.load(None, {"run": {"dataset": "office", "model": "tiny", "report_to": "none"}})
    assert cfg.run.report_to == ()  # the default: no tracking
    assert SynthConfig("tiny", report_to="tensorboard").report_to == ("tensorboard",)


def test_wandb_is_offline_unless_told_or_logged_in(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode() == "offline"
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password not-a-real-key\n")
    netrc.chmod(0o600)
    assert wandb_mode() == "online"  # `wandb login` wrote it
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"


def test_results_flatten_to_numbers():
    results = {"direct": {"recall@10": 0.5, "n": 24, "hit": "sid", "slices": {"cold": {"recall@10": 0.25}},
                          "flag": True, "none": None}}
    assert scalars(results, "test") == {"test/direct/recall@10": 0.5, "test/direct/n": 24.0,
                                        "test/direct/slices/cold/recall@10": 0.25}
    assert flat({"a": {"b": 1}}, sep=".") == {"a.b": 1}


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------
def tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every event file in ``folder``, by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def tb_texts(folder: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    ea.Reload()
    return ea.Tags()["tensors"]


def mlflow_runs(store: Path) -> dict[str, object]:
    """run name -> run, from the SQLite store through MLflow's client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name("sidreasoner")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def wandb_runs(folder: Path) -> list[dict]:
    return [run_of(f) for d in sorted(folder.glob("offline-run-*")) for f in d.glob("run-*.wandb")]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)  # TensorBoard keeps float32


def tracker_env(tmp_path: Path) -> dict:
    """No W&B credentials anywhere (HOME without a .netrc): the offline case."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------------------------------------
# make synth
# ---------------------------------------------------------------------------------------------
def test_synth_logs_progress_rejections_tokens_and_dollars(tmp_path):
    key = "sk-test-DO-NOT-LEAK-7c1e"
    make_dataset(tmp_path / "data", "tiny", n_items=16, n_train=16)
    runs = tmp_path / "runs"
    env = {**tracker_env(tmp_path), "OPENAI_API_KEY": key}
    with TeacherServer(ServerConfig(require_key=key, reject_rate=0.3, fault_rates={"500": 0.15},
                                    retry_after="0")) as srv:
        res = subprocess.run(
            [sys.executable, "-m", "synth", "--dataset", "tiny", "--teacher", "openai/teacher", "--api-base",
             srv.base_url, "--data-dir", str(tmp_path / "data"), "--corpora-dir", str(tmp_path / "corpora"),
             "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(runs), "--report-to",
             "tensorboard,wandb,mlflow", "--max-samples", "1", "--backoff", "0.01", "--quiet"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "corpora" / "tiny" / "openai_teacher" / "manifest.json").read_text())
    assert manifest["rejected"] and manifest["tokens_in"] > 0  # some records rejected, for the reasons' tags
    folder = runs / "tiny" / "synth-openai_teacher"
    total = manifest["requested"]

    tb = tb_scalars(folder / "tb" / "synth")
    assert tb["synth/records_done"][0] == (0, 0.0) and tb["synth/records_done"][-1] == (total, float(total))
    assert tb["synth/records_total"][-1][1] == total
    for key_ in ("written", "tokens_in", "tokens_out", "requests_sent", "failed"):
        assert tb[f"corpus/{key_}"] == [(total, float(manifest[key_]))], key_
    assert close(tb["corpus/cost_usd"][-1][1], manifest["cost_usd"])
    for reason, n in manifest["rejected"].items():
        assert tb[f"corpus/rejected/{reason}"] == [(total, float(n))]
    assert tb["corpus/rejected_total"][-1][1] == sum(manifest["rejected"].values())
    assert tb["synth/tokens_in"][-1][1] == manifest["tokens_in"]  # the live counts end at the manifest's
    assert manifest["retries"] and all(tb[f"synth/retries/{k}"][-1][1] == n for k, n in manifest["retries"].items())
    assert "sidreasoner/config/text_summary" in tb_texts(folder / "tb" / "synth")

    (wb,) = wandb_runs(folder / "wandb")
    assert (wb["name"], wb["group"], wb["job_type"]) == ("tiny/synth-openai_teacher/synth", "tiny/synth-openai_teacher",
                                                         "synth")
    last = [h for h in wb["history"] if "corpus/written" in h][-1]
    assert last["corpus/written"] == manifest["written"] and last["synth/records_done"] == total
    assert wb["config"]["sidreasoner"]["prompt_hashes"] == manifest["prompt_hashes"]

    ml = mlflow_runs(runs / "mlflow.db")
    child = ml["tiny/synth-openai_teacher/synth"]
    assert child.data.tags["mlflow.parentRunId"] == ml["tiny/synth-openai_teacher"].info.run_id
    assert child.data.metrics["corpus/written"] == manifest["written"]
    assert child.data.params["config.teacher"] == "openai/teacher"

    for p in [p for p in runs.rglob("*") if p.is_file()]:  # the key reaches no tracker's file
        assert key.encode() not in p.read_bytes(), f"API key found in {p}"


# ---------------------------------------------------------------------------------------------
# make train
# ---------------------------------------------------------------------------------------------
def offline_prefix() -> list[str]:
    """``unshare -n``: a network namespace with no interface up, where any attempt to reach a server fails."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


@pytest.mark.slow
def test_train_logs_every_stage_and_its_evaluation_to_each_tracker(shared_office, tmp_path):
    from tests.test_train_e2e import make_office

    make_office(shared_office, tmp_path, corpus_rows=64)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "train", "run", "--dataset", "office", "--teacher", "testteacher",
           "--model", "tiny", "--limit", "24", "--data-dir", str(tmp_path / "data"),
           "--corpora-dir", str(tmp_path / "corpora"), "--runs-dir", str(runs),
           "--align-epochs", "1", "--activate-epochs", "1", "--grpo-steps", "2", "--grpo-eval-every", "1",
           "--max-think-tokens", "16", "--report-to", "tensorboard,wandb,mlflow"]
    env = {**tracker_env(tmp_path), "TORCH_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    prefix = offline_prefix()  # no network at all where the machine allows it
    res = subprocess.run([*prefix, *cmd, "--modes", "direct"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    run = runs / "office" / "tiny-testteacher"
    metrics = json.loads((run / "metrics.json").read_text())["stages"]
    stages = ("align", "activate", "grpo")

    # TensorBoard: the trainer's own scalars, and every number of the test evaluation at the stage's last step
    for stage in stages:
        tb = tb_scalars(run / "tb" / stage)
        history = json.loads((run / stage / "log_history.json").read_text())
        last_step = json.loads((run / stage / "summary.json").read_text())["steps"]
        losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
        assert losses and [s for s, _ in tb["train/loss"]] == [s for s, _ in losses]
        assert all(close(a, b) for (_, a), (_, b) in zip(tb["train/loss"], losses))
        expected = scalars(metrics[stage]["direct"], "test/direct")
        assert expected["test/direct/n"] == 24
        for tag, value in expected.items():
            assert tb[tag] == [(last_step, pytest.approx(value, rel=1e-6, abs=1e-7))], (stage, tag)
        assert {"sidreasoner/config/text_summary", "sidreasoner/provenance/text_summary"} <= set(tb_texts(run / "tb" / stage))
    align_history = json.loads((run / "align" / "log_history.json").read_text())
    assert [v for _, v in tb_scalars(run / "tb" / "align")["eval/loss"]] == pytest.approx(
        [h["eval_loss"] for h in align_history if "eval_loss" in h], rel=1e-6)
    grpo_tb = tb_scalars(run / "tb" / "grpo")
    grpo_history = json.loads((run / "grpo" / "log_history.json").read_text())
    rewards = [(h["step"], h["reward"]) for h in grpo_history if "reward" in h]
    assert [s for s, _ in grpo_tb["train/reward"]] == [s for s, _ in rewards] == [1, 2]
    assert all(close(a, b) for (_, a), (_, b) in zip(grpo_tb["train/reward"], rewards))
    assert "train/kl" in grpo_tb and "train/rewards/reasoning_tokens/mean" in grpo_tb
    val = [(h["step"], h["val_recall@10"]) for h in grpo_history if "val_recall@10" in h]
    assert [s for s, _ in grpo_tb["eval/recall@10"]] == [s for s, _ in val] == [0, 1, 2]  # the validation curve
    assert all(close(a, b) for (_, a), (_, b) in zip(grpo_tb["eval/recall@10"], val))

    # W&B offline: one local run per stage, grouped by the run folder, synced later by `wandb sync`
    wb = {r["job_type"]: r for r in wandb_runs(run / "wandb")}
    assert set(wb) == set(stages)
    for stage in stages:
        r = wb[stage]
        assert (r["name"], r["group"]) == (f"office/tiny-testteacher/{stage}", "office/tiny-testteacher")
        assert r["config"]["sidreasoner"]["config"]["run"]["dataset"] == "office"
        assert r["config"]["sidreasoner"]["sid_set"]["sha256"]  # the SID provenance
        tested = [h for h in r["history"] if "test/direct/recall@10" in h]
        assert len(tested) == 1 and close(tested[0]["test/direct/recall@10"], metrics[stage]["direct"]["recall@10"])
    assert [h["eval/recall@10"] for h in wb["grpo"]["history"] if "eval/recall@10" in h] == pytest.approx(
        [v for _, v in val])

    # MLflow: a parent run per run folder, a child per stage with the run's config as parameters
    ml = mlflow_runs(runs / "mlflow.db")
    parent = ml["office/tiny-testteacher"].info.run_id
    for stage in stages:
        child = ml[f"office/tiny-testteacher/{stage}"]
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert close(child.data.metrics["test/direct/recall_10"], metrics[stage]["direct"]["recall@10"])
        assert child.data.params["config.run.dataset"] == "office"
    assert "reward" in ml["office/tiny-testteacher/grpo"].data.metrics

    # an evaluation added later (thinking mode) logs to the same tracked runs
    ids = json.loads((run / "tracking.json").read_text())
    res = subprocess.run([*prefix, *cmd, "--modes", "direct,thinking"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "finished in" not in res.stderr  # nothing trained again
    metrics = json.loads((run / "metrics.json").read_text())["stages"]
    assert json.loads((run / "tracking.json").read_text()) == ids
    ml = mlflow_runs(runs / "mlflow.db")
    for stage in stages:
        child = ml[f"office/tiny-testteacher/{stage}"]
        assert child.info.run_id == ids["mlflow"][stage]
        assert close(child.data.metrics["test/thinking/recall_10"], metrics[stage]["thinking"]["recall@10"])
        assert tb_scalars(run / "tb" / stage)["test/thinking/n"][-1][1] == 24
    assert sorted(r["id"] for r in wandb_runs(run / "wandb")) == sorted([*ids["wandb"].values()] * 2)
