"""Plain data types and errors of the engine (no torch here, cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

DtypeName = Literal["auto", "bfloat16", "float16", "float32"]
QuantizeName = Literal["auto", "none", "int8", "nf4"]
# What happens at the end of the model's context (see engine/window.py):
# pinned: a sliding window that keeps the persona prompt in view (default);
# sliding: upstream moshi's ring, the prompt leaves the window; stop: end the conversation.
ContextMode = Literal["pinned", "sliding", "stop"]
CudaGraphScope = Literal["pieces", "step"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling of one conversation (defaults: the official server's)."""

    temp: float = 0.8
    temp_text: float = 0.7
    top_k: int = 250
    top_k_text: int = 25
    seed: int | None = None

    def validate(self) -> None:
        if not (self.temp > 0 and self.temp_text > 0):
            raise ValueError("temperatures must be > 0")
        if self.top_k < 1 or self.top_k_text < 1:
            raise ValueError("top_k values must be >= 1")


@dataclass
class EngineConfig:
    """Everything :meth:`Engine.load` needs; the server builds it from its Settings."""

    model_dir: Path
    voices_dir: Path | None = None  # default: <model_dir>/voices
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: DtypeName = "auto"
    quantize: QuantizeName = "auto"
    max_sessions: int | Literal["auto"] = 1  # auto: from memory, then measured step time
    use_cuda_graphs: bool = True
    # "pieces": upstream moshi's graphs of the LM, depth transformer and Mimi parts;
    # "step": one graph around the whole batched step (engine/step_graph.py)
    cuda_graph_scope: CudaGraphScope = "pieces"
    use_compile: bool = True
    # Write a dep_q=8 copy of the LM weights next to the original (once) and load it next time.
    sliced_weights: bool = False
    context_mode: ContextMode = "pinned"


@dataclass
class StepOutput:
    """One 80 ms frame of the agent."""

    pcm: np.ndarray | None  # float32 (frame_size,), None while nothing is produced yet
    text: str | None  # decoded text piece ("▁" -> " "), None for padding tokens
    # set (by step_batch only) when this conversation's step failed: it must end
    error: NonFiniteStep | None = None


class EngineError(Exception):
    """Base class of the engine's own errors."""


class EngineLoadError(EngineError):
    """The model cannot be loaded as configured; the message says what to change."""


class VoiceNotFound(EngineError, ValueError):
    """The requested voice prompt is not one of :meth:`Engine.voices`."""


class NoFreeSlot(EngineError, RuntimeError):
    """All ``max_sessions`` slots are in use."""


class NonFiniteStep(EngineError, RuntimeError):
    """The model produced NaN or infinite logits or audio for this conversation (e.g. a
    float16 overflow); its state is garbage, so the conversation must end."""


class ContextExhausted(EngineError, RuntimeError):
    """The conversation used the model's whole context (3000 frames for PersonaPlex)."""
