"""The temporal transformer's KV cache for conversations longer than the context.

Upstream moshi (0.2.13, ``modules/transformer.py``) keeps each layer's keys and values in
a ``RingKVCache`` of ``context`` entries: RoPE is applied to a key *before* it is cached,
at the key's absolute position, and the attention mask only lets a query see keys less
than ``context`` positions back. So the ring can wrap forever: attention stays a sliding
window of the last ``context`` frames, and memory and step time stay flat. That is the
``sliding`` mode here. Its cost: after ``context`` frames the persona prompt (the first
frames) has left the window and the model no longer sees who it is meant to be.

``pinned`` mode keeps the prompt in view, as StreamingLLM keeps its "attention sinks"
(Xiao et al. 2023, arXiv:2309.17453): the first ``P`` entries of a slot (its prompt)
are never overwritten; the conversation wraps in the remaining ``context - P`` entries.
What the model sees is then always "prompt, then the last ``context - P`` frames", the
layout of every step of a conversation before the wrap, instead of a window that starts
mid-conversation. For RoPE to show the prompt just before the window (relative distances
below ``context``, as in training), the pinned keys are re-rotated: RoPE rotations
compose, ``R(a + s) = R(s) R(a)``, so rotating the cached key (already at position ``a``)
by ``s`` moves it to ``a + s`` exactly, without the key's input. The rotation starts from
a copy of the keys taken after the prompt (one rounding per refresh, no drift), and runs
outside the step every ``PIN_REFRESH_FRAMES`` frames of that slot (cost: the prompt's
keys once per refresh, a fraction of one step). Between refreshes the prompt's position
lags by up to ``PIN_REFRESH_FRAMES - 1`` frames, so its last frames may share relative
positions with the oldest window frames: harmless overlap, never beyond the context.

Both modes also fix one upstream detail that matters once the ring wraps with several
slots: a multi-frame forward (the prompt prefill, T > 1) scatters keys into *every*
slot's ring at that slot's next T indices, masked slots included; after a wrap those
indices hold keys still in view. Here masked slots keep their old entries.
"""

from __future__ import annotations

import math
from typing import Any

import torch

PIN_REFRESH_FRAMES = 8


class WindowKVCache:
    """Drop-in for moshi's ``RingKVCache`` (same ``complete``/``reset`` contract), sharing
    its storage, with per-slot pinned prefixes."""

    def __init__(self, ring: Any, max_period: float, interleave: bool) -> None:
        if not ring.respect_exec_mask:
            raise ValueError("the window cache needs a per-slot ring (respect_exec_mask)")
        self.capacity: int = int(ring.capacity)
        self.cache: torch.Tensor = ring.cache  # [2, B, H, C, D]
        self.end_offset: torch.Tensor = ring.end_offset  # [B] next absolute position
        self.respect_exec_mask = True
        batch = self.cache.shape[1]
        device = self.cache.device
        self.pin = torch.zeros(batch, dtype=torch.long, device=device)  # P per slot
        self.pin_shift = torch.zeros(batch, dtype=torch.long, device=device)
        self.pinned_k: list[torch.Tensor | None] = [None] * batch
        self.max_period = max_period
        self.interleave = interleave
        self._index = torch.arange(self.capacity, device=device, dtype=torch.long).view(1, -1)

    # -- moshi's RingKVCache contract -------------------------------------------------
    def reset(self, reset_mask: torch.Tensor) -> None:
        zero = torch.zeros_like(self.end_offset)
        self.end_offset[:] = torch.where(reset_mask, zero, self.end_offset)
        self.pin[:] = torch.where(reset_mask, zero, self.pin)
        self.pin_shift[:] = torch.where(reset_mask, zero, self.pin_shift)

    def complete(self, k: torch.Tensor, v: torch.Tensor, exec_mask: torch.Tensor) -> Any:
        from moshi.modules.transformer import KVCacheResult

        b, h, t, d = k.shape
        pin = self.pin.view(-1, 1)
        ring = self.capacity - pin
        pos_new = self.end_offset.view(-1, 1) + torch.arange(t, device=k.device)
        idx = torch.where(pos_new < pin, pos_new, pin + (pos_new - pin) % ring)  # [B, T]
        where = idx.view(b, 1, t, 1).expand(-1, h, t, d)
        run = exec_mask.view(b, 1, 1, 1)
        k = torch.where(run, k, self.cache[0].gather(2, where))  # masked slots keep theirs
        v = torch.where(run, v, self.cache[1].gather(2, where))
        self.cache[0].scatter_(2, where, k)
        self.cache[1].scatter_(2, where, v)

        j = self._index
        last = self.end_offset.view(-1, 1) + t - 1
        delta = (j - pin) - (last - pin) % ring
        ring_pos = torch.where(delta <= 0, last + delta, last + delta - ring)
        positions = torch.where(j < pin, j + self.pin_shift.view(-1, 1), ring_pos)
        positions = torch.where((j >= pin) & (ring_pos < pin), -1, positions)  # never written
        self.end_offset[:] = torch.where(exec_mask, self.end_offset + t, self.end_offset)
        return KVCacheResult(self.cache[0], self.cache[1], positions)

    # -- pinning ------------------------------------------------------------------------
    def pin_slot(self, slot: int, frames: int) -> None:
        """Keep entries 0..frames-1 of ``slot`` (its prompt, just written) for ever."""
        self.pinned_k[slot] = self.cache[0, slot, :, :frames].clone()
        self.pin[slot] = frames
        self.pin_shift[slot] = 0

    def unpin_slot(self, slot: int) -> None:
        self.pinned_k[slot] = None
        self.pin[slot] = 0
        self.pin_shift[slot] = 0

    def shift_pinned(self, slot: int, shift: int) -> None:
        """Show ``slot``'s pinned keys ``shift`` positions later than where they were made."""
        keys = self.pinned_k[slot]
        if keys is None:
            return
        self.cache[0, slot, :, : keys.shape[1]] = rotate(
            keys, shift, self.max_period, self.interleave
        )
        self.pin_shift[slot] = shift


def rotate(x: torch.Tensor, shift: int, max_period: float, interleave: bool) -> torch.Tensor:
    """RoPE rotation of already-rotated keys ``[..., D]`` by ``shift`` more positions (the
    same frequencies and layout as moshi's ``apply_rope``)."""
    d = x.shape[-1]
    ds = torch.arange(d // 2, device=x.device, dtype=torch.float32)
    freqs = torch.exp(ds * (-math.log(max_period) * 2 / d))
    angle = freqs * float(shift)
    cos, sin = torch.cos(angle), torch.sin(angle)
    if interleave:
        pairs = x.view(*x.shape[:-1], d // 2, 2).float()
        re, im = pairs[..., 0], pairs[..., 1]
    else:
        re, im = x[..., : d // 2].float(), x[..., d // 2 :].float()
    out_re = re * cos - im * sin
    out_im = re * sin + im * cos
    if interleave:
        return torch.stack([out_re, out_im], dim=-1).view(x.shape).to(x.dtype)
    return torch.cat([out_re, out_im], dim=-1).to(x.dtype)


def install(lm: Any) -> list[WindowKVCache]:
    """Replace the ring cache of every streaming self-attention of the LM's temporal
    transformer (the LM must be streaming) with a :class:`WindowKVCache`."""
    caches = []
    for layer in lm.transformer.layers:
        attn = layer.self_attn
        state = attn._streaming_state
        if state is None or state.kv_cache is None:
            raise RuntimeError("the LM is not streaming: call streaming_forever first")
        if attn.rope is None:
            raise RuntimeError("pinned prompts need RoPE attention")
        cache = WindowKVCache(state.kv_cache, attn.rope.max_period, attn.rope.interleave)
        state.kv_cache = cache
        caches.append(cache)
    return caches


def install_masked(module: Any) -> list[WindowKVCache]:
    """The same cache (no pinning: upstream's ring, but masked slots keep their entries)
    for every per-slot self-attention ring inside a streaming ``module`` (Mimi: its
    transformers step 2 frames at a time, so upstream's ring would overwrite an entry of
    every masked slot that is still in view)."""
    from moshi.modules.transformer import RingKVCache, StreamingMultiheadAttention

    caches = []
    for m in module.modules():
        if not isinstance(m, StreamingMultiheadAttention):
            continue
        state = m._streaming_state
        if state is None or not isinstance(state.kv_cache, RingKVCache):
            continue
        if not state.kv_cache.respect_exec_mask:
            continue
        rope = m.rope
        cache = WindowKVCache(
            state.kv_cache,
            rope.max_period if rope is not None else 10_000.0,
            rope.interleave if rope is not None else True,
        )
        state.kv_cache = cache  # type: ignore[assignment]  # same contract, duck-typed
        caches.append(cache)
    return caches
