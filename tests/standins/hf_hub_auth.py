"""A stand-in of the Hugging Face Hub API for preflight's token and gated-model checks.

Like the Hub (https://huggingface.co/docs/hub/api): GET /api/whoami-v2 answers 200 with the
account for a valid token and 401 otherwise; HEAD on a file of a gated model answers 403
(X-Error-Code: GatedRepo) until the licence is accepted, then a 302 redirect to the storage.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

GOOD = "hf_GoodTokenForTests0123456789"
ACCEPTED = "hf_AcceptedLicenseToken987654321"


class Hub(BaseHTTPRequestHandler):
    """Request handler; serve it with ThreadingHTTPServer on 127.0.0.1:0."""

    def _token(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    def do_GET(self) -> None:
        if self.path == "/api/whoami-v2" and self._token() in (GOOD, ACCEPTED):
            body = json.dumps({"type": "user", "name": "alice"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        if self.path == "/nvidia/personaplex-7b-v1/resolve/main/config.json" and self._token() == ACCEPTED:
            self.send_response(302)
            self.send_header("Location", "https://cdn-lfs.example/config.json")
        else:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


