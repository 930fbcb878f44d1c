"""nvidia_driver role against the stand-in NVIDIA repository, in image-baking mode.

Runs on the control node; `host` is the molecule container. Every test checks
something the role is responsible for and would fail if the role stopped doing it.
The packages are stand-ins (molecule/shared/standin_repo/nvidia.yml); the apt
machinery, signatures, pinning, holds, modprobe.d, initramfs and systemd are real.
"""

from __future__ import annotations

import json

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
    "nvidia-modprobe",
    # The GL/EGL/GLX/GLES libraries: no nvidia- or libnvidia- prefix.
    "nvidia-driver-libs",
    "libegl-nvidia0",
    "libglx-nvidia0",
    "libgles-nvidia2",
    "libgl1-nvidia-glvnd-glx",
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


def test_persistenced_override_turns_persistence_mode_on(host):
    # The packaged unit (stand-in shaped like the real one) runs --no-persistence-mode.
    packaged = host.file("/lib/systemd/system/nvidia-persistenced.service").content_string
    assert "--no-persistence-mode" in packaged
    exec_start = host.check_output("systemctl show -p ExecStart --value nvidia-persistenced")
    assert "--persistence-mode" in exec_start
    assert "--no-persistence-mode" not in exec_start
    stop_when_unneeded = "systemctl show -p StopWhenUnneeded --value nvidia-persistenced"
    assert host.check_output(stop_when_unneeded) == "no"


def test_persistenced_started_at_boot_although_static(host):
    # The packaged unit has no [Install]: "enabled" means nothing. multi-user.target
    # must want it.
    assert host.check_output("systemctl is-enabled nvidia-persistenced || true") == "static"
    wants = host.check_output("systemctl show -p Wants --value multi-user.target").split()
    assert "nvidia-persistenced.service" in wants


def test_persistenced_stays_up_in_persistence_mode_when_started(host):
    """Started by hand, the daemon stays (StopWhenUnneeded off) with the override's args."""
    svc = host.service("nvidia-persistenced")
    # Baking mode, no GPU: the role does not start it.
    assert not svc.is_running
    host.run_test("rm -f /run/standin/nvidia-persistenced.args")
    try:
        host.run_test("systemctl start nvidia-persistenced")
        # StopWhenUnneeded=true would stop it at once: nothing else needs it here.
        host.run_test("sleep 2")
        assert host.check_output("systemctl is-active nvidia-persistenced || true") == "active"
        args = host.file("/run/standin/nvidia-persistenced.args").content_string.split()
        assert "--persistence-mode" in args
        assert "--no-persistence-mode" not in args
    finally:
        host.run("systemctl stop nvidia-persistenced")


def test_nvidia_uvm_loaded_at_boot(host):
    f = host.file("/etc/modules-load.d/nvidia.conf")
    assert f.mode == 0o644
    modules = [
        line.strip() for line in f.content_string.splitlines() if line.strip() and line[0] != "#"
    ]
    assert modules == ["nvidia", "nvidia-uvm"]


def test_install_recorded_as_the_roles_own(host):
    f = host.file("/etc/ansible/facts.d/nvidia_driver.fact")
    record = json.loads(f.content_string)
    assert record["branch"] == int(BRANCH)
    assert record["kernel_modules"] == "open"


def test_nvidias_pin_file_from_the_pinning_package(host):
    # NVIDIA's pinning package writes this one file (src: rules, priority 1000).
    assert host.check_output("dpkg -S /etc/apt/preferences.d/nvidia-driver-pin").startswith(
        f"nvidia-driver-pinning-{BRANCH}:"
    )


@pytest.mark.parametrize("name", DRIVER_PACKAGES)
def test_apt_candidate_stays_on_branch(host, name):
    # The pin must cover every driver package: apt's candidate is the branch's
    # version although 590 is newer (an `apt-get upgrade` would otherwise move it).
    out = host.check_output(f"apt-cache policy {name}")
    candidate = next(line for line in out.splitlines() if "Candidate:" in line)
    assert candidate.split()[-1] == DRIVER_VERSION


def test_foreign_cuda_source_removed_and_apt_works(host):
    # prepare.yml seeds cuda-dlvm.list with another Signed-By for the same URL.
    assert not host.file("/etc/apt/sources.list.d/cuda-dlvm.list").exists
    cmd = host.run("apt-get update")
    assert cmd.rc == 0, cmd.stderr
    assert "Conflicting values" not in cmd.stdout + cmd.stderr


KERNEL_META = ["linux-image-standin-amd64", "linux-headers-standin-amd64"]
NEWER_KERNEL = "99.0.0-1-standin-amd64"


def test_flavour_headers_installed(dpkg):
    # The meta-package brings the headers of the newest kernel ABI too.
    assert "linux-headers-standin-amd64" in dpkg
    assert f"linux-headers-{NEWER_KERNEL}" in dpkg


@pytest.mark.parametrize("name", KERNEL_META)
def test_kernel_meta_packages_held(dpkg, name):
    assert dpkg[name][1] == "hold"


def test_upgrade_does_not_boot_a_newer_kernel(host):
    # A newer kernel is offered; held, a full upgrade must not install its image.
    out = host.check_output("apt-get -s dist-upgrade")
    assert f"linux-image-{NEWER_KERNEL}" not in out


def _has_nvidia_gpu(host) -> bool:
    return host.run("grep -qx 0x10de /sys/bus/pci/devices/*/vendor").rc == 0


def test_gpu_listed_by_nvidia_smi(host):
    """GPU-only: on a host with an NVIDIA GPU, nvidia-smi -L lists it."""
    if not _has_nvidia_gpu(host):
        pytest.skip("GPU-only check: no NVIDIA GPU on this host (runs in the gce scenario)")
    out = host.check_output("nvidia-smi -L")
    assert out.startswith("GPU 0:")
