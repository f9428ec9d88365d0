"""Constrained decoding on a real tiny Qwen3 model (random weights, then a few training steps)."""
import random

import pytest
import torch

from synth.sid import sid_string, tokens_from_codes
from train.decoding import DecodeConfig, constrained_beam_search, recommend, recommend_best_of_n, think
from train.metrics import best_rank
from train.trie import SidTrie

torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
WORDS = "the user bought pens paper ink tape folders stapler next item likes office desk".split()


def make_sids(n_items: int, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n_items:
        codes.add((rng.randrange(4), rng.randrange(5), rng.randrange(6)))
    return {f"item{i}": tokens_from_codes(c) for i, c in enumerate(sorted(codes))}


SIDS = make_sids(40)
FEW_SIDS = {"x": ["<a_0>", "<b_0>", "<c_0>"], "y": ["<a_0>", "<b_1>", "<c_2>"], "z": ["<a_3>", "<b_4>", "<c_5>"]}


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_tokens(["<think>", "</think>"])  # ordinary tokens, as in Qwen3
    fast.add_tokens(sorted({t for s in SIDS.values() for t in s} | {t for s in FEW_SIDS.values() for t in s}))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tok, seed: int = 0):
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model


def prompt(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def random_model(tok):
    return build_model(tok)


PROMPTS = ["the user bought pens", "paper ink tape folders stapler next item likes office desk the user", "ink"]


def test_random_model_returns_only_valid_distinct_items(tok, random_model):
    trie = SidTrie.from_sids(SIDS, tok)
    ranked = recommend(random_model, tok, [prompt(tok, p) for p in PROMPTS], trie,
                       DecodeConfig(num_beams=10, num_return=10, batch_size=2))
    assert len(ranked) == len(PROMPTS)
    for items in ranked:
        assert len(items) == 10  # 40 items >> 10 beams: a full list
        assert len(set(items)) == 10
        assert set(items) <= set(SIDS)


def test_raw_beams_are_complete_sids_and_sorted(tok, random_model):
    trie = SidTrie.from_sids(SIDS, tok)
    ids = tok([prompt(tok, p) + "<think>\n\n</think>\n\n" for p in PROMPTS], add_special_tokens=False)["input_ids"]
    beams = constrained_beam_search(random_model, ids, trie, num_beams=8, num_return=8,
                                    end_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_id=tok.pad_token_id)
    for row in beams:
        assert len(row) == 8
        for sid, score in row:
            assert trie.is_complete(sid), tok.convert_ids_to_tokens(list(sid))
            assert -1e4 < score <= 0
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)


def test_shared_prompt_cache_gives_the_same_beams(tok, random_model):
    """Encoding each prompt once for all beams (the fast path) must not change the search."""
    trie = SidTrie.from_sids(SIDS, tok)
    ids = tok([prompt(tok, p) + "<think>\n\n</think>\n\n" for p in PROMPTS], add_special_tokens=False)["input_ids"]
    kw = dict(num_beams=6, num_return=6, end_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_id=tok.pad_token_id)
    fast = constrained_beam_search(random_model, ids, trie, share_prompt=True, **kw)
    slow = constrained_beam_search(random_model, ids, trie, share_prompt=False, **kw)
    for f, s in zip(fast, slow):
        assert [sid for sid, _ in f] == [sid for sid, _ in s]
        assert [sc for _, sc in f] == pytest.approx([sc for _, sc in s], abs=1e-4)


def test_more_beams_than_items_drops_padding_beams(tok, random_model):
    trie = SidTrie.from_sids(FEW_SIDS, tok)
    cfg = DecodeConfig(num_beams=10, num_return=10, batch_size=3)
    ranked = recommend(random_model, tok, [prompt(tok, p) for p in PROMPTS], trie, cfg)
    for items in ranked:
        assert sorted(items) == ["x", "y", "z"]  # every item exactly once, nothing else
    ids = tok([prompt(tok, "ink") + "<think>\n\n</think>\n\n"], add_special_tokens=False)["input_ids"]
    beams = constrained_beam_search(random_model, ids, trie, num_beams=10, num_return=10,
                                    end_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_id=tok.pad_token_id)[0]
    assert sorted(trie.item_of(s) for s, _ in beams) == ["x", "y", "z"]  # no -1e9 padding beam survives


def test_thinking_mode_and_best_of_n_return_valid_items(tok, random_model):
    trie = SidTrie.from_sids(SIDS, tok)
    cfg = DecodeConfig(num_beams=4, num_return=4, mode="thinking", max_think_tokens=6, batch_size=2)
    texts = [prompt(tok, p) for p in PROMPTS]
    thoughts = think(random_model, tok, texts, cfg)
    think_end = tok.convert_tokens_to_ids("</think>")
    for text, ids in zip(texts, thoughts):
        base = tok(text + "<think>\n", add_special_tokens=False)["input_ids"]
        assert ids[: len(base)] == base and think_end in ids[len(base):]  # reasoning closed (forced if needed)
        assert len(ids) - len(base) <= 6 + 4  # budget + forced "\n</think>" + "\n\n"
    torch.manual_seed(0)
    sampled = think(random_model, tok, texts, cfg, sample=True, n=3)
    assert len(sampled) == 3 * len(texts)
    for i, text in enumerate(texts):
        base = tok(text + "<think>\n", add_special_tokens=False)["input_ids"]
        group = sampled[3 * i: 3 * i + 3]
        assert all(ids[: len(base)] == base for ids in group)  # the n samples of prompt i follow it
        assert len({tuple(ids) for ids in group}) > 1  # sampling, not greedy copies
    ranked = recommend(random_model, tok, texts, trie, cfg)
    for items in ranked:
        assert len(items) == 4 and len(set(items)) == 4 and set(items) <= set(SIDS)
    best = recommend_best_of_n(random_model, tok, texts, trie,
                               DecodeConfig(num_beams=3, num_return=3, mode="thinking", max_think_tokens=4,
                                            best_of_n=3, temperature=1.0))
    assert len(best) == len(texts)
    for lists in best:
        assert len(lists) == 3
        for items in lists:
            assert len(items) == 3 and len(set(items)) == 3 and set(items) <= set(SIDS)


def test_config_errors(tok, random_model):
    with pytest.raises(ValueError, match="num_return"):
        DecodeConfig(num_beams=2, num_return=5)
    with pytest.raises(ValueError, match="mode"):
        DecodeConfig(mode="fast")
    trie = SidTrie.from_sids(FEW_SIDS, tok)
    with pytest.raises(ValueError, match="recommend_best_of_n"):
        recommend(random_model, tok, ["x"], trie, DecodeConfig(best_of_n=2, mode="thinking"))


def test_trained_preference_is_ranked_first(tok):
    """Teach two prompts two different items (direct and thinking form); both modes must rank the
    taught item first for each prompt, in one left-padded batch, in input order."""
    model = build_model(tok, seed=1).train()
    trie = SidTrie.from_sids(SIDS, tok)
    want = {"the user bought pens": "item7", "paper ink tape folders stapler next item likes office desk": "item31"}
    texts = []
    for p, item in want.items():
        sid = sid_string(SIDS[item])
        texts.append(prompt(tok, p) + f"<think>\n\n</think>\n\n{sid}<|im_end|>")
        texts.append(prompt(tok, p) + f"<think>\nthe user likes office\n</think>\n\n{sid}<|im_end|>")
    batch = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        for ids in batch:
            x = torch.tensor([ids])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    # Left in training mode with activation checkpointing on, as GRPO's periodic evaluation finds
    # the policy: decoding must switch to eval (KV cache on) and restore the mode afterwards.
    model.activation_checkpointing_enable()
    modes_seen = set()
    model.register_forward_pre_hook(lambda module, args: modes_seen.add(module.training))
    torch.manual_seed(0)
    prompts = [prompt(tok, p) for p in want]
    targets = list(want.values())
    direct = recommend(model, tok, prompts, trie, DecodeConfig(num_beams=10, num_return=10, batch_size=2))
    assert [r[0] for r in direct] == targets
    thinking = recommend(model, tok, prompts, trie,
                         DecodeConfig(num_beams=5, num_return=5, mode="thinking", max_think_tokens=12))
    assert [r[0] for r in thinking] == targets
    # Sampled reasonings at temperature 0.5: still random (either taught reasoning can come out),
    # but not the byte soup the tiny model samples at 1.0, after which the taught item is ranked
    # second in some trainings (measured: 3 of 8 sampling seeds for another init seed). Which
    # samples come out follows the float arithmetic of the 60 training steps, so the test must
    # not rest on them; after either taught reasoning the taught item leads by >= 0.7 nats.
    best = recommend_best_of_n(model, tok, prompts, trie,
                               DecodeConfig(num_beams=5, num_return=5, mode="thinking", max_think_tokens=12,
                                            best_of_n=2, temperature=0.5))
    assert [len(lists) for lists in best] == [2, 2]
    assert [best_rank(t, lists) for t, lists in zip(targets, best)] == [0, 0]
    assert modes_seen == {False} and model.training
