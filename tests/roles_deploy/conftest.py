"""Fixtures for the model_weights helper tests: a Hub-protocol server and a GCS emulator."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "roles" / "model_weights" / "files" / "personaplex_weights.py"
sys.path.insert(0, str(Path(__file__).parent))

from hf_fixture import FakeRepo, HubFixture  # noqa: E402

REPO_ID = "nvidia/personaplex-7b-v1"


@pytest.fixture(scope="session")
def helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("personaplex_weights", HELPER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["personaplex_weights"] = mod
    spec.loader.exec_module(mod)
    return mod


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


LFS = {
    "model.safetensors",
    "tokenizer-e351c8d8-checkpoint125.safetensors",
    "voices.tgz",
    "dist.tgz",
    "tokenizer_spm_32k_3.model",
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """gcp-storage-emulator in memory; google-cloud-storage follows STORAGE_EMULATOR_HOST."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models-bucket")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.cloud import storage

    yield storage.Client()
    server.stop()


def run(helper: ModuleType, request: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """Call the helper exactly as Ansible does: JSON on stdin, JSON on stdout."""
    out = io.StringIO()
    rc = helper.main([], stdin=io.StringIO(json.dumps(request)), stdout=out)
    text = out.getvalue()
    return rc, json.loads(text), text
