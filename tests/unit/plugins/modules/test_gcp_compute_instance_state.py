"""gcp_compute_instance_state: power and explicit profile changes of an existing VM (HTTP mocked)."""

from __future__ import annotations

import gcp_compute_instance_state
from standins.google_http import AUTH, google_error

VM = r"compute.googleapis.com/compute/v1/projects/my-voice-project/zones/us-central1-a/instances/personaplex-vm"
T4 = [{"accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}]


def vm(status="RUNNING", machine="n1-standard-4", gpus=("nvidia-tesla-t4",), maintenance="TERMINATE"):
    return {
        "kind": "compute#instance", "name": "personaplex-vm", "status": status,
        "machineType": f"https://www.googleapis.com/compute/v1/projects/my-voice-project/zones/us-central1-a/machineTypes/{machine}",
        "guestAccelerators": [{"acceleratorType": f"https://www.googleapis.com/compute/v1/projects/my-voice-project/zones/us-central1-a/acceleratorTypes/{g}",
                               "acceleratorCount": 1} for g in gpus],
        "scheduling": {"onHostMaintenance": maintenance, "automaticRestart": True, "preemptible": False},
        "networkInterfaces": [{"accessConfigs": [{"name": "External NAT", "natIP": "34.123.45.67"}]}],
    }


def done_operation(verb):
    return {"kind": "compute#operation", "name": f"operation-{verb}", "operationType": verb, "status": "DONE",
            "selfLink": f"https://compute.googleapis.com/compute/v1/projects/my-voice-project/zones/us-central1-a/operations/operation-{verb}"}


def allow_verbs(transport, *verbs):
    for verb in verbs:
        transport.add("POST", VM + "/" + verb + "$", body=done_operation(verb))


def posted(transport):
    return [c["url"].rsplit("/", 1)[-1] for c in transport.writes()]


def args(**extra):
    return dict(AUTH, zone="us-central1-a", name="personaplex-vm", **extra)


def test_stop_running_vm_keeps_it_and_reports_change(transport, run_module):
    transport.add("GET", VM + "$", body=vm("RUNNING"), times=1)
    transport.add("GET", VM + "$", body=vm("TERMINATED"))
    allow_verbs(transport, "stop")
    result = run_module(gcp_compute_instance_state, args(state="stopped"))
    assert result["changed"] is True and result["status"] == "TERMINATED" and posted(transport) == ["stop"]
    assert result["external_ip"] == "34.123.45.67"


def test_stopping_a_stopped_vm_changes_nothing(transport, run_module):
    transport.add("GET", VM + "$", body=vm("TERMINATED"))
    result = run_module(gcp_compute_instance_state, args(state="stopped"))
    assert result["changed"] is False and transport.writes() == []


def test_start_waits_for_stopping_then_starts_and_reads_host_keys(transport, run_module):
    transport.add("GET", VM + "$", body=vm("STOPPING"), times=1)
    transport.add("GET", VM + "$", body=vm("TERMINATED"), times=1)
    transport.add("GET", VM + "$", body=vm("RUNNING"))
    transport.add("GET", VM + r"/getGuestAttributes\?queryPath=hostkeys%2F$", body={"queryValue": {"items": [
        {"namespace": "hostkeys", "key": "ssh-ed25519", "value": "AAAAC3NzaC1lZDI1NTE5AAAAIExample"}]}})
    allow_verbs(transport, "start")
    result = run_module(gcp_compute_instance_state, args(state="running"))
    assert posted(transport) == ["start"] and result["status"] == "RUNNING"
    assert result["host_keys"] == {"ssh-ed25519": "AAAAC3NzaC1lZDI1NTE5AAAAIExample"}


def test_check_mode_makes_no_write(transport, run_module):
    transport.add("GET", VM + "$", body=vm("RUNNING"))
    result = run_module(gcp_compute_instance_state, args(state="stopped"), check_mode=True)
    assert result["changed"] is True and result["actions"] == ["stop"] and transport.writes() == []


def test_profile_change_refused_without_permission(transport, run_module):
    transport.add("GET", VM + "$", body=vm("RUNNING"))
    result = run_module(gcp_compute_instance_state, args(state="running", machine_type="g2-standard-4", guest_accelerators=[]))
    assert result.failed
    assert "machine type n1-standard-4 -> g2-standard-4" in result["msg"]
    assert "gcp_allow_profile_change: true" in result["msg"]
    assert transport.writes() == []


def test_t4_to_l4_stops_detaches_resizes_and_starts(transport, run_module):
    transport.add("GET", VM + "$", body=vm("RUNNING"), times=1)
    transport.add("GET", VM + "$", body=vm("RUNNING", machine="g2-standard-4", gpus=("nvidia-l4",)))
    transport.add("GET", VM + r"/getGuestAttributes", body={})
    allow_verbs(transport, "stop", "setMachineResources", "setMachineType", "start")
    result = run_module(gcp_compute_instance_state, args(state="running", machine_type="g2-standard-4", guest_accelerators=[], allow_stop=True))
    assert posted(transport) == ["stop", "setMachineResources", "setMachineType", "start"]
    bodies = [c["body"] for c in transport.writes()]
    assert bodies[1] == {"guestAccelerators": []}
    assert bodies[2]["machineType"] == "zones/us-central1-a/machineTypes/g2-standard-4"
    assert result["changed"] is True


def test_l4_to_t4_attaches_the_t4_after_resizing(transport, run_module):
    transport.add("GET", VM + "$", body=vm("TERMINATED", machine="g2-standard-4", gpus=("nvidia-l4",)), times=1)
    transport.add("GET", VM + "$", body=vm("TERMINATED"))
    allow_verbs(transport, "setMachineType", "setMachineResources")
    run_module(gcp_compute_instance_state, args(state="present", machine_type="n1-standard-4", guest_accelerators=T4, allow_stop=True))
    assert posted(transport) == ["setMachineType", "setMachineResources"]
    attach = transport.writes()[1]["body"]["guestAccelerators"][0]
    assert attach == {"acceleratorType": "projects/my-voice-project/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}


def test_vm_with_builtin_gpu_matching_profile_is_unchanged(transport, run_module):
    transport.add("GET", VM + "$", body=vm("RUNNING", machine="g2-standard-4", gpus=("nvidia-l4",)))
    transport.add("GET", VM + r"/getGuestAttributes", body={})
    result = run_module(gcp_compute_instance_state, args(state="running", machine_type="g2-standard-4", guest_accelerators=[], on_host_maintenance="TERMINATE"))
    assert result["changed"] is False and transport.writes() == []


def test_migrate_maintenance_is_corrected_to_terminate(transport, run_module):
    transport.add("GET", VM + "$", body=vm("TERMINATED", maintenance="MIGRATE"))
    allow_verbs(transport, "setScheduling")
    run_module(gcp_compute_instance_state, args(on_host_maintenance="TERMINATE", allow_stop=True))
    assert transport.writes()[0]["body"]["onHostMaintenance"] == "TERMINATE"


def test_start_failing_on_gpu_quota_explains(transport, run_module):
    transport.add("GET", VM + "$", body=vm("TERMINATED"))
    failed = dict(done_operation("start"), targetLink="projects/my-voice-project/zones/us-central1-a/instances/personaplex-vm",
                  error={"errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region us-central1."}]})
    transport.add("POST", VM + "/start$", body=dict(failed, status="RUNNING"))
    transport.add("GET", r"/operations/operation-start$", body=failed)
    result = run_module(gcp_compute_instance_state, args(state="running"))
    assert result.failed and result["codes"] == ["QUOTA_EXCEEDED"]
    assert "NVIDIA_T4_GPUS" in result["msg"] and "docs/gcp-quota.md" in result["msg"]


def test_missing_vm(transport, run_module):
    transport.add("GET", VM + "$", status=404, body=google_error(404, "NOT_FOUND", "not found", reason="notFound"))
    result = run_module(gcp_compute_instance_state, args(state="running"))
    assert result.failed and "run playbooks/provision.yml first" in result["msg"]
