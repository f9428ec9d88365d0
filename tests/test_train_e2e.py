"""End to end: `python -m train run --model tiny --limit ...` on a subset of the shared Office data.

SIDs: the publishers' SIDs from the shared folder (reference_sids.json), used as sids.json for this
test only. Corpus: a tiny teacher corpus written here (item texts and user reasonings that mention
SIDs), in the format of corpora/<dataset>/<teacher>/.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth.data.dataset import Dataset
from synth.io import write_jsonl
from synth.sid import sid_string

REPO = Path(__file__).resolve().parents[1]


def make_office(shared_office: Path, root: Path, corpus_rows: int = 200) -> None:
    """data/office (imported, reference SIDs as sids.json) + corpora/office/testteacher."""
    from synth.data.importer import import_folder

    out = root / "data" / "office"
    import_folder(shared_office, out)
    shutil.copy(out / "reference_sids.json", out / "sids.json")
    ds = Dataset(out)
    sids = {k: sid_string(v) for k, v in ds.sids().items()}
    corpus = root / "corpora" / "office" / "testteacher"
    items = [{"item_id": iid, "sid": sids[iid], "insights": "",
              "text": f"{sids[iid]} is \"{it.title}\". {it.description[:160]}"}
             for iid, it in list(ds.items.items())[:corpus_rows]]
    users = []
    for s in list(ds.samples("train"))[:corpus_rows]:
        last = ds.items[s.history[-1]]
        users.append({"user_id": s.user_id, "history": s.history, "target": s.target,
                      "reasoning": f"The user recently chose {sids[s.history[-1]]} (\"{last.title}\"), so a "
                                   f"related office item is likely next.",
                      "text": f"This user bought {', '.join(sids[h] for h in s.history)}."})
    write_jsonl(corpus / "items.jsonl", items)
    write_jsonl(corpus / "users.jsonl", users)


@pytest.mark.slow
def test_tiny_chain_end_to_end(shared_office, tmp_path):
    make_office(shared_office, tmp_path, corpus_rows=64)
    cmd = [sys.executable, "-m", "train", "run", "--dataset", "office", "--teacher", "testteacher",
           "--model", "tiny", "--limit", "24", "--data-dir", str(tmp_path / "data"),
           "--corpora-dir", str(tmp_path / "corpora"), "--runs-dir", str(tmp_path / "runs"),
           "--align-epochs", "1", "--activate-epochs", "1", "--grpo-steps", "2", "--grpo-eval-every", "1",
           "--max-think-tokens", "16"]
    env = {"TORCH_THREADS": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    run = tmp_path / "runs" / "office" / "tiny-testteacher"
    metrics = json.loads((run / "metrics.json").read_text())
    for stage in ("align", "activate", "grpo"):
        assert (run / stage / "model" / "model.safetensors").exists()
        for mode in ("direct", "thinking"):
            m = metrics["stages"][stage][mode]
            assert m["n"] == 24 and 0.0 <= m["recall@5"] <= m["recall@10"] <= 1.0
        assert metrics["train_wall_s"][stage] > 0
    assert (run / "grpo_curves.png").exists() and (run / "align_loss.png").exists()
    log = json.loads((run / "grpo" / "log_history.json").read_text())
    assert any("val_recall@10" in h for h in log)
    # what each stage ran with on this machine, "auto" settings resolved, in the manifest
    runtime = json.loads((run / "manifest.json").read_text())["runtime"]
    assert set(runtime) == {"align", "activate", "grpo"}
    for stage in ("align", "activate", "grpo"):
        rt = runtime[stage]
        assert rt["attention"] == "sdpa" and rt["weights"] == "float32" and rt["optimizer"] == "adamw_torch_fused"
        assert rt["activation_checkpointing"] is False and rt["device"] == "cpu" and rt["processes"] == 1
    assert runtime["grpo"]["rollout_engine"] == "generate" and "constrained_answer" in runtime["grpo"]["rollout_engine_why"]
    # Stages are skipped when their output exists: a second run trains nothing.
    res2 = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert "finished in" not in res2.stderr
    # the rerun writes the provenance again and keeps what the first run recorded per stage
    assert set(json.loads((run / "manifest.json").read_text())["runtime"]) == {"align", "activate", "grpo"}
