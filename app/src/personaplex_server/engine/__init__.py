"""PersonaPlex model runtime on upstream moshi 0.2.13 (imports torch: load it lazily)."""

from .runtime import Engine, EngineSession
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
