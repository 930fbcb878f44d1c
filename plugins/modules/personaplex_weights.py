#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: fetch, verify and unpack the PersonaPlex model files into one folder.

Run by the ``model_weights`` role on the target with the server venv's Python (the task
sets ``ansible_python_interpreter``), which has huggingface_hub and google-cloud-storage.
Sources: ``huggingface`` (huggingface_hub), ``gcs`` (google-cloud-storage with the
machine's credentials; STORAGE_EMULATOR_HOST is honoured for tests), ``local`` (a
folder on the target) and ``tiny`` (personaplex_server.tiny.generate, a random test
model). Every file lands in a staging folder first, is checked against the size and
hash the source publishes, and only then is renamed into place, so the model folder
never holds a partial or corrupt file. A manifest (``.personaplex-manifest.json``)
records what was verified; reruns compare sizes and modification times against it
and re-fetch only what is missing or damaged. ``verify: deep`` re-hashes everything.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: personaplex_weights
short_description: Fetch, verify and unpack the PersonaPlex model files
description:
  - Fetches the model files from Hugging Face, a Cloud Storage bucket, a folder on the
    target, or generates a tiny random PersonaPlex-shaped test model.
  - Every file is staged in C(dest/.staging), checked against the size and hash the
    source publishes (Hub LFS sha256 or git blob sha1; GCS size, crc32c, md5 and the
    sha256 kept in the object metadata), then renamed into place, so I(dest) never holds
    a partial or corrupt file. Interrupted downloads resume on the next run.
  - A manifest (C(.personaplex-manifest.json)) records what was verified; a rerun compares
    size and modification time with it and re-fetches only what is missing or damaged.
  - Free disk space is checked before any download.
  - C(voices.tgz) and C(dist.tgz) are unpacked into C(voices/) and C(dist/).
  - Files end up 0640 and folders 0750, owned by I(owner) and I(group).
  - Runs on the target and needs huggingface_hub and google-cloud-storage there (the
    server venv built by the python_venv role has both); set C(ansible_python_interpreter)
    to that venv's Python.
  - Check mode reports what would be fetched, unpacked or uploaded without doing it.
options:
  source:
    description:
      - Where the files come from.
      - C(auto) takes the GCS bucket when it holds every file with the sha256 this module
        stores there on upload, else Hugging Face.
    type: str
    required: true
    choices: [auto, huggingface, gcs, local, tiny]
  dest:
    description: Folder the files are put in (created 0750 when missing).
    type: path
    required: true
  files:
    description: File names to fetch; empty means every file the source has (C(tiny) always takes all).
    type: list
    elements: str
    default: []
  owner:
    description: Owner of the files and folders; empty leaves the owner as it is.
    type: str
  group:
    description: Group of the files and folders; empty leaves the group as it is.
    type: str
  verify:
    description: C(fast) compares size and modification time with the manifest; C(deep) re-hashes every file.
    type: str
    choices: [fast, deep]
    default: fast
  min_free_gb:
    description: Free disk space (GiB) kept in reserve on top of what the download needs.
    type: float
    default: 1
  parallel:
    description: Parallel downloads (files for Hugging Face, byte ranges for GCS).
    type: int
    default: 4
  chunk_mb:
    description: Size of one GCS byte range (MiB).
    type: int
    default: 64
  unpack:
    description: Unpack C(voices.tgz) and C(dist.tgz).
    type: bool
    default: true
  hf_repo:
    description: Hugging Face repository (C(huggingface) and C(auto) sources).
    type: str
  hf_revision:
    description: Branch, tag or commit; the files of the commit it resolves to are fetched.
    type: str
    default: main
  hf_endpoint:
    description: Hub endpoint (a mirror); empty for huggingface.co.
    type: str
  hf_token:
    description: Hugging Face read token of an account that accepted the model's license. Never logged.
    type: str
  gcs_bucket:
    description: Bucket holding the files (C(gcs) and C(auto) sources, and I(gcs_upload)).
    type: str
  gcs_prefix:
    description: Object prefix in the bucket.
    type: str
  gcs_project:
    description: Project of the storage client; empty for the machine's own.
    type: str
  gcs_upload:
    description: After files came from Hugging Face, copy them to I(gcs_bucket)/I(gcs_prefix) so a rebuilt machine fetches from there.
    type: bool
    default: false
  local_path:
    description: Folder on the target laid out like the Hugging Face repository (C(local) source).
    type: path
  tiny_seed:
    description: Random seed of the tiny test model.
    type: int
    default: 0
  tiny_cache_dir:
    description: Where the tiny model is generated once on the target.
    type: path
    default: /var/cache/personaplex/tiny-model
notes:
  - Supports check mode.
  - The token travels in the module's arguments (never argv) and is scrubbed from results and logs.
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Fetch the model files from Hugging Face with the server venv's Python
  personaplex_weights:
    source: huggingface
    dest: /var/lib/personaplex/model
    owner: personaplex
    group: personaplex
    files: [model.safetensors, tokenizer_spm_32k_3.model, voices.tgz, dist.tgz, config.json]
    hf_repo: nvidia/personaplex-7b-v1
    hf_revision: main
    hf_token: "{{ hf_token }}"
  vars:
    ansible_python_interpreter: /opt/personaplex/venv/bin/python

- name: Fetch them from the project's bucket, 8 byte ranges at a time
  personaplex_weights:
    source: gcs
    dest: /var/lib/personaplex/model
    gcs_bucket: my-project-personaplex-weights
    gcs_prefix: models/personaplex-7b-v1/main
    parallel: 8
  vars:
    ansible_python_interpreter: /opt/personaplex/venv/bin/python
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done), one line each.
  type: list
  elements: str
  returned: always
  sample: ["fetch model.safetensors", "unpack voices.tgz into voices/"]
files:
  description: Every verified file in I(dest) with its size and sha256.
  type: dict
  returned: when the source was listed
  sample: {"config.json": {"size": 147, "sha256": "3c1f..."}}
bytes:
  description: Total size of the files in I(files).
  type: int
  returned: when the source was listed
source:
  description: The source as recorded in the manifest.
  type: dict
  returned: when the source was listed
  sample: {"kind": "huggingface", "repo": "nvidia/personaplex-7b-v1", "revision": "main"}
revision:
  description: The Hugging Face commit the revision resolved to, when the Hub was the source; null otherwise.
  type: str
  returned: when the source was listed
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ansible.module_utils.basic import AnsibleModule

MANIFEST = ".personaplex-manifest.json"
STAGING = ".staging"
MANIFEST_VERSION = 1
CHUNK = 8 * 1024 * 1024
GIB = 1024**3
ARCHIVES = {"voices.tgz": "voices", "dist.tgz": "dist"}
HF_LICENSE_HINT = "accept the license at https://huggingface.co/{repo} then rerun"


class WeightsError(Exception):
    """An error whose message tells the user what to do."""


@dataclass
class Remote:
    """What the source says a file should be."""

    name: str
    size: int
    sha256: str | None = None  # hex
    git_sha1: str | None = None  # hex, HF non-LFS files
    crc32c: str | None = None  # base64, GCS
    md5: str | None = None  # base64, GCS
    ref: Any = None  # source-specific handle (GCS blob, local path)


@dataclass
class Request:
    source: str
    dest: Path
    files: list[str]
    owner: str | None = None
    group: str | None = None
    verify: str = "fast"
    check: bool = False
    min_free_bytes: int = GIB
    parallel: int = 4
    chunk_bytes: int = 64 * 1024 * 1024
    unpack: bool = True
    hf: dict[str, Any] = field(default_factory=dict)
    gcs: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# hashing helpers
# --------------------------------------------------------------------------------------


def _crc32c_hasher() -> Any:
    import google_crc32c  # shipped with google-cloud-storage

    return google_crc32c.Checksum()


def hash_file(path: Path, want: Remote | None = None) -> dict[str, str]:
    """sha256 of a file, plus the digests the source publishes for comparison."""
    sha = hashlib.sha256()
    extra: dict[str, Any] = {}
    if want is not None and want.git_sha1 and not want.sha256:
        extra["git_sha1"] = hashlib.sha1(usedforsecurity=False)
        extra["git_sha1"].update(f"blob {path.stat().st_size}\0".encode())
    if want is not None and want.md5:
        extra["md5"] = hashlib.md5(usedforsecurity=False)
    if want is not None and want.crc32c:
        extra["crc32c"] = _crc32c_hasher()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            sha.update(block)
            for h in extra.values():
                h.update(block)
    out = {"sha256": sha.hexdigest()}
    if "git_sha1" in extra:
        out["git_sha1"] = extra["git_sha1"].hexdigest()
    if "md5" in extra:
        out["md5"] = base64.b64encode(extra["md5"].digest()).decode()
    if "crc32c" in extra:
        out["crc32c"] = base64.b64encode(extra["crc32c"].digest()).decode()
    return out


def check_digests(name: str, got: dict[str, str], want: Remote) -> None:
    for key in ("sha256", "git_sha1", "md5", "crc32c"):
        expected = getattr(want, key)
        if expected and key in got and got[key] != expected:
            raise WeightsError(
                f"{name}: {key} mismatch after download (expected {expected}, got {got[key]}); "
                "the download was corrupted or the source changed while downloading. "
                "Nothing was put in place; rerun to fetch it again."
            )


# --------------------------------------------------------------------------------------
# sources: each returns {name: Remote} and can fetch one file into a staging path
# --------------------------------------------------------------------------------------


class Source:
    kind = "?"

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def list(self, names: list[str]) -> dict[str, Remote]:
        raise NotImplementedError

    def fetch(self, remote: Remote, part: Path) -> None:
        raise NotImplementedError


class HuggingFaceSource(Source):
    kind = "huggingface"

    def __init__(self, cfg: dict[str, Any], staging: Path) -> None:
        self.repo = cfg["repo"]
        self.revision = cfg.get("revision") or "main"
        self.endpoint = cfg.get("endpoint") or None
        self.token = cfg.get("token") or None
        self.staging = staging
        self.commit: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "repo": self.repo, "revision": self.revision}

    def _explain(self, exc: Exception) -> WeightsError:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        hint = HF_LICENSE_HINT.format(repo=self.repo)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, GatedRepoError) and not self.token:
            return WeightsError(
                f"{self.repo} is a gated model and no Hugging Face token was given "
                f"(HTTP {status}). Create a read token at https://huggingface.co/settings/tokens "
                "and set HF_TOKEN (or the vault variable hf_token) with the "
                f"account that will {hint}."
            )
        if isinstance(exc, GatedRepoError):
            return WeightsError(
                f"Hugging Face refused access to the gated model {self.repo} (HTTP {status}): "
                "the token's account has not been granted access yet: log in to that "
                f"account, {hint}."
            )
        if isinstance(exc, RepositoryNotFoundError):
            if not self.token:
                return WeightsError(
                    f"Hugging Face did not let an anonymous client see {self.repo} "
                    f"(HTTP {status}): "
                    "it is a gated model, so a token is needed. Create a read token at "
                    "https://huggingface.co/settings/tokens, set HF_TOKEN (or the vault "
                    f"variable hf_token), {hint}."
                )
            return WeightsError(
                f"Hugging Face says {self.repo} does not exist or this token may not read it "
                f"(HTTP {status}): check the repository name, then {hint}."
            )
        if isinstance(exc, RevisionNotFoundError):
            return WeightsError(f"revision {self.revision!r} of {self.repo} does not exist")
        if isinstance(exc, EntryNotFoundError):
            return WeightsError(f"a requested file is not in {self.repo}@{self.revision}: {exc}")
        if isinstance(exc, HfHubHTTPError) and status == 401:
            return WeightsError(
                "Hugging Face rejected the token (HTTP 401: invalid or expired). Create a new "
                "read token at https://huggingface.co/settings/tokens, put it in HF_TOKEN or the "
                "vault variable hf_token, and rerun."
            )
        if isinstance(exc, HfHubHTTPError) and status == 403:
            return WeightsError(
                "Hugging Face refused the download (HTTP 403). Use a token with read "
                f"access; {hint}."
            )
        return WeightsError(f"Hugging Face request failed: {exc}; check the network and rerun")

    def list(self, names: list[str]) -> dict[str, Remote]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        try:
            info = api.model_info(self.repo, revision=self.revision, files_metadata=True)
        except HfHubHTTPError as exc:
            raise self._explain(exc) from None
        self.commit = info.sha
        out: dict[str, Remote] = {}
        for sib in info.siblings or []:
            if names and sib.rfilename not in names:
                continue
            lfs = sib.lfs
            out[sib.rfilename] = Remote(
                name=sib.rfilename,
                size=int(lfs.size if lfs else (sib.size or 0)),
                sha256=lfs.sha256 if lfs else None,
                git_sha1=None if lfs else sib.blob_id,
            )
        return out

    def fetch(self, remote: Remote, part: Path) -> None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError

        # hf_hub_download keeps an .incomplete file under local_dir/.cache and resumes it.
        dl_dir = self.staging / "hf"
        try:
            got = hf_hub_download(
                self.repo,
                remote.name,
                revision=self.commit or self.revision,
                local_dir=dl_dir,
                token=self.token or False,
                endpoint=self.endpoint,
            )
        except HfHubHTTPError as exc:
            raise self._explain(exc) from None
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors
            raise WeightsError(
                f"downloading {remote.name} from Hugging Face was interrupted "
                f"({type(exc).__name__}); rerun to resume where it stopped"
            ) from None
        os.replace(got, part)


class GcsSource(Source):
    kind = "gcs"

    def __init__(self, cfg: dict[str, Any], parallel: int, chunk: int) -> None:
        self.bucket_name = cfg["bucket"]
        self.prefix = (cfg.get("prefix") or "").strip("/")
        self.project = cfg.get("project") or None
        self.parallel = max(1, parallel)
        self.chunk = max(1024 * 1024, chunk)
        self._client: Any = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "bucket": self.bucket_name, "prefix": self.prefix}

    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client(project=self.project)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _explain(self, exc: Exception) -> WeightsError:
        code = getattr(exc, "code", None)
        if code == 404:
            return WeightsError(
                f"gs://{self.bucket_name} does not exist or is not reachable (HTTP 404): create "
                "it (the provision play does) or fix model_weights_gcs_bucket"
            )
        if code in (401, 403):
            return WeightsError(
                f"access to gs://{self.bucket_name} was refused (HTTP {code}): give the VM's "
                "service account roles/storage.objectUser on the bucket (provision grants it; "
                "objectViewer to read only)"
            )
        return WeightsError(f"Cloud Storage request failed: {exc}; check the network and rerun")

    def list(self, names: list[str]) -> dict[str, Remote]:
        from google.api_core import exceptions as gexc

        out: dict[str, Remote] = {}
        try:
            blobs = list(self.client().list_blobs(self.bucket_name, prefix=self._key("")))
        except gexc.GoogleAPIError as exc:
            raise self._explain(exc) from None
        for blob in blobs:
            name = blob.name[len(self._key("")) :]
            if not name or (names and name not in names):
                continue
            out[name] = Remote(
                name=name,
                size=int(blob.size or 0),
                sha256=(blob.metadata or {}).get("sha256"),
                crc32c=blob.crc32c,
                md5=blob.md5_hash,
                ref=blob,
            )
        missing = [n for n in names if n not in out]
        if missing:
            raise WeightsError(
                f"not in gs://{self.bucket_name}/{self._key('')}: {', '.join(missing)}. Upload "
                "them (model_weights_gcs_upload: true with the huggingface source does it once) "
                "or fix model_weights_gcs_prefix"
            )
        return out

    def fetch(self, remote: Remote, part: Path) -> None:
        """Ranged, parallel, resumable: finished chunks are listed in PART.chunks."""
        from google.api_core import exceptions as gexc

        blob = remote.ref
        size = remote.size
        done_file = part.with_name(part.name + ".chunks")
        done: set[int] = set()
        if part.exists() and done_file.exists():
            done = {int(x) for x in done_file.read_text().split() if x.strip().isdigit()}
        else:
            part.unlink(missing_ok=True)
            done_file.unlink(missing_ok=True)
        with part.open("ab"):
            pass
        os.truncate(part, size)
        n_chunks = max(1, -(-size // self.chunk))
        todo = [i for i in range(n_chunks) if i not in done]
        fd = os.open(part, os.O_WRONLY)
        try:
            with done_file.open("a") as log:

                def one(i: int) -> int:
                    start = i * self.chunk
                    end = min(size, start + self.chunk) - 1
                    if end < start:
                        return i
                    data = blob.download_as_bytes(
                        client=self.client(),
                        start=start,
                        end=end,
                        raw_download=True,
                        checksum=None,
                    )
                    if len(data) != end - start + 1:
                        raise WeightsError(
                            f"{remote.name}: short read at bytes {start}-{end}; rerun to resume"
                        )
                    os.pwrite(fd, data, start)
                    return i

                with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
                    for i in pool.map(one, todo):
                        log.write(f"{i}\n")
                        log.flush()
        except gexc.GoogleAPIError as exc:
            raise self._explain(exc) from None
        except OSError as exc:  # requests' connection errors
            raise WeightsError(
                f"downloading {remote.name} from gs://{self.bucket_name} was interrupted "
                f"({type(exc).__name__}); rerun to resume where it stopped"
            ) from None
        finally:
            os.fsync(fd)
            os.close(fd)
        done_file.unlink(missing_ok=True)


class LocalSource(Source):
    kind = "local"

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path)}

    def list(self, names: list[str]) -> dict[str, Remote]:
        if not self.path.is_dir():
            raise WeightsError(f"local model folder {self.path} does not exist on the target")
        published: dict[str, Any] = {}
        sums = self.path / MANIFEST
        if sums.is_file():
            published = json.loads(sums.read_text()).get("files", {})
        wanted = names or sorted(
            str(p.relative_to(self.path))
            for p in self.path.rglob("*")
            if p.is_file() and not p.name.startswith(".") and STAGING not in p.parts
        )
        out: dict[str, Remote] = {}
        missing = []
        for name in wanted:
            p = self.path / name
            if not p.is_file():
                missing.append(name)
                continue
            meta = published.get(name, {})
            out[name] = Remote(name=name, size=p.stat().st_size, sha256=meta.get("sha256"), ref=p)
        if missing:
            raise WeightsError(f"missing in local model folder {self.path}: {', '.join(missing)}")
        return out

    def fetch(self, remote: Remote, part: Path) -> None:
        shutil.copyfile(remote.ref, part)


class TinySource(LocalSource):
    """A random PersonaPlex-shaped model generated once into a cache folder."""

    kind = "tiny"

    def __init__(self, cfg: dict[str, Any], check: bool) -> None:
        self.seed = int(cfg.get("seed", 0))
        cache = Path(cfg.get("cache_dir") or "/var/cache/personaplex/tiny-model")
        super().__init__(str(cache / f"seed-{self.seed}"))
        self.check = check

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed}

    def list(self, names: list[str]) -> dict[str, Remote]:
        if not (self.path / MANIFEST).is_file() and not self.check:
            self._generate()
        if not self.path.is_dir():
            return {}
        return super().list([])

    def _generate(self) -> None:
        try:
            from personaplex_server import tiny
        except ImportError as exc:
            raise WeightsError(
                f"the tiny model needs the personaplex-server package in this Python ({exc}); "
                "run the python_venv role first"
            ) from None
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tiny.generate(tmp, seed=self.seed)
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": hash_file(p)["sha256"]}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------
# the sync itself
# --------------------------------------------------------------------------------------


def load_manifest(dest: Path) -> dict[str, Any]:
    try:
        data = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION, "files": {}, "unpacked": {}}
    if data.get("version") != MANIFEST_VERSION:
        return {"version": MANIFEST_VERSION, "files": {}, "unpacked": {}}
    data.setdefault("files", {})
    data.setdefault("unpacked", {})
    return data


def write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.chmod(tmp, 0o640)
    os.replace(tmp, dest / MANIFEST)


def file_state(path: Path, rec: dict[str, Any] | None, remote: Remote | None, deep: bool) -> str:
    """'ok', 'missing', 'damaged' or 'stale' (source changed) for one final file."""
    if not path.is_file():
        return "missing"
    st = path.stat()
    if remote is not None and st.st_size != remote.size:
        return "damaged"
    if rec is None:
        return "unknown"
    if rec.get("size") != st.st_size:
        return "damaged"
    if remote is not None and remote.sha256 and rec.get("sha256") != remote.sha256:
        return "stale"
    if deep or rec.get("mtime_ns") != st.st_mtime_ns:
        if hash_file(path)["sha256"] != rec.get("sha256"):
            return "damaged"
        rec["mtime_ns"] = st.st_mtime_ns
    return "ok"


def record_for(path: Path, remote: Remote) -> dict[str, Any]:
    digests = hash_file(path, remote)
    check_digests(remote.name, digests, remote)
    st = path.stat()
    return {"size": st.st_size, "sha256": digests["sha256"], "mtime_ns": st.st_mtime_ns}


def ensure_free_space(dest: Path, needed: int, reserve: int) -> None:
    free = shutil.disk_usage(dest).free
    if free < needed + reserve:
        raise WeightsError(
            f"not enough disk space in {dest}: the model files still to fetch need "
            f"{needed / GIB:.1f} GiB plus a {reserve / GIB:.1f} GiB reserve, and only "
            f"{free / GIB:.1f} GiB is free. Grow the disk (gcp_boot_disk_size_gb for GCP VMs) "
            "or free space, then rerun; files already verified stay in place."
        )


def _safe_members(tar: tarfile.TarFile, archive: str) -> Iterator[tarfile.TarInfo]:
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise WeightsError(f"{archive}: refusing unsafe member path {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise WeightsError(f"{archive}: refusing member {m.name!r} (links/devices not allowed)")
        yield m


def unpacked_ok(dest: Path, rec: dict[str, Any] | None, archive_sha: str, deep: bool) -> bool:
    if not rec or rec.get("archive_sha256") != archive_sha:
        return False
    for name, meta in rec.get("members", {}).items():
        p = dest / name
        if not p.is_file() or p.stat().st_size != meta["size"]:
            return False
        if deep and hash_file(p)["sha256"] != meta["sha256"]:
            return False
    return True


def unpack(dest: Path, archive: str, top: str, staging: Path) -> dict[str, Any]:
    """Extract into staging, then swap the top folder into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f"unpack-{top}-", dir=staging))
    members: dict[str, Any] = {}
    with tarfile.open(dest / archive) as tar:
        for m in _safe_members(tar, archive):
            rel = PurePosixPath(m.name)
            # Accept archives with or without the top folder.
            if rel.parts and rel.parts[0] != top:
                rel = PurePosixPath(top, *rel.parts)
            target = tmp / rel
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            with src, target.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            members[str(rel)] = {"size": m.size, "sha256": hash_file(target)["sha256"]}
    old = dest / top
    if old.exists():
        trash = Path(tempfile.mkdtemp(prefix=f"old-{top}-", dir=staging))
        os.replace(old, trash / top)
    src_top = tmp / top
    src_top.mkdir(exist_ok=True)
    os.replace(src_top, old)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"members": members}


def managed_paths(dest: Path, manifest: dict[str, Any]) -> list[Path]:
    """The folder, the manifest, every fetched file, every unpacked file and their folders.

    Files the server writes itself (e.g. its sliced weights copy) are left alone.
    """
    names = set(manifest.get("files", {}))
    for rec in manifest.get("unpacked", {}).values():
        names.update(rec.get("members", {}))
    paths = {dest, dest / MANIFEST}
    for name in names:
        p = dest / name
        paths.add(p)
        for parent in p.relative_to(dest).parents:
            paths.add(dest / parent)
    return sorted(p for p in paths if p.exists() or p.is_symlink())


def fix_ownership(paths: list[Path], owner: str | None, group: str | None, check: bool) -> int:
    """Files 0640, folders 0750, owned by the service user. Returns how many changed."""
    import grp
    import pwd

    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    changed = 0
    for p in paths:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want_mode = 0o750 if stat.S_ISDIR(st.st_mode) else 0o640
        bad_owner = (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
        if stat.S_IMODE(st.st_mode) != want_mode or bad_owner:
            changed += 1
            if not check:
                os.chown(p, uid, gid)
                os.chmod(p, want_mode)
    return changed


class AutoSource(Source):
    """The project's bucket when it holds every file, else Hugging Face.

    A first VM downloads from the Hub (and, with an upload bucket, copies the verified
    files there); a rebuilt VM then fetches from the bucket. The description stays the
    same whichever is used, so the manifest does not flip between them.
    """

    kind = "auto"

    def __init__(self, req: Request, staging: Path) -> None:
        self.hf = HuggingFaceSource(req.hf, staging)
        self.gcs = (
            GcsSource(req.gcs, req.parallel, req.chunk_bytes) if req.gcs.get("bucket") else None
        )
        self.chosen: Source = self.hf

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repo": self.hf.repo,
            "revision": self.hf.revision,
            "bucket": self.gcs.bucket_name if self.gcs else "",
        }

    def list(self, names: list[str]) -> dict[str, Remote]:
        if self.gcs is not None:
            try:
                remotes = self.gcs.list(names)
            except WeightsError:
                remotes = {}
            # Only objects this role uploaded carry the sha256 checked on Hugging Face.
            if remotes and all(r.sha256 for r in remotes.values()):
                self.chosen = self.gcs
                return remotes
        self.chosen = self.hf
        return self.hf.list(names)

    def fetch(self, remote: Remote, part: Path) -> None:
        self.chosen.fetch(remote, part)


def make_source(req: Request, staging: Path) -> Source:
    if req.source == "auto":
        return AutoSource(req, staging)
    if req.source == "huggingface":
        return HuggingFaceSource(req.hf, staging)
    if req.source == "gcs":
        return GcsSource(req.gcs, req.parallel, req.chunk_bytes)
    if req.source == "local":
        return LocalSource(req.local["path"])
    if req.source == "tiny":
        return TinySource(req.tiny, req.check)
    raise WeightsError(f"unknown source {req.source!r}: use auto, huggingface, gcs, local or tiny")


def sync(req: Request) -> dict[str, Any]:
    dest = req.dest
    deep = req.verify == "deep"
    actions: list[str] = []
    if not dest.is_dir():
        if req.check:
            return {"changed": True, "actions": [f"create {dest} and fetch everything"]}
        dest.mkdir(parents=True, mode=0o750)
    staging = dest / STAGING
    manifest = load_manifest(dest)
    source = make_source(req, staging)
    remotes = source.list(req.files)
    if not remotes and req.check:
        return {"changed": True, "actions": ["generate and install the tiny model"]}
    if manifest.get("source") != source.describe():
        # A different source may serve other bytes under the same names.
        manifest["files"] = {n: r for n, r in manifest["files"].items() if n not in remotes}
        manifest["source"] = source.describe()

    todo: list[Remote] = []
    for name, remote in sorted(remotes.items()):
        rec = manifest["files"].get(name)
        state = file_state(dest / name, rec, remote, deep)
        if state == "unknown":
            # Present but never verified here (e.g. copied by hand): verify it once.
            try:
                manifest["files"][name] = record_for(dest / name, remote)
                if remote.sha256 is None or manifest["files"][name]["sha256"] == remote.sha256:
                    continue
            except WeightsError:
                pass
            state = "damaged"
        if state != "ok":
            todo.append(remote)
            actions.append(f"{'fetch' if state == 'missing' else 're-fetch ' + state} {name}")

    if todo and not req.check:
        staging.mkdir(exist_ok=True, mode=0o700)
        partial = sum(
            (staging / (r.name.replace("/", "__") + ".part")).stat().st_size
            for r in todo
            if (staging / (r.name.replace("/", "__") + ".part")).exists()
        )
        ensure_free_space(dest, sum(r.size for r in todo) - partial, req.min_free_bytes)

        def one(remote: Remote) -> tuple[str, dict[str, Any]]:
            part = staging / (remote.name.replace("/", "__") + ".part")
            source.fetch(remote, part)
            if part.stat().st_size != remote.size:
                size = part.stat().st_size
                part.unlink()
                raise WeightsError(
                    f"{remote.name}: got {size} bytes, the source says {remote.size}; "
                    "nothing was put in place, rerun to fetch it again"
                )
            try:
                rec = record_for(part, remote)
            except WeightsError:
                part.unlink()
                raise
            final = dest / remote.name
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, final)
            rec["mtime_ns"] = final.stat().st_mtime_ns
            return remote.name, rec

        ranged = isinstance(source, GcsSource) or (
            isinstance(source, AutoSource) and source.chosen is source.gcs
        )
        workers = 1 if ranged else max(1, min(req.parallel, len(todo)))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(one, r) for r in todo]
            errors = []
            for fut in futures:
                try:
                    name, rec = fut.result()
                    manifest["files"][name] = rec
                except Exception as exc:  # keep what succeeded, report all failures
                    errors.append(exc)
            write_manifest(dest, manifest)
            if errors:
                raise errors[0]

    if req.unpack:
        for archive, top in ARCHIVES.items():
            if archive not in remotes:
                continue
            rec = manifest["files"].get(archive)
            if rec is None or not (dest / archive).is_file():
                continue  # only in check mode
            urec = manifest["unpacked"].get(archive)
            if unpacked_ok(dest, urec, rec["sha256"], deep):
                continue
            actions.append(f"unpack {archive} into {top}/")
            if not req.check:
                staging.mkdir(exist_ok=True, mode=0o700)
                manifest["unpacked"][archive] = {
                    "archive_sha256": rec["sha256"],
                    **unpack(dest, archive, top, staging),
                }

    uses_hub = isinstance(source, HuggingFaceSource) or (
        isinstance(source, AutoSource) and source.chosen is source.hf
    )
    if req.upload.get("bucket") and uses_hub:
        actions += upload_to_gcs(req, dest, remotes, manifest)

    if not req.check:
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        old = load_manifest(dest)
        old.pop("updated", None)
        cmp = {k: v for k, v in manifest.items() if k != "updated"}
        if actions or old != cmp:
            write_manifest(dest, manifest)
        shutil.rmtree(staging, ignore_errors=True)
    fixed = fix_ownership(managed_paths(dest, manifest), req.owner, req.group, req.check)
    if fixed:
        actions.append(f"fix owner/mode of {fixed} paths")
    hub = source.hf if isinstance(source, AutoSource) else source
    return {
        "changed": bool(actions),
        "actions": actions,
        "files": {
            n: {"size": r["size"], "sha256": r["sha256"]}
            for n, r in sorted(manifest["files"].items())
        },
        "bytes": sum(r["size"] for r in manifest["files"].values()),
        "source": source.describe(),
        "revision": hub.commit if uses_hub and isinstance(hub, HuggingFaceSource) else None,
    }


def upload_to_gcs(
    req: Request, dest: Path, remotes: dict[str, Remote], manifest: dict[str, Any]
) -> list[str]:
    """Copy verified files to the project's bucket so a rebuilt VM fetches from there."""
    target = GcsSource(req.upload, req.parallel, req.chunk_bytes)
    bucket = target.client().bucket(target.bucket_name)
    actions = []
    have = {}
    from google.api_core import exceptions as gexc

    try:
        for blob in target.client().list_blobs(target.bucket_name, prefix=target._key("")):
            have[blob.name] = blob
    except gexc.GoogleAPIError as exc:
        raise target._explain(exc) from None
    for name in sorted(remotes):
        rec = manifest["files"].get(name)
        if rec is None:
            continue
        key = target._key(name)
        blob = have.get(key)
        if blob is not None and (blob.metadata or {}).get("sha256") == rec["sha256"]:
            continue
        actions.append(f"upload {name} to gs://{target.bucket_name}/{key}")
        if req.check:
            continue
        blob = bucket.blob(key)
        blob.metadata = {"sha256": rec["sha256"]}
        try:
            blob.upload_from_filename(str(dest / name), checksum="crc32c")
        except gexc.GoogleAPIError as exc:
            raise target._explain(exc) from None
    return actions


def parse(params: dict[str, Any], check: bool) -> Request:
    """The module's parameters as the request sync() works on."""
    gcs = {
        "bucket": params["gcs_bucket"] or "",
        "prefix": params["gcs_prefix"] or "",
        "project": params["gcs_project"] or "",
    }
    req = Request(
        source=params["source"],
        dest=Path(params["dest"]),
        files=list(params["files"] or []),
        owner=params["owner"] or None,
        group=params["group"] or None,
        verify=params["verify"],
        check=check,
        min_free_bytes=int(float(params["min_free_gb"]) * GIB),
        parallel=int(params["parallel"]),
        chunk_bytes=int(params["chunk_mb"]) * 1024 * 1024,
        unpack=bool(params["unpack"]),
        hf={
            "repo": params["hf_repo"] or "",
            "revision": params["hf_revision"] or "main",
            "endpoint": params["hf_endpoint"] or "",
            "token": params["hf_token"] or "",
        },
        gcs=gcs,
        local={"path": params["local_path"] or ""},
        tiny={"seed": params["tiny_seed"], "cache_dir": params["tiny_cache_dir"]},
        upload=dict(gcs) if params["gcs_upload"] else {},
    )
    if req.source in ("huggingface", "auto") and not req.hf.get("repo"):
        raise WeightsError("the huggingface source needs a repo (model_weights_hf_repo)")
    if req.source == "gcs" and not req.gcs.get("bucket"):
        raise WeightsError("the gcs source needs a bucket (model_weights_gcs_bucket)")
    if req.source == "local" and not req.local.get("path"):
        raise WeightsError("the local source needs a path (model_weights_local_path)")
    return req


ARGUMENT_SPEC: dict[str, Any] = {
    "source": {"type": "str", "required": True, "choices": ["auto", "huggingface", "gcs", "local", "tiny"]},
    "dest": {"type": "path", "required": True},
    "files": {"type": "list", "elements": "str", "default": []},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "verify": {"type": "str", "choices": ["fast", "deep"], "default": "fast"},
    "min_free_gb": {"type": "float", "default": 1},
    "parallel": {"type": "int", "default": 4},
    "chunk_mb": {"type": "int", "default": 64},
    "unpack": {"type": "bool", "default": True},
    "hf_repo": {"type": "str"},
    "hf_revision": {"type": "str", "default": "main"},
    "hf_endpoint": {"type": "str"},
    # Ansible scrubs a no_log value from the result, the invocation and the target's log.
    "hf_token": {"type": "str", "no_log": True},
    "gcs_bucket": {"type": "str"},
    "gcs_prefix": {"type": "str"},
    "gcs_project": {"type": "str"},
    "gcs_upload": {"type": "bool", "default": False},
    "local_path": {"type": "path"},
    "tiny_seed": {"type": "int", "default": 0},
    "tiny_cache_dir": {"type": "path", "default": "/var/cache/personaplex/tiny-model"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = sync(parse(module.params, module.check_mode))
    except WeightsError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # report, never a traceback with local variables
        module.fail_json(msg=f"{type(exc).__name__}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
