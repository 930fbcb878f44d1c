"""The GPU-host branch of the role (CDI spec) with a simulated NVIDIA PCI device.

The instance has no GPU. This test points the role's PCI device directory at a fake
sysfs tree holding one device with NVIDIA's vendor ID (0x10de), converges again from
the control node and checks the CDI steps: the stand-in `nvidia-ctk cdi generate`
writes a spec into the scratch file, the role installs it at /etc/cdi/nvidia.yaml,
and a second run changes nothing. The `docker run --gpus all` check stays off: it
needs a real GPU and driver (molecule/gce). The spec and the fake tree are removed
afterwards.
"""

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


def converge_as_gpu_host() -> subprocess.CompletedProcess[str]:
    extra = (
        f'{{"__nvidia_container_toolkit_pci_devices": "{FAKE_PCI}",'
        ' "nvidia_container_toolkit_gpu_check": false}'
    )
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
        "-e",
        extra,
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
