"""A conversation whose model step fails alone ends alone (the null engine stands in for
a float16 overflow; tests/engine/test_sampling.py proves the real engine's side)."""

from __future__ import annotations

import threading
import time

from helpers import opus_frames
from test_server import chat, errors_in, expect_close, metric, metric_labeled, start

from personaplex_server import protocol
from personaplex_server.null_engine import NullEngineConfig


def test_nonfinite_step_ends_only_that_conversation(live_server):
    cfg = NullEngineConfig(
        step_seconds=0.02, batched=True, nonfinite_voice="NATM0.pt", nonfinite_frame=5
    )
    srv, _engine = start(live_server, cfg, max_sessions=2)
    healthy_frames: list[int] = []

    def healthy() -> None:
        with chat(srv) as ws:
            assert ws.recv(timeout=5) == protocol.HANDSHAKE
            n = 0
            for page in opus_frames(2.0):
                ws.send(protocol.audio(page))
                time.sleep(0.08)
                while True:
                    try:
                        m = ws.recv(timeout=0.001)
                    except TimeoutError:
                        break
                    n += m[:1] == bytes([protocol.Kind.AUDIO])
            healthy_frames.append(n)

    t = threading.Thread(target=healthy)
    t.start()
    with chat(srv, "voice_prompt=NATM0.pt&text_prompt=hi") as ws:
        assert ws.recv(timeout=5) == protocol.HANDSHAKE
        for page in opus_frames(1.0):
            ws.send(protocol.audio(page))
        messages, code = expect_close(ws)
    assert code == 1011
    assert any("invalid values" in e for e in errors_in(messages))
    t.join(30)
    assert healthy_frames and healthy_frames[0] > 15  # kept talking the whole time
    assert metric(srv, "personaplex_nonfinite_steps_total") == 1
    assert metric_labeled(srv, "personaplex_sessions_ended_total", 'reason="model_failure"') == 1
