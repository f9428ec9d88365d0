"""SASRec (Kang & McAuley, ICDM 2018) in its standard configuration, trained with full softmax.

The model: item embeddings (scaled by sqrt(d)) + learned positional embeddings, ``blocks``
pre-LayerNorm causal self-attention blocks with a ReLU feed-forward of width ``hidden``, a final
LayerNorm, and scores = dot product with the (shared) item embeddings. The loss is cross-entropy
over ALL items (no negative sampling), which is the variant that ranks well under the full-ranking
evaluation used here.

Data: a train row ``{history, target}`` is the left-padded history (last ``max_len`` items) and
the loss is taken at its last position only, against ``target``. The train split already holds
every prefix of a user's sequence as its own row (``[a] -> b``, ``[a, b] -> c``, ...), so this is
SASRec's every-position objective with each transition counted once; scoring every position of
every row would count the early transitions of long sequences again and again, and cost ~10x more.
Left padding puts the most recent item at the same position in every row, so learned positions
mean recency.

Evaluation ranks every item of the dataset for the last position of the history (history items
are not removed: the LLM's constrained decoding does not remove them either) and hands the top
``max(ks)`` to the shared metrics (see ``train.baselines``). Early stopping keeps the weights of
the epoch with the best ``monitor`` on valid; test is scored once, with those weights.

Deterministic for a given seed, device and thread count.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from synth.data.dataset import Dataset, Sample
from train.baselines import KS, TrainedBaselineConfig, baseline_record, evaluate_rankings
from train.config import setting
from train.metrics import slice_labels

log = logging.getLogger(__name__)


@dataclass
class SASRecConfig(TrainedBaselineConfig):
    hidden: int = setting(64, "embedding and feed-forward width")
    blocks: int = setting(2, "self-attention blocks")
    heads: int = setting(1, "attention heads")
    dropout: float = setting(0.3, "dropout rate")
    max_len: int = setting(10, "history window (the data's)")
    lr: float = setting(1e-3, "Adam learning rate")
    weight_decay: float = setting(0.0, "Adam weight decay")
    batch_size: int = setting(128, "training rows per step")
    patience: int = setting(10, "epochs without a better validation `monitor` before stopping")
    monitor: str = setting("ndcg@10", "validation metric that early stopping follows")
    eval_batch_size: int = setting(1024, "histories per scoring batch")


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, dim_feedforward=cfg.hidden, dropout=cfg.dropout,
            activation="relu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=cfg.hidden ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def attention_mask(self, seq: torch.Tensor) -> torch.Tensor:
        """True = may not attend: future positions, and padding except a position's own.

        Letting a padded query see itself keeps every softmax row non-empty (no NaN); real
        positions never see padding because padding lies only to their left and is masked.
        """
        n, length = seq.shape
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        pad_key = (seq == 0).unsqueeze(1).expand(n, length, length)
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = causal | (pad_key & ~eye)
        return mask.repeat_interleave(self.cfg.heads, dim=0)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices -> (B, L, hidden) states."""
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.cfg.hidden) + self.pos_emb(pos)
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        h = self.encoder(x, mask=self.attention_mask(seq))
        return self.norm(h)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """States -> a score for every item (padding row excluded): (..., n_items)."""
        return h @ self.item_emb.weight[1:].T


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def item_index(ds: Dataset) -> dict[str, int]:
    """item id -> 1-based index (0 is padding), in items.jsonl order."""
    return {iid: n for n, iid in enumerate(ds.items, 1)}


def encode_train(samples: list[Sample], index: dict[str, int], cfg: SASRecConfig):
    """Rows -> (histories (N, max_len) left-padded, targets (N,) as 0-based item indices)."""
    targets = torch.tensor([index[s.target] - 1 for s in samples], dtype=torch.long)
    return encode_histories(samples, index, cfg.max_len), targets


def encode_histories(samples: list[Sample], index: dict[str, int], max_len: int) -> torch.Tensor:
    out = torch.zeros(len(samples), max_len, dtype=torch.long)
    for row, s in enumerate(samples):
        hist = [index[i] for i in s.history][-max_len:]
        if hist:
            out[row, max_len - len(hist):] = torch.tensor(hist)
    return out


# ---------------------------------------------------------------------------------------------
# train / evaluate
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def recommend(model: SASRec, histories: torch.Tensor, item_ids: list[str], k: int,
              batch_size: int = 1024) -> list[list[str]]:
    """Top-k item ids (best first) for each history, over the full item set."""
    model.eval()
    dev = next(model.parameters()).device
    out: list[list[str]] = []
    for start in range(0, len(histories), batch_size):
        h = model(histories[start:start + batch_size].to(dev))[:, -1, :]
        top = torch.topk(model.scores(h), k, dim=-1).indices.cpu().tolist()
        out.extend([item_ids[j] for j in row] for row in top)
    return out


def evaluate(model: SASRec, samples: list[Sample], index: dict[str, int], item_ids: list[str],
             cfg: SASRecConfig, ks=KS, labels: list[tuple[str, ...]] | None = None) -> dict:
    """Metrics of ``model`` on ``samples``; with ``labels`` (their slices) the metrics per slice too."""
    hist = encode_histories(samples, index, cfg.max_len)
    ranked = recommend(model, hist, item_ids, max(ks), cfg.eval_batch_size)
    return evaluate_rankings([s.target for s in samples], ranked, ks, labels=labels)


def train(ds: Dataset, cfg: SASRecConfig) -> tuple[SASRec, dict]:
    """Train with early stopping on valid; returns the best model and the training log."""
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    index = item_index(ds)
    item_ids = list(ds.items)  # position j of the scores = item_ids[j]
    train_rows = list(ds.samples("train"))
    valid_rows = list(ds.samples("valid"))
    if not train_rows:
        raise ValueError(f"{ds.path}/train.jsonl has no rows: nothing to train SASRec on")
    inputs, labels = encode_train(train_rows, index, cfg)
    model = SASRec(len(item_ids), cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best, best_epoch, best_state, bad = -1.0, 0, None, 0
    t0 = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(inputs), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            x, y = inputs[idx].to(dev), labels[idx].to(dev)
            loss = nn.functional.cross_entropy(model.scores(model(x)[:, -1, :]), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        valid = evaluate(model, valid_rows, index, item_ids, cfg) if valid_rows else {}
        score = valid.get(cfg.monitor, -float(total / count))
        history.append({"epoch": epoch, "loss": round(total / count, 6), "valid": valid})
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        elapsed = time.time() - t0
        log.info(
            "sasrec epoch %d/%d  loss %.4f  valid %s %.4f (best %.4f @%d)  %.1f s/epoch, ETA <= %.0f s",
            epoch, cfg.epochs, total / count, cfg.monitor, score, best, best_epoch,
            elapsed / epoch, elapsed / epoch * (cfg.epochs - epoch),
        )
        if bad >= cfg.patience and epoch >= cfg.min_epochs:
            log.info("sasrec: no better valid %s for %d epochs: stopping", cfg.monitor, bad)
            break
    model.load_state_dict(best_state)
    return model, {"epochs_run": len(history), "best_epoch": best_epoch,
                   "best_valid": history[best_epoch - 1]["valid"], "history": history,
                   "train_time_s": round(time.time() - t0, 3)}


def run(ds: Dataset, cfg: SASRecConfig | None = None) -> dict:
    """Train, early-stop on valid, score test; returns the metrics.json record."""
    cfg = cfg or SASRecConfig()
    t0 = time.time()
    threads = torch.get_num_threads()
    try:
        model, log_ = train(ds, cfg)
        test = evaluate(model, list(ds.samples("test")), item_index(ds), list(ds.items), cfg,
                        labels=slice_labels(ds, "test"))
    finally:
        torch.set_num_threads(threads)  # the caller's setting, e.g. a test process
    log.info("sasrec on %s: test %s", ds.name, test)
    return baseline_record(ds, "sasrec", cfg, test, log_["best_valid"], t0, log_["train_time_s"],
                           training={k: v for k, v in log_.items() if k != "best_valid"},
                           parameters=sum(p.numel() for p in model.parameters()))
