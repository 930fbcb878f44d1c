#!/usr/bin/env python3
"""Build a signed stand-in of Docker's apt repository for the Molecule scenarios.

download.docker.com cannot be reached from the machines that run the tests. This
script builds a local repository with the same layout as
``https://download.docker.com/linux/debian`` (``dists/<suite>/<channel>/binary-<arch>``,
``pool/``, the signing key at ``gpg``), signed with a throw-away key, holding
*stand-in* packages with Docker's package names, version scheme
(``5:28.5.2-1~debian.12~bookworm``) and conflicts. The docker role's real code path
(key download, deb822 source with Signed-By, apt's signature check, version pin,
service, docker group) runs unchanged against it.

What the stand-ins contain: ``docker-ce`` ships a ``docker.service`` whose
``/usr/bin/dockerd`` only prints that it is a stand-in and sleeps (there is no engine;
the real engine is tested with Debian's docker.io), and creates the ``docker`` group
like the real package; the other packages ship marker programs.

Usage::

    python3 molecule/shared/standin_docker_repo.py build [--out-root DIR] [--suite bookworm]

prints a JSON manifest on stdout::

    {"root": ".../www",          # serve this directory; <url>/linux/debian is the repo
     "tarball": ".../www.tar.gz",  # the same tree as one archive
     "hash": "...",                # build id (hash of this file and the arguments)
     "packages": {"docker-ce": ["5:28.5.1-1~debian.12~bookworm", ...], ...},
     "key": "linux/debian/gpg", "fingerprint": "..."}

A finished build is reused (the directory name is a hash of this file and the
arguments); concurrent callers serialise on a lock. Needs ``dpkg-deb`` and ``gpg``.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT_ROOT = HERE.parent.parent / ".work" / "standin-docker-apt"
RELEASE_DATE = "Thu, 01 Jan 2026 00:00:00 UTC"
SOURCE_DATE_EPOCH = "1767225600"
CHANNEL = "stable"
ARCH = "amd64"


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


def _run(
    cmd: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(list(cmd), check=True, capture_output=True, env=env)
    except FileNotFoundError as exc:
        raise SystemExit(
            f"standin_docker_repo: '{cmd[0]}' is not installed; install it (Debian: apt-get install dpkg gnupg) and rerun"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"standin_docker_repo: {' '.join(cmd)} failed ({exc.returncode}):\n{exc.stderr.decode(errors='replace')}"
        ) from exc


def _build_deb(pkg: Package, workdir: Path, pool: Path) -> Path:
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
        f"Architecture: {ARCH}",
        "Maintainer: Stand-in Docker packages (TEST ONLY) <standin-docker@invalid>",
        "Section: admin",
        "Priority: optional",
    ]
    control += [
        f"{k}: {v}"
        for k, v in (
            ("Depends", pkg.depends),
            ("Conflicts", pkg.conflicts),
            ("Replaces", pkg.replaces),
        )
        if v
    ]
    control.append(f"Description: {pkg.description}")
    (tree / "DEBIAN" / "control").write_text(
        "\n".join(control) + "\n", encoding="utf-8"
    )
    if pkg.postinst:
        postinst = tree / "DEBIAN" / "postinst"
        postinst.write_text(pkg.postinst, encoding="utf-8")
        postinst.chmod(0o755)
    upstream_version = pkg.version.split(":", 1)[-1]
    deb = pool / f"{pkg.name}_{upstream_version}_{ARCH}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    _run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        env=env,
    )
    return deb


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(
        data
    ).hexdigest()  # apt wants MD5Sum too


def build_tree(
    www: Path, workdir: Path, suite: str, debian_major: str
) -> dict[str, object]:
    """Build the repository under www/linux/debian; return the manifest (paths relative to www)."""
    repo = www / "linux" / "debian"
    pool = repo / "pool" / suite / CHANNEL
    pool.mkdir(parents=True)
    gnupghome = workdir / "gnupg"
    gnupghome.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupghome)}
    uid = "Stand-in Docker archive key (TEST ONLY) <standin-docker@invalid>"
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
    (repo / "gpg").write_bytes(
        _run(["gpg", "--batch", "--armor", "--export"], env=env).stdout
    )
    listing = _run(
        ["gpg", "--batch", "--with-colons", "--list-keys"], env=env
    ).stdout.decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )

    stanzas: list[str] = []
    manifest_packages: dict[str, list[str]] = {}
    for pkg in packages(suite, debian_major):
        deb = _build_deb(pkg, workdir, pool)
        data = deb.read_bytes()
        md5, sha256 = _digests(data)
        fields = _run(["dpkg-deb", "--field", str(deb)]).stdout.decode().rstrip("\n")
        stanzas.append(
            "\n".join(
                [
                    fields,
                    f"Filename: {deb.relative_to(repo)}",
                    f"Size: {len(data)}",
                    f"MD5sum: {md5}",
                    f"SHA256: {sha256}",
                ]
            )
        )
        manifest_packages.setdefault(pkg.name, []).append(pkg.version)

    index_dir = repo / "dists" / suite / CHANNEL / f"binary-{ARCH}"
    index_dir.mkdir(parents=True)
    packages_bytes = ("\n\n".join(stanzas) + "\n").encode()
    (index_dir / "Packages").write_bytes(packages_bytes)
    (index_dir / "Packages.gz").write_bytes(
        gzip.compress(packages_bytes, mtime=int(SOURCE_DATE_EPOCH))
    )

    dist = repo / "dists" / suite
    md5_lines, sha_lines = [], []
    for f in sorted(p for p in dist.rglob("*") if p.is_file()):
        data = f.read_bytes()
        md5, sha256 = _digests(data)
        rel = f.relative_to(dist)
        md5_lines.append(f" {md5} {len(data)} {rel}")
        sha_lines.append(f" {sha256} {len(data)} {rel}")
    release = "\n".join(
        [
            "Origin: Docker (stand-in)",
            "Label: Docker CE (stand-in)",
            f"Suite: {suite}",
            f"Codename: {suite}",
            f"Architectures: {ARCH}",
            f"Components: {CHANNEL}",
            f"Date: {RELEASE_DATE}",
            "Description: Stand-in of Docker's apt repository for tests (no engine inside)",
            "MD5Sum:",
            *md5_lines,
            "SHA256:",
            *sha_lines,
        ]
    )
    (dist / "Release").write_text(release + "\n", encoding="utf-8")
    sign = [
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
        [*sign, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release")],
        env=env,
    )
    _run(
        [
            *sign,
            "--armor",
            "--detach-sign",
            "-o",
            str(dist / "Release.gpg"),
            str(dist / "Release"),
        ],
        env=env,
    )
    return {
        "packages": manifest_packages,
        "key": "linux/debian/gpg",
        "fingerprint": fingerprint,
    }


def build(out_root: Path, suite: str, debian_major: str) -> dict[str, object]:
    """Build (or reuse) the repository; return the manifest with absolute root and tarball."""
    digest = hashlib.sha256(
        Path(__file__).read_bytes() + f"{suite}/{debian_major}".encode()
    ).hexdigest()[:16]
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / digest
    with (out_root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest_file = final / "manifest.json"
        if not manifest_file.is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=out_root))
            try:
                www = staging / "www"
                www.mkdir()
                work = staging / "work"
                work.mkdir()
                manifest = build_tree(www, work, suite, debian_major)
                with tarfile.open(staging / "www.tar.gz", "w:gz") as tar:
                    tar.add(www, arcname=".")
                # The private key and the package trees are not needed after the build.
                shutil.rmtree(work, ignore_errors=True)
                (staging / "manifest.json").write_text(
                    json.dumps(manifest, indent=2), encoding="utf-8"
                )
                if final.exists():
                    shutil.rmtree(final)
                staging.rename(final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    return {
        **manifest,
        "root": str(final / "www"),
        "tarball": str(final / "www.tar.gz"),
        "hash": digest,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build", help="build or reuse the repository and print its manifest (JSON)"
    )
    b.add_argument(
        "--out-root",
        type=Path,
        default=DEFAULT_OUT_ROOT,
        help="where builds are kept (default: .work/standin-docker-apt)",
    )
    b.add_argument(
        "--suite",
        default="bookworm",
        help="suite (release codename) to publish (default: bookworm)",
    )
    b.add_argument(
        "--debian-major",
        default="12",
        help="Debian major version in the package versions (default: 12)",
    )
    args = parser.parse_args(argv)
    json.dump(build(args.out_root, args.suite, args.debian_major), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
