"""Per-slot random streams and the finite-value guard, on the tiny model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from personaplex_server.engine import Engine, NonFiniteStep, SamplingParams
from personaplex_server.engine.sampling import SlotSampler

NOISE = np.random.default_rng(1).uniform(-0.3, 0.3, (8, 1920)).astype(np.float32)
TEXT = "You enjoy having a good conversation."


def _sig(o: Any) -> tuple[str | None, bytes]:
    return o.text, o.pcm.round(5).tobytes()


def test_noise_is_uniform_and_keyed_by_slot_state() -> None:
    s = SlotSampler(2, torch.device("cpu"))
    s.start(0, SamplingParams(seed=7))
    s.start(1, SamplingParams(seed=7))
    ids = torch.arange(20000).view(1, -1).expand(2, -1)
    u = s.uniform(ids, 0)
    assert torch.equal(u[0], u[1])  # same seed and frame: same stream in any slot
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert not torch.equal(s.uniform(ids, 1)[0], u[0])  # another sampling call
    s.advance(torch.tensor([True, False]))
    v = s.uniform(ids, 0)
    assert not torch.equal(v[0], u[0]) and torch.equal(v[1], u[1])


def test_sampling_follows_the_distribution() -> None:
    """argmax(p / Exp(1)) with this noise picks token i with probability p_i (top-k 3)."""
    n = 4000
    s = SlotSampler(n, torch.device("cpu"))
    s.seed.copy_(torch.arange(n))
    s.temp.fill_(1.0)
    s.top_k.fill_(3)
    s.call = 1  # an audio codebook
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(n, 1, 1, 4)
    picks = s.sample(logits, True).flatten()
    freq = torch.bincount(picks, minlength=4).float() / n
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=0.03, rtol=0)


def test_each_slot_samples_with_its_own_parameters() -> None:
    s = SlotSampler(2, torch.device("cpu"))
    s.start(0, SamplingParams(top_k=1, seed=3))  # greedy audio
    s.start(1, SamplingParams(top_k=250, temp=5.0, seed=3))
    logits = torch.linspace(0, 4, 2048).expand(2, 1, 1, 2048)
    picks = []
    for _ in range(50):
        s.call = 1  # an audio codebook's call (call 0 is the text token)
        picks.append(s.sample(logits, True))
        s.advance(None)
    got = torch.stack(picks)[:, :, 0, 0]
    assert (got[:, 0] == 2047).all()
    assert len(set(got[:, 1].tolist())) > 10 and (got[:, 1] >= 2048 - 250).all()


def test_seed_reproduces_whatever_else_runs(make_engine: Callable[..., Engine]) -> None:
    """Random sampling (official defaults), seed 42: alone, and batched beside another
    conversation that joined earlier, the tokens and audio are the same."""
    seeded = SamplingParams(seed=42)
    alone = make_engine(max_sessions=2)
    s = alone.new_session("NATF0.pt", TEXT, seeded)
    s.run_prompt()
    ref = [_sig(s.step(NOISE[i])) for i in range(6)]
    s.close()

    engine = make_engine(max_sessions=2)
    other = engine.new_session("NATM1.pt", TEXT, SamplingParams(seed=None))
    other.run_prompt()
    for i in range(3):
        other.step(NOISE[i])
    s = engine.new_session("NATF0.pt", TEXT, seeded)
    assert s.slot == 1  # another slot than the reference ran in
    s.run_prompt()
    got = [_sig(o) for o in (s.step(NOISE[0]), s.step(NOISE[1]))]
    for i in range(2, 6):
        _other, out = engine.step_batch([(other, NOISE[i]), (s, NOISE[i])])
        got.append(_sig(out))
    assert got == ref
    texts = {o[0] for o in ref}
    assert len({o[1] for o in ref}) > 1 or len(texts) > 1  # random sampling did vary


def test_nonfinite_step_ends_only_that_conversation(make_engine: Callable[..., Engine]) -> None:
    greedy = SamplingParams(top_k=1, top_k_text=1, seed=0)
    ref_engine = make_engine(max_sessions=2)
    r = ref_engine.new_session("NATF0.pt", TEXT, greedy)
    r.run_prompt()
    ref = [_sig(r.step(NOISE[i])) for i in range(6)]

    engine = make_engine(max_sessions=2)
    a = engine.new_session("NATF0.pt", TEXT, greedy)
    b = engine.new_session("NATM1.pt", TEXT, greedy)
    a.run_prompt()
    b.run_prompt()
    state = engine.lm_gen._streaming_state
    assert state is not None
    real = state.graphed_main.func
    poison = {"on": False}

    def forward_text(*args: Any) -> Any:
        out, logits = real(*args)
        if poison["on"]:  # an fp16 overflow in slot 1's hidden state
            out = out.clone()
            out[b.slot] = float("nan")
            logits = logits.clone()
            logits[b.slot] = float("nan")
        return out, logits

    state.graphed_main.func = forward_text
    got = [_sig(o) for o in engine.step_batch([(a, NOISE[0]), (b, NOISE[0])])[:1]]
    poison["on"] = True
    out_a, out_b = engine.step_batch([(a, NOISE[1]), (b, NOISE[1])])
    poison["on"] = False
    assert isinstance(out_b.error, NonFiniteStep) and out_b.pcm is None
    assert out_a.error is None
    got.append(_sig(out_a))
    with pytest.raises(NonFiniteStep):
        b.step(NOISE[2])  # its state is garbage: refused, never garbage audio
    got += [_sig(a.step(NOISE[i])) for i in range(2, 6)]
    assert got == ref  # the other conversation did not notice
    b.close()
    c = engine.new_session("NATM1.pt", TEXT, greedy)  # the slot is clean again
    assert c.slot == b.slot
    c.run_prompt()
    out = c.step(NOISE[0])
    assert out.pcm is not None and np.isfinite(out.pcm).all()


def test_joining_and_leaving_do_not_change_anyones_tokens(
    make_engine: Callable[..., Engine],
) -> None:
    """Three seeded conversations with random sampling; B joins while A talks, C joins
    into A's slot after A leaves, all batched: each gets exactly what it gets alone. (On
    this CPU equality is exact: every step has the same batch shape, max_sessions, and
    rows do not mix. A GPU kernel could in principle reduce rows differently by slot;
    tests/engine checks the CPU path only.)"""
    voices = {"a": "NATF0.pt", "b": "NATM1.pt", "c": "TONE0.wav"}
    seeds = {"a": 1, "b": 2, "c": 3}
    alone = make_engine(max_sessions=3)
    ref = {}
    for k in voices:
        s = alone.new_session(voices[k], TEXT, SamplingParams(seed=seeds[k]))
        s.run_prompt()
        ref[k] = [_sig(s.step(NOISE[i % 8])) for i in range(5)]
        s.close()

    engine = make_engine(max_sessions=3)
    live = {}
    got: dict[str, list[tuple[str | None, bytes]]] = {k: [] for k in voices}
    n = dict.fromkeys(voices, 0)

    def join(k: str) -> None:
        live[k] = engine.new_session(voices[k], TEXT, SamplingParams(seed=seeds[k]))
        live[k].run_prompt()

    def step_all() -> None:
        items = [(live[k], NOISE[n[k] % 8]) for k in live]
        for k, out in zip(list(live), engine.step_batch(items), strict=True):
            got[k].append(_sig(out))
            n[k] += 1

    join("a")
    step_all()
    join("b")  # a's conversation is mid-way
    step_all()
    step_all()
    live.pop("a").close()
    join("c")
    for _ in range(3):
        step_all()
    live.pop("b").close()
    step_all()
    for k in voices:
        assert got[k] == ref[k][: len(got[k])], k
    assert [len(got[k]) for k in "abc"] == [3, 5, 4]
