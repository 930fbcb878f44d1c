"""The engine benchmark runs end to end (tiny sizes on the CPU; numbers are not checked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from personaplex_server import bench_engine, tiny


def test_cli_on_a_model_folder(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    rc = bench_engine.run_engine_bench(
        [
            "--model-dir",
            str(tiny_dir),
            "--configs",
            "fp32",
            "--frames",
            "3",
            "--warmup-frames",
            "1",
            "--no-compile",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "p99 ms" in table and "fp32 on cpu" in table and "late/1000" in table
    (r,) = json.loads(out.read_text())
    assert r["frames"] == 3 and r["error"] is None
    assert 0 < r["step_ms_p50"] <= r["step_ms_p99"] <= r["step_ms_max"]
    assert r["rtf"] == pytest.approx(r["step_ms_mean"] / 80, abs=1e-3)
    assert r["prompt_frames"] == 50 + 30 + 12
    assert r["sessions"] == 1


def test_several_streams_per_step(tiny_dir: Path) -> None:
    (r,) = bench_engine.bench(
        tiny_dir, configs=["fp32"], frames=2, warmup_frames=1, use_compile=False, sessions=2
    )
    assert r.error is None and r.sessions == 2 and r.frames == 2


def test_the_whole_step_scope_reaches_the_engine(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--cuda-graph-scope step` builds engines that step through the step graph."""
    built = []
    build = bench_engine.build_engine

    def spy(*args: Any, **kwargs: Any) -> Any:
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(bench_engine, "build_engine", spy)
    argv = ["--model-dir", str(tiny_dir), "--configs", "fp32", "--frames", "2", "--no-compile"]
    argv += ["--warmup-frames", "1", "--sessions", "2", "--cuda-graph-scope", "step"]
    rc = bench_engine.run_engine_bench(argv)
    assert rc == 0
    assert [e.info["cuda_graph_scope"] for e in built] == ["step"]
    assert built[0]._step_graph is not None and built[0]._step_graph.restored > 0


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fp32", "fp16+int8", "fp16+nf4"])
def test_random_weights_path(config: str) -> None:
    """The ``--random-full`` code path, with the tiny architecture instead of the 7B one."""
    engine = bench_engine.build_random_full(
        config,
        device="cpu",
        use_compile=False,
        lm_kwargs=tiny.tiny_lm_kwargs(),
        mimi_config=tiny.tiny_mimi_config(),
    )
    assert engine.lm.dep_q == 8
    r = bench_engine.bench_one(
        engine, config, frames=2, warmup_frames=1, load_s=0.0, voice_frames=4, text_tokens=3
    )
    assert r.frames == 2 and r.error is None and r.quantize == bench_engine.CONFIGS[config][1]


def test_long_conversation_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--long``: a conversation several contexts long, memory flat from start to end."""
    model = tiny.generate(tmp_path / "short", seed=1, context=48)
    out = tmp_path / "long.json"
    argv = ["--model-dir", str(model), "--configs", "fp32", "--no-compile", "--long", "2"]
    rc = bench_engine.run_engine_bench([*argv, "--json", str(out)])
    assert rc == 0
    assert "context_mode=pinned" in capsys.readouterr().out
    points = json.loads(out.read_text())
    assert points[-1]["frame"] == 2 * 48 and points[-1]["contexts"] == 2.0
    assert len({p["kv_mib"] for p in points}) == 1  # the cache never grew
    assert all(p["step_ms_p50"] > 0 and p["cpu_ms_p50"] > 0 for p in points)


def test_activation_peaks_per_layer(make_engine: Any) -> None:
    """Per-layer largest |activation| (printed for fp16 configs): scaling one layer's
    feed-forward output weights shows up in that layer's figure only."""
    import torch

    engine = make_engine()
    n = len(engine.lm.transformer.layers) + len(engine.lm.depformer.layers)
    before = bench_engine.activation_peaks(engine, frames=2)
    assert len(before) == n and all(0 < x < float("inf") for x in before)
    layer = engine.lm.transformer.layers[1]
    with torch.no_grad():
        for m in layer.gating.modules() if hasattr(layer, "gating") else []:
            if isinstance(m, torch.nn.Linear) and m.out_features == engine.lm.dim:
                m.weight.mul_(1000.0)
    after = bench_engine.activation_peaks(engine, frames=2)
    assert after[1] > 100 * before[1]
    assert after[0] == pytest.approx(before[0], rel=0.5)
    assert "below fp16 max" in bench_engine._act_summary(after)


def test_session_counts_give_one_table_per_config(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model-dir", str(tiny_dir), "--configs", "fp32", "--no-compile"]
    argv += ["--sessions", "1,3", "--frames", "2", "--warmup-frames", "1", "--json", "-"]
    assert bench_engine.run_engine_bench(argv) == 0
    out = capsys.readouterr().out
    assert out.count("fp32 on cpu") == 1  # one table for the config, a row per count
    rows = json.loads(out[out.index("[") :])
    assert [r["sessions"] for r in rows] == [1, 3] and all(r["error"] is None for r in rows)


def test_configs_that_cannot_fit_the_gpu_are_skipped_before_building() -> None:
    from personaplex_server.engine.planning import GIB, GpuSpec

    t4 = GpuSpec("Tesla T4", 15 * GIB, (7, 5))
    assert "not native" in (bench_engine.skip_reason("bf16", t4, 1) or "")
    assert bench_engine.skip_reason("fp16+int8", t4, 1) is None
    assert "does not fit" in (bench_engine.skip_reason("fp16+int8", t4, 32) or "")
    h100 = GpuSpec("NVIDIA H100 80GB HBM3", 80 * GIB, (9, 0))
    assert bench_engine.skip_reason("bf16", h100, 16) is None
    assert bench_engine.skip_reason("bf16", None, 64) is None  # CPU: nothing planned


def test_join_bench_runs_the_prompt_whole_or_in_parts(make_engine: Any) -> None:
    engine = make_engine(max_sessions=2)
    for interleaved in (False, True):
        r = bench_engine.bench_join(
            engine,
            1,
            interleaved=interleaved,
            frames=6,
            join_at=2,
            voice_frames=10,
            text_tokens=70,
        )
        assert r.frames == 6 and r.prompt_frames == 10 + 12 + 70 and r.prompt_s > 0
        assert 0 <= r.late_per_1000 <= 1000 and r.latency_ms_p50 <= r.latency_ms_max
    assert "in parts" in bench_engine.format_join([r])
