"""make plan and make fleet --check show the fleet and its cost offline; bad fleet settings stop
before any API call (no credentials, no network: any call would fail)."""

from __future__ import annotations

import json
import re

from project import run_playbook

SETTINGS = ["-e", json.dumps({"gcp_project": "my-voice-project", "gcp_admin_cidrs": ["203.0.113.7/32"],
                              "gcp_client_cidrs": ["198.51.100.0/24"]})]


def test_plan_shows_fleet_resources_and_cost_at_min_and_max(inventory, tmp_path):
    proc = run_playbook("plan.yml", inventory, tmp_path, *SETTINGS, "-e", f"gcp_plan_output={tmp_path / 'plan.json'}",
                        "-e", "gcp_fleet_min_instances=1", "-e", "gcp_fleet_max_instances=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    for kind in ("instanceTemplate personaplex-fleet-", "instanceGroupManager personaplex-fleet", "autoscaler personaplex-fleet-as",
                 "backendService personaplex-fleet-be", "securityPolicy personaplex-fleet-armor", "forwardingRule personaplex-fleet-fr"):
        assert kind in out, kind
    low, high = (float(x) for x in re.findall(r"at min 1 instance\(s\) ([0-9.]+)/h.*at max 4 instance\(s\) ([0-9.]+)/h", out)[0])
    assert high - low > 3 * 0.53  # three more T4 instances (machine + GPU list price)
    assert "8 at max" in out  # 4 instances x 2 conversations


def test_fleet_check_mode_and_bad_settings_make_no_call(inventory, tmp_path):
    proc = run_playbook("fleet.yml", inventory, tmp_path, *SETTINGS, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Capacity: 2 conversations per instance, 6 at max." in " ".join(proc.stdout.split())
    proc = run_playbook("fleet.yml", inventory, tmp_path, *SETTINGS, "-e", "gcp_fleet_min_instances=5", "-e", "gcp_fleet_zones=['europe-west4-a']")
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "gcp_fleet_min_instances (5) is above gcp_fleet_max_instances (3)" in out
    assert "gcp_fleet_zones: europe-west4-a not in region us-central1" in out
