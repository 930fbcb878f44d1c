"""Cloud Storage stand-in: gcp-storage-emulator (PyPI) served in memory on a free port.

It speaks the Cloud Storage JSON API (https://cloud.google.com/storage/docs/json_api:
objects list/get with media download and Range, uploads, object metadata), and
google-cloud-storage talks to it unchanged when STORAGE_EMULATOR_HOST is set, so the
code under test runs its production client path; only the server differs. Import the
``gcs`` fixture into a test module: ``from standins.gcs_emulator import gcs``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

BUCKET = "models-bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator holding the empty bucket BUCKET; yields a storage.Client pointed at it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.cloud import storage

    yield storage.Client()
    server.stop()
