"""The window KV cache against attention computed from scratch (moshi's own RoPE)."""

from __future__ import annotations

import math

import pytest
import torch
from moshi.modules.rope import RotaryEmbedding, apply_rope
from moshi.modules.transformer import StreamingMultiheadAttention

from personaplex_server.engine.window import PIN_REFRESH_FRAMES, WindowKVCache

DIM, HEADS, CONTEXT, PROMPT = 16, 2, 12, 4


def _attention(batch: int) -> tuple[StreamingMultiheadAttention, WindowKVCache]:
    torch.manual_seed(0)
    rope = RotaryEmbedding(interleave=True, max_period=100.0)
    attn = StreamingMultiheadAttention(DIM, HEADS, causal=True, context=CONTEXT, rope=rope)
    attn.streaming_forever(batch)
    state = attn._streaming_state
    assert state is not None
    window = WindowKVCache(state.kv_cache, rope.max_period, rope.interleave)
    state.kv_cache = window
    return attn, window


def _reference(
    attn: StreamingMultiheadAttention, xs: torch.Tensor, query: int, keys: list[tuple[int, int]]
) -> torch.Tensor:
    """Output for input ``xs[query]`` attending to inputs ``keys`` = (input index, position
    the key is shown at); the query sits at its own index."""
    w = attn.in_projs[0].weight
    hd = DIM // HEADS

    def qkv(i: int) -> tuple[torch.Tensor, ...]:
        q, k, v = (w @ xs[i]).view(3, HEADS, 1, hd).unbind(0)
        return q[None], k[None], v[None]

    q, _, _ = qkv(query)
    q, _ = apply_rope(q, q, torch.tensor([query]), 100.0, True)
    ks, vs = [], []
    for i, pos in keys:
        _, k, v = qkv(i)
        _, k = apply_rope(k, k, torch.tensor([pos]), 100.0, True)
        ks.append(k)
        vs.append(v)
    k_all, v_all = torch.cat(ks, 2), torch.cat(vs, 2)
    scores = (q @ k_all.transpose(-1, -2)) / math.sqrt(hd)
    out = scores.softmax(-1) @ v_all  # [1, H, 1, hd]
    return attn.out_projs[0].weight @ out.reshape(-1)


@pytest.mark.parametrize("pinned", [False, True])
def test_long_stream_matches_reference(pinned: bool) -> None:
    attn, window = _attention(1)
    steps = 4 * CONTEXT
    xs = torch.randn(PROMPT + steps, DIM)
    with torch.no_grad():
        attn(xs[None, :PROMPT], xs[None, :PROMPT], xs[None, :PROMPT])  # the prompt, T > 1
        if pinned:
            window.pin_slot(0, PROMPT)
        valid_until, shift = CONTEXT - PIN_REFRESH_FRAMES, 0
        for t in range(PROMPT, PROMPT + steps):
            if pinned and t >= valid_until:  # what Engine._refresh_pins does
                shift = max(0, t + PIN_REFRESH_FRAMES - CONTEXT)
                window.shift_pinned(0, shift)
                valid_until = t + PIN_REFRESH_FRAMES
            x = xs[None, t : t + 1]
            got = attn(x, x, x)[0, 0]
            if pinned:
                ring = CONTEXT - PROMPT
                keys = [(j, j + shift) for j in range(PROMPT)]
                keys += [(i, i) for i in range(max(PROMPT, t - ring + 1), t + 1)]
            else:
                keys = [(i, i) for i in range(max(0, t - CONTEXT + 1), t + 1)]
            want = _reference(attn, xs, t, keys)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert window.cache.shape[3] == CONTEXT  # bounded: the storage never grew
    if pinned:
        assert int(window.pin_shift[0]) > 0 and t - (PROMPT - 1 + shift) <= CONTEXT - 1


def test_multi_frame_forward_keeps_masked_slots() -> None:
    """A prefill chunk for slot 1 does not touch slot 0's wrapped ring (upstream's does)."""
    attn, window = _attention(2)
    xs = torch.randn(2, 3 * CONTEXT, DIM)
    with torch.no_grad():
        for t in range(2 * CONTEXT):  # slot 0 wraps twice, slot 1 idles
            attn.set_exec_mask(torch.tensor([True, False]))
            x = xs[:, t : t + 1]
            attn(x, x, x)
        before = window.cache[:, 0].clone()
        attn.set_exec_mask(torch.tensor([False, True]))
        chunk = xs[:, :5]
        attn(chunk, chunk, chunk)
        assert torch.equal(window.cache[:, 0], before)
        assert int(window.end_offset[0]) == 2 * CONTEXT and int(window.end_offset[1]) == 5
