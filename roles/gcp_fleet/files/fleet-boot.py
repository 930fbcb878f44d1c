#!/usr/bin/python3
"""Fleet instance boot (GCE startup-script): fetch the access token, make a TLS key, start the server.

The image holds no secret (playbooks/image.yml generalises it). At each boot this script asks
the metadata server for the instance's service-account token, reads the latest version of the
secret named in the `personaplex-secret` metadata attribute from Secret Manager (only the
fleet's service account may), writes it 0600 for the service user, makes a self-signed TLS key
for the load balancer -> instance hop when none exists, and (re)starts the voice server.
Secrets travel only in memory and in the 0600 file: never in argv or the journal.
The PERSONAPLEX_BOOT_* variables exist for the test (tests/unit/roles/test_fleet_boot.py).
"""

import base64
import json
import os
import pwd
import subprocess
import sys
import urllib.request

METADATA = os.environ.get("PERSONAPLEX_BOOT_METADATA_URL", "http://metadata.google.internal/computeMetadata/v1")
SECRETMANAGER = os.environ.get("PERSONAPLEX_BOOT_SECRETMANAGER_URL", "https://secretmanager.googleapis.com/v1")
CONFIG_DIR = os.environ.get("PERSONAPLEX_BOOT_CONFIG_DIR", "/etc/personaplex")
SERVICE_USER = os.environ.get("PERSONAPLEX_BOOT_USER", "personaplex")
RESTART = os.environ.get("PERSONAPLEX_BOOT_RESTART", "systemctl restart personaplex-server")


def get(url: str, headers: dict) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def write_private(path: str, data: bytes) -> None:
    """Write atomically, mode 0600, owned by the service user."""
    user = pwd.getpwnam(SERVICE_USER)
    tmp = f"{path}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    if os.geteuid() == 0:
        os.chown(tmp, user.pw_uid, user.pw_gid)
    os.replace(tmp, path)


def main() -> int:
    flavor = {"Metadata-Flavor": "Google"}
    secret = get(f"{METADATA}/instance/attributes/personaplex-secret", flavor).decode().strip()
    token = json.loads(get(f"{METADATA}/instance/service-accounts/default/token", flavor))["access_token"]
    answer = json.loads(get(f"{SECRETMANAGER}/{secret}/versions/latest:access", {"Authorization": f"Bearer {token}"}))
    value = base64.b64decode(answer["payload"]["data"])
    if not value.strip():
        print("personaplex boot: the secret's latest version is empty; rerun make fleet", file=sys.stderr)
        return 1
    os.makedirs(CONFIG_DIR, exist_ok=True)
    write_private(os.path.join(CONFIG_DIR, "access-token"), value)
    tls = os.path.join(CONFIG_DIR, "tls")
    key, cert = os.path.join(tls, "server.key"), os.path.join(tls, "server.crt")
    if not os.path.exists(key):
        # The load balancer does not validate backend certificates; it needs TLS, not a CA.
        os.makedirs(tls, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "825", "-subj", "/CN=personaplex-fleet", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        os.chmod(key, 0o600)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(key, user.pw_uid, user.pw_gid)
    if RESTART:
        subprocess.run(RESTART.split(), check=True)
    print("personaplex boot: access token and TLS key in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
