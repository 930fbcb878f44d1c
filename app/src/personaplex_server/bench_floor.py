"""The transport + codec floor for ``bench server --engine floor``.

A bare ASGI app on the same uvicorn settings as the server: per WebSocket audio message it
decodes the Opus page, frames it, encodes each 80 ms frame at half volume and sends it
back, with a text message every 5th frame, as the null engine's conversations do; the
Opus work is timed with the same thread CPU clock as the server's codec counter.  No
FastAPI, no session tasks or queues, no engine thread, no metrics library.  Its CPU per
frame over its own codec CPU is what uvicorn's WebSocket layer and the Opus codecs cost
together: no server built on them does better than that ratio on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from . import protocol
from .audio import FRAME_SIZE, SAMPLE_RATE, Framer, OpusDecoder, make_encoder_factory
from .null_engine import NullEngineConfig

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

TEXT_EVERY = NullEngineConfig.text_every  # the same messages as the null engine's replies


def floor_app(opus: dict[str, Any]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app; ``/metrics`` gives the two counters ``bench server`` reads."""
    encoder_factory = make_encoder_factory(
        opus["opus_encoder"],
        opus["opus_complexity"],
        opus["opus_bitrate"],
        opus["opus_application"],
    )
    counters = {"frames": 0, "codec_s": 0.0}

    async def http(send: Send) -> None:
        body = (
            f"personaplex_frames_total {counters['frames']}\n"
            f"personaplex_codec_cpu_seconds_total {counters['codec_s']}\n"
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def conversation(receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": protocol.HANDSHAKE})
        decoder = OpusDecoder(SAMPLE_RATE)
        encoder = encoder_factory(SAMPLE_RATE)
        framer = Framer(FRAME_SIZE)
        half = np.float32(0.5)
        n = 0
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            kind, payload = protocol.decode(message["bytes"])
            if kind is not protocol.Kind.AUDIO:
                continue
            c0 = time.thread_time()
            pcm = decoder.decode(payload)
            counters["codec_s"] += time.thread_time() - c0
            for frame in framer.push(pcm):
                c0 = time.thread_time()
                opus_page = encoder.encode(frame * half)
                counters["codec_s"] += time.thread_time() - c0
                counters["frames"] += 1
                n += 1
                if opus_page:
                    await send({"type": "websocket.send", "bytes": protocol.audio(opus_page)})
                if n % TEXT_EVERY == 0:
                    await send({"type": "websocket.send", "bytes": protocol.text(" hi")})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":  # /metrics and /readyz alike
            await http(send)
        else:
            await conversation(receive, send)

    return app
