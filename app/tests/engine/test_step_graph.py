"""``cuda_graph_scope: step``: the whole batched step as one CUDA graph (engine/step_graph.py).

The capture itself needs a GPU (``test_cuda.py``). What a replay relies on is checked
here on the CPU, on the path the graph captures: every tensor of the streaming states
stays the object the capture saw (upstream replaces two each step; they are put back),
the results equal the per-piece path through joins and leaves, and a replay advances the
Python counters as the body does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from personaplex_server.engine import Engine, SamplingParams
from personaplex_server.engine.step_graph import StatePins, StepGraph

NOISE = np.random.default_rng(0).uniform(-0.3, 0.3, (24, 1920)).astype(np.float32)
SAMPLED = [SamplingParams(seed=s, top_k=25, top_k_text=25) for s in (1, 2, 3)]


def _conversations(engine: Engine, check: Callable[[], None] = lambda: None) -> list[Any]:
    """Two conversations, a third joining at frame 8 (its prompt's eager steps between
    the batched ones), the first leaving at frame 16."""
    voices = ("NATF0.pt", "NATM1.pt")
    sessions = [
        engine.new_session(v, "You enjoy talking.", SAMPLED[k]) for k, v in enumerate(voices)
    ]
    for s in sessions:
        s.run_prompt()
    out = []
    for i in range(24):
        if i == 8:
            late = engine.new_session("NATM1.pt", "You listen.", SAMPLED[2])
            late.run_prompt()
            sessions.append(late)
        if i == 16:
            sessions[0].close()
            sessions = sessions[1:]
        outs = engine.step_batch([(s, NOISE[i]) for s in sessions])
        out.append([(o.text, None if o.pcm is None else o.pcm.tobytes()) for o in outs])
        check()
    return out


def test_whole_step_equals_the_per_piece_path(make_engine: Callable[..., Engine]) -> None:
    pieces = _conversations(make_engine(max_sessions=3))
    step_engine = make_engine(max_sessions=3, cuda_graph_scope="step")
    assert step_engine.info["cuda_graph_scope"] == "step"
    assert _conversations(step_engine) == pieces


def test_every_state_tensor_stays_in_place(make_engine: Callable[..., Engine]) -> None:
    """After every batched step, each streaming state holds the very tensors it held when
    the step graph was set up: what a replay writes is what the next step reads."""
    engine = make_engine(max_sessions=3, cuda_graph_scope="step")
    graph = engine._step_graph
    assert graph is not None
    pins = list(graph.pins.tensors)
    assert len(pins) > 50  # the KV caches, Mimi's convolution buffers, offsets, masks

    def same_objects() -> None:
        moved = [f"{type(o).__name__}.{n}" for o, n, t in pins if getattr(o, n) is not t]
        assert moved == []

    _conversations(engine, same_objects)
    # upstream replaced tensors (LMGen's offsets, Mimi's `first`) and they were put back
    assert graph.restored >= 2 * 24


class _State:
    def __init__(self) -> None:
        self.offsets = torch.zeros(2, dtype=torch.long)
        self.offset_cpu = 0


class _Module(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._streaming_state = _State()


def test_a_replay_advances_the_counters_as_the_body_does() -> None:
    module = _Module()
    state = module._streaming_state
    original = state.offsets

    def body(wav: torch.Tensor) -> torch.Tensor:  # as upstream: a new tensor, a counter
        state.offsets = state.offsets + 1
        state.offset_cpu += 1
        return wav * 2

    graph = StepGraph(body, [module], enabled=False)
    calls = {"n": 0}
    run_body = graph._run_body

    def fake_graphed(wav: torch.Tensor) -> torch.Tensor:
        """Two calls run the body (warm-up, capture), then replays: the captured kernels
        only (the new offsets written into the original tensor), no Python."""
        calls["n"] += 1
        if calls["n"] <= 2:
            return run_body(wav)
        original.add_(1)
        return wav * 2

    graph._graphed = fake_graphed  # type: ignore[assignment]
    for _ in range(5):
        graph(torch.ones(1))
    assert state.offsets is original and state.offsets.tolist() == [5, 5]
    assert state.offset_cpu == 5 and graph.replays == 3


def test_a_state_that_changes_shape_cannot_be_captured() -> None:
    module = _Module()
    pins = StatePins([module])
    module._streaming_state.offsets = torch.zeros(3, dtype=torch.long)
    with pytest.raises(RuntimeError, match="cuda_graph_scope: pieces"):
        pins.restore()


def test_a_failed_capture_says_which_setting_to_change() -> None:
    """The capture happens in the engine's warm-up: a failure there names the way back."""
    module = _Module()
    graph = StepGraph(lambda wav: wav, [module], enabled=True)

    def capture_fails(wav: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("operation not permitted when stream is capturing")

    graph._graphed = capture_fails  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="set cuda_graph_scope: pieces") as info:
        graph(torch.ones(1))
    assert "stream is capturing" in str(info.value)
