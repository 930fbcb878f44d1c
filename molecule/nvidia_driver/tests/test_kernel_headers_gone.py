"""The running kernel's headers are gone from the archive (compute-gpu-installation#28).

The container cannot run another kernel, so these runs tell the role (through its
`__nvidia_driver_running_kernel` variable) that it runs 6.1.0-1-standin-amd64, an ABI
whose image exists but whose headers the stand-in archive no longer carries, as on a
Debian GCE image some weeks old. They run from the control node after the converge:
- reboots not allowed: the role stops before changing anything and says what to do;
- reboots allowed, in check mode (a real reboot would end the container): the role
  would upgrade the kernel image and headers meta-packages together and reboot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

# Plain, unwrapped output: no colour, results as JSON (the YAML format wraps long messages).
PLAIN_ENV = {
    **os.environ,
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
}

testinfra_hosts = ["podman://molecule-nvidia_driver"]

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
GONE = "6.1.0-1-standin-amd64"


def run_role(reboot_allowed: bool, *options: str) -> subprocess.CompletedProcess[str]:
    extra = {"__nvidia_driver_running_kernel": GONE, "nvidia_driver_reboot_allowed": reboot_allowed}
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
        "-e",
        json.dumps(extra),
        *options,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=PLAIN_ENV, timeout=600, check=False
    )


def task_result(output: str, task: str) -> str:
    """The result word (ok/changed/fatal) printed under a task, before the next task."""
    match = re.search(
        re.escape(task) + r"[^\n]*\*+\n(?:(?!TASK \[).*\n)*?(ok|changed|skipping|fatal):", output
    )
    assert match, f"task {task!r} not run:\n{output[-3000:]}"
    return match.group(1)


def test_stops_with_what_to_do_when_reboots_are_not_allowed(host):
    before = host.check_output("dpkg-query -W linux-image-standin-amd64")
    result = run_role(False)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert f"linux-headers-{GONE}" in out
    assert "no longer in the package archive" in out
    assert "apt-get install linux-image-standin-amd64 linux-headers-standin-amd64" in out
    # Nothing was upgraded.
    assert host.check_output("dpkg-query -W linux-image-standin-amd64") == before


def test_upgrades_kernel_and_headers_then_reboots_when_allowed(host):
    result = run_role(True, "--check")
    assert result.returncode == 0, result.stdout[-3000:]
    out = result.stdout
    assert task_result(out, "Upgrade the kernel and its headers together") == "changed"
    assert task_result(out, "Reboot into the upgraded kernel") == "changed"
