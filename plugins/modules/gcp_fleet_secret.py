#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: a Secret Manager secret whose latest version holds a value, readable by one identity only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_fleet_secret
short_description: Keep a Secret Manager secret, its latest value and its IAM policy (one reader)
description:
  - Creates the secret (automatic replication, labels) when absent, adds a version when the latest
    one does not hold C(value) (read with versions/latest:access, compared in memory, never
    returned), and sets the secret's IAM policy to exactly one binding of
    roles/secretmanager.secretAccessor to C(reader). With state=absent, deletes the secret.
  - API reference https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets
options:
  secret_id:
    description: Secret ID (letters, digits, - and _; at most 255).
    type: str
    required: true
  value:
    description: The secret value (never logged, never returned).
    type: str
  reader:
    description: The only member allowed to read it, e.g. serviceAccount:fleet@P.iam.gserviceaccount.com.
    type: str
  labels:
    description: Labels of the secret.
    type: dict
    default: {}
  state:
    description: present or absent.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Access token for the fleet
  gcp_fleet_secret:
    project: my-project
    secret_id: personaplex-access-token
    value: "{{ token }}"
    reader: serviceAccount:personaplex-fleet@my-project.iam.gserviceaccount.com
  no_log: true
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, e.g. [created, new version, policy].
  type: list
  returned: success
"""

import base64
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, GcpApiError, GcpClient, client_from_params, error_result

SECRETMANAGER = "https://secretmanager.googleapis.com/v1"
ACCESSOR = "roles/secretmanager.secretAccessor"


def run(params: dict[str, Any], client: GcpClient, check: bool) -> dict[str, Any]:
    parent = f"{SECRETMANAGER}/projects/{params['project']}/secrets"
    url = f"{parent}/{params['secret_id']}"
    secret = client.get(url, allow_404=True)
    actions: list[str] = []
    if params["state"] == "absent":
        if secret:
            actions.append("deleted")
            if not check:
                client.request("DELETE", url)
        return {"changed": bool(actions), "actions": actions}
    if not params.get("value") or not params.get("reader"):
        raise ValueError("value and reader are required with state=present (the token and the fleet's service account).")
    if not secret:
        actions.append("created")
        if not check:
            client.request("POST", parent, body={"replication": {"automatic": {}}, "labels": params["labels"]},
                           params={"secretId": params["secret_id"]})
    latest = client.get(f"{url}/versions/latest:access", allow_404=True) if secret else None
    held = base64.b64decode((latest or {}).get("payload", {}).get("data", "")).decode() if latest else None
    if held != params["value"]:
        actions.append("new version")
        if not check:
            data = base64.b64encode(params["value"].encode()).decode()
            client.post(f"{url}:addVersion", {"payload": {"data": data}})
    policy = client.get(f"{url}:getIamPolicy") if secret else {}
    want = [{"role": ACCESSOR, "members": [params["reader"]]}]
    have = [{"role": b.get("role"), "members": sorted(b.get("members") or [])} for b in (policy or {}).get("bindings") or []]
    if have != want:
        actions.append("policy")
        if not check:
            current = client.get(f"{url}:getIamPolicy")
            client.post(f"{url}:setIamPolicy", {"policy": {"bindings": want, "etag": current.get("etag", "")}})
    if secret and (secret.get("labels") or {}) != params["labels"]:
        actions.append("labels")
        if not check:
            client.request("PATCH", url, body={"labels": params["labels"]}, params={"updateMask": "labels"})
    return {"changed": bool(actions), "actions": actions}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        secret_id={"type": "str", "required": True},
        value={"type": "str", "no_log": True},
        reader={"type": "str"},
        labels={"type": "dict", "default": {}},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, RuntimeError, ValueError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
