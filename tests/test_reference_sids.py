"""SID sets (SIDS=own | reference): one place chooses the SID file, corpora and runs record it, a run
refuses a corpus made with other SIDs, and evaluation counts a hit by SID (so a target that shares
its SID with another item, as in the publishers' reference SIDs, can be hit)."""
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from synth.data.dataset import CUSTOM, OWN, REFERENCE, SID_SETS, Dataset, DatasetError
from synth.engine import SynthConfig, run
from synth.io import write_jsonl
from tests.synth_fixtures import make_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data_dir(tmp_path):
    root = tmp_path / "data"
    src = make_dataset(root, "tiny", n_items=8, n_train=6)
    own = json.loads((src / "sids.json").read_text())
    # The publishers' kind of SID map: I001 shares I000's SID.
    ref = {iid: [f"<a_{k % 3}>", f"<b_{k % 5}>", f"<c_{k + 100}>"] for k, iid in enumerate(own)}
    ref["I001"] = list(ref["I000"])
    (src / "reference_sids.json").write_text(json.dumps(ref))
    return root


def test_one_place_chooses_the_sid_file(data_dir, tmp_path):
    ds = Dataset(data_dir / "tiny")
    assert set(SID_SETS) == {OWN, REFERENCE}
    assert ds.sid_set().name == ds.sid_set("own").name == OWN and ds.sid_set().path.name == "sids.json"
    ref = ds.sid_set("reference")
    assert ref.name == REFERENCE and ref.path.name == "reference_sids.json"
    assert ds.sids("reference")["I001"] == ds.sids("reference")["I000"] != ds.sids()["I001"]
    rec = ref.record()
    assert rec["name"] == REFERENCE and len(rec["sha256"]) == 64 and rec["file"].endswith("reference_sids.json")
    # a path: the old --sids override; a path to the dataset's own files keeps the set's name
    assert ds.sid_set(str(ds.path / "reference_sids.json")).name == REFERENCE
    other = tmp_path / "mine.json"
    shutil.copy(ds.path / "sids.json", other)
    assert ds.sid_set(str(other)).name == CUSTOM
    with pytest.raises(DatasetError, match="expected one of own, reference"):
        ds.sid_set("referenc")
    with pytest.raises(DatasetError, match="no such SID map"):
        ds.sid_set(str(tmp_path / "absent.json"))
    (ds.path / "reference_sids.json").unlink()
    with pytest.raises(DatasetError, match=r"reference_sids.json not found.*index.json.*SIDS=own"):
        ds.sid_set("reference")


def _synth(data_dir, tmp_path, sids=OWN):
    cfg = SynthConfig("tiny", data_dir=str(data_dir), corpora_dir=str(tmp_path / "corpora"),
                      cache_dir=str(tmp_path / "cache"), progress=False, limit=3, sids=sids)
    result = run(cfg)
    assert result.exit_code == 0, result.message
    return result


def test_corpora_record_their_sid_set_and_live_in_their_own_folder(data_dir, tmp_path):
    own = _synth(data_dir, tmp_path, OWN)
    ref = _synth(data_dir, tmp_path, REFERENCE)
    assert own.out_dir == tmp_path / "corpora" / "tiny" / "metadata"
    assert ref.out_dir == tmp_path / "corpora" / "tiny" / "metadata@reference"
    for res, name, file in ((own, OWN, "sids.json"), (ref, REFERENCE, "reference_sids.json")):
        m = json.loads((res.out_dir / "manifest.json").read_text())
        assert m["sid_set"]["name"] == name and m["sid_set"]["file"].endswith(file)
        assert m["sid_set"]["sha256"] == m["dataset_files"][file] == m["provenance"]["inputs"][file]["sha256"]
        assert m["provenance"]["config"]["sids"] == name
    # the reference corpus names items by the reference SIDs
    ref_sids = Dataset(data_dir / "tiny").sids("reference")
    items = [json.loads(line) for line in (ref.out_dir / "items.jsonl").read_text().splitlines()]
    assert items and all(it["sid"] == "".join(ref_sids[it["item_id"]]) for it in items)


def test_a_run_refuses_a_corpus_made_with_other_sids(data_dir, tmp_path):
    from train import tasks

    corpora = tmp_path / "corpora"
    _synth(data_dir, tmp_path, OWN)
    ok = tasks.load_inputs("tiny", data_dir, corpora, "metadata")
    assert ok.sid_set.name == OWN and ok.corpus_dir == corpora / "tiny" / "metadata"
    # no corpus for the reference SIDs yet: the own one is not used, and the message says what to run
    with pytest.raises(DatasetError, match=r"metadata@reference: no items.jsonl/users.jsonl for the 'reference' "
                                           r"SIDs .*metadata holds a corpus made with other SIDs.*"
                                           r"make synth DATASET=tiny TEACHER=metadata SIDS=reference"):
        tasks.load_inputs("tiny", data_dir, corpora, "metadata", sids="reference")
    # a corpus of the own SIDs moved into the reference folder is refused by its manifest, naming both
    shutil.copytree(corpora / "tiny" / "metadata", corpora / "tiny" / "metadata@reference")
    with pytest.raises(DatasetError) as e:
        tasks.load_inputs("tiny", data_dir, corpora, "metadata", sids="reference")
    msg = str(e.value)
    assert "written with the 'own' SIDs" in msg and "this run uses the 'reference' SIDs" in msg
    assert "make synth DATASET=tiny TEACHER=metadata SIDS=reference" in msg and "or run with SIDS=own" in msg
    # the right corpus is accepted
    _synth(data_dir, tmp_path, REFERENCE)
    ref = tasks.load_inputs("tiny", data_dir, corpora, "metadata", sids="reference")
    assert ref.sid_set.name == REFERENCE and ref.sid_of["I001"] == ref.sid_of["I000"]
    # the own SIDs recomputed after the corpus was written: refused too (its texts name the old SIDs)
    sids = data_dir / "tiny" / "sids.json"
    table = json.loads(sids.read_text())
    table["I000"], table["I002"] = table["I002"], table["I000"]
    sids.write_text(json.dumps(table))
    with pytest.raises(DatasetError, match=r"another version of the 'own' SIDs.*make synth DATASET=tiny "
                                           r"TEACHER=metadata`"):
        tasks.load_inputs("tiny", data_dir, corpora, "metadata")


def test_a_corpus_from_before_sid_sets_counts_as_own(data_dir, tmp_path):
    from train import tasks

    corpora = tmp_path / "corpora"
    out = _synth(data_dir, tmp_path, OWN).out_dir
    m = json.loads((out / "manifest.json").read_text())
    del m["sid_set"]  # an older manifest: only dataset_files["sids.json"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert tasks.load_inputs("tiny", data_dir, corpora, "metadata").corpus_dir == out
    shutil.copytree(out, corpora / "tiny" / "metadata@reference")
    with pytest.raises(DatasetError, match="written with the 'own' SIDs"):
        tasks.load_inputs("tiny", data_dir, corpora, "metadata", sids="reference")
    # a hand-written corpus without a manifest cannot be checked: accepted (the e2e test writes one)
    hand = corpora / "tiny" / "hand"
    write_jsonl(hand / "items.jsonl", [{"item_id": "I000", "sid": "x", "text": "t", "insights": ""}])
    assert tasks.load_inputs("tiny", data_dir, corpora, "hand").corpus_dir == hand


def _make_args(target: str, *assignments: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("SIDS", "MODEL", "TEACHER", "LIMIT")}
    out = subprocess.run(["make", "-n", "--no-print-directory", target, *assignments], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return shlex.split(out.replace("\\\n", " "))


@pytest.mark.parametrize("target,extra", [("synth", ()), ("train", ("MODEL=tiny",)), ("eval", ("CKPT=x",))])
def test_make_passes_sids_only_when_set(target, extra):
    words = _make_args(target, "DATASET=office", *extra, "SIDS=reference")
    assert words[words.index("--sids") + 1] == "reference"
    assert "--sids" not in _make_args(target, "DATASET=office", *extra)


def test_evaluation_hits_a_target_that_shares_its_sid():
    """The decoder names a shared SID by its first item (x); the target x2 has that SID: a hit."""
    from tests.test_decoding import FEW_SIDS, build_model, build_tokenizer, prompt
    from train.config import EvalConfig
    from train.decoding import DecodeConfig, recommend
    from train.evaluate import evaluate_model
    from train.metrics import rank_of, ranking_metrics
    from train.trie import SidTrie

    tok = build_tokenizer()
    model = build_model(tok)
    sids = {**FEW_SIDS, "x2": list(FEW_SIDS["x"])}  # x2 shares x's SID
    rows = [{"prompt": prompt(tok, "the user bought pens"), "target": "x2"},
            {"prompt": prompt(tok, "ink"), "target": "y"}]
    cfg = EvalConfig(modes=("direct",), num_beams=10, batch_size=4)
    out = evaluate_model(model, tok, rows, sids, "direct", cfg)
    assert out["recall@10"] == 1.0 and out["n"] == 2  # 3 SIDs, 10 beams: every SID is in every list
    assert out["targets_sharing_sid"] == 1 and out["hit"] == "sid"
    # the old item-id rule could never hit x2: the decoder only ever names x
    ranked = recommend(model, tok, [r["prompt"] for r in rows], SidTrie.from_sids(sids, tok),
                       DecodeConfig(num_beams=10, num_return=10))
    assert all("x2" not in rk and "x" in rk for rk in ranked)
    assert ranking_metrics([rank_of(r["target"], rk) for r, rk in zip(rows, ranked)])["recall@10"] == 0.5


def test_evaluation_by_sid_equals_the_item_id_rule_when_sids_are_unique():
    from tests.test_decoding import PROMPTS, SIDS, build_model, build_tokenizer, prompt
    from train.config import EvalConfig
    from train.decoding import DecodeConfig, recommend
    from train.evaluate import evaluate_model
    from train.metrics import rank_of, ranking_metrics
    from train.trie import SidTrie

    tok = build_tokenizer()
    model = build_model(tok)
    trie = SidTrie.from_sids(SIDS, tok)
    texts = [prompt(tok, p) for p in PROMPTS]
    # one batch of the same prompts in both calls: the same beams
    ranked = recommend(model, tok, texts, trie, DecodeConfig(num_beams=10, num_return=10, batch_size=8))
    unranked = [[i for i in SIDS if i not in rk][:3] for rk in ranked]
    seen = []
    for j in range(13):  # target j of each prompt: its ranked items in turn, then items it did not rank
        rows = [{"prompt": t, "target": [*rk, *un][j % (len(rk) + len(un))]}
                for t, rk, un in zip(texts, ranked, unranked)]
        old = ranking_metrics([rank_of(r["target"], rk) for r, rk in zip(rows, ranked)])
        new = evaluate_model(model, tok, rows, SIDS, "direct", EvalConfig(num_beams=10, batch_size=8))
        assert {k: new[k] for k in old} == old and new["targets_sharing_sid"] == 0
        seen.append(old["recall@10"])
    assert min(seen) < max(seen)  # hits and misses both exercised


def test_run_folders_say_their_sid_set_and_are_not_resumed_with_other_sids(tmp_path):
    from types import SimpleNamespace

    from synth.io import write_json
    from train.config import RunConfig, TrainConfig
    from train.pipeline import Run, check_run_sids, run_name

    def cfg(sids, force=False):
        return TrainConfig(run=RunConfig(dataset="office", teacher="metadata", model="tiny", sids=sids, force=force))

    assert run_name(cfg("own")) == "tiny-metadata"
    assert run_name(cfg("reference")) == "tiny-metadata@reference"
    assert run_name(cfg(str(tmp_path / "mine.json"))) == "tiny-metadata@custom"
    ref = {"name": "reference", "file": "data/office/reference_sids.json", "sha256": "ab" * 32}
    own = {"name": "own", "file": "data/office/sids.json", "sha256": "cd" * 32}
    run = Run(cfg("own"), SimpleNamespace(), tmp_path / "r")
    run.dir.mkdir()
    check_run_sids(run, own)  # a new folder
    write_json(run.metrics, {"sid_set": ref, "stages": {}})
    check_run_sids(Run(cfg("reference"), SimpleNamespace(), run.dir), ref)  # resumed with the same SIDs
    with pytest.raises(DatasetError, match=r"trained with the 'reference' SIDs .* uses the 'own' SIDs.*RUN=.*FORCE=1"):
        check_run_sids(run, own)
    check_run_sids(Run(cfg("own", force=True), SimpleNamespace(), run.dir), own)
    assert not run.metrics.exists()  # FORCE=1 retrains with the own SIDs: the reference metrics are gone


def test_make_eval_refuses_a_checkpoint_of_other_sids(tmp_path):
    from synth.data.dataset import SidSet
    from synth.io import write_json
    from train.pipeline import check_ckpt_sids

    ckpt = tmp_path / "runs" / "office" / "tiny-metadata@reference" / "grpo" / "model"
    ckpt.mkdir(parents=True)
    write_json(ckpt.parent.parent / "metrics.json", {"sid_set": {"name": "reference", "sha256": "ab" * 32}})
    check_ckpt_sids(ckpt, SidSet("reference", tmp_path / "reference_sids.json"))
    with pytest.raises(DatasetError, match=r"trained with the 'reference' SIDs .* evaluate it with SIDS=reference"):
        check_ckpt_sids(ckpt, SidSet("own", tmp_path / "sids.json"))
    check_ckpt_sids(tmp_path / "elsewhere" / "model", SidSet("own", tmp_path / "sids.json"))  # no run folder
