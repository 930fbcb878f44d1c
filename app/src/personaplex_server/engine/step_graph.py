"""One CUDA graph around the whole batched step (``cuda_graph_scope: step``).

Upstream moshi captures pieces of a step as CUDA graphs (the LM's temporal transformer,
the depth transformer, Mimi's encoder and decoder and their transformers); the Python
between them (token bookkeeping, sampling, Mimi's quantizer and resampling) launches its
small kernels one by one, which is what a batched step of a 7B model on a fast GPU waits
on. Here the whole step (Mimi encode, LM step, Mimi decode, the packing of the outputs)
is captured once and replayed, with moshi's own ``CUDAGraphed`` (eager on the first call,
captured on the second, replayed after; the pieces' own graphs stand aside inside it).

A replay re-runs the captured kernels on the captured memory, so every tensor a step
carries over to the next must stay the object the capture saw. Upstream's step updates
almost all of them in place, but replaces two (read from moshi 0.2.13):
``LMGen``'s ``offsets`` (``state.offsets = torch.where(...)`` every step) and the
``first`` flag of Mimi's replicate-padded downsampling convolution. :class:`StatePins`
lists the streaming states' tensors once; after the body, a replaced tensor's value is
copied into the original (that copy is captured with the graph, so every replay does it)
and the original is put back in its state. Eager steps between replays (the prompt of a
joining conversation) replace them again, so they are put back before each replay as
well. Python counters the body advances (``offset_cpu``: bookkeeping for the depth
transformer's per-step weights, reset within each step) move by the same amount after a
replay, since a replay runs no Python.

Not measured here (no GPU was available when this was written): the tests check, on the
CPU, that the states keep their tensors and that the results equal the per-piece path;
``tests/engine/test_cuda.py`` compares replay and eager on a GPU, and ``bench engine
--cuda-graph-scope step`` measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# objects inside a streaming state that hold more state (the KV caches)
_NESTED_DEPTH = 2


class StatePins:
    """The tensors and integer counters of the streaming states under ``roots``."""

    def __init__(self, roots: Sequence[torch.nn.Module]) -> None:
        self.tensors: list[tuple[object, str, torch.Tensor]] = []
        self.counters: list[tuple[object, str]] = []
        for root in roots:
            for module in root.modules():
                state = getattr(module, "_streaming_state", None)
                if state is not None:
                    self._collect(state, 0)

    def _collect(self, obj: object, depth: int) -> None:
        for name, value in vars(obj).items():
            if isinstance(value, torch.Tensor):
                self.tensors.append((obj, name, value))
            elif isinstance(value, int) and not isinstance(value, bool):
                self.counters.append((obj, name))
            elif (
                depth < _NESTED_DEPTH
                and hasattr(value, "__dict__")
                and not isinstance(value, torch.nn.Module | torch.device)
                and not callable(value)
            ):
                self._collect(value, depth + 1)

    def restore(self) -> int:
        """Put each original tensor back in its state, holding the value that replaced it;
        returns how many had been replaced."""
        replaced = 0
        for obj, name, original in self.tensors:
            now = getattr(obj, name)
            if now is original:
                continue
            if now.shape != original.shape or now.dtype != original.dtype:
                raise RuntimeError(
                    f"streaming state {type(obj).__name__}.{name} changed shape or dtype "
                    f"({tuple(original.shape)} {original.dtype} -> {tuple(now.shape)} "
                    f"{now.dtype}): the step cannot be captured as one CUDA graph; use "
                    "cuda_graph_scope: pieces"
                )
            original.copy_(now)
            setattr(obj, name, original)
            replaced += 1
        return replaced

    def read_counters(self) -> list[int]:
        return [getattr(obj, name) for obj, name in self.counters]

    def add_to_counters(self, deltas: Sequence[int]) -> None:
        for (obj, name), delta in zip(self.counters, deltas, strict=True):
            if delta:
                setattr(obj, name, getattr(obj, name) + delta)


class StepGraph:
    """``body(wav) -> tensor`` with the streaming states kept in place, captured as one
    CUDA graph where ``enabled`` (and moshi's graphs are on), else run eagerly (the CPU
    tests run exactly this path, without the capture)."""

    def __init__(
        self,
        body: Callable[[torch.Tensor], torch.Tensor],
        roots: Sequence[torch.nn.Module],
        enabled: bool,
    ) -> None:
        from moshi.utils.compile import CUDAGraphed

        self._body = body
        self._enabled = enabled
        self.pins = StatePins(roots)
        self._ran_python = False
        self._deltas: list[int] | None = None
        self._graphed = CUDAGraphed(self._run_body, warmup_steps=1, disable=not enabled)
        self.replays = 0
        self.restored = 0  # replaced state tensors put back (upstream replaces two per step)

    def _run_body(self, wav: torch.Tensor) -> torch.Tensor:
        self._ran_python = True
        before = self.pins.read_counters()
        out = self._body(wav)
        self.restored += self.pins.restore()  # under capture: the copies are in the graph
        self._deltas = [a - b for a, b in zip(self.pins.read_counters(), before, strict=True)]
        return out

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        self.restored += self.pins.restore()  # what eager steps since the last call replaced
        self._ran_python = False
        try:
            out: torch.Tensor = self._graphed(wav)
        except Exception as exc:
            if not self._enabled or self.replays:
                raise
            # the first calls warm up and capture (the engine's warm-up, before serving)
            raise RuntimeError(
                f"the whole step could not be captured as one CUDA graph ({exc}); "
                "set cuda_graph_scope: pieces"
            ) from exc
        if not self._ran_python:  # a replay: advance the counters as the body would
            assert self._deltas is not None
            self.pins.add_to_counters(self._deltas)
            self.replays += 1
        return out
