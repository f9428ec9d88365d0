"""Training survives preemption: a stage killed after a checkpoint resumes from it on the rerun and ends as an
uninterrupted run does; SIGTERM saves and exits 75; a half-written checkpoint is never loaded.

Each run is its own process (``tests/resume_worker.py``), killed for real (SIGKILL, SIGTERM). One machine, the
same thread count and seed: the resumed run restores the model, optimizer, scheduler, RNG states and the data
position, so its final weights equal the uninterrupted run's bit for bit (asserted with ``torch.equal``)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train.checkpoints import COMPLETE, EXIT_PREEMPTED, resume_point
from train.model import build_tiny

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from tests.test_grpo import SIDS

    root = tmp_path_factory.mktemp("resume")
    vocab = sorted({t for s in SIDS.values() for t in s})
    build_tiny(vocab, root / "base", hidden=64, layers=2, heads=2, vocab_size=2048, seed=0)
    return root / "base"


def _cmd(kind, base, out, steps, save_steps):
    return [sys.executable, "-m", "tests.resume_worker", kind, str(base), str(out), str(steps), str(save_steps)]


def _run(kind, base, out, steps, save_steps):
    res = subprocess.run(_cmd(kind, base, out, steps, save_steps), cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _start_and_wait(kind, base, out, steps, save_steps, step):
    """Start a run and wait until checkpoint-<step> is complete; returns the process, still running."""
    proc = subprocess.Popen(_cmd(kind, base, out, steps, save_steps), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = out / "checkpoints" / f"checkpoint-{step}" / COMPLETE
    deadline = time.time() + 300
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before checkpoint-{step}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint-{step} within 300 s")
        time.sleep(0.02)
    return proc


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("kind,steps,save_steps", [("sft", 12, 4), ("grpo", 6, 2)])
def test_killed_run_resumes_and_ends_as_an_uninterrupted_one(base, tmp_path, kind, steps, save_steps):
    _run(kind, base, tmp_path / "whole", steps, save_steps)
    proc = _start_and_wait(kind, base, tmp_path / "cut", steps, save_steps, save_steps)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert not (tmp_path / "cut" / "model").exists()
    rerun = _run(kind, base, tmp_path / "cut", steps, save_steps)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    resumed = summary["resumes"][0]["step"]
    assert save_steps <= resumed < steps and "resuming from step" in rerun.stderr
    assert summary["steps"] == steps == json.loads((tmp_path / "whole" / "summary.json").read_text())["steps"]
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    assert not (tmp_path / "cut" / "checkpoints").exists()  # the finished stage keeps its model, not checkpoints


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_75(base, tmp_path):
    proc = _start_and_wait("sft", base, tmp_path / "run", 400, 2, 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == EXIT_PREEMPTED
    assert "rerun the same command to resume" in proc.stderr.read()
    newest = resume_point(tmp_path / "run" / "checkpoints")
    assert newest is not None and (newest / COMPLETE).exists() and (newest / "optimizer.pt").exists()
    assert int(newest.name.split("-")[1]) >= 2 and not (tmp_path / "run" / "model").exists()


def test_a_half_written_checkpoint_is_skipped(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    for step, complete in ((2, True), (4, True), (6, False)):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (folder / f"checkpoint-{step}" / COMPLETE).write_text("")
    with caplog.at_level("WARNING"):
        assert resume_point(folder) == folder / "checkpoint-4"
    assert "checkpoint-6 has no COMPLETE marker" in caplog.text
    assert not (folder / "checkpoint-6").exists() and (folder / "checkpoint-6.incomplete").is_dir()
    assert resume_point(tmp_path / "none") is None
