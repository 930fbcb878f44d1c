"""The playbooks themselves, run with the project's ansible-playbook, no credentials and no network.

plan.yml must print and write the whole plan without any API call; provision.yml and
preflight.yml must stop at the offline validation on bad input, before any API call.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from project import ANSIBLE_PLAYBOOK, REPO, run_playbook

PLAYBOOKS = ["preflight.yml", "provision.yml", "plan.yml", "power.yml", "teardown.yml",
             "find_vm.yml", "url.yml", "ssh_config.yml", "smoke.yml", "configure.yml", "site.yml",
             "../tests/integration/real_cloud/test_real_cloud.yml"]


CIDRS = ["-e", json.dumps({"gcp_project": "my-voice-project", "gcp_admin_cidrs": ["203.0.113.7/32"],
                           "gcp_client_cidrs": ["198.51.100.0/24", "192.0.2.10/32"]})]


def test_plan_without_credentials_writes_the_default_plan(inventory, tmp_path):
    out = tmp_path / "plan.json"
    proc = run_playbook("plan.yml", inventory, tmp_path, *CIDRS, "-e", f"gcp_plan_output={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(out.read_text())
    vm = next(r for r in plan["resources"] if r["type"] == "compute.instance")["fields"]
    assert vm["machine_type"] == "n1-standard-4"
    assert vm["guest_accelerators"] == [{"accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}]
    assert vm["scheduling"]["on_host_maintenance"] == "TERMINATE"
    voice = next(r for r in plan["resources"] if r["name"] == "personaplex-allow-voice")["fields"]
    assert voice["allowed"] == [{"ip_protocol": "tcp", "ports": ["8998"]}]
    assert voice["source_ranges"] == ["192.0.2.10/32", "198.51.100.0/24"]
    assert plan["cost"]["running_per_hour"] > 0.5 and plan["cost"]["per_month_24h"] > 300
    assert plan["cost"]["credit_days_24h"] > 0 and plan["cost"]["credit_days_8h_per_day"] > plan["cost"]["credit_days_24h"]
    assert set(plan["cost"]["profiles"]) == {"t4", "l4", "a100"}
    assert plan["write_api_calls"] == 0 and plan["read_api_calls"] == 0
    assert plan["state"].startswith("not read: No Application Default Credentials")
    assert "n1-standard-4 + 1 x nvidia-tesla-t4" in proc.stdout
    assert "Voice (8998) from 192.0.2.10/32, 198.51.100.0/24" in proc.stdout
    # How long the credit lasts, as worked out by hand in unit/plugins/module_utils/test_gcp_cost.py.
    out = " ".join(proc.stdout.split())
    assert "58.5 days on-demand (5.13/day), 146.6 days Spot (2.05/day)" in out, out[-3000:]
    assert "t4: 58.5 days on-demand, 146.6 days Spot." in out
    assert plan["cost"]["money_lasts"]["spot"]["credit_days"] == 146.6
    assert plan["cost"]["money_lasts"]["on_demand"]["credit_days"] == 58.5
    assert plan["cost"]["profiles"]["t4"]["spot_credit_days"] == 146.6


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"gcp_profile": "v100"}, "gcp_profile: 'v100' is not a known profile. Accepted: a100, l4, t4."),
        ({"gcp_client_cidrs": ["10.0.0.1/24"]}, "did you mean 10.0.0.0/24?"),
        ({"gcp_bucket_name": "Google-Weights"}, "gcp_bucket_name: 'Google-Weights'"),
        ({"gcp_profile": "l4", "gcp_zone": "us-central1-f"}, "gcp_zone: 'us-central1-f' has no nvidia-l4 GPU"),
        # IAM refuses service account ids under 6 characters, after the APIs were enabled
        ({"gcp_deployment_name": "pp"}, "gives the service account id 'pp-vm' (5 characters)"),
        ({"gcp_subnet_cidr": "10.0.0.0/33"}, "gcp_subnet_cidr: '10.0.0.0/33' is not a valid IPv4 CIDR"),
    ],
)
def test_bad_input_stops_before_any_api_call(inventory, tmp_path, extra, expected):
    check_bad_input_stops_early("provision.yml", inventory, tmp_path, extra, expected)


def test_preflight_also_validates_first(inventory, tmp_path):
    check_bad_input_stops_early("preflight.yml", inventory, tmp_path, {"gcp_profile": "l4", "gcp_zone": "us-central1-f"},
                                "gcp_zone: 'us-central1-f' has no nvidia-l4 GPU")


def check_bad_input_stops_early(playbook, inventory, tmp_path, extra, expected):
    settings = {"gcp_project": "my-voice-project", "gcp_admin_cidrs": ["203.0.113.7/32"], "gcp_client_cidrs": ["198.51.100.0/24"]}
    settings.update(extra)
    proc = run_playbook(playbook, inventory, tmp_path, "-e", json.dumps(settings))
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout
    failed_task = proc.stdout.split("fatal:")[0].rsplit("TASK [", 1)[-1]
    assert failed_task.startswith("gcp_infra : Validate the settings and compute every resource (no write call)"), failed_task
    assert "Enable the Google APIs" not in proc.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(inventory, tmp_path, playbook):
    proc = run_playbook(playbook, inventory, tmp_path, "--syntax-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dynamic_inventory_config_is_accepted_up_to_the_credentials(tmp_path):
    """The google.cloud.gcp_compute plugin takes the file and stops only where it needs Google credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "GOOGLE_", "CLOUDSDK_", "ANSIBLE_"))}
    env.update(HOME=str(tmp_path), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK.with_name("ansible-inventory")), "-i", str(REPO / "inventory" / "gcp.gcp_compute.yml"), "--list"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "with auto plugin: Your default credentials were not found" in text, text


def test_provision_in_check_mode_shows_the_plan_and_calls_nothing(inventory, tmp_path):
    proc = run_playbook("provision.yml", inventory, tmp_path, "--check", *CIDRS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "create-or-enforce compute.instance personaplex-vm" in proc.stdout
    assert "State: not read: No Application Default Credentials" in " ".join(proc.stdout.split())
    for task in ("Enable the Google APIs", "Create the GPU VM", "Grant the service account"):
        assert f"TASK [gcp_infra : {task}" not in proc.stdout


def test_real_cloud_test_uses_the_control_node_inventory_and_always_tears_down():
    """A failed step must not leave a billing VM behind, nor wait on the local container."""
    import yaml

    text = (REPO / "tests" / "integration" / "real_cloud" / "test_real_cloud.yml").read_text()
    assert "-i inventory/hosts.yml" in text and "-i inventory/local.yml" not in text
    plays = yaml.safe_load(text)
    assert [p["hosts"] for p in plays] == ["localhost"]
    tasks = plays[0]["tasks"]
    assert "groups['voice_servers']" in tasks[0]["ansible.builtin.assert"]["that"]
    block = next(t for t in tasks if "block" in t)
    provisions = [t for t in block["block"] if t.get("ansible.builtin.include_role", {}).get("name") == "gcp_infra"
                  and "tasks_from" not in t["ansible.builtin.include_role"]]
    assert provisions, "the provision step is inside the block"
    always = block["always"]
    assert always[0]["ansible.builtin.include_role"] == {"name": "gcp_infra", "tasks_from": "teardown.yml"}
    assert plays[0]["vars"]["gcp_teardown_confirm"] == "pp-realtest" and plays[0]["vars"]["gcp_teardown_delete_bucket"] is True
    left = next(t for t in always if "gcp_deployment_resources" in t)
    assert left and "real_cloud_left.networks == []" in always[-1]["ansible.builtin.assert"]["that"]
