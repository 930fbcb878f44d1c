"""`bench server` end to end (null engine, one short stream): it measures the codec's CPU
inside the server during the run and prints the overhead ratio (CPU outside the model over
the codec's CPU, the README's target) and the CPU split by thread."""

from __future__ import annotations

import re

import pytest

from personaplex_server import cli

pytestmark = pytest.mark.slow


def _row_of_one_stream(out: str) -> list[str]:
    """The table row of the 1-stream run, split into its columns."""
    return next(line for line in out.splitlines() if re.match(r"\s+1\s+\d+\s", line)).split()


def test_bench_server_prints_the_overhead_ratio(capsys):
    code = cli.main(["bench", "server", "--streams", "1", "--seconds", "2", "--server-cpu", "-1"])
    out = capsys.readouterr().out
    assert code == 0, out
    cols = _row_of_one_stream(out)
    frames = int(cols[1])
    outside, codec, ratio = float(cols[4][:-2]), float(cols[5][:-2]), float(cols[6][:-1])
    assert frames >= 20, out  # 2 s of 80 ms frames reached the (null) engine
    # The codec time comes from the server's own counter during the run: non-zero, below
    # the total outside the model, and the ratio is their quotient.
    assert 0 < codec < outside, out
    assert ratio == pytest.approx(outside / codec, abs=0.02), out
    # the split by thread: the event loop's thread does the Opus work, so it has some of
    # the process's CPU time, never more than all of it
    cpu, loop, others = float(cols[2][:-2]), float(cols[8][:-2]), float(cols[9][:-2])
    assert 0 < loop <= cpu and loop + others == pytest.approx(cpu, abs=0.002), out
    m = re.search(r"overhead ratio at 1 stream\(s\): .* = ([0-9.]+)x \((meets|MISSES) 1\.5x\)", out)
    assert m and float(m[1]) == pytest.approx(ratio, abs=0.01), out


def test_bench_server_floor_runs_only_the_codec_on_uvicorn(capsys):
    """The floor reference: a bare ASGI app on the same uvicorn doing the same Opus work
    (no engine, so no model time and no engine thread), measured the same way."""
    args = ["--engine", "floor", "--streams", "1", "--seconds", "2", "--server-cpu", "-1"]
    code = cli.main(["bench", "server", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    cols = _row_of_one_stream(out)
    frames, model = int(cols[1]), float(cols[3][:-2])
    outside, codec, ratio = float(cols[4][:-2]), float(cols[5][:-2]), float(cols[6][:-1])
    assert frames >= 20, out  # every 80 ms page was decoded, framed and re-encoded
    assert model == 0, out
    assert 0 < codec < outside, out
    assert ratio == pytest.approx(outside / codec, abs=0.02), out
