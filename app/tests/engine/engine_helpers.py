"""Helpers for the engine tests (imported by name: tests/ is not a package)."""

from __future__ import annotations

from typing import Any

import torch

from personaplex_server.engine import Engine, SamplingParams

GREEDY = SamplingParams(top_k=1, top_k_text=1, seed=0)


class Recorder:
    """Records the token columns the temporal transformer reads, and the text logits."""

    def __init__(self, engine: Engine, slot: int = 0) -> None:
        self.engine = engine
        self.slot = slot
        self.columns: list[torch.Tensor] = []  # one [17] column per frame read
        self.conditioned: list[bool] = []  # frame came with a voice embedding
        self.logits: list[torch.Tensor] = []
        lm = engine.lm
        self._orig = lm.forward_text
        state = engine.lm_gen._streaming_state
        assert state is not None

        def forward_text(seq: torch.Tensor, cond: Any = None, cross: Any = None) -> Any:
            for t in range(seq.shape[-1]):
                self.columns.append(seq[self.slot, :, t].detach().cpu().clone())
                has = cond is not None and bool(cond[self.slot, t].abs().sum() > 0)
                self.conditioned.append(has)
            return self._orig(seq, cond, cross)

        lm.forward_text = forward_text
        state.graphed_main.func = forward_text
        engine.lm_gen.on_text_logits_hook = lambda lg: self.logits.append(
            lg[self.slot].detach().float().cpu().clone()
        )
