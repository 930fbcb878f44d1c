#!/usr/bin/env python3
"""Build signed stand-in NVIDIA apt repositories for the Molecule scenarios.

NVIDIA's apt repositories (the CUDA network repository and the container-toolkit
repository) cannot be reached from the machines that run the tests. This script builds
local, signed, flat apt repositories that hold *stand-in* packages with NVIDIA's real
package names, version scheme and dependency structure, so the roles' real code paths
(key download, deb822 source with signed-by, ``apt update`` signature checks, pinned
installs, holds) run unchanged against them. The packages contain marker files, stub
programs that print a clear "STAND-IN" message, and a few real artefacts where a test
needs them (a tiny ELF shared library for ``ldconfig -p``, a systemd unit, a stub
``nvidia-ctk`` that writes a CDI spec, a stub ``nvidia-container-runtime`` that hands
over to ``runc``). Nothing in them talks to a GPU.

Interface
---------
``python3 molecule/shared/standin_apt_repo.py build [--spec FILE] [--out-root DIR]
[--kernel-release REL]`` builds (or reuses) the repositories and prints a JSON manifest
on stdout::

    {
      "root": "/work/main/.work/standin-apt/<hash>/www", # serve this directory over HTTP
      "tarball": ".../<hash>/www.tar.gz",                 # the same tree as one archive
      "hash": "<hash>",
      "repos": {                                          # repo id -> flat repo
        "cuda": {"path": "compute/cuda/repos/debian12/x86_64",
                 "packages": {"cuda-keyring": ["1.1-1"], ...}},
        "libnvidia-container": {"path": "libnvidia-container/stable/deb/amd64", ...}
      },
      "keys": {"asc": "keys/standin-archive-keyring.asc",  # armored public key
               "gpg": "keys/standin-archive-keyring.gpg",  # dearmored (binary) key
               "fingerprint": "..."},
      "extra_files": ["compute/cuda/repos/debian12/x86_64/3bf863cc.pub",
                      "libnvidia-container/gpgkey"]
    }

Paths are relative to ``root`` and mirror the real URL paths, so when ``root`` is served
at ``http://127.0.0.1:PORT/`` the stand-in for
``https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/`` is
``http://127.0.0.1:PORT/compute/cuda/repos/debian12/x86_64/`` and the stand-in for
``https://nvidia.github.io/libnvidia-container/gpgkey`` is
``http://127.0.0.1:PORT/libnvidia-container/gpgkey``. Each repository is flat
(``deb [signed-by=...] URL /``) with ``Packages``, ``Packages.gz``, ``Release``,
``Release.gpg`` and a clear-signed ``InRelease``; one throw-away signing key (generated
with ``gpg --batch`` at build time, private part kept under the build directory) signs
them all.

The default spec is ``standin_apt_repo/packages.yml`` next to this file (see its header
for the format). The build directory name is a hash of the spec, this script and the kernel
release, so a finished build is reused; concurrent callers serialise on a lock file and
a build is moved into place only when complete. ``{kernel_release}`` in a package name or
file path is replaced by ``--kernel-release`` (default: this machine's ``uname -r``, which
is also the kernel a container on this machine sees).

``molecule/shared/tasks/standin_apt_repo_serve.yml`` is a task file that a scenario's prepare
playbook includes to build the repositories on the control node, copy them into the
instance and serve them with a transient systemd unit running ``python3 -m http.server``.

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
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE / "standin_apt_repo" / "packages.yml"
DEFAULT_OUT_ROOT = HERE.parent.parent / ".work" / "standin-apt"
KEY_DIR = "keys"
KEY_BASENAME = "standin-archive-keyring"
# A fixed date keeps Release files reproducible for a given build; apt only rejects
# Release files dated in the future.
RELEASE_DATE = "Thu, 01 Jan 2026 00:00:00 UTC"
# Fixed mtime inside the .deb archives (reproducible builds).
SOURCE_DATE_EPOCH = "1767225600"


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


def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(list(cmd), check=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise SystemExit(
            f"standin_apt_repo: '{cmd[0]}' is not installed; install it (Debian: "
            f"apt-get install dpkg gnupg gcc) and rerun"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"standin_apt_repo: {' '.join(cmd)} failed ({exc.returncode}):\n"
            f"{exc.stderr.decode(errors='replace')}"
        ) from exc


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
        "/* stand-in shared library built by standin_apt_repo.py */\n"
        f'const char standin_library_name[] = "{soname}";\n',
        encoding="utf-8",
    )
    _run(["cc", "-shared", "-fPIC", "-o", str(target), f"-Wl,-soname,{soname}", str(src)])


class Builder:
    """Builds the repositories of one spec into one directory."""

    def __init__(self, repos: list[RepoSpec], workdir: Path) -> None:
        self.repos = repos
        self.workdir = workdir
        self.gnupghome = workdir / "gnupg"
        self.key_asc = b""
        self.key_gpg = b""
        self.fingerprint = ""

    # -- key ---------------------------------------------------------------
    def make_key(self) -> None:
        self.gnupghome.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(self.gnupghome)}
        uid = "Stand-in NVIDIA archive key (TEST ONLY) <standin-apt@invalid>"
        _run(
            [
                "gpg",
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ],
            env=env,
        )
        self.key_asc = _run(["gpg", "--batch", "--armor", "--export"], env=env).stdout
        self.key_gpg = _run(["gpg", "--batch", "--export"], env=env).stdout
        listing = _run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env).stdout.decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        keys = self.workdir / "out" / KEY_DIR
        keys.mkdir(parents=True)
        (keys / f"{KEY_BASENAME}.asc").write_bytes(self.key_asc)
        (keys / f"{KEY_BASENAME}.gpg").write_bytes(self.key_gpg)

    def sign(self, release: Path) -> None:
        env = {**os.environ, "GNUPGHOME": str(self.gnupghome)}
        base = [
            "gpg",
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--digest-algo",
            "SHA256",
        ]
        _run(
            [
                *base,
                "--clearsign",
                "-o",
                str(release.parent / "InRelease"),
                str(release),
            ],
            env=env,
        )
        _run(
            [
                *base,
                "--armor",
                "--detach-sign",
                "-o",
                str(release.parent / "Release.gpg"),
                str(release),
            ],
            env=env,
        )

    # -- packages ----------------------------------------------------------
    def build_deb(self, pkg: PackageSpec, dest: Path) -> Path:
        tree = Path(tempfile.mkdtemp(prefix=f"{pkg.name}-", dir=self.workdir))
        (tree / "DEBIAN").mkdir()
        marker = tree / "usr" / "share" / "doc" / pkg.name / "STAND-IN"
        marker.parent.mkdir(parents=True)
        marker.write_text(
            f"{pkg.name} {pkg.version}: stand-in package for tests, not NVIDIA software\n"
        )
        for entry in pkg.files:
            target = tree / entry.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == "symlink":
                target.symlink_to(entry.value)
                continue
            if entry.kind == "text":
                target.write_text(entry.value, encoding="utf-8")
            elif entry.kind == "stub":
                target.write_text(
                    # Like the real tools, stubs report the upstream version (no revision).
                    _stub_script(Path(entry.path).name, entry.value).replace(
                        "{version}", pkg.version.rsplit("-", 1)[0]
                    )
                )
            elif entry.kind == "keyring-gpg":
                target.write_bytes(self.key_gpg)
            elif entry.kind == "keyring-asc":
                target.write_bytes(self.key_asc)
            elif entry.kind == "elf-lib":
                _elf_lib(self.workdir, entry.value, target)
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
        if pkg.depends:
            control.append("Depends: " + ", ".join(pkg.depends))
        if pkg.provides:
            control.append("Provides: " + ", ".join(pkg.provides))
        if pkg.conflicts:
            control.append("Conflicts: " + ", ".join(pkg.conflicts))
        summary, _, body = pkg.description.strip().partition("\n")
        control.append(f"Description: STAND-IN {summary.strip()}")
        body_lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
        body_lines.append(
            "Test-only stand-in built by molecule/shared/standin_apt_repo.py; not NVIDIA software."
        )
        control.extend(f" {line}" for line in body_lines)
        (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n", encoding="utf-8")
        if pkg.conffiles:
            (tree / "DEBIAN" / "conffiles").write_text(
                "\n".join(pkg.conffiles) + "\n", encoding="utf-8"
            )
        deb = dest / f"{pkg.name}_{pkg.version.split(':')[-1]}_{pkg.architecture}.deb"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        _run(
            [
                "dpkg-deb",
                "--root-owner-group",
                "-Zgzip",
                "--build",
                str(tree),
                str(deb),
            ],
            env=env,
        )
        shutil.rmtree(tree)
        return deb

    @staticmethod
    def _digests(data: bytes) -> dict[str, str]:
        return {
            "MD5sum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "SHA1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest(),
        }

    def build_repo(self, repo: RepoSpec) -> dict[str, Any]:
        dest = self.workdir / "out" / repo.path
        dest.mkdir(parents=True, exist_ok=True)
        stanzas: list[str] = []
        versions: dict[str, list[str]] = {}
        for pkg in repo.packages:
            deb = self.build_deb(pkg, dest)
            data = deb.read_bytes()
            fields = _run(["dpkg-deb", "--field", str(deb)]).stdout.decode().rstrip("\n")
            digests = self._digests(data)
            stanza = [fields, f"Filename: ./{deb.name}", f"Size: {len(data)}"]
            stanza += [f"{k}: {v}" for k, v in digests.items()]
            stanzas.append("\n".join(stanza))
            versions.setdefault(pkg.name, []).append(pkg.version)
        packages = ("\n\n".join(stanzas) + "\n").encode()
        (dest / "Packages").write_bytes(packages)
        (dest / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        for copy in repo.public_key_copies:
            target = self.workdir / "out" / copy.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.key_asc)
        index_files = {name: (dest / name).read_bytes() for name in ("Packages", "Packages.gz")}
        release = [
            f"Origin: {repo.origin}",
            f"Label: {repo.label}",
            f"Architectures: {' '.join(repo.architectures)}",
            f"Date: {RELEASE_DATE}",
            "Description: STAND-IN repository for tests; not NVIDIA's",
        ]
        for algo, header in (
            ("MD5sum", "MD5Sum"),
            ("SHA1", "SHA1"),
            ("SHA256", "SHA256"),
        ):
            release.append(f"{header}:")
            for name, data in index_files.items():
                release.append(f" {self._digests(data)[algo]} {len(data):>16} {name}")
        release_path = dest / "Release"
        release_path.write_text("\n".join(release) + "\n", encoding="utf-8")
        self.sign(release_path)
        return {"path": repo.path, "packages": versions}

    def build(self) -> dict[str, Any]:
        self.make_key()
        repos = {repo.repo_id: self.build_repo(repo) for repo in self.repos}
        extra = [copy.lstrip("/") for repo in self.repos for copy in repo.public_key_copies]
        return {
            "repos": repos,
            "keys": {
                "asc": f"{KEY_DIR}/{KEY_BASENAME}.asc",
                "gpg": f"{KEY_DIR}/{KEY_BASENAME}.gpg",
                "fingerprint": self.fingerprint,
            },
            "extra_files": extra,
        }


def build(spec_path: Path, out_root: Path, kernel_release: str) -> dict[str, Any]:
    """Build (or reuse) the repositories for spec_path and return the manifest."""
    import yaml  # the control-node venv ships PyYAML (ansible depends on it)

    spec_bytes = spec_path.read_bytes()
    raw = yaml.safe_load(spec_bytes)
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_path}: expected a mapping with a 'repos' list at the top")
    variables = {"kernel_release": kernel_release}
    repos = parse_spec(raw, variables)
    digest = hashlib.sha256()
    for part in (spec_bytes, Path(__file__).read_bytes(), kernel_release.encode()):
        digest.update(hashlib.sha256(part).digest())
    build_hash = digest.hexdigest()[:16]
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / build_hash
    manifest_path = final / "manifest.json"
    with open(out_root / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest_path.is_file():
            return json.loads(manifest_path.read_text(encoding="utf-8"))
        workdir = Path(tempfile.mkdtemp(prefix=f".build-{build_hash}-", dir=out_root))
        try:
            manifest = Builder(repos, workdir).build()
            manifest.update(
                {
                    "root": str(final / "www"),
                    "tarball": str(final / "www.tar.gz"),
                    "hash": build_hash,
                    "kernel_release": kernel_release,
                }
            )
            (workdir / "manifest.json").write_text(
                json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"
            )
            (workdir / "out").rename(workdir / "www")
            # One archive of the served tree: copying it into an instance is one transfer.
            _run(
                [
                    "tar",
                    "-C",
                    str(workdir / "www"),
                    "-czf",
                    str(workdir / "www.tar.gz"),
                    ".",
                ]
            )
            workdir.rename(final)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser(
        "build",
        help="build or reuse the stand-in repositories; print the JSON manifest",
    )
    p_build.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="spec file (YAML)")
    p_build.add_argument(
        "--out-root", type=Path, default=DEFAULT_OUT_ROOT, help="where builds are kept"
    )
    p_build.add_argument(
        "--kernel-release", default=os.uname().release, help="value of {kernel_release}"
    )
    args = parser.parse_args(argv)
    try:
        manifest = build(args.spec.resolve(), args.out_root.resolve(), args.kernel_release)
    except SpecError as exc:
        print(f"standin_apt_repo: bad spec: {exc}", file=sys.stderr)
        return 2
    json.dump(manifest, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
