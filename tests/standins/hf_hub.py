"""A small Hugging Face Hub-protocol server for tests (stand-in for huggingface.co).

It speaks the three calls huggingface_hub makes for a model download: model info with
file metadata (``GET /api/models/{repo}/revision/{rev}?blobs=true``), and ``HEAD``/``GET``
on ``/{repo}/resolve/{rev}/{file}`` with ``Range`` support, and it answers like the Hub
does for a gated repo (``X-Error-Code: GatedRepo``) and a bad token (401). ``olah``
(PyPI) was considered first: it can serve local git mirrors offline, but it cannot
produce the Hub's gated-access and bad-token answers, nor serve a corrupted byte
stream, which are exactly the cases these tests are about.

The ``hub`` fixture serves a small PersonaPlex-shaped repository (``REPO_ID``, gated; the
token ``hf_good`` is granted, ``hf_not_granted`` is valid but not granted, any other is
rejected with 401). Import it into a test module: ``from standins.hf_hub import hub``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

import pytest


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    granted_tokens: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)  # serve flipped bytes for these
    # Drop the connection after this many bytes of each response (a flaky network).
    cut_after: dict[str, int] = field(default_factory=dict)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class HubFixture:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.valid_tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.range_starts: list[tuple[str, int]] = []  # (file, first byte) of ranged GETs
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def downloads(self, name: str | None = None) -> list[str]:
        """Paths of the GET requests on resolve URLs (file downloads)."""
        return [
            p
            for m, p in self.requests
            if m == "GET" and "/resolve/" in p and (name is None or p.endswith("/" + name))
        ]

    def start(self) -> None:
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _auth(self) -> tuple[bool, str | None]:
                header = self.headers.get("Authorization", "")
                token = header.removeprefix("Bearer ").strip() or None
                if token is not None and token not in fixture.valid_tokens:
                    self._error(401, "", "Invalid credentials in Authorization header")
                    return False, token
                return True, token

            def _error(self, code: int, error_code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(code)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                fixture.requests.append((self.command, path))
                ok, token = self._auth()
                if not ok:
                    return
                if path.startswith("/api/models/"):
                    rest = path[len("/api/models/") :]
                    repo_id, _, _rev = rest.partition("/revision/")
                    repo = fixture.repos.get(repo_id)
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    siblings = []
                    for name, data in sorted(repo.files.items()):
                        sib: dict[str, Any] = {"rfilename": name, "size": len(data)}
                        if name in repo.lfs:
                            sib["blobId"] = git_blob_sha1(b"pointer " + name.encode())
                            sib["lfs"] = {
                                "sha256": hashlib.sha256(data).hexdigest(),
                                "size": len(data),
                                "pointerSize": 134,
                            }
                        else:
                            sib["blobId"] = git_blob_sha1(data)
                        siblings.append(sib)
                    return self._json(
                        {
                            "id": repo_id,
                            "sha": repo.sha,
                            "siblings": siblings,
                            "gated": "manual" if repo.gated else False,
                        }
                    )
                if "/resolve/" not in path:
                    return self._error(404, "", "not found")
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                _rev, _, name = rest.partition("/")
                repo = fixture.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if repo.gated and token not in repo.granted_tokens:
                    code = 401 if token is None else 403
                    return self._error(code, "GatedRepo", "Access to this model is restricted")
                if name not in repo.files:
                    return self._error(404, "EntryNotFound", "Entry not found")
                data = repo.files[name]
                if name in repo.corrupt:
                    data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
                etag = (
                    hashlib.sha256(repo.files[name]).hexdigest()
                    if name in repo.lfs
                    else git_blob_sha1(repo.files[name])
                )
                start, end = 0, len(data) - 1
                rng = self.headers.get("Range")
                status = 200
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a or 0)
                    end = int(b) if b else len(data) - 1
                    status = 206
                    if self.command == "GET":
                        fixture.range_starts.append((name, start))
                chunk = data[start : end + 1]
                self.send_response(status)
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.command == "GET":
                    cut = repo.cut_after.get(name)
                    if cut is not None and len(chunk) > cut:
                        self.wfile.write(chunk[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(chunk)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


REPO_ID = "nvidia/personaplex-7b-v1"
# The files the real repository stores with Git LFS (the Hub publishes their sha256).
LFS = {
    "model.safetensors",
    "tokenizer-e351c8d8-checkpoint125.safetensors",
    "voices.tgz",
    "dist.tgz",
    "tokenizer_spm_32k_3.model",
}


def make_tgz(top: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def model_files() -> dict[str, bytes]:
    """A small stand-in for the PersonaPlex repository's file set."""
    rnd = os.urandom
    return {
        "model.safetensors": rnd(3 * 1024 * 1024 + 17),
        "tokenizer-e351c8d8-checkpoint125.safetensors": rnd(1024 * 1024),
        "tokenizer_spm_32k_3.model": rnd(5000),
        "config.json": json.dumps({"dep_q": 16}).encode(),
        "voices.tgz": make_tgz("voices", {"NATF0.pt": rnd(2000), "NATM1.pt": rnd(3000)}),
        "dist.tgz": make_tgz("dist", {"index.html": b"<html></html>", "assets/app.js": b"x"}),
    }


@pytest.fixture
def hub() -> Iterator[HubFixture]:
    fx = HubFixture()
    fx.valid_tokens = {"hf_good", "hf_not_granted"}
    fx.repos[REPO_ID] = FakeRepo(
        files=model_files(), lfs=set(LFS), gated=True, granted_tokens={"hf_good"}
    )
    fx.start()
    yield fx
    fx.stop()
