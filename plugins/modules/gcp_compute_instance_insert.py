#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: create a Compute Engine VM from a REST body (fields google.cloud 1.10 lacks, e.g. Spot)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_compute_instance_insert
short_description: Create a Compute Engine VM from an instances.insert body (Spot provisioning model)
description:
  - google.cloud 1.10's gcp_compute_instance knows only C(scheduling.preemptible), the legacy
    preemptible model. This module sends the body as given to
    C(POST compute/v1/projects/P/zones/Z/instances) (instances.insert), so
    C(scheduling.provisioningModel=SPOT) and C(scheduling.instanceTerminationAction=STOP) reach the API.
  - Idempotent. An existing VM of that name is left as it is (C(changed=false)); differences in
    its scheduling are returned in RV(differences) (a VM's provisioning model is set at creation).
  - Check mode reports what would be created.
options:
  project:
    description: Project ID.
    type: str
    required: true
  zone:
    description: Zone of the VM.
    type: str
    required: true
  body:
    description:
      - The Instance resource in the Compute API's JSON names (C(name), C(machineType), C(scheduling),
        C(disks), C(networkInterfaces), ...). Relative links are sent as given; the API resolves them.
    type: dict
    required: true
  timeout:
    description: Seconds to wait for the insert operation.
    type: int
    default: 900
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Create a Spot VM that is stopped, not deleted, on preemption
  gcp_compute_instance_insert:
    project: my-project
    zone: us-central1-a
    body:
      name: personaplex-vm
      machineType: zones/us-central1-a/machineTypes/n1-standard-4
      scheduling: {provisioningModel: SPOT, instanceTerminationAction: STOP, onHostMaintenance: TERMINATE, automaticRestart: false}
"""

RETURN = r"""
status:
  description: The VM's status after the call (C(RUNNING) after a create; in check mode C(absent) when it would be created).
  type: str
  returned: success
differences:
  description: Scheduling fields of an existing VM that differ from O(body), as "field have -> want".
  type: list
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, GcpOperationError, client_from_params, error_result

SCHEDULING_KEYS = ("provisioningModel", "instanceTerminationAction", "preemptible", "automaticRestart", "onHostMaintenance")


def scheduling_differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    out = []
    for key in SCHEDULING_KEYS:
        if key in want and have.get(key) != want[key]:
            out.append(f"scheduling.{key} {have.get(key)} -> {want[key]}")
    return out


def run(params: dict[str, Any], client: GcpClient, check_mode: bool) -> dict[str, Any]:
    body = params["body"]
    name = body.get("name")
    if not name:
        raise RuntimeError("body.name is required (the VM's name).")
    base = f"{COMPUTE}/projects/{params['project']}/zones/{params['zone']}/instances"
    current = client.get(f"{base}/{name}", allow_404=True)
    if current is not None:
        diffs = scheduling_differences(body.get("scheduling") or {}, current.get("scheduling") or {})
        return {"changed": False, "status": current.get("status", ""), "differences": diffs}
    if check_mode:
        return {"changed": True, "status": "absent", "differences": []}
    op = client.post(base, body)
    client.wait_operation(op, timeout=params["timeout"])
    doc = client.get(f"{base}/{name}")
    return {"changed": True, "status": doc.get("status", ""), "differences": []}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        zone={"type": "str", "required": True},
        body={"type": "dict", "required": True},
        timeout={"type": "int", "default": 900},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, GcpOperationError, RuntimeError, TimeoutError) as exc:
        module.fail_json(**error_result(exc))
    for diff in result["differences"]:
        module.warn(f"VM {module.params['body']['name']} exists with {diff}: kept (the provisioning model is set at creation; "
                    "teardown and deploy again to change it).")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
