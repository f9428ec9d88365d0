"""A headless Chromium driven over the DevTools protocol (a websocket on 127.0.0.1), for the page tests.

    with Browser.start() as b:            # None from Browser.find() when no Chromium is installed
        b.open("file:///.../report.html")
        b.eval("document.title")
        b.screenshot(path)
        b.requests                        # every URL the page asked for (Network.requestWillBeSent)

Only aiohttp (already a dependency) talks to the browser; no Selenium, no Playwright download.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of CANDIDATES on PATH."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(c) for c in CANDIDATES if shutil.which(c)), None)


class Browser:
    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = self._port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.requests: list[str] = []
        self.console: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._run(self._connect())

    @classmethod
    def start(cls) -> "Browser | None":
        binary = find()
        return cls(binary) if binary else None

    def _port(self) -> int:
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
        raise RuntimeError("Chromium did not start its DevTools endpoint")

    def _run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self):
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = self.loop.create_task(self._read())
        for domain in ("Page", "Network", "Runtime"):
            await self._send(f"{domain}.enable")

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Network.requestWillBeSent":
                self.requests.append(data["params"]["request"]["url"])
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value")) for a in data["params"]["args"]))
            if data.get("method") in self._events:
                self._events[data["method"]].set()

    async def _send(self, method: str, **params):
        self._id += 1
        fut = self.loop.create_future()
        self._pending[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        res = await fut
        if "error" in res:
            raise RuntimeError(f"{method}: {res['error']}")
        return res.get("result", {})

    def send(self, method: str, **params) -> dict:
        return self._run(self._send(method, **params))

    def open(self, url: str, timeout: float = 60) -> None:
        async def go():
            loaded = self._events["Page.loadEventFired"] = asyncio.Event()
            await self._send("Page.navigate", url=url)
            await asyncio.wait_for(loaded.wait(), timeout)
        self._run(go(), timeout + 5)

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: str | Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        async def shut():
            self.reader.cancel()
            await self.ws.close()
            await self.session.close()
        try:
            self._run(shut(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
