"""Resumable, verified HTTP downloads for the raw dataset files.

A file is fetched into ``<dest>.part`` and renamed to ``<dest>`` only once it has been
verified, so ``<dest>`` existing means "complete". An interrupted transfer leaves the
``.part`` file behind and the next call continues it with an HTTP ``Range`` request.

Verification: the byte count must equal the size the server announced
(``Content-Length`` / ``Content-Range``); a ``.gz`` file must decompress to its end
with a good CRC; a known sha256 must match. A file already at ``<dest>`` is checked
the same way (minus the server's size) and is not downloaded again when it passes,
which is also how a user supplies a file by hand on a machine that is offline.

Standard library only (urllib), so ``make data`` needs nothing beyond the venv.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from synth.errors import UserError

CHUNK = 1 << 16
USER_AGENT = "sidreasoner-toolkit/0.1 (+make data)"


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched or failed verification; the message says what to do."""


@dataclass(frozen=True)
class DownloadConfig:
    timeout_s: float = 30.0  # per socket operation, not for the whole file
    retries: int = 4  # attempts after a transfer broke off midway (each resumes)
    backoff_s: float = 1.0  # doubled after each failed attempt
    progress: bool = True


# ---------------------------------------------------------------------------- progress


class Progress:
    """Bytes done/total, rate and ETA on stderr, at most a few lines per second."""

    def __init__(self, label: str, total: int | None, done: int = 0,
                 stream: TextIO | None = None, every_s: float = 0.5):
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        # Off a terminal (CI logs) a line every few seconds is plenty.
        self.every_s = every_s if self.tty else max(every_s, 5.0)
        self.start_done, self.t0 = done, time.monotonic()
        self.last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._emit(now)

    def close(self) -> None:
        self._emit(time.monotonic(), final=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{self.label}: {_size(self.done)}/{_size(self.total)} ({pct:.0f}%) "
                    f"{_size(rate)}/s ETA {_duration(eta)}")
        return f"{self.label}: {_size(self.done)} {_size(rate)}/s"

    def _emit(self, now: float, final: bool = False) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(s: float) -> str:
    if s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------------------- verification


def check_gzip(path: Path) -> None:
    """Decompress to the end: catches truncation and CRC errors. Raises DownloadError."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise DownloadError(f"{path}: not a complete gzip file ({e})") from e


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, size: int | None = None, sha256: str | None = None) -> None:
    """Raise DownloadError unless ``path`` has the expected size, gzip integrity and hash."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path}: {actual} bytes, expected {size}")
    if path.name.endswith(".gz") or path.name.endswith(".gz.part"):
        check_gzip(path)
    if sha256 and (got := sha256_of(path)) != sha256.lower():
        raise DownloadError(f"{path}: sha256 {got} does not match the expected {sha256}")


def is_valid(path: Path, sha256: str | None = None) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        verify(path, sha256=sha256)
    except DownloadError:
        return False
    return True


# ---------------------------------------------------------------------------- download

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _unreachable(url: str, dest: Path, reason: object) -> DownloadError:
    return DownloadError(
        f"could not reach {url} ({reason}); put the file at {dest} or use FROM=<folder>"
    )


def _is_offline_error(err: BaseException) -> bool:
    """Errors that retrying will not fix: no route, no DNS, nobody listening."""
    reason = getattr(err, "reason", err)
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return True
    return isinstance(reason, OSError) and reason.errno in (
        errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    config: DownloadConfig = DownloadConfig(),
) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); returns ``dest``.

    A valid file already at ``dest`` is kept without touching the network.
    """
    dest = Path(dest)
    if dest.exists():
        if is_valid(dest, sha256):
            return dest
        raise DownloadError(
            f"{dest} exists but is not a valid copy of {url} (truncated or corrupt); "
            "delete it and run again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt, delay = 0, config.backoff_s
    while True:
        try:
            total = _fetch_into(url, part, config)
            break
        except DownloadError:
            raise
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt >= config.retries:
                raise DownloadError(
                    f"{url} answered HTTP {e.code} {e.reason}; put the file at {dest} "
                    "or use FROM=<folder>"
                ) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if _is_offline_error(e) or attempt >= config.retries:
                raise _unreachable(url, dest, getattr(e, "reason", e)) from e
        attempt += 1
        have = part.stat().st_size if part.exists() else 0
        print(f"{dest.name}: transfer broke off at {_size(have)}; retry {attempt}/"
              f"{config.retries} in {delay:.0f}s (resuming)", file=sys.stderr)
        time.sleep(delay)
        delay *= 2
    try:
        verify(part, size=total, sha256=sha256)
    except DownloadError as e:
        part.unlink(missing_ok=True)  # a complete-but-wrong file cannot be resumed
        raise DownloadError(f"download of {url} failed verification: {e}; run again to "
                            f"re-download, or put a good copy at {dest}") from e
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, config: DownloadConfig) -> int | None:
    """One attempt: append to ``part`` from where it ends; returns the full size if known."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=config.timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Nothing left to send: the part file may already be whole. Verification decides.
            m = re.search(r"/(\d+)", e.headers.get("Content-Range", "") or "")
            return int(m.group(1)) if m else have
        raise
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise DownloadError(f"{url}: server sent a range that does not continue "
                                    f"{part} (Content-Range {resp.headers.get('Content-Range')!r})")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: whole file (the server ignores Range), start over
            have, mode = 0, "wb"
            total = int(length) if length is not None else None
        progress = Progress(part.name[: -len(".part")], total, done=have) if config.progress else None
        expected = int(length) if length is not None else None
        got = 0
        with open(part, mode) as f:
            while block := resp.read(CHUNK):
                f.write(block)
                got += len(block)
                if progress:
                    progress.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        if progress:
            progress.close()
    if expected is not None and got < expected:
        # urllib returns b"" when the peer hangs up early; make that a retryable error.
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    return total


def fetch_all(files: list[tuple[str, Path]], config: DownloadConfig = DownloadConfig(),
              sha256: dict[str, str] | None = None) -> dict[str, str]:
    """Download each (url, dest); returns {file name: sha256} of what is now on disk."""
    sha256 = sha256 or {}
    out = {}
    for url, dest in files:
        download(url, dest, sha256.get(dest.name), config)
        out[dest.name] = sha256_of(dest)
    return out
