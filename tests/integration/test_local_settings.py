"""Settings given once are remembered: `make init` writes them, every make target reads them.

scripts/init_settings.py runs for real (its IPv4 lookup replaced by --my-ip: no Internet
here); the make targets run for real (`make -o <venv>/bin/ansible-playbook` only stops make
from rebuilding the toolchain) against the fake of Google's APIs (tests/standins/fake_gcp.py),
with no GCP_PROJECT or CIDR variable in their environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from project import ANSIBLE_PLAYBOOK, PROJECT, REPO, VM, fake_cloud_env, run_playbook, write_service_account_key
from standins.fake_gcp import FakeGcp, serve

INIT = REPO / "scripts" / "init_settings.py"


def init(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INIT), "--output", str(out), "--yes", "--no-ip-lookup",
                           "--service-account-file", "", *args], capture_output=True, text=True, check=False, timeout=60)


def test_init_validates_and_keeps_values_on_rerun(tmp_path):
    out = tmp_path / "settings.local.yml"
    for v6 in ("2001:db8::1/128", "2001:db8::1"):  # what a bare curl ifconfig.me may answer
        proc = init(out, "--project", PROJECT, "--admin-cidrs", v6)
        assert proc.returncode == 2 and "IPv6" in proc.stderr and "curl -4" in proc.stderr
    proc = init(out, "--project", PROJECT, "--admin-cidrs", "203.0.113.7/24")
    assert proc.returncode == 2 and "host bits" in proc.stderr
    proc = init(out, "--project", "My Project", "--admin-cidrs", "203.0.113.7")
    assert proc.returncode == 2 and "not a project ID" in proc.stderr
    assert not out.exists()  # bad input writes nothing

    proc = init(out, "--project", PROJECT, "--my-ip", "203.0.113.7", "--client-cidrs", "198.51.100.0/24")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "or ['203.0.113.7/32']" in text  # the caller's address, offered as the admin CIDR
    assert "or ['198.51.100.0/24']" in text
    proc = init(out, "--zone", "europe-west4-a")  # a rerun asks only what changes
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert f"or '{PROJECT}'" in text and "or ['198.51.100.0/24']" in text and "gcp_zone: europe-west4-a" in text


def test_init_never_writes_the_token(tmp_path):
    token_file = tmp_path / "hf-token"
    token_file.write_text("hf_SecretForTests123\n")
    token_file.chmod(0o644)
    out = tmp_path / "settings.local.yml"
    proc = init(out, "--project", PROJECT, "--admin-cidrs", "203.0.113.7/32", "--hf-token-source", "file",
                "--hf-token-file", str(token_file))
    assert proc.returncode == 2 and f"chmod 600 {token_file}" in proc.stderr
    token_file.chmod(0o600)
    proc = init(out, "--project", PROJECT, "--admin-cidrs", "203.0.113.7/32", "--hf-token-source", "file",
                "--hf-token-file", str(token_file))
    assert proc.returncode == 0, proc.stderr
    assert "hf_SecretForTests" not in out.read_text() and str(token_file) in out.read_text()


def test_init_file_is_what_playbooks_read(tmp_path, inventory):
    """The written file, in group_vars/all, gives the playbooks the values; env vars win for one run."""
    token_file = tmp_path / "hf-token"
    token_file.write_text("hf_FromFileForTests\n")
    token_file.chmod(0o600)
    proc = init(inventory.parent / "group_vars" / "all" / "settings.local.yml", "--project", PROJECT, "--my-ip", "203.0.113.7",
                "--hf-token-source", "file", "--hf-token-file", str(token_file))
    assert proc.returncode == 0, proc.stderr
    show = tmp_path / "show.yml"
    show.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n"
                    "        dest: '{{ out }}'\n        mode: '0600'\n"
                    "        content: '{{ {\"p\": gcp_project, \"a\": gcp_admin_cidrs, \"c\": gcp_client_cidrs,"
                    " \"t\": hf_token, \"w\": model_weights_hf_token} | to_json }}'\n")
    for env, want in (({}, (PROJECT, ["203.0.113.7/32"], "hf_FromFileForTests")),
                      ({"GCP_PROJECT": "other-project-1", "GCP_ADMIN_CIDRS": "192.0.2.1/32", "HF_TOKEN": "hf_Env"},
                       ("other-project-1", ["192.0.2.1/32"], "hf_Env"))):
        dump = tmp_path / "dump.json"
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(show), "-e", f"out={dump}"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "HF_", "ANSIBLE_"))}
        proc = subprocess.run(cmd, env={**base, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path), **env},
                              cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
        got = json.loads(dump.read_text())
        assert (got["p"], got["a"], got["t"]) == want
        assert got["c"] == ["203.0.113.7/32"] and got["w"] == got["t"]  # one token name for preflight and weights


@pytest.fixture
def fake_cloud(tmp_path, inventory):
    fake = FakeGcp(PROJECT)
    server = serve(fake)
    sa_file = write_service_account_key(tmp_path / "deployer.json", PROJECT)
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "id_ed25519").write_text("not used: nothing connects over SSH in this test\n")
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKeyForTests tester@laptop\n")
    env = {**fake_cloud_env(server), "GCP_SERVICE_ACCOUNT_FILE": str(sa_file)}
    yield fake, env
    server.shutdown()


def make(target: str, tmp_path: Path, inventory: Path, env_extra: dict[str, str],
         *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "GOOGLE_", "CLOUDSDK_", "HF_", "ANSIBLE_", "PYTHONPATH"))}
    env.update(HOME=str(tmp_path), ANSIBLE_INVENTORY=str(inventory), ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="True",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
               **env_extra)
    # -o: treat the toolchain as up to date (never rebuild the shared venv from a test).
    cmd = ["make", "--no-print-directory", "-C", str(REPO), "-o", str(ANSIBLE_PLAYBOOK), target,
           f"SETTINGS={inventory.parent / 'group_vars' / 'all' / 'settings.local.yml'}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=300)
    return proc, " ".join((proc.stdout + proc.stderr).split())


def test_make_targets_need_no_settings_in_the_environment_once_init_ran(tmp_path, inventory, fake_cloud):
    fake, env = fake_cloud
    proc, out = make("stop", tmp_path, inventory, env)
    assert proc.returncode == 2 and "run 'make init' once" in out

    settings = inventory.parent / "group_vars" / "all" / "settings.local.yml"
    assert init(settings, "--project", PROJECT, "--my-ip", "203.0.113.7").returncode == 0

    proc, out = make("plan", tmp_path, inventory, env)
    assert proc.returncode == 0, out[-3000:]
    assert f"{PROJECT}-personaplex-weights" in out and "203.0.113.7/32" in out

    proc = run_playbook("provision.yml", inventory, tmp_path, "--limit", "localhost", env_extra=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.compute[VM]["status"] == "RUNNING"

    proc, out = make("stop", tmp_path, inventory, env)
    assert proc.returncode == 0 and fake.compute[VM]["status"] == "TERMINATED", out[-3000:]
    # Waiting for /readyz and reading the token over SSH: test_cost_control.py (nothing listens here).
    proc, out = make("start", tmp_path, inventory, env, "ARGS=-e gcp_power_wait_ready=false -e gcp_power_show_token=false")
    assert proc.returncode == 0 and fake.compute[VM]["status"] == "RUNNING", out[-3000:]
    proc, out = make("teardown", tmp_path, inventory, env, "CONFIRM=personaplex")
    assert proc.returncode == 0, out[-3000:]
    assert VM not in fake.compute and fake.service_accounts == {}
