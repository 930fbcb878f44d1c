"""PersonaPlex model runtime on upstream moshi 0.2.13.

Importing this package is cheap: its data types and errors (:mod:`.types`) need no torch,
and :class:`Engine`/:class:`EngineSession` (torch, moshi) are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .types import (
    ContextExhausted,
    EngineConfig,
    EngineError,
    EngineLoadError,
    NoFreeSlot,
    NonFiniteStep,
    SamplingParams,
    StepOutput,
    VoiceNotFound,
)

if TYPE_CHECKING:
    from .runtime import Engine, EngineSession

_RUNTIME_NAMES = ("Engine", "EngineSession")


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_NAMES:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ContextExhausted",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineLoadError",
    "EngineSession",
    "NoFreeSlot",
    "NonFiniteStep",
    "SamplingParams",
    "StepOutput",
    "VoiceNotFound",
]
