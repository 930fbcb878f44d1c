"""Fixtures shared by the unit and integration tests.

Google Cloud is unreachable here, so the project's modules run for real with only the HTTP
transport replaced (standins/google_http.py) or against a stateful stand-in of Google's APIs
(standins/fake_gcp.py). Helpers that tests import live in project.py and standins/; the
playbook-level fixtures are in integration/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from project import REPO, expose_project_plugins, role_vars
from standins.google_http import FakeTransport

expose_project_plugins()


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
