"""Fixtures of the playbook-level tests: an inventory next to the project's group_vars, the
stand-in of Google's APIs served on an ephemeral port, the Hub stand-in.

Every fixture is per test (function scope) and keeps its files under tmp_path, and every server
binds port 0: tests can run in parallel (pytest -n) without sharing a port, a HOME or a file.
"""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from project import PROJECT, fake_cloud_env, run_playbook, write_service_account_key
from standins.fake_gcp import FakeGcp, serve
from standins.hf_hub_auth import ACCEPTED, Hub

FAKE_SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKeyForTests tester@laptop\n"


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(params=["service-account-file"])
def cloud(request, tmp_path, inventory):
    """The stand-in of Google's APIs (empty project), a deployer key; `play` runs a playbook against it."""
    fake = FakeGcp(PROJECT)
    server = serve(fake)
    sa_file = write_service_account_key(tmp_path / "deployer.json", PROJECT)
    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_text("not used: nothing connects over SSH in this test\n")
    ssh_key.with_suffix(".pub").write_text(FAKE_SSH_PUBLIC_KEY)
    settings = {"gcp_project": PROJECT, "gcp_admin_cidrs": ["203.0.113.7/32"], "gcp_client_cidrs": ["198.51.100.0/24"],
                "gcp_ssh_private_key_file": str(ssh_key)}
    env = fake_cloud_env(server)
    if request.param == "adc":  # Application Default Credentials: gcp_auth_kind application, no key file setting
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(sa_file)
    else:
        env["GCP_SERVICE_ACCOUNT_FILE"] = str(sa_file)

    def play(playbook, **extra):
        before = len(fake.calls)
        proc = run_playbook(playbook, inventory, tmp_path, "--limit", "localhost", "-e", json.dumps({**settings, **extra}), env_extra=env)
        return proc, fake.calls[before:]

    yield fake, play
    server.shutdown()


@pytest.fixture
def gcp(tmp_path, inventory, hub):
    """The stand-in with quota for one T4, a deployer key file, an SSH key, the Hub stand-in;
    `run` plays a playbook and returns (process, its output on one line)."""
    fake = FakeGcp(PROJECT)
    fake.regional_quotas["NVIDIA_T4_GPUS"] = (1.0, 0.0)
    fake.global_quotas["GPUS_ALL_REGIONS"] = (1.0, 0.0)
    server = serve(fake)
    sa_file = write_service_account_key(tmp_path / "deployer.json", PROJECT)
    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_text("not used: nothing connects over SSH in this test\n")
    ssh_key.with_suffix(".pub").write_text(FAKE_SSH_PUBLIC_KEY)
    settings = {"gcp_project": PROJECT, "gcp_admin_cidrs": ["203.0.113.7/32"], "gcp_client_cidrs": ["198.51.100.0/24"],
                "gcp_ssh_private_key_file": str(ssh_key), "hf_token": ACCEPTED, "gcp_infra_hf_endpoint": hub}
    env = {**fake_cloud_env(server), "GCP_SERVICE_ACCOUNT_FILE": str(sa_file)}

    def run(playbook: str | Path, *args: str, **extra):
        proc = run_playbook(str(playbook), inventory, tmp_path, "--limit", "localhost", *args,
                            "-e", json.dumps({**settings, **extra}), env_extra=env)
        return proc, " ".join(proc.stdout.split())

    yield fake, run
    server.shutdown()
