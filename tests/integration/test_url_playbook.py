"""`make url` (playbooks/url.yml): the URL, the token and the readiness, without waiting.

The voice server is stood in by a local HTTP server answering /readyz like the app
(200 when ready, 503 while the model loads; app/src/personaplex_server/routes); the host is
this machine (connection local) with a token file in a temporary config folder. What is
real: the playbook, find_vm.yml's no-op on an inventory that names the host, and the
voice_server role's message tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
TOKEN = "tok-ForTestsOnly-0123456789"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the control-node .venv")


def serve(status: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps({"status": "ready" if status == 200 else "loading"}).encode()
            self.send_response(status if self.path == "/readyz" else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def url_play(tmp_path: Path, port: int) -> str:
    config = tmp_path / "etc"
    config.mkdir(exist_ok=True)
    (config / "access-token").write_text(TOKEN + "\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    voice_servers:\n      hosts:\n"
                         "        srv: {ansible_connection: local, ansible_python_interpreter: python3}\n")
    extra = {"ansible_become": False, "voice_server_tls": False, "voice_server_port": port,
             "voice_server_config_dir": str(config), "voice_server_public_url": f"http://127.0.0.1:{port}"}
    proc = subprocess.run([str(PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / "url.yml"), "-e", json.dumps(extra)],
                          capture_output=True, text=True, check=False, timeout=180,
                          env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-1000:]
    assert "changed=0" in out.rsplit("PLAY RECAP", 1)[-1]
    return out


def test_url_shows_url_token_and_readiness(tmp_path: Path) -> None:
    for status, says in ((200, "Ready: /readyz answers 200."), (503, "Not ready yet (/readyz: 503)")):
        srv = serve(status)
        try:
            out = url_play(tmp_path, srv.server_address[1])
        finally:
            srv.shutdown()
        assert f"PersonaPlex voice server: http://127.0.0.1:{srv.server_address[1]}" in out
        assert f"Access token: {TOKEN}" in out
        assert says in out, out[-2000:]
