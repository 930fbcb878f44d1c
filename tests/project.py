"""The project under test, as the tests reach it: its paths, its plugins, its playbooks.

Importable from every test (pytest.ini: pythonpath = tests) as `project`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "gcp_infra"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
# Injected into ansible-playbook subprocesses: sends *.googleapis.com to the stand-in (FAKE_GCP_URL).
SITECUSTOMIZE = Path(__file__).resolve().parent / "standins" / "sitecustomize"
# The Google Cloud project and the VM the integration tests deploy into the stand-in.
PROJECT = "my-voice-project"
VM = f"projects/{PROJECT}/zones/us-central1-a/instances/personaplex-vm"


def expose_project_plugins() -> None:
    """Let `import ansible.module_utils.gcp_rest` and `import gcp_iam_binding` work as on a control node."""
    import ansible.module_utils

    utils_dir = str(REPO / "plugins" / "module_utils")
    if utils_dir not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils_dir)
    modules_dir = str(REPO / "plugins" / "modules")
    if modules_dir not in sys.path:
        sys.path.insert(0, modules_dir)


def role_vars(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROLE / "vars" / name).read_text())


# The stand-in deployer's RSA key (PEM): taken from the environment when set, else made once
# per test process and put there. Never committed, never a real credential.
DEPLOYER_KEY_ENV = "PERSONAPLEX_TEST_DEPLOYER_KEY_PEM"


def deployer_key_pem() -> str:
    if not os.environ.get(DEPLOYER_KEY_ENV):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        os.environ[DEPLOYER_KEY_ENV] = pem.decode()
    return os.environ[DEPLOYER_KEY_ENV]


def write_service_account_key(path: Path, project: str) -> Path:
    """A deployer key file in Google's JSON key format (the fields of a key created with
    `gcloud iam service-accounts keys create`, https://cloud.google.com/iam/docs/keys-create-delete),
    its key from `deployer_key_pem`: google-auth signs its JWT with it and the fake's token
    endpoint answers."""
    key_file = {"type": "service_account", "project_id": project, "private_key_id": "k1",
                "client_email": f"deployer@{project}.iam.gserviceaccount.com", "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token"}
    key_file["private_key"] = deployer_key_pem()
    path.write_text(json.dumps(key_file))
    path.chmod(0o600)
    return path


def fake_cloud_env(server: Any) -> dict[str, str]:
    """Environment that points an ansible-playbook process at the stand-in served by `server`."""
    return {"PYTHONPATH": str(SITECUSTOMIZE), "FAKE_GCP_URL": f"http://127.0.0.1:{server.server_address[1]}"}


def writes(calls: list[Any]) -> list[Any]:
    """The calls (from FakeGcp.calls) that change something: not GETs, getIamPolicy or token exchanges."""
    return [c for c in calls if c[0] != "GET" and not c[1].endswith((":getIamPolicy", "/token"))]


def run_playbook(playbook: str, inventory: Path, home: Path, *extra: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Each test gets its own HOME and Ansible temp dirs (under tmp_path): runs in parallel share nothing.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GCP_", "GOOGLE_", "CLOUDSDK_", "HF_", "ANSIBLE_", "PYTHONPATH", DEPLOYER_KEY_ENV))}
    env.update(HOME=str(home), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), ANSIBLE_REMOTE_TEMP=str(home / "tmp"),
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    env["ANSIBLE_PIPELINING"] = "True"  # modules run from stdin: no temporary files per task
    env.update(env_extra or {})
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / playbook), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
