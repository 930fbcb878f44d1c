"""Engine benchmark: per-frame step time, real-time factor, memory.

Either a model folder (the real checkpoint or the tiny one) or ``--random-full``: the full
PersonaPlex architecture (dep_q=8 at run time) with random weights built layer by layer on
the device, no download, so one short run on any GPU measures bf16, fp16+int8 and
fp16+nf4. A step is what the server does per 80 ms frame: Mimi encode of the user's audio,
one LM step (temporal transformer + depth transformer for 8 codebooks + sampling), Mimi
decode of the agent's audio, the text token to the host.

``personaplex-server bench engine [ARGS]`` or ``python -m personaplex_server.bench_engine``.

Measured 2026-11-27, ``--random-full``, one session, 200 frames after 20, CUDA graphs on,
torch.compile off unless noted; NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, moshi 0.2.13,
bitsandbytes 0.49.2 (ms per 80 ms frame; LM = one LMGen.step, Mimi = encode + decode):

    config           p50   p95   p99   RTF    peak GiB  LM ms  Mimi ms
    bf16             24.5  24.9  26.3  0.307  16.3      18.3   6.9
    fp16+int8        23.7  24.4  24.6  0.297   9.4      18.6   5.5
    fp16+nf4         26.2  28.0  30.9  0.324   6.3      19.1   8.5
    bf16 + compile   18.9  19.7  20.4  0.237  16.4

On the H100 the step is bound by kernel launches and latency, not by memory bandwidth
(bf16 weights, 15.4 GB, stream in about 5 ms at 3 TB/s), hence the same time for all three.
A T4 (320 GB/s) needs at least about 25 ms (int8, ~7.9 GB) or 14 ms (nf4, ~4.5 GB) per frame
just to read the weights, on top of that latency: unmeasured, expect int8 to be marginal
against the 80 ms budget and nf4 to have more headroom.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIGS = {
    "bf16": ("bfloat16", "none"),
    "fp16": ("float16", "none"),
    "fp32": ("float32", "none"),
    "fp16+int8": ("float16", "int8"),
    "fp16+nf4": ("float16", "nf4"),
}
FRAME_MS = 80.0


@dataclass
class BenchResult:
    config: str
    device: str
    sessions: int
    gpu: str | None
    dtype: str
    quantize: str
    frames: int
    load_s: float
    prompt_frames: int
    prompt_s: float
    step_ms_mean: float
    step_ms_p50: float
    step_ms_p95: float
    step_ms_p99: float
    step_ms_max: float
    rtf: float  # mean step time / 80 ms; < 1 is faster than real time
    late_frames: int  # steps over 80 ms
    peak_gib: float | None
    allocated_gib: float | None
    error: str | None = None
    # largest |activation| seen in each transformer layer (temporal, then depth), any
    # module inside it; float16 overflows above 65504
    act_max_per_layer: list[float] | None = None
    # CPU time of the stepping thread per step: on a busy machine wall time is mostly waiting
    cpu_ms_p50: float | None = None

    @classmethod
    def failed(cls, config: str, device: str, error: str) -> BenchResult:
        dtype, quant = CONFIGS.get(config, ("?", "?"))
        nan = float("nan")
        return cls(
            config,
            device,
            0,
            None,
            dtype,
            quant,
            0,
            0.0,
            0,
            0.0,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            0,
            None,
            None,
            error=error[:500],
        )


def skip_reason(config: str, gpu: Any, sessions: int, spec: Any = None) -> str | None:
    """Why ``config`` cannot run ``sessions`` conversations on ``gpu`` (None: it can, or
    no GPU): decided from the GPU's properties and the memory plan *before* building, so
    a 16 GB T4 is never asked to hold bf16 weights it has neither room nor support for."""
    from .engine.planning import PlanError, plan_precision

    if gpu is None:
        return None
    dtype, quant = CONFIGS[config]
    if dtype == "bfloat16" and not gpu.bf16_native:
        sm = f"sm_{gpu.capability[0]}{gpu.capability[1]}"
        return f"bf16 is not native on {gpu.name} ({sm}): use fp16+int8 or fp16+nf4"
    try:
        plan_precision(gpu, dtype=dtype, quantize=quant, max_sessions=sessions, spec=spec)
    except PlanError as exc:
        return f"does not fit: {exc}"
    return None


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class _FakeTokenizer:
    def vocab_size(self) -> int:
        return 32000

    def id_to_piece(self, i: int) -> str:
        return f"▁t{i}"

    def encode(self, text: str) -> list[int]:
        return [100 + (ord(c) % 200) for c in text]


def build_random_full(
    config: str,
    device: str = "auto",
    max_sessions: int = 1,
    use_cuda_graphs: bool = True,
    use_compile: bool = True,
    lm_kwargs: dict[str, Any] | None = None,
    mimi_config: dict[str, Any] | None = None,
    context_mode: str = "pinned",
    cuda_graph_scope: str = "pieces",
) -> Any:
    """An Engine over the full architecture with random weights (nothing downloaded).

    ``lm_kwargs``/``mimi_config`` replace the PersonaPlex architecture (tests use tiny ones).
    """
    import torch
    from moshi.models import loaders
    from moshi.models.lm import LMModel
    from torch import nn

    from .engine import EngineConfig
    from .engine import constants as C
    from .engine.loading import ModelFiles, _blocks, _finish_module
    from .engine.planning import ModelSpec, plan_precision
    from .engine.quant import quantize_linears
    from .engine.runtime import Engine, gpu_spec, resolve_device

    dtype_name, quant = CONFIGS[config]
    dev = resolve_device(device)
    dtype = getattr(torch, dtype_name)
    kwargs = dict(lm_kwargs if lm_kwargs is not None else loaders._lm_kwargs)
    kwargs["dep_q"] = C.AGENT_DEP_Q
    gen = torch.Generator(device=dev).manual_seed(0)

    def randomize(module: nn.Module) -> None:
        # variance-preserving scale: activations stay well inside float16's range
        module.to_empty(device=dev)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("alpha") or "norm" in name:
                    p.fill_(1.0)
                elif p.dim() >= 2:
                    p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5, generator=gen)
                else:
                    p.zero_()

    def materialize(module: nn.Module) -> None:
        randomize(module)
        _finish_module(module, dev, dtype, quant, quantize_now=True)

    lm = LMModel(device="meta", dtype=dtype, **kwargs)
    for _, block in _blocks(lm):
        materialize(block)
    for _, child in lm.named_children():
        if child is lm.transformer or child is lm.depformer:
            continue
        randomize(child)
        _finish_module(child, dev, dtype, quant, quantize_now=False)
    if quant != "none":
        quantize_linears(lm, quant)
    lm.to(dev)
    lm.eval()
    mimi = loaders.get_mimi(None, mimi_config, device=dev, num_codebooks=C.AUDIO_CODEBOOKS)
    with torch.no_grad():
        for name, buf in mimi.named_buffers():
            if name.endswith("embedding_sum"):
                buf.normal_(generator=gen)
            elif name.endswith(("cluster_usage", "_initialized")):
                buf.fill_(1.0)
    mimi.eval()
    gpu = gpu_spec(dev) if dev.type == "cuda" else None
    spec = ModelSpec.personaplex() if lm_kwargs is None else None
    plan = plan_precision(
        gpu, dtype=dtype_name, quantize=quant, max_sessions=max_sessions, spec=spec
    )
    cfg = EngineConfig(
        model_dir=Path("random-full"),
        device=str(dev),
        dtype=dtype_name,  # type: ignore[arg-type]
        quantize=quant,  # type: ignore[arg-type]
        max_sessions=max_sessions,
        use_cuda_graphs=use_cuda_graphs,
        use_compile=use_compile,
        context_mode=context_mode,  # type: ignore[arg-type]
        cuda_graph_scope=cuda_graph_scope,  # type: ignore[arg-type]
    )
    files = ModelFiles(
        Path("random"),
        Path("random"),
        Path("random"),
        kwargs,
        None,
        "personaplex-7b-v1 architecture, random weights",
    )
    info: dict[str, Any] = {
        "model": files.model_name,
        "device": str(dev),
        "dtype": dtype_name,
        "quantize": quant,
        "capacity": max_sessions,
        "memory": plan.as_info(),
        "gpu": None if gpu is None else {"name": gpu.name},
    }
    return Engine(cfg, files, lm, mimi, _FakeTokenizer(), dev, plan, info)


FP16_MAX = 65504.0


def activation_peaks(engine: Any, frames: int = 10) -> list[float]:
    """Largest |activation| of every transformer layer (temporal, then depth) over
    ``frames`` steps of a fresh conversation (slot 0), eager (hooks do not run inside a
    CUDA graph replay). Kept on the device until the end: no sync per module."""
    import numpy as np
    import torch
    from moshi.utils.compile import no_cuda_graph

    from .engine import SamplingParams
    from .engine.runtime import EngineSession, _Voice

    lm = engine.lm
    layers = list(lm.transformer.layers)
    if lm.depformer is not None:
        layers += list(lm.depformer.layers)
    peaks = torch.zeros(len(layers), device=engine.device)
    handles = []

    def hook_for(i: int) -> Any:
        def hook(_m: Any, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
                peaks[i] = torch.maximum(peaks[i], out.detach().abs().max().float())

        return hook

    for i, layer in enumerate(layers):
        for m in layer.modules():
            handles.append(m.register_forward_hook(hook_for(i)))
    session = EngineSession(engine, 0, "bench", list(range(100, 110)), SamplingParams(seed=0))
    engine._slots[0] = session
    try:
        with no_cuda_graph():
            codes = torch.randint(0, 2048, (8, 8), generator=torch.Generator().manual_seed(1))
            engine._prompt_with(session, _Voice(codes, None, None, 8))
            rng = np.random.default_rng(1)
            for _ in range(frames):
                pcm = rng.uniform(-0.5, 0.5, engine.frame_size).astype(np.float32)
                engine._step(session, pcm)
    finally:
        for h in handles:
            h.remove()
        engine._release(session)
    return [round(float(x), 2) for x in peaks.cpu()]


def bench_one(
    engine: Any,
    config: str,
    frames: int,
    warmup_frames: int,
    load_s: float,
    voice_frames: int = 50,
    text_tokens: int = 30,
    sessions: int = 1,
) -> BenchResult:
    """Time ``frames`` steps after ``warmup_frames``; with ``sessions`` > 1 every step is
    one :meth:`Engine.step_batch` over that many conversations (the engine needs as many
    slots)."""
    import numpy as np
    import torch

    from .engine import SamplingParams
    from .engine.runtime import EngineSession, _Voice

    dev = engine.device
    engine.warmup()
    g = torch.Generator().manual_seed(0)
    active = []
    t0 = time.perf_counter()
    for slot in range(sessions):
        session = EngineSession(
            engine, slot, "bench", list(range(100, 100 + text_tokens)), SamplingParams(seed=0)
        )
        engine._slots[slot] = session
        codes = torch.randint(0, 2048, (voice_frames, 8), generator=g)
        engine._prompt_with(session, _Voice(codes, None, None, voice_frames))
        active.append(session)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    prompt_s = (time.perf_counter() - t0) / sessions
    rng = np.random.default_rng(0)
    pcm = rng.uniform(-0.2, 0.2, (frames + warmup_frames, engine.frame_size)).astype(np.float32)
    times: list[float] = []
    cpu: list[float] = []
    for i in range(frames + warmup_frames):
        if active[0].frames_left <= 0:
            break
        t, c = time.perf_counter(), time.thread_time()
        # ends with .cpu()/.item(): synchronous
        if sessions == 1:
            engine._step(active[0], pcm[i])
        else:
            engine.step_batch([(s, pcm[i]) for s in active])
        dt = (time.perf_counter() - t) * 1000
        if i >= warmup_frames:
            times.append(dt)
            cpu.append((time.thread_time() - c) * 1000)
    session = active[0]
    for s in active:
        engine._release(s)
    acts = activation_peaks(engine) if engine.plan.dtype == "float16" else None
    peak = alloc = None
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 1024**3
        alloc = torch.cuda.memory_allocated(dev) / 1024**3
    elif (rss := _rss_mib()) is not None:  # CPU: the process's resident memory
        alloc = rss / 1024
    mean = statistics.fmean(times)
    gpu = engine.info.get("gpu") or {}
    return BenchResult(
        config=config,
        device=str(dev),
        sessions=sessions,
        gpu=gpu.get("name"),
        dtype=engine.plan.dtype,
        quantize=engine.plan.quantize,
        frames=len(times),
        load_s=round(load_s, 2),
        prompt_frames=session.prompt_frames,
        prompt_s=round(prompt_s, 3),
        step_ms_mean=round(mean, 2),
        step_ms_p50=round(_percentile(times, 50), 2),
        step_ms_p95=round(_percentile(times, 95), 2),
        step_ms_p99=round(_percentile(times, 99), 2),
        step_ms_max=round(max(times), 2),
        rtf=round(mean / FRAME_MS, 3),
        late_frames=sum(t > FRAME_MS for t in times),
        peak_gib=None if peak is None else round(peak, 2),
        allocated_gib=None if alloc is None else round(alloc, 2),
        act_max_per_layer=acts,
        cpu_ms_p50=round(_percentile(cpu, 50), 2),
    )


@dataclass
class LongPoint:
    """Step time and memory over a stretch of a long conversation."""

    frame: int  # frames since the prompt at the end of the stretch
    contexts: float  # the same, in model contexts
    step_ms_p50: float
    step_ms_p99: float
    cpu_ms_p50: float  # the engine thread's CPU time per step: robust on a busy machine
    rss_mib: float | None  # the process's resident memory (CPU)
    allocated_mib: float | None  # torch's allocated GPU memory
    kv_mib: float  # the temporal transformer's KV cache, pinned prompts included


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_long(
    engine: Any, contexts: float = 10.0, stretch: int = 200, voice_frames: int = 20
) -> list[LongPoint]:
    """One conversation for ``contexts`` times the model's context; a point per stretch
    (first, then every tenth of the run, and the last). Flat = no length limit in cost."""
    import numpy as np
    import torch

    from .engine import SamplingParams
    from .engine.runtime import EngineSession, _Voice

    dev = engine.device
    text = list(range(100, 110 if engine.context >= 200 else 102))
    # the prompt must fit the pinned half of a short (tiny model) context
    voice_frames = max(2, min(voice_frames, engine.context // 2 - 2 * 6 - len(text)))
    session = EngineSession(engine, 0, "bench", text, SamplingParams(seed=0))
    engine._slots[0] = session
    codes = torch.randint(0, 2048, (voice_frames, 8), generator=torch.Generator().manual_seed(0))
    engine._prompt_with(session, _Voice(codes, None, None, voice_frames))
    total = int(contexts * engine.context)
    stretch = max(1, min(stretch, total // 10))
    every = max(stretch, total // 10)
    pcm = np.random.default_rng(0).uniform(-0.2, 0.2, (64, engine.frame_size))
    pcm = pcm.astype(np.float32)
    points: list[LongPoint] = []
    times: list[float] = []
    cpu: list[float] = []
    try:
        for i in range(total):
            t, c = time.perf_counter(), time.thread_time()
            engine._step(session, pcm[i % 64])  # ends with .cpu(): synchronous
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
            n = i + 1
            if n % every == 0 or n in (total, stretch):
                last = times[-stretch:]
                kv = sum(w.cache.numel() * w.cache.element_size() for w in engine._windows)
                kv += sum(
                    k.numel() * k.element_size()
                    for w in engine._windows
                    for k in w.pinned_k
                    if k is not None
                )
                alloc = torch.cuda.memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
                points.append(
                    LongPoint(
                        frame=n,
                        contexts=round(n / engine.context, 2),
                        step_ms_p50=round(_percentile(last, 50), 2),
                        step_ms_p99=round(_percentile(last, 99), 2),
                        cpu_ms_p50=round(_percentile(cpu[-stretch:], 50), 2),
                        rss_mib=None if (r := _rss_mib()) is None else round(r, 1),
                        allocated_mib=None if alloc is None else round(alloc, 1),
                        kv_mib=round(kv / 2**20, 3),
                    )
                )
    finally:
        engine._release(session)
    return points


@dataclass
class JoinResult:
    """N conversations talking in real time while one more joins (its prompt runs)."""

    talking: int
    interleaved: bool  # prompt run part by part between steps (the server's way)
    frames: int  # frames of each talking conversation, in real time (80 ms apart)
    prompt_frames: int
    prompt_s: float  # wall time from the join to the joiner's first step
    latency_ms_p50: float  # frame due -> its step done, talking conversations
    latency_ms_p99: float
    latency_ms_max: float
    late_per_1000: float  # frames answered more than 80 ms after they were due


def bench_join(
    engine: Any,
    talking: int,
    *,
    interleaved: bool = True,
    frames: int = 60,
    join_at: int = 10,
    voice_frames: int = 125,
    text_tokens: int = 100,
) -> JoinResult:
    """Real-time simulation of the engine thread: a frame of the ``talking`` conversations
    is due every 80 ms; when no frame is due, the joiner's prompt runs (one part at a
    time, or whole). The latency of each talking frame is measured from when it was due.
    The engine needs ``talking + 1`` slots."""
    import numpy as np
    import torch

    from .engine import SamplingParams
    from .engine.runtime import EngineSession, _Voice

    g = torch.Generator().manual_seed(0)
    active = []
    for slot in range(talking):
        s = EngineSession(engine, slot, "bench", [100, 101], SamplingParams(seed=slot))
        engine._slots[slot] = s
        engine._prompt_with(s, _Voice(torch.randint(0, 2048, (4, 8), generator=g), None, None, 4))
        active.append(s)
    joiner = EngineSession(
        engine, talking, "bench", list(range(100, 100 + text_tokens)), SamplingParams(seed=99)
    )
    engine._slots[talking] = joiner
    codes = torch.randint(0, 2048, (voice_frames, 8), generator=g)
    parts = engine._prompt_parts(joiner, _Voice(codes, None, None, voice_frames))
    pcm = np.random.default_rng(0).uniform(-0.2, 0.2, (16, engine.frame_size))
    pcm = pcm.astype(np.float32)
    lat: list[float] = []
    t0 = time.perf_counter()
    joined_at = prompt_done = None
    i = 0
    try:
        while i < frames:
            now = time.perf_counter()
            due = t0 + i * FRAME_MS / 1000
            busy = False
            if now >= due:
                engine.step_batch([(s, pcm[i % 16]) for s in active])
                lat.append((time.perf_counter() - due) * 1000)
                i += 1
                busy = True
            # the worker's queue is first in, first out: a prompt job waiting runs next
            if i >= join_at and prompt_done is None:
                joined_at = joined_at or time.perf_counter()
                if interleaved:
                    if next(parts, "done") == "done":
                        prompt_done = time.perf_counter()
                else:
                    for _ in parts:
                        pass
                    prompt_done = time.perf_counter()
                busy = True
            if not busy:
                time.sleep(max(0.0, min(due - now, 0.005)))
    finally:
        for s in (*active, joiner):
            engine._release(s)
    assert joined_at is not None
    end = prompt_done if prompt_done is not None else time.perf_counter()
    return JoinResult(
        talking=talking,
        interleaved=interleaved,
        frames=len(lat),
        prompt_frames=joiner.prompt_frames,
        prompt_s=round(end - joined_at, 3),
        latency_ms_p50=round(_percentile(lat, 50), 1),
        latency_ms_p99=round(_percentile(lat, 99), 1),
        latency_ms_max=round(max(lat), 1),
        late_per_1000=round(1000 * sum(x > FRAME_MS for x in lat) / len(lat), 1),
    )


def format_join(results: Sequence[JoinResult]) -> str:
    lines = [
        "one conversation joins N talking ones (latency = frame due -> step done)",
        "talking  prompt run   prompt fr  prompt s  p50 ms  p99 ms  max ms  late/1000",
    ]
    for r in results:
        mode = "in parts" if r.interleaved else "whole"
        lines.append(
            f"{r.talking:<8} {mode:<12} {r.prompt_frames:<10} {r.prompt_s:<9.2f} "
            f"{r.latency_ms_p50:<7.1f} {r.latency_ms_p99:<7.1f} {r.latency_ms_max:<7.1f} "
            f"{r.late_per_1000:.1f}"
        )
    return "\n".join(lines)


def format_long(points: Sequence[LongPoint], mode: str, context: int) -> str:
    lines = [
        f"long conversation, context_mode={mode}, context {context} frames "
        "(step time over the last stretch of frames)",
        "frame     contexts  p50 ms  p99 ms  CPU ms  RSS MiB  GPU alloc MiB  KV MiB",
    ]
    for p in points:
        rss = "-" if p.rss_mib is None else f"{p.rss_mib:.0f}"
        gpu = "-" if p.allocated_mib is None else f"{p.allocated_mib:.0f}"
        lines.append(
            f"{p.frame:<9} {p.contexts:<9} {p.step_ms_p50:<7.2f} {p.step_ms_p99:<7.2f} "
            f"{p.cpu_ms_p50:<7.2f} {rss:<8} {gpu:<14} {p.kv_mib:.3f}"
        )
    return "\n".join(lines)


def build_engine(
    config: str,
    model_dir: Path | None = None,
    *,
    random_full: bool = False,
    device: str = "auto",
    sessions: int = 1,
    use_cuda_graphs: bool = True,
    use_compile: bool = True,
    context_mode: str = "pinned",
    cuda_graph_scope: str = "pieces",
) -> Any:
    from .engine import Engine, EngineConfig

    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; choose from {', '.join(CONFIGS)}")
    dtype, quant = CONFIGS[config]
    if random_full:
        return build_random_full(
            config,
            device,
            max_sessions=sessions,
            use_cuda_graphs=use_cuda_graphs,
            use_compile=use_compile,
            context_mode=context_mode,
            cuda_graph_scope=cuda_graph_scope,
        )
    if model_dir is None:
        raise ValueError("give a model folder or random_full=True")
    return Engine.load(
        EngineConfig(
            model_dir=model_dir,
            device=device,
            dtype=dtype,  # type: ignore[arg-type]
            quantize=quant,  # type: ignore[arg-type]
            max_sessions=sessions,
            use_cuda_graphs=use_cuda_graphs,
            use_compile=use_compile,
            context_mode=context_mode,  # type: ignore[arg-type]
            cuda_graph_scope=cuda_graph_scope,  # type: ignore[arg-type]
        )
    )


def _detected_gpu(device: str) -> Any:
    import torch

    from .engine.runtime import gpu_spec, resolve_device

    if not torch.cuda.is_available():
        return None
    dev = resolve_device(device)
    return gpu_spec(dev) if dev.type == "cuda" else None


def _bench_spec(model_dir: Path | None, random_full: bool) -> Any:
    from .engine.loading import resolve_files
    from .engine.planning import ModelSpec
    from .engine.runtime import model_spec

    if random_full or model_dir is None:
        return ModelSpec.personaplex()
    return model_spec(resolve_files(model_dir))


def bench(
    model_dir: Path | None = None,
    *,
    random_full: bool = False,
    configs: Sequence[str] = ("bf16", "fp16+int8", "fp16+nf4"),
    frames: int = 200,
    warmup_frames: int = 20,
    device: str = "auto",
    use_cuda_graphs: bool = True,
    use_compile: bool = True,
    sessions: int | Sequence[int] = 1,
    context_mode: str = "pinned",
    cuda_graph_scope: str = "pieces",
) -> list[BenchResult]:
    """Run each config, and each number of sessions (an engine with that many slots, all
    talking), in turn, freeing the previous model first; errors are recorded. Configs
    that cannot fit the detected GPU are skipped before anything is built."""
    import torch

    if not random_full and model_dir is None:
        raise ValueError("give a model folder or random_full=True")
    counts = [sessions] if isinstance(sessions, int) else list(sessions)
    gpu = _detected_gpu(device)
    spec = _bench_spec(model_dir, random_full)
    results: list[BenchResult] = []
    for config, n in ((c, n) for c in configs for n in counts):
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r}; choose from {', '.join(CONFIGS)}")
        why = skip_reason(config, gpu, n, spec)
        if why is not None:
            log.warning("config %s with %d session(s) skipped: %s", config, n, why)
            skipped = BenchResult.failed(config, device, "skipped: " + why)
            skipped.sessions = n
            results.append(skipped)
            continue
        engine = None
        try:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            engine = build_engine(
                config,
                model_dir,
                random_full=random_full,
                device=device,
                sessions=n,
                use_cuda_graphs=use_cuda_graphs,
                use_compile=use_compile,
                context_mode=context_mode,
                cuda_graph_scope=cuda_graph_scope,
            )
            load_s = time.perf_counter() - t0
            results.append(bench_one(engine, config, frames, warmup_frames, load_s, sessions=n))
        except Exception as exc:  # one config failing must not hide the others
            log.exception("config %s failed", config)
            failed = BenchResult.failed(config, device, f"{type(exc).__name__}: {exc}")
            failed.sessions = n
            results.append(failed)
        finally:
            del engine
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return results


def _act_summary(acts: list[float] | None) -> str:
    """The largest per-layer activation and how far float16's range is from it."""
    if not acts:
        return "-"
    i = max(range(len(acts)), key=acts.__getitem__)
    return f"{acts[i]:.0f} (L{i}, {FP16_MAX / max(acts[i], 1e-9):.0f}x below fp16 max)"


def format_table(results: Sequence[BenchResult]) -> str:
    """One table per config: a row per number of concurrent conversations."""
    tables = []
    for config in dict.fromkeys(r.config for r in results):
        rows_of = [r for r in results if r.config == config]
        first = next((r for r in rows_of if not r.error), rows_of[0])
        title = (
            f"{config} on {first.gpu or first.device} ({first.dtype}+{first.quantize}); "
            "ms per step of all conversations, late = steps over 80 ms per 1000"
        )
        tables.append(title + "\n" + _config_table(rows_of))
    return "\n\n".join(tables)


def _config_table(results: Sequence[BenchResult]) -> str:
    head = (
        "sessions",
        "frames",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "CPU ms",
        "RTF",
        "late/1000",
        "memory GiB",
        "prompt s",
        "load s",
        "max |act| (layer)",
    )
    rows: list[tuple[str, ...]] = [head]
    errors: dict[int, str] = {}  # row index -> message, printed across the columns
    for r in results:
        if r.error:
            errors[len(rows)] = f"{r.sessions:<8}  {r.error[:160]}"
            rows.append(("",) * len(head))
            continue
        mem = (
            f"{r.peak_gib:.2f} peak"
            if r.peak_gib is not None
            else ("-" if r.allocated_gib is None else f"{r.allocated_gib:.2f} RSS")
        )
        rows.append(
            (
                str(r.sessions),
                str(r.frames),
                f"{r.step_ms_p50:.1f}",
                f"{r.step_ms_p95:.1f}",
                f"{r.step_ms_p99:.1f}",
                f"{r.step_ms_max:.1f}",
                "-" if r.cpu_ms_p50 is None else f"{r.cpu_ms_p50:.1f}",
                f"{r.rtf:.3f}",
                f"{1000 * r.late_frames / max(1, r.frames):.1f}",
                mem,
                f"{r.prompt_s:.2f} ({r.prompt_frames} fr)",
                f"{r.load_s:.1f}",
                _act_summary(r.act_max_per_layer),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        errors.get(n) or "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for n, row in enumerate(rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="a model folder (real or tiny)")
    src.add_argument(
        "--random-full",
        action="store_true",
        help="full PersonaPlex architecture with random weights (no download)",
    )
    parser.add_argument(
        "--configs",
        default="bf16,fp16+int8,fp16+nf4",
        help=f"comma-separated, from: {', '.join(CONFIGS)}",
    )
    parser.add_argument("--frames", type=int, default=200, help="timed frames per config")
    parser.add_argument("--warmup-frames", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sessions",
        default="1",
        help="concurrent conversations stepped together (Engine.step_batch), a number or a "
        "comma-separated list (e.g. 1,2,4,8,16,32): one engine with that many slots each",
    )
    parser.add_argument(
        "--context-mode",
        choices=("pinned", "sliding", "stop"),
        default="pinned",
        help="what the engine does past the model's context (see engine/window.py)",
    )
    parser.add_argument(
        "--long",
        type=float,
        metavar="CONTEXTS",
        default=0.0,
        help="instead: one conversation this many contexts long (e.g. 10), printing step "
        "time and memory from start to end (first config only)",
    )
    parser.add_argument(
        "--join",
        action="store_true",
        help="instead: for each --sessions count N, N conversations talk in real time "
        "while one more joins; latency of their frames with the joiner's prompt run whole "
        "and in parts (first config only)",
    )
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument(
        "--cuda-graph-scope",
        choices=["pieces", "step"],
        default="pieces",
        help="pieces: upstream moshi's graphs of the model's parts; step: one graph around "
        "the whole batched step (engine/step_graph.py); run both to compare",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=Path("-"),
        help="also write the results as JSON (to a file, or - for stdout)",
    )


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--sessions: expected numbers like 1,2,4, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit("--sessions: every count must be at least 1")
    return counts


def run_engine_bench(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse ``argv``, run, print the table (and JSON). Exit status."""
    parser = argparse.ArgumentParser(
        prog="personaplex-server bench engine", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    # the engine's options, the same for every engine built below
    options: dict[str, Any] = {
        "use_cuda_graphs": not args.no_cuda_graphs,
        "use_compile": not args.no_compile,
        "context_mode": args.context_mode,
        "cuda_graph_scope": args.cuda_graph_scope,
    }
    if args.long > 0:
        engine = build_engine(
            configs[0],
            args.model_dir,
            random_full=args.random_full,
            device=args.device,
            **options,
        )
        points = bench_long(engine, args.long)
        print(format_long(points, args.context_mode, engine.context))
        if args.json is not None:
            data = json.dumps([asdict(p) for p in points], indent=1)
            if str(args.json) == "-":
                print(data)
            else:
                args.json.write_text(data + "\n")
        return 0
    if args.join:
        joins = []
        for n in _counts(args.sessions):
            engine = build_engine(
                configs[0],
                args.model_dir,
                random_full=args.random_full,
                device=args.device,
                sessions=n + 1,
                **options,
            )
            engine.warmup()
            for interleaved in (False, True):
                joins.append(bench_join(engine, n, interleaved=interleaved))
            del engine
        print(format_join(joins))
        if args.json is not None:
            data = json.dumps([asdict(j) for j in joins], indent=1)
            if str(args.json) == "-":
                print(data)
            else:
                args.json.write_text(data + "\n")
        return 0
    results = bench(
        args.model_dir,
        random_full=args.random_full,
        configs=configs,
        frames=args.frames,
        warmup_frames=args.warmup_frames,
        device=args.device,
        sessions=_counts(args.sessions),
        **options,
    )
    print(format_table(results))
    if args.json is not None:
        data = json.dumps([asdict(r) for r in results], indent=1)
        if str(args.json) == "-":
            print(data)
        else:
            args.json.write_text(data + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(run_engine_bench())
