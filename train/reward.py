"""THE GRPO reward (paper Eq. 6-8): a step-wise prefix reward on the SID plus lambda x a format reward.

Reading a completion
--------------------
The answer is the text after the LAST ``</think>``. Its *leading SID* is the run of adjacent SID
tokens it starts with (leading whitespace skipped). That is exactly what evaluation scores: the
SID is decoded right after ``</think>\\n\\n`` and the end token is forced after it, so prose before
the SID could never be evaluated and anything after it would be cut off. Hence:

- no ``</think>``                       -> unparsable: prefix 0, format 0;
- answer does not start with a SID      -> unparsable: prefix 0, format 0 (e.g. "The item is <a_1>...");
- SID then extra text / extra SID tokens -> prefix reward on the leading tokens, format 0
  (lambda pays for the clean form; the prefix signal is kept so a nearly right answer still
  teaches the model which item);
- fewer tokens than levels              -> prefix reward on what is there (k matching tokens),
  format 0 unless it is an existing item's SID (never, with one SID length per dataset);
- unknown (well-formed but no item) SID -> prefix reward vs the target, format 0.

Prefix reward, generalised to L levels
--------------------------------------
With k = number of leading tokens equal to the target's (compared position by position, stopping
at the first difference), ``r = 0`` if k = 0, else ``r = 2 ** (k - L)``: each further correct level
doubles the reward and a fully correct SID earns 1. For L = 3 this is the released code's
0.25 / 0.5 / 1.0; for L = 4 it is 0.125 / 0.25 / 0.5 / 1.0. Tokens beyond the target's length are
ignored by the prefix reward (they cost the format reward).

Format reward
-------------
1.0 when the completion has exactly one ``</think>`` and the text after it is exactly one existing
item's SID, up to whitespace and trailing end tokens (``<|im_end|>``, ``<|endoftext|>``, in case a
caller decodes without skipping special tokens); else 0.0. The total is
``prefix + format_weight * format`` with ``format_weight`` = lambda = 0.1 (paper).

Differences from the released reward (SIDReasoner ``direct_recommendation_StepRule_*.py``)
----------------------------------------------------------------------------------------
- It reads only the last 50 characters of the completion: a ``</think>`` further back (a long
  answer) makes the whole reward 0. We read the whole completion.
- It takes the first 3 ``<...>`` tokens anywhere after ``</think>`` (any text before/between them
  ignored, and any ``<...>`` counts, e.g. ``<|im_end|>``) and returns 0 unless there are 3: a
  2-token answer with both tokens right earns 0 there, 0.5 here. Its level count is fixed at 3.
- Its format term only checks that the first 3 tokens form an existing item's SID, so trailing
  text or extra tokens still earn lambda; ours demands the clean form. Otherwise identical values
  for clean answers ({0, 0.1, 0.25, 0.35, 0.5, 0.6, 1.0, 1.1} for L = 3), same lambda.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from synth.sid import SID_RUN_RE, sid_string, split_sid

THINK_END = "</think>"
# End markers that may trail an answer when special tokens are not skipped in decoding.
END_MARKERS = ("<|im_end|>", "<|endoftext|>")
FORMAT_WEIGHT = 0.1  # lambda of the paper's Eq. 8


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes a string, or for conversational data a list of messages
    ``[{"role": "assistant", "content": ...}]``. When a response parser already split the think
    block off (``reasoning_content`` present, no ``</think>`` left in ``content``), it is rebuilt
    so the same parser applies to both forms."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = []
        for msg in completion:
            if not isinstance(msg, dict):
                raise TypeError(f"conversational completion must be a list of message dicts, got {msg!r}")
            if msg.get("role", "assistant") != "assistant":
                continue
            content = msg.get("content") or ""
            if not isinstance(content, str):  # content as a list of typed parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            reasoning = msg.get("reasoning_content")
            if isinstance(reasoning, str) and THINK_END not in content:
                content = f"<think>\n{reasoning}\n{THINK_END}\n\n{content}"
            parts.append(content)
        return "".join(parts)
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def _answer_part(completion: str) -> str | None:
    """Text after the last ``</think>``, or None when there is none."""
    cut = completion.rfind(THINK_END)
    if cut < 0:
        return None
    return completion[cut + len(THINK_END):]


def _strip_end(answer: str) -> str:
    answer = answer.strip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if answer.endswith(marker):
                answer = answer[: -len(marker)].rstrip()
                changed = True
    return answer


def parse_answer(completion: Any) -> list[str] | None:
    """The SID tokens leading the answer after the last ``</think>``; None when unparsable (no
    ``</think>``, or the answer does not start with a SID token). Extra text after the SID is
    ignored here (the format reward sees it)."""
    answer = _answer_part(completion_text(completion))
    if answer is None:
        return None
    m = SID_RUN_RE.match(answer.lstrip())
    if not m:
        return None
    return split_sid(m.group(0))


def _target_tokens(target: Sequence[str] | str) -> list[str]:
    return split_sid(target) if isinstance(target, str) else list(target)


def prefix_reward(pred: Sequence[str] | None, target: Sequence[str] | str) -> float:
    """Step-wise prefix reward: 0 if the first token misses, else ``2 ** (k - L)`` for k matching
    leading tokens of an L-level target (L = 3: 0.25, 0.5, 1.0 as in the released code)."""
    target = _target_tokens(target)
    if not target:
        raise ValueError("prefix_reward: empty target SID")
    if not pred:
        return 0.0
    k = 0
    for p, t in zip(pred, target):
        if p != t:
            break
        k += 1
    return 0.0 if k == 0 else 2.0 ** (k - len(target))


def format_reward(completion: Any, valid_sids: set[str]) -> float:
    """1.0 if the completion has exactly one ``</think>`` and the answer after it is exactly one
    existing item's SID (up to whitespace and trailing end tokens), else 0.0."""
    text = completion_text(completion)
    if text.count(THINK_END) != 1:
        return 0.0
    answer = _strip_end(_answer_part(text) or "")
    if not SID_RUN_RE.fullmatch(answer):
        return 0.0
    return 1.0 if answer in valid_sids else 0.0


def total_reward(completion: Any, target: Sequence[str] | str, valid_sids: set[str],
                 format_weight: float = FORMAT_WEIGHT) -> float:
    """prefix + lambda x format: what GRPO optimises with ``reward_weights=[1, lambda]``."""
    return prefix_reward(parse_answer(completion), target) + format_weight * format_reward(completion, valid_sids)


def _normalise_valid(valid_sids: Iterable[str | Sequence[str]]) -> set[str]:
    out = set()
    for s in valid_sids:
        out.add(s if isinstance(s, str) else sid_string(s))
    if not out:
        raise ValueError("make_reward_funcs: no valid SIDs given")
    return out


def make_reward_funcs(valid_sids: Iterable[str], format_weight: float = FORMAT_WEIGHT) -> list[Callable]:
    """TRL GRPO reward functions ``[sid_prefix_reward, sid_format_reward]``.

    Each is ``f(prompts, completions, target_sid, **kwargs) -> list[float]``; ``target_sid`` is the
    dataset column (a SID string ``"<a_1><b_2><c_3>"`` or a token list per row). Pass
    ``reward_weights=[1.0, format_weight]`` to GRPOConfig (also available as each function's
    ``weight`` attribute); TRL then logs each component under its function name.
    """
    if format_weight < 0:
        raise ValueError(f"format_weight must be >= 0, got {format_weight}")
    valid = _normalise_valid(valid_sids)

    def _targets(target_sid, n: int) -> list:
        if target_sid is None:
            raise ValueError("GRPO reward needs the dataset column 'target_sid' (the target item's SID)")
        if len(target_sid) != n:
            raise ValueError(f"got {len(target_sid)} target_sid values for {n} completions")
        return list(target_sid)

    def sid_prefix_reward(prompts=None, completions=None, target_sid=None, **kwargs) -> list[float]:
        targets = _targets(target_sid, len(completions))
        return [prefix_reward(parse_answer(c), t) for c, t in zip(completions, targets)]

    def sid_format_reward(prompts=None, completions=None, target_sid=None, **kwargs) -> list[float]:
        return [format_reward(c, valid) for c in completions]

    sid_prefix_reward.weight = 1.0
    sid_format_reward.weight = float(format_weight)
    return [sid_prefix_reward, sid_format_reward]
