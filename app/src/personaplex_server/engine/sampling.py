"""Per-slot random sampling and the finite-value guard.

Upstream moshi samples every token with the process's global torch generator
(``moshi.utils.sampling.multinomial``: ``probs / Exponential(1)``, argmax), so the tokens
of one conversation depend on every other conversation stepped in the same process, and
a ``seed`` does not reproduce anything once two conversations run.

Here the Exponential noise of slot ``b`` comes from a counter-based hash of
(``seed[b]``, ``frame[b]``, the sampling call within the step, the token id): the same
seed, prompt and audio give the same tokens whatever the other slots do, with no
per-slot generator objects, no host round trip, and nothing that breaks a CUDA graph
(the seeds and frame counters are device tensors updated in place). The distribution is
upstream's: argmax(p / E) with E ~ Exp(1) picks token i with probability p_i.

The same calls check the logits: a slot whose logits hold a NaN or an infinity is marked
in ``nonfinite`` (a device tensor, read by the engine with the step's outputs).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

_M32 = 0xFFFFFFFF
_active: contextvars.ContextVar[SlotSampler | None] = contextvars.ContextVar(
    "personaplex_sampler", default=None
)
_original: Callable[..., torch.Tensor] | None = None


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two xor-shift-multiply rounds) on int64 values < 2**32;
    products stay below 2**63, so nothing depends on overflow behaviour."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


class SlotSampler:
    """Seeds and frame counters of the ``batch`` slots, on ``device``."""

    def __init__(self, batch: int, device: torch.device) -> None:
        self.seed = torch.zeros(batch, dtype=torch.long, device=device)
        self.frame = torch.zeros(batch, dtype=torch.long, device=device)
        self.nonfinite = torch.zeros(batch, dtype=torch.bool, device=device)
        # each slot's own sampling parameters: one batched step serves them all
        self.temp_text = torch.ones(batch, dtype=torch.float32, device=device)
        self.top_k_text = torch.ones(batch, dtype=torch.long, device=device)
        self.temp = torch.ones(batch, dtype=torch.float32, device=device)
        self.top_k = torch.ones(batch, dtype=torch.long, device=device)
        self.call = 0  # sampling call within the current step (text 0, then codebooks)

    def start(self, slot: int, params: Any) -> int:
        """A new conversation in ``slot`` with ``params`` (temp, top_k, temp_text,
        top_k_text, seed); returns the seed used (random when the seed is None)."""
        self.temp_text[slot] = float(params.temp_text)
        self.top_k_text[slot] = int(params.top_k_text)
        self.temp[slot] = float(params.temp)
        self.top_k[slot] = int(params.top_k)
        seed = params.seed
        if seed is None or seed == -1:  # -1: no seed, as the official server
            seed = int.from_bytes(os.urandom(4), "little")
        seed &= _M32
        self.seed[slot] = seed
        self.frame[slot] = 0
        self.nonfinite[slot] = False
        return seed

    def advance(self, exec_mask: torch.Tensor | None) -> None:
        """After a step: the stepped slots move to their next frame."""
        if exec_mask is None:
            self.frame += 1
        else:
            self.frame += exec_mask.to(self.frame.dtype)
        self.call = 0

    def uniform(self, ids: torch.Tensor, call: int) -> torch.Tensor:
        """Uniform (0, 1) noise for token ids ``[B, ...]`` of sampling call ``call``."""
        b = ids.shape[0]
        shape = (b,) + (1,) * (ids.dim() - 1)
        h = _mix(self.seed)
        h = _mix(h ^ (self.frame & _M32))
        h = _mix(h ^ call).view(shape)
        h = _mix(h ^ ids)
        h = _mix((h + 0x9E3779B9) & _M32)
        return ((h >> 8).to(torch.float32) + 0.5) / float(1 << 24)

    def sample(
        self,
        logits: torch.Tensor,
        use_sampling: bool = False,
        temp: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
    ) -> torch.Tensor:
        """``moshi.utils.sampling.sample_token`` ([B, ..., V] logits) with each slot's own
        noise and parameters: call 0 of a step is the text token, the others the audio
        codebooks. ``temp``/``top_k`` (LMGen's shared values) are ignored."""
        del temp, top_k, top_p
        b, v = logits.shape[0], logits.shape[-1]
        bad = ~torch.isfinite(logits).reshape(b, -1).all(dim=1)
        self.nonfinite |= bad
        call = self.call
        self.call += 1
        if not use_sampling:
            return torch.argmax(logits, dim=-1)
        temps, ks = (self.temp_text, self.top_k_text) if call == 0 else (self.temp, self.top_k)
        shape = (b,) + (1,) * (logits.dim() - 1)
        probs = torch.softmax(logits.float() / temps.view(shape), dim=-1)
        # top-k per slot: keep what reaches the slot's k-th largest probability
        ranked = probs.sort(dim=-1, descending=True).values
        k = (ks.clamp(1, v) - 1).view(shape).expand(*probs.shape[:-1], 1)
        probs = torch.where(probs >= ranked.gather(-1, k), probs, 0.0)
        ids = torch.arange(v, device=probs.device).expand_as(probs)
        noise = -torch.log(self.uniform(ids, call))
        return (probs / noise).argmax(dim=-1)


def _dispatch(logits: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    sampler = _active.get()
    if sampler is None:
        assert _original is not None
        return _original(logits, *args, **kwargs)
    return sampler.sample(logits, *args, **kwargs)


def install() -> None:
    """Route moshi's LMGen sampling through the active :class:`SlotSampler` (idempotent;
    without an active sampler, upstream's function runs unchanged)."""
    global _original
    from moshi.models import lm

    if lm.sample_token is _dispatch:
        return
    _original = lm.sample_token
    lm.sample_token = _dispatch


@contextlib.contextmanager
def active(sampler: SlotSampler) -> Iterator[None]:
    token = _active.set(sampler)
    try:
        yield
    finally:
        _active.reset(token)
