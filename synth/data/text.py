"""Cleaning rules for untrusted catalogue text.

Item text is data: it is parsed with ``ast.literal_eval`` when it is a Python list
literal (the layout MiniOneRec publishes), never evaluated, and never rendered as a
template anywhere in the toolkit.
"""
from __future__ import annotations

import ast
import html
import re
import unicodedata

_TAG_RE = re.compile(r"</?[A-Za-z!][^<>]{0,500}>")
# Comments, style and script blocks go whole: their content is markup, not text.
_BLOCK_RE = re.compile(r"<!--.*?(?:-->|$)|<(style|script)\b.*?(?:</\1\s*>|$)", re.S | re.I)
# Bare CSS rules left in some dumps: ".header {color:#000; font-size:24px}".
_CSS_RULE_RE = re.compile(
    r"(?:[#.@][\w\-]+|\b[\w\-]+)(?:\s*,\s*[#.@]?[\w\-]+)*\s*\{[^{}]{0,2000}:[^{}]{0,2000}\}"
)
_WS_RE = re.compile(r"\s+")
_BROKEN_LIST_RE = re.compile(r"\[(['\"]).*\1\]", re.S)
_LIST_SEP_RE = re.compile(r"['\"], ['\"]")
# Entities that lost their '&' in the source dumps, e.g. "1amp;quot;".
_BROKEN_ENTITY_RE = re.compile(
    r"(?<!&)(?:amp;)+(amp|quot|lt|gt|nbsp|apos|#\d{1,5});|(?<![&\w])(quot|lt|gt|nbsp|apos);"
)


def strip_html(text: str) -> str:
    """Remove tags and decode entities (twice: the dumps hold '&amp;quot;')."""
    text = _BROKEN_ENTITY_RE.sub(lambda m: "&" + (m.group(1) or m.group(2)) + ";", text)
    for _ in range(2):  # escaped markup ("&lt;b&gt;") is markup too
        text = _TAG_RE.sub(" ", _BLOCK_RE.sub(" ", text))
        text = html.unescape(text)
    return _CSS_RULE_RE.sub(" ", text)


def normalize_space(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def unlist(value) -> str:
    """Flatten a description/feature field: a list, a Python list literal, or plain text.

    MiniOneRec writes descriptions as ``repr(list_of_str)``; the raw 2018 metadata has
    real lists. Anything that does not parse as a literal list is kept as text.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(unlist(v) for v in value)
    text = str(value)
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            # Some dumps wrote repr() without escaping inner quotes ("['It's ...']"):
            # unwrap the list syntax by hand rather than keep brackets and quotes.
            return _LIST_SEP_RE.sub(" ", stripped[2:-2]) if _BROKEN_LIST_RE.fullmatch(stripped) else text
        if isinstance(parsed, (list, tuple)):
            return " ".join(unlist(v) for v in parsed)
    return text


def clean_text(value) -> str:
    """Description-like field -> one line of plain text."""
    text = unlist(value)
    text = unicodedata.normalize("NFC", text)
    text = strip_html(text)
    text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch)[0] != "C")
    return normalize_space(text)


def clean_title(value) -> str:
    """A title: plain text, no HTML, single spaces; the paper drops items whose title is empty."""
    return clean_text(value)


def clean_categories(value) -> list[str]:
    """Categories as a flat list of strings, the root ('Office Products') kept."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parsed = unlist(value) if value.strip().startswith("[") else value
        parts = re.split(r"\s*(?:>|\|)\s*", parsed) if isinstance(parsed, str) else parsed
        return [c for c in (clean_text(p) for p in parts) if c]
    out: list[str] = []
    for v in value:
        if isinstance(v, (list, tuple)):
            out.extend(clean_categories(list(v)))
        else:
            c = clean_text(v)
            if c:
                out.append(c)
    return out


def clean_list(value) -> list[str]:
    """A list-of-texts field (the metadata's ``feature`` bullets) -> cleaned, non-empty
    strings in order, repeats (ignoring case) dropped. Accepts a list (nested lists are
    flattened), a Python list literal (parsed, never evaluated) or one plain text."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        stripped = value.strip()
        parsed = None
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                parsed = ast.literal_eval(stripped)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
        values = list(parsed) if isinstance(parsed, (list, tuple)) else [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value]
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        for text in (clean_list(v) if isinstance(v, (list, tuple)) else [clean_text(v)]):
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                out.append(text)
    return out


def truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])
