"""Shared fixtures: a live uvicorn server on a loopback port, engines, the tiny model."""

from __future__ import annotations

import os

# Before anything imports torch/moshi: compiling makes CPU tests several times slower.
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("NO_CUDA_GRAPH", "1")

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from helpers import LiveServer

from personaplex_server.config import Settings


@pytest.fixture(autouse=True)
def _no_personaplex_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read PERSONAPLEX_* from the environment: keep the caller's out of tests."""
    for name in list(os.environ):
        if name.startswith("PERSONAPLEX_") and name != "PERSONAPLEX_UI_DIST":
            monkeypatch.delenv(name)


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Factory: live_server(app, settings) -> started LiveServer (stopped at teardown)."""
    with contextlib.ExitStack() as stack:

        def start(app: FastAPI, settings: Settings, **overrides: Any) -> LiveServer:
            return stack.enter_context(LiveServer(app, settings, **overrides))

        yield start


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random PersonaPlex-shaped model generated once per test run (engine helper's
    generator, the same one `personaplex-server make-tiny-model` runs)."""
    from personaplex_server import tiny

    out = tmp_path_factory.mktemp("tiny-model")
    result = tiny.generate(out, 0)
    return Path(result) if result is not None else out
