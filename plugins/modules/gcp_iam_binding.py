#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: add or remove members of one IAM role binding on a project or a bucket."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_iam_binding
short_description: Add or remove members of one IAM role on a GCP project or GCS bucket
description:
  - Reads the IAM policy, changes only the unconditional binding of O(role), and writes it back
    with the policy etag (read-modify-write). A concurrent change (HTTP 409 from Resource Manager,
    HTTP 412 from Cloud Storage) restarts the whole read-modify-write, up to O(max_retries) times.
  - Idempotent, supports check mode and diff mode. google.cloud has no module for this.
options:
  project:
    description: Project ID that owns the resource (and bills the calls).
    type: str
    required: true
  resource_type:
    description: Where the binding lives.
    type: str
    choices: [project, bucket]
    required: true
  resource:
    description: The project ID (O(resource_type=project)) or bucket name (O(resource_type=bucket)).
    type: str
    required: true
  role:
    description: Role such as C(roles/logging.logWriter).
    type: str
    required: true
  members:
    description: Members such as C(serviceAccount:NAME@PROJECT.iam.gserviceaccount.com).
    type: list
    elements: str
    required: true
  state:
    description: Whether the members must have the role (present) or not (absent).
    type: str
    choices: [present, absent]
    default: present
  max_retries:
    description: How many times to restart after an etag conflict.
    type: int
    default: 5
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Let the VM's service account write logs
  gcp_iam_binding:
    project: my-project
    resource_type: project
    resource: my-project
    role: roles/logging.logWriter
    members: ["serviceAccount:personaplex-vm@my-project.iam.gserviceaccount.com"]
"""

RETURN = r"""
members:
  description: Members of the role after the change (or as they would be, in check mode).
  type: list
  returned: success
attempts:
  description: Read-modify-write attempts used (more than 1 after etag conflicts).
  type: int
  returned: success
etag:
  description: Etag of the policy that was read last.
  type: str
  returned: success
"""

import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, CRM, STORAGE, GcpApiError, GcpClient, client_from_params, error_result

CONFLICT_STATUSES = (409, 412)


def policy_urls(resource_type: str, resource: str) -> tuple[str, str]:
    if resource_type == "project":
        return f"{CRM}/projects/{resource}:getIamPolicy", f"{CRM}/projects/{resource}:setIamPolicy"
    return f"{STORAGE}/b/{resource}/iam", f"{STORAGE}/b/{resource}/iam"


def read_policy(client: GcpClient, resource_type: str, resource: str) -> dict[str, Any]:
    get_url, _ = policy_urls(resource_type, resource)
    if resource_type == "project":
        return client.post(get_url, {"options": {"requestedPolicyVersion": 3}})
    return client.get(get_url, params={"optionsRequestedPolicyVersion": 3})


def write_policy(client: GcpClient, resource_type: str, resource: str, policy: dict[str, Any]) -> dict[str, Any]:
    _, set_url = policy_urls(resource_type, resource)
    if resource_type == "project":
        return client.post(set_url, {"policy": policy, "updateMask": "bindings,etag"})
    return client.request("PUT", set_url, body=policy)


def apply_binding(policy: dict[str, Any], role: str, members: list[str], state: str) -> tuple[dict[str, Any], bool, list[str], list[str]]:
    """Return (new policy, changed, members before, members after) for the unconditional binding of `role`."""
    bindings = [dict(b) for b in policy.get("bindings") or []]
    target = next((b for b in bindings if b.get("role") == role and not b.get("condition")), None)
    before = sorted(target.get("members") or []) if target else []
    after = sorted(set(before) | set(members)) if state == "present" else sorted(set(before) - set(members))
    if after == before:
        return policy, False, before, after
    if target is None:
        bindings.append({"role": role, "members": after})
    elif after:
        target["members"] = after
    else:
        bindings.remove(target)
    new_policy = dict(policy)
    new_policy["bindings"] = bindings
    return new_policy, True, before, after


def run(module: AnsibleModule, client: GcpClient) -> dict[str, Any]:
    p = module.params
    for attempt in range(1, p["max_retries"] + 2):
        policy = read_policy(client, p["resource_type"], p["resource"])
        new_policy, changed, before, after = apply_binding(policy, p["role"], p["members"], p["state"])
        result: dict[str, Any] = {"changed": changed, "members": after, "attempts": attempt, "etag": policy.get("etag", "")}
        if module._diff:
            result["diff"] = {"before": {p["role"]: before}, "after": {p["role"]: after}}
        if not changed or module.check_mode:
            return result
        try:
            write_policy(client, p["resource_type"], p["resource"], new_policy)
            return result
        except GcpApiError as exc:
            if exc.status not in CONFLICT_STATUSES or attempt > p["max_retries"]:
                raise
            time.sleep(min(0.5 * 2 ** attempt, 10))
    raise RuntimeError("unreachable")  # pragma: no cover


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        resource_type={"type": "str", "required": True, "choices": ["project", "bucket"]},
        resource={"type": "str", "required": True},
        role={"type": "str", "required": True},
        members={"type": "list", "elements": "str", "required": True},
        state={"type": "str", "default": "present", "choices": ["present", "absent"]},
        max_retries={"type": "int", "default": 5},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not module.params["role"].startswith(("roles/", "projects/", "organizations/")):
        module.fail_json(msg=f"role: {module.params['role']!r} is not a role name. Accepted: roles/NAME or a custom role path.")
    try:
        client = client_from_params(module.params)
        result = run(module, client)
    except GcpApiError as exc:
        if exc.status in CONFLICT_STATUSES:
            exc_result = error_result(exc)
            exc_result["msg"] = f"Gave up after {module.params['max_retries'] + 1} concurrent-modification conflicts on the IAM policy: {exc}"
            module.fail_json(**exc_result)
        module.fail_json(**error_result(exc))
    except (RuntimeError, TimeoutError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
