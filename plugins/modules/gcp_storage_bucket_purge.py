#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: delete every object of a bucket, then the bucket (teardown, opt-in only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_storage_bucket_purge
short_description: Empty and delete a Cloud Storage bucket
description:
  - Lists every object (all generations) and deletes them, then deletes the bucket.
    google.cloud.gcp_storage_bucket cannot delete a bucket that still has objects.
  - Idempotent (a missing bucket is not a change) and supports check mode.
options:
  project:
    description: Project ID (billing for the calls).
    type: str
    required: true
  name:
    description: Bucket name.
    type: str
    required: true
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Delete the weights bucket and its content
  gcp_storage_bucket_purge:
    project: my-project
    name: my-project-personaplex-weights
"""

RETURN = r"""
deleted_objects:
  description: How many object generations were (or would be) deleted.
  type: int
  returned: success
"""

from typing import Any
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, STORAGE, GcpApiError, GcpClient, client_from_params, error_result


def purge(params: dict[str, Any], client: GcpClient, check_mode: bool) -> dict[str, Any]:
    name = params["name"]
    if client.get(f"{STORAGE}/b/{name}", allow_404=True) is None:
        return {"changed": False, "deleted_objects": 0}
    objects: list[dict[str, Any]] = []
    query: dict[str, Any] = {"versions": "true"}
    while True:
        doc = client.get(f"{STORAGE}/b/{name}/o", params=query) or {}
        objects.extend(doc.get("items") or [])
        if not doc.get("nextPageToken"):
            break
        query["pageToken"] = doc["nextPageToken"]
    if not check_mode:
        for obj in objects:
            client.request(
                "DELETE",
                f"{STORAGE}/b/{name}/o/{quote(obj['name'], safe='')}",
                params={"generation": obj.get("generation")} if obj.get("generation") else None,
                allow_404=True,
            )
        client.request("DELETE", f"{STORAGE}/b/{name}", allow_404=True)
    return {"changed": True, "deleted_objects": len(objects)}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(name={"type": "str", "required": True})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = purge(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, RuntimeError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
