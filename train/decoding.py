"""Constrained generation: recommendations as ranked, always-valid item ids.

The SID part is decoded by beam search with ``model.generate(num_beams=.., num_return_sequences=..)``
and a logits processor that walks the trie of valid SIDs (``train.trie.SidTrie``): at each step a
beam may only take a token that extends its SID prefix towards an existing item, and once the SID is
complete only the end token (``<|im_end|>``), so every beam ends on an item. An invalid output is
impossible by construction (``constrained_beam_search`` returns the raw sequences so tests can
check that, and ``recommend`` raises if it ever saw one).

Beam details, and why:
- ``length_penalty=0`` and ``early_stopping="never"``: beams are ranked by the plain sum of token
  log-probabilities (the canonical beam search); lengths are equal for one-length SIDs anyway.
- Masking happens after log-softmax (transformers' order), so scores are the model's own
  log-probabilities of the SID tokens, not renormalised over the allowed set.
- With fewer valid continuations than beams, transformers fills the spare beams from its "dead"
  initial beams (score -1e9 + ...): those come back with scores near -1e9 (-2.5e8 under the
  default length penalty) and are dropped. The returned list can then be shorter than
  ``num_return``; items are deduplicated (first = best occurrence kept).
- Prompts are sorted by length before batching (less padding) and padded on the left, so every
  row's SID starts at the same position; results come back in input order.

Modes:
- ``direct``: the prompt gets Qwen3's empty think block ``<think>\\n\\n</think>\\n\\n`` and the SID
  is decoded right after it.
- ``thinking``: the prompt gets ``<think>\\n``; the model reasons greedily until it emits
  ``</think>`` (or ``max_think_tokens`` pass, or it emits the end token, in which case
  ``\\n</think>`` is forced); then ``\\n\\n`` and the constrained SID beam search.
- best-of-N (``recommend_best_of_n``): N sampled reasonings per prompt (``temperature``), each
  followed by the beam search: N ranked lists per prompt; score the best (``metrics.best_rank``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from train.config import MODES
from train.reward import THINK_END
from train.templates import EMPTY_THINK  # Qwen3's non-thinking form, as the chat template renders it
from train.trie import SidTrie

log = logging.getLogger(__name__)

THINK_START = "<think>\n"
END_TOKEN = "<|im_end|>"
# Finished beams scoring below this come from transformers' padding ("dead") beams, not from the model.
PADDING_SCORE = -1e8


@dataclass
class DecodeConfig:
    num_beams: int = 10
    num_return: int = 10
    mode: str = "direct"  # or "thinking"
    max_think_tokens: int = 256
    batch_size: int = 32
    best_of_n: int = 1
    temperature: float = 1.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"DecodeConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.num_beams < 1 or self.num_return < 1:
            raise ValueError("DecodeConfig: num_beams and num_return must be >= 1")
        if self.num_return > self.num_beams:
            raise ValueError(
                f"DecodeConfig: num_return ({self.num_return}) cannot exceed num_beams ({self.num_beams}); "
                "raise num_beams to return more items"
            )
        if self.batch_size < 1 or self.best_of_n < 1 or self.max_think_tokens < 1:
            raise ValueError("DecodeConfig: batch_size, best_of_n and max_think_tokens must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"DecodeConfig.temperature must be > 0, got {self.temperature}")


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenIds:
    end: int
    pad: int
    think_end: int | None


def token_ids(tokenizer) -> TokenIds:
    """The end, pad and ``</think>`` ids decoding needs."""
    vocab = tokenizer.get_vocab()
    end = vocab.get(END_TOKEN, tokenizer.eos_token_id)
    if end is None:
        raise ValueError(f"tokenizer has neither {END_TOKEN} nor an eos token: constrained decoding needs an end token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return TokenIds(end=end, pad=pad, think_end=vocab.get(THINK_END))


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    # Prompts are already chat-templated: their control tokens are text, no BOS/EOS added.
    return list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of ``seqs`` padded on the left to one width."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def model_device(model) -> torch.device:
    """Where the model's parameters live."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


class _Progress:
    """done/total, rate and ETA in the log, at most every ``every`` seconds."""

    def __init__(self, total: int, what: str, every: float = 15.0):
        self.total, self.what, self.every = total, what, every
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d rows, %.1f rows/s, ETA %.0f s", self.what, self.done, self.total, rate, eta)


# ---------------------------------------------------------------------------------------------
# the SID beam search
# ---------------------------------------------------------------------------------------------
class TrieLogitsProcessor(LogitsProcessor):
    """Masks every token that does not extend the row's SID prefix in the trie.

    The SID starts at ``prompt_len`` (left padding puts all rows' prompts at the same width). A
    complete SID allows only the end token; a prefix outside the trie (only transformers' dead
    padding beams can hold one) gets the end token too, so it finishes with its ~-1e9 score and is
    filtered out. Vectorised on the scores' device (``train.trie.TrieTable``): a few gathers per
    step, no host sync, whatever the number of beams."""

    def __init__(self, trie: SidTrie, prompt_len: int, end_id: int):
        self.trie, self.prompt_len, self.end_id = trie, prompt_len, end_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        table = self.trie.table(self.end_id, scores.shape[-1], scores.device)
        state = table.walk(input_ids[:, self.prompt_len:])
        return table.masked(scores, table.beam_allowed[state])


class AnswerConstraint(LogitsProcessor):
    """Sampled rollouts (GRPO) that always end in a valid SID, as evaluation's answers do: the reasoning
    is free, but may not end the turn before ``</think>``, and ``</think>`` is forced when only the room
    for the answer is left; after it come the separator tokens ``sep`` (evaluation's ``"\\n\\n"``), a
    SID walked down the trie, and the end token. The reward then compares SIDs, never a malformed
    answer (MiniOneRec constrains its RL rollouts the same way).

    One processor per ``generate`` call: ``prompt_len`` is the width of that call's (left-padded) prompts.
    Vectorised on the scores' device like ``TrieLogitsProcessor``: per row, where its first ``</think>``
    is and how far past it the row is decide between free text, a forced token and the trie."""

    def __init__(self, trie: SidTrie, prompt_len: int, think_end: int, sep: Sequence[int], end_id: int,
                 max_new_tokens: int):
        self.trie, self.prompt_len, self.think_end, self.end_id = trie, prompt_len, think_end, end_id
        self.sep = list(sep)
        self.room = len(self.sep) + trie.levels + 2  # </think>, separator, SID, end token
        self.max_new_tokens = max_new_tokens
        self._sep: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        table = self.trie.table(self.end_id, scores.shape[-1], scores.device)
        gen = input_ids[:, self.prompt_len:]
        rows, steps = gen.shape
        dev = scores.device
        closed = gen == self.think_end
        has_end = closed.any(1)
        first = torch.where(has_end, closed.int().argmax(1), steps) if steps else \
            torch.zeros(rows, dtype=torch.long, device=dev)  # the first </think> (argmax: the first max)
        after = steps - first - 1  # tokens written after it (rows that closed the think block)
        n_sep = len(self.sep)
        free = ~has_end & (self.max_new_tokens - steps > self.room)
        force_end = ~has_end & ~free
        in_sep = has_end & (after < n_sep)
        in_sid = has_end & (after >= n_sep)
        # forced tokens: </think>, or the separator's next token
        if self._sep is None or self._sep.device != dev:
            self._sep = torch.tensor(self.sep or [self.end_id], dtype=torch.long, device=dev)
        forced = torch.where(force_end, self.think_end, self._sep[after.clamp(0, max(n_sep - 1, 0))])
        keep = free[:, None] & (torch.arange(scores.shape[-1], device=dev) != self.end_id)[None, :]
        keep.scatter_(1, forced[:, None], (force_end | in_sep)[:, None] | keep.gather(1, forced[:, None]))
        # the SID so far: the tokens after </think> + separator, at most levels + 2 of them (longer: dead)
        width = self.trie.levels + 2
        j = torch.arange(width, device=dev)
        pos = (first + 1 + n_sep)[:, None] + j[None, :]
        sid_tokens = gen.gather(1, pos.clamp(max=max(steps - 1, 0))) if steps else \
            torch.zeros((rows, width), dtype=torch.long, device=dev)
        state = table.walk(sid_tokens, valid=pos < steps)
        allowed = table.answer_allowed[state] & in_sid[:, None]
        keep[:, table.columns] |= allowed
        return scores.masked_fill(~keep, -math.inf)


def answer_separator(tokenizer) -> list[int]:
    """The token ids between ``</think>`` and the SID, as the chat template writes them (and evaluation
    appends them): those of ``"\\n\\n"`` after ``</think>``."""
    ids = encode(tokenizer, [THINK_END + "\n\n"])[0]
    return ids[1:]


def prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int):
    """KV cache of every prompt but its last token, computed once and repeated for each beam.

    ``generate(num_beams=k)`` copies each prompt k times before its prefill, so the prompt (most
    of the work: ~90 tokens against 4 SID steps) would be encoded k times. Handing generate a
    cache that already holds prompt[:-1] for every beam makes its prefill one token long. Position
    ids follow generate's own rule for left padding (cumsum of the mask - 1)."""
    mask = attention_mask[:, :-1]
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out = model(input_ids=input_ids[:, :-1], attention_mask=mask, position_ids=position_ids,
                use_cache=True, logits_to_keep=1)
    cache = out.cache
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None  # a model that returns no reusable cache: generate encodes the prompt per beam
    cache.batch_repeat_interleave(num_beams)
    return cache


def sid_beam_settings(trie: SidTrie, prompt_len: int, end_id: int, pad_id: int, num_beams: int,
                      num_return: int) -> dict:
    """THE ``generate`` settings of the constrained SID beam search (the module docstring says why each),
    for any model that decodes a SID from position ``prompt_len`` of its (decoder) sequence."""
    return dict(
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, prompt_len, end_id)]),
        num_beams=num_beams,
        num_return_sequences=num_return,
        do_sample=False,
        max_new_tokens=trie.levels + 1,
        length_penalty=0.0,
        early_stopping="never",
        eos_token_id=end_id,
        pad_token_id=pad_id,
        output_scores=True,  # needed for sequences_scores, to drop padding beams
        return_dict_in_generate=True,
        use_cache=True,
    )


@torch.inference_mode()
def constrained_beam_search(
    model, prompt_ids: Sequence[Sequence[int]], trie: SidTrie, *, num_beams: int, num_return: int,
    end_id: int, pad_id: int, share_prompt: bool = True,
) -> list[list[tuple[tuple[int, ...], float]]]:
    """One batch: per prompt, the finished beams as ``(SID token ids, log-prob score)``, best first,
    padding beams removed (not deduplicated, not mapped to items: the raw output, for tests).

    ``share_prompt``: run the prompt through the model once per prompt, not once per beam (see
    ``prompt_cache``); same beams and scores, up to float rounding."""
    device = model_device(model)
    input_ids, attention_mask = left_pad(prompt_ids, pad_id, device)
    prompt_len = input_ids.shape[1]
    extra = {}
    if share_prompt and prompt_len > 1:
        cache = prompt_cache(model, input_ids, attention_mask, num_beams)
        if cache is not None:
            extra["cache"] = cache
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **extra,
                         **sid_beam_settings(trie, prompt_len, end_id, pad_id, num_beams, num_return))
    return finished_beams(out, prompt_len, len(prompt_ids), num_return, end_id)


def finished_beams(out, sid_start: int, rows: int, num_return: int,
                   end_id: int) -> list[list[tuple[tuple[int, ...], float]]]:
    """``generate``'s beams (``sid_beam_settings``) per input row as ``(SID token ids, score)``, best first,
    transformers' padding beams dropped; the SID starts at ``sid_start`` and ends before ``end_id``."""
    seqs = out.sequences[:, sid_start:].tolist()
    scores = out.sequences_scores.tolist()
    results: list[list[tuple[tuple[int, ...], float]]] = []
    for b in range(rows):
        beams = []
        for j in range(b * num_return, (b + 1) * num_return):
            if not math.isfinite(scores[j]) or scores[j] < PADDING_SCORE:
                continue
            gen = seqs[j]
            beams.append((tuple(gen[: gen.index(end_id)] if end_id in gen else gen), scores[j]))
        beams.sort(key=lambda x: -x[1])
        results.append(beams)
    return results


def _rank_items(beams: list[tuple[tuple[int, ...], float]], trie: SidTrie, num_return: int) -> list[str]:
    items: list[str] = []
    seen: set[str] = set()
    for sid, _score in beams:
        item = trie.item_of(sid)
        if item is None:
            raise RuntimeError(f"constrained decoding produced {sid}, which is no item's SID: a bug in the trie mask")
        if item not in seen:
            seen.add(item)
            items.append(item)
    return items[:num_return]


def _beam_batches(model, ids: list[list[int]], trie: SidTrie, cfg: DecodeConfig, tok_ids: TokenIds,
                  what: str = "beam search") -> list[list[str]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    out: list[list[str] | None] = [None] * len(ids)
    progress = _Progress(len(ids), what)
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start: start + cfg.batch_size]
        beams = constrained_beam_search(
            model, [ids[i] for i in chunk], trie, num_beams=cfg.num_beams, num_return=cfg.num_return,
            end_id=tok_ids.end, pad_id=tok_ids.pad,
        )
        for i, b in zip(chunk, beams):
            out[i] = _rank_items(b, trie, cfg.num_return)
        progress.update(len(chunk))
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# reasoning
# ---------------------------------------------------------------------------------------------
def with_suffix(prompt: str, suffix: str) -> str:
    """``prompt`` opening the think block the mode needs (``suffix``), unless it already ends so."""
    # A template that already opened (or closed) the think block is not given a second one.
    if prompt.endswith(suffix):
        return prompt
    if suffix == THINK_START and prompt.endswith(EMPTY_THINK):
        raise ValueError("thinking mode got a prompt that already ends with an empty think block")
    return prompt + suffix


@torch.inference_mode()
def think(model, tokenizer, prompt_texts: Sequence[str], cfg: DecodeConfig, *, sample: bool = False,
          n: int = 1) -> list[list[int]]:
    """Reasoning step of thinking mode: per prompt (``n`` times each, consecutive, when sampling),
    the token ids of ``prompt + "<think>\\n" + reasoning + "</think>\\n\\n"``, ready for the SID
    beam search. Greedy unless ``sample``; reasoning capped at ``max_think_tokens``."""
    tok_ids = token_ids(tokenizer)
    if tok_ids.think_end is None:
        raise ValueError(f"tokenizer has no single {THINK_END} token: thinking mode needs one (Qwen3 and MODEL=tiny have it)")
    if n > 1 and not sample:
        raise ValueError("think: n > 1 needs sample=True (greedy reasonings would all be equal)")
    ids = encode(tokenizer, [with_suffix(p, THINK_START) for p in prompt_texts])
    forced_end = encode(tokenizer, ["\n" + THINK_END])[0]
    after = encode(tokenizer, ["\n\n"])[0]
    stops = {tok_ids.think_end, tok_ids.end, tok_ids.pad}
    device = model_device(model)
    out: list[list[int] | None] = [None] * (len(ids) * n)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    progress = _Progress(len(ids), "reasoning")
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start: start + cfg.batch_size]
        input_ids, attention_mask = left_pad([ids[i] for i in chunk], tok_ids.pad, device)
        kwargs = dict(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
        gen = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=cfg.max_think_tokens,
            num_beams=1,
            num_return_sequences=n,
            eos_token_id=[tok_ids.think_end, tok_ids.end],
            pad_token_id=tok_ids.pad,
            use_cache=True,
            **kwargs,
        )[:, input_ids.shape[1]:].tolist()
        for j, g in enumerate(gen):
            i = chunk[j // n]
            cut = next((k for k, t in enumerate(g) if t in stops), len(g))
            if cut < len(g) and g[cut] == tok_ids.think_end:
                reasoning = g[: cut + 1]
            else:  # ran out of budget or tried to end the turn: close the think block ourselves
                reasoning = g[:cut] + forced_end
            out[i * n + j % n] = ids[i] + reasoning + after
        progress.update(len(chunk))
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_mode(model):
    """Decode in eval mode (no dropout; KV cache on even with gradient checkpointing), then put the
    model back as it was: GRPO evaluates its policy in the middle of training."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def recommend(model, tokenizer, prompt_texts: list[str], trie: SidTrie, cfg: DecodeConfig) -> list[list[str]]:
    """Per prompt: ranked item ids (best first), at most ``cfg.num_return``, only valid items, no
    duplicates. ``prompt_texts`` are chat-templated up to the assistant turn start
    (``add_generation_prompt=True``). For best-of-N use ``recommend_best_of_n``."""
    if cfg.best_of_n > 1:
        raise ValueError("recommend returns one ranking per prompt; with best_of_n > 1 call recommend_best_of_n")
    if not prompt_texts:
        return []
    tok_ids = token_ids(tokenizer)
    with _eval_mode(model):
        if cfg.mode == "direct":
            ids = encode(tokenizer, [with_suffix(p, EMPTY_THINK) for p in prompt_texts])
        else:
            ids = think(model, tokenizer, prompt_texts, cfg)
        return _beam_batches(model, ids, trie, cfg, tok_ids, what=f"recommend ({cfg.mode})")


def recommend_best_of_n(model, tokenizer, prompt_texts: list[str], trie: SidTrie,
                        cfg: DecodeConfig) -> list[list[list[str]]]:
    """Best-of-N (thinking mode): per prompt, ``cfg.best_of_n`` ranked lists, one per sampled
    reasoning (temperature ``cfg.temperature``). Score with ``metrics.best_rank``."""
    if cfg.mode != "thinking":
        raise ValueError("best-of-N samples reasonings: use mode='thinking'")
    if not prompt_texts:
        return []
    n = cfg.best_of_n
    tok_ids = token_ids(tokenizer)
    with _eval_mode(model):
        ids = think(model, tokenizer, prompt_texts, cfg, sample=True, n=n)
        flat = _beam_batches(model, ids, trie, cfg, tok_ids, what=f"recommend (best-of-{n})")
    return [flat[i * n:(i + 1) * n] for i in range(len(prompt_texts))]
