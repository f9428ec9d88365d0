"""The Semantic ID format, in one place.

A SID is a short sequence of level tokens, one per RQ-VAE level:
``<a_12><b_7><c_201>``. Level ``k`` (0-based) uses the letter ``chr(ord('a') + k)``
and a code index. Every other module imports its parsing and formatting from here.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"

# One SID token: "<a_12>". Used both for parsing and for finding SID-shaped text.
TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")
# A run of one or more adjacent SID tokens: a whole SID as it appears in text.
SID_RUN_RE = re.compile(r"(?:<[a-z]_\d+>)+")


def level_token(level: int, code: int) -> str:
    """The token of code ``code`` at level ``level`` (0-based): level_token(1, 7) == '<b_7>'."""
    if not 0 <= level < len(LEVEL_LETTERS):
        raise ValueError(f"SID level {level} out of range 0..{len(LEVEL_LETTERS) - 1}")
    if code < 0:
        raise ValueError(f"SID code must be >= 0, got {code}")
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def tokens_from_codes(codes: Sequence[int]) -> list[str]:
    """[12, 7, 201] -> ['<a_12>', '<b_7>', '<c_201>']."""
    return [level_token(level, int(code)) for level, code in enumerate(codes)]


def sid_string(tokens: Sequence[str]) -> str:
    """['<a_12>', '<b_7>'] -> '<a_12><b_7>'."""
    return "".join(tokens)


def split_sid(sid: str) -> list[str]:
    """'<a_12><b_7>' -> ['<a_12>', '<b_7>']; raises ValueError on anything that is not a SID."""
    if not SID_RUN_RE.fullmatch(sid or ""):
        raise ValueError(f"not a Semantic ID: {sid!r} (expected tokens like <a_12><b_7><c_201>)")
    return [m.group(0) for m in TOKEN_RE.finditer(sid)]


def is_well_formed(tokens: Sequence[str]) -> bool:
    """True when the tokens go a, b, c, ... in order, one per level."""
    for level, tok in enumerate(tokens):
        m = TOKEN_RE.fullmatch(tok)
        if not m or m.group(1) != LEVEL_LETTERS[level]:
            return False
    return len(tokens) > 0


def find_sids(text: str) -> list[str]:
    """Every SID-shaped run of tokens in ``text``, as strings, in order of appearance."""
    return SID_RUN_RE.findall(text or "")


def vocabulary(levels: int, codebook_size: int) -> list[str]:
    """Every SID token a model may need: levels x codebook_size tokens."""
    return [level_token(level, code) for level in range(levels) for code in range(codebook_size)]


def vocabulary_of(sids: Iterable[Sequence[str]]) -> list[str]:
    """The distinct tokens used by a SID map, sorted by level then code."""
    seen = {tok for sid in sids for tok in sid}

    def key(tok: str) -> tuple[int, int]:
        m = TOKEN_RE.fullmatch(tok)
        assert m, tok
        return LEVEL_LETTERS.index(m.group(1)), int(m.group(2))

    return sorted(seen, key=key)
