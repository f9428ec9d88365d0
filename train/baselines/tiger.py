"""TIGER (Rajput et al., NeurIPS 2023): a small T5 encoder-decoder that generates the next item's SID.

The model: ``transformers``' own ``T5ForConditionalGeneration`` built from a ``T5Config`` (random
initialisation, nothing downloaded), with its own small vocabulary: ``<pad>`` (0, also the decoder
start), ``</s>`` (1), ``<unk>`` (2), then one id per SID token of the chosen SID map (``--sids``:
``Dataset.sid_set``), sorted by level then code. The paper's model has 4 encoder and 4 decoder layers
(d_model 128, 6 heads of 64, feed-forward 1024, dropout 0.1); the defaults here keep d_model 128 and
dropout 0.1 but use 2 + 2 layers, 4 heads of 32 and feed-forward 512, which on Office reached the same
validation Recall@10 as 4 + 4 layers (0.174 against 0.164 on the 1,000-row slice, lr 1e-3) at half the
CPU time per epoch. The user-id token of the paper is left out.

Data: encoder input = the SID tokens of the history's most recent ``max_items`` items, oldest first,
then ``</s>`` (so an empty history still has one token); decoder target = the target's SID tokens,
then ``</s>``. The train split already holds every prefix of a user's sequence as its own row, so
each transition is one training example. Cross-entropy (teacher forcing), AdamW, linear warm-up; a
batch holds rows of equal history length (``length_batches``: Office's train histories average 3 of 10
items, so random batches would be two-thirds padding).

Decoding: constrained beam search (``num_beams`` beams, as many returned) with
``model.generate`` and THE trie of valid SIDs (``train.trie.SidTrie``, over TIGER's own token ids)
masked by THE trie processor of the LLM's decoding (``train.decoding.TrieLogitsProcessor``): the
decoder sequence holds only the start token before the SID, so its ``prompt_len`` is 1. Every beam is
an item's SID by construction (a beam that is not raises). Hits are counted by SID exactly as the
LLM's evaluation does (``rank_of(target, ranked, by=trie.sequences)``), so with the reference SIDs
(some items share a SID) TIGER and the LLM are scored alike.

Early stopping: every ``eval_every`` epochs, Recall@10 (``monitor``) on a fixed, evenly spaced slice
of ``val_rows`` validation rows; training stops after ``patience`` evaluations without a better one
and the best weights score the test split once (with the ``slices`` of ``train.metrics``).
Deterministic for a given seed, device and thread count.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from synth.data.dataset import Dataset, DatasetError, Sample, SidSet
from synth.settings import ConfigError
from synth.sid import is_well_formed, vocabulary_of
from train.baselines import KS, TrainedBaselineConfig, baseline_record
from train.config import setting
from train.trie import SidTrie

log = logging.getLogger(__name__)

PAD, EOS, UNK = 0, 1, 2
SPECIAL = ("<pad>", "</s>", "<unk>")


@dataclass
class TigerConfig(TrainedBaselineConfig):
    d_model: int = setting(128, "model width (T5 d_model)")
    num_layers: int = setting(2, "encoder layers")
    num_decoder_layers: int = setting(2, "decoder layers")
    num_heads: int = setting(4, "attention heads")
    d_kv: int = setting(32, "width of one attention head")
    d_ff: int = setting(512, "feed-forward width")
    dropout: float = setting(0.1, "dropout rate")
    max_items: int = setting(10, "history items in the encoder input (the most recent; the data's window)")
    lr: float = setting(1e-3, "AdamW learning rate (peak, after warm-up)")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup_steps: int = setting(200, "steps of linear learning-rate warm-up")
    batch_size: int = setting(256, "training rows per step")
    eval_every: int = setting(5, "epochs between validation evaluations")
    patience: int = setting(3, "validation evaluations without a better `monitor` before stopping")
    monitor: str = setting("recall@10", "validation metric that early stopping follows")
    val_rows: int = setting(1000, "validation rows scored at each evaluation (evenly spaced; 0 = all)")
    num_beams: int = setting(10, "beams of the constrained beam search (= items returned)")
    eval_batch_size: int = setting(256, "histories per beam-search batch")


# ---------------------------------------------------------------------------------------------
# vocabulary and data
# ---------------------------------------------------------------------------------------------
class Vocab:
    """TIGER's token ids: the special tokens, then one id per SID token of ``sids``."""

    def __init__(self, sids: dict[str, Sequence[str]], source: str = "the SID map"):
        for item_id, toks in sids.items():
            if not is_well_formed(list(toks)):
                raise DatasetError(f"{source}: item {item_id!r} has {list(toks)!r}, which is not a well-formed SID "
                                   "(expected tokens <a_..><b_..>... in order)")
        self.tokens: list[str] = [*SPECIAL, *vocabulary_of(sids.values())]
        self.ids: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.item_ids: dict[str, list[int]] = {str(k): [self.ids[t] for t in v] for k, v in sids.items()}

    def __len__(self) -> int:
        return len(self.tokens)

    def trie(self) -> SidTrie:
        """THE trie of valid SIDs over these ids."""
        return SidTrie(self.item_ids)

    def encode_history(self, history: Sequence[str], max_items: int) -> list[int]:
        items = list(history)[-max_items:] if max_items > 0 else []
        return [t for iid in items for t in self.item_ids[iid]] + [EOS]

    def encode_target(self, target: str) -> list[int]:
        return [*self.item_ids[target], EOS]


def check_coverage(ds: Dataset, vocab: Vocab, source: str) -> None:
    """Every item of the dataset must have a SID: TIGER reads histories and targets as SIDs."""
    missing = [iid for iid in ds.items if iid not in vocab.item_ids]
    if missing:
        raise DatasetError(f"{source} has no SID for {len(missing)} item(s) of {ds.path}/items.jsonl "
                           f"(e.g. {missing[0]!r}): use the SID map made for this dataset (`make sids`)")


def pad_right(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out


def even_slice(rows: list, n: int) -> list:
    """``n`` rows spread evenly over ``rows`` (all of them when ``n`` is 0 or at least their number)."""
    if n <= 0 or n >= len(rows):
        return list(rows)
    return [rows[(i * len(rows)) // n] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def build_model(vocab_size: int, cfg: TigerConfig):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers, num_heads=cfg.num_heads, dropout_rate=cfg.dropout,
        feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        tie_word_embeddings=True, use_cache=True,
    )
    return T5ForConditionalGeneration(config)


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def beam_search(model, histories: Sequence[Sequence[int]], trie: SidTrie, num_beams: int,
                num_return: int | None = None) -> list[list[tuple[tuple[int, ...], float]]]:
    """One batch of encoder inputs -> per row, the finished beams as ``(SID token ids, score)``, best first,
    transformers' padding beams dropped (as ``train.decoding.constrained_beam_search`` does)."""
    from train.decoding import finished_beams, sid_beam_settings

    num_return = num_return or num_beams
    dev = next(model.parameters()).device
    input_ids = pad_right(histories, PAD).to(dev)
    # the decoder sequence is [start, SID..., </s>]: the SID starts at position 1
    out = model.generate(input_ids=input_ids, attention_mask=(input_ids != PAD).long(), decoder_start_token_id=PAD,
                         **sid_beam_settings(trie, 1, EOS, PAD, num_beams, num_return))
    return finished_beams(out, 1, len(histories), num_return, EOS)


def recommend(model, vocab: Vocab, trie: SidTrie, samples: Sequence[Sample], cfg: TigerConfig,
              what: str = "tiger beam search") -> list[list[str]]:
    """Per sample: ranked item ids (best first, each once, at most ``num_beams``), only valid items (the
    beams mapped to items by the LLM's own rule, ``train.decoding._rank_items``: it raises on a beam
    that is no item's SID)."""
    from train.decoding import _rank_items

    was_training = model.training
    model.eval()
    inputs = [vocab.encode_history(s.history, cfg.max_items) for s in samples]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # similar lengths together
    out: list[list[str] | None] = [None] * len(inputs)
    t0 = last = time.monotonic()
    try:
        for start in range(0, len(order), cfg.eval_batch_size):
            chunk = order[start:start + cfg.eval_batch_size]
            for i, beams in zip(chunk, beam_search(model, [inputs[i] for i in chunk], trie, cfg.num_beams)):
                out[i] = _rank_items(beams, trie, cfg.num_beams)
            now = time.monotonic()
            done = min(start + cfg.eval_batch_size, len(order))
            if now - last >= 15 or (done == len(order) and now - t0 >= 15):
                last = now
                rate = done / max(now - t0, 1e-9)
                log.info("%s: %d/%d rows, %.1f rows/s, ETA %.0f s", what, done, len(order), rate,
                         (len(order) - done) / rate)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate(model, vocab: Vocab, trie: SidTrie, samples: Sequence[Sample], cfg: TigerConfig, ks=KS,
             labels: Sequence[Sequence[str]] | None = None) -> dict:
    """THE metrics of ``make eval`` (hit by SID), plus ``slices`` when ``labels`` (per sample) are given."""
    from train.metrics import rank_of, ranking_metrics, targets_sharing

    t0 = time.time()
    ranked = recommend(model, vocab, trie, samples, cfg)
    ranks = [rank_of(s.target, r, by=trie.sequences) for s, r in zip(samples, ranked, strict=True)]
    out = ranking_metrics(ranks, ks=ks)
    if labels is not None:
        from train.metrics import sliced_metrics

        out["slices"] = sliced_metrics(ranks, labels, ks=ks)
    out["targets_sharing_sid"] = targets_sharing([s.target for s in samples], trie.sequences)
    out["hit"] = "sid"
    out["wall_s"] = round(time.time() - t0, 1)
    return out


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def encode_rows(samples: Sequence[Sample], vocab: Vocab, cfg: TigerConfig):
    """(encoder inputs, attention masks, labels with -100 at padding) of the train rows."""
    enc = pad_right([vocab.encode_history(s.history, cfg.max_items) for s in samples], PAD)
    labels = pad_right([vocab.encode_target(s.target) for s in samples], -100)
    return enc, (enc != PAD).long(), labels


def length_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The row indices of one epoch in batches of rows of equal (or adjacent) length, so that little of a
    batch is padding (train histories are ~3 items of 10 on average): the rows in random order, stably
    sorted by length, cut into batches, the batches shuffled."""
    perm = torch.randperm(len(lengths), generator=gen)
    order = perm[torch.argsort(lengths[perm], stable=True)]
    chunks = torch.split(order, batch_size)
    return [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()]


def train(ds: Dataset, vocab: Vocab, trie: SidTrie, cfg: TigerConfig):
    """Train with early stopping on the validation slice; returns the best model and the training log."""
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    train_rows = list(ds.samples("train"))
    if not train_rows:
        raise DatasetError(f"{ds.path}/train.jsonl has no rows: nothing to train TIGER on")
    valid_rows = even_slice(list(ds.samples("valid")), cfg.val_rows)
    enc, mask, labels = encode_rows(train_rows, vocab, cfg)
    lengths = mask.sum(1)
    model = build_model(len(vocab), cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, cfg.warmup_steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    every = max(1, cfg.eval_every)
    history: list[dict] = []
    best, best_epoch, best_valid, best_state, bad = -math.inf, 0, {}, None, 0
    t0 = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for idx in length_batches(lengths, cfg.batch_size, gen):
            width = int(mask[idx].sum(1).max())  # rows are right-padded: drop the all-padding columns
            loss = model(input_ids=enc[idx, :width].to(dev), attention_mask=mask[idx, :width].to(dev),
                         labels=labels[idx].to(dev)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        entry = {"epoch": epoch, "loss": round(total / count, 6)}
        last = epoch == cfg.epochs
        if epoch % every == 0 or last:
            valid = evaluate(model, vocab, trie, valid_rows, cfg) if valid_rows else {}
            score = valid.get(cfg.monitor, -total / count)
            entry["valid"] = valid
            if score > best:
                best, best_epoch, best_valid, bad = score, epoch, valid, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        history.append(entry)
        elapsed = time.time() - t0
        shown = f"  valid {cfg.monitor} {score:.4f} (best {best:.4f} @{best_epoch})" if "valid" in entry else ""
        log.info("tiger epoch %d/%d  loss %.4f%s  %.1f s/epoch, ETA <= %.0f s", epoch, cfg.epochs, total / count,
                 shown, elapsed / epoch, elapsed / epoch * (cfg.epochs - epoch))
        if "valid" in entry and bad >= cfg.patience and epoch >= cfg.min_epochs:
            log.info("tiger: no better valid %s for %d evaluations: stopping", cfg.monitor, bad)
            break
    model.load_state_dict(best_state)
    return model, {"epochs_run": len(history), "best_epoch": best_epoch, "best_valid": best_valid,
                   "valid_rows": len(valid_rows), "history": history, "train_time_s": round(time.time() - t0, 3)}


def run(ds: Dataset, cfg: TigerConfig | None = None, sid_set: SidSet | None = None) -> dict:
    """Train, early-stop on the validation slice, score test; returns the metrics.json record."""
    from train.metrics import slice_labels

    cfg = cfg or TigerConfig()
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {cfg.device!r}: expected cpu or cuda")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    if cfg.num_beams < 1 or cfg.batch_size < 1 or cfg.eval_batch_size < 1 or cfg.max_items < 1:
        raise ConfigError("TIGER: num_beams, batch_size, eval_batch_size and max_items must be >= 1")
    monitors = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    if cfg.monitor not in monitors:
        raise ConfigError(f"--monitor {cfg.monitor!r}: expected one of {', '.join(monitors)}")
    sid_set = sid_set or ds.sid_set()
    source = f"{sid_set.path} (SIDs {sid_set.name!r})"
    vocab = Vocab(sid_set.load(), source)
    check_coverage(ds, vocab, source)
    trie = vocab.trie()
    t0 = time.time()
    threads = torch.get_num_threads()
    try:
        model, log_ = train(ds, vocab, trie, cfg)
        test_rows = list(ds.samples("test"))
        test = evaluate(model, vocab, trie, test_rows, cfg, labels=slice_labels(ds, "test"))
    finally:
        torch.set_num_threads(threads)  # the caller's setting, e.g. a test process
    log.info("tiger on %s (%s SIDs): test %s", ds.name, sid_set.name, test)
    return baseline_record(ds, "tiger", cfg, test, log_["best_valid"], t0, log_["train_time_s"], sid_set=sid_set,
                           training={k: v for k, v in log_.items() if k != "best_valid"},
                           parameters=sum(p.numel() for p in model.parameters()),
                           vocab={"size": len(vocab), "sid_tokens": len(vocab) - len(SPECIAL),
                                  "levels": trie.levels, "shared_sid_items": trie.collisions})
