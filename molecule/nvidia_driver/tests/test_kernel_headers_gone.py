"""The running kernel's headers are gone from the archive (compute-gpu-installation#28).

The container cannot run another kernel, so these runs tell the role (through its
`__nvidia_driver_running_kernel` variable) that it runs 6.1.0-1-standin-amd64, an ABI
whose headers the stand-in archive does not carry, as on a Debian GCE image some weeks
old. They run from the control node after the converge, and leave the instance as the
converge left it:
- reboots not allowed: the role stops before changing anything and says what to do;
- reboots allowed, in check mode (a real reboot would end the container), with the
  flavour's meta-packages at the running kernel (1.0-1, as on a VM made from an older
  image): the role would upgrade the kernel image and headers meta-packages together
  and reboot;
- reboots allowed, check mode, the newer kernel already installed and not booted (the
  converge's state: apt upgrades linux-image-<flavour> along with linux-headers-<flavour>,
  both built from linux-signed-amd64, as in Debian): nothing left to upgrade, and the
  role must still reboot (it did not: it went on to install headers that do not exist).
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
META = ["linux-image-standin-amd64", "linux-headers-standin-amd64"]
UPGRADE = "Upgrade the kernel and its headers together"
REBOOT = "Reboot into the upgraded kernel"


def run_role(reboot_allowed: bool, *options: str) -> str:
    """stdout and stderr of the converge playbook (Molecule's ansible.cfg sends failures to stderr)."""
    extra = {
        "__nvidia_driver_running_kernel": GONE,
        "nvidia_driver_reboot_allowed": reboot_allowed,
    }
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
        "-e",
        json.dumps(extra),
        *options,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=PLAIN_ENV, timeout=600, check=False
    )
    out = proc.stdout + "\n" + proc.stderr
    return f"rc={proc.returncode}\n{out}"


def task_section(output: str, task: str) -> str:
    """What the run printed under a task, up to the next task."""
    match = re.search(re.escape(task) + r"[^\n]*\*+\n((?:(?!TASK \[).*\n)*)", output)
    assert match, f"task {task!r} not run:\n{output[-3000:]}"
    return match.group(1)


def task_result(output: str, task: str) -> str:
    """The result word (ok/changed/skipping/fatal) printed under a task."""
    match = re.search(
        r"^(ok|changed|skipping|fatal):", task_section(output, task), re.MULTILINE
    )
    assert match, f"no result under {task!r}:\n{output[-3000:]}"
    return match.group(1)


def meta_state(host) -> str:
    return host.check_output(
        "dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' "
        + " ".join(META)
    )


def test_stops_with_what_to_do_when_reboots_are_not_allowed(host):
    before = meta_state(host)
    out = run_role(False)
    assert not out.startswith("rc=0\n"), out[-3000:]
    flat = " ".join(out.split())
    assert f"linux-headers-{GONE}" in flat
    assert "no longer in the package archive" in flat
    assert (
        "apt-get install linux-image-standin-amd64 linux-headers-standin-amd64 && sudo reboot"
        in flat
    )
    assert meta_state(host) == before  # nothing upgraded


def test_upgrades_kernel_and_headers_together_then_reboots_when_allowed(host):
    before = meta_state(host)
    # A VM made from an older image: both meta-packages at the running kernel's 1.0-1, held.
    host.check_output(
        "apt-get install -y -q --allow-downgrades --allow-change-held-packages "
        + " ".join(f"{m}=1.0-1" for m in META)
    )
    host.check_output("apt-mark hold " + " ".join(META))
    try:
        out = run_role(True, "--check", "-v")
        assert out.startswith("rc=0\n"), out[-3000:]
        assert task_result(out, UPGRADE) == "changed"
        upgrade = task_section(out, UPGRADE)
        for meta in META:  # apt's simulation upgrades both, to the newer ABI
            assert f"Inst {meta} [1.0-1] (2.0-1" in upgrade, meta
        assert task_result(out, REBOOT) == "changed"
    finally:
        host.check_output(
            "apt-get install -y -q --allow-change-held-packages "
            + " ".join(f"{m}=2.0-1" for m in META)
        )
        host.check_output("apt-mark hold " + " ".join(META))
    assert meta_state(host) == before


def test_reboots_into_the_newer_kernel_already_installed(host):
    before = meta_state(host)
    assert "linux-image-standin-amd64 2.0-1 hi" in before  # the converge's state
    out = run_role(True, "--check")
    assert out.startswith("rc=0\n"), out[-3000:]
    assert task_result(out, UPGRADE) == "ok"  # nothing left to upgrade
    assert task_result(out, REBOOT) == "changed"
    assert meta_state(host) == before
