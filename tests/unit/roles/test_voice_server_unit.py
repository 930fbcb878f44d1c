"""The voice server's systemd unit, rendered for both profiles and rated offline.

`systemd-analyze security --offline=true` (systemd >= 250) rates a unit file without
installing it. The CPU profile must stay at or below 2.0 (molecule/full_stack
checks the installed unit the same way); the GPU profile keeps every setting of the
CPU profile except the commented NVIDIA relaxations, and allows the device groups the
driver registers in /proc/devices. Skipped where systemd-analyze cannot rate offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
from project import REPO as ROOT

TEMPLATE = ROOT / "roles" / "voice_server" / "templates" / "personaplex-server.service.j2"


def render(profile: str, out_dir: Path) -> Path:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["unique"] = lambda items: list(dict.fromkeys(items))
    text = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed",
        voice_server_service_name="personaplex-server",
        voice_server_venv="/opt/personaplex/venv",
        voice_server_user="personaplex",
        voice_server_group="personaplex",
        __voice_server_env_file="/etc/personaplex/server.env",
        __voice_server_wait_script="/usr/local/lib/personaplex/wait_ready.py",
        __voice_server_local_url="https://127.0.0.1:8998",
        voice_server_start_timeout_s=1800,
        voice_server_state_dir="/var/lib/personaplex",
        voice_server_model_dir="/var/lib/personaplex/model",
        voice_server_extra_rw_paths=[],
        voice_server_profile=profile,
        __voice_server_nvidia_devices=["/dev/nvidia0", "/dev/nvidiactl"],
    )
    unit = out_dir / "personaplex-server.service"
    unit.write_text(text)
    return unit


def exposure(unit: Path) -> float:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze cannot rate offline here: {proc.stderr.strip()[:200]}")
    return float(match.group(1))


def test_cpu_profile_exposure_at_most_2(tmp_path: Path) -> None:
    assert exposure(render("cpu", tmp_path)) <= 2.0


def test_gpu_profile_relaxes_only_the_nvidia_devices(tmp_path: Path) -> None:
    cpu = set(render("cpu", tmp_path).read_text().splitlines())
    gpu_unit = render("gpu", tmp_path)
    gpu = set(gpu_unit.read_text().splitlines())
    settings = {line for line in cpu - gpu if line and not line.startswith("#")}
    assert settings == {"PrivateDevices=yes"}
    added = {line.split("=", 1)[0] for line in gpu - cpu if line and not line.startswith("#")}
    assert added == {"DevicePolicy", "DeviceAllow", "ExecStartPre"}
    # Names from the driver's register_chrdev*/alloc_chrdev_region calls.
    for group in ("nvidia", "nvidia-frontend", "nvidia-uvm", "nvidia-caps"):
        assert f"DeviceAllow=char-{group} rw" in gpu
    assert "ExecStartPre=+/usr/bin/nvidia-modprobe -u -c=0" in gpu
    assert exposure(gpu_unit) <= 2.0
