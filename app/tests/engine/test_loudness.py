"""BS.1770 loudness, as the fork's -24 LUFS voice-prompt normalisation uses it."""

from __future__ import annotations

import math

import numpy as np

from personaplex_server.engine.loudness import integrated_loudness, normalize_loudness

SR = 24000


def _sine(freq: float, amp: float, seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def test_full_scale_1khz_sine_is_minus_3_lufs() -> None:
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS
    assert abs(integrated_loudness(_sine(997, 1.0), SR) - (-3.01)) < 0.1
    assert abs(integrated_loudness(_sine(997, 1.0, sr=48000), 48000) - (-3.01)) < 0.1


def test_k_weighting_shapes_the_spectrum() -> None:
    low = integrated_loudness(_sine(30, 0.5), SR)  # high-passed
    mid = integrated_loudness(_sine(997, 0.5), SR)
    high = integrated_loudness(_sine(5000, 0.5), SR)  # shelved up by about 4 dB
    assert low < mid - 3 and 3 < high - mid < 5


def test_normalize_to_target() -> None:
    rng = np.random.default_rng(0)
    x = _sine(300, 0.02) + 0.01 * rng.standard_normal(3 * SR)
    y = normalize_loudness(x, SR, -24.0)
    assert y.dtype == np.float32
    assert abs(integrated_loudness(y, SR) + 24.0) < 0.05
    silent = np.zeros(SR)
    assert integrated_loudness(silent, SR) == -math.inf
    assert np.array_equal(normalize_loudness(silent, SR, -24.0), silent)
