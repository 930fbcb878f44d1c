"""Shared fixtures for the GCP provisioning tests.

Google Cloud is unreachable here, so the project's modules run for real with only the HTTP
transport replaced: `gcp_rest.transport_adapter` returns a FakeTransport (a requests adapter)
that answers from a script of responses shaped like Google's documented API responses, and
records every call so tests can assert which calls were (or were not) made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "gcp_infra"


def _expose_project_plugins() -> None:
    """Let `import ansible.module_utils.gcp_rest` and `import gcp_iam_binding` work as on a control node."""
    import ansible.module_utils

    utils_dir = str(REPO / "plugins" / "module_utils")
    if utils_dir not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils_dir)
    modules_dir = str(REPO / "plugins" / "modules")
    if modules_dir not in sys.path:
        sys.path.insert(0, modules_dir)


_expose_project_plugins()


def role_vars(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROLE / "vars" / name).read_text())


def write_service_account_key(path: Path, project: str) -> Path:
    """A deployer key file in Google's JSON key format, with an RSA key made now (never committed):
    google-auth signs its JWT with it and the fake's token endpoint answers."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "k1", "private_key": pem.decode(),
        "client_email": f"deployer@{project}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def tables() -> dict[str, Any]:
    main = role_vars("main.yml")
    return {
        "profiles": main["gcp_infra_profiles"],
        "images": main["gcp_infra_images"],
        "prices": role_vars("prices.yml")["gcp_infra_prices"],
    }


@pytest.fixture
def settings() -> dict[str, Any]:
    """Valid settings, as roles/gcp_infra/defaults/main.yml hands them to the modules."""
    return {
        "project": "my-voice-project",
        "zone": "us-central1-a",
        "region": "",
        "deployment_name": "personaplex",
        "labels": {},
        "profile": "t4",
        "spot": False,
        "image": "debian-12",
        "image_project": "",
        "image_family": "",
        "disk_type": "pd-balanced",
        "disk_size_gb": 100,
        "min_disk_gb": 64,
        "network_tags": [],
        "os_login": True,
        "shielded_vm": True,
        "secure_boot": False,
        "deletion_protection": False,
        "accept_unlisted_zone": False,
        "ssh_access": "direct",
        "admin_cidrs": ["203.0.113.7/32"],
        "client_cidrs": ["198.51.100.0/24"],
        "allow_world_access": False,
        "voice_port": 8998,
        "bucket_name": "my-voice-project-personaplex-weights",
        "bucket_location": "",
        "bucket_roles": ["roles/storage.objectViewer", "roles/storage.objectCreator"],
        "network_name": "",
        "subnet_name": "",
        "subnet_cidr": "10.64.0.0/24",
        "accept_default_network_rules": False,
        "manage_apis": True,
        "ssh_user": "alice",
        "ssh_public_key": "",
        "credits_usd": 300,
    }


class FakeTransport(requests.adapters.BaseAdapter):
    """A requests transport answering from scripted routes; every call is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def add(self, method: str, pattern: str, status: int = 200, body: Any = None,
            times: int | None = None, handler: Callable[[requests.PreparedRequest], tuple[int, Any]] | None = None) -> None:
        """Answer METHOD URL~pattern with (status, body); `times` limits how often (then later routes match)."""
        self.routes.append({"method": method, "re": re.compile(pattern), "status": status, "body": body,
                            "times": times, "handler": handler})

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw  # form-encoded (the OAuth token exchange)
        self.calls.append({"method": request.method, "url": request.url, "body": body,
                           "auth": request.headers.get("Authorization", "")})
        for route in self.routes:
            if route["method"] != request.method or not route["re"].search(str(request.url)):
                continue
            if route["times"] is not None:
                if route["times"] <= 0:
                    continue
                route["times"] -= 1
            status, payload = route["handler"](request) if route["handler"] else (route["status"], route["body"])
            return _response(request, status, payload)
        raise AssertionError(f"unexpected call {request.method} {request.url}")

    def close(self) -> None:
        pass

    def writes(self) -> list[dict[str, Any]]:
        """Calls that would change something (anything but GET, and the read-only getIamPolicy POST)."""
        return [c for c in self.calls if c["method"] != "GET" and not c["url"].endswith(":getIamPolicy")]


def _response(request: requests.PreparedRequest, status: int, payload: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.request = request
    resp.url = str(request.url)
    resp.headers["Content-Type"] = "application/json"
    resp._content = json.dumps(payload).encode() if payload is not None else b""
    return resp


def google_error(code: int, status: str, message: str, reason: str = "", domain: str = "global",
                 info_reason: str = "", service: str = "") -> dict[str, Any]:
    """An error body in Google's documented JSON shape (errors[] and details[] ErrorInfo)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status,
                           "errors": [{"message": message, "domain": domain, "reason": reason or status.lower()}]}
    if info_reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": info_reason,
                           "domain": "googleapis.com", "metadata": {"service": service}}]
    return {"error": err}


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> FakeTransport:
    """Install the fake transport and make every sleep instant."""
    from ansible.module_utils import gcp_rest

    fake = FakeTransport()
    monkeypatch.setattr(gcp_rest, "transport_adapter", lambda: fake)
    monkeypatch.setattr(gcp_rest.time, "sleep", lambda _s: None)
    return fake


class ModuleResult(dict):
    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., ModuleResult]:
    """Run a module's main() with arguments, as Ansible would, and return its JSON result."""
    from ansible.module_utils import basic

    def _run(module: Any, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> ModuleResult:
        full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": full}).encode())
        with pytest.raises(SystemExit):
            module.main()
        out = capsys.readouterr().out
        return ModuleResult(json.loads(out.strip().splitlines()[-1]))

    return _run


AUTH = {"project": "my-voice-project", "auth_kind": "accesstoken", "access_token": "ya29.test-token"}


ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A localhost inventory next to the project's real group_vars (so gcp.yml is loaded as in use).

    The files are linked one by one, leaving out a developer's own settings (make init's
    *.local.yml, a vault): the tests see the shipped defaults only.
    """
    group_all = tmp_path / "group_vars" / "all"
    group_all.mkdir(parents=True)
    for src in sorted((REPO / "inventory" / "group_vars" / "all").glob("*.yml")):
        if not src.name.endswith(".local.yml") and src.name != "vault.yml":
            (group_all / src.name).symlink_to(src)
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                     "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    return hosts


def run_playbook(playbook: str, inventory: Path, home: Path, *extra: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "GOOGLE_", "CLOUDSDK_", "HF_", "ANSIBLE_", "PYTHONPATH"))}
    env.update(HOME=str(home), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), ANSIBLE_REMOTE_TEMP=str(home / "tmp"),
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    env["ANSIBLE_PIPELINING"] = "True"  # modules run from stdin: no temporary files per task
    env.update(env_extra or {})
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / playbook), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


# --- A stand-in of the Hugging Face Hub API (preflight's token and gated-model checks) ---------
GOOD = "hf_GoodTokenForTests0123456789"
ACCEPTED = "hf_AcceptedLicenseToken987654321"


class Hub(BaseHTTPRequestHandler):
    def _token(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    def do_GET(self) -> None:
        if self.path == "/api/whoami-v2" and self._token() in (GOOD, ACCEPTED):
            body = json.dumps({"type": "user", "name": "alice"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        if self.path == "/nvidia/personaplex-7b-v1/resolve/main/config.json" and self._token() == ACCEPTED:
            self.send_response(302)
            self.send_header("Location", "https://cdn-lfs.example/config.json")
        else:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
