"""Plain HTTP routes: the web UI, voices, info, health, readiness and metrics."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..audio import describe_encoder
from ..auth import COOKIE_NAME, QUERY_NAME, token_ok
from ..config import Settings
from ..state import AppState, State, require_token

router = APIRouter()  # open: health, readiness, metrics and the page (which asks for a token)
api_router = APIRouter(dependencies=[Depends(require_token)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """The process is alive (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(state: State) -> JSONResponse:
    """200 once the model is loaded and warmed up, 503 before (or after a failed load)."""
    if state.ready:
        return JSONResponse({"status": "ready"})
    if state.load_error is not None:
        return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


@router.get("/metrics", tags=["ops"])
async def metrics(state: State) -> Response:
    state.metrics.sessions_active.set(state.capacity.active)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@api_router.get("/api/voices", tags=["api"])
async def voices(state: State) -> dict[str, list[str]]:
    """Voice prompts a client may pass as ``voice_prompt``."""
    if state.engine is None:
        raise HTTPException(503, "the model is still loading")
    return {"voices": sorted(state.engine.voices())}


@api_router.get("/api/info", tags=["api"])
async def info(state: State) -> dict[str, Any]:
    """Model, device, precision, capacity and version."""
    engine = state.engine
    return {
        "version": __version__,
        "ready": state.ready,
        "load_error": state.load_error,
        "load_seconds": state.load_seconds,
        "engine": _jsonable(engine.info) if engine is not None else None,
        "frame_size": engine.frame_size if engine is not None else None,
        "sample_rate": engine.sample_rate if engine is not None else None,
        "max_frames": engine.max_frames if engine is not None else None,
        "opus_encoder": describe_encoder(
            state.settings.opus_encoder,
            state.settings.opus_complexity,
            state.settings.opus_bitrate,
            state.settings.opus_application,
        ),
        "capacity": state.capacity.limit,
        "sessions_active": state.capacity.active,
        "tls": state.settings.tls,
        "auth_required": state.settings.access_token is not None,
    }


@router.get("/", include_in_schema=False)
async def index(request: Request, state: State) -> Response:
    """The official web UI when installed, otherwise a page saying how to connect."""
    settings = state.settings
    if settings.access_token is not None:
        given = request.query_params.get(QUERY_NAME)
        if given is not None and token_ok(settings.access_token, {QUERY_NAME: given}, {}):
            # Keep the token in an HttpOnly cookie (the UI's WebSocket sends it along) and
            # drop it from the address bar.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE_NAME,
                given,
                httponly=True,
                secure=settings.tls,
                samesite="strict",
                max_age=30 * 24 * 3600,
            )
            return response
        if not token_ok(settings.access_token, {}, request.cookies):
            return HTMLResponse(_page(_LOCKED, state), status_code=401)
    ui_index = settings.effective_static_dir / "index.html"
    if ui_index.is_file():
        return FileResponse(ui_index)
    return HTMLResponse(_page(_HELP, state))


def mount_static(app: FastAPI, settings: Settings) -> None:
    """Serve the official UI's files (dist.tgz from the model repo) when present."""
    static: Path = settings.effective_static_dir
    if (static / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static, html=False), name="ui")


_LOCKED = """
<p>This server requires an access token. Open
<code>{base}/?token=YOUR_TOKEN</code> once; the browser keeps it in a cookie.</p>
"""

_HELP = """
<p>The official PersonaPlex web UI is not installed here (unpack <code>dist.tgz</code>
from the model repository into <code>{static}</code> to serve it at this address).</p>
<p>Connect a client of the Moshi/PersonaPlex protocol to
<code>{ws}/api/chat?voice_prompt=NATF0.pt&amp;text_prompt=...</code>, or use the command line
client:</p>
<pre>personaplex-server client --url {base} --input question.wav --out-dir reply/</pre>
<p>Voices: <a href="/api/voices">/api/voices</a> &middot; server info:
<a href="/api/info">/api/info</a> &middot; API docs: <a href="/api/docs">/api/docs</a></p>
"""


def _page(body: str, state: AppState) -> str:
    settings = state.settings
    scheme = "https" if settings.tls else "http"
    base = f"{scheme}://HOST:{settings.port}"
    ws = f"{'wss' if settings.tls else 'ws'}://HOST:{settings.port}"
    status = "ready" if state.ready else ("failed to load" if state.load_error else "loading")
    text = body.format(
        base=html.escape(base),
        ws=html.escape(ws),
        static=html.escape(str(settings.effective_static_dir)),
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>PersonaPlex voice server"
        "</title></head><body style='font-family:sans-serif;max-width:46em;margin:2em auto'>"
        f"<h1>PersonaPlex voice server {html.escape(__version__)}</h1>"
        f"<p>Model status: <b>{html.escape(status)}</b></p>{text}</body></html>"
    )
