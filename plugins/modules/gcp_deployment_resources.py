#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: find what a deployment created, by label (or marker where GCP has no labels). Read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_deployment_resources
short_description: Find the resources of one deployment by label (read-only)
description:
  - VMs and buckets are found by the C(deployment) and C(app=personaplex) labels. Static IPs and
    firewall rules, which google.cloud 1.10 cannot label, are found by the marker this project
    writes in their description (networks and subnets too). The marker must name exactly this
    deployment (C(deployment=personaplex) never matches C(deployment=personaplex-dev)), and VMs and
    buckets must carry exactly its labels. The service account is found by its e-mail.
  - Makes only GET/list calls.
options:
  project:
    description: Project ID.
    type: str
    required: true
  deployment:
    description: Deployment name (value of the C(deployment) label).
    type: str
    required: true
  marker:
    description: Marker written in the description of IPs and firewall rules.
    type: str
    required: true
  region:
    description: Region of the static IP.
    type: str
    required: true
  service_account_email:
    description: E-mail of the VM's service account.
    type: str
    required: true
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Find everything of the deployment
  gcp_deployment_resources:
    project: my-project
    deployment: personaplex
    marker: "managed-by=personaplex-ansible deployment=personaplex"
    region: us-central1
    service_account_email: personaplex-vm@my-project.iam.gserviceaccount.com
"""

RETURN = r"""
instances:
  description: VMs (name, zone, status).
  type: list
  returned: success
addresses:
  description: Static IPs (name, region, address).
  type: list
  returned: success
firewalls:
  description: Firewall rule names.
  type: list
  returned: success
subnetworks:
  description: Subnets (name, region) this deployment created.
  type: list
  returned: success
networks:
  description: VPC network names this deployment created (never the project's default network).
  type: list
  returned: success
buckets:
  description: Bucket names.
  type: list
  returned: success
service_accounts:
  description: Service-account e-mails that exist.
  type: list
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, IAM, STORAGE, GcpApiError, GcpClient, client_from_params, error_result
from ansible.module_utils.gcp_settings import marker_matches


def _pages(client: GcpClient, url: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All pages of a list call (plain `items` lists)."""
    out: list[dict[str, Any]] = []
    query = dict(params or {})
    while True:
        doc = client.get(url, params=query) or {}
        out.extend(doc.get("items") or [])
        token = doc.get("nextPageToken")
        if not token:
            return out
        query["pageToken"] = token


def _ours(labels: Any, deployment: str) -> bool:
    labels = labels or {}
    return labels.get("deployment") == deployment and labels.get("app") == "personaplex"


def find(params: dict[str, Any], client: GcpClient) -> dict[str, Any]:
    project, deployment = params["project"], params["deployment"]
    label_filter = f'(labels.app = "personaplex") AND (labels.deployment = "{deployment}")'
    instances = []
    agg = client.get(f"{COMPUTE}/projects/{project}/aggregated/instances", params={"filter": label_filter}) or {}
    for scope in (agg.get("items") or {}).values():
        for vm in scope.get("instances") or []:
            if not _ours(vm.get("labels"), deployment):  # the filter is the API's; the exact check is ours
                continue
            instances.append({"name": vm["name"], "zone": str(vm.get("zone", "")).split("/")[-1], "status": vm.get("status"),
                              "deletion_protection": bool(vm.get("deletionProtection"))})
    addresses = [
        {"name": a["name"], "region": params["region"], "address": a.get("address")}
        for a in _pages(client, f"{COMPUTE}/projects/{project}/regions/{params['region']}/addresses")
        if marker_matches(a.get("description"), deployment)
    ]
    firewalls = [f["name"] for f in _pages(client, f"{COMPUTE}/projects/{project}/global/firewalls") if marker_matches(f.get("description"), deployment)]
    subnetworks = [
        {"name": n["name"], "region": params["region"]}
        for n in _pages(client, f"{COMPUTE}/projects/{project}/regions/{params['region']}/subnetworks")
        if marker_matches(n.get("description"), deployment)
    ]
    networks = [
        n["name"] for n in _pages(client, f"{COMPUTE}/projects/{project}/global/networks")
        if marker_matches(n.get("description"), deployment) and n["name"] != "default"
    ]
    buckets = [b["name"] for b in _pages(client, f"{STORAGE}/b", {"project": project}) if _ours(b.get("labels"), deployment)]
    sa = client.get(f"{IAM}/projects/{project}/serviceAccounts/{params['service_account_email']}", allow_404=True)
    return {
        "changed": False,
        "instances": sorted(instances, key=lambda i: i["name"]),
        "addresses": addresses,
        "firewalls": sorted(firewalls),
        "subnetworks": sorted(subnetworks, key=lambda n: n["name"]),
        "networks": sorted(networks),
        "buckets": sorted(buckets),
        "service_accounts": [params["service_account_email"]] if sa else [],
    }


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        deployment={"type": "str", "required": True},
        marker={"type": "str", "required": True},
        region={"type": "str", "required": True},
        service_account_email={"type": "str", "required": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = find(module.params, client_from_params(module.params))
    except (GcpApiError, RuntimeError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
