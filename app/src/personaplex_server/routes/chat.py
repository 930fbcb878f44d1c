"""``GET /api/chat``: the conversation WebSocket (official PersonaPlex protocol)."""

from __future__ import annotations

import contextlib
import logging
import time

from fastapi import APIRouter, WebSocket

from .. import protocol
from ..auth import token_ok
from ..engine import SamplingParams
from ..errors import NotReady, ServerBusy, SessionError, Unauthorized
from ..params import parse_chat_params
from ..sessions import ChatSession, SessionLimits, close_quietly
from ..state import State

router = APIRouter()
log = logging.getLogger("personaplex_server.chat")


@router.websocket("/api/chat")
async def chat(ws: WebSocket, state: State) -> None:
    settings = state.settings
    metrics = state.metrics
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "unknown"
    # Accept first: browsers only see messages and close codes, not HTTP refusals (so the
    # token is checked here, not by a dependency that would refuse the upgrade).
    await ws.accept()
    try:
        if not token_ok(settings.access_token, ws.query_params, ws.cookies, ws.headers):
            raise Unauthorized("unauthorized: missing or wrong access token")
        engine = state.engine
        batcher = state.batcher
        if not state.ready or engine is None or state.worker is None or batcher is None:
            raise NotReady("the model is still loading; try again in a minute")
        params = parse_chat_params(ws.query_params, engine.voices, settings.max_text_prompt_chars)
        if not state.capacity.try_acquire():
            raise ServerBusy(
                f"server busy: all {state.capacity.limit} conversation slot(s) are in use; "
                "try again later"
            )
    except SessionError as exc:
        metrics.sessions_rejected.labels(exc.reason).inc()
        log.info("refused %s: %s", peer, exc.reason)
        with contextlib.suppress(Exception):
            await ws.send_bytes(protocol.error(exc.message))
        await close_quietly(ws, exc.close_code, exc.reason)
        return

    t0 = time.monotonic()
    metrics.sessions_total.inc()
    metrics.sessions_active.set(state.capacity.active)
    log.info(
        # No "text_prompt=" here: the prompt is user content and only its length is logged.
        "session %s started: voice=%s, a text prompt of %d chars, seed=%s",
        peer,
        params.voice,
        len(params.text_prompt),
        params.seed,
    )
    released = False

    def release() -> None:
        # The slot is free as soon as the conversation is over (disconnects included).
        nonlocal released
        if not released:
            released = True
            state.capacity.release()
            metrics.sessions_active.set(state.capacity.active)

    session: ChatSession | None = None
    reason = "internal_error"
    try:
        sampling = SamplingParams(
            temp=params.temp,
            temp_text=params.temp_text,
            top_k=params.top_k,
            top_k_text=params.top_k_text,
            seed=params.seed,
        )
        session = ChatSession(
            ws,
            engine,
            state.worker,
            batcher,
            metrics,
            params,
            sampling,
            SessionLimits(
                encoder_factory=state.encoder_factory,
                max_message_bytes=settings.max_message_bytes,
                max_queued_frames=settings.max_queued_frames,
                prompt_timeout_s=settings.prompt_timeout_s,
                idle_timeout_s=settings.idle_timeout_s,
            ),
            peer,
        )
        reason = await session.run(on_end=release)
    except Exception:
        log.exception("session %s could not start", peer)
        await close_quietly(ws, protocol.CloseCode.INTERNAL_ERROR, reason)
    finally:
        release()
    metrics.sessions_ended.labels(reason).inc()
    stats = session.stats if session is not None else None
    log.info(
        "session %s ended (%s) after %.1f s: prompt %.2f s, %d frames stepped, %d dropped",
        peer,
        reason,
        time.monotonic() - t0,
        stats.prompt_s if stats else 0.0,
        stats.frames_stepped if stats else 0,
        stats.frames_dropped if stats else 0,
    )
