#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: validate the GCP settings and return the plan (resources + cost). Never writes."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_deployment_plan
short_description: Validate GCP settings and return every resource to create or change, with a cost estimate
description:
  - Validates every setting offline (profile, zone, CIDRs, bucket name, disk, image) and fails
    before any API call with a message naming the setting and the accepted values.
  - Returns the desired state of each resource (APIs, service account, IAM bindings, bucket,
    static IP, firewall rules, VM) and a cost estimate from the dated price table.
  - With O(read_state=always) (or O(read_state=auto) when credentials are found) it compares with
    what exists using GET calls only, and marks each resource create, update or unchanged.
    It never makes a write call.
options:
  settings:
    description: The gcp_* settings, without the C(gcp_) prefix.
    type: dict
    required: true
  profiles:
    description: Profile table (roles/gcp_infra/vars/main.yml).
    type: dict
    required: true
  images:
    description: Image table (roles/gcp_infra/vars/main.yml).
    type: dict
    required: true
  prices:
    description: Price table (roles/gcp_infra/vars/prices.yml).
    type: dict
    required: true
  read_state:
    description: Whether to read the current state with GET calls.
    type: str
    choices: [auto, always, never]
    default: never
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Plan
  gcp_deployment_plan:
    settings: {project: my-project, zone: us-central1-a, profile: t4}
    profiles: "{{ gcp_infra_profiles }}"
    images: "{{ gcp_infra_images }}"
    prices: "{{ gcp_infra_prices }}"
"""

RETURN = r"""
plan:
  description: Project, zone, names, resources (each with type, name, action, changes, fields), cost, warnings.
  type: dict
  returned: success
problems:
  description: Every invalid setting, one message each.
  type: list
  returned: on validation failure
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_cost import estimate
from ansible.module_utils.gcp_rest import CLOUD_PLATFORM_SCOPE, GcpApiError, client_from_params
from ansible.module_utils.gcp_settings import SettingsError, build_spec
from ansible.module_utils.gcp_state import read_actions


def make_plan(params: dict[str, Any], client_factory: Any = client_from_params) -> dict[str, Any]:
    settings = params["settings"]
    spec = build_spec(settings, params["profiles"], params["images"])
    cost = estimate(
        params["prices"],
        spec["profile"],
        spec["spot"],
        settings["disk_type"],
        int(settings["disk_size_gb"]),
        float(settings.get("bucket_expected_gb") or 18),
        float(settings.get("credits_usd") or 300),
        float(settings.get("hours_per_day") or 8),
        float(settings.get("idle_stop_minutes") if settings.get("idle_stop_minutes") not in (None, "") else 30),
    )
    if spec["region"] != params["prices"]["region"]:
        spec["warnings"].append(
            f"Prices are list prices for {params['prices']['region']}; {spec['region']} may cost more (often 10-40 %)."
        )
    state_note = "not read (read_state: never): each resource shows what provision would create or enforce"
    actions: list[dict[str, Any]] = [{"action": "create-or-enforce", "changes": []} for _ in spec["resources"]]
    read_calls = 0
    write_calls = 0
    if params["read_state"] != "never":
        try:
            client = client_factory(dict(params, project=spec["project"]))
            actions = read_actions(client, spec)
            writes = [c for c in client.calls if c[0] != "GET" and not c[1].endswith(":getIamPolicy")]
            write_calls = len(writes)
            read_calls = len(client.calls) - write_calls
            state_note = "read with GET calls only"
        except (RuntimeError, GcpApiError) as exc:
            if params["read_state"] == "always":
                raise
            state_note = f"not read: {exc}"
    resources = []
    for resource, action in zip(spec["resources"], actions, strict=True):
        resources.append(dict(resource, **action))
    return {
        "project": spec["project"],
        "region": spec["region"],
        "zone": spec["zone"],
        "deployment": spec["deployment"],
        "profile": spec["profile"],
        "spot": spec["spot"],
        "provisioning_model": spec.get("provisioning_model", "STANDARD"),
        "names": spec["names"],
        "service_account_email": spec["service_account_email"],
        "labels": spec["labels"],
        "marker": spec["marker"],
        "network_tags": spec["network_tags"],
        "network": spec["network"],
        "apis": spec["apis"],
        "image": spec["image"],
        "metadata": spec["metadata"],
        "state": state_note,
        "read_api_calls": read_calls,
        "write_api_calls": write_calls,
        "resources": resources,
        "cost": cost,
        "warnings": spec["warnings"],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "profiles": {"type": "dict", "required": True},
            "images": {"type": "dict", "required": True},
            "prices": {"type": "dict", "required": True},
            "read_state": {"type": "str", "default": "never", "choices": ["auto", "always", "never"]},
            "auth_kind": {"type": "str", "default": "application", "choices": ["application", "serviceaccount", "machineaccount", "accesstoken"]},
            "service_account_file": {"type": "path"},
            "access_token": {"type": "str", "no_log": True},
            "scopes": {"type": "list", "elements": "str", "default": [CLOUD_PLATFORM_SCOPE]},
            "request_timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    try:
        plan = make_plan(module.params)
    except SettingsError as exc:
        module.fail_json(msg="Invalid settings (nothing was created):\n- " + "\n- ".join(exc.problems), problems=exc.problems)
    except (RuntimeError, GcpApiError) as exc:
        module.fail_json(msg=f"Could not read the current state: {exc}")
    for warning in plan["warnings"]:
        module.warn(warning)
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
