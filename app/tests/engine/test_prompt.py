"""The prompt phase: forced tokens land where NVIDIA's fork puts them.

The reference below is an independent model of the fork's token cache (``LMGen`` in
github.com/NVIDIA/personaplex, moshi/moshi/models/lm.py): a 4-column ring buffer where
call ``o`` writes the frame's provided tokens at column ``o + delay`` (text and codebook 0
have delay 0, codebooks 1-7 delay 1), overwrites column ``o`` with the initial token for
every stream whose delay is >= o, and from call 1 on feeds column ``o - 1`` to the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from engine_helpers import GREEDY, Recorder

from personaplex_server.engine import Engine
from personaplex_server.engine import constants as C
from personaplex_server.engine.prompt import (
    PromptFrames,
    build_prompt,
    voice_prompt_embeddings,
    wrap_with_system_tags,
)
from personaplex_server.engine.runtime import _Voice

DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


def fork_reference_inputs(frames: PromptFrames, initial: list[int], extra_calls: int) -> list:
    """Model inputs of the fork's calls 1..P+extra_calls (no agent forcing after the prompt)."""
    ct = 4
    cache = torch.full((17, ct), -2, dtype=torch.long)
    p = len(frames)
    inputs = []
    for o in range(p + extra_calls):
        if o < p:
            cache[0, (o + DELAYS[0]) % ct] = frames.text[o]
            for q in range(8):
                cache[1 + q, (o + DELAYS[1 + q]) % ct] = frames.agent[o, q]
        user = frames.user[min(o, p - 1)]
        for q in range(8):
            cache[9 + q, (o + DELAYS[9 + q]) % ct] = user[q]
        for k, d in enumerate(DELAYS):
            if o <= d:
                cache[k, o % ct] = initial[k]
        if o == 0:
            cache[:, 0] = torch.tensor(initial)
            continue
        inputs.append(cache[:, (o - 1) % ct].clone())
    return inputs


def _voice_codes(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (n, 8), generator=g)


def _initial(engine: Engine) -> list[int]:
    return [engine.lm.text_initial_token_id] + [engine.lm.initial_token_id] * 16


def test_wrap_with_system_tags() -> None:
    assert wrap_with_system_tags(" Be kind. ") == "<system> Be kind. <system>"
    assert wrap_with_system_tags("<system> x <system>") == "<system> x <system>"


def test_prompt_layout_order() -> None:
    codes = _voice_codes(5)
    f = build_prompt(codes, [11, 12, 13])
    s = C.SILENCE_FRAMES
    assert len(f) == 5 + s + 3 + s
    assert f.text == [C.TEXT_PAD_ID] * (5 + s) + [11, 12, 13] + [C.TEXT_PAD_ID] * s
    assert torch.equal(f.agent[:5], codes)
    assert (f.agent[5:] == torch.tensor(C.SILENCE_TOKENS)).all()
    assert (f.user == torch.tensor(C.SINE_TOKENS)).all()


def test_stepwise_prompt_matches_fork_cache(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    engine.prefill = False
    rec = Recorder(engine)
    session = engine.new_session("NATF0.pt", "", GREEDY)  # voice replaced below by codes
    tokens = engine.tokenize_prompt("You enjoy having a good conversation.")
    assert len(tokens) > 3
    session.text_tokens = tokens
    codes = _voice_codes(7)
    engine._prompt_with(session, _Voice(codes, None, None, 7))
    frames = build_prompt(codes, tokens)
    p = len(frames)
    assert session.frames_used == p
    # one conversation step: the model reads column P (agent codebooks 1-7 of the last frame)
    engine._step(session, np.zeros(engine.frame_size, dtype=np.float32))
    ref = fork_reference_inputs(frames, _initial(engine), extra_calls=2)
    assert len(rec.columns) == p + 1
    for s in range(p):
        assert torch.equal(rec.columns[s], ref[s]), f"column {s}: {rec.columns[s]} != {ref[s]}"
    delayed = [*range(2, 9), *range(10, 17)]
    assert torch.equal(rec.columns[p][delayed], ref[p][delayed])
    # the persona's tokens are read in order, one per frame, right after the first silence
    start = 7 + C.SILENCE_FRAMES
    assert [int(c[0]) for c in rec.columns[start : start + len(tokens)]] == tokens


def test_prefill_reads_the_same_columns_and_state(make_engine: Callable[..., Engine]) -> None:
    codes = _voice_codes(6)
    outs = []
    for prefill in (False, True):
        engine = make_engine()
        engine.prefill = prefill
        rec = Recorder(engine)
        session = engine.new_session("NATF0.pt", "", GREEDY)
        session.text_tokens = engine.tokenize_prompt("Your name is Sam.")
        engine._prompt_with(session, _Voice(codes, None, None, 6))
        for _ in range(3):
            engine._step(session, np.zeros(engine.frame_size, dtype=np.float32))
        outs.append(rec)
    step, pre = outs
    assert len(step.columns) == len(pre.columns)
    for a, b in zip(step.columns, pre.columns, strict=True):
        assert torch.equal(a, b)
    # the logits after the prompt agree (prefill batches frames; float32 on CPU)
    n = 4  # transition step + 3 conversation steps
    for a, b in zip(step.logits[-n:], pre.logits[-n:], strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_voice_pt_replay_equals_playing_the_voice(make_engine: Callable[..., Engine]) -> None:
    """A ``.pt`` made from codes (fork format) leaves the model where the codes would."""
    codes = _voice_codes(9, seed=3)
    results = []
    for kind in ("codes", "pt"):
        engine = make_engine()
        engine.prefill = False  # codes: the step-by-step reference path
        rec = Recorder(engine)
        session = engine.new_session("NATF0.pt", "", GREEDY)
        session.text_tokens = engine.tokenize_prompt("Hello.")
        if kind == "codes":
            voice = _Voice(codes, None, None, 9)
        else:
            pt = voice_prompt_embeddings(engine.lm, codes)
            assert pt["embeddings"].shape == (8, 1, 1, engine.lm.dim)
            assert pt["cache"].shape == (1, 17, 4)
            voice = _Voice(None, pt["embeddings"].reshape(8, -1), pt["cache"][0], 9)
        engine._prompt_with(session, voice)
        outs = [
            engine._step(session, np.zeros(engine.frame_size, dtype=np.float32)) for _ in range(3)
        ]
        results.append((rec, outs, session.frames_used))
    (rc, oc, nc), (rp, op, np_) = results
    assert nc == np_
    # the replay feeds the 8 recorded embeddings instead of token columns 0..7
    assert rp.conditioned[:8] == [True] * 8 and not any(rp.conditioned[8:])
    assert all(torch.equal(a, b) for a, b in zip(rc.columns[8:], rp.columns[8:], strict=True))
    for a, b in zip(rc.logits[-4:], rp.logits[-4:], strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)
    for x, y in zip(oc, op, strict=True):
        assert x.text == y.text
        assert x.pcm is not None and y.pcm is not None
        np.testing.assert_allclose(x.pcm, y.pcm, atol=1e-4)


def test_shipped_voice_files_have_the_fork_format(tiny_dir) -> None:  # type: ignore[no-untyped-def]
    data = torch.load(tiny_dir / "voices" / "NATF0.pt", weights_only=True)
    assert set(data) == {"embeddings", "cache"}
    assert data["embeddings"].dim() == 4 and data["embeddings"].shape[1:3] == (1, 1)
    assert data["cache"].shape == (1, 17, 4) and data["cache"].dtype == torch.int64


def test_audio_voice_is_normalised_and_encoded(make_engine: Callable[..., Engine]) -> None:
    import sphn

    from personaplex_server.engine.loudness import normalize_loudness

    engine = make_engine()
    voice = engine._load_voice("TONE0.wav", 0)
    assert voice.codes is not None and voice.embeddings is None
    pcm, sr = sphn.read(str(engine.voices_dir / "TONE0.wav"))
    mono = normalize_loudness(np.asarray(pcm[0], dtype=np.float32), sr, -24.0)
    expected = engine.encode_audio(mono, 0)
    assert voice.codes.shape == (-(-len(mono) // 1920), 8)
    assert torch.equal(voice.codes, expected)
    # louder input, same codes after normalisation (up to 16-bit rounding of the file)
    loud = engine.encode_audio(normalize_loudness(mono * 4.0, sr, -24.0), 0)
    assert (loud == expected).float().mean() > 0.9
    session = engine.new_session("TONE0.wav", "Be kind.", GREEDY)
    session.run_prompt()
    assert session.frames_used == voice.frames + 2 * C.SILENCE_FRAMES + len(
        engine.tokenize_prompt("Be kind.")
    )
