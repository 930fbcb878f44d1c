"""One connection path: every playbook reaches the VM as site.yml does (against the fake of Google's APIs).

site.yml adds the VM it provisions to voice_servers with the OS Login user, the key, the
pinned known_hosts file and the deployment facts (bucket, IP, ...). `make configure`
(configure.yml on the default inventory) and `make deploy TAGS=server` (site.yml with
provision skipped) find the existing VM through playbooks/find_vm.yml instead. These tests
run the real playbooks against tests/standins/fake_gcp.py and compare what the VM's plays would
see. What the fake cannot show: a real SSH login (nothing listens on the fake VM's IP; the
configure play itself is limited away), so "rerun changes nothing on the host" rests on the
variables being equal, and on the full_stack Molecule scenario for configure.yml.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from project import PROJECT, VM, run_playbook

PLAYS = Path(__file__).parent / "playbooks"


def reach(run, tmp_path: Path, playbook: str, *args: str) -> dict:
    dump = tmp_path / f"reach-{playbook}-{len(list(tmp_path.glob('reach-*')))}.json"
    proc, out = run(PLAYS / f"reach_after_{playbook}.yml", *args, reach_dump_file=str(dump))
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    return json.loads(dump.read_text())


def test_configure_and_tagged_deploy_reach_the_vm_as_site_does(gcp, tmp_path):
    fake, run = gcp
    proc, out = run("configure.yml")
    assert proc.returncode != 0
    assert "No VM personaplex-vm in project my-voice-project, zone us-central1-a: create it with make deploy" in out, out[-2000:]

    site = reach(run, tmp_path, "site")  # preflight, provision, configure (its find play is a no-op here)
    assert site["hosts"] == ["personaplex-vm"]
    v = site["vars"]
    assert v["ansible_host"] == "203.0.113.50" and v["ansible_user"] == "sa_1234567890"
    assert v["ansible_ssh_private_key_file"] == str(tmp_path / "id_ed25519")
    known = tmp_path / ".ssh" / "personaplex_known_hosts"
    assert f"-o UserKnownHostsFile={known}" in v["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in v["ansible_ssh_common_args"]
    assert v["model_weights_source"] == "auto" and v["model_weights_gcs_bucket"] == f"{PROJECT}-personaplex-weights"
    assert v["model_weights_gcs_upload"] in (True, "True")
    assert v["voice_server_public_url"] == "https://203.0.113.50:8998"

    vm_writes = [c for c in fake.writes() if "/instances/" in c[1]]
    configure = reach(run, tmp_path, "configure")  # make configure: the default inventory names no VM
    assert configure == site
    tagged = reach(run, tmp_path, "site", "--tags", "server")  # make deploy TAGS=server: provision skipped
    assert tagged == site
    # finding the VM never starts, stops or changes it
    assert [c for c in fake.writes() if "/instances/" in c[1]] == vm_writes


def test_ssh_config_then_a_stopped_vm_says_make_start(gcp, tmp_path):
    fake, run = gcp
    proc, out = run("provision.yml")
    assert proc.returncode == 0, out[-3000:]

    config = tmp_path / "ssh_config"  # make ssh / make logs: ssh -F this personaplex
    proc, out = run("ssh_config.yml", personaplex_ssh_config=str(config))
    assert proc.returncode == 0, out[-3000:]
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    resolved = subprocess.run(["ssh", "-G", "-F", str(config), "personaplex"], capture_output=True, text=True, check=True).stdout
    want = {"hostname": "203.0.113.50", "user": "sa_1234567890", "stricthostkeychecking": "true",
            "userknownhostsfile": str(tmp_path / ".ssh" / "personaplex_known_hosts"),
            "identityfile": str(tmp_path / "id_ed25519")}
    got = dict(line.split(" ", 1) for line in resolved.splitlines() if " " in line)
    assert {k: got.get(k) for k in want} == want

    proc, out = run("power.yml", gcp_power_state="stopped")
    assert proc.returncode == 0 and fake.compute[VM]["status"] == "TERMINATED"
    for playbook in ("configure.yml", "smoke.yml"):
        proc, out = run(playbook, "--tags", "server")
        assert proc.returncode != 0
        assert "VM personaplex-vm is TERMINATED: start it with make start" in out, out[-2000:]
    assert fake.compute[VM]["status"] == "TERMINATED"  # looked at, not started


def test_find_vm_is_a_no_op_when_the_inventory_names_voice_servers(tmp_path, inventory):
    """Own hosts, inventory/local.yml, Molecule: configure.yml must not look for a GCP VM (no
    settings, no credentials here: a lookup would fail on the empty gcp_project)."""
    own = tmp_path / "own.yml"
    # Connection local: the configure play only gathers facts (--tags never), here.
    own.write_text("all:\n  children:\n    voice_servers:\n      hosts:\n"
                   "        gpu-box: {ansible_connection: local, ansible_python_interpreter: python3}\n")
    proc = run_playbook("configure.yml", own, tmp_path, "--tags", "never")
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, out[-2000:]
    assert "Find the VM and reach it as provision does" not in out and "gcp_project" not in out
