"""gcp_deployment_resources: finds a deployment's resources by its labels and markers only (HTTP mocked)."""

from __future__ import annotations

import gcp_deployment_resources
from standins.google_http import AUTH, google_error


def test_finder_matches_labels_and_markers_only(transport, run_module):
    marker = "managed-by=personaplex-ansible deployment=personaplex"
    transport.add("GET", r"/aggregated/instances\?filter=", body={"items": {
        "zones/us-central1-a": {"instances": [
            {"name": "personaplex-vm", "zone": "projects/p/zones/us-central1-a", "status": "RUNNING",
             "labels": {"app": "personaplex", "deployment": "personaplex"}, "deletionProtection": True},
            # an API filter that matched loosely must not hand us another deployment's VM
            {"name": "personaplex-dev-vm", "zone": "projects/p/zones/us-central1-a", "status": "RUNNING",
             "labels": {"app": "personaplex", "deployment": "personaplex-dev"}}]},
        "zones/us-east1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE"}}}})
    transport.add("GET", r"/regions/us-central1/addresses", body={"items": [
        {"name": "personaplex-ip", "address": "34.1.2.3", "description": marker},
        {"name": "other-ip", "address": "34.9.9.9", "description": "someone else's"},
        {"name": "personaplex-dev-ip", "address": "34.9.9.8", "description": marker + "-dev"}]})
    transport.add("GET", r"/regions/us-central1/subnetworks", body={"items": [
        {"name": "personaplex-subnet", "description": "Subnet. " + marker}, {"name": "personaplex-dev-subnet", "description": marker + "-dev"}]})
    transport.add("GET", r"/global/networks", body={"items": [
        {"name": "default", "description": "Default network for the project"}, {"name": "personaplex-net", "description": marker},
        {"name": "personaplex-dev-net", "description": "PersonaPlex VPC. " + marker + "-dev"}]})
    transport.add("GET", r"/global/firewalls", body={"items": [
        {"name": "personaplex-allow-ssh", "description": "SSH. " + marker}, {"name": "default-allow-ssh", "description": "Allow SSH"}],
        "nextPageToken": "p2"}, times=1)
    transport.add("GET", r"/global/firewalls\?pageToken=p2", body={"items": [{"name": "personaplex-allow-voice", "description": marker},
        {"name": "personaplex-dev-allow-voice", "description": "PersonaPlex voice port. " + marker + "-dev"}]})
    transport.add("GET", r"storage/v1/b\?project=", body={"items": [
        {"name": "w1", "labels": {"app": "personaplex", "deployment": "personaplex"}},
        {"name": "w2", "labels": {"app": "personaplex", "deployment": "staging"}}, {"name": "w3"}]})
    transport.add("GET", r"/serviceAccounts/", status=404, body=google_error(404, "NOT_FOUND", "gone"))
    result = run_module(gcp_deployment_resources, dict(AUTH, deployment="personaplex", marker=marker, region="us-central1",
                                                        service_account_email="personaplex-vm@my-voice-project.iam.gserviceaccount.com"))
    assert [i["name"] for i in result["instances"]] == ["personaplex-vm"] and result["instances"][0]["zone"] == "us-central1-a"
    assert result["instances"][0]["deletion_protection"] is True
    assert result["subnetworks"] == [{"name": "personaplex-subnet", "region": "us-central1"}]
    assert result["networks"] == ["personaplex-net"]
    assert [a["name"] for a in result["addresses"]] == ["personaplex-ip"]
    assert result["firewalls"] == ["personaplex-allow-ssh", "personaplex-allow-voice"]
    assert result["buckets"] == ["w1"] and result["service_accounts"] == []
    assert "labels.deployment+%3D+%22personaplex%22" in transport.calls[0]["url"]
    assert transport.writes() == []
