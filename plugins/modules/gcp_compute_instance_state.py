#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
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
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, GcpOperationError, client_from_params, error_result

STABLE = {"RUNNING", "TERMINATED", "SUSPENDED"}
BUILTIN_GPU_FAMILIES = ("g2-", "a2-", "a3-", "g4-")  # machine types whose GPUs come with the type


def _basename(link: Any) -> str:
    return str(link or "").rstrip("/").split("/")[-1]


def current_accelerators(instance: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((_basename(a.get("acceleratorType")), int(a.get("acceleratorCount", 0))) for a in instance.get("guestAccelerators") or [])


def wanted_accelerators(items: list[dict[str, Any]] | None) -> list[tuple[str, int]]:
    return sorted((str(a["accelerator_type"]), int(a.get("accelerator_count", 1))) for a in items or [])


def plan_changes(params: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    """Changes that need the VM stopped, as human-readable lines."""
    changes = []
    if params.get("machine_type") and _basename(instance.get("machineType")) != params["machine_type"]:
        changes.append(f"machine type {_basename(instance.get('machineType'))} -> {params['machine_type']}")
    if params.get("guest_accelerators") is not None:
        have = current_accelerators(instance)
        want = wanted_accelerators(params["guest_accelerators"])
        builtin = str(params.get("machine_type") or "").startswith(BUILTIN_GPU_FAMILIES)
        if have != want and not (builtin and not want and _basename(instance.get("machineType")) == params["machine_type"]):
            changes.append(f"GPUs {have or 'none'} -> {want or 'built into the machine type'}")
    sched = instance.get("scheduling") or {}
    if params.get("on_host_maintenance") and sched.get("onHostMaintenance") != params["on_host_maintenance"]:
        changes.append(f"on_host_maintenance {sched.get('onHostMaintenance')} -> {params['on_host_maintenance']}")
    return changes


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
        changes = plan_changes(self.p, doc)
        if changes:
            if status != "TERMINATED" and not self.p["allow_stop"]:
                raise RuntimeError(
                    f"VM {self.p['name']} differs from the chosen profile: {'; '.join(changes)}. These changes need the VM stopped. "
                    "Set gcp_allow_profile_change: true to stop it, change it and start it again (disk, IP and weights are kept), "
                    "or set gcp_profile back to the VM's current profile."
                )
            was_running = status != "TERMINATED"
            if was_running:
                self.call("stop (to apply: " + "; ".join(changes) + ")", "stop")
            have = current_accelerators(doc)
            want = wanted_accelerators(self.p.get("guest_accelerators"))
            current_builtin = _basename(doc.get("machineType")).startswith(BUILTIN_GPU_FAMILIES)
            if self.p.get("guest_accelerators") is not None and have and have != want and not current_builtin:
                self.call("detach GPUs", "setMachineResources", {"guestAccelerators": []})
            if self.p.get("machine_type") and _basename(doc.get("machineType")) != self.p["machine_type"]:
                link = f"zones/{self.p['zone']}/machineTypes/{self.p['machine_type']}"
                self.call(f"set machine type {self.p['machine_type']}", "setMachineType", {"machineType": link})
            if want and have != want:
                body = {"guestAccelerators": [
                    {"acceleratorType": f"projects/{self.p['project']}/zones/{self.p['zone']}/acceleratorTypes/{t}", "acceleratorCount": c}
                    for t, c in want]}
                self.call("attach GPUs " + ", ".join(f"{c} x {t}" for t, c in want), "setMachineResources", body)
            sched = doc.get("scheduling") or {}
            if self.p.get("on_host_maintenance") and sched.get("onHostMaintenance") != self.p["on_host_maintenance"]:
                new_sched = dict(sched, onHostMaintenance=self.p["on_host_maintenance"])
                self.call(f"set on_host_maintenance {self.p['on_host_maintenance']}", "setScheduling", new_sched)
            status = "TERMINATED"
            if was_running and self.p["state"] != "stopped":
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
