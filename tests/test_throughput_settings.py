"""The throughput settings of the trainers: attention kernel, activation checkpointing by memory, packed
rows kept apart without flattening, the fused optimizer; each decides what its docstring says."""
import pytest
import torch

from synth.settings import ConfigError
from train.config import OPTIMIZER, AlignConfig, GRPOStageConfig
from train.model import activation_checkpointing, attention_kernel, training_memory
from train.sft import flattens_packs, labelled_loss, packed_rows_collator

torch.set_num_threads(1)


def test_attention_kernel_auto_and_explicit():
    assert attention_kernel("auto", packed=True, gpu=False) == "sdpa"
    assert attention_kernel("auto", packed=False, gpu=False) == "sdpa"
    # no flash_attn here: packed SFT on a GPU gets flex_attention, padded GRPO batches sdpa
    assert attention_kernel("auto", packed=True, gpu=True) == "flex_attention"
    assert attention_kernel("auto", packed=False, gpu=True) == "sdpa"
    assert attention_kernel("eager", packed=True, gpu=True) == "eager"
    assert flattens_packs("flash_attention_2") and flattens_packs("flex_attention")
    assert not flattens_packs("sdpa") and not flattens_packs("eager")


def test_attention_setting_is_checked():
    with pytest.raises(ConfigError, match="align.attention: 'flash'"):
        AlignConfig(attention="flash").check()
    GRPOStageConfig(attention="sdpa").check()


def _tiny_model(layers=2, hidden=64, vocab=500):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=128,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=16))


def test_activation_checkpointing_by_estimated_memory():
    model = _tiny_model()
    params = sum(p.numel() for p in model.parameters())
    need = training_memory(model, 1000)
    assert need == params * 16 + 1000 * 2 * 64 * 34 + 1000 * 500 * 4
    assert activation_checkpointing(None, model, 1000, device_bytes=need) is True  # over 85% of the device
    assert activation_checkpointing(None, model, 1000, device_bytes=2 * need) is False
    assert activation_checkpointing(True, model, 1000, device_bytes=100 * need) is True  # as asked
    assert activation_checkpointing(False, model, 1000, device_bytes=1) is False
    if not torch.cuda.is_available():
        assert activation_checkpointing(None, model, 10**9) is False  # no GPU: never by default


def test_qwen3_1_7b_memory_estimate_decides_per_stage():
    """At Qwen3-1.7B's shape the paper preset's SFT micro-batch fits an 80 GB GPU without recomputation,
    and GRPO's 16 padded completions of 2,048 tokens do not (the estimate, not a measurement)."""
    from transformers import Qwen3Config

    class Shape:  # the estimate reads the config and the parameter count only
        config = Qwen3Config(hidden_size=2048, num_hidden_layers=28, vocab_size=151936, intermediate_size=6144,
                             num_attention_heads=16, num_key_value_heads=8, head_dim=128)

        def parameters(self):
            class Count:
                def numel(self):
                    return 1_720_000_000

            return [Count()]

    h100 = 80 * 2**30
    align = AlignConfig()
    assert activation_checkpointing(None, Shape(), align.per_device_batch * align.max_length,  # as run_sft asks
                                    device_bytes=h100) is False
    g = GRPOStageConfig()
    assert activation_checkpointing(None, Shape(), g.per_device_batch * (g.max_prompt_length + g.max_completion_length),
                                    logits_tokens=g.per_device_batch * g.max_completion_length,
                                    device_bytes=h100) is True


def test_packed_rows_keep_their_sequences_apart():
    """Two packed sequences of three rows each, as rows of one padded batch (sdpa): the loss equals the
    loss of the six rows one by one, and that of TRL's flattened padding-free form."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = _tiny_model().eval()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 12, 5, 9, 4, 11)]
    packs = [rows[:3], rows[3:]]
    examples = [{"input_ids": sum(p, []), "seq_lengths": [len(r) for r in p]} for p in packs]
    batch = packed_rows_collator(pad_id=0)(examples)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 24)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    with torch.no_grad():
        loss_rows = labelled_loss(model, batch)[0]
        loss_flat = labelled_loss(model, {k: flat[k] for k in ("input_ids", "labels", "position_ids")})[0]
        # one by one: next-token loss summed over every row, divided by the labelled tokens
        total, n = 0.0, 0
        for r in rows:
            ids = torch.tensor([r])
            logits = model(input_ids=ids).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            n += len(r) - 1
    assert torch.allclose(loss_rows, total / n, atol=1e-5)
    assert torch.allclose(loss_rows, loss_flat, atol=1e-5)
    # no label where a packed sequence starts or in the padding
    assert (batch["labels"][batch["position_ids"] == 0] == -100).all()


def test_the_optimizer_is_fused_adamw_in_every_stage(tmp_path):
    from train.grpo import grpo_args
    from train.sft import sft_args

    assert OPTIMIZER == "adamw_torch_fused"
    assert sft_args(AlignConfig.tiny().resolved(), tmp_path, False).optim == OPTIMIZER
    g = GRPOStageConfig.tiny().resolved()
    assert grpo_args(g, tmp_path, [1.0, 0.1, 0.0], world=1, engine="generate").optim == OPTIMIZER
