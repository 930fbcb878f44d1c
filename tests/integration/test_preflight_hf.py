"""Preflight's Hugging Face checks against a local stand-in of the Hub API (HF_ENDPOINT).

The stand-in answers like the Hub: /api/whoami-v2 gives 200 with the account for a good token
and 401 otherwise; a HEAD on a file of a gated model gives 403 until the license is accepted,
then a 302 redirect to the storage. The token must never show in Ansible's output.
"""

from __future__ import annotations

import json

import pytest
from project import run_playbook
from standins.hf_hub_auth import ACCEPTED, GOOD


@pytest.fixture
def hf_playbook(tmp_path):
    play = tmp_path / "hf.yml"
    play.write_text(
        "- name: Hugging Face preflight only\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Run the Hugging Face checks\n      ansible.builtin.include_role:\n        name: gcp_infra\n"
        "        tasks_from: preflight_hf.yml\n"
    )
    return play


@pytest.mark.parametrize(
    ("token", "rc", "expected"),
    [
        (ACCEPTED, 0, "Hugging Face: alice can read nvidia/personaplex-7b-v1"),
        (GOOD, 2, "Accept the license at https://huggingface.co/nvidia/personaplex-7b-v1 while logged in as alice"),
        ("hf_WrongToken000000000000000", 2, "Hugging Face refused the token (HTTP 401)"),
        ("", 2, "No Hugging Face token"),
    ],
)
def test_hugging_face_checks(hub, hf_playbook, inventory, tmp_path, token, rc, expected):
    proc = run_playbook(str(hf_playbook), inventory, tmp_path, "-v", "-e", json.dumps({"hf_token": token, "gcp_infra_hf_endpoint": hub}))
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == rc, out
    assert expected in out
    if token:
        assert token not in proc.stdout + proc.stderr


def test_unreachable_hub_is_reported_as_such(hf_playbook, inventory, tmp_path):
    proc = run_playbook(str(hf_playbook), inventory, tmp_path, "-e", json.dumps({"hf_token": GOOD, "gcp_infra_hf_endpoint": "http://127.0.0.1:9"}))
    assert proc.returncode == 2
    assert "Could not ask http://127.0.0.1:9 about the token" in " ".join(proc.stdout.split())
