"""gcp_fleet's boot script (roles/gcp_fleet/files/fleet-boot.py) against a local stand-in of the
metadata server and Secret Manager: it fetches the access token with the instance's identity."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from project import PROJECT as P
from project import REPO


def test_boot_script_fetches_the_token_with_the_instance_identity(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Metadata-Flavor", ""), self.headers.get("Authorization", "")))
            if self.path.endswith("/attributes/personaplex-secret"):
                body = f"projects/{P}/secrets/personaplex-access-token".encode()
            elif self.path.endswith("/service-accounts/default/token"):
                body = json.dumps({"access_token": "ya29.instance", "expires_in": 3599}).encode()
            elif self.path == f"/sm/projects/{P}/secrets/personaplex-access-token/versions/latest:access":
                body = json.dumps({"payload": {"data": base64.b64encode(b"client-token-123").decode()}}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    import pwd

    env = dict(os.environ, PERSONAPLEX_BOOT_METADATA_URL=f"{url}/md", PERSONAPLEX_BOOT_SECRETMANAGER_URL=f"{url}/sm",
               PERSONAPLEX_BOOT_CONFIG_DIR=str(tmp_path / "etc"), PERSONAPLEX_BOOT_USER=pwd.getpwuid(os.getuid()).pw_name,
               PERSONAPLEX_BOOT_RESTART="")
    script = REPO / "roles" / "gcp_fleet" / "files" / "fleet-boot.py"
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    server.shutdown()
    assert proc.returncode == 0, proc.stderr
    token = tmp_path / "etc" / "access-token"
    assert token.read_text() == "client-token-123" and token.stat().st_mode & 0o777 == 0o600
    key = tmp_path / "etc" / "tls" / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600 and "PRIVATE KEY" in key.read_text()
    assert (seen[0][1], seen[1][1]) == ("Google", "Google")  # metadata calls carry the flavor header
    assert seen[2][2] == "Bearer ya29.instance"  # Secret Manager is read as the instance's service account
    assert "client-token-123" not in proc.stdout + proc.stderr
