"""Dynamic batching of model steps across conversations.

Every conversation asks for one step per 80 ms frame.  When the engine offers
``step_batch`` (one LM call for several slots: on a GPU about the cost of one), then
whenever the engine thread is free, everything pending (at most one frame per
conversation, since each waits for its step before asking again) goes to the engine as
ONE job.  Nothing waits for a batch to fill: a lone conversation is stepped at once, and a
batch forms only from frames that arrived while the engine was busy.

Engines without ``step_batch`` get one job per frame instead.  Measured with many streams
on a small, busy VM, that pipelines better: a batch cycle serialises the event loop's Opus
work for all conversations and the thread hand-offs, and each wake-up waits for the busy
core, so a shared cycle fell behind where independent jobs did not (``bench server``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from .engine_api import EngineLike, EngineSessionLike, StepOutputLike
from .metrics import Metrics
from .worker import EngineWorker

log = logging.getLogger(__name__)

_Item = tuple[EngineSessionLike, np.ndarray, "asyncio.Future[tuple[StepOutputLike, float]]"]


class StepBatcher:
    def __init__(self, engine: EngineLike, worker: EngineWorker, metrics: Metrics) -> None:
        self.engine = engine
        self.worker = worker
        self.metrics = metrics
        self._step_batch = getattr(engine, "step_batch", None)
        self._pending: list[_Item] = []
        self._busy = False

    async def step(self, session: EngineSessionLike, pcm: np.ndarray) -> tuple[Any, float]:
        """One frame for one conversation; returns (output, seconds the frame's batch took
        on the engine thread)."""
        if self._step_batch is None:
            # No batched step in this engine: one job per frame, so the frames of different
            # conversations pipeline through the thread hand-offs independently.
            outs, seconds = await self.worker.call(self._run, [(session, pcm)])
            return outs[0], seconds
        future: asyncio.Future[tuple[StepOutputLike, float]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append((session, pcm, future))
        if not self._busy:
            self._launch()
        return await future

    def _launch(self) -> None:
        # Conversations that ended while waiting are left out (their slot may be closing).
        batch = [item for item in self._pending if not item[2].done()]
        self._pending = []
        if not batch:
            return
        self._busy = True
        work = [(session, pcm) for session, pcm, _ in batch]
        job = self.worker.run_soon(self._run, work)
        job.add_done_callback(lambda done: self._finish(batch, done))

    def _run(self, work: list[tuple[EngineSessionLike, np.ndarray]]) -> tuple[list[Any], float]:
        """On the engine thread."""
        c0, t0 = time.thread_time(), time.perf_counter()
        if self._step_batch is not None and len(work) > 1:
            outs = list(self._step_batch(work))
        else:
            outs = [session.step(pcm) for session, pcm in work]
        seconds = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        self.metrics.observe_batch(len(work), seconds, cpu)
        return outs, seconds

    def _finish(self, batch: list[_Item], done: asyncio.Future[tuple[list[Any], float]]) -> None:
        if done.cancelled():  # pragma: no cover - the worker does not cancel jobs
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = done.exception()
        if exc is not None:
            log.error("engine step failed for %d conversation(s): %r", len(batch), exc)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            outs, seconds = done.result()
            for (_, _, future), out in zip(batch, outs, strict=True):
                if future.done():
                    continue
                error = getattr(out, "error", None)  # this conversation's step failed alone
                if isinstance(error, BaseException):
                    future.set_exception(error)
                else:
                    future.set_result((out, seconds))
        # Launch the next batch one loop iteration later: the conversations just answered
        # run first and, when their next frame is already queued, join this next batch.
        # Launching at once would make two conversations alternate in batches of one.
        asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        self._busy = False
        if self._pending:
            self._launch()
