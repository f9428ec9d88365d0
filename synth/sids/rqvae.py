"""A residual-quantised VAE (RQ-VAE) over item embeddings, as in the paper (Eq. 2-5).

Encoder MLP -> latent z; ``levels`` codebooks quantise z residually:
``c_l = argmin_k ||r_l - e^l_k||``, ``r_{l+1} = r_l - e^l_{c_l}`` with ``r_1 = z``;
the decoder reconstructs the input from ``z_hat = sum_l e^l_{c_l}`` (straight-through
gradient to the encoder). Loss = reconstruction MSE
+ sum_l ( ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2 ).

Codebooks are initialised by k-means on the residuals of the whole training set
(TIGER / MiniOneRec initialise on the first batch; our batch is usually all items).
Codes no item uses are restarted periodically from residuals that are far from their
current code, during the first part of training only, which raises codebook
utilisation; the last part trains with fixed assignments so the model settles.

Everything is deterministic under ``seed``: seeded generators for k-means and
restarts, a seeded shuffle for mini-batches, deterministic torch algorithms.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synth.io import atomic_write
from synth.settings import ConfigError


@dataclass
class RQVAEConfig:
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    beta: float = 0.25
    # Mini-batches of 512 reach a lower loss per second than full batches on CPU
    # (Office: recon 0.44 in 120 epochs vs 0.48 in 400 full-batch epochs).
    epochs: int = 120
    batch_size: int = 512  # >= number of items means full-batch training
    lr: float = 1e-3
    weight_decay: float = 0.0
    kmeans_iters: int = 30
    restart_every: int = 5  # epochs between dead-code restarts; 0 turns them off
    restart_until: float = 0.75  # fraction of epochs after which codebooks are not restarted
    seed: int = 42
    device: str = "cpu"
    # The matrices are small: one CPU thread is faster than two (bench/README.md) and gives
    # the same numbers.
    threads: int = 1
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ConfigError(f"levels must be >= 1, got {self.levels}")
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them, none after the last (as MiniOneRec's MLPLayers)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [N, K] between rows of x and rows of c."""
    return (x * x).sum(1, keepdim=True) + (c * c).sum(1)[None, :] - 2.0 * x @ c.T


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations; deterministic given ``gen``.

    With fewer distinct points than k, the extra centres are copies of points (they
    start dead and are restarted during training).
    """
    n = x.shape[0]
    centers = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=gen).item())
    centers[0] = x[first]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            idx = int(torch.randint(n, (1,), generator=gen).item())
        else:
            idx = int(torch.multinomial((d2 / total).cpu(), 1, generator=gen).item())
        centers[j] = x[idx]
        d2 = torch.minimum(d2, ((x - centers[j]) ** 2).sum(1))
    for _ in range(iters):
        # one-hot matmul instead of index_add_/bincount: deterministic on GPUs too
        onehot = F.one_hot(sq_dist(x, centers).argmin(1), k).to(x.dtype)
        sums = onehot.T @ x
        counts = onehot.sum(0)
        moved = counts > 0
        new = centers.clone()
        new[moved] = sums[moved] / counts[moved, None]
        if torch.allclose(new, centers):
            break
        centers = new
    return centers


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        dims = [in_dim, *cfg.hidden, cfg.latent_dim]
        self.encoder = _mlp(dims)
        self.decoder = _mlp(dims[::-1])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.zeros(cfg.codebook_size, cfg.latent_dim)) for _ in range(cfg.levels)]
        )
        self.beta = cfg.beta
        # Inputs are standardised per dimension: sentence embeddings are unit-norm with
        # tiny coordinates, which would make the reconstruction term vanish.
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def quantize(self, z: torch.Tensor):
        """-> (z_hat straight-through, codes [N, L], quantisation loss, residuals per level)."""
        r = z
        z_q = torch.zeros_like(z)
        codes, residuals = [], []
        qloss = z.new_zeros(())
        for cb in self.codebooks:
            residuals.append(r)
            idx = sq_dist(r.detach(), cb.detach()).argmin(1)
            e = cb[idx]
            qloss = qloss + F.mse_loss(e, r.detach()) + self.beta * F.mse_loss(r, e.detach())
            z_q = z_q + e
            codes.append(idx)
            r = r - e
        z_hat = z + (z_q - z).detach()
        return z_hat, torch.stack(codes, 1), qloss, residuals

    def forward(self, x: torch.Tensor):
        z = self.encoder(self.normalize(x))
        z_hat, codes, qloss, _ = self.quantize(z)
        recon = F.mse_loss(self.decoder(z_hat), self.normalize(x))
        return recon, qloss, codes

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, gen: torch.Generator) -> None:
        r = self.encoder(self.normalize(x))
        for cb in self.codebooks:
            cb.data.copy_(kmeans(r, cb.shape[0], iters, gen))
            r = r - cb[sq_dist(r, cb).argmin(1)]

    @torch.no_grad()
    def codes_and_last_distances(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Codes [N, L] and the squared distance of every item's last residual to every
        last-level code [N, K]: what collision resolution needs to pick a free code."""
        z = self.encoder(self.normalize(x))
        _, codes, _, residuals = self.quantize(z)
        last = sq_dist(residuals[-1], self.codebooks[-1])
        return codes.cpu().numpy().astype(np.int64), last.cpu().numpy().astype(np.float64)


@contextlib.contextmanager
def deterministic(seed: int):
    """Seed everything and switch torch to deterministic kernels for the block."""
    prev = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


@torch.no_grad()
def restart_dead_codes(
    model: RQVAE, x: torch.Tensor, gen: torch.Generator, opt: torch.optim.Optimizer
) -> list[int]:
    """Move every unused code onto a residual of its level, sampled with probability
    proportional to that residual's quantisation error (k-means++ style), level by
    level so later levels see the updated residuals. Returns restarts per level."""
    restarted = []
    r = model.encoder(model.normalize(x))
    for cb in model.codebooks:
        d = sq_dist(r, cb)
        err, idx = d.min(1)
        used = torch.zeros(cb.shape[0], dtype=torch.bool, device=cb.device)
        used[idx] = True
        dead = torch.nonzero(~used).flatten()
        if len(dead):
            w = err.clamp_min(0).cpu().double()
            if float(w.sum()) <= 0:
                w = torch.ones_like(w)
            n_pick = min(len(dead), int((w > 0).sum()))
            picks = torch.multinomial(w, n_pick, replacement=False, generator=gen)
            dead = dead[:n_pick]
            cb.data[dead] = r[picks.to(r.device)]
            state = opt.state.get(cb, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead] = 0
        restarted.append(int(len(dead)))
        r = r - cb[sq_dist(r, cb).argmin(1)]
    return restarted


def train_rqvae(embeddings: np.ndarray, cfg: RQVAEConfig) -> tuple[RQVAE, dict]:
    """Train on all rows of ``embeddings``; returns the model and a training summary."""
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"need a [N, D] embedding matrix with N >= 2, got shape {embeddings.shape}")
    device = torch.device(cfg.device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        return _train(embeddings, cfg, device)
    finally:
        torch.set_num_threads(prev_threads)


def _train(embeddings: np.ndarray, cfg: RQVAEConfig, device: torch.device) -> tuple[RQVAE, dict]:
    with deterministic(cfg.seed):
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
        model = RQVAE(x.shape[1], cfg).to(device)
        model.mean.copy_(x.mean(0))
        model.std.copy_(x.std(0).clamp_min(1e-6))
        model.init_codebooks(x, cfg.kmeans_iters, gen)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = x.shape[0]
        bs = min(cfg.batch_size, n)
        restart_stop = int(cfg.epochs * cfg.restart_until)
        history: list[dict] = []
        total_restarts = [0] * cfg.levels
        t0 = time.time()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen).to(device) if bs < n else None
            sums = np.zeros(2)
            for start in range(0, n, bs):
                xb = x if order is None else x[order[start : start + bs]]
                recon, qloss, _ = model(xb)
                loss = recon + qloss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += np.array([recon.item(), qloss.item()]) * len(xb) / n
            if cfg.restart_every and epoch % cfg.restart_every == 0 and epoch <= restart_stop:
                for lv, k in enumerate(restart_dead_codes(model, x, gen, opt)):
                    total_restarts[lv] += k
            if epoch == 1 or epoch % cfg.log_every == 0 or epoch == cfg.epochs:
                rate = epoch / max(time.time() - t0, 1e-9)
                history.append({"epoch": epoch, "recon": float(sums[0]), "quant": float(sums[1])})
                print(
                    f"rqvae epoch {epoch}/{cfg.epochs}  recon {sums[0]:.4f}  quant {sums[1]:.4f}"
                    f"  {rate:.1f} epochs/s  ETA {(cfg.epochs - epoch) / rate:.0f}s",
                    file=sys.stderr,
                )
        model.eval()
        with torch.no_grad():
            recon, qloss, _ = model(x)
    summary = {
        "final_loss": float(recon + qloss),
        "final_recon_loss": float(recon),
        "final_quant_loss": float(qloss),
        "first_epoch": history[0],
        "history": history,
        "dead_code_restarts_per_level": total_restarts,
        "train_seconds": round(time.time() - t0, 2),
        "config": asdict(cfg),
    }
    return model, summary


def save_model(model: RQVAE, cfg: RQVAEConfig, path, extra: dict | None = None) -> None:
    """Weights, config and input size (plus ``extra``), loadable with ``load_model``."""
    with atomic_write(path, "wb") as f:
        torch.save(
            {"state_dict": model.state_dict(), "config": asdict(cfg),
             "in_dim": int(model.mean.shape[0]), **(extra or {})},
            f,
        )


def load_model(path, map_location: str = "cpu") -> RQVAE:
    blob = torch.load(path, map_location=map_location, weights_only=True)
    cfg = RQVAEConfig(**blob["config"])
    model = RQVAE(blob["in_dim"], cfg)
    model.load_state_dict(blob["state_dict"])
    return model.eval()
