"""Prometheus metrics of the voice server.

Each app owns its own registry (no module-level globals), so several apps can live in one
process (tests, benchmarks) without clashing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

FRAME_SECONDS = 0.08
_STEP_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.15, 0.2, 0.5, 1.0)
_PROMPT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class _GpuMemoryCollector(Collector):
    """GPU memory as seen by torch, read at scrape time (nothing when torch/CUDA is absent)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "personaplex_gpu_memory_bytes",
            "GPU memory used by this process (torch allocator)",
            labels=["device", "kind"],
        )
        torch = sys.modules.get("torch")  # never import torch just for a scrape
        if torch is not None:
            try:
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    for i in range(torch.cuda.device_count()):
                        dev = str(i)
                        family.add_metric([dev, "allocated"], torch.cuda.memory_allocated(i))
                        family.add_metric([dev, "reserved"], torch.cuda.memory_reserved(i))
                        family.add_metric(
                            [dev, "max_allocated"], torch.cuda.max_memory_allocated(i)
                        )
            except Exception:  # a scrape must never fail because of the GPU
                pass
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ready = Gauge("personaplex_ready", "1 once the model is loaded and warm", registry=r)
        self.sessions_active = Gauge(
            "personaplex_sessions_active", "Conversations in progress", registry=r
        )
        self.sessions_capacity = Gauge(
            "personaplex_sessions_capacity", "Configured concurrent conversations", registry=r
        )
        self.sessions_total = Counter(
            "personaplex_sessions", "Conversations accepted (past the capacity check)", registry=r
        )
        self.sessions_rejected = Counter(
            "personaplex_sessions_rejected",
            "Connections refused before a conversation started",
            labelnames=["reason"],
            registry=r,
        )
        self.sessions_ended = Counter(
            "personaplex_sessions_ended",
            "Conversations ended, by reason",
            labelnames=["reason"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "personaplex_frame_step_seconds",
            "Engine time per 80 ms frame (its batch's step; one observation per frame)",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Gauge(
            "personaplex_real_time_factor",
            "Model step time / 80 ms, smoothed (above 1 means slower than real time)",
            registry=r,
        )
        self.late_frames = Counter(
            "personaplex_late_frames",
            "Frames whose model step took longer than 80 ms",
            registry=r,
        )
        self.dropped_frames = Counter(
            "personaplex_dropped_frames",
            "Input frames dropped because the model fell behind real time",
            registry=r,
        )
        self.prompt_seconds = Histogram(
            "personaplex_prompt_seconds",
            "Time to process the voice and text prompts (until the handshake)",
            buckets=_PROMPT_BUCKETS,
            registry=r,
        )
        self.step_cpu_seconds = Counter(
            "personaplex_step_cpu_seconds",
            "CPU time of the engine thread inside model steps",
            registry=r,
        )
        self.batch_size = Histogram(
            "personaplex_step_batch_size",
            "Conversations stepped together in one engine job",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
            registry=r,
        )
        self.frames_total = Counter(
            "personaplex_frames", "Frames processed by the model", registry=r
        )
        self.codec_cpu_seconds = Counter(
            "personaplex_codec_cpu_seconds",
            "CPU time of Opus decode (client audio) and encode (replies) on the event loop",
            registry=r,
        )
        self.nonfinite_steps = Counter(
            "personaplex_nonfinite_steps",
            "Model steps that produced NaN/infinite values (the conversation was ended)",
            registry=r,
        )
        r.register(_GpuMemoryCollector())
        self._rtf: float | None = None

    def observe_batch(self, frames: int, seconds: float, cpu_seconds: float = 0.0) -> None:
        """One engine job that stepped ``frames`` conversations by one frame each."""
        self.batch_size.observe(frames)
        for _ in range(frames):
            self.step_seconds.observe(seconds)
        self.step_cpu_seconds.inc(cpu_seconds)
        self.frames_total.inc(frames)
        if seconds > FRAME_SECONDS:
            self.late_frames.inc(frames)
        rtf = seconds / FRAME_SECONDS
        self._rtf = rtf if self._rtf is None else 0.9 * self._rtf + 0.1 * rtf
        self.real_time_factor.set(self._rtf)

    def render(self) -> bytes:
        return generate_latest(self.registry)
