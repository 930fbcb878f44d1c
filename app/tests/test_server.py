"""The server over a real loopback WebSocket, with the stand-in null engine.

The null engine has the real Engine's interface and lets these tests control timing
(slow prompt, slow steps, a short context); the same routes run the real engine on the
tiny model in test_real_engine.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import LiveServer, opus_frames
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from personaplex_server import protocol
from personaplex_server.app import create_app
from personaplex_server.audio import OpusDecoder
from personaplex_server.config import Settings
from personaplex_server.null_engine import NullEngine, NullEngineConfig

TOKEN = "s3cret-token-for-tests"


def start(
    live_server: Callable[..., LiveServer],
    cfg: NullEngineConfig | None = None,
    **settings_kw: object,
) -> tuple[LiveServer, NullEngine]:
    engine = NullEngine(cfg or NullEngineConfig())
    # Tests send audio in bursts; a deep queue keeps the null engine from dropping frames
    # except where a test is about dropping.
    settings_kw.setdefault("max_queued_frames", 50)
    settings = Settings(**settings_kw)  # type: ignore[arg-type]
    app = create_app(settings, lambda _s: engine)
    srv = live_server(app, settings)
    srv.wait_ready()
    return srv, engine


def chat(
    srv: LiveServer, query: str = "voice_prompt=NATF0.pt&text_prompt=hi", **kw: object
) -> ClientConnection:
    return connect(f"{srv.ws_base}/api/chat?{query}", open_timeout=10, **kw)  # type: ignore[arg-type]


def expect_close(ws: ClientConnection, timeout: float = 5.0) -> tuple[list[bytes], int | None]:
    """Read until the server closes; return the messages and the close code."""
    messages: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = ws.recv(timeout=deadline - time.monotonic())
            assert isinstance(m, bytes)
            messages.append(m)
    except ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        pass
    raise AssertionError(f"server did not close the connection; got {messages[:5]}")


def errors_in(messages: list[bytes]) -> list[str]:
    return [m[1:].decode() for m in messages if m[:1] == bytes([protocol.Kind.ERROR])]


def metric(srv: LiveServer, name: str) -> float:
    status, body = srv.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def metric_labeled(srv: LiveServer, name: str, label: str) -> float:
    _status, body = srv.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- conversation ----------------------------------------------------------------------


def test_handshake_only_after_prompt_then_audio_and_text_back(live_server):
    srv, engine = start(live_server, NullEngineConfig(prompt_seconds=0.4))
    t0 = time.monotonic()
    with chat(srv) as ws:
        first = ws.recv(timeout=5)
        elapsed = time.monotonic() - t0
        assert first == protocol.HANDSHAKE
        assert elapsed >= 0.4, "handshake must wait for the prompt phase"
        frames = opus_frames(1.2)
        for page in frames:  # in real time, like a microphone
            ws.send(protocol.audio(page))
            time.sleep(0.08)
        decoder = OpusDecoder()
        samples, texts = 0, []
        deadline = time.monotonic() + 5
        while (
            samples < (len(frames) - 1) * 1920 or len(texts) < 3
        ) and time.monotonic() < deadline:
            m = ws.recv(timeout=5)
            assert isinstance(m, bytes)
            if m[0] == protocol.Kind.AUDIO:
                samples += decoder.decode(m[1:]).size
            elif m[0] == protocol.Kind.TEXT:
                texts.append(m[1:].decode())
        # The null engine echoes each frame one step later: every frame but the last.
        assert samples == (len(frames) - 1) * 1920
        assert texts == [" hi"] * 3
    assert engine.stats.steps == len(frames)
    # Every engine call ran on the single engine worker thread.
    assert len(engine.stats.threads) == 1 and next(iter(engine.stats.threads)).startswith("engine")


def test_sampling_params_reach_engine_with_official_defaults(live_server):
    srv, engine = start(live_server)
    seen = {}
    orig = engine.new_session

    def spy(voice, text, sampling):
        seen.update(voice=voice, text=text, sampling=sampling)
        return orig(voice, text, sampling)

    engine.new_session = spy  # type: ignore[method-assign]
    with chat(
        srv, "voice_prompt=NATM0.pt&text_prompt=%20be%20nice%20&seed=42&audio_topk=100"
    ) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
    s = seen["sampling"]
    assert (seen["voice"], seen["text"]) == ("NATM0.pt", "be nice")
    assert (s.temp, s.temp_text, s.top_k, s.top_k_text, s.seed) == (0.8, 0.7, 100, 25, 42)


def test_busy_rejection_within_a_second_and_disconnect_frees_slot(live_server):
    srv, _ = start(live_server, max_sessions=1)
    with chat(srv) as first:
        assert first.recv(timeout=5) == protocol.HANDSHAKE
        t0 = time.monotonic()
        with chat(srv) as second:
            messages, code = expect_close(second, timeout=2)
        assert time.monotonic() - t0 < 1.0
        assert code == protocol.CloseCode.TRY_AGAIN_LATER
        assert any("busy" in e for e in errors_in(messages))
        assert metric_labeled(srv, "personaplex_sessions_rejected_total", 'reason="busy"') == 1
    # The first client left: the slot is free at once.
    t0 = time.monotonic()
    with chat(srv) as third:
        assert third.recv(timeout=2) == protocol.HANDSHAKE
    assert time.monotonic() - t0 < 1.0


def test_disconnect_during_prompt_frees_slot(live_server):
    srv, engine = start(live_server, NullEngineConfig(prompt_seconds=0.5), max_sessions=1)
    with chat(srv):
        time.sleep(0.1)  # leave while the prompt is still running
    deadline = time.monotonic() + 2
    while metric(srv, "personaplex_sessions_active") != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(srv, "personaplex_sessions_active") == 0
    with chat(srv) as again:  # gets in once the worker has finished the abandoned prompt
        assert again.recv(timeout=5) == protocol.HANDSHAKE
    assert engine.stats.sessions_closed >= 1


def test_model_behind_real_time_drops_frames_but_session_stays_live(live_server):
    srv, _ = start(live_server, NullEngineConfig(step_seconds=0.15), max_queued_frames=2)
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        for page in opus_frames(2.0):  # 25 frames at once; the model does ~7 per second
            ws.send(protocol.audio(page))
        time.sleep(0.6)
        assert metric(srv, "personaplex_dropped_frames_total") > 0
        assert metric(srv, "personaplex_late_frames_total") > 0
        # still alive: more audio still gets answers
        for page in opus_frames(0.4, freq=330):
            ws.send(protocol.audio(page))
        got_audio = False
        deadline = time.monotonic() + 5
        while not got_audio and time.monotonic() < deadline:
            m = ws.recv(timeout=5)
            got_audio = isinstance(m, bytes) and m[0] == protocol.Kind.AUDIO
        assert got_audio


def test_context_end_tells_client_and_closes_normally(live_server):
    srv, engine = start(live_server, NullEngineConfig(max_frames=5))
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        for page in opus_frames(0.8):
            ws.send(protocol.audio(page))
        messages, code = expect_close(ws)
    assert code == protocol.CloseCode.NORMAL
    assert any("end of the model's context" in e for e in errors_in(messages))
    audio = [m for m in messages if m[0] == protocol.Kind.AUDIO]
    assert len(audio) == 4  # 5 frames stepped, output one step behind
    assert engine.stats.steps == 5
    assert metric_labeled(srv, "personaplex_sessions_ended_total", 'reason="context_end"') == 1


def test_idle_client_is_closed(live_server):
    srv, _ = start(live_server, idle_timeout_s=0.3)
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        messages, code = expect_close(ws, timeout=3)
    assert code == protocol.CloseCode.NORMAL
    assert any("no data" in e for e in errors_in(messages))


# --- authentication ----------------------------------------------------------------------


def test_token_required_for_chat(live_server):
    srv, _ = start(live_server, access_token=TOKEN)
    for query in ("voice_prompt=NATF0.pt", "voice_prompt=NATF0.pt&token=wrong", "token="):
        with chat(srv, query) as ws:
            messages, code = expect_close(ws)
        assert code == protocol.CloseCode.POLICY_VIOLATION
        assert any("unauthorized" in e for e in errors_in(messages))
    with chat(srv, f"voice_prompt=NATF0.pt&token={TOKEN}") as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
    with chat(
        srv, "voice_prompt=NATF0.pt", additional_headers={"Cookie": f"personaplex_token={TOKEN}"}
    ) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
    assert metric_labeled(srv, "personaplex_sessions_rejected_total", 'reason="unauthorized"') == 3


def test_bearer_token_accepted_for_chat_and_api(live_server):
    """Server-side clients send ``Authorization: Bearer`` (RFC 6750 section 2.1)."""
    srv, engine = start(live_server, access_token=TOKEN)
    for value in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        with chat(srv, "voice_prompt=NATF0.pt", additional_headers={"Authorization": value}) as ws:
            assert ws.recv(timeout=5) == protocol.HANDSHAKE
    for value in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN):
        with chat(srv, "voice_prompt=NATF0.pt", additional_headers={"Authorization": value}) as ws:
            messages, code = expect_close(ws)
        assert code == protocol.CloseCode.POLICY_VIOLATION, value
        assert any("unauthorized" in e for e in errors_in(messages)), value
    # A wrong bearer next to a right query token: any right credential is enough.
    with chat(
        srv,
        f"voice_prompt=NATF0.pt&token={TOKEN}",
        additional_headers={"Authorization": "Bearer x"},
    ) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
    assert engine.stats.sessions_opened == 4
    assert srv.get("/api/voices", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert srv.get("/api/info", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, body = srv.get("/api/info", {"Authorization": "Bearer wrong"})
    assert status == 401 and b"Authorization: Bearer" in body
    assert srv.get("/api/info")[0] == 401


def test_aiohttp_client_with_bearer_header_as_in_readme(live_server):
    """The README's server-side client: aiohttp (a dependency of moshi) with its own
    session carrying ``Authorization: Bearer``."""
    import asyncio

    import aiohttp

    srv, _ = start(live_server, access_token=TOKEN)
    pages = opus_frames(0.4)

    async def talk(token: str) -> tuple[list[bytes], int | None]:
        headers = {"Authorization": f"Bearer {token}"}
        params = {"voice_prompt": "NATF0.pt", "text_prompt": "You are a helpful assistant."}
        got: list[bytes] = []
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.ws_connect(f"{srv.ws_base}/api/chat", params=params) as ws,
        ):
            first = await ws.receive_bytes(timeout=5)
            got.append(first)
            if first == protocol.HANDSHAKE:
                for page in pages:
                    await ws.send_bytes(protocol.audio(page))
                while sum(m[:1] == b"\x01" for m in got) < len(pages) - 1:
                    got.append(await ws.receive_bytes(timeout=5))
            else:
                await ws.receive(timeout=5)  # the close that follows the 0x05
            return got, ws.close_code

    got, _ = asyncio.run(talk(TOKEN))
    assert got[0] == protocol.HANDSHAKE and len(got) > 1
    got, code = asyncio.run(talk("wrong"))
    assert got[0][:1] == bytes([protocol.Kind.ERROR]) and b"unauthorized" in got[0]
    assert code == protocol.CloseCode.POLICY_VIOLATION


def test_token_required_for_api_but_not_health(live_server):
    srv, _ = start(live_server, access_token=TOKEN)
    assert srv.get("/api/voices")[0] == 401
    assert srv.get("/api/info?token=nope")[0] == 401
    assert srv.get(f"/api/voices?token={TOKEN}")[0] == 200
    assert srv.get("/api/info", {"Cookie": f"personaplex_token={TOKEN}"})[0] == 200
    assert srv.get("/healthz")[0] == 200
    assert srv.get("/readyz")[0] == 200
    assert srv.get("/metrics")[0] == 200
    assert srv.get("/")[0] == 401


def test_token_in_url_becomes_httponly_cookie(live_server):
    import http.client

    srv, _ = start(live_server, access_token=TOKEN)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", f"/?token={TOKEN}")
    r = conn.getresponse()
    assert r.status == 303 and r.getheader("location") == "/"
    cookie = r.getheader("set-cookie") or ""
    assert f"personaplex_token={TOKEN}" in cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    status, body = srv.get("/", {"Cookie": f"personaplex_token={TOKEN}"})
    assert status == 200 and b"/api/chat" in body


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("voice_prompt=../../etc/passwd", "bare file name"),
        ("voice_prompt=%2Fetc%2Fpasswd", "bare file name"),
        ("voice_prompt=..%5CNATF0.pt", "bare file name"),
        ("voice_prompt=NOPE.pt", "not available"),
        ("voice_prompt=NATF0.pt&text_prompt=" + "a" * 1001, "longer than 1000"),
        ("voice_prompt=NATF0.pt&text_temperature=abc", "text_temperature"),
        ("voice_prompt=NATF0.pt&audio_topk=0", "audio_topk"),
        ("voice_prompt=NATF0.pt&seed=1.5", "seed"),
        ("voice_prompt=NATF0.pt&audio_temperature=nan", "audio_temperature"),
    ],
)
def test_bad_query_parameters_are_refused(live_server, query, needle):
    srv, engine = start(live_server)
    with chat(srv, query) as ws:
        messages, code = expect_close(ws)
    assert code == protocol.CloseCode.POLICY_VIOLATION
    errs = errors_in(messages)
    assert errs and needle in errs[0], errs
    assert engine.stats.sessions_opened == 0


@pytest.mark.parametrize(
    ("payload", "code", "needle"),
    [
        (b"\x09hello", protocol.CloseCode.UNSUPPORTED_DATA, "unknown message kind"),
        (b"", protocol.CloseCode.UNSUPPORTED_DATA, "empty message"),
        (
            b"\x01" + b"this is not an ogg stream at all, not at all",
            protocol.CloseCode.INVALID_PAYLOAD,
            "malformed",
        ),
        (b"\x01" + bytes(range(256)) * 4, protocol.CloseCode.INVALID_PAYLOAD, "malformed"),
        ("text frame", protocol.CloseCode.UNSUPPORTED_DATA, "text WebSocket messages"),
        (b"\x01" + b"\x00" * 70000, protocol.CloseCode.MESSAGE_TOO_BIG, "exceeds the limit"),
    ],
)
def test_bad_messages_get_error_and_close_without_disturbing_others(
    live_server, payload, code, needle
):
    srv, _ = start(live_server, max_sessions=2)
    with chat(srv) as good:
        assert good.recv(timeout=5) == protocol.HANDSHAKE
        with chat(srv) as bad:
            assert bad.recv(timeout=5) == protocol.HANDSHAKE
            bad.send(payload)
            messages, got = expect_close(bad)
        assert got == code
        errs = errors_in(messages)
        assert errs and needle in errs[0], errs
        # The other conversation goes on.
        for page in opus_frames(0.4):
            good.send(protocol.audio(page))
        m = good.recv(timeout=5)
        assert isinstance(m, bytes) and m[0] in (protocol.Kind.AUDIO, protocol.Kind.TEXT)
    assert srv.get("/healthz")[0] == 200


def test_garbage_before_handshake_is_caught(live_server):
    srv, _ = start(live_server, NullEngineConfig(prompt_seconds=0.3))
    with chat(srv) as ws:
        ws.send(b"\x01" + b"garbage" * 10)
        messages, code = expect_close(ws)
    assert code == protocol.CloseCode.INVALID_PAYLOAD
    assert protocol.HANDSHAKE not in messages or messages.index(protocol.HANDSHAKE) == 0


def test_control_ping_and_metadata_from_client_are_ignored(live_server):
    srv, _ = start(live_server)
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        ws.send(protocol.PING)
        ws.send(protocol.encode(protocol.Kind.CONTROL, b"\x00"))
        ws.send(protocol.metadata({"hello": 1}))
        for page in opus_frames(0.4):
            ws.send(protocol.audio(page))
        m = ws.recv(timeout=5)
        assert m[0] == protocol.Kind.AUDIO


# --- HTTP endpoints ---------------------------------------------------------------------------


def test_health_ready_info_voices_metrics(live_server):
    srv, _ = start(live_server, max_sessions=2)
    assert srv.get("/healthz") == (200, b'{"status":"ok"}')
    assert srv.get("/readyz")[0] == 200
    import json

    status, body = srv.get("/api/voices")
    assert status == 200 and json.loads(body) == {"voices": ["NATF0.pt", "NATM0.pt"]}
    status, body = srv.get("/api/info")
    info = json.loads(body)
    assert info["capacity"] == 2 and info["engine"]["device"] == "cpu"
    assert info["sample_rate"] == 24000 and info["frame_size"] == 1920
    assert info["version"]
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        for page in opus_frames(0.8):
            ws.send(protocol.audio(page))
        ws.recv(timeout=5)
        assert metric(srv, "personaplex_sessions_active") == 1
    status, body = srv.get("/metrics")
    text = body.decode()
    for name in (
        "personaplex_sessions_total 1.0",
        "personaplex_frame_step_seconds_bucket",
        "personaplex_real_time_factor",
        "personaplex_late_frames_total",
        "personaplex_dropped_frames_total",
        "personaplex_prompt_seconds_count 1.0",
        "personaplex_gpu_memory_bytes",
        "personaplex_ready 1.0",
    ):
        assert name in text, name
    assert metric(srv, "personaplex_frame_step_seconds_count") >= 1


def test_readyz_503_while_loading_and_chat_refused(live_server):
    release = threading.Event()

    def slow_factory(_s):
        release.wait(10)
        return NullEngine()

    settings = Settings()
    srv = live_server(create_app(settings, slow_factory), settings)
    assert srv.get("/healthz")[0] == 200
    status, body = srv.get("/readyz")
    assert status == 503 and b"loading" in body
    with chat(srv) as ws:
        messages, code = expect_close(ws)
    assert code == protocol.CloseCode.TRY_AGAIN_LATER
    assert any("loading" in e for e in errors_in(messages))
    release.set()
    srv.wait_ready(5)


def test_load_failure_is_reported(live_server):
    failures = []

    def broken(_s):
        raise RuntimeError("no GPU memory: use quantize=nf4 or a bigger GPU")

    settings = Settings()
    srv = live_server(create_app(settings, broken, on_load_failure=failures.append), settings)
    deadline = time.monotonic() + 5
    while not failures and time.monotonic() < deadline:
        time.sleep(0.02)
    status, body = srv.get("/readyz")
    assert status == 503 and b"quantize=nf4" in body
    assert isinstance(failures[0], RuntimeError)


def test_index_serves_ui_dist_when_present(live_server, tmp_path: Path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>official ui</html>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    srv, _ = start(live_server, static_dir=dist)
    assert srv.get("/") == (200, b"<html>official ui</html>")
    assert srv.get("/assets/app.js") == (200, b"console.log(1)")
    assert srv.get("/healthz")[0] == 200  # routes still win over the static mount


def test_index_without_ui_says_how_to_connect(live_server, tmp_path: Path):
    srv, _ = start(live_server, static_dir=tmp_path / "missing")
    status, body = srv.get("/")
    assert status == 200 and b"/api/chat" in body and b"personaplex-server client" in body


@pytest.mark.parametrize("encoder", ["libopus", "sphn"])
def test_reply_encoders_round_trip(live_server, encoder):
    srv, _ = start(live_server, opus_encoder=encoder, opus_complexity=0)
    info = json.loads(srv.get("/api/info")[1])
    assert info["opus_encoder"].startswith(encoder)
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        frames = opus_frames(0.8)
        for page in frames:
            ws.send(protocol.audio(page))
        decoder, samples = OpusDecoder(), 0
        while samples < (len(frames) - 1) * 1920:
            m = ws.recv(timeout=5)
            if m[0] == protocol.Kind.AUDIO:
                samples += decoder.decode(m[1:]).size
    assert samples == (len(frames) - 1) * 1920


def test_concurrent_sessions_are_stepped_in_batches_with_their_own_replies(live_server):
    # Each step takes 40 ms: frames of the other conversations pile up meanwhile and go
    # to the engine together (step_batch), yet every reply goes to its own conversation.
    srv, engine = start(
        live_server, NullEngineConfig(step_seconds=0.04, batched=True), max_sessions=3
    )
    freqs = [300.0, 700.0, 1500.0]
    results: dict[int, np.ndarray] = {}

    def talk(i: int) -> None:
        with chat(srv) as ws:
            assert ws.recv(timeout=5) == protocol.HANDSHAKE
            frames = opus_frames(1.2, freq=freqs[i])
            decoder, pcm = OpusDecoder(), []
            for page in frames:
                ws.send(protocol.audio(page))
                time.sleep(0.08)
            while sum(p.size for p in pcm) < (len(frames) - 2) * 1920:
                m = ws.recv(timeout=5)
                if m[0] == protocol.Kind.AUDIO:
                    pcm.append(decoder.decode(m[1:]))
            results[i] = np.concatenate(pcm)

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2]
    assert max(engine.stats.batches) > 1, engine.stats.batches
    for i, pcm in results.items():
        spectrum = np.abs(np.fft.rfft(pcm[1920:]))
        peak_hz = np.argmax(spectrum) * 24000 / (2 * (spectrum.size - 1))
        assert abs(peak_hz - freqs[i]) < 30, (i, peak_hz)
    assert metric(srv, "personaplex_step_batch_size_sum") > metric(
        srv, "personaplex_step_batch_size_count"
    )


def test_server_stop_closes_open_conversations(live_server):
    srv, engine = start(live_server)
    with chat(srv) as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        t0 = time.monotonic()
        srv.server.should_exit = True
        _messages, code = expect_close(ws, timeout=10)
    assert time.monotonic() - t0 < 7  # uvicorn's graceful timeout is 5 s
    assert code in (protocol.CloseCode.GOING_AWAY, 1012)  # 1012: service restart
    deadline = time.monotonic() + 5
    while engine.stats.sessions_closed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats.sessions_closed == 1  # the engine slot was released too
