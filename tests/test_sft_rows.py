"""What the SFT stages train on: tokenized rows and their loss masks, the compact CPU loss, and the
align mix's weighting and covering samples (train.sft, train.tasks)."""
import pytest
import torch

from synth.data.dataset import Sample
from synth.sid import TOKEN_RE
from train.config import AlignConfig
from train.sft import _sft_trainer_class, sft_args, tokenize_rows
from train.tasks import covering_samples, weigh_tasks
from train.templates import task_messages

SIDS = {str(i): [f"<a_{i % 4}>", f"<b_{i}>"] for i in range(12)}


def sid(i):
    return "".join(SIDS[str(i)])


def _rows():
    return [
        {"messages": task_messages("sid2sid", sid(3), history=[sid(1), sid(2)]), "task": "sid2sid"},
        {"messages": task_messages("title2title", "Blue Pen", history=["Red Pen", "Paper"]), "task": "title2title"},
        {"messages": task_messages("sid2title", "Blue Pen", history=[sid(4)]), "task": "sid2title"},
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from train.model import build_tiny

    vocab = sorted({t for s in SIDS.values() for t in s})
    return build_tiny(vocab, tmp_path_factory.mktemp("m") / "base", hidden=32, layers=1, heads=2,
                      vocab_size=600, seed=0)


def test_masks_are_trl_assistant_only_loss_and_history_adds_only_sids(tiny):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = tiny
    rows = _rows()
    ours = tokenize_rows(rows, tok)
    # TRL's own tokenisation of the same conversations with assistant_only_loss
    args = SFTConfig(output_dir="/tmp/unused", assistant_only_loss=True, max_length=None, report_to=[], use_cpu=True)
    trl = SFTTrainer(model=model, args=args, processing_class=tok,
                     train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows])).train_dataset
    for mine, theirs in zip(ours, trl):
        assert mine["input_ids"] == theirs["input_ids"]
        assert [t if m else -100 for t, m in zip(mine["input_ids"], mine["assistant_masks"])] == theirs["labels"]

    hist = tokenize_rows(rows, tok, history_loss=True)
    sid_ids = {i for t, i in tok.get_vocab().items() if TOKEN_RE.fullmatch(t)}
    for row, plain, more in zip(rows, ours, hist):
        added = [t for t, a, b in zip(plain["input_ids"], plain["assistant_masks"], more["assistant_masks"]) if b and not a]
        if row["task"] == "title2title":
            assert added == []
        else:  # exactly the history's SID tokens, in order
            names = tok.convert_ids_to_tokens(added)
            assert set(added) <= sid_ids and "".join(names) == "".join(
                s for s in (sid(1) + sid(2) if row["task"] == "sid2sid" else sid(4)))


def test_compact_cpu_loss_equals_trl_loss(tiny, tmp_path):
    """The CPU trainer's loss over the labelled positions alone is TRL's loss on the same packed batch."""
    from datasets import Dataset

    model, tok = tiny
    cfg = AlignConfig.tiny().override(per_device_batch=3, batch_size=3, max_length=256).resolved()
    trainer = _sft_trainer_class()(model=model, args=sft_args(cfg, tmp_path, False), processing_class=tok,
                                   train_dataset=Dataset.from_list(tokenize_rows(_rows(), tok, history_loss=True)))
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    assert trainer._compact(model)
    compact = trainer.compute_loss(model, dict(batch))
    reference = super(type(trainer), trainer).compute_loss(model, dict(batch))
    assert torch.allclose(compact, reference, atol=1e-5), (compact, reference)
    compact.backward()  # and it trains: gradients reach the embeddings
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_covering_samples_keep_every_target_taught():
    a = Sample("u", ["1"], "2")
    b = Sample("u", ["1", "2"], "3")
    c = Sample("u", ["1", "2", "3"], "4")
    window = Sample("u", ["2", "3", "4"], "5")  # a capped history slides: not a prefix of c
    other = Sample("v", ["1"], "2")  # another user's identical sequence stays
    kept = covering_samples([a, b, c, window, other])
    assert kept == [c, window, other]
    for s in (a, b):  # what was left out is a prefix of a kept row of the same user
        seq = (*s.history, s.target)
        assert any(k.user_id == s.user_id and (*k.history, k.target)[: len(seq)] == seq for k in kept)


def test_task_weights_scale_each_family():
    rows = [{"task": "sid2sid", "i": i} for i in range(10)] + [{"task": "corpus_user", "i": i} for i in range(10)]
    out = weigh_tasks(rows, {"sid2sid": 2.5, "corpus_user": 0.3}, seed=1)
    assert sum(r["task"] == "sid2sid" for r in out) == 25
    picked = [r["i"] for r in out if r["task"] == "corpus_user"]
    assert len(picked) == 3 and len(set(picked)) == 3
    assert weigh_tasks(rows, {}) == rows and weigh_tasks(rows, None) == rows
    assert weigh_tasks(rows, {"sid2sid": 0}) == rows[10:]


def test_compact_prompt_set_keeps_the_turns_the_data_and_the_answer(tiny):
    from train.templates import PROMPT_SETS, TASKS, prompt_vocabulary_texts

    _, tok = tiny
    data = {"history": [sid(1), sid(2)], "title": "Blue Pen", "sid": sid(3), "kind": "user"}
    for task in TASKS:
        args = dict(data) if task not in ("item_title2sid", "item_sid2title", "corpus") else \
            {k: v for k, v in data.items() if k != "history"}
        if task in ("title2title", "title2sid"):
            args["history"] = ["Red Pen", "Paper"]
        full = task_messages(task, "ANSWER", **args)
        compact = task_messages(task, "ANSWER", prompts="compact", **args)
        assert [m["role"] for m in full] == [m["role"] for m in compact]
        assert full[-1] == compact[-1]
        user = compact[-2]["content"]
        for value in args.get("history", []):  # the data is all there, in order
            assert value in user
        if task == "sid2sid":
            assert sid(1) + sid(2) in user
            n_full, n_compact = (len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
                                 for m in (full, compact))
            assert n_compact < n_full / 2, (n_compact, n_full)
    # the tiny tokenizer learns both sets' words
    assert any("Recommend the next item" in t for t in prompt_vocabulary_texts())
    assert PROMPT_SETS == ("full", "compact")
    with pytest.raises(ValueError, match="unknown prompt set"):
        task_messages("sid2sid", "x", prompts="tiny", history=[sid(1)])
