"""Prompt templates of the trainer: Jinja files under ``prompts/train/``, rendered in a sandbox.

Item text is untrusted data: it is passed to a template as a variable and never rendered as a
template itself. ``rec_messages`` is THE recommendation prompt: align's SID-history -> SID task,
activate, GRPO and evaluation all use it, so the model is evaluated on the wording it was trained on
(the released code used different wording at evaluation time; we do not).
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

# Task name -> template file. The four directions of the paper's Appendix B, then the item tasks.
TASKS = {
    "sid2sid": "rec.j2",
    "title2title": "title_hist_to_title.j2",
    "title2sid": "title_hist_to_sid.j2",
    "sid2title": "sid_hist_to_title.j2",
    "item_title2sid": "title_to_sid.j2",
    "item_sid2title": "sid_to_title.j2",
    "corpus": "corpus.j2",
}


@lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(PROMPTS_DIR)), undefined=StrictUndefined, autoescape=False
    )


def render(template: str, **data) -> str:
    """Render ``prompts/train/<template>`` with ``data`` (plain values only), stripped."""
    return _env().get_template(template).render(**data).strip()


def _sids(history: Sequence[Sequence[str] | str]) -> list[str]:
    return [h if isinstance(h, str) else sid_string(h) for h in history]


def rec_prompt(history_sids: Sequence[Sequence[str] | str]) -> str:
    return render(TASKS["sid2sid"], history=_sids(history_sids))


def rec_messages(history_sids: Sequence[Sequence[str] | str]) -> list[dict]:
    """THE recommendation prompt as chat messages (user turn only): history as SIDs, oldest first."""
    return [{"role": "user", "content": rec_prompt(history_sids)}]


def answer(text: str, reasoning: str = "") -> str:
    """An assistant answer: ``<think>\\n{reasoning}\\n</think>\\n\\n{text}`` (empty reasoning allowed)."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{text}"


def task_messages(task: str, response: str, reasoning: str = "", **data) -> list[dict]:
    """A complete [user, assistant] conversation for one training sample of ``task``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if "history" in data and task in ("sid2sid", "sid2title"):
        data["history"] = _sids(data["history"])
    if "sid" in data and not isinstance(data["sid"], str):
        data["sid"] = sid_string(data["sid"])
    return [
        {"role": "user", "content": render(TASKS[task], **data)},
        {"role": "assistant", "content": answer(response, reasoning)},
    ]


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """Chat-templated text up to the assistant turn start (what decoding and GRPO continue)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
