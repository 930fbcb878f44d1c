"""The configured host really serves PersonaPlex: checked from inside the instance.

Each test checks something configure.yml is responsible for and would fail if the
roles stopped doing it (testinfra, podman connection).
"""

from __future__ import annotations

import json

import pytest

SERVICE = "personaplex-server"
USER = "personaplex"
VENV = "/opt/personaplex/venv"
CONF = "/etc/personaplex"
MODEL = "/var/lib/personaplex/model"
URL = "https://127.0.0.1:8998"
CLIENT = f"{VENV}/bin/personaplex-server client --url {URL} --ca-file {CONF}/tls/server.crt --json"


def token(host) -> str:
    with host.sudo():
        return host.file(f"{CONF}/access-token").content_string.strip()


def test_service_active_and_enabled(host):
    svc = host.service(SERVICE)
    assert svc.is_running
    assert svc.is_enabled


def test_runs_as_non_root_service_user(host):
    pid = host.check_output(f"systemctl show -p MainPID --value {SERVICE}")
    assert int(pid) > 0
    user = host.check_output(f"ps -o user= -p {pid}").strip()
    assert user == USER
    assert host.user(USER).shell == "/usr/sbin/nologin"
    assert host.user(USER).uid < 1000  # a system account


def test_unit_is_hardened(host):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {SERVICE} -p User -p NoNewPrivileges -p ProtectSystem "
            "-p ProtectHome -p PrivateTmp -p PrivateDevices -p Restart -p ReadWritePaths "
            "-p TimeoutStartUSec"
        ).splitlines()
    )
    assert props["User"] == USER
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["PrivateDevices"] == "yes"  # CPU profile: no devices at all
    assert props["Restart"] == "on-failure"
    assert set(props["ReadWritePaths"].split()) == {"/var/lib/personaplex", MODEL}
    assert props["TimeoutStartUSec"] not in ("1min 30s", "infinity")


def test_listens_with_tls_only(host):
    assert host.socket("tcp://0.0.0.0:8998").is_listening
    # A TLS handshake that verifies against the installed self-signed certificate.
    out = host.check_output(
        "curl -sS --cacert %s/tls/server.crt https://localhost:8998/healthz", CONF
    )
    assert json.loads(out) == {"status": "ok"}
    plain = host.run("curl -sS -m 5 http://127.0.0.1:8998/healthz")
    assert plain.rc != 0 or "status" not in plain.stdout


def test_certificate_names_the_host(host):
    text = host.check_output(f"openssl x509 -in {CONF}/tls/server.crt -noout -text")
    assert "DNS:localhost" in text
    assert "IP Address:127.0.0.1" in text


def test_readyz_ready(host):
    out = host.check_output(
        f"curl -sS --cacert {CONF}/tls/server.crt https://localhost:8998/readyz"
    )
    assert json.loads(out)["status"] == "ready"


def test_websocket_round_trip_returns_audio(host):
    with host.sudo():
        res = host.run(f"{CLIENT} --token-file {CONF}/access-token")
    assert res.rc == 0, res.stderr
    sessions = json.loads(res.stdout)
    assert sessions[0]["ok"] is True
    assert sessions[0]["audio_messages"] > 0
    assert sessions[0]["reply_seconds"] > 0


def test_token_is_required(host):
    res = host.run(CLIENT)
    assert res.rc != 0
    res = host.run(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert {CONF}/tls/server.crt "
        "https://localhost:8998/api/voices"
    )
    assert res.stdout.strip() in ("401", "403")


def test_env_file_private(host):
    f = host.file(f"{CONF}/server.env")
    assert f.user == "root" and f.mode == 0o600
    with host.sudo():
        content = f.content_string
    assert f"PERSONAPLEX_MODEL_DIR={MODEL}" in content
    assert "PERSONAPLEX_DEVICE=cpu" in content
    assert "PERSONAPLEX_SSL_CERTFILE=" in content


def test_token_file_private_and_kept(host):
    f = host.file(f"{CONF}/access-token")
    assert f.user == USER and f.mode == 0o600
    assert len(token(host)) >= 32


def test_no_token_in_journal(host):
    secret = token(host)
    with host.sudo():
        journal = host.check_output("journalctl --no-pager -o cat")
    assert SERVICE in journal or "personaplex" in journal  # the journal is really there
    assert secret not in journal


def test_model_files_verified_owned_and_unpacked(host):
    manifest = json.loads(host.file(f"{MODEL}/.personaplex-manifest.json").content_string)
    assert manifest["source"]["kind"] == "gcs"
    assert "model.safetensors" in manifest["files"]
    assert host.file(f"{MODEL}/voices/NATF0.pt").is_file
    assert host.file(f"{MODEL}/dist/index.html").is_file
    for path in (MODEL, f"{MODEL}/model.safetensors", f"{MODEL}/voices/NATF0.pt"):
        f = host.file(path)
        assert f.user == USER
        assert not f.mode & 0o002, path


def test_venv_owned_by_service_user_with_app(host):
    assert host.file(VENV).user == USER
    assert host.file(f"{VENV}/bin/personaplex-server").is_file
    state = json.loads(host.file(f"{VENV}/.personaplex-installed.json").content_string)
    assert "personaplex-server" in state["freeze"]
    assert "torch==2.9.1" in state["freeze"]


@pytest.mark.parametrize("path", [f"{CONF}/tls/server.key"])
def test_private_key_not_world_readable(host, path):
    f = host.file(path)
    assert f.mode & 0o007 == 0


def test_sandbox_exposure_at_most_2(host):
    """`systemd-analyze security` rates the CPU profile's unit 2.0 or better (the unit tests rate the rendered unit the same way: tests/unit/roles/test_voice_server_unit.py)."""
    out = host.check_output(f"systemd-analyze security --no-pager {SERVICE}.service")
    match = next(line for line in out.splitlines() if line.startswith("→ Overall exposure level"))
    exposure = float(match.split(":", 1)[1].split()[0])
    assert exposure <= 2.0, out
    # The settings that brought it there (each would raise it if dropped).
    for setting in ("SystemCallFilter=~@privileged", "ProtectProc=", "PrivateUsers=", "RemoveIPC="):
        row = next(line for line in out.splitlines() if setting in line)
        assert row.startswith("✓"), row
