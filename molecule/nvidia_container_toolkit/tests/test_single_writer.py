"""The docker role refuses a second run with different daemon options in one play.

Runs tests/double_writer.yml (docker listed on its own, then nvidia_container_toolkit)
from the control node in --check mode against the converged instance.
"""

import os
import subprocess
from pathlib import Path

# Plain output for the assertions (molecule exports ANSIBLE_FORCE_COLOR=1).
PLAIN_ENV = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}

PLAYBOOK = Path(__file__).resolve().parent / "double_writer.yml"


def test_second_docker_run_with_other_options_fails():
    result = subprocess.run(
        [
            "ansible-playbook",
            "--check",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        env=PLAIN_ENV,
        timeout=600,
        check=False,
    )
    # Whitespace-normalised: the YAML callback wraps long messages.
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "already ran in this playbook with different daemon options" in output
    assert "nvidia_container_toolkit includes docker" in output
