"""The synth commands' contract: exit 0 done, 2 bad input (one line naming what to fix), 3 budget,
anything else a traceback; provenance in what they write; one step abstraction for every call."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from synth.data.__main__ import main as data_main
from synth.data.dataset import Item, Sample, write_dataset
from synth.engine import Engine, Rejected, SynthConfig
from synth.sids.__main__ import main as sids_main
from synth.steps import Checked, Step
from synth.teacher import Request, TeacherConfig, make_teacher
from tests.synth_fixtures import make_dataset


def _items(root: Path, n: int = 12) -> None:
    kinds = ["gel pen", "ink cartridge", "stapler", "desk lamp"]
    items = [Item(str(i), f"{kinds[i % 4].title()} model {i}", f"A {kinds[i % 4]} for the office.", "Acme",
                  ["Office Products"]) for i in range(n)]
    samples = [Sample("u1", ["0"], str(n - 1))]
    write_dataset(root / "tiny", items, {"train": samples, "valid": samples, "test": samples}, {"kind": "test"})


def test_sids_user_errors_are_exit_2_and_bugs_are_tracebacks(tmp_path, capsys, monkeypatch):
    assert sids_main(["--dataset", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "make data DATASET=nope" in capsys.readouterr().err
    _items(tmp_path, n=1)
    assert sids_main(["--dataset", "tiny", "--data-dir", str(tmp_path)]) == 2
    assert "SIDs need at least 2" in capsys.readouterr().err
    assert sids_main(["--dataset", "tiny", "--data-dir", str(tmp_path), "--levels", "0"]) == 2
    assert "levels must be >= 1" in capsys.readouterr().err

    from synth.sids import __main__ as cli

    def bug(cfg):
        raise RuntimeError("collision resolution left duplicate SIDs")

    monkeypatch.setattr(cli, "run", bug)
    with pytest.raises(RuntimeError, match="duplicate SIDs"):
        sids_main(["--dataset", "tiny", "--data-dir", str(tmp_path)])


def test_sids_stats_carry_provenance(tmp_path, capsys):
    _items(tmp_path)
    argv = ["--dataset", "tiny", "--data-dir", str(tmp_path), "--codebook-size", "4", "--epochs", "3",
            "--seed", "5", "--threads", "1"]
    assert sids_main(argv) == 0
    stats = json.loads((tmp_path / "tiny" / "sids_stats.json").read_text())
    prov = stats["provenance"]
    assert stats["seed"] == 5 and prov["config"]["rqvae"]["seed"] == 5 and prov["config"]["dataset"] == "tiny"
    assert prov["config"]["rqvae"]["levels"] == 3  # a default, from RQVAEConfig
    assert set(prov["inputs"]) == {"items.jsonl"} and len(prov["inputs"]["items.jsonl"]["sha256"]) == 64
    assert {"command", "versions", "commit", "machine", "created"} <= set(prov)


def test_data_import_records_provenance_and_bad_input_is_exit_2(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "item.json").write_text(json.dumps({str(i): {"title": f"Pen {i}", "description": "", "brand": "B",
                                                         "categories": ""} for i in range(3)}))
    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    for split in ("train", "valid", "test"):
        (src / f"{split}.csv").write_text(header + "u1,\"['Pen 0']\",Pen 1,[0],1,[],<a_1>\n")
    assert data_main(["--dataset", "d", "--from", str(src), "--data-dir", str(tmp_path / "out")]) == 0
    source = json.loads((tmp_path / "out" / "d" / "source.json").read_text())
    assert source["kind"] == "import" and set(source["files_sha256"]) == {"item.json", "train.csv", "valid.csv",
                                                                          "test.csv"}
    prov = source["provenance"]
    assert prov["inputs"]["item.json"]["sha256"] == source["files_sha256"]["item.json"]
    assert prov["config"]["from_dir"] == str(src) and prov["config"]["dataset"] == "d"
    capsys.readouterr()
    (src / "valid.csv").unlink()
    assert data_main(["--dataset", "d", "--from", str(src), "--data-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FROM=") and "valid.csv" in err and err.count("\n") == 1


# ---- the step abstraction -------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", n_items=8, n_train=4)
    return Engine(SynthConfig("tiny", data_dir=str(root), max_samples=3, progress=False))


def _counting_step(answers: list[str]) -> tuple[Step, list[dict]]:
    """A rule-answered step: the k-th draw answers answers[k]; 'ok' passes the check."""
    seen: list[dict] = []

    def rule(ctx: dict) -> str:
        seen.append(ctx)
        return answers[len(seen) - 1]

    def check(answer: str, ctx: dict) -> Checked:
        return Checked(answer.upper()) if answer == "ok" else Checked(problems=(f"bad_{answer}",), text=answer)

    return Step("item_analysis", check, rule), seen


def test_a_step_is_drawn_again_until_it_passes(engine):
    step, seen = _counting_step(["x", "y", "ok"])
    assert asyncio.run(engine.run_step(step, {"item_id": "I000"})) == "OK"
    assert len(seen) == 3 and all(ctx == {"item_id": "I000"} for ctx in seen)


def test_a_step_that_never_passes_rejects_with_the_last_reason(engine):
    step, seen = _counting_step(["x", "y", "z", "ok"])
    with pytest.raises(Rejected) as e:
        asyncio.run(engine.run_step(step, {}))
    assert (e.value.stage, e.value.reason, e.value.text) == ("item_analysis", "bad_z", "z") and len(seen) == 3


def test_the_metadata_baseline_has_no_transport_and_requests_no_context(engine):
    with pytest.raises(ValueError, match="metadata"):
        make_teacher(TeacherConfig("metadata"))
    assert "context" not in Request.__dataclass_fields__
    step, ctx = engine.opening(0)
    insights = json.loads(step.rule(ctx))  # the rule answers from the template context alone
    assert step.check(json.dumps(insights), ctx).value == insights
