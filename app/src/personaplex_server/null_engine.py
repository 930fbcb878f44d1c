"""A stand-in engine with the real Engine's interface and (almost) no compute.

Used by ``bench server`` to measure the server's own overhead without a model in the way,
and by tests that need to control timing (a slow prompt, a slow step, a short context).
It echoes the user's audio back at half volume one frame later and emits a text piece
every few frames, like the model's delayed output.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FRAME_SIZE = 1920
SAMPLE_RATE = 24000


class NonFiniteStep(RuntimeError):
    """Same name as the real engine's error: the server maps engine errors by name."""


@dataclass
class NullStepOutput:
    pcm: np.ndarray | None
    text: str | None
    error: NonFiniteStep | None = None


@dataclass
class NullEngineConfig:
    voices: tuple[str, ...] = ("NATF0.pt", "NATM0.pt")
    max_frames: int = 3000
    prompt_seconds: float = 0.0
    step_seconds: float = 0.0
    text_every: int = 5
    max_sessions: int = 64  # reported as "capacity"; the server takes the smaller limit
    batched: bool = False  # offer step_batch (like the real engine) and record batch sizes
    # sessions with this voice fail at frame nonfinite_frame as a float16 overflow would
    nonfinite_voice: str | None = None
    nonfinite_frame: int = 5


@dataclass
class _Stats:
    sessions_opened: int = 0
    sessions_closed: int = 0
    steps: int = 0
    batches: list[int] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)


class NullSession:
    def __init__(self, engine: NullEngine, voice: str, text_prompt: str, sampling: Any) -> None:
        self._engine = engine
        self.voice = voice
        self.text_prompt = text_prompt
        self.sampling = sampling
        self.frames_used = 0
        self.closed = False
        self._prev: np.ndarray | None = None

    @property
    def frames_left(self) -> int:
        return max(0, self._engine.max_frames - self.frames_used)

    def run_prompt(self) -> None:
        self._engine.record_thread()
        if self._engine.cfg.prompt_seconds:
            time.sleep(self._engine.cfg.prompt_seconds)

    def step(self, pcm: np.ndarray) -> NullStepOutput:
        out = self._step(pcm)
        if out.error is not None:
            raise out.error
        return out

    def _step(self, pcm: np.ndarray) -> NullStepOutput:
        self._engine.record_thread()
        if self.closed:
            raise RuntimeError("step() on a closed session")
        if pcm.shape != (FRAME_SIZE,):
            raise ValueError(f"expected ({FRAME_SIZE},) samples, got {pcm.shape}")
        if self._engine.cfg.step_seconds:
            time.sleep(self._engine.cfg.step_seconds)
        self.frames_used += 1
        self._engine.stats.steps += 1
        cfg = self._engine.cfg
        if self.voice == cfg.nonfinite_voice and self.frames_used >= cfg.nonfinite_frame:
            return NullStepOutput(None, None, NonFiniteStep("non-finite logits"))
        out = None if self._prev is None else self._prev
        self._prev = pcm * np.float32(0.5)
        every = self._engine.cfg.text_every
        text = " hi" if every and self.frames_used % every == 0 else None
        return NullStepOutput(pcm=out, text=text)

    def close(self) -> None:
        self._engine.record_thread()
        if not self.closed:
            self.closed = True
            self._engine.stats.sessions_closed += 1


class NullEngine:
    frame_size = FRAME_SIZE
    sample_rate = SAMPLE_RATE

    def __init__(self, cfg: NullEngineConfig | None = None) -> None:
        self.cfg = cfg or NullEngineConfig()
        self.max_frames = self.cfg.max_frames
        self.stats = _Stats()
        self._lock = threading.Lock()
        self.info: dict[str, Any] = {
            "model": "null (no model: echoes input audio)",
            "device": "cpu",
            "dtype": "float32",
            "quantize": "none",
            "capacity": self.cfg.max_sessions,
        }

    def record_thread(self) -> None:
        with self._lock:
            self.stats.threads.add(threading.current_thread().name)

    def __getattr__(self, name: str) -> Any:
        # step_batch exists only when configured, as engines without it exist too.
        if name == "step_batch" and self.cfg.batched:
            return self._step_batch
        raise AttributeError(name)

    def _step_batch(self, items: list[tuple[NullSession, np.ndarray]]) -> list[NullStepOutput]:
        if len({id(s) for s, _ in items}) != len(items):
            raise ValueError("a session appears twice in one batch")
        self.stats.batches.append(len(items))
        return [session._step(pcm) for session, pcm in items]

    def voices(self) -> list[str]:
        return list(self.cfg.voices)

    def warmup(self) -> None:
        self.record_thread()

    def new_session(self, voice: str, text_prompt: str, sampling: Any) -> NullSession:
        self.record_thread()
        if voice not in self.cfg.voices:
            raise ValueError(f"unknown voice {voice!r}")
        self.stats.sessions_opened += 1
        return NullSession(self, voice, text_prompt, sampling)
