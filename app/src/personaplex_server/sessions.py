"""Conversations: one session's loops.

A session runs four tasks in one ``asyncio.TaskGroup`` (when one ends, the others are
cancelled):

* ``receive``: WebSocket messages -> Opus decode -> 80 ms frames -> a small bounded queue
  (when the model falls behind real time the oldest frame is dropped and counted);
* ``model``: prompts (then the 0x00 handshake), then one engine step per frame; the engine
  is not thread-safe, so every engine call runs on one dedicated worker thread
  (:mod:`personaplex_server.worker`), and the steps of all conversations are batched
  there (:mod:`personaplex_server.batching`);
* ``emit``: sends queued messages to the client;
* ``watchdog``: ends the conversation when a started client sends nothing for a while.

How a session ended is decided in one place (:func:`personaplex_server.errors.to_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import protocol
from .audio import Framer, OpusDecodeError, OpusDecoder, PcmEncoder
from .batching import StepBatcher
from .engine_api import EngineLike, EngineSessionLike
from .errors import (
    BadMessage,
    BadRequest,
    ClientDisconnected,
    ClientTooSlow,
    ContextExhausted,
    IdleTimeout,
    MalformedAudio,
    MessageTooBig,
    ModelFailure,
    ServerBusy,
    ServerShutdown,
    SessionError,
    to_client,
)
from .metrics import Metrics
from .params import ChatParams
from .worker import EngineWorker

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 256  # about 10 s of replies (audio + text per 80 ms frame)
FLUSH_TIMEOUT_S = 2.0


@dataclass
class SessionLimits:
    encoder_factory: Callable[[int], PcmEncoder]
    max_message_bytes: int
    max_queued_frames: int
    prompt_timeout_s: float
    idle_timeout_s: float


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_stepped: int = 0
    frames_dropped: int = 0
    audio_out: int = 0
    text_out: int = 0
    prompt_s: float = 0.0
    ended: str = ""
    started_at: float = field(default_factory=time.monotonic)


class ChatSession:
    """One conversation on an accepted WebSocket (capacity already acquired)."""

    def __init__(
        self,
        ws: WebSocket,
        engine: EngineLike,
        worker: EngineWorker,
        batcher: StepBatcher,
        metrics: Metrics,
        params: ChatParams,
        sampling: Any,
        limits: SessionLimits,
        peer: str,
    ) -> None:
        self.ws = ws
        self.engine = engine
        self.worker = worker
        self.batcher = batcher
        self.metrics = metrics
        self.params = params
        self.sampling = sampling
        self.limits = limits
        self.peer = peer
        self.stats = SessionStats()
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue(limits.max_queued_frames)
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_LIMIT)
        self._decoder = OpusDecoder(engine.sample_rate)
        self._encoder = limits.encoder_factory(engine.sample_rate)
        self._framer = Framer(engine.frame_size)
        self._started = False  # handshake sent: audio from now on is conversation input
        self._opened: list[EngineSessionLike] = []
        self._last_rx = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------
    async def run(self, on_end: Callable[[], None] | None = None) -> str:
        """Run until the conversation ends; returns the end reason (for logs/metrics).

        ``on_end`` runs as soon as the conversation is over, before the goodbye messages
        and the close handshake, so that a capacity slot is free at once."""
        ended: BaseException | None = None
        cancelled = False
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive_loop(), name="receive")
                tg.create_task(self._model_loop(), name="model")
                tg.create_task(self._emit_loop(), name="emit")
                tg.create_task(self._watchdog_loop(), name="watchdog")
        except BaseExceptionGroup as group:
            ended = _primary(group)
        except asyncio.CancelledError:  # the server is stopping: say so, then stop
            cancelled = True
            ended = ServerShutdown("the server is shutting down; reconnect in a moment")
        except Exception as exc:  # pragma: no cover - defensive
            ended = exc
        finally:
            # Runs after any step already queued on the worker: the slot is freed there.
            self.worker.submit(self._close_engine_sessions)
            if on_end is not None:
                on_end()
        if ended is None:  # pragma: no cover - the loops only end by raising
            ended = ClientDisconnected()
        outcome = to_client(ended)
        if outcome.reason == "internal_error":
            log.error("session %s failed", self.peer, exc_info=ended)
        if not isinstance(ended, ClientDisconnected):  # nobody to talk to otherwise
            if isinstance(ended, ContextExhausted):
                await self._flush_outbox()
            if outcome.message is not None:
                await self._send_quietly(protocol.error(outcome.message))
            await close_quietly(self.ws, outcome.close_code, outcome.reason)
        self.stats.ended = outcome.reason
        if cancelled:
            raise asyncio.CancelledError()
        return outcome.reason

    def _close_engine_sessions(self) -> None:
        while self._opened:
            session = self._opened.pop()
            try:
                session.close()
            except Exception:
                log.exception("engine session close failed")

    # -- loops --------------------------------------------------------------------------
    async def _receive(self) -> bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientDisconnected() from None
        if message["type"] == "websocket.disconnect":
            raise ClientDisconnected()
        data = message.get("bytes")
        if data is None:
            raise BadMessage("text WebSocket messages are not part of the protocol")
        if len(data) > self.limits.max_message_bytes:
            raise MessageTooBig(
                f"message of {len(data)} bytes exceeds the limit of "
                f"{self.limits.max_message_bytes} bytes"
            )
        assert isinstance(data, bytes)
        self._last_rx = time.monotonic()
        return data

    async def _receive_loop(self) -> None:
        while True:
            data = await self._receive()
            try:
                kind, payload = protocol.decode(data)
            except protocol.ProtocolError as exc:
                raise BadMessage(f"protocol error: {exc}") from None
            if kind is not protocol.Kind.AUDIO:
                # Handshake/text/control/metadata/ping from a client carry nothing we use
                # (the official server ignores them too).
                continue
            c0 = time.thread_time()
            try:
                pcm = self._decoder.decode(payload)
            except OpusDecodeError as exc:
                raise MalformedAudio(f"malformed Ogg/Opus audio: {exc}") from None
            self.metrics.codec_cpu_seconds.inc(time.thread_time() - c0)
            frames = self._framer.push(pcm)
            if not self._started:
                continue  # audio before the handshake is decoded (stream state) and discarded
            for frame in frames:
                self.stats.frames_in += 1
                if self._frames.full():
                    self._frames.get_nowait()  # keep latency bounded: drop the oldest
                    self.stats.frames_dropped += 1
                    self.metrics.dropped_frames.inc()
                self._frames.put_nowait(frame)

    async def _model_loop(self) -> None:
        p = self.params

        def open_session() -> EngineSessionLike:
            s: EngineSessionLike = self.engine.new_session(p.voice, p.text_prompt, self.sampling)
            self._opened.append(s)
            return s

        try:
            session = await self.worker.call(open_session)
        except Exception as exc:
            raise _engine_error(exc) from None
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._run_prompt(session), self.limits.prompt_timeout_s)
        except TimeoutError:
            raise SessionError("the prompt phase took too long; try again later") from None
        except Exception as exc:  # e.g. a prompt longer than the model's context
            raise _engine_error(exc) from exc
        self.stats.prompt_s = time.perf_counter() - t0
        self.metrics.prompt_seconds.observe(self.stats.prompt_s)
        self._started = True
        self._last_rx = time.monotonic()
        self._post(protocol.HANDSHAKE)
        while True:
            if session.frames_left <= 0:
                raise ContextExhausted(
                    "the conversation reached the end of the model's context "
                    f"({self.engine.max_frames} frames); start a new conversation"
                )
            frame = await self._frames.get()
            try:
                out, _seconds = await self.batcher.step(session, frame)
            except Exception as exc:
                if type(exc).__name__ == "NonFiniteStep":
                    self.metrics.nonfinite_steps.inc()
                raise _engine_error(exc, starting=False) from exc
            self.stats.frames_stepped += 1
            if out.pcm is not None:
                c0 = time.thread_time()
                opus = self._encoder.encode(out.pcm)
                self.metrics.codec_cpu_seconds.inc(time.thread_time() - c0)
                if opus:
                    self._post(protocol.audio(opus))
                    self.stats.audio_out += 1
            if out.text:
                self._post(protocol.text(out.text))
                self.stats.text_out += 1

    async def _run_prompt(self, session: EngineSessionLike) -> None:
        """The prompt phase. An engine that offers ``run_prompt_part`` gets one worker job
        per part, so the steps of the conversations already talking (queued as jobs too)
        run between the parts instead of waiting for the whole prompt."""
        part = getattr(session, "run_prompt_part", None)
        if part is None:
            await self.worker.call(session.run_prompt)
            return
        while not await self.worker.call(part):
            pass

    async def _watchdog_loop(self) -> None:
        """Ends the conversation when a started client sends nothing for idle_timeout_s."""
        idle = self.limits.idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, idle / 4))
            if self._started and time.monotonic() - self._last_rx > idle:
                raise IdleTimeout(f"no data from the client for {idle:g} s; closing")

    async def _emit_loop(self) -> None:
        while True:
            message = await self._outbox.get()
            await self._send(message)

    # -- sending ------------------------------------------------------------------------
    def _post(self, message: bytes) -> None:
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            raise ClientTooSlow("the client is not reading the replies; closing") from None

    async def _send(self, message: bytes) -> None:
        try:
            await self.ws.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientDisconnected() from None

    async def _send_quietly(self, message: bytes) -> None:
        with contextlib.suppress(Exception, ClientDisconnected):
            await asyncio.wait_for(self._send(message), FLUSH_TIMEOUT_S)

    async def _flush_outbox(self) -> None:
        while not self._outbox.empty():
            await self._send_quietly(self._outbox.get_nowait())


def _engine_error(exc: Exception, starting: bool = True) -> Exception:
    """Map the engine's errors (by name: the server does not import the engine package)."""
    name = type(exc).__name__
    if name == "NoFreeSlot":
        return ServerBusy("server busy: no free model slot; try again later")
    if name == "NonFiniteStep":
        return ModelFailure(
            "the model produced invalid values (a numeric overflow) and this conversation "
            "cannot continue; start a new one"
        )
    if name == "ContextExhausted":
        return ContextExhausted(
            "the conversation reached the end of the model's context; start a new conversation"
        )
    if starting and isinstance(exc, ValueError | KeyError | FileNotFoundError):
        return BadRequest(f"cannot start this conversation: {exc}")
    return exc


async def close_quietly(ws: WebSocket, code: int, reason: str = "") -> None:
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, reason=reason[:120]), FLUSH_TIMEOUT_S)


def _primary(group: BaseExceptionGroup) -> BaseException:
    """The exception that ended a session (a SessionError wins over a disconnect)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                walk(e)
        else:
            leaves.append(exc)

    walk(group)
    for kinds in ((SessionError,), (ClientDisconnected,)):
        for exc in leaves:
            if isinstance(exc, kinds):
                return exc
    return leaves[0]
