"""Fast checks of the nvidia_driver and cuda_toolkit roles' input handling.

Each test runs ansible-playbook against localhost in check mode (nothing on this
machine changes). GPU presence and the Secure Boot state are read from stand-in
sysfs/efivars files under tmp_path (the role's real detection code reads them,
only the paths differ), so the results do not depend on this machine's hardware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from project import REPO as ROOT

PLAYBOOK = Path(__file__).with_name("nvidia_run_role_check.yml")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def run_role(
    role: str, extra: dict[str, object], check: bool = True, path_prepend: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{path_prepend}:{os.environ['PATH']}" if path_prepend else os.environ["PATH"],
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    }
    variables = {
        "role_under_test": role,
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            *(["--check"] if check else []),
            str(PLAYBOOK),
            "-e",
            json.dumps(variables),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def fake_pci(tmp_path: Path, vendors: list[str]) -> str:
    root = tmp_path / "pci-devices"
    for index, vendor in enumerate(vendors):
        dev = root / f"0000:00:{index + 4:02x}.0"
        dev.mkdir(parents=True)
        (dev / "vendor").write_text(vendor + "\n")
    root.mkdir(exist_ok=True)
    return str(root)


def fake_secure_boot(tmp_path: Path, enabled: bool) -> str:
    var = tmp_path / "SecureBoot-efivar"
    # efivarfs layout: 4 bytes of attributes, then the value (1 = on).
    var.write_bytes(b"\x06\x00\x00\x00" + (b"\x01" if enabled else b"\x00"))
    return str(var)


def recap_ok(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "failed=0" in result.stdout and "changed=0" in result.stdout


def test_driver_branch_must_be_a_number() -> None:
    result = run_role("nvidia_driver", {"nvidia_driver_branch": "r580"})
    assert result.returncode != 0
    assert "nvidia_driver_branch" in result.stdout
    assert "unable to convert to int" in result.stdout


def test_driver_kernel_modules_must_be_open_or_proprietary() -> None:
    result = run_role("nvidia_driver", {"nvidia_driver_kernel_modules": "opne"})
    assert result.returncode != 0
    assert "nvidia_driver_kernel_modules" in result.stdout
    assert "open, proprietary" in result.stdout


def test_driver_without_gpu_says_so_and_skips(tmp_path: Path) -> None:
    # virtio and Intel devices, no NVIDIA one.
    result = run_role(
        "nvidia_driver",
        {
            "__nvidia_driver_pci_devices": fake_pci(tmp_path, ["0x1af4", "0x8086"]),
            "__nvidia_driver_secure_boot_efivar": fake_secure_boot(tmp_path, enabled=False),
        },
    )
    assert recap_ok(result), result.stdout + result.stderr
    assert "No NVIDIA GPU (PCI vendor 0x10de)" in result.stdout
    assert "skipping the driver installation" in result.stdout
    # Nothing from the install path ran.
    assert "Install NVIDIA's cuda-keyring package" not in result.stdout
    assert "List the GPUs with nvidia-smi" not in result.stdout


def test_driver_with_gpu_and_secure_boot_fails_with_instructions(
    tmp_path: Path,
) -> None:
    result = run_role(
        "nvidia_driver",
        {
            "__nvidia_driver_pci_devices": fake_pci(tmp_path, ["0x1af4", "0x10de"]),
            "__nvidia_driver_secure_boot_efivar": fake_secure_boot(tmp_path, enabled=True),
        },
    )
    assert result.returncode != 0
    assert "Secure Boot is enabled" in result.stdout
    assert "--no-shielded-secure-boot" in result.stdout
    assert "nvidia_driver_secure_boot_signed_modules" in result.stdout
    # It stopped before touching apt.
    assert "cuda-keyring" not in result.stdout


def test_driver_bake_mode_with_secure_boot_also_refuses(tmp_path: Path) -> None:
    result = run_role(
        "nvidia_driver",
        {
            "nvidia_driver_install_without_gpu": True,
            "__nvidia_driver_pci_devices": fake_pci(tmp_path, []),
            "__nvidia_driver_secure_boot_efivar": fake_secure_boot(tmp_path, enabled=True),
        },
    )
    assert result.returncode != 0
    assert "installing the driver anyway" in result.stdout
    assert "Secure Boot is enabled" in result.stdout


@pytest.mark.parametrize("version", ["12", "12.8.1", "latest"])
def test_toolkit_version_must_be_major_minor(version: str) -> None:
    result = run_role("cuda_toolkit", {"cuda_toolkit_version": version})
    assert result.returncode != 0
    assert "cuda_toolkit_version must be major.minor" in result.stdout


def test_toolkit_enabled_must_be_a_boolean() -> None:
    result = run_role("cuda_toolkit", {"cuda_toolkit_enabled": "maybe"})
    assert result.returncode != 0
    assert "cuda_toolkit_enabled" in result.stdout


def test_toolkit_disabled_does_nothing() -> None:
    result = run_role("cuda_toolkit", {"cuda_toolkit_enabled": False})
    assert recap_ok(result), result.stdout + result.stderr
    assert "not installing the CUDA toolkit" in result.stdout
    assert "Install the CUDA toolkit" not in result.stdout


def test_gpu_host_without_module_explains_dkms(tmp_path: Path) -> None:
    """The GPU-host check path, on a machine without an nvidia module.

    Runs only verify-gpu.yml, outside check mode: on this path it only reads (modinfo,
    /sys/module/nvidia/version) before it fails, so nothing changes. It must fail with
    the DKMS hint, not reboot and not call nvidia-smi.
    """
    if Path("/sys/module/nvidia").exists():
        pytest.skip("this machine has an nvidia module loaded")
    result = run_role(
        "nvidia_driver",
        {
            "role_tasks_from": "verify-gpu",
            "__nvidia_driver_gpus": ["0000:00:04.0"],
            "__nvidia_driver_install": False,
            "__nvidia_driver_preinstalled": False,
            "nvidia_driver_kernel_headers_packages": ["linux-headers-test"],
            "nvidia_driver_reboot_allowed": False,
            "nvidia_driver_reboot_timeout": 1,
        },
        check=False,
    )
    assert result.returncode != 0
    assert "No nvidia kernel module is installed" in result.stdout
    assert "dkms status" in result.stdout
    assert "Reboot to load" not in result.stdout
    assert "List the GPUs with nvidia-smi" not in result.stdout


@pytest.mark.parametrize("recorded", [False, True])
def test_own_install_is_never_taken_for_a_preinstalled_driver(
    tmp_path: Path, recorded: bool
) -> None:
    """A working 580 driver is left alone, unless this role's record says it installed it.

    Without the record a rerun on a host the role set up would skip holds, persistence
    mode and a branch change. Detection only, in check mode; nvidia-smi is a
    stand-in that answers like a working driver.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 580.105.08\n")
    smi.chmod(0o755)
    record = tmp_path / "nvidia_driver.fact"
    if recorded:
        record.write_text('{"branch": 580, "kernel_modules": "open"}\n')
    result = run_role(
        "nvidia_driver",
        {
            "role_tasks_from": "detect",
            "__nvidia_driver_pci_devices": fake_pci(tmp_path, ["0x10de"]),
            "__nvidia_driver_secure_boot_efivar": fake_secure_boot(tmp_path, enabled=False),
            "__nvidia_driver_record_file": str(record),
        },
        path_prepend=str(bin_dir),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = "A working NVIDIA driver 580.105.08 is already installed" in result.stdout
    assert kept is not recorded
