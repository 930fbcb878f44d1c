"""Opus-in-Ogg streaming (sphn) and the 80 ms framing the model needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import sphn

SAMPLE_RATE = 24000
FRAME_SIZE = 1920  # 80 ms at 24 kHz, one model step


class OpusDecodeError(ValueError):
    """The client's Ogg/Opus stream is malformed."""


class OpusDecoder:
    """Incremental Ogg/Opus decoder; pages may be split across messages."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._reader = sphn.OpusStreamReader(sample_rate)

    def decode(self, data: bytes) -> np.ndarray:
        try:
            pcm = self._reader.append_bytes(data)
        except Exception as exc:  # sphn raises ValueError; be defensive about the rest
            raise OpusDecodeError(str(exc)) from None
        return np.asarray(pcm, dtype=np.float32).reshape(-1)


class OpusEncoder:
    """Incremental Ogg/Opus encoder; returns whole Ogg pages (possibly empty bytes)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._writer = sphn.OpusStreamWriter(sample_rate)

    def encode(self, pcm: np.ndarray) -> bytes:
        data: bytes = self._writer.append_pcm(np.ascontiguousarray(pcm, dtype=np.float32))
        return data


class PcmEncoder(Protocol):
    def encode(self, pcm: np.ndarray) -> bytes: ...


def resolve_encoder_kind(kind: str) -> str:
    """'auto' -> 'libopus' when PyAV (which bundles libopus) is importable, else 'sphn'."""
    if kind != "auto":
        return kind
    import importlib.util

    return "libopus" if importlib.util.find_spec("av") is not None else "sphn"


def describe_encoder(kind: str, complexity: int, bitrate: int, application: str) -> str:
    kind = resolve_encoder_kind(kind)
    if kind == "sphn":
        return "sphn (libopus complexity 10)"
    return f"libopus {application}, complexity {complexity}, {bitrate // 1000} kbit/s"


def make_encoder_factory(
    kind: str,
    complexity: int = 3,
    bitrate: int = 24000,
    application: str = "voip",
) -> Callable[[int], PcmEncoder]:
    """A factory of per-session Ogg/Opus encoders (sample rate -> encoder)."""
    if kind == "auto":
        kind = resolve_encoder_kind(kind)
    if kind == "sphn":
        return OpusEncoder
    if kind == "libopus":
        from .ogg_opus import LibopusOggEncoder

        def factory(sample_rate: int) -> PcmEncoder:
            return LibopusOggEncoder(sample_rate, complexity, application, bitrate)

        return factory
    raise ValueError(f"unknown opus encoder {kind!r} (sphn or libopus)")


class Framer:
    """Collects decoded samples and yields whole frames of ``frame_size`` samples."""

    def __init__(self, frame_size: int = FRAME_SIZE) -> None:
        self.frame_size = frame_size
        self._buf: np.ndarray = np.zeros(0, dtype=np.float32)

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        if pcm.size == 0:
            return []
        buf: np.ndarray = np.concatenate((self._buf, pcm)) if self._buf.size else pcm
        n = buf.size // self.frame_size
        frames = [
            np.clip(buf[i * self.frame_size : (i + 1) * self.frame_size], -1.0, 1.0)
            for i in range(n)
        ]
        self._buf = buf[n * self.frame_size :].copy()
        return frames


def read_audio_mono(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (WAV and the formats sphn knows) as mono float32, resampled."""
    data, _ = sphn.read(str(path), sample_rate=sample_rate)
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=0)
    return np.clip(arr, -1.0, 1.0)


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sphn.write_wav(str(path), np.ascontiguousarray(pcm, dtype=np.float32), sample_rate)
