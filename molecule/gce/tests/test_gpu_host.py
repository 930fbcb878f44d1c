"""GPU checks on a real T4 VM (molecule/gce). Nothing here is stood in."""

import json

import pytest


@pytest.fixture(scope="module")
def root(host):
    # The SSH user is not root; these checks read root-only state.
    with host.sudo():
        yield host


def test_nvidia_smi_lists_the_t4(root):
    out = root.check_output("nvidia-smi -L")
    assert "Tesla T4" in out


def test_docker_from_dockers_repository(root):
    assert root.package("docker-ce").is_installed
    assert (
        "download.docker.com"
        in root.file("/etc/apt/sources.list.d/docker.sources").content_string
    )
    assert root.service("docker").is_running


def test_daemon_json_has_the_nvidia_runtime(root):
    options = json.loads(root.file("/etc/docker/daemon.json").content_string)
    assert options["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert options["log-opts"] == {"max-size": "10m", "max-file": "3"}


def test_toolkit_held(root):
    held = root.check_output("apt-mark showhold").split()
    assert "nvidia-container-toolkit" in held


def test_cdi_spec_lists_the_gpu(root):
    assert "nvidia.com/gpu=" in root.check_output("nvidia-ctk cdi list")
    assert root.file("/etc/cdi/nvidia.yaml").is_file


def test_container_with_gpus_all_sees_the_t4(root):
    out = root.check_output("docker run --rm --gpus all ubuntu:24.04 nvidia-smi -L")
    assert "Tesla T4" in out
