"""Cost control against the fake of Google's APIs: Spot VMs, preemption and `make start`,
the budget alert, and the plan printing the figures (worked out by hand in
unit/plugins/module_utils/test_gcp_cost.py).

The playbooks, google.cloud and the project's modules are real; tests/standins/fake_gcp.py stands in
for Compute, Cloud Billing and the Billing Budget API (shapes and refusals from their references).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from project import PROJECT, VM, writes
from standins.hf_hub_auth import ACCEPTED

SPOT_SCHEDULING = {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": True,
                   "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"}


def insert_body(fake):
    return next(b for m, path, b in fake.bodies if m == "POST" and path.endswith("/zones/us-central1-a/instances"))


class _Readyz(BaseHTTPRequestHandler):
    """The voice server's /readyz while the model loads after a start: 503 loading, then 200."""

    answers = ("loading", "loading", "ready")
    hits = 0

    def do_GET(self) -> None:
        cls = type(self)
        state = cls.answers[min(cls.hits, len(cls.answers) - 1)]
        cls.hits += 1
        body = json.dumps({"status": state}).encode()
        self.send_response(200 if state == "ready" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_spot_vm_is_created_then_preempted_and_make_start_resumes_it(cloud):
    fake, play = cloud
    proc, _ = play("provision.yml", gcp_spot=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    sent = insert_body(fake)
    assert sent["scheduling"] == SPOT_SCHEDULING
    assert sent["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-4"
    assert sent["guestAccelerators"] == [{"acceleratorType": f"projects/{PROJECT}/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                                          "acceleratorCount": 1}]
    assert sent["disks"][0]["initializeParams"]["diskType"] == "zones/us-central1-a/diskTypes/pd-balanced"
    assert sent["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == "203.0.113.50"
    assert sent["labels"]["deployment"] == "personaplex" and sent["tags"] == {"items": ["personaplex-voice"]}
    assert {i["key"]: i["value"] for i in sent["metadata"]["items"]}["enable-oslogin"] == "TRUE"
    assert sent["shieldedInstanceConfig"] == {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True}
    assert fake.compute[VM]["status"] == "RUNNING"
    assert "live conversation then drops" in " ".join((proc.stdout + proc.stderr).split())  # the caveat is printed

    proc, calls = play("provision.yml", gcp_spot=True)
    assert proc.returncode == 0 and writes(calls) == [], writes(calls)

    # Preemption stops the Spot VM; make start resumes it (same deployment: one provision run fewer).
    fake.preempt(VM)
    assert fake.compute[VM]["status"] == "TERMINATED"  # STOP: disk, IP and weights kept
    assert any(op.get("operationType") == "compute.instances.preempted" for k, op in fake.compute.items() if "/operations/" in k)

    _Readyz.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # make start = power.yml -e gcp_power_state=running; /readyz from a loopback stand-in, the
        # token step (SSH into the VM) is beyond the fake's reach.
        proc, calls = play("power.yml", gcp_spot=True, gcp_power_state="running", gcp_power_show_token=False,
                           gcp_power_ready_url=f"http://127.0.0.1:{server.server_address[1]}/readyz")
    finally:
        server.shutdown()
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [c[1].rsplit("/", 1)[-1] for c in writes(calls)] == ["start"]
    assert fake.compute[VM]["status"] == "RUNNING"
    assert _Readyz.hits == 3  # waited through "loading" until "ready"
    assert "PersonaPlex is ready at https://203.0.113.50:8998 (the start took" in out, out[-2000:]


def test_legacy_preemptible_only_when_asked(cloud):
    fake, play = cloud
    proc, _ = play("provision.yml", gcp_spot=True, gcp_spot_legacy_preemptible=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.compute[VM]["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": True}


def test_budget_alert_created_updated_and_removed_by_teardown(cloud):
    fake, play = cloud
    proc, _ = play("provision.yml", gcp_budget_usd=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.services["billingbudgets.googleapis.com"] == "ENABLED"
    [budget] = fake.budgets.values()
    assert budget["name"].startswith("billingAccounts/012345-6789AB-CDEF01/budgets/")
    assert budget["displayName"] == f"personaplex@{PROJECT}"
    assert budget["budgetFilter"] == {"projects": ["projects/123456789012"]}
    assert budget["amount"] == {"specifiedAmount": {"currencyCode": "USD", "units": "300"}}
    assert [r["thresholdPercent"] for r in budget["thresholdRules"]] == [0.5, 0.9, 1.0]
    assert not budget["notificationsRule"].get("disableDefaultIamRecipients")  # e-mails to the billing admins/users

    proc, calls = play("provision.yml", gcp_budget_usd=300)
    assert proc.returncode == 0 and writes(calls) == [], writes(calls)

    proc, calls = play("provision.yml", gcp_budget_usd=500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [c[0] for c in writes(calls)] == ["PATCH"]
    assert next(iter(fake.budgets.values()))["amount"]["specifiedAmount"]["units"] == "500"

    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex", gcp_budget_usd=500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.budgets == {}


def test_preflight_explains_the_missing_billing_role(cloud, hub):
    fake, play = cloud
    fake.regional_quotas["NVIDIA_T4_GPUS"] = (1.0, 0.0)
    fake.global_quotas["GPUS_ALL_REGIONS"] = (1.0, 0.0)
    fake.billing_permissions = {"billing.budgets.get", "billing.budgets.list"}
    proc, calls = play("preflight.yml", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub, gcp_budget_usd=300)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert "lack billing.budgets.create, billing.budgets.delete, billing.budgets.update" in out, out[-2000:]
    assert "roles/billing.costsManager" in out and "012345-6789AB-CDEF01" in out
    assert not [c for c in writes(calls) if not c[1].endswith((":testIamPermissions", ":enable"))]  # enabling APIs is free

    fake.billing_permissions |= {"billing.budgets.create", "billing.budgets.delete", "billing.budgets.update"}
    proc, _ = play("preflight.yml", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub, gcp_budget_usd=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "may create and remove budgets" in " ".join(proc.stdout.split())


def test_spot_preflight_reads_the_preemptible_gpu_quota(cloud, hub):
    fake, play = cloud
    fake.regional_quotas["PREEMPTIBLE_NVIDIA_T4_GPUS"] = (1.0, 0.0)
    fake.global_quotas["GPUS_ALL_REGIONS"] = (1.0, 0.0)
    proc, _ = play("preflight.yml", hf_token=ACCEPTED, gcp_infra_hf_endpoint=hub, gcp_spot=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Quota PREEMPTIBLE_NVIDIA_T4_GPUS in us-central1: 1 free, 1 needed" in " ".join(proc.stdout.split())
