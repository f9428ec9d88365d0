"""``make view``: the corpus page, built from a real engine run (teacher server on loopback, some answers
rejected), opened from disk in a real headless Chromium: its numbers are the manifest's, a SID search finds
its record, it asks for nothing over the network, and an item title carrying markup stays text."""
import json
import re

import pytest

from synth.data.dataset import Dataset
from synth.io import read_json, write_jsonl
from synth.view import build, histogram, near_duplicate_clusters, page
from tests import browser
from tests.synth_fixtures import make_dataset

EVIL = 'Evil <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> Stapler </script><!--'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny dataset whose item I005 has a hostile title, and a corpus of it from the teacher server with
    a third of the answers rejected."""
    from synth.engine import SynthConfig, run
    from tests.teacher_server import ServerConfig, TeacherServer

    root = tmp_path_factory.mktemp("view")
    make_dataset(root / "data", "tiny", n_items=24, n_train=24)
    items = [json.loads(line) for line in (root / "data" / "tiny" / "items.jsonl").read_text().splitlines()]
    for it in items:
        if it["item_id"] == "I005":
            it["title"] = EVIL
    write_jsonl(root / "data" / "tiny" / "items.jsonl", items)
    with TeacherServer(ServerConfig(reject_rate=0.3, seed=3)) as srv:
        res = run(SynthConfig("tiny", teacher="openai/teacher", api_base=srv.base_url, data_dir=str(root / "data"),
                              corpora_dir=str(root / "corpora"), cache_dir=str(root / "cache"), concurrency=8,
                              max_samples=1, backoff_initial=0.01, progress=False))
    assert sum(res.manifest["rejected"].values()) > 0
    return root, res.out_dir


def test_page_is_self_contained_and_escapes_item_text(corpus):
    root, out = corpus
    path = build("tiny", [out.name], str(root / "data"), str(root / "corpora"))
    html = path.read_text(encoding="utf-8")
    assert path == out / "report.html"
    # no URL to fetch anything from: no src/href to http(s), no CDN, no @import
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html) and "@import" not in html
    # the hostile title is data inside the JSON element: it cannot close it or open a comment there
    blob = html.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert "</" not in blob and "<!--" not in blob
    data = json.loads(blob)
    assert EVIL in data["corpora"][0]["titles"].values()
    m = read_json(out / "manifest.json")
    c = data["corpora"][0]
    assert c["manifest"]["written"] == m["written"] and sum(r["count"] for r in c["reasons"].values()) == \
        sum(m["rejected"].values()) + m["failed"]
    assert all(r["explanation"] for name, r in c["reasons"].items() if name != "unknown")
    kinds = {r["k"] for r in c["records"]}
    assert kinds == {"item", "user"} and len(c["records"]) == m["written"]


def test_two_corpora_side_by_side(corpus):
    root, out = corpus
    import shutil

    twin = out.parent / "twin"
    shutil.copytree(out, twin, dirs_exist_ok=True)
    path = build("tiny", [out.name, "twin"], str(root / "data"), str(root / "corpora"))
    assert path.name == f"{out.name},twin.report.html"
    data = json.loads(path.read_text().split('id="data">')[1].split("</script>")[0])
    assert [c["folder"] for c in data["corpora"]] == [out.name, "twin"]


def test_histogram_and_clusters():
    h = histogram([1, 2, 2, 3, 10], bins=3)
    assert h["n"] == 5 and sum(h["counts"]) == 5 and h["lo"] == 1 and h["hi"] == 10 and h["p50"] == 2
    base = "the stapler <a_1><b_2><c_3> is heavy and built for office desks with a steel spring and rubber feet"
    kept = [("item 1", base), ("item 2", "a completely different text about pens and ink and paper for school")]
    dup = [("item 3", base.replace("heavy", "weighty"))]
    clusters = near_duplicate_clusters(kept, dup)
    assert len(clusters) == 1 and clusters[0]["kept"]["id"] == "item 1" and clusters[0]["copies"][0]["id"] == "item 3"


def test_in_a_headless_browser(corpus, tmp_path):
    root, out = corpus
    path = build("tiny", [out.name], str(root / "data"), str(root / "corpora"))
    b = browser.Browser.start()
    if b is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; or set CHROMIUM=<binary>)")
    with b:
        b.open(path.resolve().as_uri())
        assert b.eval("document.body.getAttribute('data-ready')") == "1"
        m = read_json(out / "manifest.json")
        folder = out.name
        shown = {k: b.eval(f"document.getElementById('sum-{k}-{folder}').textContent") for k in
                 ("requested", "written", "rejected", "failed")}
        assert {k: int(v.replace(",", "")) for k, v in shown.items()} == {
            "requested": m["requested"], "written": m["written"], "rejected": sum(m["rejected"].values()),
            "failed": m["failed"]}
        # search for a written item's SID: its record is listed
        item = next(r for r in (json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()))
        b.eval(f"""(() => {{ const s = document.getElementById('search'); s.value = {json.dumps(item['sid'])};
                   s.dispatchEvent(new Event('input')); }})()""")
        b.eval("new Promise(r => setTimeout(r, 400))")
        ids = b.eval("[...document.querySelectorAll('#results .record')].map(e => e.dataset.kind + ':' + e.dataset.id)")
        assert f"item:{item['item_id']}" in ids
        # the hostile title: shown as text (hover text of its SID, and in user histories), never run
        sid = Dataset(root / "data" / "tiny").sids()["I005"]
        titles = b.eval(f"[...document.querySelectorAll('span.sid')].filter(s => s.textContent === "
                        f"{json.dumps(''.join(sid))}).map(s => s.title)")
        b.eval(f"""(() => {{ const s = document.getElementById('search'); s.value = {json.dumps(''.join(sid))};
                   s.dispatchEvent(new Event('input')); }})()""")
        b.eval("new Promise(r => setTimeout(r, 400))")
        titles += b.eval(f"[...document.querySelectorAll('span.sid')].filter(s => s.textContent === "
                         f"{json.dumps(''.join(sid))}).map(s => s.title)")
        assert EVIL in titles
        assert b.eval("typeof window.__pwned") == "undefined"
        assert b.eval("document.querySelectorAll('#results img, #results script').length") == 0
        # nothing but the page itself was requested
        assert b.requests and all(u.startswith("file://") or u.startswith("data:") for u in b.requests), b.requests
        assert len([u for u in b.requests if u.startswith("file://")]) == 1
        shot = b.screenshot(tmp_path / "report.png")
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    from synth.view import main

    make_dataset(tmp_path / "data", "tiny")
    assert main(["--dataset", "tiny", "--teacher", "nope", "--data-dir", str(tmp_path / "data"),
                 "--corpora-dir", str(tmp_path / "corpora")]) == 2
    assert "make synth DATASET=tiny TEACHER=nope" in capsys.readouterr().err
    assert page  # the page builder is importable on its own (used by tools that embed it)
