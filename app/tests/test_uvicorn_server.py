"""The quiet-tick uvicorn server: one housekeeping wake-up a second, prompt stop."""

from __future__ import annotations

import time

from helpers import LiveServer

from personaplex_server.app import create_app
from personaplex_server.config import Settings
from personaplex_server.null_engine import NullEngine
from personaplex_server.uvicorn_server import TICK_S, Server


def test_ticks_once_a_second_and_stops_at_once(live_server, monkeypatch):
    ticks: list[float] = []
    original = Server.on_tick

    async def counting(self: Server, counter: int) -> bool:
        ticks.append(time.monotonic())
        return await original(self, counter)

    monkeypatch.setattr(Server, "on_tick", counting)
    settings = Settings()
    srv: LiveServer = live_server(create_app(settings, lambda _s: NullEngine()), settings)
    srv.wait_ready()
    time.sleep(2.5)
    n = len(ticks)
    # uvicorn's own loop ticks every 0.1 s (25 here); this one once a second.
    assert 2 <= n <= 2.5 / TICK_S + 2, ticks
    assert srv.get("/healthz")[0] == 200
    assert srv.server.server_state.default_headers  # Date header still refreshed by on_tick
    t0 = time.monotonic()
    srv.server.should_exit = True  # as uvicorn's signal handler and LiveServer do
    srv.thread.join(10)
    assert not srv.thread.is_alive()
    assert time.monotonic() - t0 < 0.5 * TICK_S
