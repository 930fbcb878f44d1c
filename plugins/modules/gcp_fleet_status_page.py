#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: the fleet's "starting, retry in N minutes" page in its own Cloud Storage bucket."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_fleet_status_page
short_description: The public page the load balancer answers with while no fleet instance is ready
description:
  - Makes (or deletes) a Cloud Storage bucket holding one HTML object, readable by everyone, that
    the fleet's URL map serves through a backend bucket as its custom error response (HTTP 503)
    when no instance is healthy (scale to zero, a stopped fleet, every instance booting).
  - The bucket is the deployment's by its labels (C(app), C(deployment)); one with other labels is
    never changed or deleted. The object is uploaded again only when its MD5 differs.
  - Public read (C(allUsers) as C(roles/storage.objectViewer)) is how a backend bucket serves
    objects to the load balancer; the page holds no secret.
  - Check mode reads only and reports what would change.
options:
  bucket:
    description: Bucket name (global namespace); empty -> the deployment's (C(<project>-<deployment>-fleet-status)).
    type: str
    default: ""
  deployment:
    description: Deployment name, for the default bucket name.
    type: str
    default: ""
  location:
    description: Bucket location (the fleet's region).
    type: str
    default: US
  labels:
    description: Bucket labels; C(app) and C(deployment) identify the deployment's bucket.
    type: dict
    default: {}
  object_name:
    description: Object name of the page.
    type: str
    default: fleet-starting.html
  html:
    description: The page (required with state=present).
    type: str
    default: ""
  state:
    description: present or absent (absent deletes the bucket's objects and the bucket).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: The fleet's starting page
  gcp_fleet_status_page:
    project: my-project
    bucket: my-project-personaplex-fleet-status
    location: US-CENTRAL1
    labels: {app: personaplex, deployment: personaplex}
    html: "<h1>The voice fleet is starting</h1>"
"""

RETURN = r"""
actions:
  description: What was (or, in check mode, would be) done, in order.
  type: list
  returned: success
url:
  description: The object's public URL.
  type: str
  returned: success
"""

import base64
import hashlib
from typing import Any
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_fleet import status_bucket_name
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, STORAGE, GcpApiError, GcpClient, client_from_params, error_result

UPLOAD = "https://storage.googleapis.com/upload/storage/v1"
CONTENT_TYPE = "text/html; charset=utf-8"
# A backend bucket's objects reach the load balancer when everyone may read them
# (https://cloud.google.com/load-balancing/docs/https/setup-global-ext-https-buckets, "make your bucket public").
PUBLIC = {"role": "roles/storage.objectViewer", "member": "allUsers"}


def md5_b64(data: bytes) -> str:
    """Cloud Storage's Object.md5Hash: base64 of the MD5 digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - the API's checksum, not security


def upload(client: GcpClient, bucket: str, name: str, data: bytes) -> Any:
    """objects.insert, uploadType=media (https://cloud.google.com/storage/docs/uploading-objects#rest-upload-objects)."""
    url = f"{UPLOAD}/b/{bucket}/o"
    resp = client.session.request("POST", url, params={"uploadType": "media", "name": name}, data=data,
                                  headers={"Content-Type": CONTENT_TYPE}, timeout=client.timeout)
    if resp.status_code >= 400:
        try:
            payload: Any = resp.json()
        except ValueError:
            payload = resp.text
        raise GcpApiError("POST", url, resp.status_code, payload)
    return resp.json()


def ours(bucket: dict[str, Any], labels: dict[str, str]) -> bool:
    have = bucket.get("labels") or {}
    return all(have.get(k) == labels.get(k) for k in ("app", "deployment"))


def run(params: dict[str, Any], client: GcpClient, check: bool) -> dict[str, Any]:
    if not params["bucket"] and not params["deployment"]:
        raise ValueError("Give bucket or deployment.")
    name, obj = params["bucket"] or status_bucket_name(params["project"], params["deployment"]), params["object_name"]
    labels = {str(k): str(v) for k, v in (params["labels"] or {}).items()}
    burl = f"{STORAGE}/b/{name}"
    ourl = f"{burl}/o/{quote(obj, safe='')}"
    actions: list[str] = []
    have = client.get(burl, allow_404=True)
    if have and not ours(have, labels):
        raise ValueError(f"Bucket {name} exists with labels {have.get('labels') or {}}, not this deployment's "
                         f"(app={labels.get('app')}, deployment={labels.get('deployment')}): it is left alone. "
                         "Use another gcp_deployment_name, or delete that bucket if it is a leftover.")
    if params["state"] == "absent":
        if not have:
            return {"changed": False, "actions": [], "url": ""}
        objects = (client.get(f"{burl}/o") or {}).get("items") or []
        for item in objects:
            actions.append(f"delete object {item['name']}")
            if not check:
                client.request("DELETE", f"{burl}/o/{quote(item['name'], safe='')}")
        actions.append(f"delete bucket {name}")
        if not check:
            client.request("DELETE", burl)
        return {"changed": True, "actions": actions, "url": ""}

    data = str(params["html"]).encode()
    if not data:
        raise ValueError("html is required with state=present.")
    if not have:
        actions.append(f"create bucket {name}")
        if not check:
            client.request("POST", f"{STORAGE}/b", params={"project": params["project"]}, body={
                "name": name, "location": params["location"], "storageClass": "STANDARD", "labels": labels,
                # Uniform access: IAM only (no per-object ACL); "inherited" lets allUsers be granted
                # unless the organisation enforces public access prevention (then the grant fails: 412).
                "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}, "publicAccessPrevention": "inherited"}})
    current = client.get(ourl, allow_404=True) if have else None
    if not current or current.get("md5Hash") != md5_b64(data) or current.get("contentType") != CONTENT_TYPE:
        actions.append(f"upload {obj}")
        if not check:
            upload(client, name, obj, data)
    policy = client.get(f"{burl}/iam") if have else {"bindings": []}
    bindings = policy.get("bindings") or []
    if not any(b.get("role") == PUBLIC["role"] and PUBLIC["member"] in (b.get("members") or []) for b in bindings):
        actions.append("grant allUsers roles/storage.objectViewer")
        if not check:
            policy = client.get(f"{burl}/iam")
            policy["bindings"] = (policy.get("bindings") or []) + [{"role": PUBLIC["role"], "members": [PUBLIC["member"]]}]
            client.request("PUT", f"{burl}/iam", body=policy)
    return {"changed": bool(actions), "actions": actions, "url": f"https://storage.googleapis.com/{name}/{quote(obj)}"}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(bucket={"type": "str", "default": ""}, deployment={"type": "str", "default": ""}, location={"type": "str", "default": "US"},
                labels={"type": "dict", "default": {}}, object_name={"type": "str", "default": "fleet-starting.html"},
                html={"type": "str", "default": ""}, state={"type": "str", "choices": ["present", "absent"], "default": "present"})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, RuntimeError, ValueError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
