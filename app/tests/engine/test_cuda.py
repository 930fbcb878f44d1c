"""The engine on a CUDA device: CUDA graph replay gives what eager execution gives.

Skipped without a GPU (CI has none; see docs/testing.md, "The real-hardware tests").
On a GPU, upstream moshi captures its LM step, depth transformer and Mimi encoder and
decoder as CUDA graphs after one eager call, and replays them: Python does not run again
inside them. What this project puts inside those graphs must therefore live in device
tensors updated in place: the per-slot sampler (seeds, frame counters, parameters,
``nonfinite``), the window KV cache (pins, shifts) and the exec masks. These tests step
the same conversations with graphs on and off and require the same tokens and audio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from personaplex_server.engine import Engine, SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NOISE = np.random.default_rng(0).uniform(-0.3, 0.3, (40, 1920)).astype(np.float32)
TEXT = "You enjoy having a good conversation."
# a fixed seed with sampling on (not greedy): the sampler's noise is part of the graph
SAMPLED = [SamplingParams(seed=s, top_k=25, top_k_text=25) for s in (1, 2, 3)]


@pytest.fixture
def cuda_engine(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Engine]:
    monkeypatch.delenv("NO_CUDA_GRAPH", raising=False)  # make test-app sets it for the CPU

    def make(graphs: bool, **kw: Any) -> Engine:
        kw.setdefault("max_sessions", 3)
        return make_engine(device="cuda", dtype="float32", use_cuda_graphs=graphs, **kw)

    return make


Run = list[list[tuple[str | None, np.ndarray]]]


def _run(engine: Engine, frames: int, join_at: int) -> Run:
    """Two conversations from the start, a third joining at frame ``join_at`` (its prompt
    between their steps), all stepped in batches."""
    sessions = [engine.new_session("NATF0.pt", TEXT, SAMPLED[k]) for k in range(2)]
    for s in sessions:
        s.run_prompt()
    out: Run = [[], [], []]
    for i in range(frames):
        if i == join_at:
            late = engine.new_session("NATM1.pt", TEXT, SAMPLED[2])
            late.run_prompt()
            sessions.append(late)
        for k, o in enumerate(engine.step_batch([(s, NOISE[i]) for s in sessions])):
            assert o.error is None and o.pcm is not None
            out[k].append((o.text, o.pcm))
    return out


@pytest.mark.parametrize("scope", ["pieces", "step"])
def test_graph_replay_matches_eager(cuda_engine: Callable[..., Engine], scope: str) -> None:
    """``pieces``: moshi's graphs of the model's parts; ``step``: one graph around the
    whole batched step (engine/step_graph.py), replayed between eager prompt steps."""
    eager = _run(cuda_engine(graphs=False), frames=24, join_at=10)
    graphed_engine = cuda_engine(graphs=True, cuda_graph_scope=scope)
    assert graphed_engine.info["cuda_graphs"] is True
    graphed = _run(graphed_engine, frames=24, join_at=10)
    if scope == "step":
        assert graphed_engine._step_graph is not None
        assert graphed_engine._step_graph.replays > 10  # the whole step really replayed
    for k in range(3):
        assert [t for t, _ in graphed[k]] == [t for t, _ in eager[k]], f"text of slot {k}"
        # the same kernels replayed: equal up to float32 rounding of reordered reductions
        for i, ((_, got), (_, want)) in enumerate(zip(graphed[k], eager[k], strict=True)):
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"slot {k} frame {i}")


@pytest.mark.parametrize("scope", ["pieces", "step"])
@pytest.mark.parametrize("mode", ["sliding", "pinned"])
def test_graph_replay_past_the_context(
    cuda_engine: Callable[..., Engine], tmp_path: Any, mode: str, scope: str
) -> None:
    """The ring wraps (and pinned prompts are re-rotated) under graph replay as in eager."""
    from personaplex_server import tiny

    model = tiny.generate(tmp_path / "short", seed=1, context=48)
    runs = []
    for graphs in (False, True):
        engine = cuda_engine(
            graphs=graphs,
            model_dir=model,
            max_sessions=2,
            context_mode=mode,
            cuda_graph_scope=scope,
        )
        s = engine.new_session("NATF0.pt", "", SAMPLED[0])
        s.run_prompt()
        runs.append([s.step(NOISE[i % 40]).text for i in range(3 * 48)])
    assert runs[1] == runs[0]


def test_batched_matches_alone_within_float_rounding(cuda_engine: Callable[..., Engine]) -> None:
    """A conversation stepped in a batch (with another, then a third joining) against the
    same conversation alone, on the GPU. The CPU tests require exact equality; on a GPU,
    cuBLAS may pick another kernel for another batch size (other tiling, split
    reductions), so a slot's logits and audio can differ in float32's last bits. The
    sampler's noise is the slot's own (seed, frame, token), so a token can only change at
    a near-tie within that rounding: the tokens must be the same, the audio within 1e-4."""
    engine = cuda_engine(graphs=False)
    alone_session = engine.new_session("NATF0.pt", TEXT, SAMPLED[0])
    alone_session.run_prompt()
    alone = []
    for i in range(24):
        o = alone_session.step(NOISE[i])
        assert o.error is None and o.pcm is not None
        alone.append((o.text, o.pcm))
    batched = _run(cuda_engine(graphs=False), frames=24, join_at=10)[0]
    assert [t for t, _ in batched] == [t for t, _ in alone]
    for i, ((_, got), (_, want)) in enumerate(zip(batched, alone, strict=True)):
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"frame {i}")
