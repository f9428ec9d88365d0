"""TEACHER=metadata: the paper's rule-based baseline (Table 5). No LLM, deterministic, offline.

Each of the four steps (``synth.steps``) has a rule here that computes the step's answer
from the step's template context, so the rest of the pipeline (checks, dedup, corpus files)
runs unchanged and anywhere; nothing is rendered, sent or cached:

- item_analysis: JSON insights built from the brand, categories, the listing's feature
  bullets, description sentences and the most frequent description and feature words;
- item_integration: a paragraph "The item <SID> is a <kind> by <brand>. ..." that fuses
  those insights and never writes the title;
- user_reasoning: compact notes on the history alone, in a fixed form that a small model
  generates token by token before each recommendation (about 45 words on Office), e.g.
  "History: <a_1><b_2><c_3>, <a_1><b_9><c_4> BIC pens in writing instruments; <a_5><b_1><c_7>
  Mead notebook in paper and notebooks. Focus: writing instruments (2 of 3); pens (2 of 3);
  BIC recurs (2 of 3). Latest shifts from writing instruments to paper and notebooks. No
  repeats. Next: most likely another notebook in paper and notebooks, possibly from Mead,
  otherwise writing instruments." (the expected category: frequency plus one for the
  latest item). "History:" names every item by SID with its kind
  (``kind_noun``: the title's head noun, singular; consecutive items of one kind and brand
  share it), brand (up to ``LONG_HISTORY`` items; beyond that, recurring brands only in
  "Focus:") and main category, per run of consecutive items of one category (the listing's
  categories below the shop's root; for listings without categories, such as the
  MiniOneRec Office and Industrial files, the kind's family from a small built-in table:
  "writing instruments", "ink and toner", ...). "Focus:" gives the dominant categories,
  the most frequent kind and the recurring brands with counts; "Latest" whether the latest
  item stays in, returns to or shifts from the previous category (when there are several);
  then repeats ("Repeat: <sid> bought twice." or "No repeats.") and a hedged expectation.
  Items are named only by SID, never by title. The reasoning is blind to the hidden next
  item: its fields serve only to keep out text that identifies it (a run of three words of
  its title other than its brand, a model code, or, given the run's ``Catalog``, anything
  the synthesis leak check flags) and no catalogue title is written; a clause that fails is
  replaced by a plainer alternative (without the brand, then the category, then the kind)
  or left out. Generic words the target shares ("pen", its brand) are allowed: naming what
  the history holds is no leak;
- user_narrative: recites the SID history, then the reasoning, and ends by recommending
  the next item by its SID, with its kind (as the reasoning names kinds) and brand, and
  whether the history holds that kind (the narrative is an item-prediction text; the
  reasoning stays blind to that item).

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

# Head words that name no kind of item: colours, counts, sizes, packaging, marketing words.
_NOT_KINDS = frozenset(
    """set sets pack packs count size sizes color colors colour colours black white blue red green
    yellow purple pink orange gray grey silver gold brown cyan magenta assorted clear multicolor
    inch inches pcs piece pieces capacity series style pro premium original genuine replacement
    compatible large medium small wide fine extra inc top weekly monthly daily included life natural
    touch service pages sheet sheets letter legal value bulk new total deluxe classic standard
    bold point tip ultra super mini heavy duty january february march april may june july august
    september october november december""".split()
)
# A kind's phrase ends before these words: "Fountain Pen with Medium Nib" is a pen.
_KIND_STOP = frozenset({"with", "for", "featuring", "includes", "including", "plus"})
_KIND_ALIASES = {"ballpoint": "pen", "rollerball": "pen", "nib": "pen", "fountain": "pen",
                 "gel": "pen", "toner": "cartridge", "tank": "cartridge"}
_DASH_RE = re.compile(r"\s+-+\s+")  # "Fountain Pen - Demonstrator Clear": two phrases
_MASS = frozenset({"ink", "paper", "tape", "glue", "cardstock", "wrap", "storage", "lead", "chalk",
                   "adhesive", "packaging", "stationery", "furniture", "software"})
_NO_SINGULAR = frozenset({"scissors", "pliers", "tweezers", "shears", "glasses", "series", "news",
                          "supplies", "headphones", "earphones", "goggles", "pants", "shorts"})
# Product families by kind (singular), for listings without categories (the MiniOneRec
# Office and Industrial files have none): the rule's own coarse grouping, not the shop's.
_FAMILIES = {
    "writing instruments": """pen pencil marker highlighter crayon chalk stylus lead refill calligraphy
        brush""",
    "ink and toner": """cartridge ink toner ribbon drum cli pgi""",
    "paper and notebooks": """paper notebook pad note journal cardstock card index book booklet
        stock bristol tablet memo sketchbook diary composition""",
    "planners and calendars": """planner calendar agenda""",
    "labels and tags": """label tag sticker tab""",
    "mailing and shipping": """envelope mailer wrap bubble""",
    "filing and binding": """folder binder divider file protector pocket jacket fastener insert
        sorter wallet cover report portfolio ring""",
    "desk supplies": """stapler staple clip holder dispenser tray sharpener eraser ruler scissors
        punch tape glue adhesive pin band clipboard stand rest mat mousepad bookend opener
        moistener magnet hook cup trimmer cutter remover stamp pouch lanyard organizer caddy""",
    "office electronics": """printer calculator scanner shredder laminator copier phone telephone
        handset presenter adapter maker headset camera projector speaker battery""",
    "boards and displays": """board whiteboard easel cork frame sign display""",
    "furniture and storage": """chair desk cabinet cart drawer rack cushion shelf box storage case bag
        bin basket locker safe""",
}
_FAMILY = {w: fam for fam, words in _FAMILIES.items() for w in words.split()}


def kind_noun(title: str, brand: str = "") -> str:
    """The item's kind for the user texts, one singular noun: like ``item_kind``, the head
    noun of the first title segment that has one, but read before "with"/"for" and past
    colours, sizes and pack words ("Cross Fountain Pen with Medium Nib" -> "pen", "Gel Ink Pen
    Set" -> "pen", "Toner Cartridge for Brother TN450" -> "cartridge")."""
    brand_words = set(normalize(brand).split())
    for seg in segments(_DASH_RE.sub(", ", title)):
        for stop, word in enumerate(seg):
            if word in _KIND_STOP and stop > 0:
                seg = seg[:stop]
                break
        words = [w for w in seg if w.isalpha() and len(w) >= 3 and w not in brand_words
                 and w not in STOPWORDS and w not in _NOT_KINDS]
        if words:
            kind = _singular(words[-1])
            return _KIND_ALIASES.get(kind, kind)
    return "product"


def _singular(word: str) -> str:
    if word in _NO_SINGULAR or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zzes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _plural(word: str) -> str:
    if word in _NO_SINGULAR or word in _MASS:
        return word
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def _an(word: str) -> str:
    """'pen' -> 'a pen', 'eraser' -> 'an eraser', 'scissors' -> 'scissors'."""
    if word in _NO_SINGULAR or word in _MASS:
        return word
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _category(entry: dict, kind: str) -> tuple[str, bool]:
    """(label, from_listing): the item's main category below the shop's root ("Video Games >
    PlayStation 4 > Games" -> "PlayStation 4 > Games"), else the kind's family, else ""."""
    cats = [" ".join(str(c).split()) for c in entry.get("categories") or [] if str(c).strip()]
    if len(cats) >= 2:
        cats = cats[1:]  # the root names the whole shop section: every item shares it
    if cats:
        return " > ".join(cats[:2]), True
    return _FAMILY.get(kind, ""), False


def _ranked(counts: Counter, last_seen: dict) -> list:
    """Keys by count, ties broken by the most recent occurrence, then by name."""
    return sorted(counts, key=lambda k: (-counts[k], -last_seen[k], str(k)))


def _history_profile(history: list[dict], catalog: "Catalog | None") -> dict:
    """What the history says, item by item and in sum; every field comes from the history."""
    items = []
    for h in history:
        kind = kind_noun(h.get("title", ""), h.get("brand", ""))
        label, listed = _category(h, kind)
        brand = _maker(" ".join((h.get("brand") or "").split()), catalog)
        items.append({"sid": h["sid"], "kind": kind, "brand": "" if brand == "an unnamed maker" else brand,
                      "category": label, "listed": listed,
                      # what groups items: the category, or the kind when there is none
                      "group": label or _plural(kind)})
    n = len(items)
    profile: dict = {"items": items, "n": n}
    for field in ("kind", "brand", "category", "group", "sid"):
        counts, last = _count_in(items, field)
        profile[field] = (counts, last, _ranked(counts, last))
    # The expected group: frequency plus a bonus for the latest item (recency), ties by recency.
    g_counts, g_last, _ = profile["group"]
    score = {g: c + (1 if g_last[g] == n - 1 else 0) for g, c in g_counts.items()}
    expected = sorted(score, key=lambda g: (-score[g], -g_last[g], g))
    members = [it for it in items if it["group"] == expected[0]] if expected else []
    profile["expected_group"] = expected[0] if expected else ""
    profile["second_group"] = expected[1] if len(expected) > 1 else ""
    profile["expected_kind"] = _ranked(*_count_in(members, "kind"))[0] if members else ""
    brands = _count_in(members, "brand")
    profile["expected_brand"] = _ranked(*brands)[0] if brands[0] else ""
    return profile


def _count_in(items: list[dict], field: str) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    last: dict = {}
    for i, it in enumerate(items):
        if it[field]:
            counts[it[field]] += 1
            last[it[field]] = i
    return counts, last


# The reasoning is a few short sentences, each a head ("History:", "Focus:", ...) and clauses;
# each clause is a list of ever plainer alternatives (the first that keeps the text blind is
# written; a clause with none that does is left out, and a sentence with no clause left too).
Sentence = tuple[str, list[list[str]], str]  # (head, clauses, separator)

LONG_HISTORY = 5  # beyond this, items are listed by kind only and brands are summarised


def _entries(run: list[dict], brand: bool) -> str:
    """'<s1>, <s2> BIC pens, <s3> Pilot pen': items by SID, consecutive items of one kind (and
    brand, when written) share it."""
    parts, i = [], 0
    while i < len(run):
        key = (run[i]["brand"] if brand else "", run[i]["kind"])
        j = i
        while j + 1 < len(run) and (run[j + 1]["brand"] if brand else "", run[j + 1]["kind"]) == key:
            j += 1
        noun = _plural(key[1]) if j > i else key[1]
        parts.append(", ".join(it["sid"] for it in run[i:j + 1]) + " " + (f"{key[0]} {noun}" if key[0] else noun))
        i = j + 1
    return ", ".join(parts)


def _history_sentence(profile: dict) -> Sentence:
    """Runs of consecutive items of one group, each '<sid> Brand kind, ... in <category>';
    brands only up to ``LONG_HISTORY`` items."""
    runs: list[list[dict]] = []
    for it in profile["items"]:
        if runs and runs[-1][-1]["group"] == it["group"]:
            runs[-1].append(it)
        else:
            runs.append([it])
    brand = profile["n"] <= LONG_HISTORY
    clauses = []
    for run in runs:
        where = f" in {run[0]['category']}" if run[0]["category"] else ""
        alts = [_entries(run, brand=True) + where] if brand else []
        alts += [_entries(run, brand=False) + where, _entries(run, brand=False),
                 ", ".join(it["sid"] for it in run)]
        clauses.append(list(dict.fromkeys(alts)))
    return "History: ", clauses, "; "


def _focus_sentence(profile: dict) -> Sentence:
    """'Focus: writing instruments (5 of 7), then paper and notebooks (2); pens (4 of 7);
    BIC recurs (3 of 7).'"""
    n, clauses = profile["n"], []
    if n < 2:
        return "Focus: ", clauses, "; "
    c_counts, _l, c_rank = profile["category"]
    if c_rank:
        top = c_rank[0]
        if c_counts[top] == 1 and len(c_rank) > 1:
            clauses.append([f"broad, {len(c_rank)} categories"])
        else:
            text = f"{top} ({c_counts[top]} of {n})"
            if len(c_rank) > 1 and c_counts[c_rank[1]] > 1:
                text += f", then {c_rank[1]} ({c_counts[c_rank[1]]})"
            clauses.append([text])
    k_counts, _l, k_rank = profile["kind"]
    if k_rank and k_counts[k_rank[0]] > 1:
        k = k_rank[0]
        clauses.append([f"all {_plural(k)}" if k_counts[k] == n else f"{_plural(k)} ({k_counts[k]} of {n})"])
    b_counts, b_last, b_rank = profile["brand"]
    loyal = [b for b in b_rank if b_counts[b] > 1]
    if loyal:
        if len(loyal) == 1:
            text = f"{loyal[0]} recurs ({b_counts[loyal[0]]} of {n})"
        else:
            text = _join([f"{b} ({b_counts[b]})" for b in loyal[:2]]) + " recur"
        clauses.append([text, "a brand recurs"])
    elif len(b_rank) > 1:
        makers = sorted(b_rank, key=lambda b: b_last[b])
        listed = f" ({', '.join(makers[:3] + (['others'] if len(makers) > 3 else []))})"
        clauses.append(([f"no brand recurs{listed}"] if n > LONG_HISTORY else []) + ["no brand recurs"])
    return "Focus: ", clauses, "; "


def _change_sentences(profile: dict) -> list[Sentence]:
    """Whether the latest item stays in, returns to or shifts from the previous group (when
    the history has more than one), and the repeat purchases."""
    items, n = profile["items"], profile["n"]
    if n < 2:
        return []
    last, prev = items[-1]["group"], items[-2]["group"]
    if last == prev:
        text = f"stays {'in' if items[-1]['category'] else 'with'} {last}"
    elif last in {it["group"] for it in items[:-1]}:
        text = f"returns to {last} after {prev}"
    else:
        text = f"shifts from {prev} to {last}"
    s_counts, _l, s_rank = profile["sid"]
    repeats = [s for s in s_rank if s_counts[s] > 1]
    if repeats:
        head = "Repeat: " if len(repeats) == 1 else "Repeats: "
        again = [[f"{s} bought {_TIMES.get(s_counts[s], f'{s_counts[s]} times')}"] for s in repeats[:3]]
    else:
        head, again = "", [["No repeats"]]
    # a single group: "Focus: ... (n of n)" says it already
    latest = [("Latest ", [[text]], "")] if len({it["group"] for it in items}) > 1 else []
    return [*latest, (head, again, ", ")]


def _next_sentence(profile: dict) -> Sentence:
    """'Next: most likely another pen in writing instruments, possibly from BIC, otherwise
    paper and notebooks.'"""
    kind, group = profile["expected_kind"], profile["expected_group"]
    brand, second = profile["expected_brand"], profile["second_group"]
    if not kind:
        return "Next: ", [], ""
    where = f" in {group}" if group in profile["category"][0] else ""
    lead = f"most likely {_another(kind)}"
    tail = f", otherwise {second}" if second else ""
    alts = ([f"{lead}{where}, possibly from {brand}{tail}"] if brand else []) + \
        [f"{lead}{where}{tail}", f"{lead}{tail}", "most likely more of the same"]
    return "Next: ", [alts], ""


_TIMES = {2: "twice", 3: "three times"}


def _another(kind: str) -> str:
    return f"more {kind}" if kind in _MASS else f"another {kind}"


def _render(sentences: list[tuple[str, list[str], str]]) -> str:
    return " ".join(f"{head}{sep.join(chosen)}." for head, chosen, sep in sentences if chosen)


def _user_reasoning(ctx: dict, catalog: "Catalog | None" = None) -> str:
    """Compact notes from the history alone, in fixed sentences: "History:" (each item, or run
    of one group, by SID with kind, brand and category), "Focus:" (dominant category, kind,
    recurring brands), "Latest" (stays, returns, shifts), repeats, "Next:" (a hedged
    expectation). The hidden target is used only to keep out text that would identify it (a
    run of three words of its title, a model code, or, given the catalogue, any leak the
    synthesis checks find); no catalogue title is written either. A clause that fails is
    replaced by a plainer alternative, or left out."""
    history = ctx["history"]
    target = ctx.get("target") or {}
    ok = _blind_check(target, [h["item_id"] for h in history if "item_id" in h], catalog)
    profile = _history_profile(history, catalog)
    sentences = [_history_sentence(profile), _focus_sentence(profile), *_change_sentences(profile),
                 _next_sentence(profile)]
    first = _render([(head, [alts[0] for alts in clauses], sep) for head, clauses, sep in sentences])
    if ok(first):  # the usual case; else a clause at a time
        return first
    done: list[tuple[str, list[str], str]] = []
    for head, clauses, sep in sentences:
        chosen: list[str] = []
        for alternatives in clauses:
            for alt in alternatives:
                if ok(_render([*done, (head, [*chosen, alt], sep)])):
                    chosen.append(alt)
                    break
        done.append((head, chosen, sep))
    return _render(done)


def _blind_check(target: dict, history_ids: list[str], catalog: "Catalog | None") -> Callable[[str], bool]:
    """True for a text that identifies neither the target nor any catalogue title. A word the
    target shares ("pen", its brand) is fine; its title's word trigrams (less those made only
    of its brand), its model codes and, given the catalogue, the synthesis leak check are not."""
    title = target.get("title", "")
    brand_words = set(normalize(target.get("brand", "")).split())
    grams = {g for g in _title_trigrams(title) if not set(g) <= brand_words}
    codes = _codes(title) - brand_words  # "ECR4Kids" is a maker, not a model number
    tid = str(target.get("item_id", ""))
    check_leak = catalog is not None and tid in catalog.titles

    def ok(text: str) -> bool:
        words = normalize(text).split()
        if codes & set(words) or any(tuple(words[i:i + 3]) in grams for i in range(len(words) - 2)):
            return False
        if catalog is not None and catalog.title_hits(text):
            return False
        return not (check_leak and catalog.leak_problems(text, tid, history_ids))
    return ok


def _user_narrative(ctx: dict, catalog: "Catalog | None" = None) -> str:
    """The history's SIDs in order, the (blind) reasoning, then the recommendation: the
    target by its SID, with its kind and maker (named as the reasoning names them) when
    neither is a catalogue title fragment, and whether the history holds that kind."""
    sids = ctx["history_sids"]
    reasoning = (ctx.get("reasoning") or "").strip() or _user_reasoning(ctx, catalog)
    opening = f"This user has interacted with {', '.join(sids)}."
    target = ctx["target"]
    kind = kind_noun(target.get("title", ""), target.get("brand", ""))
    brand = " ".join((target.get("brand") or "").split())
    hist_kinds = Counter(kind_noun(h.get("title", ""), h.get("brand", "")) for h in ctx["history"])
    what = f", {_an(kind)}" if kind != "product" else ""
    fits = ""
    if what and hist_kinds[kind]:
        fits = f", like the history's {_plural(kind) if hist_kinds[kind] > 1 else kind}"
    base = f"Given this history, the item I recommend next is {target['sid']}"
    closing = f"{base}."
    for candidate in (f"{base}{what} from {brand}{fits}." if brand else "", f"{base}{what}{fits}.",
                      f"{base}{what}."):
        if candidate and (catalog is None or not catalog.title_hits(candidate)):
            closing = candidate
            break
    return f"{opening} {reasoning} {closing}"


def _item_analysis(ctx: dict, catalog: "Catalog | None" = None) -> str:
    return json.dumps(_item_insights(ctx, catalog), ensure_ascii=False)


# step name -> rule(context, catalog) -> the answer's text
RULES: dict[str, Callable[[dict, "Catalog | None"], str]] = {
    "item_analysis": _item_analysis,
    "item_integration": _item_paragraph,
    "user_reasoning": _user_reasoning,
    "user_narrative": _user_narrative,
}
