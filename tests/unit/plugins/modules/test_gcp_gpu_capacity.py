"""gcp_gpu_capacity: project, zone, GPU type and quota checks from Compute API responses (mocked)."""

from __future__ import annotations

import gcp_gpu_capacity
from standins.google_http import AUTH, google_error

BASE = r"compute.googleapis.com/compute/v1/projects/my-voice-project"
ARGS = dict(AUTH, region="us-central1", zone="us-central1-a", accelerator_type="nvidia-tesla-t4", accelerator_count=1,
            quota_metric="NVIDIA_T4_GPUS", preemptible_quota_metric="PREEMPTIBLE_NVIDIA_T4_GPUS", cpu_quota_metric="CPUS", cpu_count=4)


def quotas(**limits):
    """Quota entries as compute#region / compute#project list them: {metric, limit, usage}."""
    return [{"metric": metric, "limit": float(limit), "usage": float(usage)} for metric, (limit, usage) in limits.items()]


def script(transport, region_quotas, global_quotas, zone_status=200, accel_status=200):
    transport.add("GET", BASE + r"$", body={"kind": "compute#project", "name": "my-voice-project", "quotas": global_quotas})
    transport.add("GET", BASE + r"/zones/us-central1-a$", status=zone_status,
                  body={"kind": "compute#zone", "name": "us-central1-a", "status": "UP"} if zone_status == 200
                  else google_error(404, "NOT_FOUND", "The resource 'projects/my-voice-project/zones/us-central1-a' was not found", reason="notFound"))
    transport.add("GET", BASE + r"/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4$", status=accel_status,
                  body={"kind": "compute#acceleratorType", "name": "nvidia-tesla-t4", "maximumCardsPerInstance": 4} if accel_status == 200
                  else google_error(404, "NOT_FOUND", "The resource 'acceleratorTypes/nvidia-tesla-t4' was not found", reason="notFound"))
    transport.add("GET", BASE + r"/regions/us-central1$", body={"kind": "compute#region", "name": "us-central1", "quotas": region_quotas})


def test_enough_quota_passes_with_read_calls_only(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 0), CPUS=(24, 2)), quotas(GPUS_ALL_REGIONS=(1, 0)))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result["ok"] is True and result["changed"] is False
    assert result["quota"]["regional"] == {"metric": "NVIDIA_T4_GPUS", "limit": 1.0, "usage": 0.0, "free": 1.0}
    assert {c["method"] for c in transport.calls} == {"GET"}


def test_regional_quota_exceeded_gives_the_request_steps(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(0, 0), CPUS=(24, 0)), quotas(GPUS_ALL_REGIONS=(1, 0)))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed and result["ok"] is False
    msg = result["msg"]
    assert "Quota NVIDIA_T4_GPUS in us-central1: limit 0, in use 0, the VM needs 1" in msg
    assert "https://console.cloud.google.com/iam-admin/quotas?project=my-voice-project" in msg
    assert "Edit quotas" in msg and "Free-trial" in msg


def test_global_quota_exceeded(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(4, 0)), quotas(GPUS_ALL_REGIONS=(1, 1)))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed
    assert "GPUS_ALL_REGIONS: limit 1, in use 1" in result["msg"] and "all regions (global)" in result["msg"]


def test_existing_vm_needs_no_new_quota(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 1)), quotas(GPUS_ALL_REGIONS=(1, 1)))
    result = run_module(gcp_gpu_capacity, dict(ARGS, existing_instance=True))
    assert result["ok"] is True


def test_spot_uses_the_preemptible_quota_when_granted(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(0, 0), PREEMPTIBLE_NVIDIA_T4_GPUS=(2, 0)), quotas(GPUS_ALL_REGIONS=(1, 0)))
    result = run_module(gcp_gpu_capacity, dict(ARGS, spot=True))
    assert result["ok"] is True and result["quota"]["regional"]["metric"] == "PREEMPTIBLE_NVIDIA_T4_GPUS"


def test_zone_does_not_exist(transport, run_module):
    script(transport, [], [], zone_status=404)
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed and "Zone 'us-central1-a' does not exist" in result["msg"]


def test_zone_without_the_gpu(transport, run_module):
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 0)), quotas(GPUS_ALL_REGIONS=(1, 0)), accel_status=404)
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed and "has no nvidia-tesla-t4 GPU" in result["msg"] and "accelerator-types list" in result["msg"]


def test_unknown_project(transport, run_module):
    transport.add("GET", BASE + r"$", status=404,
                  body=google_error(404, "NOT_FOUND", "The resource 'projects/my-voice-project' was not found", reason="notFound"))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed and "was not found by the Compute Engine API" in result["msg"]


def test_refused_credentials_401(transport, run_module):
    transport.add("GET", BASE + r"$", status=401, body=google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result.failed and "gcloud auth application-default login" in result["msg"]
    assert "could not be used" in result["msg"]


def test_rate_limit_429_is_retried(transport, run_module):
    transport.add("GET", BASE + r"$", status=429, times=2,
                  body=google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Read requests'", reason="rateLimitExceeded"))
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 0)), quotas(GPUS_ALL_REGIONS=(1, 0)))
    result = run_module(gcp_gpu_capacity, ARGS)
    assert result["ok"] is True
    assert sum(1 for c in transport.calls if c["url"].endswith("/projects/my-voice-project")) == 3


def test_rerun_with_the_vm_already_there_needs_no_new_quota(transport, run_module):
    # A second run of site.yml: the VM holds the only T4 of the quota; preflight must still pass.
    transport.add("GET", BASE + r"/zones/us-central1-a/instances/personaplex-vm$", body={
        "name": "personaplex-vm", "guestAccelerators": [{"acceleratorType": "projects/p/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                                                         "acceleratorCount": 1}]})
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 1), CPUS=(24, 4)), quotas(GPUS_ALL_REGIONS=(1, 1)))
    result = run_module(gcp_gpu_capacity, dict(ARGS, instance_name="personaplex-vm"))
    assert result["ok"] is True, result
    assert any(c["name"] == "existing_vm" for c in result["checks"])


def test_vm_absent_still_needs_quota(transport, run_module):
    transport.add("GET", BASE + r"/zones/us-central1-a/instances/personaplex-vm$", status=404,
                  body=google_error(404, "NOT_FOUND", "The resource was not found", reason="notFound"))
    script(transport, quotas(NVIDIA_T4_GPUS=(1, 1)), quotas(GPUS_ALL_REGIONS=(1, 1)))
    result = run_module(gcp_gpu_capacity, dict(ARGS, instance_name="personaplex-vm"))
    assert result.failed and "NVIDIA_T4_GPUS" in result["msg"]
