"""Real loading code on the tiny checkpoint: dep_q 16 -> 8, the sliced copy, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import GREEDY
from moshi.models.lm import LMModel
from safetensors import safe_open

from personaplex_server.engine import Engine, EngineLoadError, VoiceNotFound
from personaplex_server.engine import constants as C
from personaplex_server.engine.loading import resolve_files


def _run(engine: Engine, voice: str = "NATF0.pt", n: int = 4) -> list[tuple[str | None, float]]:
    s = engine.new_session(voice, "Be kind.", GREEDY)
    s.run_prompt()
    out = []
    for i in range(n):
        o = s.step(np.full(engine.frame_size, 0.01 * i, dtype=np.float32))
        assert o.pcm is not None
        out.append((o.text, float(np.abs(o.pcm).sum())))
    s.close()
    return out


def test_checkpoint_is_dep_q_16_and_runtime_dep_q_8(tiny_dir: Path, make_engine) -> None:  # type: ignore[no-untyped-def]
    with safe_open(str(tiny_dir / C.LM_FILE), "pt") as f:
        keys = list(f.keys())
        # stored like moshi checkpoints: per-step projections concatenated
        in_proj = f.get_tensor("depformer.layers.0.self_attn.in_proj_weight")
    assert sum(k.startswith("linears.") for k in keys) == 16
    engine = make_engine()
    lm = engine.lm
    assert lm.dep_q == 8 and engine.info["checkpoint_dep_q"] == 16 and engine.info["dep_q"] == 8
    # exactly the structure of a model built with dep_q=8
    kwargs = dict(resolve_files(tiny_dir).lm_kwargs, dep_q=8)
    ref = LMModel(device="meta", dtype=torch.float32, **kwargs).state_dict()
    got = lm.state_dict()
    assert list(got) == list(ref)
    assert all(got[k].shape == ref[k].shape for k in ref)
    # the kept per-step weights are the checkpoint's first 8 steps (the agent's codebooks)
    per_step = in_proj.shape[0] // 16
    for i in (0, 7):
        kept = lm.depformer.layers[0].self_attn.in_projs[i].weight
        torch.testing.assert_close(kept, in_proj[i * per_step : (i + 1) * per_step].float())
    assert lm.depformer.layers[0].self_attn.in_projs[0].weight.dtype == torch.float32


def test_sliced_weights_written_then_loaded_same_outputs(
    tiny_dir: Path, tmp_path: Path, make_engine
) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    first = make_engine(model, sliced_weights=True)
    sliced = model / C.SLICED_LM_FILE
    assert first.info["weights_file"] == C.LM_FILE
    assert first.info["sliced_weights_written"] == str(sliced) and sliced.is_file()
    assert not list(model.glob("*.partial"))
    with safe_open(str(sliced), "pt") as f:
        sliced_keys = list(f.keys())
        assert sum(k.startswith("linears.") for k in sliced_keys) == 8
        assert f.metadata()["format"].startswith("personaplex-server/dep_q8")
    assert sliced.stat().st_size < (model / C.LM_FILE).stat().st_size
    second = make_engine(model, sliced_weights=True)
    assert second.info["weights_file"] == C.SLICED_LM_FILE
    assert second.info["sliced_weights_written"] is None
    a, b = first.lm.state_dict(), second.lm.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    plain = make_engine(model, sliced_weights=False)
    assert plain.info["weights_file"] == C.LM_FILE
    assert _run(first) == _run(second) == _run(plain)


def test_checkpoint_without_user_half_weights_loads(
    tiny_dir: Path, tmp_path: Path, make_engine
) -> None:  # type: ignore[no-untyped-def]
    """Weights only the user's codebooks use may be absent: they are dropped anyway."""
    from safetensors.torch import load_file, save_file

    from personaplex_server.engine.loading import is_user_half

    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    state = {k: v.clone() for k, v in load_file(str(model / C.LM_FILE)).items()}
    dropped = [k for k in state if is_user_half(k) and not k.startswith("linears.")]
    assert any(".gating.8." in k for k in dropped) and "depformer_emb.7.weight" in dropped
    save_file({k: v for k, v in state.items() if k not in dropped}, str(model / C.LM_FILE))
    assert _run(make_engine(model)) == _run(make_engine())
    # a weight the agent needs is still required
    del state["depformer_emb.6.weight"]
    save_file(state, str(model / C.LM_FILE))
    with pytest.raises(EngineLoadError, match=r"depformer_emb\.6"):
        make_engine(model)


def test_stale_sliced_copy_is_ignored(tiny_dir: Path, tmp_path: Path, make_engine) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    (model / C.SLICED_LM_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    engine = make_engine(model, sliced_weights=True)
    assert engine.info["weights_file"] == C.LM_FILE
    assert engine.info["sliced_weights_written"]  # rewritten from the real checkpoint


def test_missing_files_say_what_to_do(tmp_path: Path, tiny_dir: Path, make_engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EngineLoadError, match="does not exist"):
        make_engine(tmp_path / "nowhere")
    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    (model / C.TOKENIZER_FILE).unlink()
    with pytest.raises(EngineLoadError, match=r"lacks tokenizer_spm_32k_3\.model"):
        make_engine(model)


def test_wrong_checkpoint_is_refused(tmp_path: Path, tiny_dir: Path, make_engine) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    cfg = json.loads((model / C.CONFIG_FILE).read_text())
    cfg["dim"] = 48  # the weights are dim 32
    (model / C.CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(EngineLoadError, match="does not match"):
        make_engine(model)


def test_voices_are_bare_names(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    assert engine.voices() == ["NATF0.pt", "NATM1.pt", "TONE0.wav"]
    for bad in ("../config.json", "voices/NATF0.pt", "/etc/passwd", "NATF0", "config.json"):
        with pytest.raises(VoiceNotFound):
            engine.new_session(bad, "", GREEDY)


def test_cuda_requested_without_cuda(make_engine) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineLoadError, match="CUDA is not available"):
        make_engine(device="cuda")


def test_start_up_fails_when_nothing_fits(monkeypatch: pytest.MonkeyPatch, make_engine) -> None:  # type: ignore[no-untyped-def]
    """Engine.load plans before it loads: a GPU too small for PersonaPlex is refused with
    the planner's message (the GPU is a stand-in: this machine has none)."""
    from personaplex_server.engine import runtime
    from personaplex_server.engine.planning import GpuSpec, ModelSpec

    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(runtime, "gpu_spec", lambda dev: GpuSpec("Tiny GPU", 4 * 1024**3, (7, 5)))
    monkeypatch.setattr(runtime, "model_spec", lambda files: ModelSpec.personaplex())
    with pytest.raises(EngineLoadError, match=r"does not fit on Tiny GPU.*Try:.*GPU with at least"):
        make_engine()
