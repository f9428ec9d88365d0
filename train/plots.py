"""PNG plots of the training curves (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from synth.io import read_json  # noqa: E402


def _series(history: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of the entries that carry ``key``; x is ``x`` (else the epoch, else the position)."""
    pts = [(h.get(x, h.get("epoch", i)), h[key]) for i, h in enumerate(history) if key in h]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_sft(log_path: str | Path, out_png: str | Path, title: str) -> Path | None:
    log_path = Path(log_path)
    if not log_path.exists():
        return None
    hist = read_json(log_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train loss"), ("eval_loss", "valid SID->SID loss")):
        xs, ys = _series(hist, key, x="epoch")
        if ys:
            ax.plot(xs, ys, marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_grpo(log_path: str | Path, out_png: str | Path, title: str = "GRPO") -> Path | None:
    """Four panels: rewards, reasoning length, KL, validation Recall@10 with reasoning length (Fig. 6)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return None
    hist = read_json(log_path)
    # TRL's logs do not carry the step; rebuild it by counting reward entries, and place the
    # validation points (which do carry it) on the same axis.
    steps, k = [], 0
    for h in hist:
        if "reward" in h:
            k += 1
            steps.append({**h, "step": k})
        elif "val_recall@10" in h:
            steps.append(h)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0][0]
    for key, label in (("reward", "total"), ("rewards/sid_prefix_reward/mean", "prefix"),
                       ("rewards/sid_format_reward/mean", "format")):
        xs, ys = _series(steps, key)
        if ys:
            ax.plot(xs, ys, label=label)
    ax.set_title("mean reward")
    ax.legend()
    for ax, key, name in ((axes[0][1], "rewards/reasoning_tokens/mean", "mean reasoning length (tokens)"),
                          (axes[1][0], "kl", "KL to reference")):
        xs, ys = _series(steps, key)
        if ys:
            ax.plot(xs, ys)
        ax.set_title(name)
    ax = axes[1][1]
    xs, ys = _series(steps, "val_recall@10")
    if ys:
        ax.plot(xs, ys, marker="o", color="tab:green", label="valid Recall@10")
    ax.set_title("valid Recall@10 vs reasoning length")
    ax.set_xlabel("step")
    ax2 = ax.twinx()
    xs, ys = _series(steps, "rewards/reasoning_tokens/mean")
    if ys:
        ax2.plot(xs, ys, color="tab:orange", alpha=0.6, label="reasoning tokens")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_run(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    out = []
    for stage in ("align", "activate"):
        p = plot_sft(run_dir / stage / "log_history.json", run_dir / f"{stage}_loss.png", f"{stage} SFT")
        if p:
            out.append(p)
    p = plot_grpo(run_dir / "grpo" / "log_history.json", run_dir / "grpo_curves.png")
    if p:
        out.append(p)
    return out
