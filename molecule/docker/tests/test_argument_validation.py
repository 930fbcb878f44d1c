"""Bad input: a misspelled value fails at argument validation, naming the variable;
a user that does not exist is reported, not created.

Runs the scenario's converge playbook from the control node against the instance
with a wrong docker_source; the role's argument spec must stop it before any task.
"""

import os
import subprocess
from pathlib import Path

# Plain output for the assertions (molecule exports ANSIBLE_FORCE_COLOR=1).
PLAIN_ENV = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"


def run_converge(
    *extra_vars: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(CONVERGE),
    ]
    if check:
        # --check: the run reaches the role's later steps without changing the host.
        cmd.append("--check")
    for ev in extra_vars:
        cmd += ["-e", ev]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=PLAIN_ENV, timeout=300, check=False
    )


def test_unknown_docker_source_is_rejected():
    result = run_converge("docker_source=dockerhub")
    # Whitespace-normalised: the YAML callback wraps long messages.
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "docker_source" in output
    assert "dockerhub" in output
    assert "upstream, distro" in output or "upstream', 'distro" in output
    # Validation runs first: nothing after it executed.
    assert "Load OS-specific variables" not in output


def test_wrong_type_of_daemon_options_is_rejected():
    result = run_converge('{"docker_daemon_options_extra": "storage-driver=vfs"}')
    # Whitespace-normalised: the YAML callback wraps long messages.
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "docker_daemon_options_extra" in output


def test_missing_user_is_not_created():
    result = run_converge('{"docker_users": ["no-such-user-x"]}', check=True)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "docker_users lists users that do not exist" in output
    assert "no-such-user-x" in output
