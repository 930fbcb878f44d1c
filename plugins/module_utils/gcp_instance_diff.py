# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What differs between an existing VM and the wanted one, and how Compute Engine lets each change be made.

Pure Python, shared by the plan (gcp_state, GET only) and by gcp_compute_instance_state (which
applies it), so `make plan` shows exactly what a rerun of provision does. Each difference is
  - "inplace": applied on a running or stopped VM (labels, tags, metadata, deletion protection,
    maintenance policy and automatic restart, a larger boot disk);
  - "stop": the API takes it only on a stopped VM (machine type, GPUs, service account, provisioning);
  - "refuse": the API cannot make it on this VM; `how` says what to do instead.
Sources: https://cloud.google.com/compute/docs/instances/changing-machine-type-of-stopped-instance
(other machine series only for first/second generation series, "excluding T2A and A2"),
https://cloud.google.com/compute/docs/gpus/add-remove-gpus (GPUs of N1 VMs only, VM stopped),
https://cloud.google.com/compute/docs/reference/rest/v1/instances/setServiceAccount (stopped VM),
https://cloud.google.com/compute/docs/reference/rest/v1/disks/resize (larger only).
"""

from __future__ import annotations

from typing import Any

BUILTIN_GPU_SERIES = ("g2", "a2", "a3", "a4", "g4")  # machine series whose GPUs come with the type
NO_CROSS_SERIES = ("a2", "t2a")  # Google: a change to or from these series is not supported in place
STOPPED_SCHEDULING = ("preemptible", "provisioningModel", "instanceTerminationAction")
GOOGLE_LABEL_PREFIX = "goog-"  # labels Google's own agents add; left alone


def basename(link: Any) -> str:
    return str(link or "").rstrip("/").split("/")[-1]


def series(machine_type: Any) -> str:
    return basename(machine_type).split("-", 1)[0]


def accelerators(items: Any) -> list[tuple[str, int]]:
    out = []
    for item in items or []:
        kind = basename(item.get("acceleratorType") or item.get("accelerator_type"))
        out.append((kind, int(item.get("acceleratorCount") or item.get("accelerator_count") or 0)))
    return sorted(out)


def _diff(field: str, text: str, action: str, how: str = "") -> dict[str, str]:
    return {"field": field, "text": text, "action": action, "how": how}


def recreate_how(deployment_hint: str) -> str:
    return ("the VM must be created again: run playbooks/teardown.yml -e gcp_teardown_confirm=" + deployment_hint
            + " (the weights bucket is kept, so the new VM fetches the weights from it), then playbooks/provision.yml "
            "with the new setting; or set the setting back to the VM's current value.")


def machine_differences(want: dict[str, Any], current: dict[str, Any], deployment_hint: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    have_type = basename(current.get("machineType"))
    want_type = want.get("machine_type") or have_type
    if have_type != want_type:
        old, new = series(have_type), series(want_type)
        if old != new and (old in NO_CROSS_SERIES or new in NO_CROSS_SERIES):
            out.append(_diff("machine_type", f"machine type {have_type} -> {want_type}", "refuse",
                             f"Compute Engine cannot change a VM from the {old.upper()} to the {new.upper()} machine series in place; "
                             + recreate_how(deployment_hint)))
            return out
        out.append(_diff("machine_type", f"machine type {have_type} -> {want_type}", "stop"))
    if want.get("accelerators") is not None:
        have = accelerators(current.get("guestAccelerators"))
        wanted = sorted((str(t), int(c)) for t, c in want["accelerators"])
        builtin_now = series(want_type) in BUILTIN_GPU_SERIES and not wanted
        if have != wanted and not (builtin_now and have_type == want_type):
            out.append(_diff("accelerators", f"GPUs {have or 'none'} -> {wanted or 'built into ' + want_type}", "stop"))
    return out


def instance_differences(want: dict[str, Any], current: dict[str, Any], deployment_hint: str = "DEPLOYMENT") -> list[dict[str, str]]:
    """Every difference between `want` (keys optional; None or absent = leave as is) and the VM resource `current`."""
    out = machine_differences(want, current, deployment_hint)
    sched = current.get("scheduling") or {}
    for key, value in (want.get("scheduling") or {}).items():
        have = sched.get(key)
        if key == "automaticRestart" and have is None:
            have = True  # the API's default
        if key == "preemptible" and have is None:
            have = False
        if have != value:
            out.append(_diff(f"scheduling.{key}", f"{key} {have} -> {value}", "stop" if key in STOPPED_SCHEDULING else "inplace"))
    if want.get("labels") is not None:
        have_labels = {k: v for k, v in (current.get("labels") or {}).items() if not k.startswith(GOOGLE_LABEL_PREFIX)}
        if have_labels != want["labels"]:
            added = sorted(f"{k}={v}" for k, v in want["labels"].items() if have_labels.get(k) != v)
            removed = sorted(k for k in have_labels if k not in want["labels"])
            out.append(_diff("labels", "labels" + (f" set {', '.join(added)}" if added else "") + (f" remove {', '.join(removed)}" if removed else ""),
                             "inplace"))
    if want.get("tags") is not None:
        have_tags = sorted((current.get("tags") or {}).get("items") or [])
        if have_tags != sorted(want["tags"]):
            out.append(_diff("tags", f"network tags {have_tags} -> {sorted(want['tags'])}", "inplace"))
    if want.get("metadata") is not None:
        items = {i.get("key"): i.get("value") for i in (current.get("metadata") or {}).get("items") or []}
        changed = sorted(k for k, v in want["metadata"].items() if items.get(k) != v)
        if changed:
            out.append(_diff("metadata", f"metadata {', '.join(changed)}", "inplace"))
    if want.get("service_account"):
        have_sa = (current.get("serviceAccounts") or [{}])[0]
        sa = want["service_account"]
        if have_sa.get("email") != sa["email"] or sorted(have_sa.get("scopes") or []) != sorted(sa.get("scopes") or []):
            out.append(_diff("service_account", f"service account {have_sa.get('email') or 'none'} -> {sa['email']}", "stop"))
    if want.get("disk_size_gb"):
        boot = next((d for d in current.get("disks") or [] if d.get("boot")), None)
        have_size = int((boot or {}).get("diskSizeGb") or 0)
        wanted = int(want["disk_size_gb"])
        if boot and have_size and wanted > have_size:
            out.append(_diff("disk_size_gb", f"boot disk {have_size} GB -> {wanted} GB", "inplace"))
        elif boot and have_size and wanted < have_size:
            out.append(_diff("disk_size_gb", f"boot disk {have_size} GB -> {wanted} GB", "refuse",
                             f"a disk cannot shrink; set gcp_disk_size_gb: {have_size} (or more), or {recreate_how(deployment_hint)}"))
    if want.get("deletion_protection") is not None and bool(current.get("deletionProtection")) != bool(want["deletion_protection"]):
        out.append(_diff("deletion_protection", f"deletion protection {bool(current.get('deletionProtection'))} -> {want['deletion_protection']}",
                         "inplace"))
    return out


def camel(key: str) -> str:
    """on_host_maintenance -> onHostMaintenance (the API's names); camelCase keys are kept."""
    return "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))


def want_from_spec(fields: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
    """The `want` of instance_differences from the plan's compute.instance fields."""
    sched = {camel(k): v for k, v in fields["scheduling"].items()}
    return {
        "machine_type": fields["machine_type"],
        "accelerators": [(a["accelerator_type"], a["accelerator_count"]) for a in fields["guest_accelerators"]],
        "scheduling": sched,
        "labels": fields["labels"],
        "tags": fields["tags"],
        "metadata": metadata,
        "service_account": fields["service_account"],
        "disk_size_gb": fields["boot_disk"]["size_gb"],
        "deletion_protection": fields["deletion_protection"],
    }
