"""TEACHER=metadata: the paper's rule-based baseline (Table 5). No LLM, deterministic, offline.

Each of the four steps (``synth.steps``) has a rule here that computes the step's answer
from the step's template context, so the rest of the pipeline (checks, dedup, corpus files)
runs unchanged and anywhere; nothing is rendered, sent or cached:

- item_analysis: JSON insights built from the brand, categories, the listing's feature
  bullets, description sentences and the most frequent description and feature words;
- item_integration: a paragraph "The item <SID> is a <kind> by <brand>. ..." that fuses
  those insights and never writes the title;
- user_reasoning: a first-person summary of the kinds and brands in the history, each
  item by SID; every word of the hidden next item's title is left out, so it cannot leak;
- user_narrative: recites the SID history, then the reasoning, and ends by recommending
  the next item by its SID (the narrative is an item-prediction text; the reasoning stays
  blind to that item).

Text taken from the description is kept only when it holds no run of three words of
the item's own title and none of its model numbers; given the run's ``Catalog``,
sentences holding any catalogue title fragment are dropped as well.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Callable

from synth.checks import STOPWORDS, normalize, segments

if TYPE_CHECKING:
    from synth.checks import Catalog

MAX_SENTENCES = 4       # description sentences kept in the refined description
MAX_SENTENCE_WORDS = 40
MAX_KEYWORDS = 8
MAX_FEATURES = 5        # key features in the insights (the prompt asks for 3-5)

_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_CODE_RE = re.compile(r"\d")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")
# Words frequent in listings that say nothing about an item.
_FILLER = frozenset(
    """product products item items use used using great new quality perfect ideal easy
    make makes made best also more most can will all one each any other like just well
    high features feature includes include including designed design provides help helps
    good available need needs set pack count size color colors inch inches""".split()
)


def metadata_answer(step: str, context: dict, catalog: "Catalog | None" = None) -> str:
    """What a teacher would answer for ``step`` given the template ``context``.

    JSON text for item_analysis; a SID-only paragraph for the other steps."""
    if step not in RULES:
        raise ValueError(f"unknown step {step!r} for the metadata teacher")
    return RULES[step](context, catalog)


# --- helpers -------------------------------------------------------------------------

def _title_words(title: str) -> set[str]:
    return set(normalize(title).split())


def _title_trigrams(title: str) -> set[tuple[str, ...]]:
    words = normalize(title).split()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def _codes(title: str) -> set[str]:
    return {w for w in normalize(title).split() if _CODE_RE.search(w) and len(w) >= 4}


def _safe(text: str, title: str, catalog: "Catalog | None") -> bool:
    """True when ``text`` holds no trace of ``title`` (and no catalogue title fragment)."""
    words = normalize(text).split()
    grams = _title_trigrams(title)
    if any(tuple(words[i:i + 3]) in grams for i in range(len(words) - 2)):
        return False
    if _codes(title) & set(words):
        return False
    if catalog is not None and catalog.title_hits(text):
        return False
    return True


def _sentences(description: str) -> list[str]:
    out = []
    for s in _SENTENCE_SPLIT_RE.split(description or ""):
        s = s.strip()
        n = len(s.split())
        # Very short bits are headings; very long ones are spec dumps or CSS.
        if (6 <= n <= MAX_SENTENCE_WORDS and len(s) <= 280 and s[-1:] in ".!?"
                and "{" not in s and "<" not in s):
            out.append(s)
    return out


def _features(features: list[str], title: str, catalog: "Catalog | None") -> list[str]:
    """The listing's feature bullets that can stand as key features: short enough, no markup
    left, and no trace of a title (the item's own or, given the catalogue, any other)."""
    out = []
    for f in features:
        f = " ".join(str(f).split()).rstrip(".!?;:,")
        n = len(f.split())
        if (2 <= n <= MAX_SENTENCE_WORDS and len(f) <= 280 and "{" not in f and "<" not in f
                and _safe(f, title, catalog)):
            out.append(f)
        if len(out) == MAX_FEATURES:
            break
    return out


def _keywords(text: str, exclude: set[str], k: int = MAX_KEYWORDS) -> list[str]:
    """The most frequent meaningful words, ties broken alphabetically (deterministic)."""
    counts = Counter(
        w for w in (m.group(0).casefold().replace("'", "") for m in _WORD_RE.finditer(text or ""))
        if len(w) >= 4 and w not in STOPWORDS and w not in _FILLER and w not in exclude
    )
    return [w for w, _c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def item_kind(title: str, brand: str = "") -> str:
    """The item's kind, as the head noun of its title: the last alphabetic word of the first
    title segment that has one besides the brand ("... Cross-Cut Paper and Credit Card
    Shredder" -> "shredder", "OOLY, Yummy ... Gel Pens (132-14)" -> "pens")."""
    brand_words = set(normalize(brand).split())
    for seg in segments(title):
        words = [w for w in seg if w.isalpha() and len(w) >= 3 and w not in brand_words
                 and w not in STOPWORDS]
        if words:
            return words[-1]
    return "product"


def _maker(brand: str, catalog: "Catalog | None") -> str:
    """The brand, unless it doubles as a title fragment (a brand named like a product)."""
    if not brand or (catalog is not None and catalog.title_hits(brand)):
        return "an unnamed maker"
    return brand


def _a(kind: str) -> str:
    """'shredder' -> 'a shredder', 'original' -> 'an original', 'pens' -> 'one of the pens'."""
    if kind.endswith("s") and not kind.endswith("ss"):
        return f"one of the {kind}"
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _join(words: list[str]) -> str:
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


# --- items ---------------------------------------------------------------------------

def _item_insights(ctx: dict, catalog: "Catalog | None") -> dict:
    title, brand = ctx.get("title", ""), ctx.get("brand", "")
    cats = [c for c in ctx.get("categories", []) if c]
    leaf = cats[-1] if cats else ""
    kind = item_kind(title, brand)
    maker = _maker(brand, catalog)
    sentences = [s for s in _sentences(ctx.get("description", "")) if _safe(s, title, catalog)]
    refined = [f"This item ({kind}) is made by {maker}" + (f" and listed under {leaf}." if leaf else ".")]
    refined += sentences[:MAX_SENTENCES]
    listed = _features(ctx.get("features") or [], title, catalog)
    keywords = _keywords(f"{title} {ctx.get('description', '')} {' '.join(listed)}",
                         exclude=_codes(title) | set(normalize(brand).split()))
    keywords = [k for k in keywords if k != normalize(title)] or [kind]
    features = (listed + [s.rstrip(".!?") for s in sentences[MAX_SENTENCES:MAX_SENTENCES + 4]])[:MAX_FEATURES]
    if not features:
        features = [f"{_a(kind)} by {maker}"] + ([f"part of the {leaf} range"] if leaf else [])
    return {
        "refined_description": " ".join(refined),
        "primary_use_cases": [f"everyday use as {_a(kind)}"]
        + ([f"tasks that call for {leaf.lower()}"] if leaf else [])
        + ([f"work involving {keywords[0]}"] if keywords and keywords[0] != kind else []),
        "target_audiences": [f"shoppers looking for {_a(kind)}"]
        + ([f"customers who trust {brand}"] if brand else []),
        "key_features": features,
        "related_keywords": keywords,
    }


def _item_paragraph(ctx: dict, catalog: "Catalog | None" = None) -> str:
    sid, title, brand = ctx["sid"], ctx.get("title", ""), ctx.get("brand", "")
    ins = ctx.get("insights") or _item_insights(ctx, catalog)
    kind = item_kind(title, brand)
    cats = [c for c in ctx.get("categories", []) if c]

    def keep(text: str) -> bool:  # insights may come from another teacher: re-check them
        return _safe(text, title, catalog)

    brand = brand if _maker(brand, catalog) == brand else ""
    parts = [f"The item {sid} is {_a(kind)} made by {_maker(brand, catalog)}."]
    if cats:
        parts.append(f"In the catalogue, {sid} is listed under {' > '.join(cats)}.")
    desc = [s for s in _SENTENCE_SPLIT_RE.split(ins.get("refined_description", "")) if s]
    parts += [s for s in desc[1:] if keep(s)]  # the first one restates the opening line
    uses = [u for u in ins.get("primary_use_cases", []) if keep(u)]
    if uses:
        parts.append(f"Its primary use cases are {_join(uses)}.")
    aud = [a for a in ins.get("target_audiences", []) if keep(a)]
    if aud:
        parts.append(f"{sid} is aimed at {_join(aud)}.")
    feats = [f for f in ins.get("key_features", []) if keep(f)]
    for f in feats:
        parts.append(f"One highlight of {sid}: {f[0].lower() + f[1:]}.")
    kws = [k for k in ins.get("related_keywords", []) if keep(k)]
    if kws:
        parts.append(f"Keywords associated with {sid} include {', '.join(kws)}.")
    parts.append(f"Taken together, {sid} is {_a(kind)} for {aud[0] if aud else 'everyday needs'}.")
    return " ".join(parts)


# --- users ---------------------------------------------------------------------------

def _user_reasoning(ctx: dict, catalog: "Catalog | None" = None) -> str:
    """First-person analyst notes; no word of the hidden target's title is ever written."""
    history = ctx["history"]
    hidden = _title_words(ctx.get("target", {}).get("title", ""))

    def allowed(word: str) -> str | None:
        if not word or set(normalize(word).split()) & hidden:
            return None
        return None if catalog is not None and catalog.title_hits(word) else word

    kinds = [allowed(item_kind(h["title"], h.get("brand", ""))) for h in history]
    brands = [allowed(h.get("brand", "")) for h in history]
    n = len(history)
    out = [f"I am looking at a history of {n} item{'s' if n != 1 else ''}."]
    if n <= 5:
        for i, (h, kind, brand) in enumerate(zip(history, kinds, brands)):
            what = _a(kind) if kind else "an item"
            who = f" from {brand}" if brand else ""
            lead = "It starts with" if i == 0 else ("Most recently the user chose" if i == n - 1
                                                    else "Then comes")
            out.append(f"{lead} {h['sid']}, {what}{who}.")
    else:
        first, last = history[0], history[-1]
        out.append(f"The sequence opens with {first['sid']}"
                   + (f", {_a(kinds[0])}" if kinds[0] else "") + ".")
        mid = [h["sid"] for h in history[1:-1]]
        out.append(f"It continues through {', '.join(mid)}.")
        out.append(f"The most recent step is {last['sid']}"
                   + (f", {_a(kinds[-1])}" if kinds[-1] else "") + ".")
    kind_counts = Counter(k for k in kinds if k)
    brand_counts = Counter(b for b in brands if b)
    common = [k for k, c in sorted(kind_counts.items(), key=lambda kv: (-kv[1], kv[0])) if c > 1]
    if common:
        out.append(f"I notice a repeated interest in {_join(common[:3])}.")
    loyal = [b for b, c in sorted(brand_counts.items(), key=lambda kv: (-kv[1], kv[0])) if c > 1]
    if loyal:
        out.append(f"The user seems to return to {_join(loyal[:2])}, which suggests some brand loyalty.")
    if n > 1 and kinds[-1] and kinds[-1] != kinds[0]:
        out.append(f"Their focus appears to have shifted from {kinds[0] or 'earlier purchases'} "
                   f"towards {kinds[-1]}.")
    recent = [k for k in dict.fromkeys(reversed([k for k in kinds if k]))][:3]
    if recent:
        out.append(f"I would expect this user may enjoy items related to {_join(recent)}, "
                   "or products that complement them.")
    else:
        out.append("I would expect this user may enjoy practical items that complement "
                   "what they already own.")
    return " ".join(out)


def _user_narrative(ctx: dict, catalog: "Catalog | None" = None) -> str:
    """The history's SIDs in order, the (blind) reasoning, then the recommendation: the
    target by its SID, with its kind and maker when neither is a catalogue title fragment."""
    sids = ctx["history_sids"]
    reasoning = (ctx.get("reasoning") or "").strip() or _user_reasoning(ctx, catalog)
    opening = f"This user has interacted with {', '.join(sids)}, in that order."
    target = ctx["target"]

    def allowed(word: str) -> str:
        return "" if not word or (catalog is not None and catalog.title_hits(word)) else word

    kind = allowed(item_kind(target.get("title", ""), target.get("brand", "")))
    brand = allowed(target.get("brand", ""))
    what = (f", {_a(kind)}" if kind and kind != "product" else "") + (f" from {brand}" if brand else "")
    if catalog is not None and catalog.title_hits(what):  # the two words together may be one
        what = ""
    closing = f"Given this history, the item I recommend next is {target['sid']}{what}."
    return f"{opening} Reading this history as an analyst: {reasoning} {closing}"


def _item_analysis(ctx: dict, catalog: "Catalog | None" = None) -> str:
    return json.dumps(_item_insights(ctx, catalog), ensure_ascii=False)


# step name -> rule(context, catalog) -> the answer's text
RULES: dict[str, Callable[[dict, "Catalog | None"], str]] = {
    "item_analysis": _item_analysis,
    "item_integration": _item_paragraph,
    "user_reasoning": _user_reasoning,
    "user_narrative": _user_narrative,
}
