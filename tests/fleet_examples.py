"""Example fleet settings and plan shared by the fleet's unit and integration tests."""

from __future__ import annotations

from typing import Any

from project import role_vars

P = "my-voice-project"
PLAN = {"project": P, "region": "us-central1", "deployment": "personaplex", "spot": False, "profile": "t4",
        "labels": {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"},
        "marker": "managed-by=personaplex-ansible deployment=personaplex"}
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def fleet_settings(**over: Any) -> dict[str, Any]:
    base = {"min_instances": 1, "max_instances": 3, "sessions_per_instance": 2, "target_utilization": 0.6,
            "conversation_max_s": 3600, "boot_s": 600, "zones": [], "domain": "", "network": "default", "subnetwork": "",
            "image": "", "disk_size_gb": 100, "disk_type": "pd-balanced", "voice_port": 8998,
            "client_cidrs": ["198.51.100.0/24"], "certificate_pem": CERT, "startup_script": "#!/usr/bin/python3\n"}
    base.update(over)
    return base


def profile(name: str = "t4") -> dict[str, Any]:
    return dict(role_vars("main.yml")["gcp_infra_profiles"][name])


def by_kind(fleet: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(r for r in fleet["resources"] if r["kind"] == kind)
