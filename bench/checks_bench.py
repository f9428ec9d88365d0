"""Section "checks": the SID-only and leak checks against the whole real Office
catalogue (every title in one Aho-Corasick automaton), on realistic SID-bearing texts:
item texts (a description with the item's SID, some with its title slipped in) and
user texts (a history of SIDs, a preference paragraph, sometimes the target's name)."""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

from bench.common import median_time, progress, row

OFFICE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "amazon18" / "Office_Products"
# The engine's target is 1,000 requests/s: 1 ms of CPU per record on one core. The
# checks may take a tenth of that.
BUDGET_MS = 0.1


def _texts(items: list, sid_of: dict[str, str], samples: list, n: int, seed: int = 0):
    """(item texts with their item id, user texts with (target, history))."""
    rng = random.Random(seed)
    title_of = {it.item_id: it.title for it in items}
    item_texts, user_texts = [], []
    for k in range(n):
        it = items[rng.randrange(len(items))]
        words = (it.description or it.title).split()[:rng.randint(60, 160)]
        at = rng.randrange(len(words) + 1)
        words.insert(at, f"The item {sid_of[it.item_id]}")
        if k % 10 == 0:  # a teacher that leaks the title
            words.insert(rng.randrange(len(words) + 1), it.title)
        item_texts.append((" ".join(words), it.item_id))
        s = samples[rng.randrange(len(samples))]
        hist = " then ".join(sid_of[h] for h in s.history[-8:])
        other = items[rng.randrange(len(items))]
        body = " ".join((other.description or other.title).split()[:rng.randint(40, 120)])
        text = f"The user bought {hist}. They care about quality and value. {body}"
        if k % 10 == 0:
            text += f" Next they will want {title_of[s.target]}."
        user_texts.append((text, s.target, s.history))
    return item_texts, user_texts


def run(quick: bool) -> list[dict]:
    from synth.checks import Catalog
    from synth.data.dataset import Dataset
    from synth.data.importer import import_folder
    from synth.io import read_json

    if not (OFFICE / "item.json").exists():
        return [row("checks", None, "", note=f"skipped: {OFFICE} not found")]
    n = 1000 if quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        progress("checks: importing the Office catalogue")
        import_folder(OFFICE, Path(tmp) / "office")
        ds = Dataset(Path(tmp) / "office")
        items = list(ds.items.values())
        samples = list(ds.samples("train"))
        sids = {str(k): v for k, v in read_json(OFFICE / "index.json").items()}
        t_build, cat = median_time(lambda: Catalog.from_items(ds.items, sids), 1)
    sid_of = {k: "".join(v) for k, v in sids.items()}
    item_texts, user_texts = _texts(items, sid_of, samples, n)
    progress(f"checks: {n:,} item texts and {n:,} user texts")

    def sid_only():
        return sum(1 for text, iid in item_texts if cat.sid_only_problems(text, [iid]))

    def leak():
        return sum(1 for text, target, hist in user_texts if cat.leak_problems(text, target, hist))

    def both():  # what the engine runs on a user-centric answer: both checks
        return sum(1 for text, target, hist in user_texts
                   if cat.sid_only_problems(text, hist) or cat.leak_problems(text, target, hist))

    reps = 3
    t_sid, bad_sid = median_time(sid_only, reps)
    t_leak, bad_leak = median_time(leak, reps)
    t_both, _ = median_time(both, reps)
    words = sum(len(t.split()) for t, _i in item_texts) / n
    rows = [
        row("catalogue index build", t_build, "s",
            note=f"{len(items):,} titles, descriptions and brands -> automaton of {cat.fragment_count:,} fragments"),
        row("SID-only check", n / t_sid, "texts/s", note=f"{words:.0f} words/text; {bad_sid / n:.0%} rejected"),
        row("SID-only check, per record", 1000 * t_sid / n, "ms", peer=BUDGET_MS, peer_name="budget",
            note="budget: 10% of 1 ms/request (1,000 req/s on one core)"),
        row("leak check", n / t_leak, "texts/s", note=f"{bad_leak / n:.0%} flagged"),
        row("leak check, per record", 1000 * t_leak / n, "ms", peer=BUDGET_MS, peer_name="budget"),
        row("both checks on a user text", 1000 * t_both / n, "ms", peer=BUDGET_MS, peer_name="budget",
            note=f"median of {reps}"),
    ]
    return rows
