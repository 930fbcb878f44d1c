#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: find one deployment's fleet resources by exact identity. Read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_fleet_find
short_description: List the fleet resources of one deployment (read-only)
description:
  - Lists each fleet collection and keeps the items whose description ends with the deployment's
    marker (C(managed-by=personaplex-ansible deployment=NAME), so C(deployment=NAME-2) does not
    match) and, where the resource carries labels, whose C(app) and C(deployment) labels equal
    the deployment's. Images are matched by labels and family.
  - Makes only GET calls.
options:
  region:
    description: Region of the instance group and autoscaler.
    type: str
    required: true
  deployment:
    description: Deployment name.
    type: str
    required: true
  marker:
    description: The marker written in each description.
    type: str
    required: true
  image_family:
    description: Image family of the deployment's baked images.
    type: str
    required: true
  vm_zone:
    description: With C(vm_name), also say whether the deployment's single VM exists (make start/stop).
    type: str
  vm_name:
    description: Name of the deployment's single VM.
    type: str
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Find the fleet
  gcp_fleet_find:
    project: my-project
    region: us-central1
    deployment: personaplex
    marker: "managed-by=personaplex-ansible deployment=personaplex"
    image_family: personaplex-personaplex
"""

RETURN = r"""
images:
  description: The deployment's baked images (name, labels, status, created, id), oldest first.
  type: list
  returned: success
order:
  description: The keys of C(found) in deletion order.
  type: list
  returned: success
found:
  description: Collection path -> names, for each fleet collection (teardown deletes in reverse creation order).
  type: dict
  returned: success
vm_exists:
  description: Whether the single VM exists (null unless vm_zone and vm_name are given).
  type: bool
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, client_from_params, error_result

# Deletion order: users before what they use (the API refuses deleting a resource in use).
ORDER = ["global/forwardingRules", "global/addresses", "global/targetHttpsProxies", "global/sslCertificates", "global/urlMaps",
         "global/backendBuckets", "global/backendServices", "global/securityPolicies", "REGION/autoscalers", "REGION/instanceGroupManagers",
         "global/instanceTemplates", "global/healthChecks", "global/firewalls", "global/images"]


def ours(item: dict[str, Any], params: dict[str, Any]) -> bool:
    labels = item.get("labels") or (item.get("properties") or {}).get("labels")
    if labels is not None and (labels.get("app") != "personaplex" or labels.get("deployment") != params["deployment"]):
        return False
    desc = str(item.get("description") or "")
    return desc == params["marker"] or desc.endswith(" " + params["marker"])


def find(params: dict[str, Any], client: GcpClient) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    found: dict[str, list[str]] = {}
    images: list[dict[str, Any]] = []
    for rel in ORDER:
        path = rel.replace("REGION", f"regions/{params['region']}")
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {}
        while True:
            doc = client.get(f"{COMPUTE}/projects/{params['project']}/{path}", params=query) or {}
            items += doc.get("items") or []
            if not doc.get("nextPageToken"):
                break
            query["pageToken"] = doc["nextPageToken"]
        if rel == "global/images":
            images = [{"name": i["name"], "labels": i.get("labels") or {}, "status": i.get("status"),
                       "created": i.get("creationTimestamp", ""), "id": int(i.get("id") or 0)} for i in items
                      if i.get("family") == params["image_family"] and (i.get("labels") or {}).get("deployment") == params["deployment"]
                      and (i.get("labels") or {}).get("app") == "personaplex"]
            images.sort(key=lambda i: (i["created"], i["id"]))
            names = [i["name"] for i in images]
        else:
            names = [i["name"] for i in items if ours(i, params)]
        found[f"projects/{params['project']}/{path}"] = sorted(names)
    return found, images


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(region={"type": "str", "required": True}, deployment={"type": "str", "required": True},
                marker={"type": "str", "required": True}, image_family={"type": "str", "required": True},
                vm_zone={"type": "str"}, vm_name={"type": "str"})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    vm_exists = None
    try:
        client = client_from_params(p)
        found, images = find(p, client)
        if p["vm_zone"] and p["vm_name"]:
            vm_exists = client.get(f"{COMPUTE}/projects/{p['project']}/zones/{p['vm_zone']}/instances/{p['vm_name']}", allow_404=True) is not None
    except (GcpApiError, RuntimeError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(changed=False, found=found, order=list(found), images=images, vm_exists=vm_exists)


if __name__ == "__main__":
    main()
