"""Test helpers: a live uvicorn server on a loopback port, Opus test audio, the shared
fixtures and the rule for a missing test program."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from personaplex_server.audio import FRAME_SIZE, SAMPLE_RATE, OpusEncoder
from personaplex_server.config import Settings
from personaplex_server.uvicorn_server import Server, uvicorn_kwargs

REPO = Path(__file__).resolve().parents[2]


def shared_fixtures() -> Path | None:
    """The shared read-only fixtures (the official UI build, a speech WAV):
    ``$PERSONAPLEX_FIXTURES``, ``<repo>/../shared/fixtures`` (CI's layout) or
    ``/work/shared/fixtures``; None when none of them holds ``personaplex-ui/index.html``."""
    candidates = [os.environ.get("PERSONAPLEX_FIXTURES")]
    candidates += [str(REPO.parent / "shared" / "fixtures"), "/work/shared/fixtures"]
    for c in candidates:
        if c and (Path(c) / "personaplex-ui" / "index.html").is_file():
            return Path(c)
    return None


def missing_program(what: str) -> None:
    """Skip locally; fail under CI, which installs the test programs
    (scripts/app-test-prepare.sh) and the test extras: a missing piece there is a broken
    setup, not a reason to skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must run scripts/app-test-prepare.sh and install app[test])")
    pytest.skip(what)


class LiveServer:
    """Runs an app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: FastAPI, settings: Settings, **overrides: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        kwargs = uvicorn_kwargs(settings)
        kwargs.update(host="127.0.0.1", port=self.port, log_level="warning")
        kwargs.update(overrides)
        # The server class `serve` runs (uvicorn's, with a quiet tick).
        self.server = Server(uvicorn.Config(app, **kwargs))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self._run, daemon=True)
        scheme = "https" if settings.tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.ws_base = self.base.replace("http", "ws", 1)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        # Test servers may use a throw-away self-signed certificate.
        ctx = ssl._create_unverified_context() if self.base.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get("/readyz")
            if status == 200:
                return
            if b"failed" in body:
                raise RuntimeError(f"engine failed to load: {body.decode()}")
            time.sleep(0.02)
        raise TimeoutError("server not ready")


def opus_frames(seconds: float, freq: float = 220.0) -> list[bytes]:
    """An Ogg/Opus stream of a tone, one page per 80 ms frame (what clients send)."""
    n = round(seconds * SAMPLE_RATE / FRAME_SIZE)
    t = np.arange(n * FRAME_SIZE) / SAMPLE_RATE
    pcm = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    enc = OpusEncoder()
    return [enc.encode(pcm[i * FRAME_SIZE : (i + 1) * FRAME_SIZE]) for i in range(n)]
