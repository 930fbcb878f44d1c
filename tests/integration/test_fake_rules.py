"""The project's modules against the stricter fake of Google's APIs, in-process.

`live` bridges the modules' HTTP transport straight into FakeGcp.handle (no server, no Ansible
subprocess), so every profile pair, each convergence and each of the fake's documented refusals is
checked in milliseconds. Every refusal of the fake cites the Google document it models (fake_gcp.py).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gcp_compute_instance_state
import gcp_credentials_check
import pytest
import requests
import requests.adapters
from standins.fake_gcp import WWW, FakeGcp
from standins.google_http import AUTH, response

PROJECT = "my-voice-project"
ZONE = "us-central1-a"
SCOPE = f"projects/{PROJECT}/zones/{ZONE}"
KEY = f"{SCOPE}/instances/personaplex-vm"
PROFILES = {"t4": ("n1-standard-4", [("nvidia-tesla-t4", 1)]), "l4": ("g2-standard-4", []), "a100": ("a2-highgpu-1g", [])}


class Bridge(requests.adapters.BaseAdapter):
    """A requests transport that hands each request to FakeGcp.handle, as the HTTP server would."""

    def __init__(self, fake: FakeGcp) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(str(request.url))
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        status, payload = self.fake.handle(str(request.method), str(parts.hostname), parts.path, parse_qs(parts.query), body,
                                           dict(request.headers))
        return response(request, status, payload)

    def close(self) -> None:
        pass


@pytest.fixture
def live(monkeypatch):
    from ansible.module_utils import gcp_rest

    fake = FakeGcp(PROJECT)
    monkeypatch.setattr(gcp_rest, "transport_adapter", lambda: Bridge(fake))
    monkeypatch.setattr(gcp_rest.time, "sleep", lambda _s: None)
    return fake


def insert_vm(fake: FakeGcp, profile: str = "t4", **extra: Any) -> dict[str, Any]:
    machine, gpus = PROFILES[profile]
    body = {"name": "personaplex-vm", "machineType": f"zones/{ZONE}/machineTypes/{machine}",
            "guestAccelerators": [{"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/{t}", "acceleratorCount": c}
                                  for t, c in gpus],
            "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": True, "preemptible": False},
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {
                "diskSizeGb": "100", "diskType": "pd-balanced", "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
            "networkInterfaces": [{"network": "global/networks/default", "accessConfigs": [{"name": "External NAT"}]}],
            "serviceAccounts": [{"email": f"personaplex-vm@{PROJECT}.iam.gserviceaccount.com",
                                 "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
            "labels": {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"},
            "tags": {"items": ["personaplex-voice"]},
            "metadata": {"items": [{"key": "enable-oslogin", "value": "TRUE"}, {"key": "enable-guest-attributes", "value": "TRUE"}]}}
    body.update(extra)
    status, answer = fake.handle("POST", "compute.googleapis.com", f"/compute/v1/{SCOPE}/instances", {}, body)
    assert status == 200, answer
    return fake.compute[KEY]


def writes(fake: FakeGcp, before: int) -> list[str]:
    return [p.rsplit("/", 1)[-1] for m, p in fake.calls[before:] if m != "GET"]


def state_args(profile: str, **extra: Any) -> dict[str, Any]:
    machine, gpus = PROFILES[profile]
    base = dict(AUTH, zone=ZONE, name="personaplex-vm", state="running", machine_type=machine,
                guest_accelerators=[{"accelerator_type": t, "accelerator_count": c} for t, c in gpus],
                on_host_maintenance="TERMINATE", allow_stop=True, deployment="personaplex")
    return dict(base, **extra)


def gpu_names(vm: dict[str, Any]) -> list[str]:
    return [a["acceleratorType"].rsplit("/", 1)[-1] for a in vm.get("guestAccelerators") or []]


# --- every profile pair ---------------------------------------------------------------------------
IN_PLACE = {("t4", "l4"): ["stop", "setMachineResources", "setMachineType", "start"],
            ("l4", "t4"): ["stop", "setMachineType", "setMachineResources", "start"]}


@pytest.mark.parametrize(("old", "new"), [(a, b) for a in PROFILES for b in PROFILES if a != b])
def test_every_profile_pair_is_changed_as_the_api_accepts_or_refused_before_any_write(live, run_module, old, new):
    insert_vm(live, old)
    before = len(live.calls)
    result = run_module(gcp_compute_instance_state, state_args(new))
    vm = live.compute[KEY]
    if (old, new) in IN_PLACE:
        assert not result.failed, result["msg"]
        assert writes(live, before) == IN_PLACE[(old, new)]
        assert vm["machineType"].endswith("/" + PROFILES[new][0]) and vm["status"] == "RUNNING"
        assert gpu_names(vm) == [{"t4": "nvidia-tesla-t4", "l4": "nvidia-l4"}[new]]
        assert all(a["acceleratorType"].startswith(f"{WWW}/{SCOPE}/acceleratorTypes/") for a in vm["guestAccelerators"])
        again = len(live.calls)
        assert run_module(gcp_compute_instance_state, state_args(new))["changed"] is False and writes(live, again) == []
    else:  # to or from A2: Google does not change the machine series in place
        assert result.failed
        assert "cannot change a VM from the" in result["msg"] and "gcp_teardown_confirm=personaplex" in result["msg"]
        assert writes(live, before) == []  # said before any write: the VM is still running as it was
        assert vm["status"] == "RUNNING" and vm["machineType"].endswith("/" + PROFILES[old][0])


def test_the_old_order_is_refused_by_the_fake_as_by_google(live):
    """setMachineType to G2 with the T4 still attached: G2 refuses added accelerators."""
    insert_vm(live, "t4")
    live.compute[KEY]["status"] = "TERMINATED"
    status, body = live.handle("POST", "compute.googleapis.com", f"/compute/v1/{KEY}/setMachineType", {},
                               {"machineType": f"zones/{ZONE}/machineTypes/g2-standard-4"})
    assert status == 400 and "does not support additional accelerators" in body["error"]["message"]
    assert body["error"]["errors"][0]["reason"] == "invalid"


# --- reruns converge what the API allows, refuse the rest before any write ---------------
def test_rerun_converges_labels_tags_metadata_scheduling_account_disk_and_protection(live, run_module, settings, tables):
    from ansible.module_utils.gcp_settings import build_spec
    from ansible.module_utils.gcp_state import diff_instance

    vm = insert_vm(live, "t4", labels={"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible", "owner": "bob",
                                       "goog-ops-agent-policy": "v2"},
                   tags={"items": ["personaplex-voice", "old-tag"]},
                   metadata={"items": [{"key": "enable-oslogin", "value": "FALSE"}, {"key": "startup-script", "value": "echo hi"}]},
                   serviceAccounts=[{"email": "default@example.iam.gserviceaccount.com", "scopes": []}])
    spec = build_spec(dict(settings, labels={"owner": "alice"}, network_tags=["extra"], disk_size_gb=150, deletion_protection=True),
                      tables["profiles"], tables["images"])
    fields = next(r for r in spec["resources"] if r["type"] == "compute.instance")["fields"]
    plan = diff_instance(fields, json.loads(json.dumps(vm)), "personaplex")
    args = state_args("t4", labels=fields["labels"], tags=fields["tags"], metadata=spec["metadata"], scheduling=fields["scheduling"],
                      service_account=fields["service_account"], disk_size_gb=fields["boot_disk"]["size_gb"],
                      deletion_protection=fields["deletion_protection"])
    before = len(live.calls)
    result = run_module(gcp_compute_instance_state, args)
    assert not result.failed, result.get("msg")
    assert writes(live, before) == ["stop", "setServiceAccount", "setLabels", "setTags", "setMetadata", "resize",
                                    "setDeletionProtection", "start"]
    vm = live.compute[KEY]
    assert vm["labels"] == {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible", "owner": "alice",
                            "goog-ops-agent-policy": "v2"}
    assert sorted(vm["tags"]["items"]) == ["extra", "personaplex-voice"]
    metadata = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert metadata == {"enable-oslogin": "TRUE", "enable-guest-attributes": "TRUE", "startup-script": "echo hi"}  # others kept
    assert vm["serviceAccounts"][0]["email"] == f"personaplex-vm@{PROJECT}.iam.gserviceaccount.com"
    assert live.compute[f"{SCOPE}/disks/personaplex-vm"]["sizeGb"] == "150" and vm["deletionProtection"] is True
    # The plan listed exactly these differences, with the stop where the API needs it.
    assert len(plan) == 6, plan
    assert any(p.startswith("service account default@") and "needs the VM stopped" in p for p in plan)
    assert "boot disk 100 GB -> 150 GB" in plan and "deletion protection False -> True" in plan
    assert any(p.startswith("labels set owner=alice") for p in plan)
    again = len(live.calls)
    assert run_module(gcp_compute_instance_state, args)["changed"] is False and writes(live, again) == []
    assert diff_instance(fields, live.compute[KEY], "personaplex") == []


def test_smaller_disk_and_account_change_without_permission_are_refused_before_any_write(live, run_module):
    insert_vm(live, "t4")
    before = len(live.calls)
    result = run_module(gcp_compute_instance_state, state_args("t4", disk_size_gb=64, labels={"app": "x"}))
    assert result.failed and "a disk cannot shrink; set gcp_disk_size_gb: 100" in result["msg"]
    assert writes(live, before) == []
    result = run_module(gcp_compute_instance_state, state_args("t4", allow_stop=False,
                                                               service_account={"email": "other@x.iam.gserviceaccount.com", "scopes": []}))
    assert result.failed and "gcp_allow_profile_change: true" in result["msg"] and writes(live, before) == []


# --- user credentials without a quota project ----------------------------------------------
def adc(tmp_path, quota: str = "") -> str:
    info = {"type": "authorized_user", "client_id": "764086051850-x.apps.googleusercontent.com", "client_secret": "s",
            "refresh_token": "1//refresh"}
    if quota:
        info["quota_project_id"] = quota
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(info))
    return str(path)


def test_user_credentials_without_quota_project_get_the_exact_command(tmp_path, monkeypatch, run_module):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", adc(tmp_path))
    result = run_module(gcp_credentials_check, {"project": PROJECT, "auth_kind": "application"})
    assert result.failed and f"gcloud auth application-default set-quota-project {PROJECT}" in result["msg"]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", adc(tmp_path, PROJECT))
    result = run_module(gcp_credentials_check, {"project": PROJECT, "auth_kind": "application"})
    assert not result.failed and result["kind"] == "authorized_user" and result["quota_project"] == PROJECT


def test_the_fake_refuses_service_usage_to_user_credentials_without_quota_project(live, tmp_path, monkeypatch):
    from ansible.module_utils.gcp_rest import SERVICEUSAGE, GcpApiError, client_from_params

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", adc(tmp_path))
    client = client_from_params({"project": PROJECT, "auth_kind": "application"})
    with pytest.raises(GcpApiError) as info:
        client.get(f"{SERVICEUSAGE}/projects/{PROJECT}/services/compute.googleapis.com")
    assert info.value.status == 403 and "set-quota-project" in info.value.hint()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", adc(tmp_path, PROJECT))
    client = client_from_params({"project": PROJECT, "auth_kind": "application"})  # google-auth sends x-goog-user-project
    assert client.get(f"{SERVICEUSAGE}/projects/{PROJECT}/services/compute.googleapis.com")["state"] == "DISABLED"


# --- the fake refuses what Google refuses (each rule's source is cited in fake_gcp.py) -----
def post(fake: FakeGcp, path: str, body: Any, query: dict[str, list[str]] | None = None) -> tuple[int, Any]:
    return fake.handle("POST", "compute.googleapis.com", f"/compute/v1/{path}", query or {}, body)


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]}, 400, "Must be a URL"),
    ({"guestAccelerators": [{"acceleratorType": f"projects/{PROJECT}/zones/us-east1-c/acceleratorTypes/nvidia-tesla-t4",
                             "acceleratorCount": 1}]}, 400, "must be in zone us-central1-a"),
    ({"scheduling": {"onHostMaintenance": "MIGRATE"}}, 400, "do not support live migration"),
    ({"scheduling": {}}, 400, "do not support live migration"),  # MIGRATE is the API's default
    ({"machineType": f"zones/{ZONE}/machineTypes/g2-standard-4"}, 400, "does not support additional accelerators"),
    ({"machineType": f"zones/{ZONE}/machineTypes/e2-standard-4"}, 400, "does not support additional accelerators"),
    ({"guestAccelerators": [{"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/nvidia-l4", "acceleratorCount": 1}]},
     400, "not supported with machine type n1-standard-4"),
    ({"disks": [{"boot": True, "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-13x"}}]},
     404, "debian-13x' was not found"),
    ({"networkInterfaces": [{"network": "global/networks/nope"}]}, 404, "networks/nope' was not found"),
])
def test_instance_insert_refusals(live, change, status, words):
    body = {"name": "vm", "machineType": f"zones/{ZONE}/machineTypes/n1-standard-4", "scheduling": {"onHostMaintenance": "TERMINATE"},
            "guestAccelerators": [{"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4",
                                   "acceleratorCount": 1}]}
    body.update(change)
    got, answer = post(live, f"{SCOPE}/instances", body)
    assert got == status and words in answer["error"]["message"], answer
    assert f"{SCOPE}/instances/vm" not in live.compute


def test_g2_created_without_accelerators_lists_its_builtin_l4(live):
    vm = insert_vm(live, "l4")
    assert gpu_names(vm) == ["nvidia-l4"]
    live.compute[KEY]["status"] = "TERMINATED"
    got, answer = post(live, f"{KEY}/setMachineResources", {"guestAccelerators": [
        {"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}]})
    assert got == 400 and "does not support additional accelerators" in answer["error"]["message"]


def test_stopped_only_verbs_protection_fingerprints_disks_and_networks(live):
    insert_vm(live, "t4")
    for verb in ("setMachineType", "setMachineResources", "setServiceAccount"):
        got, answer = post(live, f"{KEY}/{verb}", {"machineType": f"zones/{ZONE}/machineTypes/n1-standard-8"})
        assert got == 400 and "must be stopped" in answer["error"]["message"]
    assert post(live, f"{KEY}/setLabels", {"labels": {}, "labelFingerprint": "stale"})[0] == 412
    assert post(live, f"{SCOPE}/disks/personaplex-vm/resize", {"sizeGb": "50"})[0] == 400
    assert post(live, f"{KEY}/setDeletionProtection", None, {"deletionProtection": ["true"]})[0] == 200
    got, answer = live.handle("DELETE", "compute.googleapis.com", f"/compute/v1/{KEY}", {}, None)
    assert got == 400 and "protected against deletion" in answer["error"]["message"] and KEY in live.compute
    net = f"projects/{PROJECT}/global/networks/default"
    got, answer = live.handle("DELETE", "compute.googleapis.com", f"/compute/v1/{net}", {}, None)
    assert got == 400 and answer["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"
    got, answer = post(live, f"projects/{PROJECT}/regions/us-central1/subnetworks",
                       {"name": "s", "network": "global/networks/default", "ipCidrRange": "10.9.0.0/24"})
    assert got == 400 and "auto mode network" in answer["error"]["message"]
