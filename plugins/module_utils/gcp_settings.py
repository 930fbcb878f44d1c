# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline validation of the GCP settings and the desired-state spec built from them.

Everything here is pure Python (standard library only): it runs before any API call,
so bad input fails with a message naming the setting and the accepted values, and the
plan mode can show every resource without credentials or network.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

IAP_SSH_RANGE = "35.235.240.0/20"
MANAGED_BY_MARKER = "managed-by=personaplex-ansible"

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ZONE_RE = re.compile(r"^([a-z]+-[a-z]+[0-9]+)-([a-z])$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_PROJECT_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_BUCKET_CHARS_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*[a-z0-9]$")
_GOOGLE_LOOKALIKE_RE = re.compile(r"g[o0][o0]g(le|1e|l3|13)")

SSH_ACCESS_CHOICES = ("direct", "iap")
DISK_TYPE_CHOICES = ("pd-balanced", "pd-ssd", "pd-standard")
DEPLOYMENT_NAME_MAX = 20
RESERVED_LABELS = ("app", "deployment", "managed-by")
# The project's own `default` network (auto mode, with Google's default-allow-* rules).
DEFAULT_NETWORK = "default"
DEFAULT_SUBNET_CIDR = "10.64.0.0/24"
# IAM service account ids: 6-30 characters, lowercase letter first, letters/digits/hyphens, no hyphen last.
# https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/create (accountId)
_SA_ID_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
# Subnet primary ranges: RFC 1918 or shared 100.64.0.0/10, prefix /8 to /29.
# https://cloud.google.com/vpc/docs/subnets#valid-ranges
_SUBNET_PARENTS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


class SettingsError(ValueError):
    """Raised with every problem found, one per line, each naming its setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _choices(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values))


def check_cidrs(setting: str, values: Any, allow_world: bool, problems: list[str], warnings: list[str]) -> list[str]:
    """Validate a list of IPv4 CIDRs; return them normalised (a bare address becomes /32)."""
    if not isinstance(values, list):
        problems.append(f"{setting}: must be a list of IPv4 CIDRs such as ['203.0.113.7/32'], got {values!r}")
        return []
    result: list[str] = []
    for value in values:
        text = str(value).strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = ""
            try:
                loose = ipaddress.ip_network(text, strict=False)
                hint = f"; did you mean {loose.with_prefixlen}?"
            except ValueError:
                pass
            problems.append(
                f"{setting}: {text!r} is not a valid IPv4 CIDR ({exc}){hint} "
                "Accepted: network/prefix such as 203.0.113.7/32 or 198.51.100.0/24."
            )
            continue
        if net.version != 4:
            problems.append(f"{setting}: {text!r} is IPv6; the default VPC firewall rules here take IPv4 CIDRs only.")
            continue
        if net.prefixlen == 0:
            if not allow_world:
                problems.append(
                    f"{setting}: {text!r} opens the port to the whole Internet. Use your own address "
                    "(e.g. 203.0.113.7/32), or set gcp_allow_world_access: true to accept that risk explicitly."
                )
                continue
            warnings.append(f"{setting} contains {text}: the port is open to the whole Internet (gcp_allow_world_access is true).")
        result.append(net.with_prefixlen)
    return result


def check_bucket_name(name: Any) -> list[str]:
    """Return the GCS naming rules that `name` breaks (empty when valid)."""
    rules = (
        "Accepted: 3-63 characters, lowercase letters, digits, '-' and '_', starting and ending "
        "with a letter or digit, not starting with 'goog', not containing 'google' (dotted names need "
        "domain verification and are not accepted here)."
    )
    if not isinstance(name, str) or not name:
        return [f"gcp_bucket_name: must be set to a globally unique bucket name. {rules}"]
    found: list[str] = []
    if not 3 <= len(name) <= 63:
        found.append(f"gcp_bucket_name: {name!r} has {len(name)} characters. {rules}")
    if "." in name:
        found.append(f"gcp_bucket_name: {name!r} contains '.', which requires domain ownership verification. {rules}")
    elif not _BUCKET_CHARS_RE.match(name):
        found.append(f"gcp_bucket_name: {name!r} has characters or an start/end that GCS refuses. {rules}")
    if name.startswith("goog") or _GOOGLE_LOOKALIKE_RE.search(name):
        found.append(f"gcp_bucket_name: {name!r} starts with 'goog' or contains 'google' (or a look-alike). {rules}")
    try:
        ipaddress.ip_address(name)
        found.append(f"gcp_bucket_name: {name!r} looks like an IP address. {rules}")
    except ValueError:
        pass
    return found


def _check_labels(labels: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(labels, dict):
        problems.append(f"gcp_labels: must be a mapping of label keys to values, got {labels!r}")
        return {}
    clean: dict[str, str] = {}
    for key, value in labels.items():
        key_s, value_s = str(key), str(value)
        if key_s in RESERVED_LABELS:
            problems.append(f"gcp_labels: {key_s!r} is set by the project (teardown finds resources by it). Accepted: any other key.")
        if not _LABEL_KEY_RE.match(key_s):
            problems.append(f"gcp_labels: key {key_s!r} is invalid. Accepted: lowercase letter first, then lowercase letters, digits, '_' or '-', at most 63.")
        if not _LABEL_VALUE_RE.match(value_s):
            problems.append(f"gcp_labels: value {value_s!r} of {key_s!r} is invalid. Accepted: lowercase letters, digits, '_' or '-', at most 63.")
        clean[key_s] = value_s
    return clean


def validate(settings: dict[str, Any], profiles: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    """Check every setting; return the normalised settings plus warnings, or raise SettingsError."""
    problems: list[str] = []
    warnings: list[str] = []
    s = dict(settings)

    project = s.get("project") or ""
    if not project:
        problems.append("gcp_project: must be set to your Google Cloud project ID (the ID, not the display name), e.g. my-voice-123456.")
    elif not _PROJECT_RE.match(str(project)):
        problems.append(f"gcp_project: {project!r} is not a project ID. Accepted: 6-30 characters, lowercase letters, digits and '-', starting with a letter.")

    name = str(s.get("deployment_name") or "")
    if not _NAME_RE.match(name) or len(name) > DEPLOYMENT_NAME_MAX:
        problems.append(
            f"gcp_deployment_name: {name!r} is invalid. Accepted: 1-{DEPLOYMENT_NAME_MAX} characters, lowercase letters, "
            "digits and '-', starting with a letter and not ending with '-' (it prefixes every resource name)."
        )
    else:
        problems.extend(check_derived_names(name))

    profile_name = s.get("profile")
    profile = profiles.get(profile_name) if isinstance(profile_name, str) else None
    if profile is None:
        problems.append(f"gcp_profile: {profile_name!r} is not a known profile. Accepted: {_choices(profiles)}.")

    zone = str(s.get("zone") or "")
    zone_match = _ZONE_RE.match(zone)
    region = str(s.get("region") or "")
    if not zone_match:
        problems.append(f"gcp_zone: {zone!r} is not a zone name. Accepted: REGION-LETTER such as us-central1-a.")
    else:
        if not region:
            region = zone_match.group(1)
        elif region != zone_match.group(1):
            problems.append(f"gcp_region: {region!r} does not contain gcp_zone {zone!r}. Accepted: {zone_match.group(1)!r} (or leave gcp_region empty).")
    if region and not _REGION_RE.match(region):
        problems.append(f"gcp_region: {region!r} is not a region name. Accepted: e.g. us-central1, europe-west4.")
    if profile is not None and zone_match:
        zones = profile.get("zones") or []
        if zone not in zones:
            if s.get("accept_unlisted_zone"):
                warnings.append(
                    f"gcp_zone {zone} is not in the dated zone table for {profile['accelerator_type']}; preflight asks the API."
                )
            else:
                problems.append(
                    f"gcp_zone: {zone!r} has no {profile['accelerator_type']} GPU (profile {profile_name!r}) in the zone table "
                    f"(as of {profile.get('zones_checked', 'unknown date')}). Accepted zones: {', '.join(zones)}. "
                    "If Google has added the GPU there since, set gcp_accept_unlisted_zone: true (preflight then asks the API)."
                )

    image_key = s.get("image")
    image = images.get(image_key) if isinstance(image_key, str) else None
    image_project = s.get("image_project") or ""
    image_family = s.get("image_family") or ""
    if image_key == "custom":
        if not image_project or not image_family:
            problems.append("gcp_image: 'custom' needs gcp_image_project and gcp_image_family (e.g. my-project / my-family).")
        image = {"project": image_project, "family": image_family, "min_disk_gb": 10, "os_family": "custom"}
    elif image is None:
        problems.append(f"gcp_image: {image_key!r} is not a known image. Accepted: {_choices([*images, 'custom'])}.")

    disk_type = s.get("disk_type")
    allowed_disks = list(profile.get("disk_types", DISK_TYPE_CHOICES)) if profile else list(DISK_TYPE_CHOICES)
    if disk_type not in allowed_disks:
        problems.append(f"gcp_disk_type: {disk_type!r} is not usable with profile {profile_name!r}. Accepted: {_choices(allowed_disks)}.")
    try:
        disk_size = int(s.get("disk_size_gb") or 0)
    except (TypeError, ValueError):
        disk_size = 0
    min_disk = int(s.get("min_disk_gb") or 0)
    if image:
        min_disk = max(min_disk, int(image.get("min_disk_gb", 10)))
    if disk_size < min_disk:
        problems.append(
            f"gcp_disk_size_gb: {s.get('disk_size_gb')!r} is too small. Accepted: at least {min_disk} "
            "(17 GB weights + 7 GB venv + Docker images + OS + headroom)."
        )

    ssh_access = s.get("ssh_access")
    if ssh_access not in SSH_ACCESS_CHOICES:
        problems.append(f"gcp_ssh_access: {ssh_access!r} is unknown. Accepted: {_choices(SSH_ACCESS_CHOICES)}.")
    allow_world = bool(s.get("allow_world_access"))
    admin = check_cidrs("gcp_admin_cidrs", s.get("admin_cidrs", []), allow_world, problems, warnings)
    clients = check_cidrs("gcp_client_cidrs", s.get("client_cidrs", []), allow_world, problems, warnings)
    if ssh_access == "direct" and not admin and not any(p.startswith("gcp_admin_cidrs") for p in problems):
        problems.append(
            "gcp_admin_cidrs: must list at least one CIDR allowed to SSH in (e.g. your address: curl -s https://ifconfig.me, "
            "then 'x.y.z.w/32'), or set gcp_ssh_access: iap."
        )
    if not clients and not any(p.startswith("gcp_client_cidrs") for p in problems):
        problems.append("gcp_client_cidrs: must list at least one CIDR allowed to reach the voice port (e.g. your address as 'x.y.z.w/32').")

    try:
        port = int(s.get("voice_port") or 0)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535 or port == 22:
        problems.append(f"gcp_voice_port: {s.get('voice_port')!r} is invalid. Accepted: 1-65535 except 22 (8998 is the server's default).")

    network = check_network_settings(s, problems)
    roles = s.get("bucket_roles")
    if roles is not None and (not isinstance(roles, list) or not all(str(r).startswith(("roles/", "projects/")) for r in roles)):
        problems.append(f"gcp_bucket_roles: {roles!r} is invalid. Accepted: a list of IAM roles such as "
                        "['roles/storage.objectViewer', 'roles/storage.objectCreator'].")
    elif any(str(r) in ("roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin") for r in roles or []):
        warnings.append(f"gcp_bucket_roles {roles} lets the VM delete and overwrite objects in the weights bucket; "
                        "read + create (objectViewer + objectCreator) is enough.")

    bucket = s.get("bucket_name")
    problems.extend(check_bucket_name(bucket))
    labels = _check_labels(s.get("labels") or {}, problems)
    for tag in s.get("network_tags") or []:
        if not _NAME_RE.match(str(tag)) or len(str(tag)) > 63:
            problems.append(f"gcp_network_tags: {tag!r} is invalid. Accepted: lowercase letters, digits and '-', starting with a letter, at most 63.")

    if s.get("spot") and profile is not None and not profile.get("spot_supported", True):
        problems.append(f"gcp_spot: profile {profile_name!r} cannot run as spot. Accepted: false.")

    if problems:
        raise SettingsError(problems)

    assert profile is not None and image is not None  # for type checkers: no problems means both were found
    if not str(s.get("ssh_public_key") or "").strip():
        warnings.append("No SSH public key found next to gcp_ssh_private_key_file (its .pub): provision needs one (ssh-keygen -t ed25519).")
    if s.get("spot"):
        warnings.append(spot_caveat(bool(s.get("spot_legacy_preemptible"))))
    s.update(
        region=region,
        profile_spec=profile,
        image_spec=image,
        admin_cidrs=admin,
        client_cidrs=clients,
        voice_port=port,
        disk_size_gb=disk_size,
        labels=labels,
        network=network,
    )
    return {"settings": s, "warnings": warnings}


def check_derived_names(deployment: str) -> list[str]:
    """The names built from the deployment name must pass each API's own rules (checked before any write)."""
    found: list[str] = []
    names = resource_names(deployment)
    sa_id = f"{deployment}-vm"
    if not 6 <= len(sa_id) <= 30 or not _SA_ID_RE.match(sa_id):
        found.append(
            f"gcp_deployment_name: {deployment!r} gives the service account id {sa_id!r} ({len(sa_id)} characters); IAM accepts "
            "6-30 characters (lowercase letter first, letters, digits, '-'). Accepted: a deployment name of 4-20 characters."
        )
    for key in ("instance", "address", "firewall_ssh", "firewall_voice", "network", "subnetwork"):
        if len(names[key]) > 63 or not _NAME_RE.match(names[key]):
            found.append(f"gcp_deployment_name: {deployment!r} gives the {key} name {names[key]!r}, which Compute Engine refuses (RFC 1035, 1-63).")
    return found


def check_network_settings(s: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Network name, subnet name and CIDR; returns the normalised network settings."""
    deployment = str(s.get("deployment_name") or "")
    name = str(s.get("network_name") or f"{deployment}-net")
    subnet = str(s.get("subnet_name") or f"{deployment}-subnet")
    default = name == DEFAULT_NETWORK
    for setting, value in (("gcp_network_name", name), ("gcp_subnet_name", subnet)):
        if len(value) > 63 or not _NAME_RE.match(value):
            problems.append(
                f"{setting}: {value!r} is invalid. Accepted: 1-63 lowercase letters, digits and '-', starting with a letter "
                "and not ending with '-' (RFC 1035)."
            )
    cidr_text = str(s.get("subnet_cidr") or DEFAULT_SUBNET_CIDR).strip()
    cidr = cidr_text
    if not default:
        try:
            net = ipaddress.ip_network(cidr_text, strict=True)
        except ValueError as exc:
            problems.append(f"gcp_subnet_cidr: {cidr_text!r} is not a valid IPv4 CIDR ({exc}). Accepted: e.g. {DEFAULT_SUBNET_CIDR}.")
        else:
            if net.version != 4 or not any(net.subnet_of(parent) for parent in _SUBNET_PARENTS) or not 8 <= net.prefixlen <= 29:  # type: ignore[arg-type]
                problems.append(
                    f"gcp_subnet_cidr: {cidr_text!r} is not a private range Google accepts for a subnet. Accepted: a /8 to /29 "
                    f"inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10, e.g. {DEFAULT_SUBNET_CIDR}."
                )
            cidr = net.with_prefixlen
    return {"name": name, "subnetwork": "" if default else subnet, "subnet_cidr": "" if default else cidr, "dedicated": not default,
            "accept_open_rules": bool(s.get("accept_default_network_rules"))}


def parse_marker(description: Any) -> dict[str, str]:
    """The key=value words of a description (the marker this project writes)."""
    return dict(word.split("=", 1) for word in str(description or "").split() if "=" in word)


def marker_matches(description: Any, deployment: str) -> bool:
    """True only when the description carries this project's marker for exactly this deployment.

    A substring test would let `deployment=personaplex` match `deployment=personaplex-dev`.
    """
    words = parse_marker(description)
    return words.get("managed-by") == MANAGED_BY_MARKER.split("=", 1)[1] and words.get("deployment") == deployment


def spot_caveat(legacy_preemptible: bool) -> str:
    """What a user accepts with gcp_spot (printed by plan, preflight and provision)."""
    if legacy_preemptible:
        return ("gcp_spot with gcp_spot_legacy_preemptible: a legacy preemptible VM, about 60-90 % cheaper; Google can "
                "stop it at any moment (a live conversation then drops mid-sentence) and always stops it after 24 h. "
                "`make start` starts it again (disk, IP and weights are kept).")
    return ("gcp_spot is true: a Spot VM, about 60-90 % cheaper; Google can preempt it at any moment with 30 s notice "
            "(a live conversation then drops mid-sentence). On preemption it is STOPPED, not deleted: disk, IP and "
            "weights are kept and `make start` resumes it (when Spot capacity is available again).")


def scheduling_spec(spot: bool, legacy_preemptible: bool) -> dict[str, Any]:
    """The VM's scheduling in the Compute API's own names (instances.insert, Scheduling).

    Spot: provisioningModel SPOT + instanceTerminationAction STOP (preemption stops the VM; DELETE would
    lose the disk), as in Google's "Create and use Spot VMs" page and its samples. google.cloud 1.10's
    gcp_compute_instance has no field for either, so a Spot VM is created by gcp_compute_instance_insert.
    """
    if spot and not legacy_preemptible:
        return {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": True,
                "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"}
    return {"onHostMaintenance": "TERMINATE", "automaticRestart": not spot, "preemptible": spot}


def resource_names(deployment: str) -> dict[str, str]:
    """Every resource name derived from the deployment name (one place, used by provision and teardown)."""
    return {
        "service_account_id": f"{deployment}-vm"[:30],
        "address": f"{deployment}-ip",
        "firewall_ssh": f"{deployment}-allow-ssh",
        "firewall_voice": f"{deployment}-allow-voice",
        "instance": f"{deployment}-vm",
        "network_tag": f"{deployment}-voice",
        "network": f"{deployment}-net",
        "subnetwork": f"{deployment}-subnet",
    }


def bucket_roles(s: dict[str, Any]) -> list[str]:
    """The VM's roles on the weights bucket: read + create by default, never delete (objectUser can delete)."""
    roles = s.get("bucket_roles")
    if not roles and s.get("bucket_role"):
        roles = [s["bucket_role"]]
    return [str(r) for r in (roles or ["roles/storage.objectViewer", "roles/storage.objectCreator"])]


def build_spec(settings: dict[str, Any], profiles: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    """Validate and return the desired state of every resource, in creation order."""
    checked = validate(settings, profiles, images)
    s = checked["settings"]
    project, zone, region = s["project"], s["zone"], s["region"]
    deployment = s["deployment_name"]
    profile = s["profile_spec"]
    image = s["image_spec"]
    names = resource_names(deployment)
    network = s["network"]
    names.update(network=network["name"], subnetwork=network["subnetwork"])
    network_link = f"global/networks/{network['name']}"
    subnet_link = f"regions/{region}/subnetworks/{network['subnetwork']}" if network["dedicated"] else ""
    sa_email = f"{names['service_account_id']}@{project}.iam.gserviceaccount.com"
    labels = {"app": "personaplex", "deployment": deployment, "managed-by": "ansible"}
    labels.update(s["labels"])
    marker = f"{MANAGED_BY_MARKER} deployment={deployment}"
    tags = [names["network_tag"]] + [t for t in (s.get("network_tags") or []) if t != names["network_tag"]]
    ssh_sources = list(s["admin_cidrs"])
    if s["ssh_access"] == "iap" and IAP_SSH_RANGE not in ssh_sources:
        ssh_sources.append(IAP_SSH_RANGE)

    apis = ["compute.googleapis.com", "storage.googleapis.com", "iam.googleapis.com", "cloudresourcemanager.googleapis.com"]
    if s.get("os_login"):
        apis.append("oslogin.googleapis.com")
    if s["ssh_access"] == "iap":
        apis.append("iap.googleapis.com")

    attach = not profile.get("accelerators_builtin", False)
    accelerators = [{"accelerator_type": profile["accelerator_type"], "accelerator_count": int(profile["accelerator_count"])}]
    spot = bool(s.get("spot"))
    metadata = {"enable-oslogin": "TRUE" if s.get("os_login") else "FALSE", "enable-guest-attributes": "TRUE"}
    if not s.get("os_login") and s.get("ssh_public_key"):
        metadata["ssh-keys"] = f"{s.get('ssh_user') or 'ansible'}:{str(s['ssh_public_key']).strip()}"

    resources: list[dict[str, Any]] = []
    if s.get("manage_apis", True):
        for api in apis:
            resources.append({"type": "serviceusage.service", "name": api, "fields": {"state": "ENABLED"}})
    resources.append(
        {
            "type": "iam.service_account",
            "name": names["service_account_id"],
            "fields": {"email": sa_email, "display_name": f"PersonaPlex VM ({deployment})"},
        }
    )
    for role in s.get("project_roles") or ["roles/logging.logWriter", "roles/monitoring.metricWriter"]:
        resources.append(
            {
                "type": "iam.binding",
                "name": f"projects/{project} {role}",
                "fields": {"resource_type": "project", "resource": project, "role": role, "members": [f"serviceAccount:{sa_email}"]},
            }
        )
    resources.append(
        {
            "type": "storage.bucket",
            "name": s["bucket_name"],
            "fields": {
                "location": (s.get("bucket_location") or region).upper(),
                "storage_class": "STANDARD",
                "uniform_bucket_level_access": True,
                "public_access_prevention": "enforced",
                "labels": labels,
            },
        }
    )
    for role in bucket_roles(s):
        resources.append(
            {
                "type": "iam.binding",
                "name": f"b/{s['bucket_name']} {role}",
                "fields": {"resource_type": "bucket", "resource": s["bucket_name"], "role": role, "members": [f"serviceAccount:{sa_email}"]},
            }
        )
    resources.append(
        {
            "type": "compute.address",
            "name": names["address"],
            "fields": {"region": region, "address_type": "EXTERNAL", "network_tier": "PREMIUM", "description": marker},
        }
    )
    if network["dedicated"]:
        # A custom-mode network of its own: only this deployment's firewall rules apply to the VM
        # (the project's `default` network carries default-allow-ssh/rdp open to 0.0.0.0/0).
        resources.append(
            {
                "type": "compute.network",
                "name": network["name"],
                "fields": {"auto_create_subnetworks": False, "routing_mode": "REGIONAL", "description": f"PersonaPlex VPC. {marker}"},
            }
        )
        resources.append(
            {
                "type": "compute.subnetwork",
                "name": network["subnetwork"],
                "fields": {
                    "region": region,
                    "network": network_link,
                    "ip_cidr_range": network["subnet_cidr"],
                    "private_ip_google_access": True,
                    "description": f"PersonaPlex subnet. {marker}",
                },
            }
        )
    resources.append(
        {
            "type": "compute.firewall",
            "name": names["firewall_ssh"],
            "fields": {
                "network": network_link,
                "direction": "INGRESS",
                "allowed": [{"ip_protocol": "tcp", "ports": ["22"]}],
                "source_ranges": sorted(ssh_sources),
                "target_tags": [names["network_tag"]],
                "description": f"SSH to the PersonaPlex VM. {marker}",
            },
        }
    )
    resources.append(
        {
            "type": "compute.firewall",
            "name": names["firewall_voice"],
            "fields": {
                "network": network_link,
                "direction": "INGRESS",
                "allowed": [{"ip_protocol": "tcp", "ports": [str(s["voice_port"])]}],
                "source_ranges": sorted(s["client_cidrs"]),
                "target_tags": [names["network_tag"]],
                "description": f"PersonaPlex voice port. {marker}",
            },
        }
    )
    resources.append(
        {
            "type": "compute.instance",
            "name": names["instance"],
            "fields": {
                "zone": zone,
                "machine_type": profile["machine_type"],
                "guest_accelerators": accelerators if attach else [],
                "accelerators_builtin": accelerators if not attach else [],
                "scheduling": {
                    "on_host_maintenance": "TERMINATE",
                    "automatic_restart": not spot,
                    "preemptible": spot,
                },
                # Spot (default with gcp_spot) vs the legacy preemptible model; REST names (scheduling_spec).
                "provisioning_model": "SPOT" if spot and not s.get("spot_legacy_preemptible") else "STANDARD",
                "scheduling_api": scheduling_spec(spot, bool(s.get("spot_legacy_preemptible"))),
                "boot_disk": {
                    "size_gb": s["disk_size_gb"],
                    "type": s["disk_type"],
                    "source_image": f"projects/{image['project']}/global/images/family/{image['family']}",
                    "auto_delete": True,
                },
                "service_account": {"email": sa_email, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
                "shielded_instance_config": {
                    "enable_secure_boot": bool(s.get("secure_boot")),
                    "enable_vtpm": bool(s.get("shielded_vm")),
                    "enable_integrity_monitoring": bool(s.get("shielded_vm")),
                },
                "metadata": {k: ("<public key>" if k == "ssh-keys" else v) for k, v in metadata.items()},
                "labels": labels,
                "tags": tags,
                "external_ip": names["address"],
                "network": network_link,
                "subnetwork": subnet_link,
                "deletion_protection": bool(s.get("deletion_protection")),
            },
        }
    )
    return {
        "project": project,
        "region": region,
        "zone": zone,
        "deployment": deployment,
        "profile": s["profile"],
        "spot": spot,
        "provisioning_model": "SPOT" if spot and not s.get("spot_legacy_preemptible") else "STANDARD",
        "names": names,
        "service_account_email": sa_email,
        "labels": labels,
        "marker": marker,
        "network_tags": tags,
        "network": {**network, "link": network_link, "subnetwork_link": subnet_link},
        "ssh_source_ranges": sorted(ssh_sources),
        "apis": apis,
        "metadata": metadata,
        "image": image,
        "resources": resources,
        "warnings": checked["warnings"],
    }
