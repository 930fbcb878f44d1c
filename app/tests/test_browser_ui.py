"""NVIDIA's official PersonaPlex web UI in a real browser against the real server.

Debian's chromium, driven by Playwright (``executable_path``: Playwright's own browser
download is never used), with a fake microphone that plays
``shared/fixtures/input_assistant.wav``. The server runs as deployed: the real engine
(tiny model), TLS with a self-signed certificate, an access token, and the UI build from
``shared/fixtures/personaplex-ui`` served read-only with ``--static-dir``.

The user's path: open ``/?token=...`` (cookie, redirect to ``/``), pick a text preset
and a voice, press Connect (microphone granted by the fake UI), talk for ~15 s, then
Disconnect. Checked: the handshake (the UI's button turns to "Disconnect" only on 0x00),
microphone audio stepped by the server, reply audio played by the UI (its own "Audio
played" counter, fed by its audio worklet after its WASM decoder), text shown, and the
server's slot free after Disconnect.

Fixtures: ``$PERSONAPLEX_FIXTURES`` or ``<repo>/../shared/fixtures`` (CI's layout) or
``/work/shared/fixtures``. Browser: ``$PERSONAPLEX_CHROMIUM`` or ``/usr/bin/chromium``
(``scripts/app-test-prepare.sh`` installs it). Without fixtures the test is skipped;
without the browser or Playwright it is skipped locally and fails under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LiveServer, missing_program, shared_fixtures

from personaplex_server.app import create_app
from personaplex_server.config import Settings

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token-7d1e"
TALK_SECONDS = 15.0
PRESET = "Astronaut (fun)"  # not the default text, so the click is what sets it
VOICE = "NATM1.pt"  # not the UI's default voice (NATF0.pt)


@pytest.fixture(scope="module")
def fixtures() -> Path:
    found = shared_fixtures()
    if found is None:
        pytest.skip(
            "shared fixtures not found (set PERSONAPLEX_FIXTURES to the folder holding "
            "personaplex-ui/ and input_assistant.wav)"
        )
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("PERSONAPLEX_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        missing_program(
            f"{path} not found: run scripts/app-test-prepare.sh (apt-get install chromium)"
        )
    return path


@pytest.fixture(scope="module")
def tls_server(
    tiny_model_dir: Path, fixtures: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    if shutil.which("openssl") is None:
        missing_program("the openssl command is needed for the self-signed certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    settings = Settings(
        model_dir=tiny_model_dir,
        static_dir=fixtures / "personaplex-ui",
        device="cpu",
        dtype="float32",
        quantize="none",
        use_compile=False,
        use_cuda_graphs=False,
        max_sessions=1,
        ssl_certfile=cert,
        ssl_keyfile=key,
        access_token=TOKEN,  # type: ignore[arg-type]
    )
    with LiveServer(create_app(settings), settings) as srv:
        srv.wait_ready(300)
        yield srv


def _metric(srv: LiveServer, name: str) -> float:
    _, body = srv.get("/metrics")
    total, found = 0.0, False
    for line in body.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, name
    return total


def _clock_seconds(text: str) -> float:
    """The UI's "m:ss.cc" durations."""
    m = re.fullmatch(r"\s*(\d+):(\d\d)\.(\d\d)\s*", text)
    assert m, text
    return int(m[1]) * 60 + int(m[2]) + int(m[3]) / 100


def test_official_ui_conversation_in_chromium(
    tls_server: LiveServer, fixtures: Path, chromium: str
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_program("playwright is not installed (pip install 'app[test]')")
    srv = tls_server
    wav = fixtures / "input_assistant.wav"
    t_start = time.monotonic()
    steps0 = _metric(srv, "personaplex_frame_step_seconds_count")
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
                "--ignore-certificate-errors",  # the server's self-signed certificate
            ],
        )
        try:
            context = browser.new_context(
                ignore_https_errors=True, viewport={"width": 1280, "height": 900}
            )
            context.grant_permissions(["microphone"], origin=srv.base)
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

            # The token link: the server sets the HttpOnly cookie and redirects to "/".
            response = page.goto(f"{srv.base}/?token={TOKEN}")
            assert response is not None and response.ok, response
            assert page.url.rstrip("/") == srv.base, page.url
            assert TOKEN not in page.url
            page.get_by_role("button", name=PRESET).click()
            prompt = page.locator("#text-prompt").input_value()
            assert prompt.startswith("You enjoy having a good conversation."), prompt
            page.select_option("#voice-prompt", VOICE)
            page.get_by_role("button", name="Connect", exact=True).click()

            # "Connecting..." until the server's 0x00 handshake, then "Disconnect".
            disconnect = page.get_by_role("button", name="Disconnect", exact=True)
            disconnect.wait_for(timeout=120_000)
            assert disconnect.is_enabled()
            t_handshake = time.monotonic()
            assert _metric(srv, "personaplex_sessions_active") == 1
            page.wait_for_timeout(TALK_SECONDS * 1000)

            played = _clock_seconds(
                page.locator("td", has_text="Audio played:").locator("xpath=../td[2]").inner_text()
            )
            texts = page.locator(".player-text span").all_inner_texts()
            steps = _metric(srv, "personaplex_frame_step_seconds_count") - steps0
            dropped = _metric(srv, "personaplex_dropped_frames_total")

            disconnect.click()
            page.get_by_role("button", name="New Conversation").wait_for(timeout=10_000)
            deadline = time.monotonic() + 10
            while _metric(srv, "personaplex_sessions_active") and time.monotonic() < deadline:
                time.sleep(0.05)
            active_after = _metric(srv, "personaplex_sessions_active")
        finally:
            browser.close()
    log = "\n".join(console[-40:])
    print(
        f"browser test: handshake after {t_handshake - t_start:.1f} s; "
        f"{steps:.0f} frames stepped, {dropped:.0f} dropped; "
        f"UI played {played:.2f} s of reply audio, {len(texts)} text pieces"
    )
    # The microphone's Opus pages reached the model: most of 15 s of 80 ms frames were
    # stepped (some may be dropped when this shared CPU is behind real time).
    assert steps + dropped >= 0.6 * TALK_SECONDS / 0.08, (steps, dropped, log)
    assert steps >= 0.3 * TALK_SECONDS / 0.08, (steps, dropped, log)
    # The UI decoded the reply pages in its WASM worker and its worklet played them.
    assert played >= 2.0, (played, log)
    assert texts and any(t.strip() for t in texts), log
    # Disconnect freed the conversation slot on the server.
    assert active_after == 0, log
    assert not [c for c in console if c.startswith("pageerror")], log
