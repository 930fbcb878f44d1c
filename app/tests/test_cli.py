"""The console command as a deployment uses it: real processes, real engine, tiny model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TOKEN = "cli-test-token-0123456789"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "personaplex_server", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAPLEX_")}
    env["NO_TORCH_COMPILE"] = "1"
    env.update(extra)
    return env


def test_serve_exits_with_status_3_when_the_model_cannot_load(tmp_path: Path) -> None:
    proc = subprocess.run(
        _cmd("serve", "--model-dir", str(tmp_path / "nothing-here"), "--port", str(_free_port())),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "model load failed" in proc.stderr


def test_serve_refuses_invalid_settings() -> None:
    proc = subprocess.run(
        _cmd("serve", "--max-sessions", "0"), env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "max_sessions" in proc.stderr


def test_serve_and_client_processes_with_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            _cmd(
                "serve",
                "--model-dir", str(tiny_model_dir),
                "--port", str(port),
                "--device", "cpu", "--dtype", "float32", "--quantize", "none",
                "--no-use-compile", "--no-use-cuda-graphs",
                "--access-token-file", str(token_file),
                "--max-queued-frames", "100",
            ),
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.3)
        client = subprocess.run(
            _cmd(
                "client",
                "--url", f"http://127.0.0.1:{port}",
                "--out-dir", str(tmp_path / "out"),
                "--text-prompt", "A secret persona text",
                "--tail-seconds", "0",
                "--linger-seconds", "60",
                "--input-seconds", "1",
            ),
            env=_env(PERSONAPLEX_TOKEN=TOKEN),
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip
        assert client.returncode == 0, client.stdout + client.stderr
        assert "1/1 sessions ok" in client.stdout
        assert (tmp_path / "out" / "reply.wav").stat().st_size > 44
        # Without the token the smoke test fails (non-zero exit).
        refused = subprocess.run(
            _cmd("client", "--url", f"http://127.0.0.1:{port}", "--handshake-timeout", "10"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "unauthorized" in refused.stdout
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
    finally:
        server.terminate()
        server.wait(30)
    text = log.read_text()
    assert "session" in text and "started" in text  # the server did log the session
    assert TOKEN not in text and "secret persona" not in text.lower()
