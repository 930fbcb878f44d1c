"""gcp_fleet's generalise tasks (tasks/generalise.yml), run for real on a folder laid out like the
image builder's disk: what belongs to one machine goes, the rest stays, a rerun changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from project import REPO


def test_generalise_removes_what_belongs_to_one_machine(tmp_path: Path, inventory: Path) -> None:
    root = tmp_path / "disk"
    files = {
        "etc/personaplex/access-token": "secret", "etc/personaplex/tls/server.key": "key", "etc/personaplex/server.env": "keep",
        "etc/ssh/ssh_host_ed25519_key": "k", "etc/ssh/ssh_host_ed25519_key.pub": "k", "etc/ssh/sshd_config": "keep",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n", "var/lib/dbus/machine-id": "x",
        "var/log/journal/abc/system.journal": "j", "var/log/syslog": "lines", "var/log/syslog.1": "old", "var/log/dpkg.log": "d",
        "root/.bash_history": "h", "root/.cache/huggingface/token": "hf_x",
        "var/lib/personaplex/model/model.safetensors": "weights", "opt/personaplex/venv/bin/personaplex-server": "app",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    play = tmp_path / "generalise.yml"
    play.write_text(f"""- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: {REPO}/roles/gcp_fleet
        tasks_from: generalise.yml
      vars:
        gcp_fleet_generalise_root: {root}
""")
    env = {"ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(play)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, **env,
                               "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    gone = ["etc/personaplex/access-token", "etc/personaplex/tls", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
            "var/lib/dbus/machine-id", "var/log/journal/abc/system.journal", "var/log/syslog.1", "root/.bash_history",
            "root/.cache/huggingface/token"]
    assert [p for p in gone if (root / p).exists()] == []
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "var/log/syslog").read_text() == "" and (root / "var/log/dpkg.log").read_text() == ""
    kept = ["etc/personaplex/server.env", "etc/ssh/sshd_config", "var/lib/personaplex/model/model.safetensors",
            "opt/personaplex/venv/bin/personaplex-server"]
    assert all((root / p).read_text() == files[p] for p in kept)
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=300, check=False, env={
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, **env,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path)})
    assert again.returncode == 0 and "changed=0" in again.stdout.rsplit("PLAY RECAP", 1)[-1], again.stdout[-2000:]
