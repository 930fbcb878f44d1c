"""``personaplex-server client`` against a running server (null engine; the real engine's
end-to-end client run is in test_real_engine.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sphn

from personaplex_server import cli
from personaplex_server.app import create_app
from personaplex_server.config import Settings
from personaplex_server.null_engine import NullEngine, NullEngineConfig

TOKEN = "client-test-token"


def serve(live_server, **kw):
    settings = Settings(max_queued_frames=50, **kw)
    engine = NullEngine(NullEngineConfig(prompt_seconds=0.05))
    srv = live_server(create_app(settings, lambda _s: engine), settings)
    srv.wait_ready()
    return srv


def run_client(srv_base: str, tmp_path: Path, *extra: str) -> int:
    wav = tmp_path / "in.wav"
    if not wav.exists():
        t = np.arange(int(0.4 * 44100)) / 44100  # 44.1 kHz stereo: resampled + downmixed
        tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
        sphn.write_wav(str(wav), tone, 44100)
    return cli.main(
        [
            "client",
            "--url",
            srv_base,
            "--input",
            str(wav),
            "--out-dir",
            str(tmp_path / "out"),
            "--tail-seconds",
            "0.2",
            *extra,
        ]
    )


def test_client_streams_and_writes_reply(live_server, tmp_path, capsys):
    srv = serve(live_server, max_sessions=2)
    assert run_client(srv.base, tmp_path, "--concurrency", "2", "--voice", "NATM0.pt") == 0
    out = capsys.readouterr().out
    assert "2/2 sessions ok" in out and "time to handshake" in out and "first audio" in out
    for i in (0, 1):
        pcm, sr = sphn.read(str(tmp_path / "out" / f"reply-{i}.wav"))
        assert sr == 24000 and pcm.shape[-1] >= 4 * 1920
        # the null engine echoes at half volume: the reply is the tone, not silence
        assert np.abs(pcm).max() > 0.05
        assert " hi" in (tmp_path / "out" / f"transcript-{i}.txt").read_text()


def test_client_fails_when_server_is_busy(live_server, tmp_path, capsys):
    srv = serve(live_server, max_sessions=1)
    assert run_client(srv.base, tmp_path, "--concurrency", "2") == 1
    out = capsys.readouterr()
    assert "1/2 sessions ok" in out.out
    assert "server busy" in out.out and "close code 1013" in out.out
    assert "1 of 2 session(s) failed" in out.err


def test_client_token_from_env_or_file_not_argv(live_server, tmp_path, capsys, monkeypatch):
    srv = serve(live_server, access_token=TOKEN)
    monkeypatch.delenv("PERSONAPLEX_TOKEN", raising=False)
    assert run_client(srv.base, tmp_path) == 1
    assert "unauthorized" in capsys.readouterr().out
    monkeypatch.setenv("PERSONAPLEX_TOKEN", TOKEN)
    assert run_client(srv.base, tmp_path) == 0
    monkeypatch.delenv("PERSONAPLEX_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert run_client(srv.base, tmp_path, "--token-file", str(token_file)) == 0
    with pytest.raises(SystemExit):
        cli.main(["client", "--token", TOKEN])  # no such flag


def test_client_fails_cleanly_when_nothing_listens(tmp_path, capsys):
    assert run_client("http://127.0.0.1:9", tmp_path, "--handshake-timeout", "2") == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_self_signed_certificate(live_server, tmp_path, capsys):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    srv = serve(live_server, ssl_certfile=cert, ssl_keyfile=key)
    assert srv.base.startswith("https://")
    # Without trusting the certificate the client refuses to talk.
    assert run_client(srv.base, tmp_path) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
    assert run_client(srv.base, tmp_path, "--insecure") == 0
    assert run_client(srv.base, tmp_path, "--ca-file", str(cert)) == 0
