"""A branch change on a host the role installed (the role used to leave the old branch in place).

Runs last (file order): converges from the control node with nvidia_driver_branch=590.
The role knows the 580 driver is its own (its record), releases the 580 holds, installs
NVIDIA's nvidia-driver-pinning-590 (it conflicts with -580 and owns the same pin file),
moves every driver package to 590 and holds them again. Then converges back to 580 so
the scenario's other tests can run again on this instance.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

testinfra_hosts = ["podman://molecule-nvidia_driver"]

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
PLAIN_ENV = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
PACKAGES = [
    "nvidia-open",
    "nvidia-driver",
    "nvidia-driver-cuda",
    "nvidia-kernel-open-dkms",
    "libcuda1",
    "libegl-nvidia0",
    "nvidia-persistenced",
]


def converge(branch: int) -> subprocess.CompletedProcess[str]:
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
        "-e",
        json.dumps({"nvidia_driver_branch": branch}),
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=PLAIN_ENV, timeout=900, check=False
    )


def selections(host) -> dict[str, tuple[str, str]]:
    """Installed packages: name -> (version, selection)."""
    out = host.check_output(
        "dpkg-query -W -f '${Package} ${Version} ${db:Status-Want} ${db:Status-Status}\\n'"
    )
    rows = (line.split() for line in out.splitlines())
    # Removed packages dpkg still remembers (config files) are not "installed".
    return {row[0]: (row[1], row[2]) for row in rows if len(row) == 4 and row[3] == "installed"}


def test_branch_change_moves_pins_and_holds(host):
    try:
        result = converge(590)
        assert result.returncode == 0, result.stdout[-3000:]
        now = selections(host)
        assert "nvidia-driver-pinning-590" in now
        assert "nvidia-driver-pinning-580" not in now
        for name in PACKAGES:
            assert now[name] == ("590.48.01-1", "hold"), name
        pin = host.check_output("dpkg -S /etc/apt/preferences.d/nvidia-driver-pin")
        assert pin.startswith("nvidia-driver-pinning-590:")
    finally:
        back = converge(580)
        assert back.returncode == 0, back.stdout[-3000:]
        assert selections(host)["nvidia-open"] == ("580.105.08-1", "hold")
