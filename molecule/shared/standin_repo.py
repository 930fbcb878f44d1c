#!/usr/bin/env python3
"""Build signed stand-ins of the vendor apt repositories the roles install from.

NVIDIA's repositories (the CUDA network repository and the container-toolkit repository)
and Docker's (download.docker.com) cannot be reached from the machines that run the tests.
This script builds local apt repositories with the real URL layout, signed with a
throw-away key (generated with ``gpg --batch`` at build time, private part kept under the
build directory and deleted after it), holding *stand-in* packages with the vendors' real
package names, version schemes and dependency structure, so the roles' real code paths
(key download, deb822 source with signed-by, ``apt update`` signature checks, pinned
installs, holds) run unchanged against them. Nothing in them talks to a GPU or runs
containers. One signing, packaging, indexing and caching path serves both layouts:

``nvidia``: flat repositories (``deb [signed-by=...] URL /``) from a YAML spec
(default ``standin_repo/nvidia.yml`` next to this file; its header gives the format).
The packages contain marker files, stub programs that print a clear "STAND-IN" message,
and a few real artefacts where a test needs them (a tiny ELF shared library for
``ldconfig -p``, a systemd unit, a stub ``nvidia-ctk`` that writes a CDI spec, a stub
``nvidia-container-runtime`` that hands over to ``runc``)::

    python3 molecule/shared/standin_repo.py build nvidia [--spec FILE] [--out-root DIR]
        [--kernel-release REL]

    {"root": ".../.work/standin-apt/<hash>/www",   # serve this directory over HTTP
     "tarball": ".../<hash>/www.tar.gz",           # the same tree as one archive
     "hash": "<hash>", "kernel_release": "...",
     "repos": {"cuda": {"path": "compute/cuda/repos/debian12/x86_64",
                        "packages": {"cuda-keyring": ["1.1-1"], ...}},
               "libnvidia-container": {"path": "libnvidia-container/stable/deb/amd64", ...}},
     "keys": {"asc": "keys/standin-archive-keyring.asc",   # armored public key
              "gpg": "keys/standin-archive-keyring.gpg",   # dearmored (binary) key
              "fingerprint": "..."},
     "extra_files": ["compute/cuda/repos/debian12/x86_64/3bf863cc.pub",
                     "libnvidia-container/gpgkey"]}

  Served at ``http://127.0.0.1:PORT/``, ``.../compute/cuda/repos/debian12/x86_64/``
  stands in for ``https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/``
  and ``.../libnvidia-container/gpgkey`` for ``https://nvidia.github.io/libnvidia-container/gpgkey``.
  ``{kernel_release}`` in a package name or file path is replaced by ``--kernel-release``
  (default: this machine's ``uname -r``, the kernel a container on this machine sees).

``docker``: the layout of ``https://download.docker.com/linux/debian``
(``dists/<suite>/stable/binary-amd64``, ``pool/``, the signing key at ``gpg``) with
Docker's package names, version scheme (``5:28.5.2-1~debian.12~bookworm``) and
conflicts. ``docker-ce`` ships a ``docker.service`` whose ``/usr/bin/dockerd`` only
prints that it is a stand-in and sleeps (the real engine is tested with Debian's
docker.io), and creates the ``docker`` group like the real package::

    python3 molecule/shared/standin_repo.py build docker [--out-root DIR] [--suite bookworm]
        [--debian-major 12]

    {"root": ".../.work/standin-docker-apt/<hash>/www",  # <url>/linux/debian is the repo
     "tarball": "...", "hash": "...",
     "packages": {"docker-ce": ["5:28.5.1-1~debian.12~bookworm", ...], ...},
     "key": "linux/debian/gpg", "fingerprint": "..."}

A finished build is reused (the directory name is a hash of this script and its inputs);
concurrent callers serialise on a lock file and a build is moved into place only when
complete. The task files ``tasks/standin_apt_repo_serve.yml`` (nvidia) and
``tasks/standin_docker_repo_serve.yml`` (docker) build on the control node, copy the tree
into the instance and serve it with a transient systemd unit running
``python3 -m http.server``.

Requirements on the building machine: python3 with PyYAML (the control-node venv has it),
``dpkg-deb`` (dpkg), ``gpg`` (gnupg) and ``cc`` (for the stand-in shared libraries).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE / "standin_repo" / "nvidia.yml"
WORK = HERE.parent.parent / ".work"
KEY_DIR = "keys"
KEY_BASENAME = "standin-archive-keyring"
# A fixed date keeps Release files reproducible for a given build; apt only rejects
# Release files dated in the future.
RELEASE_DATE = "Thu, 01 Jan 2026 00:00:00 UTC"
# Fixed mtime inside the .deb archives (reproducible builds).
SOURCE_DATE_EPOCH = "1767225600"
DOCKER_CHANNEL = "stable"
DOCKER_ARCH = "amd64"


# --- shared: commands, signing key, .deb, indexes, cached build -----------------------------
def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(list(cmd), check=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise SystemExit(
            f"standin_repo: '{cmd[0]}' is not installed; install it (Debian: "
            f"apt-get install dpkg gnupg gcc) and rerun"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"standin_repo: {' '.join(cmd)} failed ({exc.returncode}):\n"
            f"{exc.stderr.decode(errors='replace')}"
        ) from exc


class Signer:
    """One throw-away ed25519 key in its own GNUPGHOME; signs Release files."""

    def __init__(self, gnupghome: Path, uid: str) -> None:
        gnupghome.mkdir(mode=0o700)
        self.env = {**os.environ, "GNUPGHOME": str(gnupghome)}
        _run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
             env=self.env)
        self.key_asc = _run(["gpg", "--batch", "--armor", "--export"], env=self.env).stdout
        self.key_gpg = _run(["gpg", "--batch", "--export"], env=self.env).stdout
        listing = _run(["gpg", "--batch", "--with-colons", "--list-keys"], env=self.env).stdout.decode()
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def sign(self, release: Path) -> None:
        """InRelease (clear-signed) and Release.gpg (detached) next to release, as apt reads them."""
        base = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--digest-algo", "SHA256"]
        _run([*base, "--clearsign", "-o", str(release.parent / "InRelease"), str(release)], env=self.env)
        _run([*base, "--armor", "--detach-sign", "-o", str(release.parent / "Release.gpg"), str(release)],
             env=self.env)


def pack_deb(tree: Path, control: Sequence[str], deb: Path) -> Path:
    """dpkg-deb the tree (its files already written) with this control file; reproducible."""
    (tree / "DEBIAN").mkdir(exist_ok=True)
    (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n", encoding="utf-8")
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
         env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    return deb


def _digests(data: bytes) -> dict[str, str]:
    return {
        "MD5sum": hashlib.md5(data, usedforsecurity=False).hexdigest(),  # apt still reads it
        "SHA1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }


def write_packages_index(debs: Sequence[Path], relative_to: Path, index_dir: Path) -> None:
    """Packages and Packages.gz for these .debs; Filename: is relative to relative_to."""
    stanzas = []
    for deb in debs:
        data = deb.read_bytes()
        fields = _run(["dpkg-deb", "--field", str(deb)]).stdout.decode().rstrip("\n")
        rel = deb.relative_to(relative_to)
        filename = f"./{rel}" if relative_to == deb.parent else str(rel)
        stanza = [fields, f"Filename: {filename}", f"Size: {len(data)}"]
        stanza += [f"{k}: {v}" for k, v in _digests(data).items()]
        stanzas.append("\n".join(stanza))
    index_dir.mkdir(parents=True, exist_ok=True)
    packages = ("\n\n".join(stanzas) + "\n").encode()
    (index_dir / "Packages").write_bytes(packages)
    (index_dir / "Packages.gz").write_bytes(gzip.compress(packages, mtime=int(SOURCE_DATE_EPOCH)))


def write_release(dist: Path, header: Sequence[str], indexes: Sequence[Path], signer: Signer) -> None:
    """dist/Release listing the index files with their digests, then signed."""
    files = {str(p.relative_to(dist)): p.read_bytes() for p in indexes}
    release = [*header, f"Date: {RELEASE_DATE}"]
    for algo, title in (("MD5sum", "MD5Sum"), ("SHA1", "SHA1"), ("SHA256", "SHA256")):
        release.append(f"{title}:")
        release += [f" {_digests(data)[algo]} {len(data):>16} {name}" for name, data in files.items()]
    (dist / "Release").write_text("\n".join(release) + "\n", encoding="utf-8")
    signer.sign(dist / "Release")


def cached_build(out_root: Path, inputs: Sequence[bytes], build_tree: Callable[[Path, Path], dict[str, Any]]
                 ) -> dict[str, Any]:
    """Run build_tree(www, workdir) once per hash of this script and inputs; return its manifest
    plus root (the tree to serve), tarball (the same tree as one archive) and hash."""
    digest = hashlib.sha256()
    for part in (Path(__file__).read_bytes(), *inputs):
        digest.update(hashlib.sha256(part).digest())
    build_hash = digest.hexdigest()[:16]
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / build_hash
    manifest_path = final / "manifest.json"
    with open(out_root / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest_path.is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".build-{build_hash}-", dir=out_root))
            try:
                (staging / "www").mkdir()
                (staging / "work").mkdir()
                manifest = build_tree(staging / "www", staging / "work")
                # One archive of the served tree: copying it into an instance is one transfer.
                with tarfile.open(staging / "www.tar.gz", "w:gz") as tar:
                    tar.add(staging / "www", arcname=".")
                # The private key and the package trees are not needed after the build.
                shutil.rmtree(staging / "work")
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True),
                                                      encoding="utf-8")
                staging.rename(final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return {**manifest, "root": str(final / "www"), "tarball": str(final / "www.tar.gz"), "hash": build_hash}


# --- nvidia: flat repositories from the YAML spec -------------------------------------------
class SpecError(ValueError):
    """The spec file is malformed; the message says which entry and what to fix."""


@dataclass(frozen=True)
class FileEntry:
    """One path shipped by a stand-in package."""

    path: str
    kind: str  # text | stub | keyring-gpg | keyring-asc | elf-lib | symlink
    value: str = ""
    mode: int = 0o644


@dataclass
class PackageSpec:
    """One stand-in binary package."""

    name: str
    version: str
    architecture: str
    description: str
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    source: str = ""
    files: list[FileEntry] = field(default_factory=list)
    conffiles: list[str] = field(default_factory=list)
    section: str = "multiverse/devel"


@dataclass
class RepoSpec:
    """One flat repository and its packages."""

    repo_id: str
    path: str
    origin: str
    label: str
    architectures: list[str]
    packages: list[PackageSpec]
    public_key_copies: list[str] = field(default_factory=list)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise SpecError(f"{where}: missing required key '{key}'")
    return mapping[key]


def _subst(text: str, variables: Mapping[str, str]) -> str:
    for name, value in variables.items():
        text = text.replace("{" + name + "}", value)
    return text


def _parse_file(raw: Mapping[str, Any], where: str, variables: Mapping[str, str]) -> FileEntry:
    path = _subst(str(_require(raw, "path", where)), variables)
    if not path.startswith("/"):
        raise SpecError(f"{where}: file path '{path}' must be absolute")
    kinds = [k for k in ("text", "stub", "keyring", "elf_lib", "symlink") if k in raw]
    if len(kinds) != 1:
        raise SpecError(
            f"{where}: give exactly one of text, stub, keyring, elf_lib, symlink for {path}"
        )
    kind = kinds[0]
    value = _subst(str(raw[kind]), variables)
    mode = int(str(raw.get("mode", "0755" if kind == "stub" else "0644")), 8)
    if kind == "keyring":
        if value not in ("gpg", "asc"):
            raise SpecError(f"{where}: keyring must be 'gpg' or 'asc', not '{value}'")
        kind = f"keyring-{value}"
        value = ""
    return FileEntry(path=path, kind=kind.replace("_", "-"), value=value, mode=mode)


def parse_spec(raw: Mapping[str, Any], variables: Mapping[str, str]) -> list[RepoSpec]:
    """Turn the loaded YAML (or an equivalent Python mapping) into repo specs."""
    repos: list[RepoSpec] = []
    for r_index, r_raw in enumerate(_require(raw, "repos", "spec")):
        where = f"repos[{r_index}]"
        repo_id = str(_require(r_raw, "id", where))
        packages: list[PackageSpec] = []
        for p_index, p_raw in enumerate(_require(r_raw, "packages", where)):
            p_where = f"{where} ({repo_id}).packages[{p_index}]"
            versions = p_raw.get("versions") or [_require(p_raw, "version", p_where)]
            for version in versions:
                pvars = {
                    **variables,
                    "version": str(version),
                    "upstream": str(version).rsplit("-", 1)[0],
                    "branch": re.split(r"[.-]", str(version))[0],
                }
                name = _subst(str(_require(p_raw, "name", p_where)), pvars)
                packages.append(
                    PackageSpec(
                        name=name,
                        version=str(version),
                        architecture=str(p_raw.get("architecture", "amd64")),
                        description=_subst(str(_require(p_raw, "description", p_where)), pvars),
                        depends=[_subst(str(d), pvars) for d in p_raw.get("depends", [])],
                        provides=[_subst(str(d), pvars) for d in p_raw.get("provides", [])],
                        conflicts=[_subst(str(d), pvars) for d in p_raw.get("conflicts", [])],
                        source=_subst(str(p_raw.get("source", "")), pvars),
                        files=[
                            _parse_file(f, f"{p_where} {name}", pvars)
                            for f in p_raw.get("files", [])
                        ],
                        conffiles=[_subst(str(c), pvars) for c in p_raw.get("conffiles", [])],
                        section=str(p_raw.get("section", "multiverse/devel")),
                    )
                )
        repos.append(
            RepoSpec(
                repo_id=repo_id,
                path=str(_require(r_raw, "path", where)).strip("/"),
                origin=str(r_raw.get("origin", "Stand-in NVIDIA")),
                label=str(r_raw.get("label", f"Stand-in {repo_id}")),
                architectures=[str(a) for a in r_raw.get("architectures", ["amd64", "all"])],
                packages=packages,
                public_key_copies=[str(k) for k in r_raw.get("public_key_copies", [])],
            )
        )
    return repos


def _stub_script(name: str, behaviour: str) -> str:
    """A stand-in program. behaviour: a message to print, or a special keyword."""
    banner = f"STAND-IN {name}: installed from the test repository, not NVIDIA's; no GPU code here."
    if behaviour == "nvidia-smi":
        # Like the real tool on a machine without a loaded driver: exit 9 with a message.
        return textwrap.dedent(f"""\
            #!/bin/sh
            echo "{banner}" >&2
            echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
            exit 9
            """)
    if behaviour == "nvidia-ctk":
        return textwrap.dedent(f"""\
            #!/usr/bin/env python3
            # {banner}
            import os
            import sys
            args = sys.argv[1:]
            print("{banner}", file=sys.stderr)
            if args[:1] in (["--version"], ["-v"]):
                print("NVIDIA Container Toolkit CLI version {{version}} (stand-in)")
                sys.exit(0)
            if args[:2] == ["cdi", "generate"]:
                # Like the real CLI: --output, else the NVIDIA_CTK_CDI_OUTPUT_FILE_PATH
                # environment variable (what nvidia-cdi-refresh.service sets); the
                # output's directory is created.
                out = os.environ.get("NVIDIA_CTK_CDI_OUTPUT_FILE_PATH")
                for i, a in enumerate(args):
                    if a.startswith("--output="):
                        out = a.split("=", 1)[1]
                    elif a == "--output" and i + 1 < len(args):
                        out = args[i + 1]
                spec = (
                    "---\\n# STAND-IN CDI spec from the stand-in nvidia-ctk (no GPU devices)\\n"
                    "cdiVersion: 0.5.0\\nkind: nvidia.com/gpu\\ndevices:\\n"
                    "  - name: all\\n    containerEdits: {{}}\\ncontainerEdits: {{}}\\n"
                )
                if out:
                    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
                    with open(out, "w", encoding="utf-8") as fh:
                        fh.write(spec)
                else:
                    sys.stdout.write(spec)
                sys.exit(0)
            if args[:2] == ["cdi", "list"]:
                print("nvidia.com/gpu=all")
                sys.exit(0)
            print("stand-in nvidia-ctk: unsupported arguments: " + " ".join(args), file=sys.stderr)
            sys.exit(2)
            """)
    if behaviour == "forking-daemon":
        # Like a Type=forking daemon: the parent exits 0 once a child runs. The
        # arguments it was started with are recorded, so a test can see which
        # ExecStart (packaged unit or override) systemd used.
        return textwrap.dedent(f"""\
            #!/bin/sh
            # {banner}
            mkdir -p /run/standin
            echo "$*" > /run/standin/{name}.args
            setsid sleep infinity </dev/null >/dev/null 2>&1 &
            exit 0
            """)
    if behaviour == "runc-passthrough":
        return textwrap.dedent(f"""\
            #!/bin/sh
            # {banner}
            # Hands every call to runc, so a container started with this runtime runs,
            # without any GPU injection.
            exec runc "$@"
            """)
    return textwrap.dedent(f"""\
        #!/bin/sh
        echo "{banner}"
        echo "{behaviour}"
        exit 0
        """)


def _elf_lib(workdir: Path, soname: str, target: Path) -> None:
    src = workdir / "standin_lib.c"
    src.write_text(
        "/* stand-in shared library built by standin_repo.py */\n"
        f'const char standin_library_name[] = "{soname}";\n',
        encoding="utf-8",
    )
    _run(["cc", "-shared", "-fPIC", "-o", str(target), f"-Wl,-soname,{soname}", str(src)])


def build_nvidia_deb(pkg: PackageSpec, signer: Signer, workdir: Path, dest: Path) -> Path:
    tree = Path(tempfile.mkdtemp(prefix=f"{pkg.name}-", dir=workdir))
    marker = tree / "usr" / "share" / "doc" / pkg.name / "STAND-IN"
    marker.parent.mkdir(parents=True)
    marker.write_text(f"{pkg.name} {pkg.version}: stand-in package for tests, not NVIDIA software\n")
    for entry in pkg.files:
        target = tree / entry.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "symlink":
            target.symlink_to(entry.value)
            continue
        if entry.kind == "text":
            target.write_text(entry.value, encoding="utf-8")
        elif entry.kind == "stub":
            # Like the real tools, stubs report the upstream version (no revision).
            target.write_text(
                _stub_script(Path(entry.path).name, entry.value).replace("{version}", pkg.version.rsplit("-", 1)[0])
            )
        elif entry.kind == "keyring-gpg":
            target.write_bytes(signer.key_gpg)
        elif entry.kind == "keyring-asc":
            target.write_bytes(signer.key_asc)
        elif entry.kind == "elf-lib":
            _elf_lib(workdir, entry.value, target)
        target.chmod(entry.mode)
    control = [f"Package: {pkg.name}"]
    if pkg.source:
        # apt's `Package: src:NAME` pins match binary packages by this field.
        control.append(f"Source: {pkg.source}")
    control += [
        f"Version: {pkg.version}",
        f"Architecture: {pkg.architecture}",
        "Maintainer: PersonaPlex test harness <standin-apt@invalid>",
        f"Section: {pkg.section}",
        "Priority: optional",
    ]
    for title, values in (("Depends", pkg.depends), ("Provides", pkg.provides), ("Conflicts", pkg.conflicts)):
        if values:
            control.append(f"{title}: " + ", ".join(values))
    summary, _, body = pkg.description.strip().partition("\n")
    control.append(f"Description: STAND-IN {summary.strip()}")
    body_lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    body_lines.append("Test-only stand-in built by molecule/shared/standin_repo.py; not NVIDIA software.")
    control.extend(f" {line}" for line in body_lines)
    if pkg.conffiles:
        (tree / "DEBIAN").mkdir()
        (tree / "DEBIAN" / "conffiles").write_text("\n".join(pkg.conffiles) + "\n", encoding="utf-8")
    deb = pack_deb(tree, control, dest / f"{pkg.name}_{pkg.version.split(':')[-1]}_{pkg.architecture}.deb")
    shutil.rmtree(tree)
    return deb


def build_nvidia_tree(repos: list[RepoSpec], www: Path, workdir: Path) -> dict[str, Any]:
    signer = Signer(workdir / "gnupg", "Stand-in NVIDIA archive key (TEST ONLY) <standin-apt@invalid>")
    keys = www / KEY_DIR
    keys.mkdir(parents=True)
    (keys / f"{KEY_BASENAME}.asc").write_bytes(signer.key_asc)
    (keys / f"{KEY_BASENAME}.gpg").write_bytes(signer.key_gpg)
    built: dict[str, Any] = {}
    for repo in repos:
        dest = www / repo.path
        dest.mkdir(parents=True, exist_ok=True)
        debs = [build_nvidia_deb(pkg, signer, workdir, dest) for pkg in repo.packages]
        versions: dict[str, list[str]] = {}
        for pkg in repo.packages:
            versions.setdefault(pkg.name, []).append(pkg.version)
        write_packages_index(debs, dest, dest)
        for copy in repo.public_key_copies:
            target = www / copy.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(signer.key_asc)
        header = [f"Origin: {repo.origin}", f"Label: {repo.label}",
                  f"Architectures: {' '.join(repo.architectures)}",
                  "Description: STAND-IN repository for tests; not NVIDIA's"]
        write_release(dest, header, [dest / "Packages", dest / "Packages.gz"], signer)
        built[repo.repo_id] = {"path": repo.path, "packages": versions}
    return {
        "repos": built,
        "keys": {"asc": f"{KEY_DIR}/{KEY_BASENAME}.asc", "gpg": f"{KEY_DIR}/{KEY_BASENAME}.gpg",
                 "fingerprint": signer.fingerprint},
        "extra_files": [copy.lstrip("/") for repo in repos for copy in repo.public_key_copies],
    }


def build_nvidia(spec_path: Path, out_root: Path, kernel_release: str) -> dict[str, Any]:
    """Build (or reuse) the repositories for spec_path and return the manifest."""
    import yaml  # the control-node venv ships PyYAML (ansible depends on it)

    spec_bytes = spec_path.read_bytes()
    raw = yaml.safe_load(spec_bytes)
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_path}: expected a mapping with a 'repos' list at the top")
    repos = parse_spec(raw, {"kernel_release": kernel_release})
    return cached_build(out_root, [spec_bytes, kernel_release.encode()],
                        lambda www, work: {**build_nvidia_tree(repos, www, work), "kernel_release": kernel_release})


# --- docker: download.docker.com/linux/debian ----------------------------------------------
@dataclass(frozen=True)
class Package:
    """One stand-in binary package."""

    name: str
    version: str
    description: str
    files: dict[str, str] = field(default_factory=dict)  # path -> content (0755)
    depends: str = ""
    conflicts: str = ""
    replaces: str = ""
    postinst: str = ""


def _stub(name: str, version_line: str) -> str:
    return textwrap.dedent(f"""\
        #!/bin/sh
        # STAND-IN {name}: from the test repository, not Docker's.
        case "$1" in
          --version|-v|version) echo "{version_line}"; exit 0 ;;
        esac
        echo "STAND-IN {name}: installed from the test repository, not Docker's" >&2
        exit 0
        """)


def packages(suite: str, debian_major: str) -> list[Package]:
    """The stand-in packages: two engine releases, so a test can tell a pin from 'newest'."""
    tail = f"~debian.{debian_major}~{suite}"
    result: list[Package] = []
    for upstream in ("28.5.1", "28.5.2"):
        version = f"5:{upstream}-1{tail}"
        result.append(
            Package(
                name="docker-ce",
                version=version,
                description="Docker: the open-source application container engine (STAND-IN)",
                depends="containerd.io (>= 1.7.27), docker-ce-cli",
                conflicts="docker (<< 1.5~), docker-engine, docker.io",
                replaces="docker-engine",
                files={
                    "/usr/bin/dockerd": textwrap.dedent(f"""\
                        #!/bin/sh
                        # STAND-IN dockerd {upstream}: no container engine here; the real
                        # engine is tested with the distribution's docker.io.
                        echo "STAND-IN dockerd {upstream}: not an engine, sleeping" >&2
                        exec sleep infinity
                        """),
                    "/lib/systemd/system/docker.service": textwrap.dedent("""\
                        [Unit]
                        Description=Docker Application Container Engine (STAND-IN)
                        After=network-online.target

                        [Service]
                        Type=simple
                        ExecStart=/usr/bin/dockerd
                        ExecReload=/bin/kill -s HUP $MAINPID

                        [Install]
                        WantedBy=multi-user.target
                        """),
                },
                # Like the real package: the docker group exists after the install.
                postinst=textwrap.dedent("""\
                    #!/bin/sh
                    set -e
                    if [ "$1" = configure ] && ! getent group docker >/dev/null; then
                      groupadd --system docker
                    fi
                    if [ -d /run/systemd/system ]; then
                      systemctl daemon-reload || true
                    fi
                    """),
            )
        )
        result.append(
            Package(
                name="docker-ce-cli",
                version=version,
                description="Docker CLI: the open-source application container engine (STAND-IN)",
                conflicts="docker (<< 1.5~), docker-engine, docker.io",
                files={
                    "/usr/bin/docker": _stub(
                        "docker", f"Docker version {upstream}, build standin"
                    )
                },
            )
        )
    result += [
        Package(
            name="containerd.io",
            version=f"1.7.28-1{tail}",
            description="An open and reliable container runtime (STAND-IN)",
            conflicts="containerd, runc",
            replaces="containerd, runc",
            files={
                "/usr/bin/containerd": _stub(
                    "containerd", "containerd containerd.io 1.7.28 standin"
                )
            },
        ),
        Package(
            name="docker-buildx-plugin",
            version=f"0.29.1-1{tail}",
            description="Docker Buildx cli plugin (STAND-IN)",
            files={
                "/usr/libexec/docker/cli-plugins/docker-buildx": _stub(
                    "docker-buildx", "v0.29.1 standin"
                )
            },
        ),
        Package(
            name="docker-compose-plugin",
            version=f"2.40.3-1{tail}",
            description="Docker Compose (V2) plugin for the Docker CLI (STAND-IN)",
            files={
                "/usr/libexec/docker/cli-plugins/docker-compose": _stub(
                    "docker-compose", "v2.40.3 standin"
                )
            },
        ),
    ]
    return result


def build_docker_deb(pkg: Package, workdir: Path, pool: Path) -> Path:
    tree = workdir / f"{pkg.name}-{pkg.version.replace(':', '_')}"
    (tree / "DEBIAN").mkdir(parents=True)
    for path, content in pkg.files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        target.chmod(0o644 if path.endswith(".service") else 0o755)
    control = [
        f"Package: {pkg.name}",
        f"Version: {pkg.version}",
        f"Architecture: {DOCKER_ARCH}",
        "Maintainer: Stand-in Docker packages (TEST ONLY) <standin-docker@invalid>",
        "Section: admin",
        "Priority: optional",
    ]
    control += [f"{k}: {v}" for k, v in (("Depends", pkg.depends), ("Conflicts", pkg.conflicts),
                                         ("Replaces", pkg.replaces)) if v]
    control.append(f"Description: {pkg.description}")
    if pkg.postinst:
        postinst = tree / "DEBIAN" / "postinst"
        postinst.write_text(pkg.postinst, encoding="utf-8")
        postinst.chmod(0o755)
    upstream_version = pkg.version.split(":", 1)[-1]
    return pack_deb(tree, control, pool / f"{pkg.name}_{upstream_version}_{DOCKER_ARCH}.deb")


def build_docker_tree(www: Path, workdir: Path, suite: str, debian_major: str) -> dict[str, Any]:
    """The repository under www/linux/debian; the manifest's paths are relative to www."""
    repo = www / "linux" / "debian"
    pool = repo / "pool" / suite / DOCKER_CHANNEL
    pool.mkdir(parents=True)
    signer = Signer(workdir / "gnupg", "Stand-in Docker archive key (TEST ONLY) <standin-docker@invalid>")
    (repo / "gpg").write_bytes(signer.key_asc)
    pkgs = packages(suite, debian_major)
    debs = [build_docker_deb(pkg, workdir, pool) for pkg in pkgs]
    dist = repo / "dists" / suite
    index_dir = dist / DOCKER_CHANNEL / f"binary-{DOCKER_ARCH}"
    write_packages_index(debs, repo, index_dir)
    header = ["Origin: Docker (stand-in)", "Label: Docker CE (stand-in)", f"Suite: {suite}", f"Codename: {suite}",
              f"Architectures: {DOCKER_ARCH}", f"Components: {DOCKER_CHANNEL}",
              "Description: Stand-in of Docker's apt repository for tests (no engine inside)"]
    write_release(dist, header, [index_dir / "Packages", index_dir / "Packages.gz"], signer)
    manifest_packages: dict[str, list[str]] = {}
    for pkg in pkgs:
        manifest_packages.setdefault(pkg.name, []).append(pkg.version)
    return {"packages": manifest_packages, "key": "linux/debian/gpg", "fingerprint": signer.fingerprint}


def build_docker(out_root: Path, suite: str, debian_major: str) -> dict[str, Any]:
    """Build (or reuse) the repository; return the manifest."""
    return cached_build(out_root, [f"{suite}/{debian_major}".encode()],
                        lambda www, work: build_docker_tree(www, work, suite, debian_major))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or reuse a stand-in repository; print its JSON manifest")
    layouts = build.add_subparsers(dest="layout", required=True)
    nvidia = layouts.add_parser("nvidia", help="NVIDIA's CUDA and container-toolkit repositories")
    nvidia.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="spec file (YAML)")
    nvidia.add_argument("--out-root", type=Path, default=WORK / "standin-apt", help="where builds are kept")
    nvidia.add_argument("--kernel-release", default=os.uname().release, help="value of {kernel_release}")
    docker = layouts.add_parser("docker", help="Docker's repository (download.docker.com/linux/debian)")
    docker.add_argument("--out-root", type=Path, default=WORK / "standin-docker-apt", help="where builds are kept")
    docker.add_argument("--suite", default="bookworm", help="suite (release codename) to publish")
    docker.add_argument("--debian-major", default="12", help="Debian major version in the package versions")
    args = parser.parse_args(argv)
    if args.layout == "docker":
        manifest = build_docker(args.out_root.resolve(), args.suite, args.debian_major)
    else:
        try:
            manifest = build_nvidia(args.spec.resolve(), args.out_root.resolve(), args.kernel_release)
        except SpecError as exc:
            print(f"standin_repo: bad spec: {exc}", file=sys.stderr)
            return 2
    json.dump(manifest, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
