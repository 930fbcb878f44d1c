"""Automatic precision as a pure function of the GPU (no GPU needed)."""

from __future__ import annotations

import pytest

from personaplex_server.engine.planning import (
    GIB,
    GpuSpec,
    ModelSpec,
    PlanError,
    plan_precision,
)

# total_memory as torch reports it on these cards
T4 = GpuSpec("Tesla T4", 15_828_320_256, (7, 5))
L4 = GpuSpec("NVIDIA L4", 23_580_639_232, (8, 9))
A100_80 = GpuSpec("NVIDIA A100-SXM4-80GB", 85_097_971_712, (8, 0))
SMALL = GpuSpec("NVIDIA GeForce RTX 3050", 6 * GIB, (8, 6))


def test_t4_gets_float16_with_int8() -> None:
    plan = plan_precision(T4)
    assert (plan.dtype, plan.quantize) == ("float16", "int8")
    assert plan.estimate_bytes <= plan.budget_bytes  # type: ignore[operator]
    assert "not native" in plan.reason  # sm_75 has no native bf16
    # bf16/fp16 without quantization was considered and did not fit
    assert plan.candidates[0].quantize == "none" and not plan.candidates[0].fits


def test_t4_with_more_sessions_falls_back_to_nf4() -> None:
    assert plan_precision(T4, max_sessions=2).quantize == "int8"
    plan = plan_precision(T4, max_sessions=4)
    assert (plan.dtype, plan.quantize) == ("float16", "nf4")


def test_a100_80gb_runs_bf16_unquantized() -> None:
    plan = plan_precision(A100_80)
    assert (plan.dtype, plan.quantize) == ("bfloat16", "none")
    assert 15.3e9 < plan.weights_bytes < 15.5e9  # 7.69 B parameters in bf16
    assert abs(plan.kv_bytes_per_session / GIB - 1.47) < 0.05  # the 1.6 GB (1.47 GiB) KV


def test_l4_runs_bf16_until_sessions_need_quantization() -> None:
    assert (plan_precision(L4).dtype, plan_precision(L4).quantize) == ("bfloat16", "none")
    plan = plan_precision(L4, max_sessions=4)
    assert (plan.dtype, plan.quantize) == ("float16", "int8")


def test_explicit_choice_is_checked() -> None:
    with pytest.raises(PlanError, match="does not fit on Tesla T4"):
        plan_precision(T4, dtype="bfloat16", quantize="none")
    with pytest.raises(PlanError, match="float16"):
        plan_precision(T4, dtype="bfloat16", quantize="int8")
    assert plan_precision(T4, dtype="float16", quantize="nf4").quantize == "nf4"


def test_nothing_fits_says_what_would() -> None:
    with pytest.raises(PlanError) as err:
        plan_precision(SMALL)
    msg = str(err.value)
    assert "RTX 3050" in msg and "nf4" in msg and "GPU with at least" in msg
    with pytest.raises(PlanError, match="max_sessions=") as err2:
        plan_precision(T4, max_sessions=12)
    assert "max_sessions=" in str(err2.value)


def test_cpu_has_no_plan() -> None:
    plan = plan_precision(None)
    assert (plan.dtype, plan.quantize, plan.budget_bytes) == ("float32", "none", None)


@pytest.mark.slow
def test_personaplex_spec_matches_the_model() -> None:
    """The constants in ModelSpec.personaplex() are counted from moshi's LMModel."""
    from moshi.models import loaders

    from personaplex_server.engine.loading import ModelFiles
    from personaplex_server.engine.runtime import model_spec

    files = ModelFiles(  # real kwargs, no files needed for counting
        lm=None,
        mimi=None,
        tokenizer=None,  # type: ignore[arg-type]
        lm_kwargs=dict(loaders._lm_kwargs),
        mimi_config=None,
        model_name="x",
    )
    assert model_spec(files) == ModelSpec.personaplex()


def test_auto_sessions_fill_the_memory() -> None:
    from personaplex_server.engine.planning import (
        GIB,
        GpuSpec,
        ModelSpec,
        budget_bytes,
        estimate,
        plan_auto_sessions,
    )

    spec = ModelSpec.personaplex()
    for gpu, want_dtype in (
        (GpuSpec("NVIDIA L4", int(22.5 * GIB), (8, 9)), "bfloat16"),
        (GpuSpec("NVIDIA A100-SXM4-40GB", int(39.4 * GIB), (8, 0)), "bfloat16"),
        (GpuSpec("Tesla T4", int(14.7 * GIB), (7, 5)), "float16"),
    ):
        plan = plan_auto_sessions(gpu, spec=spec)
        n = plan.sessions
        assert plan.dtype == want_dtype and n >= 1
        assert estimate(spec, plan.dtype, plan.quantize, n)[2] <= budget_bytes(gpu)
        assert estimate(spec, plan.dtype, plan.quantize, n + 1)[2] > budget_bytes(gpu)
        assert "auto" in plan.reason
