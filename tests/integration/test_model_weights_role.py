"""The model_weights role end to end on this machine (connection local), against the
Hub-protocol stand-in (standins.hf_hub): the personaplex_weights module's explanation
reaches the user, the token (a no_log module argument) shows up nowhere in the output
(even with -vvv), and a good token fetches the files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from standins.hf_hub import HubFixture, hub  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
# Not the venv's: the module must get model_weights_python from the role's task vars.
INTERPRETER = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the control-node .venv")


def play(tmp_path: Path, hub: HubFixture, token: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"""
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    # The role's other tasks run with the system Python; the module with model_weights_python.
    ansible_python_interpreter: {INTERPRETER}
  roles:
    - role: model_weights
      vars:
        model_weights_source: huggingface
        model_weights_hf_endpoint: {hub.endpoint}
        model_weights_dir: {tmp_path}/model
        model_weights_owner: root
        model_weights_group: root
        model_weights_python: {sys.executable}
        model_weights_min_free_gb: 0
"""
    )
    env = {
        **os.environ,
        "HF_TOKEN": token,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    }
    return subprocess.run(
        [
            str(PLAYBOOK),
            "-vvv",
            "-i",
            "localhost,",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the role sets root ownership")
def test_gated_message_shown_and_token_hidden(hub: HubFixture, tmp_path: Path) -> None:
    proc = play(tmp_path, hub, "hf_not_granted")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "accept the license at https://huggingface.co/nvidia/personaplex-7b-v1" in out
    assert "hf_not_granted" not in out
    assert not (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the role sets root ownership")
def test_good_token_fetches_and_reruns_unchanged(hub: HubFixture, tmp_path: Path) -> None:
    proc = play(tmp_path, hub, "hf_good")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "hf_good" not in proc.stdout + proc.stderr
    assert (tmp_path / "model" / "voices" / "NATF0.pt").is_file()
    again = play(tmp_path, hub, "hf_good")
    assert again.returncode == 0
    assert "changed=0" in again.stdout
