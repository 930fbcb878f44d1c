"""Behaviour of the personaplex_weights module (plugins/modules) against stand-in sources.

Hugging Face: standins.hf_hub (the Hub's HTTP protocol, gated answers included).
GCS: standins.gcs_emulator (gcp-storage-emulator; google-cloud-storage honours
STORAGE_EMULATOR_HOST). The module runs in-process as Ansible runs it (arguments through
AnsibleModule, the JSON result on stdout, exit status), so the no_log scrubbing of the
token is Ansible's own; only the servers at the other end differ.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import importlib.util
import io
import json
import os
import pwd
import stat
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from standins.gcs_emulator import gcs  # noqa: F401  (fixture)
from standins.hf_hub import REPO_ID, HubFixture, hub, make_tgz, model_files  # noqa: F401

REPO = Path(__file__).resolve().parents[4]
MODULE = REPO / "plugins" / "modules" / "personaplex_weights.py"
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="session")
def helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("personaplex_weights", MODULE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["personaplex_weights"] = mod
    spec.loader.exec_module(mod)
    return mod


def run(helper: ModuleType, args: dict[str, Any], check: bool = False) -> tuple[int, dict[str, Any], str]:
    """Run the module as Ansible does: its arguments in, one JSON result and an exit status out."""
    from ansible.module_utils import basic

    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}
    basic._ANSIBLE_ARGS = json.dumps(payload).encode()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            helper.main()
    finally:
        basic._ANSIBLE_ARGS = None
    text = out.getvalue()
    return int(exited.value.code or 0), json.loads(text.strip().splitlines()[-1]), text


def hf_request(hub: HubFixture, dest: Path, token: str | None = "hf_good", **kw: Any) -> dict:
    req = {
        "source": "huggingface",
        "dest": str(dest),
        "files": [],
        "owner": USER,
        "group": GROUP,
        "min_free_gb": 0,
        "hf_repo": REPO_ID,
        "hf_revision": "main",
        "hf_endpoint": hub.endpoint,
        "hf_token": token,
    }
    req.update(kw)
    return req


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_hf_fresh_download_verifies_unpacks_and_records(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    rc, out, text = run(helper, hf_request(hub, dest))
    assert rc == 0, out
    assert out["changed"] is True
    src = hub.repos[REPO_ID].files
    for name, data in src.items():
        assert (dest / name).read_bytes() == data
        assert out["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["bytes"] == sum(len(d) for d in src.values())
    assert out["revision"] == hub.repos[REPO_ID].sha  # the commit "main" resolved to
    # no_log: the token is in neither the result nor the echoed arguments
    assert "hf_good" not in text
    assert out["invocation"]["module_args"]["hf_token"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert (dest / "voices" / "NATF0.pt").is_file()
    assert (dest / "dist" / "assets" / "app.js").read_bytes() == b"x"
    assert (dest / ".personaplex-manifest.json").is_file()
    assert not (dest / ".staging").exists()
    for p in [dest, *dest.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & stat.S_IWOTH, p
        assert mode & 0o007 == 0, p


def test_hf_rerun_is_cheap_and_unchanged(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    assert run(helper, hf_request(hub, dest))[0] == 0
    before = len(hub.downloads())
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0 and out["changed"] is False, out
    assert len(hub.downloads()) == before


def test_hf_truncated_file_refetched_alone(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    run(helper, hf_request(hub, dest))
    with (dest / "model.safetensors").open("r+b") as fh:
        fh.truncate(1000)
    hub.requests.clear()
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0 and out["changed"] is True
    assert hub.downloads() and all(p.endswith("/model.safetensors") for p in hub.downloads())
    want = hub.repos[REPO_ID].files["model.safetensors"]
    assert (dest / "model.safetensors").read_bytes() == want


def test_deleted_voice_is_restored_from_archive(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    run(helper, hf_request(hub, dest))
    (dest / "voices" / "NATM1.pt").unlink()
    hub.requests.clear()
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0 and out["changed"] is True
    assert (dest / "voices" / "NATM1.pt").is_file()
    assert hub.downloads() == []  # the archive itself was intact
    assert any("voices.tgz" in a for a in out["actions"])


def test_deep_verify_finds_same_size_corruption(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    run(helper, hf_request(hub, dest))
    p = dest / "tokenizer-e351c8d8-checkpoint125.safetensors"
    st = p.stat()
    with p.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 8)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the edit from the cheap check
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0 and out["changed"] is False  # size + mtime unchanged: cheap check passes
    rc, out, _ = run(helper, hf_request(hub, dest, verify="deep"))
    assert rc == 0 and out["changed"] is True
    assert (
        sha(p)
        == hashlib.sha256(
            hub.repos[REPO_ID].files["tokenizer-e351c8d8-checkpoint125.safetensors"]
        ).hexdigest()
    )


def test_gated_not_accepted_says_accept_license(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    rc, out, text = run(helper, hf_request(hub, tmp_path / "m", token="hf_not_granted"))
    assert rc == 1
    assert "accept the license at https://huggingface.co/nvidia/personaplex-7b-v1" in out["msg"]
    assert "then rerun" in out["msg"]
    assert "hf_not_granted" not in text
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_no_token_for_gated_model_explains(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    rc, out, _ = run(helper, hf_request(hub, tmp_path / "m", token=None))
    assert rc == 1
    assert "HF_TOKEN" in out["msg"] and "accept the license" in out["msg"]


def test_wrong_token_rejected_and_never_printed(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    rc, out, text = run(helper, hf_request(hub, tmp_path / "m", token="hf_wrong_secret"))
    assert rc == 1
    assert "401" in out["msg"] and "token" in out["msg"]
    assert "hf_wrong_secret" not in text


def test_corrupt_download_never_reaches_final_path(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    run(helper, hf_request(hub, dest))
    good = (dest / "model.safetensors").read_bytes()
    (dest / "model.safetensors").unlink()
    hub.repos[REPO_ID].corrupt = {"model.safetensors"}
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 1 and "sha256 mismatch" in out["msg"] and "rerun" in out["msg"]
    assert not (dest / "model.safetensors").exists()
    # the other files stayed in place and verified
    assert (dest / "config.json").is_file()
    hub.repos[REPO_ID].corrupt = set()
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0 and (dest / "model.safetensors").read_bytes() == good


def test_full_disk_stops_before_downloading(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    rc, out, _ = run(helper, hf_request(hub, tmp_path / "m", min_free_gb=10**6))
    assert rc == 1 and "not enough disk space" in out["msg"]
    assert hub.downloads() == []


def test_check_mode_reports_without_changing(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    run(helper, hf_request(hub, dest))
    (dest / "config.json").unlink()
    rc, out, _ = run(helper, hf_request(hub, dest), check=True)
    assert rc == 0 and out["changed"] is True
    assert any("config.json" in a for a in out["actions"])
    assert not (dest / "config.json").exists()


def test_check_mode_on_a_fresh_host_downloads_nothing(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    rc, out, _ = run(helper, hf_request(hub, dest), check=True)
    assert rc == 0 and out["changed"] is True, out
    assert out["actions"] == [f"create {dest} and fetch everything"]
    assert not dest.exists()
    assert hub.downloads() == []


def test_unsafe_archive_is_refused(helper: ModuleType, hub: HubFixture, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.pt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    hub.repos[REPO_ID].files["voices.tgz"] = buf.getvalue()
    rc, out, _ = run(helper, hf_request(hub, tmp_path / "m"))
    assert rc == 1 and "unsafe member" in out["msg"]
    assert not (tmp_path / "escape.pt").exists()


# ------------------------------------------------------------------------------ GCS


def seed_bucket(client: Any, prefix: str, files: dict[str, bytes]) -> None:
    bucket = client.bucket("models-bucket")
    for name, data in files.items():
        blob = bucket.blob(f"{prefix}/{name}")
        blob.metadata = {"sha256": hashlib.sha256(data).hexdigest()}
        blob.upload_from_string(data)


def gcs_request(dest: Path, **kw: Any) -> dict:
    req = {
        "source": "gcs",
        "dest": str(dest),
        "files": sorted(model_files()),
        "owner": USER,
        "group": GROUP,
        "min_free_gb": 0,
        "parallel": 3,
        "chunk_mb": 1,
        "gcs_bucket": "models-bucket",
        "gcs_prefix": "personaplex",
    }
    req.update(kw)
    return req


def test_gcs_parallel_chunked_download(
    helper: ModuleType, gcs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = model_files()
    seed_bucket(gcs, "personaplex", files)
    from google.cloud.storage import Blob

    ranges: list[tuple[str, int]] = []
    real = Blob.download_as_bytes

    def spy(self: Blob, *a: Any, **kw: Any) -> bytes:
        ranges.append((self.name, kw.get("start", 0)))
        return real(self, *a, **kw)

    monkeypatch.setattr(Blob, "download_as_bytes", spy)
    dest = tmp_path / "model"
    rc, out, _ = run(helper, gcs_request(dest))
    assert rc == 0, out
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    # model.safetensors (3 MiB + 17 bytes) came in 4 ranged 1 MiB requests
    assert sorted(s for n, s in ranges if n.endswith("model.safetensors")) == [
        0,
        1 << 20,
        2 << 20,
        3 << 20,
    ]
    assert (dest / "voices" / "NATF0.pt").is_file()
    rc, out, _ = run(helper, gcs_request(dest))
    assert rc == 0 and out["changed"] is False


def test_gcs_resumes_interrupted_download(
    helper: ModuleType, gcs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = model_files()
    seed_bucket(gcs, "personaplex", files)
    dest = tmp_path / "model"
    staging = dest / ".staging"
    staging.mkdir(parents=True)
    data = files["model.safetensors"]
    part = staging / "model.safetensors.part"
    part.write_bytes(data[: 2 << 20] + b"\0" * (len(data) - (2 << 20)))
    (staging / "model.safetensors.part.chunks").write_text("0\n1\n")
    from google.cloud.storage import Blob

    starts: list[int] = []
    real = Blob.download_as_bytes

    def spy(self: Blob, *a: Any, **kw: Any) -> bytes:
        if self.name.endswith("model.safetensors"):
            starts.append(kw["start"])
        return real(self, *a, **kw)

    monkeypatch.setattr(Blob, "download_as_bytes", spy)
    rc, out, _ = run(helper, gcs_request(dest))
    assert rc == 0, out
    assert sorted(starts) == [2 << 20, 3 << 20]  # chunks 0 and 1 were not fetched again
    assert (dest / "model.safetensors").read_bytes() == data


def test_gcs_missing_object_explained(helper: ModuleType, gcs: Any, tmp_path: Path) -> None:
    files = model_files()
    del files["dist.tgz"]
    seed_bucket(gcs, "personaplex", files)
    rc, out, _ = run(helper, gcs_request(tmp_path / "m"))
    assert rc == 1 and "dist.tgz" in out["msg"] and "model_weights_gcs_upload" in out["msg"]
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_hf_download_uploaded_to_bucket_then_gcs_serves_it(
    helper: ModuleType, hub: HubFixture, gcs: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "first"
    upload = {"gcs_bucket": "models-bucket", "gcs_prefix": "personaplex", "gcs_upload": True}
    rc, out, _ = run(helper, hf_request(hub, dest, **upload))
    assert rc == 0, out
    assert sum("upload" in a for a in out["actions"]) == len(model_files())
    rc, out, _ = run(helper, hf_request(hub, dest, **upload))
    assert rc == 0 and out["changed"] is False
    rc, out, _ = run(helper, gcs_request(tmp_path / "second"))
    assert rc == 0, out
    assert (tmp_path / "second" / "model.safetensors").read_bytes() == (
        dest / "model.safetensors"
    ).read_bytes()


# ------------------------------------------------------------------------------ local


def test_local_source_copies_and_checks(helper: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, data in model_files().items():
        (src / name).write_bytes(data)
    (src / "voices.tgz").write_bytes(make_tgz("voices", {"A.pt": b"a"}))
    req = {
        "source": "local",
        "dest": str(tmp_path / "m"),
        "files": [],
        "owner": USER,
        "group": GROUP,
        "min_free_gb": 0,
        "local_path": str(src),
    }
    rc, out, _ = run(helper, req)
    assert rc == 0 and out["changed"]
    assert (tmp_path / "m" / "voices" / "A.pt").read_bytes() == b"a"
    rc, out, _ = run(helper, req)
    assert rc == 0 and not out["changed"], out
    req["local_path"] = str(tmp_path / "nope")
    rc, out, _ = run(helper, req)
    assert rc == 1 and "does not exist" in out["msg"]


# ------------------------------------------------------------------------------ auto


def test_auto_uses_hub_first_then_the_bucket(
    helper: ModuleType, hub: HubFixture, gcs: Any, tmp_path: Path
) -> None:
    bucket = {"gcs_bucket": "models-bucket", "gcs_prefix": "personaplex", "gcs_upload": True}
    first = hf_request(hub, tmp_path / "first", source="auto", **bucket)
    rc, out, _ = run(helper, first)
    assert rc == 0, out
    assert hub.downloads()  # the bucket was empty: the Hub served the files
    assert any(a.startswith("upload") for a in out["actions"])
    hub.requests.clear()
    rc, out, _ = run(helper, first)
    assert rc == 0 and out["changed"] is False  # a rerun neither flips source nor uploads
    rebuilt = hf_request(hub, tmp_path / "rebuilt", source="auto", **bucket)
    rc, out, _ = run(helper, rebuilt)
    assert rc == 0, out
    assert hub.downloads() == []  # the rebuilt VM fetched everything from the bucket
    assert (tmp_path / "rebuilt" / "model.safetensors").read_bytes() == (
        tmp_path / "first" / "model.safetensors"
    ).read_bytes()


def test_hf_interrupted_download_resumes_on_the_next_run(
    helper: ModuleType, hub: HubFixture, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    repo = hub.repos[REPO_ID]
    # huggingface_hub writes 10 MiB chunks: a 24 MiB file cut after 12 MiB leaves 10 MiB.
    repo.files["model.safetensors"] = os.urandom(24 << 20)
    repo.cut_after = {"model.safetensors": 12 << 20}
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 1 and "rerun to resume" in out["msg"], out
    assert not (dest / "model.safetensors").exists()  # nothing partial in the final path
    assert (dest / "config.json").is_file()  # the files that did arrive were kept
    hub.range_starts.clear()
    repo.cut_after = {}
    rc, out, _ = run(helper, hf_request(hub, dest))
    assert rc == 0, out
    starts = [s for n, s in hub.range_starts if n == "model.safetensors"]
    assert starts and starts[0] > 0  # picked up where the last run stopped
    assert (dest / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
