"""nvidia_container_toolkit role against the stand-in NVIDIA repository.

Real here: the deb822 source and key download over HTTP, apt's signature check,
the pinned install and the holds, daemon.json written by the docker role, the real
dockerd running a container through the `nvidia` runtime. Stand-in: the packages
(NVIDIA's names and versions; `nvidia-container-runtime` hands over to runc, there is
no GPU). GPU-only checks skip themselves where no NVIDIA PCI device exists.
"""

import json

import pytest

REPO_URL = "http://127.0.0.1:8765/libnvidia-container/stable/deb/amd64"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
PINNED = "1.17.8-1"
NEWEST_IN_REPO = "1.18.1-1"
PACKAGES = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
]
EXPECTED_DAEMON_OPTIONS = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "storage-driver": "vfs",
    "default-cgroupns-mode": "private",
    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
}
TEST_IMAGE = "molecule-local/busybox:test"


def has_nvidia_gpu(host) -> bool:
    out = host.run("grep -l -x -F 0x10de /sys/bus/pci/devices/*/vendor")
    return out.rc == 0 and bool(out.stdout.strip())


def test_deb822_source(host):
    f = host.file(SOURCES)
    assert f.is_file
    fields = dict(
        line.split(": ", 1) for line in f.content_string.splitlines() if ": " in line
    )
    assert fields["URIs"] == REPO_URL
    assert fields["Suites"] == "/"  # flat repository
    assert "Components" not in fields
    assert fields["Signed-By"] == KEYRING


def test_keyring_is_the_repository_key(host):
    served = host.check_output(
        "python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8765/libnvidia-container/gpgkey').read().decode())\""
    )
    assert host.file(KEYRING).content_string.strip() == served.strip()
    assert "BEGIN PGP PUBLIC KEY BLOCK" in served


def test_apt_trusts_the_repository(host):
    # The index from the signed repository is in apt's lists: both releases are known.
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert NEWEST_IN_REPO in policy
    assert PINNED in policy
    assert "127.0.0.1:8765/libnvidia-container" in policy


@pytest.mark.parametrize("name", PACKAGES)
def test_package_pinned(host, name):
    pkg = host.package(name)
    assert pkg.is_installed
    assert pkg.version == PINNED


def test_packages_held(host):
    held = set(host.check_output("apt-mark showhold").split())
    assert set(PACKAGES) <= held


def test_daemon_json_written_by_the_docker_role_only(host):
    content = host.file("/etc/docker/daemon.json").content.decode()
    assert json.loads(content) == EXPECTED_DAEMON_OPTIONS
    # Byte for byte the docker role's rendering (sorted keys, 2-space indent): a second
    # writer such as `nvidia-ctk runtime configure` would have reformatted the file.
    assert (
        content == json.dumps(EXPECTED_DAEMON_OPTIONS, indent=2, sort_keys=True) + "\n"
    )


def test_dockerd_knows_the_nvidia_runtime(host):
    assert host.service("docker").is_running
    runtimes = [
        line
        for line in host.check_output("docker info").splitlines()
        if "Runtimes:" in line
    ]
    assert runtimes and "nvidia" in runtimes[0].split()


def test_container_runs_through_the_nvidia_runtime(host):
    # The stand-in nvidia-container-runtime hands over to runc: this proves dockerd
    # resolves and starts the registered runtime, not that a GPU is injected.
    host.run_test(
        "set -e; rm -rf /tmp/bbroot; mkdir -p /tmp/bbroot/bin; cp /bin/busybox /tmp/bbroot/bin/busybox"
    )
    host.check_output(f"tar -C /tmp/bbroot -c . | docker import - {TEST_IMAGE}")
    out = host.check_output(
        f"docker run --rm --runtime nvidia {TEST_IMAGE} /bin/busybox echo via-nvidia-runtime"
    )
    assert out.strip() == "via-nvidia-runtime"


def test_no_cdi_spec_without_gpu(host):
    if has_nvidia_gpu(host):
        pytest.skip("this host has an NVIDIA GPU; see test_cdi_spec_on_gpu_host")
    assert not host.file("/etc/cdi/nvidia.yaml").exists


@pytest.mark.gpu
def test_cdi_spec_on_gpu_host(host):
    if not has_nvidia_gpu(host):
        pytest.skip("GPU only: no NVIDIA PCI device (vendor 0x10de) on this host")
    spec = host.file("/etc/cdi/nvidia.yaml")
    assert spec.is_file
    assert "nvidia.com/gpu" in spec.content_string


@pytest.mark.gpu
def test_gpu_container_sees_the_gpu(host):
    if not has_nvidia_gpu(host):
        pytest.skip("GPU only: no NVIDIA PCI device (vendor 0x10de) on this host")
    out = host.check_output("docker run --rm --gpus all ubuntu:24.04 nvidia-smi -L")
    assert out.startswith("GPU 0:")


def test_preexisting_one_line_source_replaced(host):
    # prepare.yml seeds NVIDIA's documented .list with another Signed-By.
    assert not host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.list").exists
    cmd = host.run("apt-get update")
    assert cmd.rc == 0, cmd.stderr
    assert "Conflicting values" not in cmd.stdout + cmd.stderr
