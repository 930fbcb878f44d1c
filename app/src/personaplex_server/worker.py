"""The engine's worker thread and the count of conversations.

The engine is not thread-safe: every engine call (load, prompts, the batched steps of all
conversations, session cleanup) runs on one dedicated thread, in submission order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Capacity:
    """Counts conversations; refuses instead of waiting when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


class EngineWorker:
    """The one thread that touches the engine (it is not thread-safe).

    Jobs run in submission order.  The thread is a daemon: a server that stops while the
    model is still loading exits at once instead of waiting for the load to finish."""

    def __init__(self, name: str = "engine") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if isinstance(future, asyncio.Future):
                self._run_for_loop(future, fn, args)
                continue
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    @staticmethod
    def _run_for_loop(
        future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        if future.cancelled():  # read across threads: at worst the job runs for nothing
            return
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it
            future.get_loop().call_soon_threadsafe(_settle, future, result, error)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue fn without waiting (used for cleanup that must run after queued work)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def run_soon(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue fn; its result arrives in an asyncio future of the running loop.

        This is the per-frame path: one loop callback when the job is done, instead of a
        concurrent Future (a Condition per job) chained to an asyncio one by wrap_future."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, fn, args))
        return future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.run_soon(fn, *args)

    def shutdown(self) -> None:
        """Stop after the jobs already queued."""
        self._jobs.put(None)


_Job = tuple[
    "concurrent.futures.Future[Any] | asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]
]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand a worker job's outcome to its waiter (unless it gave up)."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
