"""GPU checks on a real T4 VM (molecule/gce). Nothing here is stood in."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNIT_TEMPLATE = REPO / "roles" / "voice_server" / "templates" / "personaplex-server.service.j2"


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
        "download.docker.com" in root.file("/etc/apt/sources.list.d/docker.sources").content_string
    )
    assert root.service("docker").is_running


def test_daemon_json_has_the_nvidia_runtime(root):
    options = json.loads(root.file("/etc/docker/daemon.json").content_string)
    assert options["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert options["log-opts"] == {"max-size": "10m", "max-file": "3"}


def test_toolkit_held(root):
    held = root.check_output("apt-mark showhold").split()
    assert "nvidia-container-toolkit" in held


def test_cdi_left_to_the_toolkits_refresh_units(root):
    # Toolkit 1.18: nvidia-cdi-refresh writes /var/run/cdi/nvidia.yaml; no static copy.
    assert root.service("nvidia-cdi-refresh.path").is_enabled
    assert root.service("nvidia-cdi-refresh.path").is_running
    assert root.file("/var/run/cdi/nvidia.yaml").is_file
    assert not root.file("/etc/cdi/nvidia.yaml").exists
    assert "nvidia.com/gpu=" in root.check_output("nvidia-ctk cdi list")


def test_persistence_mode_on(root):
    out = root.check_output("nvidia-smi --query-gpu=persistence_mode --format=csv,noheader")
    assert out.strip() == "Enabled"
    assert root.service("nvidia-persistenced").is_running


def test_dkms_built_the_module_for_every_installed_kernel(root):
    status = root.check_output("dkms status")
    images = root.check_output(
        "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' 'linux-image-[0-9]*'"
    )
    kernels = [
        line.split()[0].removeprefix("linux-image-")
        for line in images.splitlines()
        if line.split()[1:2] and line.split()[1].endswith("i")
    ]
    assert kernels
    for kernel in kernels:
        assert re.search(
            rf"^nvidia[/,] ?[^,]+, {re.escape(kernel)}, [^:]+: installed", status, re.M
        ), (
            kernel,
            status,
        )


def test_kernel_meta_packages_held(root):
    held = root.check_output("apt-mark showhold").split()
    assert {"linux-image-cloud-amd64", "linux-headers-cloud-amd64"} <= set(held)


def test_nvidia_uvm_loaded_at_boot(root):
    # The converge rebooted after the driver install: modules-load.d loaded it.
    assert root.file("/sys/module/nvidia_uvm").is_directory


def test_unit_device_rules_name_the_drivers_proc_devices_groups(root):
    """Every NVIDIA character-device group the driver registered is allowed by the unit."""
    root.run_test("nvidia-modprobe -u -c=0")
    groups = {
        line.split()[1]
        for line in root.file("/proc/devices")
        .content_string.split("Block devices:")[0]
        .splitlines()
        if len(line.split()) == 2 and line.split()[1].startswith("nvidia")
    }
    allowed = set(re.findall(r"^DeviceAllow=char-(\S+) rw$", UNIT_TEMPLATE.read_text(), re.M))
    assert "nvidia-uvm" in groups
    assert {"nvidia", "nvidia-frontend"} & groups
    # nvidia-nvlink / nvidia-caps-imex-channels are not used by a single-GPU server.
    needed = groups - {"nvidia-nvlink", "nvidia-caps-imex-channels", "nvidia-nvswitch"}
    assert needed <= allowed, (groups, allowed)


def test_container_with_gpus_all_sees_the_t4(root):
    out = root.check_output("docker run --rm --gpus all ubuntu:24.04 nvidia-smi -L")
    assert "Tesla T4" in out
