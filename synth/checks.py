"""Content checks every teacher output passes before it can enter a corpus.

Two checks, both against the whole catalogue, both built once per run (``Catalog``):

- SID-only (``sid_only_problems``): a stage-2 text carries the SIDs it must, every
  SID-shaped run in it is a real SID, and no catalogue title appears in it, neither
  whole (normalised) nor as a near-verbatim *distinctive fragment*.
- Leak (``leak_problems``): nothing of the held-out next item shows in a user's stage-1
  reasoning (which reasoning activation reuses before that item's SID): not its SID, not
  its title, not distinctive fragments of it, not a paraphrase that gathers most of its
  rare title words in a short window, not its model numbers. (The stage-2 narrative ends
  by recommending that item, so it is SID-only with the item's SID required instead.)

Speed matters (the checks run on every answer of a teacher that may deliver a
thousand a second), so nothing here loops over titles per text: the fragments of
every title sit in one Aho-Corasick automaton, and the leak check only looks at the
one target's precomputed rare tokens.

Definitions (all on normalised text: casefolded, punctuation removed, single spaces):

- a token is *rare* when at most ``rare_df`` titles contain it (document frequency
  over the catalogue's titles); *generic* words (pen, black, pack) are frequent in
  titles and never make a fragment distinctive on their own.
- a *distinctive fragment* of a title is a run of ``ngram`` consecutive words of it,
  inside one punctuation-delimited segment of the title, that contains at least one
  rare word (alphabetic, 3+ letters, or a 3+ character code) and that occurs in at most
  ``fragment_df`` titles. Text is matched with the same segmenting, so a comma-separated
  keyword list never forms a fragment across its commas.
- the *paraphrase* leak: the target title's key words (non-stopwords whose document
  frequency is at most ``key_df``, and not 1-2 digit numbers) weigh their IDF; a window
  of ``window`` words of the text that holds at least ``min_key_hits`` distinct key
  words carrying at least ``leak_share`` of the title's key IDF mass is a leak. This is
  robust to case, punctuation and word order: "glitter gel pens, scented yummy" leaks
  "OOLY, Yummy Yummy Scented Glitter Gel Pens (132-14), Set of 12".
- a *model number* is a title token of 5+ characters with at least two digits (CB335WN,
  70644) found in at most ``fragment_df`` titles: one of those alone names the item.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import ahocorasick

from synth.sid import SID_RUN_RE

if TYPE_CHECKING:
    from synth.data.dataset import Item

# Reason codes, in the order they are reported.
MISSING_SID = "missing_sid"
UNKNOWN_SID = "unknown_sid"
TITLE_IN_TEXT = "title_in_text"
LEAK_SID = "leak_sid"
LEAK_TITLE = "leak_title"

# What each reason a record can be rejected or fail with means (the corpus page shows it beside the examples).
REASON_EXPLANATIONS = {
    MISSING_SID: "the text does not carry a SID it must (the item's own, or the recommended item's at the end)",
    UNKNOWN_SID: "a SID-shaped run in the text names no item of the catalogue (an invented or mangled SID)",
    TITLE_IN_TEXT: "a catalogue title appears in the text, whole or as a distinctive fragment: items must be named "
                   "by SID only",
    LEAK_SID: "the user reasoning names the held-out next item by its SID",
    LEAK_TITLE: "the user reasoning reveals the held-out next item: its title, a distinctive fragment, a paraphrase "
                "of its rare title words or its model number",
    "empty_after_cleaning": "nothing was left of the answer after removing the think block and markup",
    "bad_json": "the item analysis is not a JSON object",
    "empty": "the teacher returned an empty answer",
    "schema": "the item analysis JSON does not match the schema of prompts/synth/item_analysis.schema.json",
    "truncated": "the teacher stopped at max_tokens (finish_reason length): the answer is cut off",
    "near_duplicate": "the MinHash pass found the text to repeat an earlier record's (Jaccard of word 3-grams >= 0.5)",
    "budget_reached": "the run's dollar budget was spent before this record",
    "stopped": "the run was stopped before this record finished",
}

# Function words never count as evidence for a title.
STOPWORDS = frozenset(
    """a an and are as at be by for from has have in into is it its of on or that the this
    to with without your you our up out per plus w x s t""".split()
)

# A segment barrier: characters that end a phrase (and SIDs, which name items).
_BARRIER = " | "
_DECIMAL_RE = re.compile(r"(?<=\d)[.,](?=\d)")  # 0.7mm, 1,000: not phrase breaks
_BREAK_RE = re.compile(r"[.,;:!?()\[\]{}<>\"|/\\\n\r\t\u2022\u2013\u2014]+")
_NONWORD_RE = re.compile(r"[\W_]+")
_DIGIT_RE = re.compile(r"\d")
_POSSESSIVE_RE = re.compile(r"(?<=\w)['\u2019]s\b")  # "Elmer's" and "Elmers" -> "elmer"


def normalize(text: str) -> str:
    """Casefold, strip punctuation, collapse spaces: 'Cross-Cut, 6 Sheet!' -> 'cross cut 6 sheet'."""
    text = _POSSESSIVE_RE.sub("", (text or "").casefold())
    return " ".join(_NONWORD_RE.sub(" ", text).split())


_KEEP_BARRIER_RE = re.compile(r"[^\w|]+|_+")
_BARRIERS_RE = re.compile(r"\|(?:[\s|]*\|)?")


# The same results as _DECIMAL_RE and _KEEP_BARRIER_RE (the plain statement of the rule,
# which tests/test_bench.py checks these against), cheaper on long answers: a pattern that
# starts with a lookbehind is tried at every position, and matching every single space
# (whitespace is collapsed by the final split anyway) made one substitution per word.
_DECIMAL_FAST_RE = re.compile(r"(\d)[.,](?=\d)")
_KEEP_BARRIER_FAST_RE = re.compile(r"[^\w\s|]+|_+")


def _line(text: str) -> str:
    """The text as ' w1 w2 | w3 w4 ': normalised words, '|' where a phrase breaks
    (punctuation, SIDs). One pass of a few regexes: this runs on every teacher answer."""
    text = SID_RUN_RE.sub(_BARRIER, text or "").replace("|", _BARRIER).casefold()
    if "'" in text or "\u2019" in text:
        text = _POSSESSIVE_RE.sub("", text)
    text = _BREAK_RE.sub(_BARRIER, _DECIMAL_FAST_RE.sub(r"\1 ", text))
    text = _BARRIERS_RE.sub("|", _KEEP_BARRIER_FAST_RE.sub(" ", text))
    return " " + " ".join(text.split()) + " "


def segments(text: str) -> list[list[str]]:
    """Normalised word runs between phrase breaks (punctuation, SIDs).

    Fragments are matched inside one segment, so words from two list entries or from
    both sides of a SID never join into a title fragment.
    """
    return [seg.split() for seg in _line(text).split("|") if seg.strip()]


def _is_code(tok: str) -> bool:
    return len(tok) >= 5 and len(_DIGIT_RE.findall(tok)) >= 2


def _is_contentful(tok: str) -> bool:
    """Words that can carry a title's identity: not stopwords, not 1-2 digit numbers."""
    if tok in STOPWORDS:
        return False
    if tok.isdigit():
        return len(tok) >= 3
    return len(tok) >= 2


@dataclass(frozen=True)
class CatalogConfig:
    ngram: int = 3            # words in a distinctive fragment
    fragment_df: int = 3      # a fragment may occur in at most this many titles
    rare_df: int | None = None  # default: max(3, 0.5% of titles)
    key_df: int | None = None   # default: max(5, 1% of titles)
    window: int = 12          # words in the paraphrase window
    leak_share: float = 0.5   # share of the title's key IDF mass that makes a leak
    min_key_hits: int = 2     # distinct key words needed in the window
    min_title_words: int = 4  # a whole title shorter than this counts only if it has a rare word
    prose_share: float = 0.01  # a word in more than this share of other items' descriptions is prose


class Catalog:
    """The catalogue's titles and SIDs, indexed once for fast checks of many texts."""

    def __init__(self, titles: dict[str, str], sids: dict[str, list[str]],
                 config: CatalogConfig | None = None, descriptions: dict[str, str] | None = None,
                 brands: dict[str, str] | None = None):
        """``descriptions`` (item id -> text), when given, teach the catalogue which title
        words are ordinary prose ("easy", "ideal", "home"): a word used in many descriptions
        of items whose own title lacks it is not distinctive. Without them a fragment needs
        two rare words (or a model number) instead of one. ``brands`` (item id -> brand),
        when given, keep a brand name from counting as a fragment of its items' titles:
        "made by Teacher Created Materials" names a maker, not an item."""
        self.config = cfg = config or CatalogConfig()
        self.titles = {str(k): v or "" for k, v in titles.items()}
        self.sid_of = {str(k): "".join(v) for k, v in sids.items()}
        self.known_sids = frozenset(self.sid_of.values())
        n = max(1, len(self.titles))
        self.rare_df = cfg.rare_df if cfg.rare_df is not None else max(3, int(0.005 * n))
        self.key_df = cfg.key_df if cfg.key_df is not None else max(5, int(0.01 * n))

        title_segs = {iid: segments(t) for iid, t in self.titles.items()}
        self.df: Counter[str] = Counter()
        for segs in title_segs.values():
            self.df.update({w for seg in segs for w in seg})
        self._idf = {w: math.log((n + 1) / (c + 0.5)) for w, c in self.df.items()}
        self.prose_df: Counter[str] | None = None
        if descriptions:
            # Count a word only where the item's own title lacks it: descriptions that
            # repeat their title say nothing about how common the word is in prose.
            self.prose_df = Counter()
            for iid, desc in descriptions.items():
                own = {w for seg in title_segs.get(str(iid), []) for w in seg}
                self.prose_df.update(set(normalize(desc).split()) - own)
            self.prose_max = max(3, int(cfg.prose_share * len(descriptions)))
        brand_words = {str(k): set(normalize(v).split()) for k, v in (brands or {}).items()}
        self._index_fragments(title_segs, brand_words)
        self._index_leak_material(title_segs, brand_words)

    def _index_fragments(self, title_segs: dict[str, list[list[str]]], brand_words: dict[str, set[str]]) -> None:
        """Fragment -> titles holding it, and whole titles (normalised), in one automaton."""
        gram_owners: dict[str, set[str]] = defaultdict(set)
        for iid, segs in title_segs.items():
            bw = brand_words.get(iid, set())
            for seg in segs:
                for gram in self._distinctive_candidates(seg):
                    if not bw or not set(gram.split()) <= bw:
                        gram_owners[gram].add(iid)
        self._owners: dict[str, frozenset[str]] = {}
        for gram, owners in gram_owners.items():
            if len(owners) <= self.config.fragment_df:
                self._owners[gram] = frozenset(owners)
        for iid, segs in title_segs.items():
            words = [w for seg in segs for w in seg]
            if words and self._whole_title_counts(words):
                # A whole title, written with its punctuation or without it.
                for whole in {" ".join(words), " | ".join(" ".join(seg) for seg in segs)}:
                    self._owners[whole] = self._owners.get(whole, frozenset()) | {iid}
        self._last: tuple[str, tuple] | None = None
        self._automaton = ahocorasick.Automaton()
        for gram, owners in self._owners.items():
            self._automaton.add_word(f" {gram} ", (gram, owners))
        if self._owners:
            self._automaton.make_automaton()

    def _index_leak_material(self, title_segs: dict[str, list[list[str]]],
                             brand_words: dict[str, set[str]]) -> None:
        """Per item: its title's key words with IDF weights, and its model numbers."""
        self._keys: dict[str, dict[str, float]] = {}
        self._codes: dict[str, frozenset[str]] = {}
        for iid, segs in title_segs.items():
            words = {w for seg in segs for w in seg}
            bw = brand_words.get(iid, set())
            self._keys[iid] = {
                w: self._idf[w] for w in words
                if _is_contentful(w) and self.df[w] <= self.key_df and w not in bw
            }
            self._codes[iid] = frozenset(
                w for w in words if _is_code(w) and self.df[w] <= self.config.fragment_df
            )

    @property
    def fragment_count(self) -> int:
        """How many title fragments (and whole titles) the automaton holds."""
        return len(self._owners)

    @classmethod
    def from_items(cls, items: "Mapping[str, Item]", sids: dict[str, list[str]],
                   config: CatalogConfig | None = None) -> "Catalog":
        """The catalogue of a dataset's items (titles, descriptions, brands): the best index."""
        return cls({k: it.title for k, it in items.items()}, sids, config,
                   descriptions={k: it.description for k, it in items.items()},
                   brands={k: it.brand for k, it in items.items()})

    # -- index construction -------------------------------------------------------
    def _is_rare(self, tok: str) -> bool:
        """Rare in titles, not ordinary prose, long enough to mean something."""
        if self.df[tok] > self.rare_df or tok in STOPWORDS or len(tok) < 3:
            return False
        if self.prose_df is not None and self.prose_df[tok] > self.prose_max:
            return False
        return True

    def _distinctive_candidates(self, seg: list[str]) -> Iterable[str]:
        """Runs of ``ngram`` words with two rare words (or a model number), and runs of
        ``ngram + 1`` words with one: "paper mate flair felt" is a product name,
        "automatic duplex printing" a feature."""
        k = self.config.ngram
        for n, need in ((k, 2), (k + 1, 1)):
            for i in range(len(seg) - n + 1):
                gram = seg[i:i + n]
                if gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                    continue  # "of the xyz": the contentful core is found by its neighbours
                rare = sum(1 for w in gram if self._is_rare(w))
                if rare >= need or any(_is_code(w) for w in gram):
                    yield " ".join(gram)

    def _whole_title_counts(self, words: list[str]) -> bool:
        if len(words) >= self.config.min_title_words:
            return True
        return any(self._is_rare(w) for w in words)

    # -- matching -----------------------------------------------------------------
    def _scan(self, text: str) -> tuple[list[tuple[str, frozenset[str]]], list[str]]:
        """(title fragments found, normalised words) of a text; the last text is memoised
        because the engine runs both checks on each user reasoning."""
        last = self._last
        if last is not None and last[0] == text:
            return last[1]
        line = _line(text)
        seen: dict[str, frozenset[str]] = {}
        if self._owners:
            for _end, (gram, owners) in self._automaton.iter(line):
                seen.setdefault(gram, owners)
        result = (list(seen.items()), [w for w in line.split() if w != "|"])
        self._last = (text, result)
        return result

    def title_hits(self, text: str) -> list[tuple[str, frozenset[str]]]:
        """Every title fragment (or whole title) found in ``text``, with the items owning it."""
        return self._scan(text)[0]

    def sid_only_problems(self, text: str, required_item_ids: Iterable[str]) -> list[str]:
        """Reason codes for a stage-2 text that must name items by SID only."""
        problems = []
        found = SID_RUN_RE.findall(text or "")
        present = set(found)
        for iid in required_item_ids:
            sid = self.sid_of.get(str(iid))
            if sid is None:
                raise KeyError(f"item {iid!r} has no SID in sids.json: rebuild the SIDs")
            if sid not in present:
                problems.append(MISSING_SID)
                break
        if any(run not in self.known_sids for run in present):
            problems.append(UNKNOWN_SID)
        if self.title_hits(text):
            problems.append(TITLE_IN_TEXT)
        return problems

    def leak_problems(self, text: str, target_item_id: str,
                      history: Iterable[str] = ()) -> list[str]:
        """Reason codes when ``text`` reveals the held-out item ``target_item_id``.

        Pass the sample's ``history``: a user who bought the target before has its SID in
        the history, which the text may name, so that SID is then no leak (about one
        Office training sample in ten repeats an item)."""
        target = str(target_item_id)
        if target not in self.titles:
            raise KeyError(f"target item {target!r} is not in the catalogue")
        problems = []
        sid = self.sid_of.get(target)
        hist = [str(h) for h in history]
        # The same SID in the history (a repeat purchase, or a SID two items share).
        in_history = target in hist or sid in {self.sid_of.get(h) for h in hist}
        if sid and not in_history and sid in re.sub(r">\s+<", "><", text or ""):
            problems.append(LEAK_SID)
        if self._title_leaks(text, target):
            problems.append(LEAK_TITLE)
        return problems

    def _title_leaks(self, text: str, target: str) -> bool:
        if any(target in owners for _g, owners in self.title_hits(text)):
            return True
        words = self._scan(text)[1]
        codes = self._codes[target]
        if codes and not codes.isdisjoint(words):
            return True
        return self._window_share(words, self._keys[target]) >= self.config.leak_share

    def _window_share(self, words: list[str], keys: dict[str, float]) -> float:
        """Largest share of the key IDF mass found within any ``window`` consecutive words."""
        total = sum(keys.values())
        if total <= 0 or len(keys) < self.config.min_key_hits:
            # A title with one key word leaks through its fragments or codes, not here.
            return 0.0
        hits = [(i, w) for i, w in enumerate(words) if w in keys]
        if len({w for _i, w in hits}) < self.config.min_key_hits:
            return 0.0
        best = 0.0
        width = self.config.window
        counts: Counter[str] = Counter()
        mass = 0.0
        lo = 0
        for pos, w in hits:
            if counts[w] == 0:
                mass += keys[w]
            counts[w] += 1
            while hits[lo][0] <= pos - width:
                lw = hits[lo][1]
                counts[lw] -= 1
                if counts[lw] == 0:
                    mass -= keys[lw]
                lo += 1
            live = [k for k, c in counts.items() if c]
            if len(live) >= self.config.min_key_hits:
                best = max(best, mass / total)
                # Two words that (nearly) only this title has, side by side, name it
                # whatever their share: "ooly yummy".
                if sum(1 for k in live if self.df[k] <= self.config.fragment_df) >= 2:
                    return 1.0
        return best
