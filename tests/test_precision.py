"""Weights that move at the paper's learning rate: fp32 master weights under bf16 autocast.

One SFT step of the tiny model at lr 5e-7 with ``bf16=True`` (bf16 autocast, which torch supports
on a CPU too), through THE trainer path (``train.sft.run_sft``, which loads the model with
``train.model.load_for_training`` as every stage does, GRPO included, on one GPU or many):

- ``master_weights: fp32`` (the default of every stage): most entries of a weight matrix change,
  since an AdamW step of about lr = 5e-7 is far above fp32 resolution for weights of size ~0.02;
- ``master_weights: bf16`` (the old GPU behaviour: ``load_model`` loads bf16 on a GPU and the
  optimizer updated those bf16 weights): almost none change, since 5e-7 is far below bf16
  resolution (~1e-4 at 0.02), so the update rounds away. This is the control.
"""
import pytest
import torch
from safetensors.torch import load_file

from train import grpo, sft
from train.config import AlignConfig, GRPOStageConfig
from train.model import build_tiny, load_for_training
from train.templates import task_messages

VOCAB = [f"<{level}_{c}>" for level in "abc" for c in range(4)]
WEIGHT = "model.layers.0.mlp.down_proj.weight"  # every entry gets a gradient from every token


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("precision") / "base"
    build_tiny(VOCAB, d, hidden=64, layers=2, heads=2, vocab_size=512, seed=0)
    return d


def _rows():
    sids = ["<a_0><b_1><c_2>", "<a_1><b_2><c_3>", "<a_2><b_3><c_0>", "<a_3><b_0><c_1>"]
    return [{"messages": task_messages("sid2sid", sids[(k + 1) % 4], history=[sids[k % 4]])} for k in range(8)]


def _changed_share(base, tmp_path, master_weights: str) -> tuple[float, torch.dtype]:
    cfg = AlignConfig.tiny().override(
        learning_rate=5e-7, bf16=True, master_weights=master_weights, max_steps=1, epochs=1, batch_size=8,
        per_device_batch=8, warmup_steps=0, lr_scheduler="constant", packing=False, max_length=512,
        logging_steps=1, seed=0)
    before, _ = load_for_training(base, master_weights)  # what the trainer starts from
    old = dict(before.named_parameters())[WEIGHT].detach().clone()
    summary = sft.run_sft(base, tmp_path / master_weights, _rows(), None, cfg)
    assert summary["steps"] == 1
    new = load_file(str(tmp_path / master_weights / "model" / "model.safetensors"))[WEIGHT]
    assert new.dtype == old.dtype  # saved as trained, not recast
    return (new != old).float().mean().item(), old.dtype


def test_fp32_master_weights_move_at_lr_5e_7_and_bf16_weights_do_not(base, tmp_path):
    share, dtype = _changed_share(base, tmp_path, "fp32")
    control, control_dtype = _changed_share(base, tmp_path, "bf16")
    print(f"share of {WEIGHT} changed by one step at lr 5e-7 (bf16 autocast): fp32 master weights {share:.4f}, "
          f"bf16 weights {control:.4f}")
    assert dtype == torch.float32 and control_dtype == torch.bfloat16
    assert share > 0.5, share
    assert control < 0.05, control


def test_every_training_stage_loads_through_load_for_training(base, tmp_path, monkeypatch):
    """align/activate (run_sft) and GRPO (run_grpo) take their weights from the one loader, with the
    stage's master_weights (fp32 by default, on a GPU as on a CPU)."""
    seen = []

    class Loaded(Exception):
        pass

    def spy(path, master_weights="fp32", attention=None):
        seen.append((master_weights, attention))
        raise Loaded

    monkeypatch.setattr(sft, "load_for_training", spy)
    monkeypatch.setattr(grpo, "load_for_training", spy)
    with pytest.raises(Loaded):
        sft.run_sft(base, tmp_path / "a", _rows(), None, AlignConfig())
    with pytest.raises(Loaded):
        grpo.run_grpo(base, tmp_path / "g", [], GRPOStageConfig(), set())
    assert seen == [("fp32", "sdpa"), ("fp32", "sdpa")]  # auto on a CPU: sdpa
    model, _ = load_for_training(base)
    assert model.dtype == torch.float32
