"""The GPU-host branch of the role (CDI spec) with a simulated NVIDIA PCI device.

The instance has no GPU. This test points the role's PCI device directory at a fake
sysfs tree holding one device with NVIDIA's vendor ID (0x10de), converges again from
the control node and checks the CDI steps: the stand-in `nvidia-ctk cdi generate`
writes a spec into the scratch file, the role installs it at /etc/cdi/nvidia.yaml,
and a second run changes nothing. The `docker run --gpus all` check stays off: it
needs a real GPU and driver (molecule/gce). The spec and the fake tree are removed
afterwards.

Then the same host with toolkit 1.18.1, whose package ships nvidia-cdi-refresh.path/
.service: the role must leave CDI to them (enabled, the path watch running, the spec in
/var/run/cdi written by the unit) and remove its own stale static spec. The fixture
plays an installed driver there (a modules.dep naming nvidia.ko and an nvidia-smi, the
units' conditions) and converges back to the scenario's 1.17.8 afterwards.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

# Plain output for the assertions (molecule exports ANSIBLE_FORCE_COLOR=1).
PLAIN_ENV = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}

testinfra_hosts = ["podman://molecule-nvidia_container_toolkit"]

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
FAKE_PCI = "/run/molecule-fake-pci"
CDI_SPEC = "/etc/cdi/nvidia.yaml"


def converge_as_gpu_host(**more: str) -> subprocess.CompletedProcess[str]:
    extra = {
        "__nvidia_container_toolkit_pci_devices": FAKE_PCI,
        "nvidia_container_toolkit_gpu_check": False,
        **more,
    }
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
        "-e",
        json.dumps(extra),
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=PLAIN_ENV, timeout=600, check=False
    )


def changed_count(output: str) -> int:
    match = re.search(r"changed=(\d+)", output)
    assert match, output[-2000:]
    return int(match.group(1))


@pytest.fixture(scope="module")
def simulated_gpu(host):
    host.run_test(
        f"mkdir -p {FAKE_PCI}/0000:00:04.0 {FAKE_PCI}/0000:00:05.0"
        f" && echo 0x10de > {FAKE_PCI}/0000:00:04.0/vendor"
        f" && echo 0x1af4 > {FAKE_PCI}/0000:00:05.0/vendor"
    )
    yield
    host.run(f"rm -rf {FAKE_PCI} {CDI_SPEC}")


def test_cdi_spec_written_on_a_gpu_host(host, simulated_gpu):
    assert not host.file(CDI_SPEC).exists
    first = converge_as_gpu_host()
    assert first.returncode == 0, first.stdout[-3000:]
    assert changed_count(first.stdout) >= 1
    spec = host.file(CDI_SPEC)
    assert spec.is_file
    assert spec.mode == 0o644
    # Written by the stand-in nvidia-ctk the role ran (not by the test).
    assert "STAND-IN CDI spec" in spec.content_string
    assert "kind: nvidia.com/gpu" in spec.content_string

    second = converge_as_gpu_host()
    assert second.returncode == 0, second.stdout[-3000:]
    assert changed_count(second.stdout) == 0


RUN_SPEC = "/var/run/cdi/nvidia.yaml"


@pytest.fixture()
def driver_installed(host):
    kernel = host.check_output("uname -r")
    host.run_test(
        f"mkdir -p /lib/modules/{kernel}"
        f" && echo 'kernel/drivers/video/nvidia.ko:' > /lib/modules/{kernel}/modules.dep"
        " && printf '#!/bin/sh\\nexit 0\\n' > /usr/bin/nvidia-smi && chmod 755 /usr/bin/nvidia-smi"
    )
    yield
    host.run(f"rm -rf /lib/modules/{kernel} /usr/bin/nvidia-smi {RUN_SPEC}")


def test_cdi_left_to_the_refresh_units_with_toolkit_1_18(host, simulated_gpu, driver_installed):
    # The static spec an earlier converge with 1.17 wrote (the test above).
    host.run_test(f"mkdir -p /etc/cdi && echo '# written for 1.17' > {CDI_SPEC}")
    try:
        first = converge_as_gpu_host(nvidia_container_toolkit_version="1.18.1-1")
        assert first.returncode == 0, first.stdout[-3000:]
        assert not host.file(CDI_SPEC).exists
        watch = host.service("nvidia-cdi-refresh.path")
        assert watch.is_enabled
        assert watch.is_running
        assert host.service("nvidia-cdi-refresh.service").is_enabled
        # Written by the stand-in nvidia-ctk that the refresh unit ran.
        assert "STAND-IN CDI spec" in host.file(RUN_SPEC).content_string

        second = converge_as_gpu_host(nvidia_container_toolkit_version="1.18.1-1")
        assert second.returncode == 0, second.stdout[-3000:]
        assert changed_count(second.stdout) == 0
    finally:
        back = subprocess.run(
            ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(CONVERGE)],
            capture_output=True,
            text=True,
            env=PLAIN_ENV,
            timeout=600,
            check=False,
        )
        assert back.returncode == 0, back.stdout[-3000:]
