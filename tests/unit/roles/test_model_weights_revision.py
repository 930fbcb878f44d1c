"""The model revision is honoured whatever the source: the bucket copy's prefix names the
revision, so with `model_weights_source: auto` a new `model_weights_hf_revision` is not
served from a bucket holding an older one (the personaplex_weights module looks only under that prefix)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ANSIBLE = REPO / ".venv" / "bin" / "ansible"

pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="needs the control-node .venv")


def prefix(*extra: str) -> str:
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.debug", "-a", "var=model_weights_gcs_prefix",
         "-e", f"@{REPO / 'roles' / 'model_weights' / 'defaults' / 'main.yml'}", *extra],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json",
             "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return str(result["model_weights_gcs_prefix"])


def test_bucket_prefix_follows_the_revision() -> None:
    assert prefix() == "models/personaplex-7b-v1/main"
    assert prefix("-e", "model_weights_hf_revision=3f2a9c1") == "models/personaplex-7b-v1/3f2a9c1"
