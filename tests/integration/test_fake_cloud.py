"""The real playbooks and google.cloud modules against a stateful stand-in of the Google APIs.

Google Cloud is unreachable here. tests/standins/fake_gcp.py answers like the documented APIs and
tests/standins/sitecustomize/ points every googleapis.com request of the Ansible processes at it, so
this checks the wiring that unit tests cannot: the arguments our tasks give google.cloud's
modules, the order of the calls, idempotency (a second run writes nothing), the explicit
profile change, power and teardown. What it cannot check: that Google accepts the same
requests (see tests/integration/real_cloud/).
"""

from __future__ import annotations

import json

import pytest
from project import PROJECT, VM, writes
from standins.fake_gcp import FakeGcp
from standins.hf_hub_auth import ACCEPTED

# What a new project has before we start: the default network and its four default-allow-* rules.
DEFAULT_NETWORK = set(FakeGcp(PROJECT).compute)


def test_preflight_reads_quota_and_says_how_to_get_more(cloud, hub):
    fake, play = cloud
    proc, calls = play("preflight.yml", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "Quota NVIDIA_T4_GPUS in us-central1: limit 0, in use 0, the VM needs 1" in out
    assert "Quota GPUS_ALL_REGIONS: limit 0, in use 0, the VM needs 1" in out
    assert "iam-admin/quotas?project=my-voice-project" in out
    # Its only writes enable the APIs (free), before the quota read needs compute.googleapis.com.
    assert {c[1].rsplit("/", 1)[-1] for c in writes(calls)} == {f"{api}.googleapis.com:enable" for api in (
        "compute", "storage", "iam", "cloudresourcemanager", "oslogin")}, writes(calls)
    assert fake.services["compute.googleapis.com"] == "ENABLED"

    fake.regional_quotas["NVIDIA_T4_GPUS"] = (1.0, 0.0)
    fake.global_quotas["GPUS_ALL_REGIONS"] = (1.0, 0.0)
    proc, calls = play("preflight.yml", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "nvidia-tesla-t4 is offered in us-central1-a" in out and "Hugging Face: alice can read nvidia/personaplex-7b-v1" in out
    assert writes(calls) == []


def test_lifecycle_create_rerun_resize_stop_teardown(cloud, tmp_path):
    """One deployment's life, in order (each step needs the state the previous one left)."""
    fake, play = cloud
    fake.require_enabled_apis = True  # a new project: Compute answers only once provision has enabled it
    fake.zone_gpus["us-central1-f"] = {"nvidia-tesla-a100"}  # in the dated T4 table, but the API says no T4 there
    proc, calls = play("provision.yml", gcp_zone="us-central1-f")
    assert proc.returncode != 0  # stopped before creating anything but the APIs
    assert "Zone us-central1-f has no nvidia-tesla-t4 GPU" in proc.stdout, proc.stdout[-3000:]
    assert [c for c in writes(calls) if "serviceusage" not in c[1]] == []
    assert not [c for c in calls if "billing" in c[1]]
    proc, calls = play("provision.yml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert fake.budgets == {} and not [c for c in calls if "billing" in c[1]]  # no gcp_budget_usd: no budget, no billing call

    vm = fake.compute[VM]
    assert vm["machineType"].endswith("/zones/us-central1-a/machineTypes/n1-standard-4")
    assert [(a["acceleratorType"].rsplit("/", 1)[-1], a["acceleratorCount"]) for a in vm["guestAccelerators"]] == [("nvidia-tesla-t4", 1)]
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert vm["labels"] == {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"}
    assert vm["serviceAccounts"][0]["email"] == f"personaplex-vm@{PROJECT}.iam.gserviceaccount.com"
    assert vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == "203.0.113.50"
    assert vm["shieldedInstanceConfig"] == {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True}
    metadata = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert metadata["enable-oslogin"] == "TRUE"
    voice = fake.compute[f"projects/{PROJECT}/global/firewalls/personaplex-allow-voice"]
    assert voice["sourceRanges"] == ["198.51.100.0/24"] and voice["allowed"] == [{"IPProtocol": "tcp", "ports": ["8998"]}]
    assert voice["targetTags"] == ["personaplex-voice"]
    bucket = fake.buckets[f"{PROJECT}-personaplex-weights"]
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    sa_member = f"serviceAccount:personaplex-vm@{PROJECT}.iam.gserviceaccount.com"
    project_roles = {b["role"] for b in fake.project_policy["bindings"] if sa_member in b["members"]}
    assert project_roles == {"roles/logging.logWriter", "roles/monitoring.metricWriter"}
    bucket_roles = {b["role"] for b in fake.bucket_policies[bucket["name"]]["bindings"] if sa_member in b["members"]}
    assert bucket_roles == {"roles/storage.objectViewer", "roles/storage.objectCreator"}  # read + create, no delete
    assert {"roles/owner"} <= {b["role"] for b in fake.project_policy["bindings"]}
    assert fake.services["compute.googleapis.com"] == "ENABLED"
    assert fake.oslogin_keys[f"deployer@{PROJECT}.iam.gserviceaccount.com"] == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKeyForTests tester@laptop"]
    known = (tmp_path / ".ssh" / "personaplex_known_hosts").read_text()
    assert "203.0.113.50 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests" in known

    proc, calls = play("provision.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert writes(calls) == [], writes(calls)
    assert "changed=0" in proc.stdout.rsplit("PLAY RECAP", 1)[-1]

    plan_file = tmp_path / "plan.json"
    proc, calls = play("plan.yml", gcp_plan_read_state="always", gcp_plan_output=str(plan_file))
    assert proc.returncode == 0, proc.stdout[-3000:]
    plan = json.loads(plan_file.read_text())
    assert {(r["type"], r["name"], r["action"]) for r in plan["resources"] if r["action"] != "unchanged"} == set()
    assert plan["write_api_calls"] == 0 and writes(calls) == []

    proc, calls = play("provision.yml", gcp_profile="l4")
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "machine type n1-standard-4 -> g2-standard-4" in out and "gcp_allow_profile_change: true" in out, proc.stdout[-2500:]
    assert writes(calls) == []  # refused before touching anything

    proc, calls = play("provision.yml", gcp_profile="l4", gcp_allow_profile_change=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    verbs = [c[1].rsplit("/", 1)[-1] for c in writes(calls) if "/instances/personaplex-vm/" in c[1]]
    assert verbs == ["stop", "setMachineResources", "setMachineType", "start"]
    vm = fake.compute[VM]
    assert vm["machineType"].endswith("/g2-standard-4") and vm["status"] == "RUNNING"
    assert [a["acceleratorType"].rsplit("/", 1)[-1] for a in vm["guestAccelerators"]] == ["nvidia-l4"]

    proc, calls = play("power.yml", gcp_profile="l4", gcp_power_state="stopped")
    assert proc.returncode == 0 and fake.compute[VM]["status"] == "TERMINATED"
    assert [c[1].rsplit("/", 1)[-1] for c in writes(calls)] == ["stop"]

    proc, _ = play("teardown.yml")
    assert proc.returncode != 0 and "gcp_teardown_confirm=personaplex" in " ".join(proc.stdout.split())

    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not [k for k in fake.compute if "/operations/" not in k and k not in DEFAULT_NETWORK]
    assert fake.service_accounts == {}
    sa_member = f"serviceAccount:personaplex-vm@{PROJECT}.iam.gserviceaccount.com"
    assert not any(sa_member in b["members"] for b in fake.project_policy["bindings"])
    assert list(fake.buckets) == [f"{PROJECT}-personaplex-weights"]  # the cached weights are kept
    kept_policy = fake.bucket_policies[f"{PROJECT}-personaplex-weights"]
    assert not any(sa_member in b["members"] for b in kept_policy["bindings"])

    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex", gcp_teardown_delete_bucket=True)
    assert proc.returncode == 0 and fake.buckets == {}


@pytest.mark.parametrize("cloud", ["adc"], indirect=True)
def test_provision_l4_spot_iap_with_application_default_credentials(cloud, tmp_path):
    """With ADC no key file may reach google.cloud's modules (they refuse one, even empty); an L4 VM
    is created with its GPU coming from the machine type (no guestAccelerators sent); with IAP the
    SSH rule admits only Google's IAP range and the host key is pinned under the VM's name."""
    fake, play = cloud
    proc, _ = play("provision.yml", gcp_profile="l4", gcp_spot=True, gcp_ssh_access="iap", gcp_admin_cidrs=[])
    assert proc.returncode == 0, proc.stdout[-3000:]
    vm = fake.compute[VM]
    assert vm["status"] == "RUNNING" and vm["machineType"].endswith("/g2-standard-4")
    assert vm["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": True,
                                "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"}
    sent = next(b for m, path, b in fake.bodies if m == "POST" and path.endswith("/zones/us-central1-a/instances"))
    assert not sent.get("guestAccelerators")
    assert [a["acceleratorType"].rsplit("/", 1)[-1] for a in vm["guestAccelerators"]] == ["nvidia-l4"]
    ssh_rule = fake.compute[f"projects/{PROJECT}/global/firewalls/personaplex-allow-ssh"]
    assert ssh_rule["sourceRanges"] == ["35.235.240.0/20"]
    assert fake.services.get("iap.googleapis.com") == "ENABLED"
    known = (tmp_path / ".ssh" / "personaplex_known_hosts").read_text()
    assert "personaplex-vm ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests" in known


def owned(fake, deployment):
    """Every resource of one deployment in the fake, by its exact names (deep copies, to compare later)."""
    sa = f"{deployment}-vm@{PROJECT}.iam.gserviceaccount.com"
    member = f"serviceAccount:{sa}"
    compute = {k: v for k, v in fake.compute.items() if "/operations/" not in k and k.rsplit("/", 1)[-1].startswith(f"{deployment}-")
               and k.rsplit("/", 1)[-1].removeprefix(f"{deployment}-") in ("vm", "ip", "allow-ssh", "allow-voice", "net", "subnet")}
    bucket = f"{PROJECT}-{deployment}-weights"
    return json.loads(json.dumps({
        "compute": compute, "sa": fake.service_accounts.get(sa), "bucket": fake.buckets.get(bucket),
        "project_roles": sorted(b["role"] for b in fake.project_policy["bindings"] if member in b["members"]),
        "bucket_roles": sorted(b["role"] for b in fake.bucket_policies.get(bucket, {}).get("bindings", []) if member in b["members"]),
    }))


def test_two_deployments_in_one_project_teardown_of_one_leaves_the_other_whole(cloud):
    """`deployment=personaplex` is a substring of `deployment=personaplex-dev`; teardown matches exactly.
    Also: each deployment has its own VPC network and subnet, and teardown lifts deletion protection after the confirmation."""
    fake, play = cloud
    proc, _ = play("provision.yml", gcp_deletion_protection=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc, _ = play("provision.yml", gcp_deployment_name="personaplex-dev")
    assert proc.returncode == 0, proc.stdout[-3000:]
    ours, dev = owned(fake, "personaplex"), owned(fake, "personaplex-dev")
    assert len(ours["compute"]) == 7 and len(dev["compute"]) == 7, (sorted(ours["compute"]), sorted(dev["compute"]))
    assert fake.compute[VM]["deletionProtection"] is True
    nic = fake.compute[VM]["networkInterfaces"][0]
    assert nic["network"].endswith("/global/networks/personaplex-net")
    assert nic["subnetwork"].endswith("/regions/us-central1/subnetworks/personaplex-subnet")
    assert fake.compute[f"projects/{PROJECT}/global/networks/personaplex-net"]["autoCreateSubnetworks"] is False
    assert fake.compute[f"projects/{PROJECT}/global/firewalls/personaplex-allow-ssh"]["network"].endswith("/networks/personaplex-net")

    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex", gcp_teardown_delete_bucket=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    gone = owned(fake, "personaplex")
    assert gone == {"compute": {}, "sa": None, "bucket": None, "project_roles": [], "bucket_roles": []}
    assert owned(fake, "personaplex-dev") == dev  # every resource of the other deployment, unchanged
    assert DEFAULT_NETWORK <= set(fake.compute)  # and the project's own network is never touched


def test_default_network_open_rules_are_listed_and_refused_unless_accepted(cloud, hub):
    """With gcp_network_name: default, preflight lists every rule open to 0.0.0.0/0 on 22, 3389 or 8998."""
    fake, play = cloud
    fake.regional_quotas["NVIDIA_T4_GPUS"] = (1.0, 0.0)
    fake.global_quotas["GPUS_ALL_REGIONS"] = (1.0, 0.0)
    proc, calls = play("preflight.yml", gcp_network_name="default", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "default-allow-rdp: tcp 3389 from 0.0.0.0/0 to all instances" in out, proc.stdout[-3000:]
    assert "default-allow-ssh: tcp 22 from 0.0.0.0/0 to all instances" in out
    assert "default-allow-internal" not in out and "gcp_accept_default_network_rules: true" in out
    # Preflight's only writes enable the (free) APIs; nothing is created.
    assert [c for c in writes(calls) if not c[1].endswith(":enable")] == []

    proc, calls = play("provision.yml", gcp_network_name="default", gcp_accept_default_network_rules=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.compute[VM]["networkInterfaces"][0]["network"].endswith("/global/networks/default")
    assert "subnetwork" not in fake.compute[VM]["networkInterfaces"][0]
    assert not [k for k in fake.compute if "/networks/personaplex" in k or "/subnetworks/" in k]
