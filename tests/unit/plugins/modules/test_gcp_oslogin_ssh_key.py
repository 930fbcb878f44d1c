"""gcp_oslogin_ssh_key: key registration for the caller's identity (OS Login API mocked)."""

from __future__ import annotations

import gcp_oslogin_ssh_key
from standins.google_http import AUTH, google_error

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1c3RhbmRpbmcta2V5 alice@laptop"
PROFILE_URL = r"oslogin.googleapis.com/v1/users/alice@example.com/loginProfile\?projectId=my-voice-project$"
IMPORT_URL = r"oslogin.googleapis.com/v1/users/alice@example.com:importSshPublicKey\?projectId=my-voice-project$"
ACCOUNT = {"primary": True, "username": "alice_example_com", "uid": "1234", "accountId": "my-voice-project", "operatingSystemType": "LINUX"}


def userinfo(transport):
    transport.add("GET", r"openidconnect.googleapis.com/v1/userinfo$", body={"sub": "1", "email": "alice@example.com", "email_verified": True})


def test_new_key_is_imported_and_username_returned(transport, run_module):
    userinfo(transport)
    transport.add("GET", PROFILE_URL, body={"name": "users/alice@example.com"})
    transport.add("POST", IMPORT_URL, body={"loginProfile": {"name": "alice@example.com", "posixAccounts": [ACCOUNT],
                                                             "sshPublicKeys": {"fp": {"key": KEY, "fingerprint": "fp"}}}})
    result = run_module(gcp_oslogin_ssh_key, dict(AUTH, public_key=KEY))
    assert result["changed"] is True and result["username"] == "alice_example_com"
    assert transport.writes()[0]["body"] == {"key": KEY}


def test_known_key_is_not_imported_again(transport, run_module):
    userinfo(transport)
    transport.add("GET", PROFILE_URL, body={"name": "alice@example.com", "posixAccounts": [ACCOUNT],
                                            "sshPublicKeys": {"fp": {"key": KEY.rsplit(" ", 1)[0] + " other-comment"}}})
    result = run_module(gcp_oslogin_ssh_key, dict(AUTH, public_key=KEY))
    assert result["changed"] is False and result["username"] == "alice_example_com" and transport.writes() == []


def test_explicit_user_skips_userinfo_and_403_explains(transport, run_module):
    transport.add("GET", PROFILE_URL, status=403, body=google_error(403, "PERMISSION_DENIED", "The caller does not have permission"))
    result = run_module(gcp_oslogin_ssh_key, dict(AUTH, public_key=KEY, user="alice@example.com"))
    assert result.failed and result["status"] == 403
    assert not any("userinfo" in c["url"] for c in transport.calls)


def test_not_a_public_key(transport, run_module):
    result = run_module(gcp_oslogin_ssh_key, dict(AUTH, public_key="-----BEGIN OPENSSH PRIVATE KEY-----"))
    assert result.failed and "not an OpenSSH public key" in result["msg"] and transport.calls == []
