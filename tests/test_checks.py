"""Checks on hand-made cases, then on the real Office catalogue (its speed is `make bench`'s:
bench/checks_bench.py)."""
import pytest

from synth.checks import Catalog

TITLES = {
    "1": "OOLY, Yummy Yummy Scented Glitter Gel Pens (132-14), Set of 12",
    "2": "HP 74 Black & 75 Tri-color Original Ink Cartridges, 2 Cartridges (CB335WN, CB337WN)",
    "3": "Paper Mate Flair Felt Tip Pens, Medium Point (0.7mm), Assorted Colors, 14 Count",
    "4": "BIC Round Stic Xtra Life Ballpoint Pen, Medium Point, Black, 60-Count",
    "5": "Pilot G2 Retractable Premium Gel Ink Roller Ball Pens, Fine Point, Black, 12-Pack",
    "6": "AmazonBasics 6-Sheet Cross-Cut Paper and Credit Card Shredder",
    "7": "Sharpie Permanent Markers, Fine Point, Black, 12 Count",
    "8": "Post-it Notes, 3 in x 3 in, Canary Yellow, 12 Pads",
    "9": "Scotch Magic Tape, 3/4 x 1000 Inches, Pack of 6",
    "10": "Paper Mate Flair Felt Tip Pens, Ultra Fine Point, Black, 12 Count",
}
SIDS = {k: [f"<a_{k}>", f"<b_{int(k) * 3}>", f"<c_{int(k) * 7}>"] for k in TITLES}
SID = {k: "".join(v) for k, v in SIDS.items()}


@pytest.fixture(scope="module")
def cat():
    return Catalog(TITLES, SIDS)


def test_clean_text_passes(cat):
    text = f"The item {SID['4']} is a dependable pen for daily notes at school and work."
    assert cat.sid_only_problems(text, ["4"]) == []


def test_missing_and_unknown_sid(cat):
    assert "missing_sid" in cat.sid_only_problems("A fine pen for notes.", ["4"])
    text = f"{SID['4']} pairs well with <a_999><b_1><c_2>."
    assert cat.sid_only_problems(text, ["4"]) == ["unknown_sid"]
    # A truncated SID (two levels of three) is not a real SID either.
    assert "unknown_sid" in cat.sid_only_problems(f"{SID['4']} and <a_4><b_12>", ["4"])


def test_title_hidden_in_text(cat):
    for hidden in ["I bought the hp 74 black & 75 tri-color original ink cartridges yesterday",
                   "try the OOLY yummy-yummy scented glitter gel pens",
                   "Paper Mate Flair felt tip pens are fun"]:
        text = f"{SID['4']} is nice. {hidden}."
        assert "title_in_text" in cat.sid_only_problems(text, ["4"]), hidden


def test_generic_text_is_no_title(cat):
    text = (f"{SID['7']} is a black pen-like marker with a fine point; a pack of 12 count "
            "works for office and school, easy to use, ideal for everyday notes and labels.")
    assert cat.sid_only_problems(text, ["7"]) == []
    assert cat.leak_problems(text, "1") == []
    assert cat.leak_problems("The user likes gel pens in black, a pack of pens.", "1") == []


def test_leak_by_sid_and_title(cat):
    assert cat.leak_problems(f"Next they will buy {SID['1']}.", "1") == ["leak_sid"]
    assert cat.leak_problems(f"Next they will buy {SID['1']}.", "2") == []
    # A repeat purchase: the target is in the history, so its SID is no leak.
    assert cat.leak_problems(f"They bought {SID['1']} before.", "1", history=["1"]) == []
    assert cat.leak_problems("They will want OOLY Yummy Yummy Scented Glitter Gel Pens", "1") == ["leak_title"]


def test_leak_by_paraphrased_fragment_and_model_number(cat):
    assert cat.leak_problems("I think they will love glitter gel pens, scented yummy ones.", "1") == ["leak_title"]
    assert cat.leak_problems("A refill like CB335WN would suit them.", "2") == ["leak_title"]
    # The general direction is fine: shared generic words, no rare ones.
    assert cat.leak_problems("They may enjoy colorful gel pens and other fun writing tools.", "1") == []


def test_hostile_check_input(cat):
    assert cat.sid_only_problems("", []) == []
    assert cat.leak_problems("{{ 7*7 }} <script>alert(1)</script>", "1") == []


def test_office_catalogue_checks(shared_office, tmp_path):
    from synth.data.dataset import Dataset
    from synth.data.importer import import_folder
    from synth.io import read_json

    import_folder(shared_office, tmp_path / "office")
    ds = Dataset(tmp_path / "office")
    sids = {str(k): v for k, v in read_json(shared_office / "index.json").items()}
    cat = Catalog.from_items(ds.items, sids)
    items = list(ds.items.values())
    texts = [" ".join(it.description.split()[:150]) for it in items[:1500]]
    ids = [it.item_id for it in items]
    # Both checks over real descriptions, against the whole catalogue: only known problem codes.
    # (No rate floor here: a throughput threshold fails on a slow or busy machine; make bench.)
    seen = set()
    for i, text in enumerate(texts):
        seen.update(cat.sid_only_problems(text, []))
        seen.update(cat.leak_problems(text, ids[(i * 7) % len(ids)]))
    assert seen <= {"title_in_text", "leak_title", "leak_sid", "unknown_sid", "missing_sid"}, seen
    # Each item's own description usually repeats its title: most are caught.
    own = sum(1 for it in items if any(it.item_id in o for _g, o in cat.title_hits(it.description)))
    assert own > 0.15 * len(items)
