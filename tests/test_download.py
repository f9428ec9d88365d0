"""Resumable, verified downloads against a real HTTP server on 127.0.0.1.

``RangeServer`` is also used by test_amazon.py: a threaded http.server that serves a
folder, honours ``Range: bytes=N-``, logs every request, and can be told to cut a
response short or to ignore Range, to act out the failures a download must survive.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import threading
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from synth.data.download import DownloadConfig, DownloadError, Progress, download, sha256_of

FAST = DownloadConfig(timeout_s=5, retries=3, backoff_s=0.01, progress=True)


class RangeServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.bytes_sent = 0
        self.cut_after: dict[str, int] = {}  # path -> bytes to send before dropping (once)
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                f = server.root / self.path.lstrip("/")
                if not f.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = f.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(self.path, None)
                if cut is not None:
                    body = body[:cut]  # promise everything, send part, then hang up
                    self.close_connection = True
                self.wfile.write(body)
                server.bytes_sent += len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def range_requests(self) -> list[str]:
        return [r for _, r in self.requests if r]


def closed_port_url() -> str:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def gz_bytes(n_lines: int = 4000) -> bytes:
    # Incompressible-ish content so the file is a few hundred KiB.
    lines = (json.dumps({"i": i, "h": sha(i)}) + "\n" for i in range(n_lines))
    return gzip.compress("".join(lines).encode(), compresslevel=6)


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    payload = gz_bytes()
    (root / "file.json.gz").write_bytes(payload)
    with RangeServer(root) as srv:
        yield srv, payload, tmp_path / "dl"


def test_full_download_verifies_and_reports_progress(served, capsys):
    srv, payload, dl = served
    dest = download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert dest.read_bytes() == payload
    assert not (dl / "file.json.gz.part").exists()
    err = capsys.readouterr().err
    assert "file.json.gz:" in err and "100%" in err and "/s" in err and "ETA" in err


def test_present_valid_file_is_not_downloaded_again(served):
    srv, payload, dl = served
    download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    n = len(srv.requests)
    download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert len(srv.requests) == n


def test_resume_from_truncated_part_file(served):
    srv, payload, dl = served
    dl.mkdir()
    half = len(payload) // 2
    (dl / "file.json.gz.part").write_bytes(payload[:half])
    dest = download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert dest.read_bytes() == payload
    assert srv.range_requests() == [f"bytes={half}-"]
    assert srv.bytes_sent == len(payload) - half  # only the missing half travelled


def test_broken_transfer_is_retried_with_range(served, capsys):
    srv, payload, dl = served
    srv.cut_after["/file.json.gz"] = 10_000
    dest = download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert dest.read_bytes() == payload
    assert srv.range_requests() == ["bytes=10000-"]
    assert "resuming" in capsys.readouterr().err


def test_server_ignoring_range_restarts_cleanly(served):
    srv, payload, dl = served
    dl.mkdir()
    (dl / "file.json.gz.part").write_bytes(payload[:1000])
    srv.ignore_range = True
    dest = download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert dest.read_bytes() == payload


def test_complete_part_file_is_finished_without_refetching(served):
    srv, payload, dl = served
    dl.mkdir()
    (dl / "file.json.gz.part").write_bytes(payload)
    dest = download(f"{srv.url}/file.json.gz", dl / "file.json.gz", config=FAST)
    assert dest.read_bytes() == payload and srv.bytes_sent == 0


def test_corrupt_gzip_is_detected_and_not_kept(served):
    srv, payload, dl = served
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0xFF
    (srv.root / "bad.json.gz").write_bytes(bytes(bad))
    with pytest.raises(DownloadError, match="failed verification.*not a complete gzip"):
        download(f"{srv.url}/bad.json.gz", dl / "bad.json.gz", config=FAST)
    assert not (dl / "bad.json.gz").exists() and not (dl / "bad.json.gz.part").exists()


def test_truncated_file_in_place_is_rejected(tmp_path):
    payload = gz_bytes(500)
    (tmp_path / "x.json.gz").write_bytes(payload[:-20])
    with pytest.raises(DownloadError, match="exists but is not a valid copy.*delete it"):
        download(closed_port_url() + "/x.json.gz", tmp_path / "x.json.gz", config=FAST)


def test_file_put_by_hand_needs_no_network(tmp_path):
    payload = gz_bytes(100)
    (tmp_path / "x.json.gz").write_bytes(payload)
    # The host is unreachable, but the file is there and valid.
    assert download(closed_port_url() + "/x.json.gz", tmp_path / "x.json.gz").read_bytes() == payload


def test_sha256_is_checked(served):
    srv, payload, dl = served
    with pytest.raises(DownloadError, match="sha256"):
        download(f"{srv.url}/file.json.gz", dl / "file.json.gz", sha256="0" * 64, config=FAST)
    out = download(f"{srv.url}/file.json.gz", dl / "file.json.gz",
                   sha256=hashlib.sha256(payload).hexdigest(), config=FAST)
    assert sha256_of(out) == hashlib.sha256(payload).hexdigest()


def count_attempts(monkeypatch) -> tuple[list[str], list[float]]:
    """Record every transfer attempt and every back-off sleep of ``download``, so a test can assert
    that a refused connection fails at once, without timing it (a wall-clock bound fails on a busy
    machine)."""
    from synth.data import download as mod

    attempts: list[str] = []
    sleeps: list[float] = []
    fetch = mod._fetch_into

    def counted(url, part, config):
        attempts.append(url)
        return fetch(url, part, config)

    monkeypatch.setattr(mod, "_fetch_into", counted)
    monkeypatch.setattr(mod.time, "sleep", sleeps.append)
    return attempts, sleeps


def test_offline_gives_the_clear_message_fast(tmp_path, monkeypatch):
    url = closed_port_url() + "/meta_Video_Games.json.gz"
    dest = tmp_path / "raw" / "meta_Video_Games.json.gz"
    attempts, sleeps = count_attempts(monkeypatch)
    with pytest.raises(DownloadError) as e:
        download(url, dest, config=DownloadConfig(retries=4, backoff_s=1.0))
    assert attempts == [url] and sleeps == []  # refused connections are not retried
    assert str(e.value).startswith(f"could not reach {url}")
    assert f"put the file at {dest} or use FROM=" in str(e.value)


def test_http_404_names_url_and_remedy(served):
    srv, _, dl = served
    with pytest.raises(DownloadError, match=r"missing\.gz answered HTTP 404.*put the file at"):
        download(f"{srv.url}/missing.gz", dl / "missing.gz", config=FAST)


def test_progress_line_has_done_total_rate_eta():
    buf = io.StringIO()
    p = Progress("x", total=4 << 20, stream=buf)
    p.update(1 << 20)
    # two seconds in, exactly: a line drawn at the wall clock's "now" would depend on how long
    # this test took to get here
    assert p.line(p.t0 + 2.0) == "x: 1.0 MiB/4.0 MiB (25%) 512.0 KiB/s ETA 0:00:06"
