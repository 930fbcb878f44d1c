"""Preflight stops a newcomer before anything is created: a missing SSH key fails there (not
after the VM exists and bills), and the APIs are on before the quota check reads Compute.

Against the fake of Google's APIs (tests/standins/fake_gcp.py). Not shown here: that a real
brand-new project answers SERVICE_DISABLED before the enable call (the fake answers anyway).
"""

from __future__ import annotations

import json

from project import run_playbook


def test_missing_ssh_key_stops_preflight_before_any_google_call(gcp, tmp_path):
    fake, run = gcp
    proc, out = run("preflight.yml", gcp_ssh_private_key_file=str(tmp_path / "no-such-key"))
    assert proc.returncode != 0
    assert f"ssh-keygen -t ed25519 -f {tmp_path / 'no-such-key'}" in out and "Nothing was created" in out, out[-2000:]
    assert [c for c in fake.calls if not c[1].endswith("/token")] == []


def test_preflight_enables_the_apis_then_passes(gcp):
    fake, run = gcp
    before = {k for k in fake.compute if "/operations/" not in k}  # the project's default network
    proc, out = run("preflight.yml")
    assert proc.returncode == 0, out[-3000:]
    assert fake.services.get("compute.googleapis.com") == "ENABLED"
    # Nothing billed: no VM, IP, bucket, firewall or service account yet.
    assert {k for k in fake.compute if "/operations/" not in k} == before
    assert fake.buckets == {} and fake.service_accounts == {}
    enables = [c for c in fake.writes() if c[1].endswith(":enable")]
    assert enables and len(enables) == len(fake.writes())


def test_no_credentials_at_the_first_api_call_says_how_to_log_in(inventory, tmp_path):
    """The newcomer's first API call is preflight enabling the APIs: without credentials it
    must say how to get them, not end in google.cloud's traceback alone."""
    key = tmp_path / "id_ed25519"
    key.write_text("unused\n")
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKeyForTests tester@laptop\n")
    settings = {"gcp_project": "my-voice-project", "gcp_admin_cidrs": ["203.0.113.7/32"],
                "gcp_client_cidrs": ["203.0.113.7/32"], "gcp_ssh_private_key_file": str(key)}
    proc = run_playbook("preflight.yml", inventory, tmp_path, "-e", json.dumps(settings))
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "Could not enable the Google APIs of project my-voice-project" in out, out[-2000:]
    assert "gcloud auth application-default login --no-launch-browser" in out and "nothing was created" in out
