"""Integrated loudness (ITU-R BS.1770-4, mono) and normalisation, in numpy.

The fork normalises audio voice prompts to -24 LUFS before encoding them; this is the
same measurement: K-weighting (a high shelf, then a high pass), mean square over 400 ms
blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU below.
"""

from __future__ import annotations

import math

import numpy as np


def _k_weighting(fs: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 biquads re-derived for sample rate ``fs`` (bilinear transform of the
    analogue prototypes whose 48 kHz coefficients the standard tabulates)."""
    # stage 1: high shelf, about +4 dB above 2 kHz (head acoustics)
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / fs)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    b1 = np.array([(vh + vb * k / q + k * k), 2 * (k * k - vh), (vh - vb * k / q + k * k)]) / a0
    a1 = np.array([a0, 2 * (k * k - 1), 1 - k / q + k * k]) / a0
    # stage 2: high pass at about 38 Hz (RLB weighting)
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / fs)
    a0 = 1 + k / q + k * k
    b2 = np.array([1.0, -2.0, 1.0])
    a2 = np.array([a0, 2 * (k * k - 1), 1 - k / q + k * k]) / a0
    return (b1, a1), (b2, a2)


def _impulse_response(b: np.ndarray, a: np.ndarray, n: int) -> np.ndarray:
    h = np.zeros(n)
    x1 = x2 = y1 = y2 = 0.0
    for i in range(n):
        x0 = 1.0 if i == 0 else 0.0
        y0 = b[0] * x0 + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        h[i] = y0
        x2, x1, y2, y1 = x1, x0, y1, y0
    return h


def k_weight(x: np.ndarray, fs: int) -> np.ndarray:
    """Apply the K-weighting filter (as an FIR of its truncated impulse response)."""
    n = min(8192, max(256, len(x)))
    shelf, high_pass = _k_weighting(fs)
    h1 = _impulse_response(*shelf, n)
    h2 = _impulse_response(*high_pass, n)
    size = len(x) + 2 * n
    nfft = 1 << (size - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h1, nfft) * np.fft.rfft(h2, nfft), nfft)
    return y[: len(x)]


def integrated_loudness(x: np.ndarray, fs: int) -> float:
    """LUFS of a mono signal; -inf for silence or signals shorter than one block."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    block = round(0.4 * fs)
    hop = round(0.1 * fs)
    if len(x) < block:
        return -math.inf
    y = k_weight(x, fs)
    starts = range(0, len(y) - block + 1, hop)
    z = np.array([np.mean(y[s : s + block] ** 2) for s in starts])
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10 * np.log10(z)
    z = z[lk > -70.0]
    if z.size == 0:
        return -math.inf
    rel = -0.691 + 10 * math.log10(float(np.mean(z))) - 10.0
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10 * np.log10(z) > rel]
    if z.size == 0:
        return -math.inf
    return -0.691 + 10 * math.log10(float(np.mean(z)))


def normalize_loudness(x: np.ndarray, fs: int, target_lufs: float) -> np.ndarray:
    """Scale ``x`` to ``target_lufs`` (unchanged when it is silent or too short)."""
    current = integrated_loudness(x, fs)
    if not math.isfinite(current):
        return np.asarray(x, dtype=np.float32)
    gain = 10 ** ((target_lufs - current) / 20)
    return (np.asarray(x, dtype=np.float64) * gain).astype(np.float32)
