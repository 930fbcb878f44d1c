"""nvidia_driver role against the stand-in NVIDIA repository, in image-baking mode.

Runs on the control node; `host` is the molecule container. Every test checks
something the role is responsible for and would fail if the role stopped doing it.
The packages are stand-ins (molecule/shared/standin_apt_repo/packages.yml); the apt
machinery, signatures, pinning, holds, modprobe.d, initramfs and systemd are real.
"""

from __future__ import annotations

import pytest

REPO_URL = "http://127.0.0.1:8765/compute/cuda/repos/debian12/x86_64/"
KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
SOURCE = "/etc/apt/sources.list.d/cuda.sources"
BRANCH = "580"
DRIVER_VERSION = "580.105.08-1"
# Every driver package the default install (open kernel modules) brings in.
DRIVER_PACKAGES = [
    "nvidia-open",
    "nvidia-driver",
    "nvidia-driver-cuda",
    "nvidia-kernel-open-dkms",
    "firmware-nvidia-gsp",
    "libcuda1",
    "libnvidia-ml1",
    "nvidia-smi",
    "nvidia-persistenced",
]


@pytest.fixture(scope="module")
def offered(host) -> dict[str, set[str]]:
    """Versions the instance's apt sees for each driver package (one apt-cache call)."""
    out = host.check_output("apt-cache madison " + " ".join(DRIVER_PACKAGES))
    versions: dict[str, set[str]] = {}
    for line in out.splitlines():
        name, version, _ = (field.strip() for field in line.split("|", 2))
        versions.setdefault(name, set()).add(version)
    return versions


@pytest.fixture(scope="module")
def dpkg(host) -> dict[str, tuple[str, str]]:
    """Every package dpkg knows: name -> (version, selection), read with one command."""
    out = host.check_output(
        "dpkg-query -W -f '${Package} ${Version} ${db:Status-Want} ${db:Status-Status}\\n'"
    )
    packages = {}
    for line in out.splitlines():
        parts = line.split()
        # Packages dpkg only remembers (no version) have fewer fields.
        if len(parts) == 4 and parts[3] == "installed":
            packages[parts[0]] = (parts[1], parts[2])
    return packages


def test_deb822_source_names_repo_and_keyring(host):
    f = host.file(SOURCE)
    assert f.is_file
    fields = dict(
        line.split(": ", 1)
        for line in f.content_string.splitlines()
        if ": " in line and not line.startswith("#")
    )
    assert fields["Types"] == "deb"
    assert fields["URIs"] == REPO_URL
    assert fields["Suites"] == "/"
    assert fields["Signed-By"] == KEYRING


def _fingerprints(host, source: str) -> list[str]:
    out = host.check_output(
        f"{source} | gpg --show-keys --with-colons | grep '^fpr' | cut -d: -f10"
    )
    return out.split()


def test_keyring_from_cuda_keyring_holds_the_repository_key(host, dpkg):
    assert dpkg["cuda-keyring"][0] == "1.1-1"
    # The key the served repository publishes (and signs its InRelease with).
    published = _fingerprints(host, f"curl -fsS {REPO_URL}3bf863cc.pub")
    assert len(published) == 1
    assert published == _fingerprints(host, f"cat {KEYRING}")


def test_exactly_one_source_names_the_repository(host):
    # nvidia_driver and cuda_toolkit both include nvidia_cuda_repo in converge.yml.
    out = host.check_output(
        f"grep -rlF {REPO_URL.rstrip('/')} /etc/apt/sources.list /etc/apt/sources.list.d/ || true"
    )
    assert out.split() == [SOURCE]


def test_one_line_source_from_cuda_keyring_removed(host):
    # It points at NVIDIA's real URL: left in place, apt would have two sources.
    assert not host.file("/etc/apt/sources.list.d/cuda-debian12-x86_64.list").exists


def test_apt_verifies_the_repository_signature(host):
    cmd = host.run(
        f"apt-get update -o Dir::Etc::sourcelist={SOURCE}"
        " -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0"
    )
    assert cmd.rc == 0, cmd.stderr
    assert "NO_PUBKEY" not in cmd.stdout + cmd.stderr
    assert "not signed" not in cmd.stdout + cmd.stderr


def test_pinning_package_of_the_branch_installed(dpkg):
    assert f"nvidia-driver-pinning-{BRANCH}" in dpkg
    assert "nvidia-driver-pinning-590" not in dpkg


@pytest.mark.parametrize("name", DRIVER_PACKAGES)
def test_driver_package_on_pinned_branch(dpkg, offered, name):
    # apt also sees branch 590 (newer); only 580 may be installed.
    assert {DRIVER_VERSION, "590.48.01-1"} <= offered[name]
    assert name in dpkg
    assert dpkg[name][0] == DRIVER_VERSION


@pytest.mark.parametrize("name", [*DRIVER_PACKAGES, f"nvidia-driver-pinning-{BRANCH}"])
def test_driver_package_held(dpkg, name):
    assert dpkg[name][1] == "hold"


def test_unrelated_packages_not_held(dpkg):
    assert dpkg["cuda-keyring"][1] == "install"
    assert dpkg["apt"][1] == "install"


def test_kernel_headers_for_running_kernel(host, dpkg):
    kernel = host.check_output("uname -r")
    assert f"linux-headers-{kernel}" in dpkg


def test_nouveau_blacklisted(host):
    f = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert f.is_file
    assert f.mode == 0o644
    lines = [
        line.strip() for line in f.content_string.splitlines() if line and not line.startswith("#")
    ]
    assert "blacklist nouveau" in lines
    assert "options nouveau modeset=0" in lines


def test_initramfs_rebuilt_with_blacklist(host):
    initrds = host.check_output("ls /boot/initrd.img-*").split()
    assert initrds, "prepare.yml installs a kernel, so an initramfs must exist"
    for initrd in initrds:
        listing = host.check_output(f"lsinitramfs {initrd}").split()
        assert "etc/modprobe.d/blacklist-nouveau.conf" in listing, initrd


def test_persistenced_enabled_not_started_without_gpu(host):
    # Baking mode: enabled so it starts on the GPU VM made from this image; not
    # started here, where there is no GPU to keep initialised.
    svc = host.service("nvidia-persistenced")
    assert svc.is_enabled
    assert not svc.is_running


def _has_nvidia_gpu(host) -> bool:
    return host.run("grep -qx 0x10de /sys/bus/pci/devices/*/vendor").rc == 0


def test_gpu_listed_by_nvidia_smi(host):
    """GPU-only: on a host with an NVIDIA GPU, nvidia-smi -L lists it."""
    if not _has_nvidia_gpu(host):
        pytest.skip("GPU-only check: no NVIDIA GPU on this host (runs in the gce scenario)")
    out = host.check_output("nvidia-smi -L")
    assert out.startswith("GPU 0:")
