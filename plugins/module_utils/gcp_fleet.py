# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet mode: the desired state of every fleet resource, in creation order. Pure Python.

Built from the single-VM plan (gcp_settings.build_spec) plus the fleet settings, so names, labels
and the profile table stay in one place. Each resource is a REST body in the documented shape of
its API (Compute Engine v1, Secret Manager v1); `gcp_fleet_resource` sends it as is, compares it
with what exists and patches what the API lets us patch. References, per collection:
https://cloud.google.com/compute/docs/reference/rest/v1/<collection> (instanceTemplates,
regionInstanceGroupManagers, regionAutoscalers, healthChecks, backendServices, urlMaps,
targetHttpsProxies, sslCertificates, globalForwardingRules, globalAddresses, securityPolicies,
firewalls, images) and https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Google's health-check and Google Front End ranges: both health checks and the global external
# Application Load Balancer's proxies reach the backends from these, and only these
# (https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges).
HEALTH_CHECK_RANGES = ["130.211.0.0/22", "35.191.0.0/16"]
# Cloud Armor: the lowest priority is the default rule (it must exist, action deny here).
DEFAULT_RULE_PRIORITY = 2147483647
# Cloud Armor basic rules take at most 10 source ranges per rule (srcIpRanges).
MAX_RANGES_PER_RULE = 10
PROMETHEUS_SESSIONS_METRIC = "prometheus.googleapis.com/personaplex_sessions_active/gauge"
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class FleetSettingsError(ValueError):
    """Bad fleet settings; the message lists every problem with the accepted values."""


def fleet_names(deployment: str) -> dict[str, str]:
    """Every fleet resource name (one place, used by fleet, image and teardown)."""
    d = deployment
    return {
        "service_account_id": f"{d}-fleet"[:30],
        "secret": f"{d}-access-token",
        "firewall_health": f"{d}-fleet-allow-health",
        "health_check": f"{d}-fleet-hc",
        "template_prefix": f"{d}-fleet-",
        "group": f"{d}-fleet",
        "autoscaler": f"{d}-fleet-as",
        "backend": f"{d}-fleet-be",
        "security_policy": f"{d}-fleet-armor",
        "url_map": f"{d}-fleet-lb",
        "certificate": f"{d}-fleet-cert",
        "proxy": f"{d}-fleet-https",
        "address": f"{d}-fleet-ip",
        "forwarding_rule": f"{d}-fleet-fr",
        "network_tag": f"{d}-fleet",
        "image_family": f"personaplex-{d}",
        "builder": f"{d}-image-builder",
    }


def validate_fleet(fleet: dict[str, Any], plan: dict[str, Any], profile: dict[str, Any], require_certificate: bool = True) -> dict[str, Any]:
    """Check the fleet settings; raise FleetSettingsError naming each bad one and what is accepted."""
    problems: list[str] = []

    def integer(key: str, low: int, high: int) -> int:
        value = fleet.get(key)
        if isinstance(value, str) and re.match(r"^-?[0-9]+$", value.strip()):  # Ansible templates numbers as text
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"gcp_fleet_{key}: {fleet.get(key)!r} is not accepted. Accepted: a whole number from {low} to {high}.")
            return low
        fleet[key] = value
        return value

    min_n = integer("min_instances", 0, 1000)
    max_n = integer("max_instances", 1, 1000)
    if min_n > max_n:
        problems.append(f"gcp_fleet_min_instances ({min_n}) is above gcp_fleet_max_instances ({max_n}). Accepted: min <= max.")
    integer("sessions_per_instance", 1, 64)
    integer("conversation_max_s", 60, 86400)
    integer("boot_s", 60, 3600)
    integer("voice_port", 1, 65535)
    integer("disk_size_gb", 10, 65536)
    target = fleet.get("target_utilization")
    if isinstance(target, str) and re.match(r"^[0-9]*\.?[0-9]+$", target.strip()):
        target = fleet["target_utilization"] = float(target)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.1 <= float(target) <= 0.95:
        problems.append(f"gcp_fleet_target_utilization: {target!r} is not accepted. Accepted: a number from 0.1 to 0.95 "
                        "(below 1 so that a free slot exists before one is needed).")
    zones = fleet.get("zones") or []
    if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
        problems.append(f"gcp_fleet_zones: {zones!r} is not a list of zone names.")
        zones = []
    region = plan["region"]
    wrong = [z for z in zones if not z.startswith(f"{region}-")]
    if wrong:
        problems.append(f"gcp_fleet_zones: {', '.join(wrong)} not in region {region}. Accepted: zones of {region}.")
    offered = [z for z in profile.get("zones", []) if z.startswith(f"{region}-")]
    chosen = zones or offered
    if not chosen:
        problems.append(f"no zone of {region} offers {profile['accelerator_type']} (dated table in roles/gcp_infra/vars/main.yml). "
                        "Accepted: set gcp_zone to a zone of a region that does, or list gcp_fleet_zones.")
    if fleet.get("power", "running") not in ("running", "stopped"):
        problems.append(f"gcp_fleet_power: {fleet.get('power')!r} is not accepted. Accepted: running, stopped.")
    domain = str(fleet.get("domain") or "")
    if domain and not DOMAIN_RE.match(domain):
        problems.append(f"gcp_fleet_domain: {domain!r} is not a domain name. Accepted: empty (self-managed certificate) "
                        "or a lower-case DNS name such as voice.example.org whose A record you will point at the fleet's IP.")
    if require_certificate and not domain and "-----BEGIN CERTIFICATE-----" not in str(fleet.get("certificate_pem") or ""):
        problems.append("gcp_fleet_domain is empty, so a self-managed certificate is needed: the play makes one "
                        "before this step (gcp_fleet_local_dir); none was given.")
    image = str(fleet.get("image") or "")
    if image and not image.startswith(("projects/", "global/images/")):
        problems.append(f"gcp_fleet_image: {image!r}. Accepted: empty (the family personaplex-<deployment>) or "
                        "projects/P/global/images/NAME.")
    if problems:
        raise FleetSettingsError("Fleet settings are invalid:\n- " + "\n- ".join(problems))
    return {"zones": chosen}


def _url(project: str, rel: str) -> str:
    return f"https://www.googleapis.com/compute/v1/projects/{project}/{rel}"


def _armor_rules(client_cidrs: list[str]) -> list[dict[str, Any]]:
    rules = []
    for i in range(0, len(client_cidrs), MAX_RANGES_PER_RULE):
        chunk = client_cidrs[i:i + MAX_RANGES_PER_RULE]
        rules.append({"priority": 1000 + i // MAX_RANGES_PER_RULE, "action": "allow", "description": "client CIDR allow-list",
                      "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": chunk}}})
    rules.append({"priority": DEFAULT_RULE_PRIORITY, "action": "deny(403)", "description": "everyone else",
                  "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}})
    return rules


def build_fleet(plan: dict[str, Any], profile: dict[str, Any], fleet: dict[str, Any], require_certificate: bool = True) -> dict[str, Any]:
    """Validate and return every fleet resource (creation order) plus names and scaling facts."""
    checked = validate_fleet(fleet, plan, profile, require_certificate)
    project, region, deployment = plan["project"], plan["region"], plan["deployment"]
    names = fleet_names(deployment)
    labels = dict(plan["labels"], role="fleet")
    sa_email = f"{names['service_account_id']}@{project}.iam.gserviceaccount.com"
    network = str(fleet.get("network") or "default")
    port = int(fleet["voice_port"])
    capacity = int(fleet["sessions_per_instance"])
    image = str(fleet.get("image") or f"projects/{project}/global/images/family/{names['image_family']}")
    spot = bool(plan.get("spot"))
    attach = not profile.get("accelerators_builtin", False)
    scheduling: dict[str, Any] = {"onHostMaintenance": "TERMINATE", "automaticRestart": not spot}
    if spot:  # https://cloud.google.com/compute/docs/instances/spot#mig : the MIG recreates a preempted VM
        scheduling.update(provisioningModel="SPOT", instanceTerminationAction="DELETE")
    nic: dict[str, Any] = {"network": f"global/networks/{network}"}  # no accessConfigs: no external IP
    if fleet.get("subnetwork"):
        nic["subnetwork"] = f"regions/{region}/subnetworks/{fleet['subnetwork']}"
    properties: dict[str, Any] = {
        "machineType": profile["machine_type"],
        "scheduling": scheduling,
        "disks": [{"boot": True, "autoDelete": True, "type": "PERSISTENT", "initializeParams": {
            "sourceImage": image, "diskSizeGb": str(fleet["disk_size_gb"]), "diskType": fleet["disk_type"]}}],
        "networkInterfaces": [nic],
        "serviceAccounts": [{"email": sa_email, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
        "metadata": {"items": [
            {"key": "enable-oslogin", "value": "TRUE"},
            {"key": "personaplex-secret", "value": f"projects/{project}/secrets/{names['secret']}"},
            {"key": "startup-script", "value": fleet["startup_script"]},
        ]},
        "labels": labels,
        "tags": {"items": [names["network_tag"]]},
        "shieldedInstanceConfig": {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True},
    }
    if attach:
        properties["guestAccelerators"] = [{"acceleratorType": profile["accelerator_type"],
                                            "acceleratorCount": int(profile["accelerator_count"])}]
    # Templates are immutable: the name carries a hash of what it holds, so a changed setting is
    # a new template and the group rolls to it; an unchanged one is the same name (no write).
    digest = hashlib.sha256(json.dumps(properties, sort_keys=True).encode()).hexdigest()[:8]
    template = f"{names['template_prefix']}{digest}"
    zones = checked["zones"]
    n_zones = len(zones)
    hc_url = _url(project, f"global/healthChecks/{names['health_check']}")
    group_url = _url(project, f"regions/{region}/instanceGroupManagers/{names['group']}")
    ig_url = _url(project, f"regions/{region}/instanceGroups/{names['group']}")
    target_util = float(fleet["target_utilization"])
    min_n, max_n = int(fleet["min_instances"]), int(fleet["max_instances"])
    # Stopped: the autoscaler is OFF and the group holds 0 instances (only the fixed costs
    # remain); running: the autoscaler is ON and owns the group's size (targetSize ignored).
    stopped = fleet.get("power", "running") == "stopped"

    metrics: list[dict[str, Any]] = [{
        # Per-instance gauge: the autoscaler keeps its average at capacity x target, so the group
        # grows while every instance still has a free slot.
        "metric": PROMETHEUS_SESSIONS_METRIC,
        "utilizationTarget": round(capacity * target_util, 3),
        "utilizationTargetType": "GAUGE",
    }]
    if min_n == 0:
        # With no instance there is no per-instance metric: a per-group metric (the load balancer's
        # request count on this backend) lets the autoscaler start the first instance.
        metrics.append({
            "metric": "loadbalancing.googleapis.com/https/request_count",
            "filter": f'resource.type = "https_lb_rule" AND resource.labels.backend_target_name = "{names["backend"]}"',
            "singleInstanceAssignment": float(capacity),
            "utilizationTargetType": "DELTA_PER_MINUTE",
        })

    certificate: dict[str, Any]
    if fleet.get("domain"):
        certificate = {"name": names["certificate"], "type": "MANAGED", "managed": {"domains": [fleet["domain"]]}}
    else:
        # privateKey is added by the task (no_log) from the control node's 0600 file: never in the plan.
        certificate = {"name": names["certificate"], "type": "SELF_MANAGED", "certificate": str(fleet.get("certificate_pem") or "").strip() + "\n"}
    certificate["description"] = plan["marker"]

    def res(kind: str, collection: str, body: dict[str, Any], update: str, **extra: Any) -> dict[str, Any]:
        base = {"ignore": [], "write_only": [], "patch_query": None, "actions": {}}
        return {"kind": kind, "name": body["name"], "collection": collection, "body": body, "update": update, **base, **extra}

    g = f"projects/{project}/global"
    r = f"projects/{project}/regions/{region}"
    resources = [
        res("firewall", f"{g}/firewalls", {
            "name": names["firewall_health"], "network": _url(project, f"global/networks/{network}"), "direction": "INGRESS",
            "priority": 1000, "sourceRanges": HEALTH_CHECK_RANGES, "targetTags": [names["network_tag"]],
            "allowed": [{"IPProtocol": "tcp", "ports": [str(port)]}],
            "description": f"Health checks and the load balancer's proxies to the fleet. {plan['marker']}"}, "patch"),
        res("healthCheck", f"{g}/healthChecks", {
            "name": names["health_check"], "type": "HTTPS", "checkIntervalSec": 10, "timeoutSec": 5,
            "healthyThreshold": 2, "unhealthyThreshold": 3, "description": plan["marker"],
            "httpsHealthCheck": {"port": port, "requestPath": "/readyz"}}, "patch"),
        res("instanceTemplate", f"{g}/instanceTemplates", {
            "name": template, "description": plan["marker"], "properties": properties}, "immutable"),
        res("instanceGroupManager", f"{r}/instanceGroupManagers", {
            "name": names["group"], "baseInstanceName": names["group"], "description": plan["marker"],
            "instanceTemplate": _url(project, f"global/instanceTemplates/{template}"),
            "versions": [{"name": "current", "instanceTemplate": _url(project, f"global/instanceTemplates/{template}")}],
            "targetSize": 0 if stopped else min_n,
            "distributionPolicy": {"zones": [{"zone": _url(project, f"zones/{z}")} for z in zones], "targetShape": "BALANCED"},
            "autoHealingPolicies": [{"healthCheck": hc_url, "initialDelaySec": int(fleet["boot_s"])}],
            "namedPorts": [{"name": "voice", "port": port}],
            # Regional groups: a fixed maxSurge/maxUnavailable is 0 or at least the number of zones.
            "updatePolicy": {"type": "PROACTIVE", "minimalAction": "REPLACE", "instanceRedistributionType": "PROACTIVE",
                             "maxSurge": {"fixed": n_zones}, "maxUnavailable": {"fixed": 0}, "replacementMethod": "SUBSTITUTE"},
        }, "patch", ignore=[] if stopped else ["targetSize"]),
        res("autoscaler", f"{r}/autoscalers", {
            "name": names["autoscaler"], "target": group_url, "description": plan["marker"],
            "autoscalingPolicy": {"minNumReplicas": min_n, "maxNumReplicas": max_n, "mode": "OFF" if stopped else "ON",
                                  "coolDownPeriodSec": int(fleet["boot_s"]), "customMetricUtilizations": metrics}},
            "patch", patch_query="autoscaler"),
        res("securityPolicy", f"{g}/securityPolicies", {
            "name": names["security_policy"], "type": "CLOUD_ARMOR", "description": plan["marker"],
            "rules": _armor_rules(list(fleet["client_cidrs"]))}, "rules"),
        res("backendService", f"{g}/backendServices", {
            "name": names["backend"], "description": plan["marker"], "loadBalancingScheme": "EXTERNAL_MANAGED",
            "protocol": "HTTPS", "portName": "voice", "healthChecks": [hc_url],
            # The backend timeout is how long a WebSocket may stay open, idle or not.
            "timeoutSec": int(fleet["conversation_max_s"]),
            "connectionDraining": {"drainingTimeoutSec": min(int(fleet["conversation_max_s"]), 3600)},
            # Envoy-based scheme: each new conversation goes to the instance with fewer open requests
            # (an open WebSocket is one); a full instance answers "server busy" itself at once.
            "localityLbPolicy": "LEAST_REQUEST",
            "backends": [{"group": ig_url, "balancingMode": "UTILIZATION", "maxUtilization": 0.8, "capacityScaler": 1.0}],
        }, "patch", actions={"securityPolicy": ["setSecurityPolicy", _url(project, f"global/securityPolicies/{names['security_policy']}")]}),
        res("urlMap", f"{g}/urlMaps", {
            "name": names["url_map"], "description": plan["marker"],
            "defaultService": _url(project, f"global/backendServices/{names['backend']}")}, "patch"),
        res("sslCertificate", f"{g}/sslCertificates", certificate, "immutable", write_only=["privateKey"]),
        res("targetHttpsProxy", f"{g}/targetHttpsProxies", {
            "name": names["proxy"], "description": plan["marker"], "urlMap": _url(project, f"global/urlMaps/{names['url_map']}"),
            "sslCertificates": [_url(project, f"global/sslCertificates/{names['certificate']}")]}, "patch"),
        res("globalAddress", f"{g}/addresses", {
            "name": names["address"], "description": plan["marker"], "ipVersion": "IPV4", "addressType": "EXTERNAL",
            "labels": labels}, "immutable"),
        res("forwardingRule", f"{g}/forwardingRules", {
            "name": names["forwarding_rule"], "description": plan["marker"], "loadBalancingScheme": "EXTERNAL_MANAGED",
            "IPProtocol": "TCP", "portRange": "443-443", "IPAddress": _url(project, f"global/addresses/{names['address']}"),
            "target": _url(project, f"global/targetHttpsProxies/{names['proxy']}"), "labels": labels}, "immutable",
            ignore=["IPAddress"]),  # read back as the address itself, not the link
    ]
    return {
        "names": dict(names, template=template),
        "service_account_email": sa_email,
        "labels": labels,
        "zones": zones,
        "capacity_per_instance": capacity,
        "min_instances": min_n,
        "max_instances": max_n,
        "sessions_at_max": capacity * max_n,
        "resources": resources,
    }


def fleet_cost(prices: dict[str, Any], fleet_prices: dict[str, Any], profile_name: str, spot: bool, disk_type: str,
               disk_size_gb: int, min_n: int, max_n: int, image_gb: float) -> dict[str, Any]:
    """USD per hour and per month (730 h) of the fleet at min and at max instances."""
    row = prices["profiles"][profile_name]
    kind = "spot" if spot else "on_demand"
    vm = float(row[f"machine_{kind}"]) + float(row[f"gpu_{kind}"])
    disk = float(prices["disk_per_gb_month"][disk_type]) * disk_size_gb / 730.0
    fixed_month = (float(fleet_prices["forwarding_rule_per_hour"]) * 730.0 + float(fleet_prices["armor_policy_per_month"])
                   + float(fleet_prices["armor_rule_per_month"]) * 2 + float(fleet_prices["image_per_gb_month"]) * image_gb)
    per_instance = vm + disk

    def at(n: int) -> dict[str, float]:
        hourly = n * per_instance + fixed_month / 730.0
        return {"instances": n, "per_hour": round(hourly, 4), "per_month_24h": round(hourly * 730.0, 2)}

    return {"currency": "USD", "pricing": "spot" if spot else "on-demand", "per_instance_per_hour": round(per_instance, 4),
            "fixed_per_month": round(fixed_month, 2), "at_min": at(min_n), "at_max": at(max_n),
            "price_table_date": str(fleet_prices["date"]),
            "not_included": "load balancer data processing (per GB), Cloud Armor requests (per million), egress, "
                            "Secret Manager access (a few per boot), Cloud Monitoring metric volume"}
