# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read-only comparison of the desired spec with what exists (GET calls only), for plan mode."""

from __future__ import annotations

from typing import Any

from ansible.module_utils.gcp_instance_diff import instance_differences, want_from_spec
from ansible.module_utils.gcp_rest import COMPUTE, CRM, IAM, SERVICEUSAGE, STORAGE, GcpApiError, GcpClient


def _basename(link: Any) -> str:
    return str(link or "").rstrip("/").split("/")[-1]


def _accelerators(items: Any) -> list[tuple[str, int]]:
    out = []
    for item in items or []:
        kind = _basename(item.get("acceleratorType") or item.get("accelerator_type"))
        out.append((kind, int(item.get("acceleratorCount") or item.get("accelerator_count") or 0)))
    return sorted(out)


def diff_instance(fields: dict[str, Any], current: dict[str, Any], deployment: str = "DEPLOYMENT") -> list[str]:
    """The same differences gcp_compute_instance_state would apply (or refuse) on a rerun of provision."""
    metadata = {k: v for k, v in (fields.get("metadata") or {}).items() if v != "<public key>"}
    changes = []
    for d in instance_differences(want_from_spec(fields, metadata), current, deployment):
        if d["action"] == "stop":
            changes.append(f"{d['text']} (needs the VM stopped: gcp_allow_profile_change)")
        elif d["action"] == "refuse":
            changes.append(f"{d['text']} (cannot be done in place: {d['how']})")
        else:
            changes.append(d["text"])
    sched = current.get("scheduling") or {}
    want_model = fields.get("provisioning_model")
    have_model = sched.get("provisioningModel") or "STANDARD"
    if want_model and (want_model == "SPOT") != (have_model == "SPOT"):
        changes.append(f"provisioning model {have_model} -> {want_model} (kept: a VM's provisioning model is set at creation; "
                       "teardown and deploy again to change it, the bucket keeps the weights)")
    return changes


def diff_firewall(fields: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changes = []
    if sorted(current.get("sourceRanges") or []) != sorted(fields["source_ranges"]):
        changes.append(f"source_ranges {sorted(current.get('sourceRanges') or [])} -> {fields['source_ranges']}")
    have_ports = sorted(p for a in current.get("allowed") or [] for p in a.get("ports") or [])
    want_ports = sorted(p for a in fields["allowed"] for p in a["ports"])
    if have_ports != want_ports:
        changes.append(f"ports {have_ports} -> {want_ports}")
    if sorted(current.get("targetTags") or []) != sorted(fields["target_tags"]):
        changes.append("target_tags")
    return changes


def diff_bucket(fields: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changes = []
    iam_cfg = current.get("iamConfiguration") or {}
    if not (iam_cfg.get("uniformBucketLevelAccess") or {}).get("enabled"):
        changes.append("uniform bucket-level access off -> on")
    if iam_cfg.get("publicAccessPrevention") != "enforced":
        changes.append(f"public access prevention {iam_cfg.get('publicAccessPrevention')} -> enforced")
    labels = current.get("labels") or {}
    if any(labels.get(k) != v for k, v in fields["labels"].items()):
        changes.append("labels")
    return changes


def resource_action(client: GcpClient, project: str, resource: dict[str, Any]) -> dict[str, Any]:
    """Return {'action': create|update|unchanged, 'changes': [...]} for one resource, with GETs only."""
    kind, name, fields = resource["type"], resource["name"], resource["fields"]
    changes: list[str] = []
    if kind == "serviceusage.service":
        doc = client.get(f"{SERVICEUSAGE}/projects/{project}/services/{name}", allow_404=True)
        exists = bool(doc) and doc.get("state") == "ENABLED"
        return {"action": "unchanged" if exists else "enable", "changes": []}
    if kind == "iam.service_account":
        doc = client.get(f"{IAM}/projects/{project}/serviceAccounts/{fields['email']}", allow_404=True)
    elif kind == "iam.binding":
        if fields["resource_type"] == "project":
            policy = client.post(f"{CRM}/projects/{fields['resource']}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
        else:
            policy = client.get(f"{STORAGE}/b/{fields['resource']}/iam", allow_404=True)
            if policy is None:
                return {"action": "create", "changes": ["bucket does not exist yet"]}
        binding: dict[str, Any] = next((b for b in policy.get("bindings") or [] if b.get("role") == fields["role"] and not b.get("condition")), {})
        missing = sorted(set(fields["members"]) - set(binding.get("members") or []))
        return {"action": "update" if missing else "unchanged", "changes": [f"add {m}" for m in missing]}
    elif kind == "storage.bucket":
        doc = client.get(f"{STORAGE}/b/{name}", allow_404=True)
        if doc:
            changes = diff_bucket(fields, doc)
    elif kind == "compute.address":
        doc = client.get(f"{COMPUTE}/projects/{project}/regions/{fields['region']}/addresses/{name}", allow_404=True)
    elif kind == "compute.network":
        doc = client.get(f"{COMPUTE}/projects/{project}/global/networks/{name}", allow_404=True)
        if doc and doc.get("autoCreateSubnetworks"):
            changes = ["auto-mode network (cannot become custom mode here): choose another gcp_network_name"]
    elif kind == "compute.subnetwork":
        doc = client.get(f"{COMPUTE}/projects/{project}/regions/{fields['region']}/subnetworks/{name}", allow_404=True)
        if doc and doc.get("ipCidrRange") != fields["ip_cidr_range"]:
            changes = [f"ip_cidr_range {doc.get('ipCidrRange')} -> {fields['ip_cidr_range']} (cannot change in place: choose gcp_subnet_cidr "
                       f"{doc.get('ipCidrRange')})"]
    elif kind == "compute.firewall":
        doc = client.get(f"{COMPUTE}/projects/{project}/global/firewalls/{name}", allow_404=True)
        if doc:
            changes = diff_firewall(fields, doc)
    elif kind == "compute.instance":
        doc = client.get(f"{COMPUTE}/projects/{project}/zones/{fields['zone']}/instances/{name}", allow_404=True)
        if doc:
            changes = diff_instance(fields, doc, name[: -len("-vm")] if name.endswith("-vm") else name)
    else:  # pragma: no cover - every kind of build_spec is handled above
        return {"action": "unknown", "changes": []}
    if doc is None:
        return {"action": "create", "changes": []}
    return {"action": "update" if changes else "unchanged", "changes": changes}


def read_actions(client: GcpClient, spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for resource in spec["resources"]:
        try:
            out.append(resource_action(client, spec["project"], resource))
        except GcpApiError as exc:
            out.append({"action": "unknown", "changes": [f"could not read: HTTP {exc.status} {exc.message}"]})
    return out
