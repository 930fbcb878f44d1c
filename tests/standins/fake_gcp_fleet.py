"""Fleet resources of the Google Cloud stand-in (fake_gcp.py hands these routes here).

Like fake_gcp.py it is NOT Google Cloud: resources live in memory and operations are DONE at
once. Each collection refuses what the documented API refuses, as far as the fleet uses it;
the rule and its source are next to each check. References (Compute Engine v1):
https://cloud.google.com/compute/docs/reference/rest/v1/<collection>, Secret Manager v1:
https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from standins.fake_gcp import FakeGcp

WWW = "https://www.googleapis.com/compute/v1"
# RFC 1035 names, 1-63 characters: every Compute Engine resource name ("name" field of each collection).
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
GLOBAL = ("healthChecks", "instanceTemplates", "backendServices", "urlMaps", "targetHttpsProxies", "sslCertificates",
          "forwardingRules", "addresses", "securityPolicies", "images", "backendBuckets")
REGIONAL = ("instanceGroupManagers", "autoscalers", "instanceGroups")
# Collections without PATCH (instanceTemplates, sslCertificates, images: insert/delete only;
# global addresses and forwarding rules change only through setLabels/setTarget).
NO_PATCH = ("instanceTemplates", "sslCertificates", "images", "addresses", "forwardingRules")
# Collections whose update needs the current fingerprint (optimistic locking, else HTTP 412
# conditionNotMet): the "fingerprint" field of UrlMap, BackendService, SecurityPolicy, TargetHttpsProxy.
FINGERPRINTED = ("urlMaps", "backendServices", "securityPolicies", "targetHttpsProxies")
DEFAULT_RULE = 2147483647
SECRET_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,255}$")
# CustomErrorResponseRule.matchResponseCodes: "A number between 400 and 599 ... 5xx ... 4xx";
# values unique within the rule and across all errorResponseRules (urlMaps REST reference).
MATCH_CODE_RE = re.compile(r"^(4[0-9][0-9]|5[0-9][0-9]|4xx|5xx)$")
# BackendBucket.customResponseHeaders: "HEADER_NAME: HEADER_VALUE" strings
# (https://cloud.google.com/load-balancing/docs/https/custom-headers-global).
HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+:.*$")


def err(code: int, message: str, reason: str) -> tuple[int, Any]:
    status = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION"}.get(code, "FAILED_PRECONDITION")
    return code, {"error": {"code": code, "message": message, "status": status,
                            "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def rel(project: str, link: Any) -> str:
    value = str(link or "").split("/compute/v1/", 1)[-1]
    if value.startswith(("global/", "regions/", "zones/")):
        value = f"projects/{project}/{value}"
    return value


class FleetApis:
    """Compute fleet collections and Secret Manager, sharing the store and op helpers of FakeGcp."""

    def __init__(self, fake: FakeGcp) -> None:
        self.fake = fake
        self.secrets: dict[str, dict[str, Any]] = {}
        self.secret_versions: dict[str, list[dict[str, Any]]] = {}
        self.secret_policies: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (bucket, name) -> object resource and its data
        self.rollouts: list[tuple[str, str]] = []
        self.enforce_public_access_prevention = False  # an organisation policy a test may switch on  # (group, new template) of each rolling update

    # --- dispatch --------------------------------------------------------------------------
    def handle(self, method: str, host: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        if host == "secretmanager.googleapis.com":
            return self.secretmanager(method, path, query, body)
        if host == "storage.googleapis.com":
            return self.storage(method, path, query, body)
        if host not in ("compute.googleapis.com", "www.googleapis.com") or not path.startswith("/compute/v1/"):
            return None
        path = path[len("/compute/v1/"):]
        fam = re.match(r"^projects/[^/]+/global/images/family/([^/]+)$", path)
        if fam and method == "GET":  # images.getFromFamily
            image = self.family_image(fam.group(1))
            return (200, image) if image else err(404, f"The resource '{path}' was not found", "notFound")
        m = re.match(r"^(projects/[^/]+/(global|regions/[^/]+))/(\w+)(?:/([^/]+))?(?:/(\w+))?$", path)
        if not m:
            return None
        scope, where, collection, name, verb = m.groups()
        if (where == "global" and collection not in GLOBAL) or (where != "global" and collection not in REGIONAL):
            return None
        base = f"{scope}/{collection}"
        if name is None:
            if method == "GET":
                return 200, {"kind": f"compute#{collection[:-1]}List", "items": self.items(base)}
            if method == "POST":
                return self.insert(scope, collection, body or {}, query)
            if method == "PATCH" and collection == "autoscalers":  # regionAutoscalers.patch: ?autoscaler=NAME
                target = query.get("autoscaler", [""])[0]
                return self.patch(scope, collection, target, body or {})
            return err(405, f"{method} not allowed on {collection}", "methodNotAllowed")
        key = f"{base}/{name}"
        if key not in self.fake.compute:
            return err(404, f"The resource '{key}' was not found", "notFound")
        if verb:
            return self.verb(scope, collection, key, verb, query, body or {})
        if method == "GET":
            return 200, self.fake.compute[key]
        if method == "DELETE":
            return self.delete(scope, collection, key)
        if method == "PATCH":
            return self.patch(scope, collection, name, body or {})
        return err(405, f"{method} not allowed", "methodNotAllowed")

    def items(self, base: str) -> list[dict[str, Any]]:
        return [r for k, r in self.fake.compute.items() if k.startswith(f"{base}/") and k.count("/") == base.count("/") + 1]

    def exists(self, link: Any) -> bool:
        return rel(self.fake.project, link) in self.fake.compute

    def users_of(self, key: str) -> list[str]:
        """Resources whose body links to `key` (the API refuses deleting a resource in use)."""
        # Quoted: a whole link, not a prefix of a longer name; in any of the forms the API accepts.
        short = key.split("/", 2)[-1]
        forms = [json.dumps(f"{WWW}/{key}"), json.dumps(key), json.dumps(short)]
        return [k for k, r in self.fake.compute.items()
                if k != key and "/operations/" not in k and any(f in json.dumps(r) for f in forms)]

    # --- insert ----------------------------------------------------------------------------
    def insert(self, scope: str, collection: str, body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            return err(400, f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                            "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", "invalid")
        key = f"{scope}/{collection}/{name}"
        if key in self.fake.compute:
            return err(409, f"The resource '{key}' already exists", "alreadyExists")
        problem = getattr(self, f"check_{collection}", lambda *_: None)(scope, body, query)
        if problem:
            return err(400, problem, "invalid")
        res = json.loads(json.dumps(body))
        res.update(kind=f"compute#{collection[:-1]}", id=str(next(self.fake.ids)), selfLink=f"{WWW}/{key}",
                   creationTimestamp="2026-12-02T07:00:00.000-08:00")
        self.complete(scope, collection, key, res, query)
        self.fake.compute[key] = res
        return 200, self.fake._op(key, "insert", scope)

    def complete(self, scope: str, collection: str, key: str, res: dict[str, Any], query: dict[str, list[str]]) -> None:
        """Fields the API fills in (output-only) in their documented form."""
        project = self.fake.project
        if collection in FINGERPRINTED:
            res["fingerprint"] = f"fp{next(self.fake.ids)}="
        if collection == "sslCertificates":
            res.pop("privateKey", None)  # write-only: never returned
            if res.get("type") == "MANAGED":
                res["managed"]["status"] = "PROVISIONING"
                res["managed"]["domainStatus"] = {d: "PROVISIONING" for d in res["managed"]["domains"]}
        if collection == "addresses":
            res.update(address="198.51.100.77", status="RESERVED")
            res.pop("region", None)
        if collection == "forwardingRules":
            res["IPAddress"] = "198.51.100.77"
        if collection == "securityPolicies":
            res.setdefault("rules", [{"priority": DEFAULT_RULE, "action": "allow", "description": "default rule",
                                      "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}}])
        if collection == "backendServices":
            res.pop("securityPolicy", None)  # output only: set with setSecurityPolicy
            for b in res.get("backends") or []:
                b["group"] = f"{WWW}/{rel(project, b['group'])}"
        if collection == "images":
            res.update(status="READY", sourceDisk=f"{WWW}/{rel(project, res['sourceDisk'])}", diskSizeGb="100")
        if collection == "instanceGroupManagers":
            region = scope.split("/")[-1]
            res.update(region=f"{WWW}/{scope}", status={"isStable": True},
                       instanceGroup=f"{WWW}/{scope}/instanceGroups/{res['name']}",
                       fingerprint=f"fp{next(self.fake.ids)}=")
            ig_key = f"{scope}/instanceGroups/{res['name']}"
            self.fake.compute[ig_key] = {"kind": "compute#instanceGroup", "name": res["name"], "selfLink": f"{WWW}/{ig_key}",
                                         "region": f"{WWW}/projects/{project}/regions/{region}", "size": res["targetSize"]}
        if collection == "autoscalers":
            res.update(region=f"{WWW}/{scope}", status="ACTIVE", target=f"{WWW}/{rel(project, res['target'])}")
        if collection == "instanceTemplates":
            res["selfLink"] = f"{WWW}/{key}"

    # --- the documented refusals, per collection ---------------------------------------------
    def check_healthChecks(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        kinds = {"TCP": "tcpHealthCheck", "SSL": "sslHealthCheck", "HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck",
                 "HTTP2": "http2HealthCheck", "GRPC": "grpcHealthCheck"}
        if b.get("type") not in kinds:
            return f"Invalid value for field 'resource.type': '{b.get('type')}'."
        if kinds[b["type"]] not in b:
            return f"Health check of type {b['type']} needs '{kinds[b['type']]}'."
        # "It is invalid for timeoutSec to have greater value than checkIntervalSec."
        if int(b.get("timeoutSec", 5)) > int(b.get("checkIntervalSec", 5)):
            return "timeoutSec must be less than or equal to checkIntervalSec."
        return None

    def check_instanceTemplates(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        p = b.get("properties") or {}
        if not p.get("machineType"):
            return "Required field 'resource.properties.machineType' not specified."
        if "/" in str(p["machineType"]):
            return "Invalid value for field 'resource.properties.machineType': a template takes a machine type name, not a URL."
        # GPU VMs cannot live-migrate: https://cloud.google.com/compute/docs/gpus/create-vm-with-gpus
        gpu = p.get("guestAccelerators") or str(p["machineType"]).startswith(("g2-", "a2-", "a3-"))
        if gpu and (p.get("scheduling") or {}).get("onHostMaintenance") != "TERMINATE":
            return "Instances with guest accelerators do not support live migration: set scheduling.onHostMaintenance to TERMINATE."
        for disk in p.get("disks") or []:
            src = (disk.get("initializeParams") or {}).get("sourceImage", "")
            m = re.match(rf"^projects/{self.fake.project}/global/images/(family/)?([^/]+)$", rel(self.fake.project, src))
            if m and m.group(1) and not self.family_image(m.group(2)):
                return f"The resource '{src}' was not found: no image in family {m.group(2)} (make image first)."
            if m and not m.group(1) and not self.exists(src):
                return f"The resource '{src}' was not found"
        return None

    def check_instanceGroupManagers(self, scope: str, b: dict[str, Any], _q: Any) -> str | None:
        region = scope.split("/")[-1]
        if "targetSize" not in b:
            return "Required field 'resource.targetSize' not specified."
        for link in [b.get("instanceTemplate")] + [v.get("instanceTemplate") for v in b.get("versions") or []]:
            if link and not self.exists(link):
                return f"Invalid value for field 'resource.instanceTemplate': '{link}'. The resource was not found."
        zones = [rel(self.fake.project, z["zone"]).rsplit("/", 1)[-1] for z in (b.get("distributionPolicy") or {}).get("zones") or []]
        if any(not z.startswith(f"{region}-") for z in zones):
            return f"distributionPolicy.zones must be zones of {region}, got {zones}."
        n = len(zones) or 3
        # Regional MIGs: "maxSurge.fixed must be 0 or at least the number of zones" (same for maxUnavailable).
        for field in ("maxSurge", "maxUnavailable"):
            fixed = ((b.get("updatePolicy") or {}).get(field) or {}).get("fixed")
            if fixed is not None and 0 < int(fixed) < n:
                return f"Fixed updatePolicy.{field} ({fixed}) must be 0 or at least the number of zones ({n}) of a regional group."
        for policy in b.get("autoHealingPolicies") or []:
            if not self.exists(policy.get("healthCheck")):
                return f"Autohealing health check {policy.get('healthCheck')} was not found."
        return None

    def check_autoscalers(self, scope: str, b: dict[str, Any], _q: Any) -> str | None:
        target = rel(self.fake.project, b.get("target"))
        if not target.startswith(f"{scope}/instanceGroupManagers/") or target not in self.fake.compute:
            return f"Autoscaler target {b.get('target')} is not a managed instance group of this region."
        return self.check_policy(b.get("autoscalingPolicy") or {})

    def check_policy(self, p: dict[str, Any]) -> str | None:
        if "maxNumReplicas" not in p:
            return "Required field 'autoscalingPolicy.maxNumReplicas' not specified."
        if p.get("mode", "ON") not in ("ON", "OFF", "ONLY_SCALE_OUT", "ONLY_UP"):
            return f"Invalid autoscalingPolicy.mode {p.get('mode')!r}."
        if int(p.get("minNumReplicas", 0)) > int(p["maxNumReplicas"]):
            return "autoscalingPolicy.minNumReplicas must not exceed maxNumReplicas."
        per_group = False
        for m in p.get("customMetricUtilizations") or []:
            if not m.get("metric"):
                return "customMetricUtilizations[].metric is required."
            if ("utilizationTarget" in m) == ("singleInstanceAssignment" in m):
                return "Set exactly one of utilizationTarget and singleInstanceAssignment per custom metric."
            if m.get("utilizationTargetType") not in ("GAUGE", "DELTA_PER_SECOND", "DELTA_PER_MINUTE"):
                return f"Invalid utilizationTargetType {m.get('utilizationTargetType')!r}."
            per_group = per_group or "singleInstanceAssignment" in m
        # Scaling to and from zero needs a per-group metric (singleInstanceAssignment): with no VM
        # a per-instance metric has no data (compute/docs/autoscaler/scaling-cloud-monitoring-metrics).
        if int(p.get("minNumReplicas", 0)) == 0 and not per_group:
            return "minNumReplicas 0 needs a per-group metric (singleInstanceAssignment) to scale out from zero."
        return None

    def check_backendServices(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        scheme = b.get("loadBalancingScheme", "EXTERNAL")
        protocol = b.get("protocol", "HTTP")
        if b.get("localityLbPolicy") and scheme not in ("INTERNAL_SELF_MANAGED", "INTERNAL_MANAGED", "EXTERNAL_MANAGED"):
            return "localityLbPolicy is only supported with INTERNAL_SELF_MANAGED, INTERNAL_MANAGED or EXTERNAL_MANAGED."
        # BackendServiceFailoverPolicy: "For load balancers that have configurable failover: internal
        # passthrough Network Load Balancers and external passthrough Network Load Balancers."
        if b.get("failoverPolicy") and (scheme not in ("INTERNAL", "EXTERNAL") or protocol in ("HTTP", "HTTPS", "HTTP2")):
            return "failoverPolicy is only supported by passthrough Network Load Balancers (schemes INTERNAL, EXTERNAL with TCP/UDP)."
        timeout = int(b.get("timeoutSec", 30))
        if not 1 <= timeout <= 2147483647:
            return "timeoutSec must be at least 1."
        for link in b.get("healthChecks") or []:
            if not self.exists(link):
                return f"Health check {link} was not found."
        for backend in b.get("backends") or []:
            mode = backend.get("balancingMode", "UTILIZATION")
            conn = [k for k in ("maxConnections", "maxConnectionsPerInstance", "maxConnectionsPerEndpoint") if k in backend]
            rate = [k for k in ("maxRate", "maxRatePerInstance", "maxRatePerEndpoint") if k in backend]
            # Backend.balancingMode: CONNECTION only for SSL, TCP, UDP; RATE needs exactly one max rate.
            if mode == "CONNECTION" and protocol in ("HTTP", "HTTPS", "HTTP2"):
                return f"Balancing mode CONNECTION is not supported for protocol {protocol}: use RATE or UTILIZATION."
            if mode == "RATE" and len(rate) != 1:
                return "Balancing mode RATE needs exactly one of maxRate, maxRatePerInstance, maxRatePerEndpoint."
            if mode != "CONNECTION" and conn:
                return f"{conn[0]} is only valid with balancing mode CONNECTION."
            group = rel(self.fake.project, backend.get("group"))
            if group not in self.fake.compute:
                return f"Backend group {backend.get('group')} was not found."
            if "/regions/" in group and "maxRate" in backend:
                return "maxRate cannot be used with a regional managed instance group: use maxRatePerInstance."
        if b.get("backends") and protocol in ("HTTP", "HTTPS", "HTTP2") and not b.get("portName"):
            return "portName is required for instance group backends."
        return None

    def check_urlMaps(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        if b.get("defaultService") and not self.exists(b["defaultService"]):
            return f"defaultService {b['defaultService']} was not found."
        policy = b.get("defaultCustomErrorResponsePolicy")
        if not policy:
            return None
        # "defaultCustomErrorResponsePolicy is supported only for global external Application Load
        # Balancers" (scheme EXTERNAL_MANAGED; urlMaps REST reference).
        service = self.fake.compute.get(rel(self.fake.project, b.get("defaultService")), {})
        if service.get("loadBalancingScheme", "EXTERNAL") != "EXTERNAL_MANAGED":
            return "defaultCustomErrorResponsePolicy is supported only for global external Application Load Balancers."
        rules = policy.get("errorResponseRules") or []
        # "If UrlMap.defaultCustomErrorResponsePolicy contains one or more errorResponseRules[], it must specify errorService."
        if rules and not policy.get("errorService"):
            return "defaultCustomErrorResponsePolicy with errorResponseRules must specify errorService."
        if policy.get("errorService"):
            target = rel(self.fake.project, policy["errorService"])
            # errorService: "The full or partial URL to the BackendBucket resource that contains the custom error content."
            if "/global/backendBuckets/" not in target or target not in self.fake.compute:
                return f"errorService {policy['errorService']} is not an existing backend bucket."
        seen: list[str] = []
        for rule in rules:
            for code in rule.get("matchResponseCodes") or []:
                if not MATCH_CODE_RE.match(str(code)):
                    return f"Invalid matchResponseCodes value {code!r}: a code from 400 to 599, 4xx or 5xx."
                if code in seen:
                    return f"matchResponseCodes value {code} is not unique across errorResponseRules."
                seen.append(code)
            # path: "The full path to a file within backendBucket. For example: /errors/defaultError.html"
            if not str(rule.get("path", "")).startswith("/"):
                return f"errorResponseRules[].path {rule.get('path')!r} must be a full path starting with /."
        return None

    def check_backendBuckets(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        # bucketName: "Cloud Storage bucket name." The fake refuses a bucket that does not exist
        # (an assumption of this stand-in: the console and gcloud only offer existing buckets).
        if not b.get("bucketName"):
            return "Required field 'resource.bucketName' not specified."
        if b["bucketName"] not in self.fake.buckets:
            return f"Cloud Storage bucket {b['bucketName']} was not found."
        bad = [h for h in b.get("customResponseHeaders") or [] if not HEADER_RE.match(str(h))]
        return f"Invalid customResponseHeaders value {bad[0]!r}: 'NAME: value'." if bad else None

    def check_sslCertificates(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        kind = b.get("type", "SELF_MANAGED")
        if kind == "SELF_MANAGED":
            if "-----BEGIN CERTIFICATE-----" not in str(b.get("certificate") or ""):
                return "A self-managed certificate needs 'certificate' in PEM format."
            if not re.search(r"-----BEGIN (RSA |EC )?PRIVATE KEY-----", str(b.get("privateKey") or "")):
                return "A self-managed certificate needs 'privateKey' in PEM format."
        elif kind == "MANAGED":
            domains = (b.get("managed") or {}).get("domains") or []
            if not 1 <= len(domains) <= 100:
                return "A managed certificate needs 1 to 100 domains (managed.domains)."
            if any("*" in d for d in domains):
                return "Google-managed certificates do not support wildcard domains."
        else:
            return f"Invalid certificate type {kind!r}."
        return None

    def check_targetHttpsProxies(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        if not self.exists(b.get("urlMap")):
            return f"urlMap {b.get('urlMap')} was not found."
        certs = b.get("sslCertificates") or []
        if not 1 <= len(certs) <= 15:
            return "A target HTTPS proxy needs 1 to 15 sslCertificates."
        missing = [c for c in certs if not self.exists(c)]
        return f"SSL certificate {missing[0]} was not found." if missing else None

    def check_addresses(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        if b.get("addressType", "EXTERNAL") not in ("EXTERNAL", "INTERNAL"):
            return "Invalid addressType."
        if b.get("ipVersion", "IPV4") not in ("IPV4", "IPV6"):
            return "Invalid ipVersion."
        return None

    def check_forwardingRules(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        target = rel(self.fake.project, b.get("target"))
        if "/targetHttpsProxies/" not in target or target not in self.fake.compute:
            return f"Forwarding rule target {b.get('target')} is not an existing target HTTPS proxy."
        ip = b.get("IPAddress")
        if ip and "/" in str(ip) and not self.exists(ip):
            return f"IPAddress {ip} was not found."
        # An HTTPS proxy takes the ports 80, 8080 or 443 (forwarding-rule-concepts#port_specifications).
        if str(b.get("portRange", "")).split("-")[0] not in ("80", "8080", "443"):
            return "A target HTTPS proxy's forwarding rule takes port 80, 8080 or 443."
        url_map = self.fake.compute[target].get("urlMap")
        service = self.fake.compute.get(rel(self.fake.project, self.fake.compute.get(rel(self.fake.project, url_map), {}).get("defaultService")))
        if service and service.get("loadBalancingScheme", "EXTERNAL") != b.get("loadBalancingScheme", "EXTERNAL"):
            return "The forwarding rule's loadBalancingScheme must match its backend service's."
        return None

    def check_securityPolicies(self, _scope: str, b: dict[str, Any], _q: Any) -> str | None:
        rules = b.get("rules")
        if rules is None:
            return None
        if DEFAULT_RULE not in [int(r.get("priority", -1)) for r in rules]:
            return "A security policy must have a default rule at priority 2147483647."
        return next(filter(None, (self.check_rule(r) for r in rules)), None)

    @staticmethod
    def check_rule(rule: dict[str, Any]) -> str | None:
        ranges = ((rule.get("match") or {}).get("config") or {}).get("srcIpRanges") or []
        # Basic match conditions take at most 10 IP ranges (Cloud Armor quotas and limits).
        if len(ranges) > 10:
            return f"Rule {rule.get('priority')}: at most 10 srcIpRanges per rule."
        if not re.match(r"^(allow|deny\((403|404|502)\)|throttle|rate_based_ban|redirect)$", str(rule.get("action"))):
            return f"Rule {rule.get('priority')}: invalid action {rule.get('action')!r}."
        return None

    def check_images(self, _scope: str, b: dict[str, Any], q: dict[str, list[str]]) -> str | None:
        disk = rel(self.fake.project, b.get("sourceDisk"))
        m = re.match(rf"^projects/{self.fake.project}/zones/([^/]+)/disks/([^/]+)$", disk)
        # The fake's boot disks carry their VM's name (initializeParams.diskName's default).
        vm = self.fake.compute.get(f"projects/{self.fake.project}/zones/{m.group(1)}/instances/{m.group(2)}") if m else None
        if vm is None:
            return f"The resource '{b.get('sourceDisk')}' was not found"
        # images.insert: a disk attached to a running VM needs forceCreate=true (we stop the VM instead).
        if vm.get("status") != "TERMINATED" and q.get("forceCreate", ["false"])[0] != "true":
            return f"The disk resource '{disk}' is already being used by '{vm['name']}' (stop the VM or set forceCreate)."
        if b.get("family") and not NAME_RE.match(b["family"]):
            return f"Invalid image family {b['family']!r}."
        return None

    def family_image(self, family: str) -> dict[str, Any] | None:
        """images.getFromFamily: the newest non-deprecated image of the family."""
        found = [r for k, r in self.fake.compute.items() if "/global/images/" in k and r.get("family") == family
                 and not r.get("deprecated")]
        return max(found, key=lambda r: int(r["id"])) if found else None

    # --- update, verbs and delete ------------------------------------------------------------
    def patch(self, scope: str, collection: str, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = f"{scope}/{collection}/{name}"
        if collection in NO_PATCH:
            return err(405, f"{collection} cannot be patched (immutable).", "methodNotAllowed")
        if key not in self.fake.compute:
            return err(404, f"The resource '{key}' was not found", "notFound")
        current = self.fake.compute[key]
        if collection in FINGERPRINTED and body.get("fingerprint") != current.get("fingerprint"):
            return err(412, "Supplied fingerprint does not match current resource fingerprint.", "conditionNotMet")
        if collection == "securityPolicies" and "rules" in body:
            return err(400, "PATCH cannot change a security policy's rules: use addRule, patchRule or removeRule.", "invalid")
        merged = {**current, **json.loads(json.dumps(body))}
        check = getattr(self, f"check_{collection}", None)
        problem = check(scope, merged, {}) if check else None
        if collection == "autoscalers":
            problem = self.check_policy(merged.get("autoscalingPolicy") or {})
        if problem:
            return err(400, problem, "invalid")
        if collection == "instanceGroupManagers":
            old = [v.get("instanceTemplate") for v in current.get("versions") or []]
            new = [v.get("instanceTemplate") for v in merged.get("versions") or []]
            if old != new and (merged.get("updatePolicy") or {}).get("type") == "PROACTIVE":
                self.rollouts.append((name, rel(self.fake.project, new[0]).rsplit("/", 1)[-1]))
        if collection in FINGERPRINTED or collection == "instanceGroupManagers":
            merged["fingerprint"] = f"fp{next(self.fake.ids)}="
        if collection == "backendServices":
            for b in merged.get("backends") or []:
                b["group"] = f"{WWW}/{rel(self.fake.project, b['group'])}"
        self.fake.compute[key] = merged
        return 200, self.fake._op(key, "patch", scope)

    def verb(self, scope: str, collection: str, key: str, verb: str, q: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any]:
        res = self.fake.compute[key]
        if collection == "backendServices" and verb == "setSecurityPolicy":
            policy = rel(self.fake.project, body.get("securityPolicy"))
            if policy not in self.fake.compute:
                return err(400, f"Security policy {body.get('securityPolicy')} was not found.", "invalid")
            res["securityPolicy"] = f"{WWW}/{policy}"
            return 200, self.fake._op(key, verb, scope)
        if collection == "securityPolicies" and verb in ("addRule", "patchRule", "removeRule"):
            rules = res.setdefault("rules", [])
            prio = int(q.get("priority", [body.get("priority", -1)])[0])
            existing = [r for r in rules if int(r["priority"]) == prio]
            if verb == "addRule":
                if existing:
                    return err(400, f"A rule with priority {prio} already exists.", "invalid")
                problem = self.check_rule(body)
                if problem:
                    return err(400, problem, "invalid")
                rules.append(dict(body))
            elif not existing:
                return err(400, f"No rule with priority {prio}.", "invalid")
            elif verb == "removeRule":
                if prio == DEFAULT_RULE:
                    return err(400, "The default rule cannot be removed.", "invalid")
                rules.remove(existing[0])
            else:
                problem = self.check_rule({**existing[0], **body})
                if problem:
                    return err(400, problem, "invalid")
                existing[0].update(body)
            res["fingerprint"] = f"fp{next(self.fake.ids)}="
            return 200, self.fake._op(key, verb, scope)
        if verb == "setLabels" and collection in ("images", "addresses", "forwardingRules"):
            res["labels"] = body.get("labels", {})
            return 200, self.fake._op(key, verb, scope)
        return err(400, f"fake: unknown verb {verb} on {collection}", "invalid")

    def delete(self, scope: str, collection: str, key: str) -> tuple[int, Any]:
        users = [u for u in self.users_of(key) if not (collection == "instanceGroupManagers" and "/autoscalers/" in u)]
        if collection == "instanceGroupManagers":
            ig = key.replace("/instanceGroupManagers/", "/instanceGroups/")
            users += [u for u in self.users_of(ig) if not u.endswith(key)]
        if users:
            return err(400, f"The resource '{key}' is already being used by '{users[0]}'", "resourceInUseByAnotherResource")
        del self.fake.compute[key]
        if collection == "instanceGroupManagers":
            self.fake.compute.pop(key.replace("/instanceGroupManagers/", "/instanceGroups/"), None)
            # Deleting a group deletes its autoscaler too (regionInstanceGroupManagers.delete).
            for k in [k for k, r in self.fake.compute.items() if "/autoscalers/" in k and rel(self.fake.project, r.get("target")) == key]:
                del self.fake.compute[k]
        return 200, self.fake._op(key, "delete", scope)

    # --- Cloud Storage objects (the status page); buckets themselves stay in fake_gcp.py ----------
    def storage(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        objects = self.objects
        up = re.match(r"^/upload/storage/v1/b/([^/]+)/o$", path)
        if up and method == "POST":
            bucket = up.group(1)
            if bucket not in self.fake.buckets:
                return _gcs(404, "The specified bucket does not exist.", "notFound")
            # objects.insert (media upload): uploadType=media and the object name in ?name=.
            if query.get("uploadType", [""])[0] != "media" or not query.get("name", [""])[0]:
                return _gcs(400, "Upload requests must include an uploadType URL parameter and a name.", "invalid")
            name = query["name"][0]
            data = (body if isinstance(body, str) else json.dumps(body) if body is not None else "").encode()
            res = {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)),
                   "contentType": self.fake.headers.get("content-type", "application/octet-stream"),
                   "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324 - the API's field
                   "generation": str(next(self.fake.ids))}
            objects[(bucket, name)] = dict(res, data=data)
            return 200, res
        iam = re.match(r"^/storage/v1/b/([^/]+)/iam$", path)
        if iam and method == "PUT" and iam.group(1) in self.fake.buckets:
            public = any(m in ("allUsers", "allAuthenticatedUsers") for b in (body or {}).get("bindings") or [] for m in b.get("members") or [])
            prevention = ((self.fake.buckets[iam.group(1)].get("iamConfiguration") or {}).get("publicAccessPrevention"))
            # Public access prevention enforced (on the bucket or by the organisation policy
            # storage.publicAccessPrevention): granting allUsers fails with 412
            # (https://cloud.google.com/storage/docs/public-access-prevention).
            if public and (prevention == "enforced" or self.enforce_public_access_prevention):
                return _gcs(412, "Request violates constraint 'constraints/storage.publicAccessPrevention'.", "conditionNotMet")
            return None
        m = re.match(r"^/storage/v1/b/([^/]+)(?:/o(?:/([^/]+))?)?$", path)
        if not m or m.group(1) not in self.fake.buckets:
            return None
        bucket, name = m.group(1), m.group(2)
        if path.endswith("/o") and method == "GET":
            return 200, {"kind": "storage#objects", "items": [{k: v for k, v in o.items() if k != "data"}
                                                               for (b, _), o in sorted(objects.items()) if b == bucket]}
        if name is not None:
            key = (bucket, unquote(name))
            if key not in objects:
                return _gcs(404, "No such object.", "notFound")
            if method == "DELETE":
                del objects[key]
                return 204, None
            return 200, {k: v for k, v in objects[key].items() if k != "data"}
        # buckets.delete: "Deletes an empty bucket" (409 conflict while objects remain).
        if method == "DELETE" and any(b == bucket for b, _ in objects):
            return _gcs(409, "The bucket you tried to delete is not empty.", "conflict")
        return None

    # --- Secret Manager v1 ---------------------------------------------------------------------
    def secretmanager(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        m = re.match(r"^/v1/projects/([^/]+)/secrets(?:/([^/:]+))?(?:/versions/([^/:]+))?(?::(\w+))?$", path)
        if not m:
            return 404, {"error": {"code": 404, "message": f"fake secretmanager: no route for {path}", "status": "NOT_FOUND"}}
        project, secret, version, verb = m.groups()
        if secret is None:
            if method != "POST":
                return 200, {"secrets": list(self.secrets.values())}
            sid = query.get("secretId", [""])[0]
            if not SECRET_ID_RE.match(sid):
                return _sm(400, "INVALID_ARGUMENT", "secretId must be 1-255 letters, digits, - or _.")
            name = f"projects/{project}/secrets/{sid}"
            if name in self.secrets:
                return _sm(409, "ALREADY_EXISTS", f"Secret [{name}] already exists.")
            if not (body or {}).get("replication"):
                return _sm(400, "INVALID_ARGUMENT", "Secret.replication is required.")
            self.secrets[name] = {"name": name, "replication": body["replication"], "labels": body.get("labels", {}),
                                  "createTime": "2026-12-02T07:00:00Z", "etag": '"1"'}
            self.secret_versions[name] = []
            self.secret_policies[name] = {"version": 1, "etag": "BwAAAAA="}
            return 200, self.secrets[name]
        name = f"projects/{project}/secrets/{secret}"
        if name not in self.secrets:
            return _sm(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")
        versions = self.secret_versions[name]
        if version is not None:
            enabled = [v for v in versions if v["state"] == "ENABLED"]
            if version == "latest":
                if not enabled:
                    return _sm(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")
                chosen = enabled[-1]
            else:
                chosen = next((v for v in versions if v["name"].endswith(f"/versions/{version}")), None)
                if chosen is None:
                    return _sm(404, "NOT_FOUND", f"Secret Version [{name}/versions/{version}] not found.")
            if verb == "access":
                return 200, {"name": chosen["name"], "payload": {"data": chosen["data"]}}
            return 200, {k: v for k, v in chosen.items() if k != "data"}
        if verb == "addVersion":
            data = ((body or {}).get("payload") or {}).get("data")
            try:
                raw = base64.b64decode(data or "", validate=True)
            except (binascii.Error, ValueError):
                return _sm(400, "INVALID_ARGUMENT", "payload.data must be base64.")
            if not data or len(raw) > 65536:  # SecretPayload.data: at most 64 KiB
                return _sm(400, "INVALID_ARGUMENT", "payload.data is required and at most 64 KiB.")
            entry = {"name": f"{name}/versions/{len(versions) + 1}", "state": "ENABLED", "data": data}
            versions.append(entry)
            return 200, {k: v for k, v in entry.items() if k != "data"}
        if verb == "getIamPolicy":
            return 200, self.secret_policies[name]
        if verb == "setIamPolicy":
            policy = (body or {}).get("policy") or {}
            current = self.secret_policies[name]
            if policy.get("etag") and policy["etag"] != current["etag"]:
                return _sm(409, "ABORTED", "There were concurrent policy changes.")
            for b in policy.get("bindings") or []:
                for member in b.get("members") or []:
                    sa = member.removeprefix("serviceAccount:")
                    if member.startswith("serviceAccount:") and sa not in self.fake.service_accounts:
                        return _sm(400, "INVALID_ARGUMENT", f"Service account {sa} does not exist.")
            self.secret_policies[name] = {"version": 1, "etag": f"BwA{next(self.fake.ids)}=", "bindings": policy.get("bindings", [])}
            return 200, self.secret_policies[name]
        if method == "DELETE":
            del self.secrets[name]
            del self.secret_versions[name]
            del self.secret_policies[name]
            return 200, {}
        if method == "PATCH":
            if query.get("updateMask", [""])[0] != "labels":
                return _sm(400, "INVALID_ARGUMENT", "updateMask is required.")
            self.secrets[name]["labels"] = (body or {}).get("labels", {})
        return 200, self.secrets[name]


def _gcs(code: int, message: str, reason: str) -> tuple[int, Any]:
    """Cloud Storage JSON API error body (https://cloud.google.com/storage/docs/json_api/v1/status-codes)."""
    return code, {"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def _sm(code: int, status: str, message: str) -> tuple[int, Any]:
    return code, {"error": {"code": code, "message": message, "status": status}}
