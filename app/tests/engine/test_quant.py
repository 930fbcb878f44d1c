"""int8 (upstream moshi's bitsandbytes path) and nf4 on the CPU: the real code paths.

bitsandbytes 0.49 runs both on the CPU (slowly): these check correctness against the
unquantized model, not speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import GREEDY, Recorder
from moshi.utils.quantize import QLinear
from torch import nn

from personaplex_server.engine import Engine
from personaplex_server.engine.quant import NF4Linear

pytestmark = pytest.mark.slow


def _first_logits(engine: Engine) -> torch.Tensor:
    rec = Recorder(engine)
    s = engine.new_session("NATF0.pt", "Be kind.", GREEDY)
    s.run_prompt()
    out = s.step(np.zeros(engine.frame_size, dtype=np.float32))
    assert out.pcm is not None and np.isfinite(out.pcm).all()
    s.close()
    return rec.logits[-1].flatten()


@pytest.fixture(scope="module")
def reference_logits(tiny_dir) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from personaplex_server.engine import EngineConfig

    engine = Engine.load(
        EngineConfig(model_dir=tiny_dir, dtype="float16", quantize="none", use_compile=False)
    )
    return _first_logits(engine)


@pytest.mark.parametrize(
    ("method", "cls", "min_cos"), [("int8", QLinear, 0.999), ("nf4", NF4Linear, 0.9)]
)
def test_quantized_model_tracks_float16(
    make_engine: Callable[..., Engine],
    reference_logits: torch.Tensor,
    method: str,
    cls: type,
    min_cos: float,
) -> None:
    engine = make_engine(dtype="float16", quantize=method)
    assert engine.info["quantize"] == method and engine.info["dtype"] == "float16"
    lm = engine.lm
    assert not [n for n, m in lm.named_modules() if isinstance(m, nn.Linear)]
    quantized: list[Any] = [m for m in lm.modules() if isinstance(m, cls)]
    # every temporal and depth layer projection, the text head, the depth in/out layers
    assert len(quantized) >= 2 * 4 + 2 * (8 * 2 + 8) + 1 + 8 + 8
    if method == "int8":
        assert all(m.weight.dtype == torch.int8 for m in quantized)
        assert all(m.weight_scb.dtype == torch.float32 for m in quantized)
    else:
        assert all(m.weight.dtype == torch.uint8 for m in quantized)
    # the KV cache is float16 (moshi picks it from the attention's projection type)
    state = lm.transformer.layers[0].self_attn._streaming_state
    assert state.kv_cache.cache.dtype == torch.float16
    logits = _first_logits(engine)
    cos = torch.nn.functional.cosine_similarity(logits, reference_logits, dim=0)
    assert cos > min_cos, f"{method}: cosine {cos:.4f} to float16"


def test_bf16_with_int8_is_refused(make_engine: Callable[..., Engine]) -> None:
    from personaplex_server.engine import EngineLoadError

    with pytest.raises(EngineLoadError, match="float16"):
        # on CPU the plan is not memory-bound but the dtype rule still holds for GPUs
        from personaplex_server.engine.planning import GpuSpec, plan_precision

        try:
            plan_precision(GpuSpec("T4", 16 * 1024**3, (7, 5)), dtype="bfloat16", quantize="int8")
        except ValueError as exc:
            raise EngineLoadError(str(exc)) from None


@pytest.mark.parametrize("frames", [1, 5])
def test_nf4_linear_is_the_dequantized_matmul(frames: int) -> None:
    from bitsandbytes import functional as bnb_f

    torch.manual_seed(0)
    lin = nn.Linear(64, 96, bias=False)
    q = NF4Linear(lin)
    w = bnb_f.dequantize_4bit(q.weight.data, q.quant_state).to(torch.float16)
    assert w.shape == (96, 64)
    rel = (w.float() - lin.weight.float()).norm() / lin.weight.float().norm()
    assert 0.01 < rel < 0.2  # NF4 rounding: really quantized, not wildly off
    x = torch.randn(1, frames, 64, dtype=torch.float16)
    torch.testing.assert_close(q(x), x @ w.t(), atol=2e-2, rtol=2e-2)
