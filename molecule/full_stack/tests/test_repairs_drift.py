"""Drift repair: after break_host.yml broke the converged host the way real life does, the
configure play repairs each break, reports changed only for what was broken, and the server
is ready again.

Runs after test_full_stack.py and test_idle_stop.py (file order) on the same instance, so
the scenario converges once. The break and the re-converge run from the control node
(ansible-playbook against Molecule's inventory; the re-converge with the JSON callback so the
test sees which tasks reported a change).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parent.parent
CONVERGE = SCENARIO / "converge.yml"
BREAK = SCENARIO / "break_host.yml"
MODEL = "/var/lib/personaplex/model"

# Each break and the task(s) that must repair it.
MUST_CHANGE = {
    "Start the voice server and enable it at boot",  # stopped + disabled
    "Write the systemd unit",  # Restart=no
    "Write the environment file (0600, read by systemd before dropping to the user)",
    "Fetch and verify the model files (gcs)",  # truncated weights + deleted voice
    "Put back the packages that were removed or changed",  # the app's package
    "Restart the voice server",  # handler: unit/env/model changed
}
# Follow-ups that may report a change because of the repairs above.
MAY_CHANGE = {
    "Record what the server runs (restart when it changed)",  # the model manifest moved on
    "Report what the model files sync did",
}


@pytest.fixture(scope="module")
def reconverge() -> dict:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    broke = subprocess.run(
        ["ansible-playbook", "-i", inventory, str(BREAK)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert broke.returncode == 0, broke.stdout[-4000:] + broke.stderr[-4000:]
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "",
    }
    proc = subprocess.run(
        ["ansible-playbook", "-i", inventory, str(CONVERGE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout)


def changed_tasks(result: dict) -> set[str]:
    """Names of the tasks that reported a change, without the "role : " prefix."""
    names = set()
    for play in result["plays"]:
        for task in play["tasks"]:
            if any(h.get("changed") for h in task["hosts"].values()):
                names.add(task["task"]["name"].split(" : ", 1)[-1])
    return names


def test_reported_changes_are_exactly_the_repairs(reconverge):
    changed = changed_tasks(reconverge)
    assert changed >= MUST_CHANGE, f"not repaired: {MUST_CHANGE - changed}; all: {sorted(changed)}"
    unexpected = changed - MUST_CHANGE - MAY_CHANGE
    assert not unexpected, f"changed without cause: {unexpected}"


def test_service_running_and_enabled_again(host, reconverge):
    svc = host.service("personaplex-server")
    assert svc.is_running and svc.is_enabled


def test_unit_and_env_restored(host, reconverge):
    unit = host.file("/etc/systemd/system/personaplex-server.service").content_string
    assert "Restart=on-failure" in unit
    with host.sudo():
        env = host.file("/etc/personaplex/server.env").content_string
    assert "PERSONAPLEX_LOG_LEVEL=debug" not in env
    # systemd runs the repaired unit, not the edited one
    restart = host.check_output("systemctl show -p Restart --value personaplex-server")
    assert restart == "on-failure"


def test_weights_and_voice_restored(host, reconverge):
    manifest = json.loads(host.file(f"{MODEL}/.personaplex-manifest.json").content_string)
    size = manifest["files"]["model.safetensors"]["size"]
    assert size > 1000
    assert host.file(f"{MODEL}/model.safetensors").size == size
    sha = host.check_output(f"sha256sum {MODEL}/model.safetensors").split()[0]
    assert sha == manifest["files"]["model.safetensors"]["sha256"]
    assert host.file(f"{MODEL}/voices/NATM1.pt").is_file


def test_app_package_back(host, reconverge):
    assert host.run("/opt/personaplex/venv/bin/python -m pip show -q personaplex-server").rc == 0


def test_server_ready_and_talking_again(host, reconverge):
    out = host.check_output("curl -sSk https://127.0.0.1:8998/readyz")
    assert json.loads(out)["status"] == "ready"
    with host.sudo():
        res = host.run(
            "/opt/personaplex/venv/bin/personaplex-server client --url https://127.0.0.1:8998 "
            "--ca-file /etc/personaplex/tls/server.crt "
            "--token-file /etc/personaplex/access-token --json"
        )
    assert res.rc == 0, res.stderr
    assert json.loads(res.stdout)[0]["audio_messages"] > 0
