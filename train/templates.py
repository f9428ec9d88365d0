"""Prompt templates of the trainer: Jinja files under ``prompts/train/``, rendered in a sandbox.

Item text is untrusted data: it is passed to a template as a variable and never rendered as a
template itself, and only ever into the user turn (system turns are constant text).

Message structure, as in the paper's published alignment examples: each task family's instruction
(what the items are, what to answer with) is the SYSTEM turn and the question with its data (the
history, the title, the SID) the USER turn, in our own words: ``<task>.system.j2`` / ``<family>.user.j2``.
``rec_messages`` is THE recommendation prompt (system + user): align's SID-history -> SID task,
activate, GRPO and evaluation all use it, so the model is evaluated on the wording and structure it
was trained on (the released code used different wording at evaluation time; we do not). The corpus
texts keep a single constant user turn before them (``corpus.j2``): they answer no question.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from synth.sid import sid_string

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts" / "train"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # Qwen3's non-thinking form; the chat template renders it too

# Task name -> (system template or None, user template). The four directions of the paper's Appendix B,
# then the item tasks, then the corpus texts.
TASKS = {
    "sid2sid": ("sid_hist_to_sid.system.j2", "sid_hist.user.j2"),
    "title2title": ("title_hist_to_title.system.j2", "title_hist.user.j2"),
    "title2sid": ("title_hist_to_sid.system.j2", "title_hist.user.j2"),
    "sid2title": ("sid_hist_to_title.system.j2", "sid_hist.user.j2"),
    "item_title2sid": ("title_to_sid.system.j2", "title_to_sid.user.j2"),
    "item_sid2title": ("sid_to_title.system.j2", "sid_to_title.user.j2"),
    "corpus": (None, "corpus.j2"),
}


# Prompt sets: the same tasks and turns in other wording, a folder under prompts/train/ whose templates
# override the full set's (a template it lacks falls back). "compact": prompts/train/compact/README.md.
PROMPT_SETS = ("full", "compact")


@lru_cache(maxsize=len(PROMPT_SETS))
def _env(prompts: str = "full") -> SandboxedEnvironment:
    if prompts not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompts!r}; expected one of {', '.join(PROMPT_SETS)}")
    folders = ([str(PROMPTS_DIR / prompts)] if prompts != "full" else []) + [str(PROMPTS_DIR)]
    return SandboxedEnvironment(loader=FileSystemLoader(folders), undefined=StrictUndefined, autoescape=False)


def render(template: str, prompts: str = "full", **data) -> str:
    """Render ``<template>`` of the prompt set ``prompts`` with ``data`` (plain values only), stripped."""
    return _env(prompts).get_template(template).render(**data).strip()


def _sids(history: Sequence[Sequence[str] | str]) -> list[str]:
    return [h if isinstance(h, str) else sid_string(h) for h in history]


def prompt_messages(task: str, prompts: str = "full", **data) -> list[dict]:
    """The prompt of ``task`` in the prompt set ``prompts``: [system instruction, user question] ([user]
    for the corpus texts)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if "history" in data and task in ("sid2sid", "sid2title"):
        data["history"] = _sids(data["history"])
    if "sid" in data and not isinstance(data["sid"], str):
        data["sid"] = sid_string(data["sid"])
    system, user = TASKS[task]
    head = [{"role": "system", "content": render(system, prompts)}] if system else []
    return head + [{"role": "user", "content": render(user, prompts, **data)}]


def rec_messages(history_sids: Sequence[Sequence[str] | str], prompts: str = "full") -> list[dict]:
    """THE recommendation prompt as chat messages [system, user]: history as SIDs, oldest first."""
    return prompt_messages("sid2sid", prompts, history=history_sids)


def answer(text: str, reasoning: str = "") -> str:
    """An assistant answer: ``<think>\\n{reasoning}\\n</think>\\n\\n{text}`` (empty reasoning allowed)."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{text}"


def task_messages(task: str, response: str, reasoning: str = "", prompts: str = "full", **data) -> list[dict]:
    """A complete conversation for one training sample of ``task``: its prompt, then the answer."""
    return prompt_messages(task, prompts, **data) + [{"role": "assistant", "content": answer(response, reasoning)}]


def prompt_vocabulary_texts() -> list[str]:
    """The constant words of every training prompt: each system instruction, each user question (with
    its data left empty), the corpus lead-ins and the chat roles. The tiny tokenizer is trained on them
    (``train.model.build_tiny_tokenizer``), so an instruction costs a token per word, not per syllable."""
    texts = ["system\nuser\nassistant\n"]
    for prompts in PROMPT_SETS:
        for system, user in TASKS.values():
            if system:
                texts.append(render(system, prompts))
            texts.append(render(user, prompts, history=[], title="", sid="", kind="item"))
        texts.append(render("corpus.j2", prompts, kind="user"))
    return texts


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """Chat-templated text up to the assistant turn start (what decoding and GRPO continue)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
