"""Integrated loudness (ITU-R BS.1770-4, mono) and normalisation, in numpy.

The fork normalises audio voice prompts to -24 LUFS before encoding them; this is the
same measurement: K-weighting (a high shelf, then a high pass), mean square over 400 ms
blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU below.
"""

from __future__ import annotations

import math

import numpy as np


def _biquad_high_shelf(
    fs: float, f0: float, gain_db: float, q: float
) -> tuple[np.ndarray, np.ndarray]:
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / fs
    alpha = math.sin(w0) / (2 * q)
    cw = math.cos(w0)
    sa = 2 * math.sqrt(a) * alpha
    b = np.array([a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw),
                  a * ((a + 1) + (a - 1) * cw - sa)])
    den = np.array([(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw),
                    (a + 1) - (a - 1) * cw - sa])
    return b / den[0], den / den[0]


def _biquad_high_pass(fs: float, f0: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2 * math.pi * f0 / fs
    alpha = math.sin(w0) / (2 * q)
    cw = math.cos(w0)
    b = np.array([(1 + cw) / 2, -(1 + cw), (1 + cw) / 2])
    den = np.array([1 + alpha, -2 * cw, 1 - alpha])
    return b / den[0], den / den[0]


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
    h1 = _impulse_response(*_biquad_high_shelf(fs, 1681.974450955533, 3.999843853973347,
                                                0.7071752369554196), n)
    h2 = _impulse_response(*_biquad_high_pass(fs, 38.13547087602444, 0.5003270373238773), n)
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
