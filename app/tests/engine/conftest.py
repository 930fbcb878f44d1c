"""Engine test helpers: engines on the tiny model, recorders of what the LM reads."""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from personaplex_server.engine import Engine, EngineConfig


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_dir: Path) -> Path:
    """The suite's tiny model (tests/conftest.py generates it once with tiny.generate)."""
    return tiny_model_dir


@pytest.fixture
def make_engine(tiny_dir: Path) -> Iterator[Callable[..., Engine]]:
    def make(model_dir: Path | None = None, **kw: Any) -> Engine:
        cfg = EngineConfig(model_dir=model_dir or tiny_dir, use_compile=False, **kw)
        return Engine.load(cfg)

    yield make
