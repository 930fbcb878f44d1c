"""Choosing dtype and quantization from the GPU: a pure function, testable without one.

Estimate = weights + KV cache per session x sessions + Mimi + a fixed runtime overhead;
it must fit the device's memory minus a reserve (the CUDA context, the allocator's slack).
``auto`` tries, in order of quality, none -> int8 -> nf4 and takes the first that fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3

# bytes per weight element of the quantized linear layers (nf4: 4 bits + one fp32 absmax per
# 64 weights, double-quantized by bitsandbytes to about 8 bits per 64 + a small second level)
_LINEAR_BYTES = {"none": None, "int8": 1.0 + 0.0, "nf4": 0.5 + 1.0 / 64 + 0.002}
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
RUNTIME_OVERHEAD_BYTES = int(0.75 * GIB)  # activations, CUDA graphs, sampling buffers
RESERVE_MIN_BYTES = 1 * GIB  # CUDA context and allocator fragmentation
RESERVE_FRACTION = 0.08


@dataclass(frozen=True)
class ModelSpec:
    """Sizes that decide memory, independent of precision."""

    linear_params: int  # parameters in nn.Linear layers (quantizable), agent half only
    other_params: int  # embeddings, norms: kept in the activation dtype
    kv_elements_per_session: int  # K and V elements of all layers for a full context
    mimi_bytes: int  # Mimi runs in float32
    context: int
    linear_out_features: int = 0  # rows of all linear layers (int8 keeps one fp32 scale per row)

    @staticmethod
    def personaplex() -> ModelSpec:
        """PersonaPlex 7B after dropping the user half of the depth transformer (dep_q=8).

        Counted from upstream moshi 0.2.13's LMModel with the PersonaPlex kwargs
        (``tests/engine/test_planning.py`` checks these against a meta-device model).
        """
        return ModelSpec(
            linear_params=7_374_635_008,
            other_params=313_094_144,
            kv_elements_per_session=32 * 2 * 3000 * 4096 + 6 * 2 * 8 * 1024,
            mimi_bytes=4 * (79_308_609 + 16_842_784),
            context=3000,
            linear_out_features=1_948_928,
        )


@dataclass(frozen=True)
class GpuSpec:
    name: str
    total_bytes: int
    capability: tuple[int, int]

    @property
    def bf16_native(self) -> bool:
        return self.capability >= (8, 0)


@dataclass
class Candidate:
    dtype: str
    quantize: str
    weights_bytes: int
    kv_bytes_per_session: int
    total_bytes: int
    fits: bool


@dataclass
class PrecisionPlan:
    dtype: str
    quantize: str
    estimate_bytes: int
    budget_bytes: int | None
    weights_bytes: int
    kv_bytes_per_session: int
    sessions: int
    reason: str
    candidates: list[Candidate] = field(default_factory=list)

    def as_info(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "quantize": self.quantize,
            "estimate_gib": round(self.estimate_bytes / GIB, 2),
            "budget_gib": None if self.budget_bytes is None else round(self.budget_bytes / GIB, 2),
            "weights_gib": round(self.weights_bytes / GIB, 2),
            "kv_cache_gib_per_session": round(self.kv_bytes_per_session / GIB, 2),
            "reason": self.reason,
        }


class PlanError(ValueError):
    """No precision fits; the message says what would."""


def weights_bytes(spec: ModelSpec, dtype: str, quantize: str) -> int:
    act = _DTYPE_BYTES[dtype]
    per = _LINEAR_BYTES[quantize]
    if per is None:
        linear = spec.linear_params * act
    else:
        linear = int(spec.linear_params * per) + 4 * spec.linear_out_features
    return int(linear + spec.other_params * act)


def kv_bytes(spec: ModelSpec, dtype: str) -> int:
    return spec.kv_elements_per_session * _DTYPE_BYTES[dtype]


def budget_bytes(gpu: GpuSpec) -> int:
    reserve = max(RESERVE_MIN_BYTES, int(gpu.total_bytes * RESERVE_FRACTION))
    return gpu.total_bytes - reserve


def estimate(spec: ModelSpec, dtype: str, quantize: str, sessions: int) -> tuple[int, int, int]:
    w = weights_bytes(spec, dtype, quantize)
    kv = kv_bytes(spec, dtype)
    return w, kv, w + kv * sessions + spec.mimi_bytes + RUNTIME_OVERHEAD_BYTES


def plan_precision(
    gpu: GpuSpec | None,
    *,
    dtype: str = "auto",
    quantize: str = "auto",
    max_sessions: int = 1,
    spec: ModelSpec | None = None,
) -> PrecisionPlan:
    """Pick dtype and quantization for ``gpu`` (None: CPU, where nothing is planned).

    Raises PlanError with an actionable message when the explicit choice, or every
    automatic choice, does not fit.
    """
    spec = spec or ModelSpec.personaplex()
    if max_sessions < 1:
        raise PlanError("max_sessions must be at least 1")
    if gpu is None:
        d = "float32" if dtype == "auto" else dtype
        q = "none" if quantize == "auto" else quantize
        if q != "none" and d not in ("float16", "auto"):
            d = "float16"
        w, kv, total = estimate(spec, d, q, max_sessions)
        return PrecisionPlan(d, q, total, None, w, kv, max_sessions, "cpu: no memory planning")

    budget = budget_bytes(gpu)
    base_dtype = ("bfloat16" if gpu.bf16_native else "float16") if dtype == "auto" else dtype
    quant_options = ["none", "int8", "nf4"] if quantize == "auto" else [quantize]
    candidates: list[Candidate] = []
    for q in quant_options:
        # bitsandbytes kernels here take float16 activations (upstream moshi's int8 path too)
        d = base_dtype if q == "none" else "float16"
        if q != "none" and dtype not in ("auto", "float16"):
            raise PlanError(
                f"quantize={q} runs with float16 activations; set dtype to float16 or auto "
                f"(got {dtype})"
            )
        w, kv, total = estimate(spec, d, q, max_sessions)
        candidates.append(Candidate(d, q, w, kv, total, total <= budget))
    chosen = next((c for c in candidates if c.fits), None)
    if chosen is None:
        raise PlanError(_nothing_fits_message(gpu, spec, candidates, budget, max_sessions))
    sm = f"{gpu.capability[0]}{gpu.capability[1]}"
    why = (
        f"{gpu.name}: {gpu.total_bytes / GIB:.1f} GiB, usable {budget / GIB:.1f} GiB; "
        f"bf16 {'native' if gpu.bf16_native else f'not native (sm_{sm})'}; "
        f"{chosen.dtype}+{chosen.quantize} needs {chosen.total_bytes / GIB:.1f} GiB "
        f"for {max_sessions} session(s)"
    )
    return PrecisionPlan(
        chosen.dtype,
        chosen.quantize,
        chosen.total_bytes,
        budget,
        chosen.weights_bytes,
        chosen.kv_bytes_per_session,
        max_sessions,
        why,
        candidates,
    )


def max_sessions_that_fit(spec: ModelSpec, gpu: GpuSpec, dtype: str, quantize: str) -> int:
    budget = budget_bytes(gpu)
    _w, kv, total1 = estimate(spec, dtype, quantize, 1)
    if total1 > budget:
        return 0
    return 1 + (budget - total1) // kv


def _nothing_fits_message(
    gpu: GpuSpec, spec: ModelSpec, cands: list[Candidate], budget: int, sessions: int
) -> str:
    tried = ", ".join(f"{c.dtype}+{c.quantize} needs {c.total_bytes / GIB:.1f} GiB" for c in cands)
    hints: list[str] = []
    for c in cands:
        n = max_sessions_that_fit(spec, gpu, c.dtype, c.quantize)
        if 0 < n < sessions:
            hints.append(f"max_sessions={n} with quantize={c.quantize}")
    if not any(c.quantize == "nf4" for c in cands):
        hints.append("quantize=nf4 (or auto)")
    smallest = estimate(spec, "float16", "nf4", sessions)[2]
    need_gib = (smallest + max(RESERVE_MIN_BYTES, int(smallest * RESERVE_FRACTION))) / GIB
    hints.append(f"a GPU with at least {need_gib:.0f} GiB for {sessions} session(s)")
    return (
        f"the model does not fit on {gpu.name} ({gpu.total_bytes / GIB:.1f} GiB, "
        f"{budget / GIB:.1f} GiB usable): tried {tried}. Try: " + "; or ".join(hints) + "."
    )


AUTO_MAX_SESSIONS = 64


def plan_auto_sessions(
    gpu: GpuSpec | None,
    *,
    dtype: str = "auto",
    quantize: str = "auto",
    spec: ModelSpec | None = None,
    cap: int = AUTO_MAX_SESSIONS,
) -> PrecisionPlan:
    """``max_sessions: auto``, first half: the precision ``plan_precision`` picks for one
    session, then as many sessions as that precision's memory estimate fits (at most
    ``cap``). The engine then measures the step and may shrink it (Engine.fit_capacity)."""
    first = plan_precision(gpu, dtype=dtype, quantize=quantize, max_sessions=1, spec=spec)
    if gpu is None:
        return first
    spec = spec or ModelSpec.personaplex()
    n = 1
    while n < cap:
        _w, _kv, total = estimate(spec, first.dtype, first.quantize, n + 1)
        if total > budget_bytes(gpu):
            break
        n += 1
    plan = plan_precision(
        gpu, dtype=first.dtype, quantize=first.quantize, max_sessions=n, spec=spec
    )
    plan.reason += f"; auto: {n} session(s) fit the memory"
    return plan
