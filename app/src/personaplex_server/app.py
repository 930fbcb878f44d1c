"""The FastAPI application factory and its lifespan (model loaded once, in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from . import __version__
from .audio import make_encoder_factory
from .batching import StepBatcher
from .config import Settings
from .engine_api import EngineFactory, load_real_engine
from .routes import chat, http
from .state import AppState, app_state
from .worker import Capacity, EngineWorker

log = logging.getLogger(__name__)


async def _load_engine(state: AppState) -> None:
    assert state.worker is not None
    settings = state.settings
    t0 = time.perf_counter()
    try:
        state.encoder_factory = make_encoder_factory(
            settings.opus_encoder,
            settings.opus_complexity,
            settings.opus_bitrate,
            settings.opus_application,
        )
        state.encoder_factory(24000)  # fail now, not on the first client, if unusable
        engine = await state.worker.call(state.engine_factory, settings)
        engine_capacity = engine.info.get("capacity")
        limit = settings.max_sessions
        if limit == "auto":  # the engine measured what it can hold
            limit = engine_capacity if isinstance(engine_capacity, int) else 1
        if isinstance(engine_capacity, int) and 0 < engine_capacity < limit:
            log.warning(
                "engine supports %d concurrent sessions, fewer than max_sessions=%d; using %d",
                engine_capacity,
                limit,
                engine_capacity,
            )
            limit = engine_capacity
        state.capacity.limit = limit
        state.metrics.sessions_capacity.set(limit)
        if settings.warmup:
            await state.worker.call(engine.warmup)
        state.batcher = StepBatcher(engine, state.worker, state.metrics)
        state.engine = engine
        state.load_seconds = time.perf_counter() - t0
        state.ready = True
        state.metrics.ready.set(1)
        log.info(
            "model ready in %.1f s: %s; capacity %d session(s)",
            state.load_seconds,
            {k: engine.info.get(k) for k in ("model", "device", "dtype", "quantize")},
            limit,
        )
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        state.load_error = str(exc) or type(exc).__name__
        log.error("model load failed: %s", state.load_error, exc_info=not _is_expected(exc))
        if state.on_load_failure is not None:
            state.on_load_failure(exc)


def _is_expected(exc: BaseException) -> bool:
    # The engine's EngineLoadError carries an actionable message; no traceback needed.
    return type(exc).__name__ == "EngineLoadError"


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app_state(app)
    # The event loop holds the GIL for Opus and WebSocket work; with Python's default 5 ms
    # switch interval each hand-off to the engine thread can wait that long, which with
    # many streams adds up to more than a frame (measured: dropped frames at 32 streams).
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(state.settings.gil_switch_interval_ms / 1000)
    state.worker = EngineWorker()
    # auto: no conversation before the engine has measured its capacity (set at load)
    initial = state.settings.max_sessions if state.settings.max_sessions != "auto" else 0
    state.capacity = Capacity(initial)
    state.metrics.sessions_capacity.set(initial)
    task = asyncio.create_task(_load_engine(state), name="load-engine")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        state.worker.shutdown()
        sys.setswitchinterval(previous_interval)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    *,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app.  Nothing heavy happens here: the engine is loaded by the lifespan,
    in the engine worker thread, while /healthz already answers and /readyz says 503."""
    app = FastAPI(
        title="PersonaPlex voice server",
        version=__version__,
        lifespan=_lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.personaplex = AppState(
        settings=settings,
        engine_factory=engine_factory or load_real_engine,
        on_load_failure=on_load_failure,
    )
    app.include_router(http.router)
    app.include_router(http.api_router)
    app.include_router(chat.router)
    http.mount_static(app, settings)
    return app
