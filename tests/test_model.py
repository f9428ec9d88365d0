"""The tiny model and its tokens: SID tokens non-special and distinct, chat template masks the assistant."""
import pytest
import torch

from train.model import build_tiny, load_model
from train.templates import rec_messages, render_prompt, task_messages

VOCAB = [f"<{level}_{c}>" for level in "abc" for c in range(8)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny(VOCAB, d, hidden=64, heads=2, vocab_size=1024)
    return load_model(d)


def test_sid_tokens_are_single_non_special_and_survive_decoding(tiny):
    model, tok = tiny
    ids = tok("<a_3><b_7><c_0>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<a_3>", "<b_7>", "<c_0>"]
    assert not any(t in tok.all_special_tokens for t in VOCAB)
    # GRPO decodes with skip_special_tokens=True: SIDs and </think> must survive it.
    text = tok.decode(tok("<think>\nx\n</think>\n\n<a_3><b_7><|im_end|>", add_special_tokens=False)["input_ids"],
                      skip_special_tokens=True)
    assert text.endswith("</think>\n\n<a_3><b_7>")
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id is not None


def test_new_embedding_rows_are_distinct(tiny):
    model, tok = tiny
    rows = model.get_input_embeddings().weight[tok.convert_tokens_to_ids(VOCAB)].detach()
    dist = torch.cdist(rows, rows) + torch.eye(len(VOCAB)) * 1e9
    old = model.get_input_embeddings().weight[:100].detach()
    # Mean resizing gives a spread ~1e-6; ours is on the scale of the existing rows.
    assert dist.min() > 0.1 * torch.cdist(old, old).mean()


def test_ordinary_english_is_covered(tiny):
    _, tok = tiny
    text = "Paper Mate Flair Felt Tip Pens, Medium Point (0.7mm), 16-Count — café"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(text)


def test_chat_template_masks_assistant_only_with_end_token(tiny):
    _, tok = tiny
    msgs = task_messages("sid2sid", "<a_1><b_2><c_3>", history=["<a_0><b_0><c_0>"])
    out = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [t for t, m in zip(tok.convert_ids_to_tokens(ids), mask) if m]
    assert masked[0] == "<think>" and "<|im_end|>" in masked
    assert masked[masked.index("</think>") + 1:].count("<a_1>") == 1
    assert "<|im_start|>" not in masked  # the prompt carries no loss
    # The prompt seen at inference is exactly the training prefix.
    prompt = render_prompt(tok, rec_messages(["<a_0><b_0><c_0>"]))
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert full.startswith(prompt) and full[len(prompt):].startswith("<think>\n\n</think>\n\n<a_1>")
