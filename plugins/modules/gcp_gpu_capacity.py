#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: read-only preflight of project, zone, GPU type and GPU quota."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_gpu_capacity
short_description: Check that a project, zone, GPU type and GPU quota allow the VM (read-only)
description:
  - Reads the project, the zone, the zone's accelerator type, the region's quotas and the
    project's global quotas from the Compute Engine API. Makes no write call.
  - Fails with the exact steps to request more quota when the regional GPU quota (for example
    C(NVIDIA_T4_GPUS)) or the global C(GPUS_ALL_REGIONS) quota is too small.
options:
  project:
    description: Project ID.
    type: str
    required: true
  region:
    description: Region of O(zone).
    type: str
    required: true
  zone:
    description: Zone of the VM.
    type: str
    required: true
  accelerator_type:
    description: GPU type such as C(nvidia-tesla-t4).
    type: str
    required: true
  accelerator_count:
    description: GPUs the VM needs.
    type: int
    default: 1
  quota_metric:
    description: Regional quota metric for on-demand VMs, such as C(NVIDIA_T4_GPUS).
    type: str
    required: true
  preemptible_quota_metric:
    description: Regional quota metric for spot/preemptible VMs, such as C(PREEMPTIBLE_NVIDIA_T4_GPUS).
    type: str
  spot:
    description: Whether the VM is spot/preemptible (its own quota is used when it is above 0).
    type: bool
    default: false
  cpu_quota_metric:
    description: Regional vCPU quota metric (C(CPUS) for N1); checked when the region reports it.
    type: str
  cpu_count:
    description: vCPUs of the machine type.
    type: int
    default: 0
  existing_instance:
    description: True when the VM already exists (its GPUs are already counted in the usage).
    type: bool
    default: false
  instance_name:
    description: Name of the VM; when it exists in O(zone) with this GPU type, no new GPU is needed.
    type: str
  fail_on_shortage:
    description: Fail when a check does not pass (otherwise only report).
    type: bool
    default: true
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Check T4 quota in us-central1
  gcp_gpu_capacity:
    project: my-project
    region: us-central1
    zone: us-central1-a
    accelerator_type: nvidia-tesla-t4
    quota_metric: NVIDIA_T4_GPUS
    preemptible_quota_metric: PREEMPTIBLE_NVIDIA_T4_GPUS
"""

RETURN = r"""
ok:
  description: Whether every check passed.
  type: bool
  returned: always
checks:
  description: One entry per check with name, ok, and message.
  type: list
  returned: always
quota:
  description: The quota figures read (metric, limit, usage, free).
  type: dict
  returned: when the quotas were read
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, client_from_params, error_result


def quota_steps(project: str, metric: str, region: str | None, needed: float) -> str:
    where = f"region {region}" if region else "all regions (global)"
    return (
        f"Request more quota: open https://console.cloud.google.com/iam-admin/quotas?project={project} , "
        f"filter on the metric '{metric}' ({where}), tick it, click 'Edit quotas', ask for at least {needed:g}, "
        "give a short reason (e.g. 'one GPU VM for a speech model'), submit, and rerun when Google approves it "
        "(often minutes, sometimes up to two business days). Free-trial billing accounts get no GPU quota: "
        "upgrade the billing account first (unused credits are kept). See docs/gcp-quota.md."
    )


def find_quota(quotas: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    return next((q for q in quotas if q.get("metric") == metric), None)


def run(module_params: dict[str, Any], client: GcpClient) -> dict[str, Any]:
    p = module_params
    project, region, zone = p["project"], p["region"], p["zone"]
    checks: list[dict[str, Any]] = []
    quota_info: dict[str, Any] = {}

    def add(name: str, ok: bool, message: str) -> None:
        checks.append({"name": name, "ok": ok, "message": message})

    try:
        project_doc = client.get(f"{COMPUTE}/projects/{project}")
    except GcpApiError as exc:
        if exc.status == 404:
            add("project", False, f"Project {project!r} was not found by the Compute Engine API. Check gcp_project (the project ID, not its name).")
        else:
            add("project", False, f"Cannot read project {project!r}: {exc}")
        return {"ok": False, "checks": checks}
    add("project", True, f"Project {project} is reachable with these credentials and Compute Engine is enabled.")

    zone_doc = client.get(f"{COMPUTE}/projects/{project}/zones/{zone}", allow_404=True)
    if zone_doc is None:
        add("zone", False, f"Zone {zone!r} does not exist. List zones with 'gcloud compute zones list' and fix gcp_zone.")
        return {"ok": False, "checks": checks}
    if zone_doc.get("status") != "UP":
        add("zone", False, f"Zone {zone} is {zone_doc.get('status')}; choose another gcp_zone.")
    else:
        add("zone", True, f"Zone {zone} is UP.")

    accel = client.get(f"{COMPUTE}/projects/{project}/zones/{zone}/acceleratorTypes/{p['accelerator_type']}", allow_404=True)
    if accel is None:
        add("accelerator", False,
            f"Zone {zone} has no {p['accelerator_type']} GPU. Pick a zone from "
            f"'gcloud compute accelerator-types list --filter=name={p['accelerator_type']}' and set gcp_zone.")
    else:
        add("accelerator", True, f"{p['accelerator_type']} is offered in {zone}.")

    existing = bool(p["existing_instance"])
    if p.get("instance_name") and not existing:
        vm = client.get(f"{COMPUTE}/projects/{project}/zones/{zone}/instances/{p['instance_name']}", allow_404=True)
        gpus = [str(a.get("acceleratorType", "")).rsplit("/", 1)[-1] for a in (vm or {}).get("guestAccelerators") or []]
        if vm is not None and p["accelerator_type"] in gpus:
            existing = True
            add("existing_vm", True, f"VM {p['instance_name']} already has its {p['accelerator_type']}: no new GPU quota is needed.")
    p = dict(p, existing_instance=existing)
    needed = float(p["accelerator_count"]) if not existing else 0.0
    region_doc = client.get(f"{COMPUTE}/projects/{project}/regions/{region}")
    regional = region_doc.get("quotas") or []
    metric = p["quota_metric"]
    if p["spot"] and p.get("preemptible_quota_metric"):
        pre = find_quota(regional, p["preemptible_quota_metric"])
        if pre is not None and float(pre.get("limit", 0)) > 0:
            metric = p["preemptible_quota_metric"]
    q = find_quota(regional, metric)
    if q is None:
        add("regional_gpu_quota", False,
            f"Region {region} reports no quota '{metric}': the GPU is not offered there. {quota_steps(project, metric, region, needed or 1)}")
    else:
        free = float(q.get("limit", 0)) - float(q.get("usage", 0))
        quota_info["regional"] = {"metric": metric, "limit": q.get("limit"), "usage": q.get("usage"), "free": free}
        if free < needed:
            add("regional_gpu_quota", False,
                f"Quota {metric} in {region}: limit {q.get('limit'):g}, in use {q.get('usage'):g}, the VM needs {needed:g}. "
                + quota_steps(project, metric, region, float(q.get("usage", 0)) + needed))
        else:
            add("regional_gpu_quota", True, f"Quota {metric} in {region}: {free:g} free, {needed:g} needed.")

    g = find_quota(project_doc.get("quotas") or [], "GPUS_ALL_REGIONS")
    if g is None:
        add("global_gpu_quota", True, "The project reports no GPUS_ALL_REGIONS quota (no global cap).")
    else:
        free = float(g.get("limit", 0)) - float(g.get("usage", 0))
        quota_info["global"] = {"metric": "GPUS_ALL_REGIONS", "limit": g.get("limit"), "usage": g.get("usage"), "free": free}
        if free < needed:
            add("global_gpu_quota", False,
                f"Quota GPUS_ALL_REGIONS: limit {g.get('limit'):g}, in use {g.get('usage'):g}, the VM needs {needed:g}. "
                + quota_steps(project, "GPUS_ALL_REGIONS", None, float(g.get("usage", 0)) + needed))
        else:
            add("global_gpu_quota", True, f"Quota GPUS_ALL_REGIONS: {free:g} free, {needed:g} needed.")

    if p.get("cpu_quota_metric") and p["cpu_count"] and not p["existing_instance"]:
        c = find_quota(regional, p["cpu_quota_metric"])
        if c is not None:
            free = float(c.get("limit", 0)) - float(c.get("usage", 0))
            quota_info["cpus"] = {"metric": p["cpu_quota_metric"], "limit": c.get("limit"), "usage": c.get("usage"), "free": free}
            ok = free >= p["cpu_count"]
            add("cpu_quota", ok, f"Quota {p['cpu_quota_metric']} in {region}: {free:g} free, {p['cpu_count']} needed."
                + ("" if ok else " " + quota_steps(project, p["cpu_quota_metric"], region, float(c.get("usage", 0)) + p["cpu_count"])))

    return {"ok": all(c["ok"] for c in checks), "checks": checks, "quota": quota_info}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        region={"type": "str", "required": True},
        zone={"type": "str", "required": True},
        accelerator_type={"type": "str", "required": True},
        accelerator_count={"type": "int", "default": 1},
        quota_metric={"type": "str", "required": True},
        preemptible_quota_metric={"type": "str"},
        spot={"type": "bool", "default": False},
        cpu_quota_metric={"type": "str"},
        cpu_count={"type": "int", "default": 0},
        existing_instance={"type": "bool", "default": False},
        instance_name={"type": "str"},
        fail_on_shortage={"type": "bool", "default": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params))
    except (GcpApiError, RuntimeError, TimeoutError) as exc:
        module.fail_json(ok=False, checks=[], **error_result(exc))
    result["changed"] = False
    if not result["ok"] and module.params["fail_on_shortage"]:
        failed = [c["message"] for c in result["checks"] if not c["ok"]]
        module.fail_json(msg="GPU preflight failed:\n- " + "\n- ".join(failed), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
