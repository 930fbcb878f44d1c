"""gcp_deployment_plan: the plan module fails on bad input before any HTTP call, reads state with
GET calls only, and reports drift and profile changes of what exists (HTTP mocked)."""

from __future__ import annotations

import gcp_deployment_plan
from standins.google_http import AUTH


def test_plan_module_fails_on_bad_input_without_any_http_call(settings, tables, transport, run_module):
    args = dict(settings=dict(settings, profile="h100", client_cidrs=["10.0.0.1/24"]), read_state="always", **tables, **AUTH)
    args.pop("project")
    result = run_module(gcp_deployment_plan, args)
    assert result.failed
    assert "gcp_profile" in result["msg"] and "gcp_client_cidrs" in result["msg"]
    assert transport.calls == []


def test_plan_module_reads_state_with_get_calls_only(settings, tables, transport, run_module):
    # Nothing exists yet except the default APIs: every resource is to be created.
    transport.add("GET", r"serviceusage.googleapis.com/v1/projects/my-voice-project/services/", body={"state": "ENABLED"})
    transport.add("POST", r":getIamPolicy$", body={"version": 1, "etag": "BwXhqDk=", "bindings": []})
    transport.add("GET", r".*", status=404, body={"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
    args = dict(settings=settings, read_state="always", **tables, **AUTH)
    args.pop("project")
    result = run_module(gcp_deployment_plan, args)
    assert not result.failed, result
    plan = result["plan"]
    actions = {(r["type"], r["name"]): r["action"] for r in plan["resources"]}
    assert actions[("compute.instance", "personaplex-vm")] == "create"
    assert actions[("serviceusage.service", "compute.googleapis.com")] == "unchanged"
    assert actions[("iam.binding", "projects/my-voice-project roles/logging.logWriter")] == "update"
    assert transport.writes() == []
    assert plan["write_api_calls"] == 0 and plan["read_api_calls"] == len(transport.calls)


def test_plan_module_reports_profile_change_of_existing_vm(settings, tables, transport, run_module):
    vm = {"name": "personaplex-vm", "status": "RUNNING",
          "machineType": "https://www.googleapis.com/compute/v1/projects/my-voice-project/zones/us-central1-a/machineTypes/n1-standard-4",
          "guestAccelerators": [{"acceleratorType": "projects/my-voice-project/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                                 "acceleratorCount": 1}],
          "scheduling": {"onHostMaintenance": "TERMINATE"},
          "labels": {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"}}
    transport.add("GET", r"/instances/personaplex-vm$", body=vm)
    transport.add("GET", r".*", status=404, body={"error": {"code": 404, "message": "not found"}})
    transport.add("POST", r":getIamPolicy$", body={"etag": "x", "bindings": []})
    args = dict(settings=dict(settings, profile="l4"), read_state="always", **tables, **AUTH)
    args.pop("project")
    plan = run_module(gcp_deployment_plan, args)["plan"]
    vm_plan = next(r for r in plan["resources"] if r["type"] == "compute.instance")
    assert vm_plan["action"] == "update"
    assert any("n1-standard-4 -> g2-standard-4" in c for c in vm_plan["changes"])


def test_plan_module_lists_firewall_and_bucket_drift(settings, tables, transport, run_module):
    transport.add("GET", r"/global/firewalls/personaplex-allow-voice$", body={
        "name": "personaplex-allow-voice", "sourceRanges": ["0.0.0.0/0"], "targetTags": ["personaplex-voice"],
        "allowed": [{"IPProtocol": "tcp", "ports": ["8998"]}]})
    transport.add("GET", r"/storage/v1/b/my-voice-project-personaplex-weights$", body={
        "name": "my-voice-project-personaplex-weights", "labels": {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"},
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}, "publicAccessPrevention": "inherited"}})
    transport.add("GET", r".*", status=404, body={"error": {"code": 404, "message": "not found"}})
    transport.add("POST", r":getIamPolicy$", body={"etag": "x", "bindings": []})
    args = dict(settings=settings, read_state="always", **tables, **AUTH)
    args.pop("project")
    plan = run_module(gcp_deployment_plan, args)["plan"]
    by_name = {r["name"]: r for r in plan["resources"]}
    voice = by_name["personaplex-allow-voice"]
    assert voice["action"] == "update" and voice["changes"] == ["source_ranges ['0.0.0.0/0'] -> ['198.51.100.0/24']"]
    bucket = by_name["my-voice-project-personaplex-weights"]
    assert bucket["action"] == "update" and bucket["changes"] == ["public access prevention inherited -> enforced"]
    assert by_name["personaplex-allow-ssh"]["action"] == "create"
