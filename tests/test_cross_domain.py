"""Combined datasets (``DATASET=a+b``): namespaced ids, one SID space unique across domains, the parts'
cached teacher answers reused, GRPO on one part, evaluation and the report per domain, clear errors.

The second domain is built here (only Office is in ../shared/data): ``make_dataset`` writes small
catalogues whose item ids repeat across datasets (I000, I001, ...), which is what namespacing is for.
"""
import json

import pytest

from synth.data.__main__ import main as data_main
from synth.data.combined import domain_of, of_part, parts_of, sid_domain_stats
from synth.data.dataset import Dataset, DatasetError
from synth.settings import ConfigError
from synth.sid import sid_string
from tests.synth_fixtures import make_dataset


@pytest.fixture()
def two(tmp_path):
    make_dataset(tmp_path, "a", n_items=24, n_train=24, seed=0)
    make_dataset(tmp_path, "b", n_items=16, n_train=10, seed=1)
    return tmp_path


def test_names_and_namespaces():
    assert parts_of("office") is None and parts_of("office+industrial") == ["office", "industrial"]
    for bad in ("office+", "office+office"):
        with pytest.raises(DatasetError):
            parts_of(bad)
    assert domain_of("office:B00:7") == "office"
    assert of_part({"a:1": 1, "b:1": 2}, "b") == {"b:1": 2} and of_part({"a:1": 1}, None) == {"a:1": 1}


def test_make_data_combines_prepared_parts(two, capsys):
    assert data_main(["--dataset", "a+b", "--data-dir", str(two)]) == 0
    ds = Dataset(two / "a+b")
    a, b = Dataset(two / "a"), Dataset(two / "b")
    assert len(ds.items) == len(a.items) + len(b.items) == 40
    assert set(a.items) & set(b.items)  # the same ids in both parts ...
    assert set(ds.items) == {f"a:{i}" for i in a.items} | {f"b:{i}" for i in b.items}  # ... apart here
    assert ds.items["b:I003"].title == b.items["I003"].title
    train = list(ds.samples("train"))
    assert len(train) == 34 and [domain_of(s.target) for s in train[:4]] == ["a", "b", "a", "b"]  # interleaved
    assert all(domain_of(i) == domain_of(s.target) for s in train for i in s.history)
    assert {s.user_id for s in train} >= {"a:U000", "b:U000"}
    stats = json.loads((two / "a+b" / "stats.json").read_text())
    assert stats["parts"]["a"]["items"] == 24 and stats["parts"]["b"]["train"] == 10
    source = json.loads((two / "a+b" / "source.json").read_text())
    assert source["kind"] == "combined" and source["parts"] == ["a", "b"] and len(source["parts_sha256"]["a"]) == 4


def test_bad_combinations_are_clear_errors(two, capsys):
    assert data_main(["--dataset", "a+c", "--data-dir", str(two)]) == 2
    err = capsys.readouterr().err
    assert "part 'c' is not prepared" in err and "make data DATASET=c" in err
    assert data_main(["--dataset", "a+b", "--data-dir", str(two), "--from", str(two)]) == 2
    assert "prepare each part" in capsys.readouterr().err
    assert not (two / "a+c").exists()
    data_main(["--dataset", "a+b", "--data-dir", str(two)])
    with pytest.raises(DatasetError, match="one SID space per dataset"):
        Dataset(two / "a+b").sid_set("reference")


def test_rl_dataset_must_be_a_part():
    from train.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.dataset, cfg.run.rl_dataset = "a+b", "c"
    with pytest.raises(ConfigError, match=r"not a part of DATASET=a\+b \(parts: a, b\)"):
        cfg.check()
    cfg.run.dataset = "a"
    with pytest.raises(ConfigError, match="picks a part of a combined dataset"):
        cfg.check()
    cfg.run.dataset, cfg.run.rl_dataset = "a+b", "b"
    cfg.check()


def test_one_sid_space_unique_across_domains_with_per_domain_stats(two, capsys):
    from synth.sids.__main__ import main as sids_main

    common = ["--data-dir", str(two), "--codebook-size", "8", "--epochs", "30", "--seed", "3", "--threads", "1"]
    assert sids_main(["--dataset", "a", *common]) == 0  # part a's own SIDs (and its embedding cache)
    assert data_main(["--dataset", "a+b", "--data-dir", str(two)]) == 0
    capsys.readouterr()
    assert sids_main(["--dataset", "a+b", *common]) == 0
    sids = Dataset(two / "a+b").sids()
    stats = json.loads((two / "a+b" / "sids_stats.json").read_text())
    assert len(sids) == 40 and len({sid_string(t) for t in sids.values()}) == 40 and stats["unique_after"]
    assert stats["parts"] == ["a", "b"] and set(stats["domains"]) == {"a", "b"}
    assert stats["domains"]["a"]["items"] == 24 and len(stats["domains"]["b"]["codes_used_per_level"]) == stats["levels"]
    assert stats == {**stats, **sid_domain_stats(sids)}
    # each part's embeddings come from (or go to) the part's own cache
    assert list((two / "b").glob("embeddings.*.npy")) and len(list((two / "a").glob("embeddings.*.npy"))) == 1
    # the parts and their combination must share SID settings
    assert sids_main(["--dataset", "a+b", *common[:2], "--codebook-size", "16", "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert "part 'a' has SIDs made with codebook_size=8" in err and "make sids DATASET=a" in err


def test_domain_stats_count_shared_first_level_codes():
    sids = {"a:1": ["<a_0>", "<b_0>"], "a:2": ["<a_1>", "<b_0>"], "b:1": ["<a_1>", "<b_1>"], "b:2": ["<a_2>", "<b_0>"]}
    st = sid_domain_stats(sids)
    assert st["first_level_codes"] == 3 and st["first_level_codes_shared"] == 1
    assert st["domains"]["a"] == {"items": 2, "codes_used_per_level": [2, 1], "first_level_codes_shared": 1,
                                  "items_under_shared_first_level": 0.5}


def test_synthesis_reuses_a_parts_cached_answers(two, tmp_path):
    """A part synthesised first: its records' prompts are the same in the combination when its SIDs are,
    so a combined run sends only the other part's requests (counted by the teacher server)."""
    from synth.engine import SynthConfig, run
    from tests.teacher_server import ServerConfig, TeacherServer

    data_main(["--dataset", "a+b", "--data-dir", str(two)])
    a, b = Dataset(two / "a").sids(), Dataset(two / "b").sids()
    combined = {f"a:{i}": t for i, t in a.items()}
    combined.update({f"b:{i}": [t[0], t[1], f"<c_{100 + k}>"] for k, (i, t) in enumerate(b.items())})
    (two / "a+b" / "sids.json").write_text(json.dumps(combined))

    def synth(name, srv, tag):
        before = srv.requests
        res = run(SynthConfig(name, teacher="openai/teacher", api_base=srv.base_url, data_dir=str(two),
                              corpora_dir=str(tmp_path / f"corpora-{tag}"), cache_dir=str(tmp_path / f"cache-{tag}"),
                              concurrency=8, backoff_initial=0.01, progress=False))
        assert res.manifest["complete"]
        return srv.requests - before, res

    with TeacherServer(ServerConfig()) as srv:
        sent_a, _ = synth("a", srv, "shared")
        sent_ab, res = synth("a+b", srv, "shared")  # same cache as part a's run
        sent_b, _ = synth("b", srv, "b-alone")  # part b alone, a fresh cache: what b costs
    assert sent_a > 0 and sent_b > 0
    assert res.manifest["requested"] == 40 + 34  # every item and training user of both parts
    assert sent_ab == sent_b  # a's records all came from the cache a's own run filled
    items = [json.loads(line) for line in (res.out_dir / "items.jsonl").read_text().splitlines()]
    assert {domain_of(r["item_id"]) for r in items} == {"a", "b"}


def test_evaluation_ranks_each_domain_over_its_own_items(two):
    """Rows of a combined dataset carry their domain; each domain is decoded over its part of the SID space,
    the overall metrics pool the domains, and per-domain metrics sit under "domains"."""
    from synth.sid import vocabulary_of
    from train import tasks
    from train.config import EvalConfig
    from train.decoding import DecodeConfig
    from train.evaluate import domain_groups, evaluate_model, ranked_lists
    from train.metrics import ranking_metrics
    from train.model import build_tiny
    from train.trie import SidTrie

    data_main(["--dataset", "a+b", "--data-dir", str(two)])
    a, b = Dataset(two / "a").sids(), Dataset(two / "b").sids()
    combined = {f"a:{i}": t for i, t in a.items()}
    combined.update({f"b:{i}": [t[0], t[1], f"<c_{100 + k}>"] for k, (i, t) in enumerate(b.items())})
    (two / "a+b" / "sids.json").write_text(json.dumps(combined))
    inputs = tasks.load_inputs("a+b", data_dir=two)
    model, tok = build_tiny(vocabulary_of(combined.values()), texts=["pens paper"] * 4)
    rows = tasks.rec_rows(inputs, "train", tok, limit=12)
    assert [r["domain"] for r in rows[:2]] == ["a", "b"] and inputs.parts == ["a", "b"]
    assert [r["domain"] for r in tasks.rec_rows(inputs, "train", tok, limit=5, domain="b")] == ["b"] * 5
    groups = domain_groups(rows)
    assert set(groups) == {"a", "b"} and sorted(groups["a"] + groups["b"]) == list(range(12))
    cfg = EvalConfig(num_beams=4, batch_size=8, modes=("direct",))
    out = evaluate_model(model, tok, rows, combined, "direct", cfg)
    assert set(out["domains"]) == {"a", "b"}
    assert out["domains"]["a"]["n"] + out["domains"]["b"]["n"] == out["n"] == 12
    for d, idx in groups.items():  # every list of a domain holds that domain's items only
        trie = SidTrie.from_sids(of_part(combined, d), tok)
        dcfg = DecodeConfig(num_beams=4, num_return=4, batch_size=8)
        lists = ranked_lists(model, tok, [rows[i]["prompt"] for i in idx], trie, dcfg)
        assert all(domain_of(item) == d for ls in lists for item in ls) and all(lists)
    plain = tasks.rec_rows(tasks.load_inputs("a", data_dir=two), "train", tok, limit=3)
    assert "domain" not in plain[0] and "domains" not in evaluate_model(
        model, tok, plain, a, "direct", cfg)
    assert ranking_metrics([0, None])["n"] == 2


def test_report_shows_domains_beside_single_domain_runs(tmp_path):
    from train.report import build

    def metrics(stages, dataset, rl=None):
        return {"kind": "llm", "model": "tiny", "dataset": dataset, "teacher": "metadata",
                "config": {"run": {"rl_dataset": rl}}, "stages": stages}

    m = {"recall@5": 0.1, "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": 0.08, "n": 10}
    for part, r10 in (("a", 0.2), ("b", 0.3)):
        d = tmp_path / part / "tiny-metadata"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(metrics({"grpo": {"direct": {**m, "recall@10": r10}}}, part)))
    d = tmp_path / "a+b" / "tiny-metadata-rl-a"
    d.mkdir(parents=True)
    doms = {"a": {**m, "recall@10": 0.25}, "b": {**m, "recall@10": 0.35, "n": 7}}
    (d / "metrics.json").write_text(json.dumps(metrics({"grpo": {"direct": {**m, "domains": doms}}}, "a+b", "a")))
    text = build("a+b", tmp_path).markdown_path.read_text()
    section = text.split("## Per domain (in-domain vs cross-domain)")[1]
    lines = [line for line in section.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(lines) == 4
    assert lines[0].startswith("| a | tiny-metadata | a | a |") and "0.2000" in lines[0]
    assert lines[1].startswith("| a | tiny-metadata-rl-a | a+b | a |") and "0.2500" in lines[1]
    assert lines[3].startswith("| b | tiny-metadata-rl-a | a+b | a |") and "0.3500" in lines[3] and lines[3].endswith("| 7 |")


@pytest.mark.slow
def test_train_on_two_domains_reinforce_on_one_evaluate_on_each(two):
    """`make data/sids/synth TEACHER=metadata/train MODEL=tiny` on a+b with RL_DATASET=a: align and activate
    on both parts, GRPO on a's prompts alone, every stage evaluated on each part."""
    import subprocess
    import sys
    from pathlib import Path

    from synth.sids.__main__ import main as sids_main

    repo = Path(__file__).resolve().parents[1]
    assert data_main(["--dataset", "a+b", "--data-dir", str(two)]) == 0
    assert sids_main(["--dataset", "a+b", "--data-dir", str(two), "--codebook-size", "8", "--epochs", "20",
                      "--threads", "1"]) == 0
    env = {"TORCH_THREADS": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(repo), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    synth = subprocess.run([sys.executable, "-m", "synth", "--dataset", "a+b", "--teacher", "metadata",
                            "--data-dir", str(two), "--corpora-dir", str(two / "corpora"),
                            "--cache-dir", str(two / "cache")], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=300)
    assert synth.returncode == 0, synth.stderr[-3000:]
    cmd = [sys.executable, "-m", "train", "run", "--dataset", "a+b", "--teacher", "metadata", "--model", "tiny",
           "--limit", "16", "--rl-dataset", "a", "--data-dir", str(two), "--corpora-dir", str(two / "corpora"),
           "--runs-dir", str(two / "runs"), "--align-epochs", "1", "--activate-epochs", "1", "--grpo-steps", "2",
           "--grpo-eval-every", "0", "--max-think-tokens", "8", "--modes", "direct"]
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    run = two / "runs" / "a+b" / "tiny-metadata-rl-a"
    metrics = json.loads((run / "metrics.json").read_text())
    for stage in ("align", "activate", "grpo"):
        m = metrics["stages"][stage]["direct"]
        assert set(m["domains"]) == {"a", "b"} and m["domains"]["a"]["n"] + m["domains"]["b"]["n"] == m["n"]
    assert "grpo: 16 prompts, 1 validation rows of part a" in res.stderr
    assert metrics["config"]["run"]["rl_dataset"] == "a"


def test_grpo_validation_ranks_each_domain_like_evaluation(two, monkeypatch):
    """GRPO's validation callback on rows of every part scores each part over its own items: the same
    Recall@10 as the stage evaluation of the same rows."""
    from transformers import TrainerState

    from synth.sid import vocabulary_of
    from train import tasks
    from train.config import EvalConfig
    from train.evaluate import evaluate_model
    from train.grpo import make_recall_callback
    from train.model import build_tiny
    from train.trie import SidTrie

    data_main(["--dataset", "a+b", "--data-dir", str(two)])
    a, b = Dataset(two / "a").sids(), Dataset(two / "b").sids()
    combined = {f"a:{i}": t for i, t in a.items()}
    combined.update({f"b:{i}": [t[0], t[1], f"<c_{100 + k}>"] for k, (i, t) in enumerate(b.items())})
    (two / "a+b" / "sids.json").write_text(json.dumps(combined))
    model, tok = build_tiny(vocabulary_of(combined.values()), texts=["pens paper"] * 4)
    rows = tasks.rec_rows(tasks.load_inputs("a+b", data_dir=two), "train", tok, limit=10)
    import train.decoding as decoding

    seen = []
    real = decoding.recommend

    def spy(model, tok, prompts, trie, cfg):  # which items each decoding call may name
        seen.append((len(prompts), {i.split(":")[0] for i in trie.sequences}))
        return real(model, tok, prompts, trie, cfg)

    monkeypatch.setattr(decoding, "recommend", spy)
    cb = make_recall_callback(rows, SidTrie.from_sids(combined, tok), tok, every=1, mode="direct", max_think_tokens=8)
    state = TrainerState()
    cb._evaluate(state, model)
    assert sorted(seen, key=str) == [(5, {"a"}), (5, {"b"})]  # each part over its own items only
    monkeypatch.setattr(decoding, "recommend", real)
    want = evaluate_model(model, tok, rows, combined, "direct", EvalConfig(num_beams=10, batch_size=32))
    assert cb.points[0]["val_n"] == 10 and cb.points[0]["val_recall@10"] == want["recall@10"]
