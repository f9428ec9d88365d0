"""The user-centric contract (issue 11): the stage-1 reasoning is blind to the next item and
SID-only; the stage-2 narrative recites the history by SID, carries the reasoning and ends by
recommending the next item by its SID (an item-prediction text, as the paper's example)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.checks import Catalog
from synth.data.dataset import Dataset, Sample
from synth.engine import SynthConfig, run
from synth.prompts import PromptSet, user_context
from synth.steps import make_steps
from tests.synth_fixtures import make_dataset
from tests.teacher_server import ServerConfig, TeacherServer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", n_items=24, n_train=24)
    ds = Dataset(root / "tiny")
    sids = ds.sids()
    cat = Catalog.from_items(ds.items, sids)
    sample = next(ds.samples("train"))
    return {"root": root, "ds": ds, "sids": sids, "cat": cat, "steps": make_steps(PromptSet(), cat),
            "sample": sample, "ctx": user_context(sample, ds.items, sids)}


def _sid(world, iid: str) -> str:
    return "".join(world["sids"][iid])


def test_the_narrative_prompt_gets_history_target_and_reasoning(world):
    ctx, ds = world["ctx"], world["ds"]
    target = ctx["target"]
    reasoning = "I see a steady interest in desk tools."
    system, user = (m["content"] for m in PromptSet().render("user_narrative", {**ctx, "reasoning": reasoning}))
    for h in ctx["history"]:  # history: titles and SIDs, in order
        assert f"{h['sid']} (title: {h['title']})" in user
    positions = [user.index(h["sid"]) for h in ctx["history"]]
    assert positions == sorted(positions)
    assert f"{target['sid']} (title: {target['title']})" in user  # the next item: title and SID
    assert f"<reasoning>\n{reasoning}\n</reasoning>" in user
    assert f"End the paragraph by recommending {target['sid']}" in user
    assert "never write them" in user and "never write it" in user  # titles: understanding only
    assert "untrusted" in system and "not instructions" in system
    # stage 1 stays blind: the next item's title is there for guidance, never its SID
    reasoning_prompt = PromptSet().render("user_reasoning", ctx)[1]["content"]
    assert target["sid"] not in reasoning_prompt and ds.items[target["item_id"]].title in reasoning_prompt


def test_narrative_checks(world):
    ctx, check = world["ctx"], world["steps"].user_narrative.check
    hist = " then ".join(ctx["history_sids"])
    target, ds = ctx["target"], world["ds"]
    good = f"This shopper went through {hist}. They like tidy desks. I recommend {target['sid']} next."
    assert check(good, ctx).problems == () and check(good, ctx).value == good
    # the target SID is required now (it was a leak before), and so is every history SID
    assert check(f"This shopper went through {hist}. They like tidy desks.", ctx).problems == ("missing_sid",)
    drop_first = good.replace(ctx["history_sids"][0], "something")
    assert check(drop_first, ctx).problems == ("missing_sid",)
    assert check(good + " Or <a_9><b_99><c_999>.", ctx).problems == ("unknown_sid",)
    for iid in (ctx["history"][0]["item_id"], target["item_id"]):  # SID-only: no title, the target's neither
        assert check(good + f" It is the {ds.items[iid].title}.", ctx).problems == ("title_in_text",)
    assert check("- " + good, ctx).problems == ("list",)


def test_reasoning_checks(world):
    ctx, check, ds = world["ctx"], world["steps"].user_reasoning.check, world["ds"]
    hist = ", ".join(ctx["history_sids"])
    target = ctx["target"]
    good = f"I see {hist}; I think this user may enjoy more desk tools."
    assert check(good, ctx).problems == ()
    assert check(good + f" Maybe {target['sid']}.", ctx).problems == ("leak_sid",)
    # the target's title: a leak first, and a title in a SID-only text too
    assert check(good + f" Maybe the {target['title']}.", ctx).problems == ("leak_title", "title_in_text")
    # new: any catalogue title, a history item's as well, keeps a reasoning out of activation
    history_title = ds.items[ctx["history"][0]["item_id"]].title
    assert check(good + f" They liked the {history_title}.", ctx).problems[-1] == "title_in_text"
    assert check(good + " Or <a_9><b_99><c_999>.", ctx).problems == ("unknown_sid",)
    assert check("<think>only thinking</think>", ctx).problems == ("empty_after_cleaning",)


def test_a_repeat_purchase_reasoning_may_name_the_target(world):
    s = world["sample"]
    ctx = user_context(Sample("R", [*s.history, s.target], s.target), world["ds"].items, world["sids"])
    text = f"I see {', '.join(ctx['history_sids'])}; the last one may come back."
    assert world["steps"].user_reasoning.check(text, ctx).problems == ()


def _cfg(root: Path, tmp: Path, base: str | None, **kw) -> SynthConfig:
    kw.setdefault("teacher", "openai/teacher")
    return SynthConfig("tiny", api_base=base, data_dir=str(root), corpora_dir=str(tmp / "corpora"),
                       cache_dir=str(tmp / "cache"), concurrency=4, backoff_initial=0.01, progress=False,
                       items=False, **kw)


def _users(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "users.jsonl").read_text().splitlines()]


def test_loopback_teacher_narratives_end_in_the_next_item(world, tmp_path):
    with TeacherServer(ServerConfig(keep_bodies=True)) as srv:
        result = run(_cfg(world["root"], tmp_path, srv.base_url))
        bodies = srv.bodies
    m = result.manifest
    assert m["written"] == 24 and m["rejected"] == {}
    for r in _users(result.out_dir):
        tsid = _sid(world, r["target"])
        assert r["text"].endswith(f"So I recommend {tsid} next.")
        assert all(_sid(world, h) in r["text"] for h in r["history"]) and tsid not in r["reasoning"]
    narrative_prompts = [b["messages"][-1]["content"] for b in bodies if "<reasoning>" in b["messages"][-1]["content"]]
    assert len(narrative_prompts) == 24 and all("Item to recommend" in p for p in narrative_prompts)


def test_a_teacher_writing_titles_into_its_reasoning_is_rejected(world, tmp_path):
    with TeacherServer(ServerConfig(mode="title")) as srv:
        m = run(_cfg(world["root"], tmp_path, srv.base_url, max_samples=2)).manifest
    # before issue 11 these reasonings passed into activation; now each is rejected at stage 1
    assert m["written"] == 0 and sum(m["rejected"].values()) == 24
    assert set(m["rejected"]) <= {"title_in_text", "leak_title"} and m["rejected"].get("title_in_text", 0) > 12
    rejected = [json.loads(line) for line in (tmp_path / "corpora" / "tiny" / "openai_teacher" /
                                              "rejected.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rejected} == {"user_reasoning"}


def test_metadata_narratives_recite_reason_and_recommend(world, tmp_path):
    result = run(_cfg(world["root"], tmp_path, None, teacher="metadata"))
    users = _users(result.out_dir)
    assert result.manifest["rejected"] == {} and len(users) == 24
    cat = world["cat"]
    for r in users:
        tsid = _sid(world, r["target"])
        closing = r["text"].rsplit(r["reasoning"], 1)[1]
        assert r["text"].startswith("This user has interacted with " + ", ".join(_sid(world, h) for h in r["history"]))
        assert closing.startswith(f" Given this history, the item I recommend next is {tsid}")
        assert cat.sid_only_problems(r["text"], [*r["history"], r["target"]]) == []
        assert cat.leak_problems(r["reasoning"], r["target"], r["history"]) == []
        assert cat.sid_only_problems(r["reasoning"], []) == []
