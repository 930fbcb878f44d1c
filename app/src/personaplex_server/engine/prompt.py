"""The PersonaPlex prompt: what is forced, frame by frame, before the conversation starts.

Order (NVIDIA's fork, ``LMGen.step_system_prompts``): the voice prompt, 0.5 s of silence,
the persona text wrapped as ``<system> TEXT <system>`` one token per frame, 0.5 s of
silence again. During all of it the agent's text is the pad token (except the text part),
the agent's audio is the voice / silence codes, and the user's audio is a fixed "sine"
pattern.

Layout: the LM reads "columns"; column ``c`` holds text[c], agent codebook 0 of frame c,
agent codebooks 1-7 of frame c-1, user codebook 0 of frame c and user codebooks 1-7 of
frame c-1 (codebooks 1-7 have a delay of one frame). Column 0, and the delayed rows of
column 1, hold the model's initial tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import constants as C


def wrap_with_system_tags(text: str) -> str:
    """``<system> TEXT <system>``, unless the text already carries the tags (as the fork)."""
    cleaned = text.strip()
    if cleaned.startswith(C.SYSTEM_TAG) and cleaned.endswith(C.SYSTEM_TAG):
        return cleaned
    return f"{C.SYSTEM_TAG} {cleaned} {C.SYSTEM_TAG}"


@dataclass
class PromptFrames:
    """Undelayed prompt frames: one entry per frame (80 ms)."""

    text: list[int]  # forced text token per frame
    agent: torch.Tensor  # [P, 8] agent audio codes
    user: torch.Tensor  # [P, 8] user audio codes (the sine pattern)
    voice_frames: int  # how many of the first frames are the voice prompt

    def __len__(self) -> int:
        return len(self.text)


def silence_codes(n: int) -> torch.Tensor:
    return torch.tensor([C.SILENCE_TOKENS] * n, dtype=torch.long).view(n, 8)


def sine_codes(n: int) -> torch.Tensor:
    return torch.tensor([C.SINE_TOKENS] * n, dtype=torch.long).view(n, 8)


def build_prompt(voice_codes: torch.Tensor, text_tokens: list[int]) -> PromptFrames:
    """Frames for a voice given as agent codes ``[F, 8]`` and the tokenized persona.

    An empty persona (no tokens) keeps both silences and skips the text part.
    """
    f = int(voice_codes.shape[0])
    s = C.SILENCE_FRAMES
    n = len(text_tokens)
    text = [C.TEXT_PAD_ID] * (f + s) + list(text_tokens) + [C.TEXT_PAD_ID] * s
    agent = torch.cat([voice_codes.long().view(f, 8), silence_codes(s + n + s)], dim=0)
    user = sine_codes(f + s + n + s)
    return PromptFrames(text, agent, user, f)


def fork_columns(
    frames: PromptFrames, n_columns: int, initial_text: int, initial_audio: int
) -> torch.Tensor:
    """Delayed columns ``[17, n_columns]`` as the fork's cache holds them (see module doc)."""
    cols = torch.full((17, n_columns), -2, dtype=torch.long)
    p = len(frames)
    for c in range(n_columns):
        if c < p:
            cols[0, c] = frames.text[c]
            cols[1, c] = frames.agent[c, 0]
            cols[9, c] = frames.user[c, 0]
        if 1 <= c <= p:
            cols[2:9, c] = frames.agent[c - 1, 1:]
            cols[10:17, c] = frames.user[c - 1, 1:]
    cols[0, 0] = initial_text
    cols[1:, 0] = initial_audio
    if n_columns > 1:
        cols[2:9, 1] = initial_audio
        cols[10:17, 1] = initial_audio
    return cols


@torch.no_grad()
def voice_prompt_embeddings(lm: Any, voice_codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """A voice ``.pt`` in the fork's format, made from agent codes ``[F, 8]``.

    ``embeddings`` [F-1, 1, 1, dim]: the LM's input embedding of columns 0..F-2 (what the
    fork records while it plays a voice prompt); ``cache`` [1, 17, 4]: the fork's token
    ring buffer (4 columns) after the voice prompt, column c at index c % 4.
    """
    frames = build_prompt(voice_codes, [])
    f = frames.voice_frames
    if f < 2:
        raise ValueError("a voice prompt needs at least 2 frames")
    cols = fork_columns(frames, f + 1, lm.text_initial_token_id, lm.initial_token_id)
    device = next(lm.parameters()).device
    seq = cols[:, : f - 1].unsqueeze(0).to(device)  # [1, 17, F-1]
    emb = None
    for cb in range(lm.num_audio_codebooks):
        e = lm.emb[cb](seq[:, cb + lm.audio_offset])
        emb = e if emb is None else emb + e
    assert emb is not None
    emb = emb + lm.text_emb(seq[:, 0])  # [1, F-1, dim], the order LMModel.forward_text sums in
    embeddings = emb[0].reshape(f - 1, 1, 1, -1).cpu()
    cache = torch.full((1, 17, 4), -2, dtype=torch.long)
    for c in range(max(0, f - 3), f + 1):
        cache[0, :, c % 4] = cols[:, c]
    # the text, agent and user codebook-0 rows of column F are written after the voice prompt
    cache[0, 0, f % 4] = -2
    cache[0, 1, f % 4] = -2
    cache[0, 9, f % 4] = -2
    return {"embeddings": embeddings, "cache": cache}
