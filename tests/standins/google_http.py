"""A stand-in of Google's HTTP APIs at the transport level, for the modules' unit tests.

The project's modules run for real (`main()`, google-auth, requests) with only the HTTP
transport replaced: `gcp_rest.transport_adapter` returns a FakeTransport (a requests adapter)
that answers from a script of responses shaped like Google's documented API responses
(errors in the shape of https://cloud.google.com/apis/design/errors), and records every call
so tests can assert which calls were (or were not) made. For a stateful stand-in with
Google's rules, see fake_gcp.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters

# Module arguments that authenticate with a ready-made access token (no token exchange).
AUTH = {"project": "my-voice-project", "auth_kind": "accesstoken", "access_token": "ya29.test-token"}


class FakeTransport(requests.adapters.BaseAdapter):
    """A requests transport answering from scripted routes; every call is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def add(self, method: str, pattern: str, status: int = 200, body: Any = None,
            times: int | None = None, handler: Callable[[requests.PreparedRequest], tuple[int, Any]] | None = None) -> None:
        """Answer METHOD URL~pattern with (status, body); `times` limits how often (then later routes match)."""
        self.routes.append({"method": method, "re": re.compile(pattern), "status": status, "body": body,
                            "times": times, "handler": handler})

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw  # form-encoded (the OAuth token exchange)
        self.calls.append({"method": request.method, "url": request.url, "body": body,
                           "auth": request.headers.get("Authorization", "")})
        for route in self.routes:
            if route["method"] != request.method or not route["re"].search(str(request.url)):
                continue
            if route["times"] is not None:
                if route["times"] <= 0:
                    continue
                route["times"] -= 1
            status, payload = route["handler"](request) if route["handler"] else (route["status"], route["body"])
            return response(request, status, payload)
        raise AssertionError(f"unexpected call {request.method} {request.url}")

    def close(self) -> None:
        pass

    def writes(self) -> list[dict[str, Any]]:
        """Calls that would change something (anything but GET, and the read-only getIamPolicy POST)."""
        return [c for c in self.calls if c["method"] != "GET" and not c["url"].endswith(":getIamPolicy")]


def response(request: requests.PreparedRequest, status: int, payload: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.request = request
    resp.url = str(request.url)
    resp.headers["Content-Type"] = "application/json"
    resp._content = json.dumps(payload).encode() if payload is not None else b""
    return resp


def google_error(code: int, status: str, message: str, reason: str = "", domain: str = "global",
                 info_reason: str = "", service: str = "") -> dict[str, Any]:
    """An error body in Google's documented JSON shape (errors[] and details[] ErrorInfo)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status,
                           "errors": [{"message": message, "domain": domain, "reason": reason or status.lower()}]}
    if info_reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": info_reason,
                           "domain": "googleapis.com", "metadata": {"service": service}}]
    return {"error": err}


