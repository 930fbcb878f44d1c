"""Logging during a real conversation (real engine, tiny model): no "Logging error",
and neither the access token nor the persona text reaches the log."""

from __future__ import annotations

import io
import logging
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LiveServer, opus_frames
from websockets.sync.client import connect

from personaplex_server import cli, protocol
from personaplex_server.app import create_app
from personaplex_server.config import Settings

pytestmark = pytest.mark.slow

TOKEN = "tok-9f3c2a7e-SECRET"
# Printable Unicode that str.isprintable() refuses (no-break, narrow no-break and thin
# spaces, soft hyphen, zero-width joiner): accepted, and never logged.
PERSONA = (
    "You are Zo\u00e9, a caf\u00e9\u00a0owner: 10\u202f000 cups, thin\u2009space, "
    "co\u00adop, \U0001f469\u200d\U0001f373."
)


@pytest.fixture
def logging_as_served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[io.StringIO, list[Any]]]:
    """The serve command's logging (cli.setup_logging: root handler + redaction filter)
    writing into a buffer; every handler error (what prints "--- Logging error ---") is
    recorded. uvicorn's own loggers go to INFO so its WebSocket/access lines are logged."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    uvicorn_levels = {n: logging.getLogger(n).level for n in ("uvicorn.error", "uvicorn.access")}
    monkeypatch.setattr(logging, "raiseExceptions", True)
    errors: list[Any] = []
    original = logging.Handler.handleError

    def record_error(self: logging.Handler, record: logging.LogRecord) -> None:
        errors.append((record.msg, record.args, sys.exc_info()[1]))
        original(self, record)

    monkeypatch.setattr(logging.Handler, "handleError", record_error)
    buf = io.StringIO()
    try:
        cli.setup_logging("info")
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buf)
        for name in uvicorn_levels:
            logging.getLogger(name).setLevel(logging.INFO)
        yield buf, errors
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in uvicorn_levels.items():
            logging.getLogger(name).setLevel(level)


def test_conversation_logs_cleanly_with_token_and_prompt_redacted(
    tiny_model_dir: Path, logging_as_served: tuple[io.StringIO, list[Any]]
) -> None:
    buf, errors = logging_as_served
    settings = Settings(
        model_dir=tiny_model_dir,
        device="cpu",
        dtype="float32",
        quantize="none",
        use_compile=False,
        use_cuda_graphs=False,
        max_queued_frames=100,
        access_token=TOKEN,  # type: ignore[arg-type]
    )
    with LiveServer(create_app(settings), settings, log_level="info") as srv:
        srv.wait_ready(300)
        query = urllib.parse.urlencode(
            {"voice_prompt": "NATF0.pt", "text_prompt": PERSONA, "seed": "3", "token": TOKEN}
        )
        with connect(f"{srv.ws_base}/api/chat?{query}", open_timeout=30) as ws:
            assert ws.recv(timeout=120) == protocol.HANDSHAKE
            frames = opus_frames(0.8)
            for page in frames:
                ws.send(protocol.audio(page))
            audio = 0
            while audio < len(frames) - 1:
                m = ws.recv(timeout=120)
                assert isinstance(m, bytes) and m[0] != protocol.Kind.ERROR, m
                audio += m[0] == protocol.Kind.AUDIO
        deadline = time.monotonic() + 30
        while " ended (" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        # A server-side client's bearer header is not logged either.
        assert srv.get("/api/info", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    log = buf.getvalue()
    assert errors == [], errors
    assert "Logging error" not in log
    # The lines that broke before: the session start (its format mentioned text_prompt=)
    # and uvicorn's WebSocket line with the whole query string.
    assert f"started: voice=NATF0.pt, a text prompt of {len(PERSONA.strip())} chars" in log
    assert " ended (client_closed)" in log
    assert "token=***" in log and "text_prompt=***" in log, log
    for secret in (TOKEN, urllib.parse.quote_plus(TOKEN), "Zo", "caf", "owner"):
        assert secret not in log, (secret, log)
