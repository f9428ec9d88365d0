"""Teachers that are not OpenAI: the loopback server behaves as llama.cpp, FastAPI servers,
vLLM and a failing replica do, and the engine (production client path) must cope: step
down the structured-output shape once, never retry what cannot succeed, reject truncated
answers, pass EXTRA_BODY through, spread requests over several endpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.__main__ import main  # noqa: E402
from synth.endpoints import EndpointPool, split_bases  # noqa: E402
from synth.engine import SynthConfig, run  # noqa: E402
from synth.prompts import PromptSet  # noqa: E402
from synth.structured import JSON_OBJECT, JSON_SCHEMA, PROMPT, next_mode, rejects_shape, shape_body  # noqa: E402
from synth.teacher import PreflightError  # noqa: E402
from tests.synth_fixtures import make_dataset  # noqa: E402
from tests.teacher_server import ServerConfig, TeacherServer  # noqa: E402

CONCURRENCY = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", n_items=12, n_train=12)
    return root


def _cfg(data_dir: Path, tmp: Path, base: str, **kw) -> SynthConfig:
    kw.setdefault("teacher", "openai/teacher")
    return SynthConfig("tiny", api_base=base, data_dir=str(data_dir), corpora_dir=str(tmp / "corpora"),
                       cache_dir=str(tmp / kw.pop("cache", "cache")), concurrency=CONCURRENCY,
                       backoff_initial=0.01, progress=False, **kw)


def _argv(data_dir: Path, tmp: Path, base: str, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--teacher", "openai/teacher", "--api-base", base, "--data-dir", str(data_dir),
            "--corpora-dir", str(tmp / "corpora"), "--cache-dir", str(tmp / "cache"), "--quiet",
            "--concurrency", str(CONCURRENCY), "--backoff", "0.01", *extra]


def _assert_complete(m: dict) -> None:
    assert m["complete"] and m["failed"] == 0, m["failed_reasons"]
    assert m["requested"] == m["written"] + sum(m["rejected"].values())


# ---- pure parts ---------------------------------------------------------------------------

def test_shape_rejection_and_the_order_of_modes():
    assert [next_mode(JSON_SCHEMA), next_mode(JSON_OBJECT), next_mode(PROMPT)] == [JSON_OBJECT, PROMPT, None]
    assert rejects_shape(400, "anything") and rejects_shape(422, "")
    assert rejects_shape(500, "Input should be 'text' or 'json_object'")
    assert not rejects_shape(500, "CUDA out of memory") and not rejects_shape(503, "response_format")


def test_looser_shapes_carry_the_schema_in_the_system_turn():
    rf = PromptSet().response_format("item_analysis")
    body = {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}
    assert shape_body(body, rf, JSON_SCHEMA)["response_format"] == rf
    obj, plain = shape_body(body, rf, JSON_OBJECT), shape_body(body, rf, PROMPT)
    assert obj["response_format"] == {"type": "json_object"} and "response_format" not in plain
    for shaped in (obj, plain):
        system = shaped["messages"][0]["content"]
        assert system.startswith("S") and '"refined_description"' in system and shaped["messages"][1] == body["messages"][1]
    assert body["messages"][0]["content"] == "S"  # the caller's body is not changed
    assert shape_body(body, None, PROMPT) is body  # free-text steps are sent as they are


def test_endpoint_pool_spreads_avoids_and_sets_aside():
    now = [0.0]
    pool = EndpointPool(split_bases("http://a/v1, http://b/v1,http://a/v1"), cooldown=10, clock=lambda: now[0])
    a, b = pool.endpoints
    assert [e.base for e in pool.endpoints] == ["http://a/v1", "http://b/v1"]
    first, second = pool.pick(), pool.pick()
    assert {first.base, second.base} == {"http://a/v1", "http://b/v1"}  # fewest in flight
    pool.release(first, "ok")
    pool.release(second, "ok")
    assert pool.pick(avoid=a) is b
    pool.release(b, "ok")
    for _ in range(3):  # three faults in a row: set aside
        pool.release(pool.pick(avoid=b), "fault")
    assert a.set_aside == 1 and pool.healthy() == [b]
    assert all(pool.pick() is b for _ in range(5))
    now[0] = 10.5  # the cooldown has passed: back in the pool
    assert a in pool.healthy()
    pool.release(b, "refused")  # a refusal says nothing about health
    assert b.consecutive_failures == 0 and b.failed == 1


# ---- servers that refuse structured output ----------------------------------------------

@pytest.mark.parametrize("accepts,style,final_mode,statuses", [
    (("json_object", "text"), "llamacpp", JSON_OBJECT, [500]),       # llama-cpp-python
    (("json_object", "text"), "422", JSON_OBJECT, [422]),             # a FastAPI server
    (("text",), "400", PROMPT, [400, 400]),                           # no response_format at all
    (("text",), "llamacpp", PROMPT, [500, 500]),
])
def test_a_server_that_refuses_json_schema_still_gets_the_whole_corpus(data_dir, tmp_path, accepts, style,
                                                                        final_mode, statuses):
    with TeacherServer(ServerConfig(accepts=accepts, reject_style=style)) as srv:
        m = run(_cfg(data_dir, tmp_path, srv.base_url)).manifest
        refused = sum(v for k, v in srv.statuses.items() if k.startswith("refused_"))
    _assert_complete(m)
    assert m["written_items"] == 12 and m["rejected"] == {}
    so = m["structured_output"]
    assert so["start"] == JSON_SCHEMA and so["mode"] == final_mode
    assert [f["status"] for f in so["fallbacks"]] == statuses  # decided once per step, however many saw it
    # only the first wave of requests was refused, and none of them was retried as a fault
    assert refused <= CONCURRENCY * len(statuses) and m["retries"] == {}
    assert m["request_attempts"] == m["requests_sent"] + refused
    assert srv.formats.get("json_schema", 0) <= CONCURRENCY


def test_a_rerun_against_another_server_shape_reuses_the_cache(data_dir, tmp_path):
    with TeacherServer(ServerConfig(accepts=("text",), reject_style="422")) as srv:
        first = run(_cfg(data_dir, tmp_path, srv.base_url)).manifest
    with TeacherServer(ServerConfig()) as srv:
        again = run(_cfg(data_dir, tmp_path, srv.base_url)).manifest
        assert srv.requests == 0  # the shape is the transport's business, not the cache key's
    assert again["cache_hits"] == first["requests_sent"] and again["structured_output"]["fallbacks"] == []


def test_structured_output_can_start_loose(data_dir, tmp_path):
    with TeacherServer(ServerConfig(accepts=("text",))) as srv:
        m = run(_cfg(data_dir, tmp_path, srv.base_url, structured_output="prompt")).manifest
        assert srv.formats == {"text": srv.requests} and not any(k.startswith("refused") for k in srv.statuses)
    _assert_complete(m)
    assert m["structured_output"] == {"start": PROMPT, "mode": PROMPT, "fallbacks": []}


# ---- final errors: not retried, and said plainly ----------------------------------------

def test_a_refused_key_mid_run_stops_the_run_at_once(data_dir, tmp_path, capsys):
    with TeacherServer(ServerConfig(fault_at={3: "401"})) as srv:
        assert main(_argv(data_dir, tmp_path, srv.base_url)) == 2
        sent = srv.requests
    err = capsys.readouterr().err
    assert "refused the API key" in err and "OPENAI_API_KEY" in err and "re-run" in err
    assert sent <= 2 + CONCURRENCY  # the workers in flight finish; nothing new is sent, nothing retried
    assert not (tmp_path / "corpora").exists()  # nothing half-written


def test_an_unknown_model_is_one_clear_error(data_dir, tmp_path, capsys):
    with TeacherServer(ServerConfig(models=("Qwen/Qwen3-8B",))) as srv:
        assert main(_argv(data_dir, tmp_path, srv.base_url)) == 2
        assert srv.requests <= CONCURRENCY and srv.statuses == {"404": srv.requests}
    err = capsys.readouterr().err
    assert "does not know model 'teacher'" in err and "TEACHER=" in err and "API_BASE" in err


def test_a_key_refused_everywhere_fails_preflight(data_dir, tmp_path, capsys):
    with TeacherServer(ServerConfig(status_all=401)) as srv:
        assert main(_argv(data_dir, tmp_path, srv.base_url)) == 2
        assert srv.requests == 0
    assert "refused the API key" in capsys.readouterr().err


def test_a_request_the_server_rejects_fails_once_with_its_message(data_dir, tmp_path):
    # the narrative of the first user (request 26 at concurrency 1: 12 items x 2, then 2 per user)
    with TeacherServer(ServerConfig(fault_at={26: "413"})) as srv:
        cfg = _cfg(data_dir, tmp_path, srv.base_url)
        result = run(SynthConfig(**{**cfg.__dict__, "concurrency": 1}))
        # every record's two requests, the refused one among them, sent once: not retried
        assert srv.requests == 48 and srv.statuses["413"] == 1
    m = result.manifest
    assert m["failed"] == 1 and m["failed_reasons"] == {"http_413": 1} and m["retries"] == {}
    failed = [json.loads(line) for line in (result.out_dir / "rejected.jsonl").read_text().splitlines()]
    assert failed[0]["status"] == "failed" and "injected fault" in failed[0]["detail"]
    assert "injected fault" in result.message and "re-run" in result.message


# ---- truncation ---------------------------------------------------------------------------

def test_truncated_answers_are_rejected_and_drawn_again(data_dir, tmp_path):
    with TeacherServer(ServerConfig(truncate_rate=1.0)) as srv:
        result = run(_cfg(data_dir, tmp_path, srv.base_url, max_samples=2))
    m = result.manifest
    assert m["written"] == 0 and m["failed"] == 0 and m["rejected"] == {"truncated": 24}
    assert m["requests_sent"] == 24 * 2 == m["truncated_answers"] and m["retries"] == {}
    assert "raise MAX_TOKENS" in result.message
    with TeacherServer(ServerConfig(truncate_rate=0.3)) as srv:
        some = run(_cfg(data_dir, tmp_path / "some", srv.base_url)).manifest
        again = run(_cfg(data_dir, tmp_path / "some", srv.base_url)).manifest
    _assert_complete(some)
    assert some["truncated_answers"] > 0 and some["written"] > 0
    # from the cache, a truncated answer is still truncated: the same corpus, nothing sent
    assert again["requests_sent"] == 0 and again["truncated_answers"] == some["truncated_answers"]
    assert again["written"] == some["written"]


# ---- provider parameters -----------------------------------------------------------------

def test_extra_body_reaches_every_request_and_the_cache_key(data_dir, tmp_path, capsys):
    extra = '{"chat_template_kwargs": {"enable_thinking": false}}'
    with TeacherServer(ServerConfig(keep_bodies=True)) as srv:
        assert main(_argv(data_dir, tmp_path, srv.base_url, "--extra-body", extra, "--limit", "2")) == 0
        sent = srv.requests
        assert sent > 0 and all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in srv.bodies)
        assert main(_argv(data_dir, tmp_path, srv.base_url, "--limit", "2")) == 0
        assert srv.requests == 2 * sent  # without it: other requests, other cache keys
        assert main(_argv(data_dir, tmp_path, srv.base_url, "--extra-body", extra, "--limit", "2")) == 0
        assert srv.requests == 2 * sent  # with it again: all from the cache
    manifest = json.loads((tmp_path / "corpora" / "tiny" / "openai_teacher" / "manifest.json").read_text())
    assert manifest["generation"]["extra_body"] == json.loads(extra)
    capsys.readouterr()
    assert main(_argv(data_dir, tmp_path, "http://127.0.0.1:1/v1", "--extra-body", "{oops")) == 2
    assert "EXTRA_BODY is not JSON" in capsys.readouterr().err


# ---- several endpoints -------------------------------------------------------------------

@pytest.mark.parametrize("dead", [ServerConfig(status_all=503), ServerConfig(fault_rates={"503": 1.0})],
                         ids=["down-at-start", "fails-every-chat"])
def test_a_failing_replica_is_set_aside_and_the_run_completes(data_dir, tmp_path, dead):
    with TeacherServer(ServerConfig()) as good, TeacherServer(dead) as bad:
        m = run(_cfg(data_dir, tmp_path, f"{bad.base_url},{good.base_url}")).manifest
        bad_chats, good_chats = bad.requests, good.requests
    _assert_complete(m)
    per = m["endpoints"]
    assert list(per) == [bad.base_url, good.base_url]
    assert per[bad.base_url]["ok"] == 0 and per[bad.base_url]["set_aside"] >= 1
    # each time it is let back in, at most a few requests reach it before it is set aside again
    assert per[bad.base_url]["requests"] == bad_chats <= (3 + CONCURRENCY) * per[bad.base_url]["set_aside"]
    assert per[good.base_url]["ok"] == good_chats == m["requests_sent"]


def test_healthy_replicas_share_the_load(data_dir, tmp_path):
    with TeacherServer(ServerConfig()) as a, TeacherServer(ServerConfig()) as b:
        cfg = _cfg(data_dir, tmp_path, f"{a.base_url},{b.base_url}")
        m = run(SynthConfig(**{**cfg.__dict__, "concurrency": 1})).manifest
        counts = (a.requests, b.requests)
    _assert_complete(m)
    # one in flight at a time: every pick is a tie on in-flight, broken by fewer requests so far
    assert sum(counts) == m["requests_sent"] and abs(counts[0] - counts[1]) <= 1
    assert {k: v["requests"] for k, v in m["endpoints"].items()} == {a.base_url: counts[0], b.base_url: counts[1]}


def test_no_endpoint_answering_is_a_preflight_error(data_dir, tmp_path):
    with TeacherServer(ServerConfig(status_all=503)) as a, TeacherServer(ServerConfig(status_all=503)) as b:
        with pytest.raises(PreflightError, match="cannot reach the teacher"):
            run(_cfg(data_dir, tmp_path, f"{a.base_url},{b.base_url}"))
