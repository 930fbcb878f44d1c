"""What the app holds while it runs, and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.requests import HTTPConnection

from .audio import OpusEncoder, PcmEncoder
from .auth import token_ok
from .batching import StepBatcher
from .config import Settings
from .engine_api import EngineFactory, EngineLike
from .metrics import Metrics
from .worker import Capacity, EngineWorker


@dataclass
class AppState:
    settings: Settings
    engine_factory: EngineFactory
    on_load_failure: Callable[[BaseException], None] | None
    encoder_factory: Callable[[int], PcmEncoder] = OpusEncoder
    metrics: Metrics = field(default_factory=Metrics)
    worker: EngineWorker | None = None
    batcher: StepBatcher | None = None
    capacity: Capacity = field(default_factory=lambda: Capacity(1))
    engine: EngineLike | None = None
    ready: bool = False
    load_error: str | None = None
    load_seconds: float | None = None
    started_at: float = field(default_factory=time.time)


def app_state(app: FastAPI) -> AppState:
    state: AppState = app.state.personaplex
    return state


def get_state(conn: HTTPConnection) -> AppState:
    """Dependency: the app's state, for HTTP and WebSocket routes alike."""
    return app_state(conn.app)


State = Annotated[AppState, Depends(get_state)]


def require_token(request: Request, state: State) -> None:
    """Dependency of HTTP routes that need the access token: 401 without it.

    Not for the WebSocket: a browser sees no HTTP refusal there, so the chat route accepts
    first and then says why it closes (routes/chat.py)."""
    if not token_ok(
        state.settings.access_token, request.query_params, request.cookies, request.headers
    ):
        raise HTTPException(
            401,
            "missing or wrong access token (query 'token', cookie, or 'Authorization: Bearer')",
        )
