"""The teacher calls of the two flows, one ``Step`` each: render -> call -> check.

A step is what one call needs besides the transport:

- ``name``: its prompt, ``prompts/synth/<name>.{system,user}.j2``, whose hash enters the
  cache key and the manifest;
- ``check(answer, context)``: what the answer is worth, as a ``Checked``: the value the flow
  goes on with, or the problems (reason codes, the first one reported) and the text that
  ``rejected.jsonl`` keeps;
- ``rule(context)``: the rule-based baseline's answer (TEACHER=metadata,
  ``synth.metadata_teacher``), computed from the same template context: no request.

``Engine.run_step`` runs every step the same way: render the messages, draw an answer (the
teacher's, from the cache when it is there, or the rule's), treat an answer cut off at
``max_tokens`` as the problem ``truncated``, check it, draw again with a new sample index up
to ``max_samples`` times, then reject the record at this step with the last draw's reason.

The flows, two steps each (a record's second step sees the first one's value):

- item: ``item_analysis`` (JSON insights, parsed and schema-checked) ->
  ``item_integration`` (one paragraph; SID-only: the item's own SID, no unknown SID, no title);
- user: ``user_reasoning`` (blind: nothing of the held-out next item, which activation
  reuses as the thinking before that item's SID; and SID-only: no unknown SID, no catalogue
  title) -> ``user_narrative`` (one paragraph that recites the history and ends by
  recommending the next item: SID-only with every history SID *and* the target's SID; no
  leak check, naming the target is its point, as in the paper's published example).

Reason codes a user record can end with (``synth.checks``; the first problem is reported):
the reasoning ``empty_after_cleaning``, ``leak_sid``, ``leak_title`` (the target, by SID,
title, fragment, paraphrase or model number), ``unknown_sid``, ``title_in_text`` (another
catalogue title); the narrative ``empty``, ``list``, ``missing_sid`` (a history SID or the
target's SID is absent), ``unknown_sid``, ``title_in_text``; either ``truncated``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from synth.checks import Catalog
from synth.metadata_teacher import RULES
from synth.prompts import OutputFormatError, PromptSet, clean_generation, paragraph_problems

TRUNCATED_REASON = "truncated"


@dataclass(frozen=True)
class Checked:
    """One answer, checked: ``value`` when ``problems`` is empty, else why not."""

    value: Any = None
    problems: tuple[str, ...] = ()
    text: str = ""  # what rejected.jsonl shows of a rejected answer


TRUNCATED = Checked(problems=(TRUNCATED_REASON,))


@dataclass(frozen=True)
class Step:
    name: str
    check: Callable[[str, dict], Checked]
    rule: Callable[[dict], str]


@dataclass(frozen=True)
class Steps:
    """The four steps of a run, their checks bound to its prompts and catalogue."""

    item_analysis: Step
    item_integration: Step
    user_reasoning: Step
    user_narrative: Step


def make_steps(prompts: PromptSet, catalog: Catalog) -> Steps:
    def step(name: str, check: Callable[[str, dict], Checked]) -> Step:
        return Step(name, check, functools.partial(RULES[name], catalog=catalog))

    def analysis(answer: str, ctx: dict) -> Checked:
        try:
            return Checked(prompts.parse_item_analysis(answer))
        except OutputFormatError as e:
            return Checked(problems=(e.reason or "bad_json",), text=answer)

    def integration(answer: str, ctx: dict) -> Checked:
        text = clean_generation(answer)
        return _paragraph(text, paragraph_problems(text) + catalog.sid_only_problems(text, [ctx["item_id"]]))

    def reasoning(answer: str, ctx: dict) -> Checked:
        # The target's own problems first (leak_sid, leak_title name what went wrong more
        # precisely than title_in_text, which the target's title also raises), then the
        # SID-only problems of any text that names items: unknown SIDs, other titles.
        text = clean_generation(answer)
        if not text.strip():
            return Checked(problems=("empty_after_cleaning",), text=text)
        return _paragraph(text, catalog.leak_problems(text, ctx["target"]["item_id"], _history(ctx))
                          + catalog.sid_only_problems(text, []))

    def narrative(answer: str, ctx: dict) -> Checked:
        text = clean_generation(answer)
        required = [*_history(ctx), ctx["target"]["item_id"]]
        return _paragraph(text, paragraph_problems(text) + catalog.sid_only_problems(text, required))

    return Steps(step("item_analysis", analysis), step("item_integration", integration),
                 step("user_reasoning", reasoning), step("user_narrative", narrative))


def _history(ctx: dict) -> list[str]:
    """The item ids of a user context's history, oldest first."""
    return [h["item_id"] for h in ctx["history"]]


def _paragraph(text: str, problems: list[str]) -> Checked:
    return Checked(text, tuple(problems), text)
