"""What the server needs from an engine, and how it loads the real one.

The server never imports torch itself: :func:`load_real_engine` reaches the engine's
runtime (torch, moshi) only when it runs, in the lifespan's worker thread, so importing the
server is cheap and tests can run the app with a stand-in engine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .config import Settings

log = logging.getLogger(__name__)


class StepOutputLike(Protocol):
    pcm: np.ndarray | None
    text: str | None


class EngineSessionLike(Protocol):
    frames_used: int
    frames_left: int

    def run_prompt(self) -> None: ...
    def step(self, pcm: np.ndarray) -> StepOutputLike: ...
    def close(self) -> None: ...


class EngineLike(Protocol):
    info: dict[str, Any]
    frame_size: int
    sample_rate: int
    max_frames: int

    def voices(self) -> list[str]: ...
    def warmup(self) -> None: ...
    def new_session(self, voice: str, text_prompt: str, sampling: Any) -> Any: ...


EngineFactory = Callable[[Settings], EngineLike]


def engine_config_kwargs(settings: Settings, config_cls: type) -> dict[str, Any]:
    """Settings fields that the engine's config dataclass also has, by name."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {
        "model_dir": settings.model_dir,
        "voices_dir": settings.effective_voices_dir,
    }
    for name in Settings.model_fields:
        if name in names and name not in values:
            values[name] = getattr(settings, name)
    return {k: v for k, v in values.items() if k in names}


def load_real_engine(settings: Settings) -> EngineLike:
    """Load the PersonaPlex engine (heavy: imports torch, reads weights)."""
    from . import engine as engine_pkg

    cfg = engine_pkg.EngineConfig(**engine_config_kwargs(settings, engine_pkg.EngineConfig))
    log.info("loading model from %s", settings.model_dir)
    loaded: EngineLike = engine_pkg.Engine.load(cfg)
    return loaded
