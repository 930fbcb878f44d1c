"""voice_server's readiness probe (the unit's ExecStartPost): ready, failed load, and a
server process that died while systemd was still waiting for it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROBE = Path(__file__).resolve().parents[3] / "roles" / "voice_server" / "files" / "wait_ready.py"


def serve(status: int, body: dict) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def probe(url: str, timeout: str, pid: str = "") -> tuple[int, float, str]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(PROBE), url, timeout, pid],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, time.monotonic() - start, proc.stderr


def test_ready_server_passes() -> None:
    srv = serve(200, {"status": "ready"})
    rc, _, _ = probe(f"http://127.0.0.1:{srv.server_address[1]}/readyz", "10")
    srv.shutdown()
    assert rc == 0


def test_failed_load_fails_at_once_with_reason() -> None:
    srv = serve(503, {"status": "failed", "error": "nothing fits this GPU"})
    rc, took, err = probe(f"http://127.0.0.1:{srv.server_address[1]}/readyz", "30")
    srv.shutdown()
    assert rc == 1 and took < 10
    assert "nothing fits this GPU" in err


def test_dead_server_process_fails_at_once() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # Nothing listens on port 9 (discard): only the PID check can end this early.
    rc, took, err = probe("http://127.0.0.1:9/readyz", "30", str(dead.pid))
    assert rc == 1 and took < 10
    assert "exited before it was ready" in err
