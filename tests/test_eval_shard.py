"""Evaluation sharded over processes: the pure sharding, and a real 2-process CPU run (torchrun, gloo on
127.0.0.1) whose gathered ranked lists and metrics equal one process's evaluation of the same rows."""
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from train.dist import shard, unshard

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 20])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_unshard_inverts_shard(n, world):
    rows = [f"row{i}" for i in range(n)]
    parts = [shard(rows, r, world) for r in range(world)]
    assert sorted(x for p in parts for x in p) == sorted(rows)  # each row once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert unshard(parts) == rows


def test_shard_and_unshard_refuse_what_no_sharding_gives():
    with pytest.raises(ValueError):
        shard([1, 2], 2, 2)
    with pytest.raises(ValueError):
        unshard([[1], [2, 3]])  # rank 1 cannot hold more rows than rank 0


def test_sharded_batches_are_one_process_batches():
    """Each process decodes whole batches of the one-process batching, in length order: train.decoding's
    stable sort then re-forms exactly those batches."""
    from train.decoding import DecodeConfig
    from train.evaluate import decode_batches

    class Tok:  # a prompt's length in "tokens" is its length in characters
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    rng = random.Random(0)
    prompts = ["x" * rng.randrange(1, 30) for _ in range(20)]
    dcfg = DecodeConfig(batch_size=3)
    batches = decode_batches(Tok(), prompts, dcfg)
    assert sorted(i for b in batches for i in b) == list(range(20)) and [len(b) for b in batches][-1] == 2
    for r in range(2):
        mine = [i for b in shard(batches, r, 2) for i in b]
        lengths = [len(prompts[i]) for i in mine]
        assert lengths == sorted(lengths)
        order = sorted(range(len(mine)), key=lambda j: lengths[j])  # what train.decoding does with the shard
        rebatched = [[mine[j] for j in order[s: s + 3]] for s in range(0, len(mine), 3)]
        assert rebatched == shard(batches, r, 2)



def test_evaluation_work_is_decided_by_the_main_process(tmp_path, monkeypatch):
    """One process: as before. Others: they read no run file; the main process's list reaches them
    (``train.dist.from_main``), and settings alone (no eval selected) return [] without a collective."""
    from types import SimpleNamespace

    from synth.io import write_json
    from train import pipeline
    from train.config import EvalConfig

    align = next(s for s in pipeline.TABLE if s.name == "align")
    run = pipeline.Run(SimpleNamespace(run=SimpleNamespace(stages=("align", "eval"), force=False)), None, tmp_path)
    cfg = EvalConfig(modes=("direct", "thinking"))
    assert pipeline.evaluation_work(run, cfg, align) == []  # no model yet
    (tmp_path / "align/model").mkdir(parents=True)
    (tmp_path / "align/model/config.json").write_text("{}")
    write_json(run.metrics, {"stages": {"align": {"direct": {"n": 1}}}})
    assert pipeline.evaluation_work(run, cfg, align) == [("align", tmp_path / "align/model", ["thinking"])]

    monkeypatch.setattr(pipeline, "is_main", lambda: False)
    monkeypatch.setattr(pipeline, "from_main", lambda obj: ("from main", obj))
    assert pipeline.evaluation_work(run, cfg, align) == ("from main", None)
    run.cfg.run.stages = ("align",)
    assert pipeline.evaluation_work(run, cfg, align) == []


WORKER = r'''
import json, sys
from pathlib import Path

import torch
import torch.distributed as td

torch.set_num_threads(1)
from train.config import EvalConfig
from train.dist import from_main, rank
from train.evaluate import evaluate_checkpoint, ranked_lists
from train.decoding import DecodeConfig
from train.model import load_model
from train.trie import SidTrie

ckpt, spec, out = sys.argv[1:4]
spec = json.loads(Path(spec).read_text())
cfg = EvalConfig(**spec["cfg"])
assert not td.is_initialized()
results = evaluate_checkpoint(ckpt, lambda tok: spec["rows"], spec["sids"], cfg.modes, cfg)  # initialises the group
assert td.is_initialized() and td.get_world_size() == 2 and "gloo" in str(td.get_backend()), td.get_backend()
model, tok = load_model(ckpt)
dcfg = DecodeConfig(num_beams=cfg.num_beams, num_return=cfg.num_beams, batch_size=cfg.batch_size)
lists = ranked_lists(model, tok, [r["prompt"] for r in spec["rows"]], SidTrie.from_sids(spec["sids"], tok), dcfg,
                     sharded=True)
work = from_main(["main's work", rank()] if rank() == 0 else None)
Path(out, f"rank{td.get_rank()}.json").write_text(json.dumps({"results": results, "lists": lists, "work": work}))
td.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_wall(results: dict) -> dict:
    return {mode: {k: v for k, v in m.items() if k != "wall_s"} for mode, m in results.items()}


@pytest.mark.slow
def test_two_processes_evaluate_as_one(tmp_path):
    from synth.sid import sid_string
    from tests.test_decoding import make_sids
    from train.config import EvalConfig
    from train.decoding import DecodeConfig
    from train.evaluate import evaluate_checkpoint, ranked_lists
    from train.model import build_tiny, load_model
    from train.templates import rec_messages, render_prompt
    from train.trie import SidTrie

    sids = make_sids(40)
    build_tiny(sorted({t for s in sids.values() for t in s}), tmp_path / "model", hidden=64, layers=2, heads=2,
               vocab_size=2048, seed=0)
    _, tok = load_model(tmp_path / "model")
    rng = random.Random(0)
    items = sorted(sids)
    histories = [rng.sample(items, rng.randrange(1, 8)) for _ in range(20)]  # prompts of varied lengths
    rows = [{"prompt": render_prompt(tok, rec_messages([sid_string(sids[k]) for k in h])),
             "target": rng.choice(items), "slices": rng.choice([(), ("cold",), ("repeat",)])} for h in histories]
    cfg = {"modes": ["direct", "thinking"], "num_beams": 5, "batch_size": 3, "max_think_tokens": 4}
    (tmp_path / "spec.json").write_text(json.dumps({"rows": rows, "sids": sids, "cfg": cfg}))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_", "RANK", "WORLD_SIZE",
                                                                     "LOCAL_RANK", "MASTER_"))}
    env.update(TORCH_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo",
               CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(tmp_path / "worker.py"), str(tmp_path / "model"), str(tmp_path / "spec.json"), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # One process, the same rows (rows come back from JSON with lists for tuples, as the workers saw them).
    rows = json.loads((tmp_path / "spec.json").read_text())["rows"]
    ecfg = EvalConfig(**cfg)
    one = evaluate_checkpoint(tmp_path / "model", lambda tok: rows, sids, ecfg.modes, ecfg, sharded=False)
    model, tok = load_model(tmp_path / "model")
    dcfg = DecodeConfig(num_beams=5, num_return=5, batch_size=3)
    lists = ranked_lists(model, tok, [r["prompt"] for r in rows], SidTrie.from_sids(sids, tok), dcfg)
    assert len(lists) == 20 and all(lists)
    for g in got:  # every process holds all rows' results
        assert g["lists"] == lists  # direct mode: the same batches, the same lists, in the rows' order
        assert strip_wall(g["results"])["direct"] == strip_wall(one)["direct"]
        assert g["results"]["thinking"]["n"] == 20 and g["work"] == ["main's work", 0]
    assert strip_wall(got[0]["results"]) == strip_wall(got[1]["results"])
