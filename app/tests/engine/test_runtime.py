"""Sessions: seeds, slots, the end of the context, the interface the server uses."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import GREEDY
from torch.utils._python_dispatch import TorchDispatchMode

from personaplex_server import tiny
from personaplex_server.engine import (
    ContextExhausted,
    Engine,
    NoFreeSlot,
    SamplingParams,
    StepOutput,
)
from personaplex_server.engine import constants as C
from personaplex_server.engine.runtime import AUTO_STEP_BUDGET_MS

NOISE = np.random.default_rng(0).uniform(-0.3, 0.3, (16, 1920)).astype(np.float32)


def _talk(engine: Engine, sampling: SamplingParams, voice: str = "NATM1.pt", n: int = 4) -> list:
    s = engine.new_session(voice, "You enjoy having a good conversation.", sampling)
    s.run_prompt()
    outs = [s.step(NOISE[i]) for i in range(n)]
    s.close()
    return [_sig(o) for o in outs]


def _sig(o: StepOutput) -> tuple[str | None, bytes]:
    assert o.pcm is not None
    return o.text, o.pcm.round(5).tobytes()


def test_interface(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(context_mode="stop")
    assert engine.frame_size == 1920 and engine.sample_rate == 24000
    assert engine.max_frames == 3000
    info = engine.info
    for key in ("model", "device", "dtype", "quantize", "capacity", "memory", "versions"):
        assert key in info
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["quantize"] == "none"
    engine.warmup()
    s = engine.new_session("NATF0.pt", "Hello there.", SamplingParams())
    assert s.frames_used == 0 and s.frames_left == 3000
    s.run_prompt()
    used = s.frames_used
    assert used > 2 * C.SILENCE_FRAMES
    out = s.step(NOISE[0])
    assert isinstance(out, StepOutput)
    assert out.pcm is not None and out.pcm.shape == (1920,) and out.pcm.dtype == np.float32
    assert np.isfinite(out.pcm).all()
    assert s.frames_used == used + 1 and s.frames_left == 3000 - used - 1
    with pytest.raises(ValueError):
        s.step(np.zeros(100, dtype=np.float32))
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.step(NOISE[0])


def test_text_pieces(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    assert engine._piece(C.TEXT_PAD_ID) is None and engine._piece(C.TEXT_EPAD_ID) is None
    word = engine.tokenizer.piece_to_id("▁conversation")
    assert engine._piece(word) == " conversation"


def test_seed_reproducible(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a = _talk(engine, SamplingParams(seed=1234))
    b = _talk(engine, SamplingParams(seed=1234))
    c = _talk(engine, SamplingParams(seed=99))
    assert a == b
    assert a != c


def test_slots_are_independent(make_engine: Callable[..., Engine]) -> None:
    """Two interleaved conversations in a 2-slot engine give what each gives alone."""
    alone = make_engine(max_sessions=2)
    ref_a = _talk(alone, GREEDY, "NATF0.pt")
    ref_b = _talk(alone, GREEDY, "NATM1.pt")
    engine = make_engine(max_sessions=2)
    assert engine.info["capacity"] == 2
    sa = engine.new_session("NATF0.pt", "You enjoy having a good conversation.", GREEDY)
    sb = engine.new_session("NATM1.pt", "You enjoy having a good conversation.", GREEDY)
    with pytest.raises(NoFreeSlot):
        engine.new_session("NATF0.pt", "", GREEDY)
    sa.run_prompt()
    out_a = [sa.step(NOISE[0])]
    sb.run_prompt()  # the prompt of b runs while a is mid-conversation
    out_b = []
    for i in range(1, 4):
        out_a.append(sa.step(NOISE[i]))
        out_b.append(sb.step(NOISE[i - 1]))
    out_b.append(sb.step(NOISE[3]))
    got_a = [_sig(o) for o in out_a]
    got_b = [_sig(o) for o in out_b]
    assert got_a == ref_a
    assert got_b == ref_b
    sa.close()
    s3 = engine.new_session("TONE0.wav", "", GREEDY)  # a closed session frees its slot
    assert s3.slot == sa.slot


def test_step_batch_equals_stepping_alone(make_engine: Callable[..., Engine]) -> None:
    """Several slots in one LM call (and a group with other sampling) match solo runs."""
    other = SamplingParams(temp=0.5, temp_text=0.5, top_k=1, top_k_text=1, seed=0)
    ref = make_engine(max_sessions=3)
    solo = [
        _talk(ref, GREEDY, "NATF0.pt"),
        _talk(ref, GREEDY, "NATM1.pt"),
        _talk(ref, other, "NATF0.pt"),
    ]
    engine = make_engine(max_sessions=3)
    text = "You enjoy having a good conversation."
    sessions = [
        engine.new_session("NATF0.pt", text, GREEDY),
        engine.new_session("NATM1.pt", text, GREEDY),
        engine.new_session("NATF0.pt", text, other),
    ]
    for s in sessions:
        s.run_prompt()
    got: list[list[tuple[str | None, bytes]]] = [[], [], []]
    for i in range(4):
        outs = engine.step_batch([(s, NOISE[i]) for s in sessions])
        for k, o in enumerate(outs):
            got[k].append(_sig(o))
    assert got == solo
    assert [s.frames_used for s in sessions] == [s.prompt_frames + 4 for s in sessions]
    with pytest.raises(ValueError, match="twice"):
        engine.step_batch([(sessions[0], NOISE[0]), (sessions[0], NOISE[1])])
    # a bad item (here: in the second sampling group) stops the batch before anything moves
    before = [s.frames_used for s in sessions]
    with pytest.raises(ValueError, match="samples"):
        engine.step_batch([(sessions[0], NOISE[0]), (sessions[2], NOISE[0][:10])])
    assert [s.frames_used for s in sessions] == before


# operators that bring a tensor's value to the host (on a GPU: wait for the device)
HOST_READ_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero"}


class _OpCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def test_batched_step_has_no_per_slot_work_or_host_sync(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One step of 4 conversations runs exactly the tensor operations of a step of 1 (the
    Mimi encode, LM and Mimi decode are batched over all slots, no per-slot loop), reads
    no tensor value on the host (``.item()``, ``bool()``, ``int()``: on a GPU each is a
    sync) and copies to the host once per step, whatever the number of conversations."""
    engine = make_engine(max_sessions=4)
    sessions = [engine.new_session("NATF0.pt", "", SamplingParams(seed=i)) for i in range(4)]
    for s in sessions:
        s.run_prompt()
    host_copies = 0

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            nonlocal host_copies
            host_copies += 1
            return method(self, *args, **kwargs)

        return call

    for name in ("cpu", "tolist"):  # the ways to the host that dispatch no op on a CPU
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    counts = {}
    for n in (1, 4):
        group = [(s, NOISE[0]) for s in sessions[:n]]
        engine.step_batch(group)  # past the first frames' special case in every slot
        host_copies = 0
        with _OpCounter() as counter:
            engine.step_batch(group)
        scalar_reads = {
            op: c for op, c in counter.ops.items() if op.rsplit(".", 1)[0] in HOST_READ_OPS
        }
        assert scalar_reads == {}, f"host reads in a step of {n}: {scalar_reads}"
        assert host_copies == 1, f"{host_copies} copies to the host in a step of {n}"
        counts[n] = counter.ops
    assert counts[4] == counts[1]
    assert sum(counts[1].values()) > 100  # the counter saw the step's work


def test_context_exhaustion_is_defined(tmp_path: Path, make_engine: Callable[..., Engine]) -> None:
    model = tiny.generate(tmp_path / "short", seed=1, context=40)
    engine = make_engine(model, context_mode="stop")
    assert engine.max_frames == 40
    s = engine.new_session("NATF0.pt", "", SamplingParams(seed=0))
    s.run_prompt()
    assert s.frames_used == 10 + 2 * C.SILENCE_FRAMES
    n = 0
    while s.frames_left > 0:
        s.step(NOISE[n % 16])
        n += 1
    assert n == 40 - 22 and s.frames_used == 40
    with pytest.raises(ContextExhausted, match="whole context"):
        s.step(NOISE[0])
    s.close()
    # a prompt that cannot fit is refused before it starts
    long_text = "you enjoy having a good conversation " * 10
    s2 = engine.new_session("NATF0.pt", long_text, SamplingParams())
    with pytest.raises(ValueError, match="context"):
        s2.run_prompt()


def test_bad_sampling_refused(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(ValueError):
        engine.new_session("NATF0.pt", "", SamplingParams(temp=0.0))
    with pytest.raises(ValueError):
        engine.new_session("NATF0.pt", "", SamplingParams(top_k=0))


@pytest.mark.parametrize("mode", ["sliding", "pinned"])
def test_conversation_continues_past_the_context(
    tmp_path: Path, make_engine: Callable[..., Engine], mode: str
) -> None:
    """Three contexts' worth of frames, two slots (the other one prompting in between):
    no error, finite audio, the KV cache never grows; pinned keeps the prompt's values."""
    model = tiny.generate(tmp_path / "short", seed=1, context=48)
    engine = make_engine(model, max_sessions=2, context_mode=mode)
    s = engine.new_session("NATF0.pt", "", GREEDY)
    s.run_prompt()
    p = s.prompt_frames
    window = engine._windows[0]
    storage = [(w.cache.data_ptr(), tuple(w.cache.shape)) for w in engine._windows]
    prompt_values = window.cache[1, s.slot, :, :p].clone()
    other = engine.new_session("NATF0.pt", "", GREEDY)
    for n in range(3 * 48):
        if n == 70:  # the other slot's prefill (T > 1) after this slot's ring wrapped
            other.run_prompt()
        out = s.step(NOISE[n % 16])
        assert out.pcm is not None and np.isfinite(out.pcm).all()
    assert s.frames_used == p + 3 * 48 and s.frames_left > 0
    assert [(w.cache.data_ptr(), tuple(w.cache.shape)) for w in engine._windows] == storage
    kept = torch.equal(window.cache[1, s.slot, :, :p], prompt_values)
    assert kept == (mode == "pinned")
    if mode == "pinned":
        assert int(window.pin[s.slot]) == p and int(window.pin_shift[s.slot]) > 0


def test_prompt_in_parts_interleaved_with_other_steps(
    make_engine: Callable[..., Engine],
) -> None:
    """A joining conversation's prompt runs part by part between the steps of one already
    talking: both get exactly what they get with the prompt run in one go."""
    text = "You enjoy having a good conversation. " * 8  # a prompt of several chunks
    ref_engine = make_engine(max_sessions=2)
    ra = ref_engine.new_session("NATF0.pt", "", GREEDY)
    ra.run_prompt()
    rb = ref_engine.new_session("NATM1.pt", text, GREEDY)
    rb.run_prompt()
    ref_a = [_sig(ra.step(NOISE[i])) for i in range(12)]
    ref_b = [_sig(rb.step(NOISE[i])) for i in range(3)]

    engine = make_engine(max_sessions=2)
    a = engine.new_session("NATF0.pt", "", GREEDY)
    a.run_prompt()
    b = engine.new_session("NATM1.pt", text, GREEDY)
    got_a, parts, done = [], 0, False
    while not done:
        done = b.run_prompt_part()
        parts += 1
        got_a.append(_sig(a.step(NOISE[len(got_a)])))
    assert parts >= 4 and b.prompted
    while len(got_a) < 12:
        got_a.append(_sig(a.step(NOISE[len(got_a)])))
    got_b = [_sig(b.step(NOISE[i])) for i in range(3)]
    assert got_a == ref_a and got_b == ref_b
    with pytest.raises(RuntimeError, match="already"):
        b.run_prompt_part()


def test_max_sessions_auto_measures_and_shrinks(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_sessions="auto")  # CPU: starts at 8 slots, keeps what is fast
    # It measured 8 slots first and stopped at the first batch within the budget (or at one).
    measured = re.findall(r"(\d+) slot\(s\): ([\d.]+) ms per step", engine.info["capacity_reason"])
    assert measured[0][0] == "8" and int(measured[-1][0]) == engine.batch == engine.info["capacity"]
    assert float(measured[-1][1]) <= AUTO_STEP_BUDGET_MS or engine.batch == 1
    assert all(float(ms) > AUTO_STEP_BUDGET_MS for _, ms in measured[:-1])
    why = engine.fit_capacity(budget_ms=0.001)  # nothing is that fast: down to one slot
    assert engine.batch == 1 and engine.info["capacity"] == 1 and "slot(s)" in why
    s = engine.new_session("NATF0.pt", "", GREEDY)  # the resized engine works
    s.run_prompt()
    assert s.step(NOISE[0]).pcm is not None
