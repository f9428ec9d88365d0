"""The bench harness on tiny sizes: structure of the rows and results.json, and the
planted near duplicates found. Timings are not asserted (shared, noisy machine)."""
import json

import pytest

from bench import SECTIONS, dedup_bench
from bench.__main__ import main
from bench.corpus import CorpusMaker
from synth.dedup import near_duplicate_indices

KEYS = {"name", "value", "unit", "peer", "peer_name", "ratio", "note"}


def test_dedup_section_rows_and_recall():
    rows = dedup_bench.run(True, sizes=[1500], subset=100, quality_texts=100)
    assert all(set(r) == KEYS for r in rows)
    names = [r["name"] for r in rows]
    for want in ["signatures 1k", "LSH index+query 1k", "dedup total 1k", "peak memory 1k",
                 "datasketch LSH index+query 1k", "recall at 2% edits", "recall at 30% edits"]:
        assert want in names, names
    sig = next(r for r in rows if r["name"] == "signatures 1k")
    assert sig["value"] > 0 and sig["ratio"] == round(sig["value"] / sig["peer"], 3)
    same = next(r for r in rows if r["name"] == "datasketch LSH index+query 1k")
    assert "same answer: True" in same["note"]
    total = next(r for r in rows if r["name"] == "dedup total 1k")
    recall = float(total["note"].split("recall ")[1].split()[0])
    assert recall >= 0.95
    curve = {r["name"]: r["value"] for r in rows if r["name"].startswith("recall at")}
    assert curve["recall at 2% edits"] >= 0.95 and curve["recall at 30% edits"] <= 0.1


def test_bench_corpus_planted_copies_are_found():
    texts, planted = CorpusMaker(seed=3).texts(800, dup_share=0.1, edit_rate=0.03)
    assert len(texts) == 800 and all(80 <= len(t.split()) <= 220 for t in texts)
    assert any("<a_" in t for t in texts)
    truth = {i for i, s in enumerate(planted) if s >= 0}
    assert len(truth) > 40
    flagged = near_duplicate_indices(texts)
    assert len(flagged & truth) >= 0.95 * len(truth)
    assert len(flagged - truth) <= 2


def test_main_writes_results(tmp_path, capsys):
    assert {"dedup", "checks"} <= set(SECTIONS)
    out = tmp_path / "results.json"
    assert main(["--quick", "--only", "checks", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["sections"] == ["checks"]
    assert {"cpu", "cores", "python"} <= set(doc["machine"]) and "timestamp" in doc and "commit" in doc
    assert doc["rows"] and all(r["section"] == "checks" and KEYS <= set(r) for r in doc["rows"])
    per = next(r for r in doc["rows"] if r["name"] == "both checks on a user text")
    assert per["unit"] == "ms" and per["value"] > 0
    assert "both checks on a user text" in capsys.readouterr().out


def test_unknown_section_is_an_error(tmp_path):
    import pytest
    with pytest.raises(SystemExit):
        main(["--only", "nope", "--out", str(tmp_path / "r.json")])


def test_engine_section_measures_engine_and_peers_against_a_real_server():
    """Tiny sizes: the engine, bare aiohttp and bare litellm each in their own process
    against the bench server's processes; the server's counter must match each client's."""
    from bench import engine_bench

    rows = engine_bench.run(True, requests=120, latencies=[0.05], concurrencies=[16], server_workers=1)
    assert all(set(r) == KEYS for r in rows)
    by = {r["name"]: r for r in rows}
    for want in ["server ceiling (latency 0, bare aiohttp c=256)", "engine 0.05s c=16", "engine/aiohttp 0.05s c=16",
                 "engine/litellm 0.05s c=16", "engine CPU 0.05s c=16", "engine peak RSS 0.05s c=16"]:
        assert want in by, list(by)
    eng = by["engine 0.05s c=16"]
    assert eng["peer"] == 16 / 0.05 and eng["ratio"] == round(eng["value"] / eng["peer"], 3)
    assert "120 requests, 60/60 records written" in eng["note"]
    assert by["engine CPU 0.05s c=16"]["value"] > 0 and by["engine peak RSS 0.05s c=16"]["value"] > 10
    assert engine_bench.schedule_bound(2500, 1024, 1.0) == 5000 / 6


def test_cache_section_rerun_sends_nothing():
    from bench import cache_bench

    rows = cache_bench.run(True, records=40)
    by = {r["name"]: r for r in rows}
    assert by["requests sent by the re-run"]["value"] == 0
    assert "the first run sent 80" in by["requests sent by the re-run"]["note"]
    assert by["cached re-run"]["value"] > 0 and "80 cache hits" in by["cached re-run"]["note"]


def test_engine_and_cache_sections_are_registered():
    assert SECTIONS["engine"] == "bench.engine_bench" and SECTIONS["cache"] == "bench.cache_bench"


def _old_line(text: str) -> str:
    """checks._line as it was before the engine bench's profile (lookbehind regexes)."""
    from synth import checks as C

    text = C.SID_RUN_RE.sub(C._BARRIER, text or "").replace("|", C._BARRIER)
    text = C._POSSESSIVE_RE.sub("", text.casefold())
    text = C._BREAK_RE.sub(C._BARRIER, C._DECIMAL_RE.sub(" ", text))
    text = C._BARRIERS_RE.sub("|", C._KEEP_BARRIER_RE.sub(" ", text))
    return " " + " ".join(text.split()) + " "


def test_faster_check_normalisation_gives_the_same_lines():
    import random

    from synth.checks import _line

    rng = random.Random(5)
    alphabet = list("ab1.,'\u2019_|<>\n\t \u00a0\u2003\x0b\x1c-\u00e99:;!?()[]{}\"/\\\u2022\u2013\u2014") + [
        "<a_1>", "<b_22><c_3>", "'s", "\u2019s", "0.7mm", "1,000", "Elmer's"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20000)]
    texts += ["HP 74 Black & 75 Tri-color Ink, 2 Cartridges (CB335WN, CB337WN) 0.7mm", ""]
    assert [_line(t) for t in texts] == [_old_line(t) for t in texts]


def test_fast_stage1_validator_agrees_with_jsonschema():
    import random

    import jsonschema

    from synth.prompts import FastValidator, PromptSet

    schema = PromptSet().schema
    fast, full = FastValidator(schema), jsonschema.Draft202012Validator(schema)
    assert fast._check is not None  # the shipped schema is compiled, not left to jsonschema
    rng = random.Random(0)
    values = ["", "x", "y" * 120, "z" * 2100, 3, None, True, [], ["a"], ["a"] * 9, [""], [1], {"a": 1}]
    good = {"refined_description": "d", "primary_use_cases": ["u"], "target_audiences": ["t"],
            "key_features": ["k"], "related_keywords": ["r"]}
    cases = [good]
    for _ in range(3000):
        d = dict(good)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            key = rng.choice(list(good) + ["extra"])
            if op < 0.2:
                d.pop(key, None)
            else:
                d[key] = rng.choice(values)
        cases.append(d)
    cases += [[], "s", None]
    for d in cases:
        assert (not list(fast.iter_errors(d))) == full.is_valid(d), d
    # a schema with a keyword the fast path does not know is left to jsonschema
    assert FastValidator({"type": "string", "pattern": "^a"})._check is None
    assert list(FastValidator({"type": "string", "pattern": "^a"}).iter_errors("b"))


def test_trainer_section_gpu_code_path_on_cpu(tmp_path):
    """The random-weight shape path (bench tokenizer, Qwen3 config, run_sft/run_grpo, the plain
    loop on TRL's captured batches, recommend with and without the trie) at a toy size on the CPU:
    the rows, their peers and what they count. Timings are not asserted."""
    from bench import trainer_bench as T

    assert SECTIONS["trainer"] == "bench.trainer_bench"
    sizes = T.Sizes(items=120, samples=30, sft_steps=2, sft_batch=2, sft_len=128, grpo_steps=2, grpo_completions=8,
                    grpo_group=4, grpo_per_device=8, grpo_len=6, eval_rows=8, eval_batch=8, think_rows=4,
                    think_tokens=4, eval_repeats=1, sft_repeats=1)
    rows = T.run(True, shape="tiny", device="cpu", sizes=sizes, workdir=tmp_path)
    assert all(set(r) == KEYS for r in rows)
    by = {r["name"]: r for r in rows}
    label = "tiny cpu"
    for want in ["SFT tokens/s", "SFT tokens/s vs model loss", "SFT s/step", "GRPO s/step generate",
                 "eval rows/s beam 10 direct", "eval rows/s vs plain generate", "eval rows/s thinking"]:
        r = by[f"{want} ({label})"]
        assert r["value"] > 0 and r["peer"] > 0 and r["ratio"] == pytest.approx(r["value"] / r["peer"], abs=2e-3), r
    sft = by[f"SFT tokens/s ({label})"]
    assert sft["note"].startswith("2 steps of ~") and "packed bfd 2x128" in sft["note"] and "fused AdamW" in sft["note"]
    tokens = int(sft["note"].split("~")[1].split()[0].replace(",", ""))
    assert 64 < tokens <= 2 * 128  # a packed step: at most 2 rows of 128 tokens
    grpo = by[f"GRPO s/step generate ({label})"]
    assert "8 completions/step, group 4" in grpo["note"] and "plain generate" in grpo["note"]
    assert grpo["peer"] < grpo["value"]  # the step's rollouts (TRL's own timing) are part of the step
    assert "8/8 rows with 10 items" in by[f"eval rows/s beam 10 direct ({label})"]["note"]
    assert not any(r["name"].startswith("target: ") for r in rows)  # the toy shape is a smoke test
    assert list(tmp_path.iterdir()) == []  # the work folder is removed


def test_trainer_bench_settings_and_tokenizer():
    import pytest

    from bench import trainer_bench as T

    shape, device, sizes = T._settings(False, "qwen3-1.7b", "cpu")
    assert (shape, sizes.grpo_completions, sizes.grpo_group, sizes.sft_len, sizes.eval_rows) == \
        ("qwen3-1.7b", 256, 16, 1024, 256)
    assert T._settings(True, None, "cpu")[2] == T.QUICK
    with pytest.raises(ValueError, match="BENCH_TRAINER_SHAPE"):
        T._settings(True, "qwen9", "cpu")
    with pytest.raises(ValueError, match="BENCH_DEVICE"):
        T._settings(True, None, "tpu")
    tok = T.bench_tokenizer(["Acme Gel Pens, Black Ink, 12 Pack"] * 20, vocab_size=600)
    assert {"<|im_start|>", "<|im_end|>", "<think>", "</think>"} <= set(tok.get_vocab())
    text = "Acme Gel Pens \u00e9"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: any text


def test_trainer_targets_one_row_each():
    """The throughput targets of issue 13 as rows: measured, bound, ratio >= 1 when met, on a CPU and at the
    Qwen3-1.7B shape on a GPU (where the GRPO step and its rollout share count too)."""
    from bench import trainer_bench as T
    from bench.common import row

    rows = [row("SFT tokens/s (x)", 90.0, "tok/s", 100.0), row("eval rows/s beam 10 direct (x)", 96.0, "rows/s", 100.0),
            row("SFT MFU (x)", 0.3, "", 0.33), row("GRPO s/step generate (x)", 10.0, "s", 5.0),
            row("GRPO s/step vllm (x)", 6.0, "s", 1.8)]
    cpu = {r["name"]: r for r in T.target_rows(rows, "cpu", None)}
    assert cpu["target: SFT / plain loop >= 0.9"]["note"] == "met" and cpu["target: SFT / plain loop >= 0.9"]["ratio"] == 1.0
    assert cpu["target: constrained / unconstrained eval >= 0.95"]["note"] == "met"
    assert len(cpu) == 2
    gpu = {r["name"]: r for r in T.target_rows(rows, "cuda", "qwen3-1.7b")}
    assert gpu["target: constrained / unconstrained eval >= 0.85"]["note"] == "met"
    assert gpu["target: SFT MFU >= 25%"]["note"] == "met"
    assert gpu["target: GRPO step <= 7.5 s (generate)"]["note"] == "MISSED"
    assert gpu["target: GRPO rollout share <= 40% (generate)"]["note"] == "MISSED"  # 5 of 10 s
    assert gpu["target: GRPO step <= 7.5 s (vllm)"]["note"] == "met"
    assert gpu["target: GRPO rollout share <= 40% (vllm)"]["note"] == "met"  # 1.8 of 6 s
    assert T.target_rows(rows, "cpu", "tiny") == []
