#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: power state and profile (machine type, GPUs, scheduling) of an existing VM."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_compute_instance_state
short_description: Start or stop a Compute Engine VM and change its machine type and GPUs
description:
  - Fills gaps of google.cloud.gcp_compute_instance, which cannot change GPUs or scheduling of an
    existing VM and calls setMachineType on a running VM.
  - When O(machine_type), O(guest_accelerators) or O(on_host_maintenance) differ from the VM, the VM
    must be stopped first; this happens only with O(allow_stop=true), otherwise the module fails
    with a message saying what differs and how to proceed. The boot disk and IP are kept.
  - Also converges what the API lets change on an existing VM (labels, network tags, metadata keys,
    scheduling, service account, a larger boot disk, deletion protection); changes the API takes only
    on a stopped VM need O(allow_stop=true); changes it cannot make (another machine series to or from
    A2, a smaller disk) fail before any write, saying what to do.
  - Machine type and GPU changes follow the documented order (https://cloud.google.com/compute/docs/gpus/add-remove-gpus);
    from N1 to a machine type with built-in GPUs (G2) the attached GPUs are removed first
    (setMachineResources), then setMachineType; back to N1, setMachineType first, then the GPUs are attached.
  - Returns the VM's external IP and, when the guest publishes them, its SSH host keys.
  - Idempotent, supports check mode.
options:
  project:
    description: Project ID.
    type: str
    required: true
  zone:
    description: Zone of the VM.
    type: str
    required: true
  name:
    description: VM name.
    type: str
    required: true
  state:
    description: C(running) or C(stopped) to change the power state; C(present) leaves it as it is.
    type: str
    choices: [running, stopped, present]
    default: present
  machine_type:
    description: Wanted machine type (e.g. C(g2-standard-4)); omitted means leave as it is.
    type: str
  guest_accelerators:
    description: GPUs to attach explicitly (N1). Empty list for machine types with built-in GPUs (G2, A2).
    type: list
    elements: dict
  on_host_maintenance:
    description: Wanted maintenance policy; GPU VMs need C(TERMINATE).
    type: str
    choices: [TERMINATE, MIGRATE]
  scheduling:
    description: Wanted scheduling fields in the API's names (e.g. C(automaticRestart), C(preemptible)); others are kept.
    type: dict
  labels:
    description: Wanted labels (exactly; labels starting with C(goog-) are kept).
    type: dict
  tags:
    description: Wanted network tags (exactly).
    type: list
    elements: str
  metadata:
    description: Wanted metadata keys and values (other keys are kept).
    type: dict
  service_account:
    description: Wanted service account (C(email), C(scopes)); the VM must be stopped to change it.
    type: dict
  disk_size_gb:
    description: Wanted boot disk size; the disk is grown in place, never shrunk.
    type: int
  deletion_protection:
    description: Wanted deletion protection.
    type: bool
  deployment:
    description: Deployment name, named in the advice when a change cannot be made in place.
    type: str
    default: DEPLOYMENT
  allow_stop:
    description: Allow stopping a running VM to apply a change that needs it.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each operation.
    type: int
    default: 900
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Stop the VM (keeps disk and IP)
  gcp_compute_instance_state:
    project: my-project
    zone: us-central1-a
    name: personaplex-vm
    state: stopped
"""

RETURN = r"""
status:
  description: VM status after the module ran (as it would be, in check mode).
  type: str
  returned: success
actions:
  description: What was done (or would be done in check mode), in order.
  type: list
  returned: success
external_ip:
  description: The VM's external IPv4 address.
  type: str
  returned: success
host_keys:
  description: SSH host keys from the guest attributes (C(hostkeys/) namespace), type to key.
  type: dict
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_instance_diff import camel, instance_differences, series
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, GcpOperationError, client_from_params, error_result

STABLE = {"RUNNING", "TERMINATED", "SUSPENDED"}


def _basename(link: Any) -> str:
    return str(link or "").rstrip("/").split("/")[-1]


def current_accelerators(instance: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((_basename(a.get("acceleratorType")), int(a.get("acceleratorCount", 0))) for a in instance.get("guestAccelerators") or [])


def wanted_accelerators(items: list[dict[str, Any]] | None) -> list[tuple[str, int]]:
    return sorted((str(a["accelerator_type"]), int(a.get("accelerator_count", 1))) for a in items or [])


def wanted(params: dict[str, Any]) -> dict[str, Any]:
    """The module's parameters as instance_differences' `want` (None: leave as it is)."""
    sched = {camel(k): v for k, v in (params.get("scheduling") or {}).items()}
    if params.get("on_host_maintenance"):
        sched["onHostMaintenance"] = params["on_host_maintenance"]
    return {
        "machine_type": params.get("machine_type"),
        "accelerators": None if params.get("guest_accelerators") is None else wanted_accelerators(params["guest_accelerators"]),
        "scheduling": sched,
        "labels": params.get("labels"),
        "tags": params.get("tags"),
        "metadata": params.get("metadata"),
        "service_account": params.get("service_account"),
        "disk_size_gb": params.get("disk_size_gb"),
        "deletion_protection": params.get("deletion_protection"),
    }


def plan_changes(params: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    """Changes that need the VM stopped, as human-readable lines."""
    return [d["text"] for d in instance_differences(wanted(params), instance, params.get("deployment") or "DEPLOYMENT") if d["action"] == "stop"]


class InstanceState:
    def __init__(self, params: dict[str, Any], client: GcpClient, check_mode: bool) -> None:
        self.p = params
        self.client = client
        self.check_mode = check_mode
        self.base = f"{COMPUTE}/projects/{params['project']}/zones/{params['zone']}/instances/{params['name']}"
        self.actions: list[str] = []

    def get(self) -> dict[str, Any]:
        doc = self.client.get(self.base, allow_404=True)
        if doc is None:
            raise RuntimeError(f"VM {self.p['name']} was not found in {self.p['project']}/{self.p['zone']}: run playbooks/provision.yml first.")
        return doc

    def wait_stable(self, doc: dict[str, Any]) -> dict[str, Any]:
        waited = 0
        while doc.get("status") not in STABLE:
            if waited > self.p["timeout"]:
                raise TimeoutError(f"VM {self.p['name']} stayed {doc.get('status')} for {waited} s; check the console and rerun.")
            self.client.sleep(5)
            waited += 5
            doc = self.get()
        return doc

    def call(self, action: str, verb: str, body: Any = None) -> None:
        self.actions.append(action)
        if self.check_mode:
            return
        op = self.client.post(f"{self.base}/{verb}", body)
        self.client.wait_operation(op, timeout=self.p["timeout"])

    def run(self) -> dict[str, Any]:
        doc = self.wait_stable(self.get())
        status = doc["status"]
        diffs = instance_differences(wanted(self.p), doc, self.p.get("deployment") or "DEPLOYMENT")
        refused = [d for d in diffs if d["action"] == "refuse"]
        if refused:  # before any write
            raise RuntimeError(f"VM {self.p['name']} cannot be brought to the settings in place:\n- "
                               + "\n- ".join(f"{d['text']}: {d['how']}" for d in refused))
        stop = [d for d in diffs if d["action"] == "stop"]
        fields = {d["field"] for d in diffs}
        if stop and status != "TERMINATED" and not self.p["allow_stop"]:
            raise RuntimeError(
                f"VM {self.p['name']} differs from the chosen profile: {'; '.join(d['text'] for d in stop)}. These changes need the VM stopped. "
                "Set gcp_allow_profile_change: true to stop it, change it and start it again (disk, IP and weights are kept), "
                "or set gcp_profile (and the other settings named) back to the VM's current values."
            )
        was_running = status != "TERMINATED"
        if stop and was_running:
            self.call("stop (to apply: " + "; ".join(d["text"] for d in stop) + ")", "stop")
            status = "TERMINATED"
        if fields & {"machine_type", "accelerators"}:
            self.change_machine(doc)
        if "service_account" in fields:
            sa = self.p["service_account"]
            self.call(f"set service account {sa['email']}", "setServiceAccount", {"email": sa["email"], "scopes": sa.get("scopes") or []})
        if any(f.startswith("scheduling.") for f in fields):
            sched = dict(doc.get("scheduling") or {})
            sched.update(wanted(self.p)["scheduling"])
            self.call("set scheduling " + ", ".join(d["text"] for d in diffs if d["field"].startswith("scheduling.")), "setScheduling", sched)
        self.converge_in_place(doc, fields)
        if stop and was_running and self.p["state"] != "stopped":
            self.call("start", "start")
            status = "RUNNING"
        if self.p["state"] == "running" and status != "RUNNING":
            self.call("resume" if status == "SUSPENDED" else "start", "resume" if status == "SUSPENDED" else "start")
            status = "RUNNING"
        elif self.p["state"] == "stopped" and status == "RUNNING":
            self.call("stop", "stop")
            status = "TERMINATED"
        final = doc if self.check_mode or not self.actions else self.get()
        return {
            "changed": bool(self.actions),
            "actions": self.actions,
            "status": status if self.check_mode else final.get("status", status),
            "external_ip": external_ip(final),
            "host_keys": self.host_keys() if (status == "RUNNING" and not self.check_mode) else {},
        }

    def change_machine(self, doc: dict[str, Any]) -> None:
        """Machine type and GPUs, in the order the API accepts (the VM is stopped here).

        G2/A2 refuse added accelerators, so N1's GPUs go first; N1 gets its GPUs after it is N1 again.
        """
        have = current_accelerators(doc)
        want = wanted_accelerators(self.p.get("guest_accelerators")) if self.p.get("guest_accelerators") is not None else have
        have_type = _basename(doc.get("machineType"))
        new_type = self.p.get("machine_type") or have_type
        attached_now = have if series(have_type) == "n1" else []
        if attached_now and attached_now != want:
            self.call("detach GPUs", "setMachineResources", {"guestAccelerators": []})
        if new_type != have_type:
            link = f"zones/{self.p['zone']}/machineTypes/{new_type}"
            self.call(f"set machine type {new_type}", "setMachineType", {"machineType": link})
        if want and want != attached_now:
            body = {"guestAccelerators": [
                {"acceleratorType": f"projects/{self.p['project']}/zones/{self.p['zone']}/acceleratorTypes/{t}", "acceleratorCount": c}
                for t, c in want]}
            self.call("attach GPUs " + ", ".join(f"{c} x {t}" for t, c in want), "setMachineResources", body)

    def converge_in_place(self, doc: dict[str, Any], fields: set[str]) -> None:
        """Changes the API makes on a running or stopped VM; each sends back the fingerprint it read."""
        if "labels" in fields:
            keep = {k: v for k, v in (doc.get("labels") or {}).items() if k.startswith("goog-")}
            self.call("set labels", "setLabels", {"labels": dict(keep, **self.p["labels"]), "labelFingerprint": doc.get("labelFingerprint")})
        if "tags" in fields:
            self.call("set network tags", "setTags", {"items": sorted(self.p["tags"]), "fingerprint": (doc.get("tags") or {}).get("fingerprint")})
        if "metadata" in fields:
            items = {i["key"]: i.get("value") for i in (doc.get("metadata") or {}).get("items") or []}
            items.update(self.p["metadata"])
            self.call("set metadata " + ", ".join(sorted(self.p["metadata"])), "setMetadata",
                      {"items": [{"key": k, "value": v} for k, v in sorted(items.items())],
                       "fingerprint": (doc.get("metadata") or {}).get("fingerprint")})
        if "disk_size_gb" in fields:
            boot = next(d for d in doc.get("disks") or [] if d.get("boot"))
            self.actions.append(f"grow boot disk to {self.p['disk_size_gb']} GB")
            if not self.check_mode:
                source = str(boot["source"]).replace("https://www.googleapis.com/compute/v1", COMPUTE)
                op = self.client.post(f"{source}/resize", {"sizeGb": str(self.p["disk_size_gb"])})
                self.client.wait_operation(op, timeout=self.p["timeout"])
        if "deletion_protection" in fields:
            value = "true" if self.p["deletion_protection"] else "false"
            self.actions.append(f"set deletion protection {value}")
            if not self.check_mode:
                op = self.client.post(f"{self.base}/setDeletionProtection?deletionProtection={value}")
                self.client.wait_operation(op, timeout=self.p["timeout"])

    def host_keys(self) -> dict[str, str]:
        try:
            doc = self.client.get(f"{self.base}/getGuestAttributes", params={"queryPath": "hostkeys/"})
        except GcpApiError:
            return {}
        items = ((doc or {}).get("queryValue") or {}).get("items") or []
        return {str(i.get("key")): str(i.get("value")) for i in items if i.get("namespace") == "hostkeys"}


def external_ip(instance: dict[str, Any]) -> str:
    for nic in instance.get("networkInterfaces") or []:
        for access in nic.get("accessConfigs") or []:
            if access.get("natIP"):
                return str(access["natIP"])
    return ""


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        zone={"type": "str", "required": True},
        name={"type": "str", "required": True},
        state={"type": "str", "default": "present", "choices": ["running", "stopped", "present"]},
        machine_type={"type": "str"},
        guest_accelerators={"type": "list", "elements": "dict"},
        on_host_maintenance={"type": "str", "choices": ["TERMINATE", "MIGRATE"]},
        scheduling={"type": "dict"},
        labels={"type": "dict"},
        tags={"type": "list", "elements": "str"},
        metadata={"type": "dict"},
        service_account={"type": "dict"},
        disk_size_gb={"type": "int"},
        deletion_protection={"type": "bool"},
        deployment={"type": "str", "default": "DEPLOYMENT"},
        allow_stop={"type": "bool", "default": False},
        timeout={"type": "int", "default": 900},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = InstanceState(module.params, client_from_params(module.params), module.check_mode).run()
    except (GcpApiError, GcpOperationError, RuntimeError, TimeoutError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
