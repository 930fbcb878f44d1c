"""How the app runs under uvicorn: its settings, and a server with a quiet housekeeping tick.

uvicorn wakes its main loop every 0.1 s to notice a stop request and, once a second,
refresh the Date header.  Ten wake-ups a second cost this server about 1.5 ms of CPU per
second while idle (measured with ``bench server``'s null engine on a 2-core VM), which at
one conversation is about 0.12 ms per 80 ms frame, an eighth of the server's own overhead.
Here the loop ticks once a second and a stop request (SIGTERM/SIGINT through uvicorn's
handler, or ``should_exit = True`` from another thread) wakes it at once, so stopping is
as prompt as before.  The tick's work (``on_tick``) is uvicorn's own, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from .config import Settings

TICK_S = 1.0


def uvicorn_kwargs(settings: Settings) -> dict[str, object]:
    """``uvicorn.Config`` arguments for these settings (``serve`` and ``bench server``)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
        "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        # The protocol layer's own limit stays above ours, so oversized messages get a
        # readable 0x05 error from the app instead of a bare close.
        "ws_max_size": max(4 * settings.max_message_bytes, 1 << 20),
        # Opus does not compress: per-message deflate would only burn CPU.
        "ws_per_message_deflate": False,
        "log_config": None,
        "lifespan": "on",
        "server_header": False,
        # On SIGTERM open conversations get a few seconds, then a close (systemd stop).
        "timeout_graceful_shutdown": 5,
    }


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._should_exit = False
        super().__init__(config)

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        loop, wake = self._loop, self._wake
        if value and loop is not None and wake is not None:
            # Signal handlers and other threads alike: wake the main loop to stop now.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        # on_tick refreshes the Date header when counter % 10 == 0: every tick here.
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            should_exit = await self.on_tick(counter)
