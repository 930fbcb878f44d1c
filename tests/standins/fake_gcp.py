"""A small stateful stand-in for the Google Cloud REST APIs the playbooks call.

It is NOT Google Cloud: it keeps resources in memory, answers in the documented JSON shapes
(kinds, selfLinks as full www.googleapis.com URLs, operations already DONE, IAM etags), and
records every call. The playbooks reach it through `sitecustomize/` (put on PYTHONPATH), which
rewrites requests to *.googleapis.com towards this server inside every Python process that
Ansible starts: google.cloud's modules and the project's own modules keep their real code path
(google-auth, requests, the JSON they build) up to the HTTP boundary.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from standins.fake_gcp_fleet import FleetApis

WWW = "https://www.googleapis.com/compute/v1"


class FakeGcp:
    def __init__(self, project: str, default_network: bool = True) -> None:
        self.project = project
        self.compute: dict[str, dict[str, Any]] = {}  # "projects/P/zones/Z/instances/N" -> resource
        self.services: dict[str, str] = {}
        self.service_accounts: dict[str, dict[str, Any]] = {}
        self.project_policy: dict[str, Any] = {"version": 1, "etag": "BwAAAA1", "bindings": [
            {"role": "roles/owner", "members": ["user:owner@example.com"]}]}
        self.buckets: dict[str, dict[str, Any]] = {}
        self.bucket_policies: dict[str, dict[str, Any]] = {}
        self.oslogin_keys: dict[str, list[str]] = {}
        # Quotas as Compute lists them (limit, usage); a new project has no GPU quota.
        self.regional_quotas: dict[str, tuple[float, float]] = {"CPUS": (24.0, 0.0), "NVIDIA_T4_GPUS": (0.0, 0.0)}
        self.global_quotas: dict[str, tuple[float, float]] = {"GPUS_ALL_REGIONS": (0.0, 0.0)}
        self.zone_gpus = {"us-central1-a": {"nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100"}}
        # Cloud Billing: the project's billing account, its currency, the caller's permissions on it,
        # and the budgets on it (Budget API v1).
        self.project_number = "123456789012"
        self.billing_account = "012345-6789AB-CDEF01"
        self.billing_currency = "USD"
        self.billing_permissions = {"billing.budgets.create", "billing.budgets.delete", "billing.budgets.get",
                                    "billing.budgets.list", "billing.budgets.update"}
        self.budgets: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []  # (method, host+path, JSON body) of every call
        self.ids = itertools.count(1000)
        self.lock = threading.Lock()
        self.headers: dict[str, str] = {}  # of the request being handled (lower-case names)
        self.user_tokens: set[str] = set()  # access tokens issued for user credentials (refresh_token grant)
        # True: Compute answers only once compute.googleapis.com is enabled, as in a new project.
        self.require_enabled_apis = False
        if default_network:
            self.add_default_network()
        self.fleet = FleetApis(self)  # fleet collections and Secret Manager (fake_gcp_fleet.py)

    # --- helpers -------------------------------------------------------------------------
    def writes(self) -> list[tuple[str, str]]:
        reads = (":getIamPolicy", "/token")
        return [c for c in self.calls if c[0] != "GET" and not c[1].endswith(reads)]

    def _op(self, target: str, kind: str, scope: str) -> dict[str, Any]:
        name = f"operation-{next(self.ids)}"
        op = {"kind": "compute#operation", "name": name, "operationType": kind, "status": "DONE", "progress": 100,
              "targetLink": f"{WWW}/{target}", "selfLink": f"{WWW}/{scope}/operations/{name}"}
        self.compute[f"{scope}/operations/{name}"] = op
        return op

    @staticmethod
    def _full(project: str, value: str) -> str:
        value = value.split("/compute/v1/", 1)[-1]
        if not value.startswith("projects/"):
            value = f"projects/{project}/{value}"
        return f"{WWW}/{value}"

    # --- dispatch ------------------------------------------------------------------------
    def handle(self, method: str, host: str, path: str, query: dict[str, list[str]], body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
        with self.lock:
            self.headers = {k.lower(): v for k, v in (headers or {}).items()}
            self.calls.append((method, f"{host}{path}"))
            self.bodies.append((method, f"{host}{path}", json.loads(json.dumps(body)) if body is not None else None))
            if host == "oauth2.googleapis.com" and path == "/token":
                return self.token(body)
            refused = self.needs_quota_project(host)
            if refused:
                return refused
            fleet = self.fleet.handle(method, host, path, query, body)
            if fleet is not None:
                return fleet
            if host in ("compute.googleapis.com", "www.googleapis.com") and path.startswith("/compute/v1/"):
                if self.require_enabled_apis and self.services.get("compute.googleapis.com") != "ENABLED":
                    return 403, api_disabled("compute.googleapis.com", "Compute Engine API")
                return self.handle_compute(method, path[len("/compute/v1/"):], query, body)
            if host == "serviceusage.googleapis.com":
                return self.handle_serviceusage(method, path)
            if host == "iam.googleapis.com":
                return self.handle_iam(method, path, body)
            if host == "cloudresourcemanager.googleapis.com":
                return self.handle_crm(path, body)
            if host == "storage.googleapis.com":
                return self.handle_storage(method, path, query, body)
            if host == "cloudbilling.googleapis.com":
                return self.handle_cloudbilling(method, path, body)
            if host == "billingbudgets.googleapis.com":
                return self.handle_budgets(method, path, query, body)
            if host == "oslogin.googleapis.com":
                return self.handle_oslogin(method, unquote(path), body)
            return 404, _error(404, f"fake: no route for {method} {host}{path}")

    def handle_compute(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        read_only = self.compute_info(path) if method == "GET" else None
        if read_only is not None:
            return read_only
        m = re.match(r"^projects/([^/]+)/aggregated/instances$", path)
        if m and method == "GET":
            wanted = dict(re.findall(r'labels\.([\w-]+) = "([^"]*)"', query.get("filter", [""])[0]))
            items: dict[str, Any] = {}
            for key, res in self.compute.items():
                if "/instances/" in key and all(res.get("labels", {}).get(k) == v for k, v in wanted.items()):
                    zone = key.split("/")[3]
                    items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(res)
            return 200, {"kind": "compute#instanceAggregatedList", "items": items}
        m = re.match(r"^(projects/[^/]+/(?:global|regions/[^/]+|zones/[^/]+))/(instances|firewalls|addresses|networks|subnetworks|disks)$", path)
        if m:
            scope, collection = m.groups()
            if method == "GET":
                items = [r for k, r in self.compute.items() if k.startswith(f"{scope}/{collection}/")]
                flt = query.get("filter", [""])[0]
                name = re.match(r"^name = (\S+)$", flt)
                if name:
                    items = [r for r in items if r["name"] == name.group(1)]
                return 200, {"kind": f"compute#{collection[:-1]}List", "items": items}
            if method == "POST":
                return self.insert(scope, collection, body)
        m = re.match(r"^(projects/[^/]+/zones/[^/]+)/disks/([^/]+)/resize$", path)
        if m and method == "POST":
            return self.resize_disk(m.group(1), f"{m.group(1)}/disks/{m.group(2)}", body or {})
        m = re.match(r"^(projects/[^/]+/(?:global|regions/[^/]+|zones/[^/]+))/(instances|firewalls|addresses|operations|networks|subnetworks|disks)/([^/]+)$", path)
        if m:
            scope, collection, name = m.groups()
            key = f"{scope}/{collection}/{name}"
            if key not in self.compute:
                return 404, _error(404, f"The resource '{key}' was not found")
            if method == "GET":
                return 200, self.compute[key]
            if method == "DELETE":
                refused = self.refuse_delete(key)
                if refused:
                    return refused
                if collection == "instances":
                    for disk in self.compute[key].get("disks") or []:
                        if disk.get("autoDelete"):
                            self.compute.pop(disk["source"].split("/compute/v1/", 1)[-1], None)
                del self.compute[key]
                return 200, self._op(key, "delete", scope)
            if method == "PATCH":
                self.compute[key].update(body or {})
                self.compute[key]["network"] = self._full(self.project, self.compute[key].get("network", "global/networks/default"))
                return 200, self._op(key, "patch", scope)
        m = re.match(r"^(projects/[^/]+/zones/[^/]+)/instances/([^/]+)/(\w+)$", path)
        if m:
            scope, name, verb = m.groups()
            key = f"{scope}/instances/{name}"
            vm = self.compute.get(key)
            if vm is None:
                return 404, _error(404, f"The resource '{key}' was not found")
            if verb == "getGuestAttributes":
                return 200, {"kind": "compute#guestAttributes", "queryPath": "hostkeys/", "queryValue": {"items": [
                    {"namespace": "hostkeys", "key": "ssh-ed25519", "value": "AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests"}]}}
            return self.instance_action(scope, key, vm, verb, body or {}, query)
        return 404, _error(404, f"fake compute: no route for {method} {path}")

    def compute_info(self, path: str) -> tuple[int, Any] | None:
        """Project, zones, accelerator types and regions: what preflight reads."""
        def quotas(table: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
            return [{"metric": k, "limit": v[0], "usage": v[1]} for k, v in table.items()]

        if path == f"projects/{self.project}":
            return 200, {"kind": "compute#project", "name": self.project, "quotas": quotas(self.global_quotas)}
        m = re.match(rf"^projects/{self.project}/zones/([^/]+)(?:/acceleratorTypes/([^/]+))?$", path)
        if m:
            zone, gpu = m.groups()
            if zone not in self.zone_gpus or (gpu and gpu not in self.zone_gpus[zone]):
                return 404, _error(404, f"The resource '{path}' was not found")
            if gpu:
                return 200, {"kind": "compute#acceleratorType", "name": gpu, "zone": f"{WWW}/projects/{self.project}/zones/{zone}"}
            return 200, {"kind": "compute#zone", "name": zone, "status": "UP"}
        m = re.match(rf"^projects/{self.project}/regions/([^/]+)$", path)
        if m:
            return 200, {"kind": "compute#region", "name": m.group(1), "status": "UP", "quotas": quotas(self.regional_quotas)}
        return None

    def insert(self, scope: str, collection: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = f"{scope}/{collection}/{body['name']}"
        if key in self.compute:
            return 409, _error(409, f"The resource '{key}' already exists", "ALREADY_EXISTS")
        refused = self.refuse_insert(scope, collection, body)
        if refused:
            return refused
        res = json.loads(json.dumps(body))
        res.update(kind=f"compute#{collection[:-1]}", id=str(next(self.ids)), selfLink=f"{WWW}/{key}",
                   creationTimestamp="2026-11-27T07:00:00.000-08:00")
        if collection == "addresses":
            res.update(address="203.0.113.50", status="RESERVED", region=f"{WWW}/{scope}")
        if collection == "firewalls":
            res.setdefault("priority", 1000)
            res["network"] = self._full(self.project, res.get("network", "global/networks/default"))
        if collection == "instances":
            refused = check_scheduling(res.get("scheduling") or {})
            if refused:
                return 400, _error(400, refused, "INVALID_ARGUMENT")
            if (res.get("scheduling") or {}).get("provisioningModel") == "SPOT":
                res["scheduling"].setdefault("preemptible", True)  # the API reports Spot VMs as preemptible too
            zone = scope.split("/")[-1]
            res.update(status="RUNNING", zone=f"{WWW}/{scope}",
                       machineType=self._full(self.project, res["machineType"]))
            builtin = BUILTIN_GPUS.get(_series(res["machineType"]))
            if builtin:
                res["guestAccelerators"] = [{"acceleratorType": f"{WWW}/projects/{self.project}/zones/{zone}/acceleratorTypes/{builtin}",
                                             "acceleratorCount": 1}]
            for acc in res.get("guestAccelerators") or []:
                acc["acceleratorType"] = self._full(self.project, acc["acceleratorType"])
            for nic in res.get("networkInterfaces") or []:
                for access in nic.get("accessConfigs") or []:
                    access.setdefault("natIP", "203.0.113.50")
                nic["network"] = self._full(self.project, nic.get("network") or "global/networks/default")
                if nic.get("subnetwork"):
                    nic["subnetwork"] = self._full(self.project, nic["subnetwork"])
            res["labelFingerprint"] = "42WmSpB8rSM="
            res["tags"] = dict(res.get("tags") or {}, fingerprint="tags-1")
            res["metadata"] = dict(res.get("metadata") or {}, fingerprint="meta-1")
            res["deletionProtection"] = bool(res.get("deletionProtection"))
            res["disks"] = [self.create_boot_disk(scope, res["name"], d) if d.get("initializeParams") else d for d in res.get("disks") or []]
        if collection in ("networks", "subnetworks"):
            res["network"] = self._full(self.project, res["network"]) if collection == "subnetworks" else None
            if res["network"] is None:
                res.pop("network")
                res["subnetworks"] = []
            else:
                res["region"] = f"{WWW}/{scope}"
        self.compute[key] = res
        return 200, self._op(key, "insert", scope)

    def preempt(self, key: str) -> None:
        """Compute Engine reclaims a Spot/preemptible VM: STOP keeps it TERMINATED, DELETE removes it
        (https://cloud.google.com/compute/docs/instances/spot#preemption-process); a zone operation
        of type compute.instances.preempted records it, as the real API lists it."""
        with self.lock:
            vm = self.compute[key]
            sched = vm.get("scheduling") or {}
            if not (sched.get("preemptible") or sched.get("provisioningModel") == "SPOT"):
                raise ValueError(f"{key} is a standard VM: Compute Engine does not preempt it")
            scope = key.split("/instances/")[0]
            self._op(key, "compute.instances.preempted", scope)
            if sched.get("instanceTerminationAction") == "DELETE":
                del self.compute[key]
            else:
                vm["status"] = "TERMINATED"

    def instance_action(self, scope: str, key: str, vm: dict[str, Any], verb: str, body: dict[str, Any],
                        query: dict[str, list[str]] | None = None) -> tuple[int, Any]:
        refused = self.refuse_action(scope, vm, verb, body)
        if refused:
            return refused
        if verb == "start":
            vm["status"] = "RUNNING"
        elif verb == "stop":
            vm["status"] = "TERMINATED"
        elif verb == "setMachineType":
            old_type = vm["machineType"]
            vm["machineType"] = self._full(self.project, body["machineType"])
            zone = scope.split("/")[-1]
            builtin = BUILTIN_GPUS.get(_series(vm["machineType"]))
            attached = [] if BUILTIN_GPUS.get(_series(old_type)) else vm.get("guestAccelerators") or []
            vm["guestAccelerators"] = [{"acceleratorType": f"{WWW}/projects/{self.project}/zones/{zone}/acceleratorTypes/{builtin}",
                                        "acceleratorCount": 1}] if builtin else attached
        elif verb == "setMachineResources":
            vm["guestAccelerators"] = [dict(a, acceleratorType=self._full(self.project, a["acceleratorType"])) for a in body.get("guestAccelerators") or []]
        elif verb == "setScheduling":
            vm["scheduling"] = body
        elif verb == "setLabels":
            vm["labels"] = body.get("labels", {})
            vm["labelFingerprint"] = f"lf{next(self.ids)}"
        elif verb == "setTags":
            vm["tags"] = {"items": body.get("items") or [], "fingerprint": f"tags-{next(self.ids)}"}
        elif verb == "setMetadata":
            vm["metadata"] = {"items": body.get("items") or [], "fingerprint": f"meta-{next(self.ids)}"}
        elif verb == "setServiceAccount":
            vm["serviceAccounts"] = [{"email": body.get("email"), "scopes": body.get("scopes") or []}]
        elif verb == "setDeletionProtection":
            vm["deletionProtection"] = (query or {}).get("deletionProtection", ["true"])[0].lower() == "true"
        else:
            return 400, _error(400, f"fake: unknown instance verb {verb}")
        return 200, self._op(key, verb, scope)

    # --- Google's documented rules (each refusal cites its source) ------------------------------
    def add_default_network(self) -> None:
        """A new project's `default` network: auto mode, with the four default-allow-* rules.

        https://cloud.google.com/vpc/docs/vpc#default-network and
        https://cloud.google.com/firewall/docs/firewalls#more_rules_default_vpc (ssh and rdp open to 0.0.0.0/0).
        """
        net = f"projects/{self.project}/global/networks/default"
        self.compute[net] = {"kind": "compute#network", "name": "default", "autoCreateSubnetworks": True,
                             "description": "Default network for the project", "selfLink": f"{WWW}/{net}"}
        rules = {
            "default-allow-ssh": ([{"IPProtocol": "tcp", "ports": ["22"]}], ["0.0.0.0/0"]),
            "default-allow-rdp": ([{"IPProtocol": "tcp", "ports": ["3389"]}], ["0.0.0.0/0"]),
            "default-allow-icmp": ([{"IPProtocol": "icmp"}], ["0.0.0.0/0"]),
            "default-allow-internal": ([{"IPProtocol": "tcp", "ports": ["0-65535"]}, {"IPProtocol": "udp", "ports": ["0-65535"]},
                                        {"IPProtocol": "icmp"}], ["10.128.0.0/9"]),
        }
        for name, (allowed, sources) in rules.items():
            key = f"projects/{self.project}/global/firewalls/{name}"
            self.compute[key] = {"kind": "compute#firewall", "name": name, "network": f"{WWW}/{net}", "direction": "INGRESS",
                                 "priority": 65534, "allowed": allowed, "sourceRanges": sources, "disabled": False,
                                 "description": f"Allow {name.rsplit('-', 1)[-1]} from anywhere" if sources == ["0.0.0.0/0"] else "",
                                 "selfLink": f"{WWW}/{key}"}

    def token(self, body: Any) -> tuple[int, Any]:
        """OAuth token endpoint: service-account JWTs and user refresh tokens (ADC authorized_user)."""
        grant = parse_qs(body).get("grant_type", [""])[0] if isinstance(body, str) else ""
        if grant == "refresh_token":
            token = f"ya29.user{next(self.ids)}"
            self.user_tokens.add(token)
            return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer", "scope": "openid"}
        return 200, {"access_token": "ya29.fake", "expires_in": 3600, "token_type": "Bearer"}

    def needs_quota_project(self, host: str) -> tuple[int, Any] | None:
        """User credentials without a quota project: Service Usage refuses (client-based APIs bill a quota project).

        https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds (error shape: 403
        SERVICE_DISABLED on Google's own ADC client project 764086051850).
        """
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        if host != "serviceusage.googleapis.com" or token not in self.user_tokens or self.headers.get("x-goog-user-project"):
            return None
        message = ("Your application is authenticating by using local Application Default Credentials. The "
                   "serviceusage.googleapis.com API requires a quota project, which is not set by default. To learn how to set "
                   "your quota project, see https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds .")
        return 403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED", "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
             "metadata": {"service": "serviceusage.googleapis.com", "consumer": "projects/764086051850"}}]}}

    def _accelerator_problem(self, zone: str, machine: str, accelerators: list[dict[str, Any]]) -> str:
        """Accelerators: full or partial URL in the instance's own zone, offered there, and only on N1.

        https://cloud.google.com/compute/docs/reference/rest/v1/instances (guestAccelerators[].acceleratorType:
        "Full or partial URL of the accelerator type resource ... projects/my-project/zones/us-central1-c/acceleratorTypes/...");
        https://cloud.google.com/compute/docs/gpus#gpus-list (T4 only on N1; L4 and A100 come with G2 and A2 machine types).
        """
        for i, acc in enumerate(accelerators):
            link = str(acc.get("acceleratorType", "")).split("/compute/v1/", 1)[-1]
            m = re.match(rf"^projects/{self.project}/zones/([^/]+)/acceleratorTypes/([^/]+)$", link)
            field = f"resource.guestAccelerators[{i}].acceleratorType"
            if not m:
                return f"Invalid value for field '{field}': '{acc.get('acceleratorType')}'. Must be a URL to a valid Compute resource of the correct type."
            if m.group(1) != zone:
                return f"Invalid value for field '{field}': '{acc.get('acceleratorType')}'. Accelerator type must be in zone {zone}."
            if m.group(2) not in self.zone_gpus.get(zone, set()):
                return f"Invalid value for field '{field}': '{acc.get('acceleratorType')}'. Accelerator type not found in zone {zone}."
            series = _series(machine)
            if series != "n1":
                return (f"Invalid value for field '{field}': '{acc.get('acceleratorType')}'. Machine type {machine.rsplit('/', 1)[-1]} "
                        "does not support additional accelerators.")
            if m.group(2) not in N1_GPUS:
                return f"Invalid value for field '{field}': accelerator type {m.group(2)} is not supported with machine type {machine.rsplit('/', 1)[-1]}."
        return ""

    def refuse_insert(self, scope: str, collection: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        if collection == "firewalls" or collection == "subnetworks":
            net = str(body.get("network") or f"projects/{self.project}/global/networks/default").split("/compute/v1/", 1)[-1]
            net = net if net.startswith("projects/") else f"projects/{self.project}/{net}"
            if net not in self.compute:  # https://cloud.google.com/vpc/docs/create-modify-vpc-networks
                return 404, _invalid(f"The resource '{net}' was not found", "notFound", 404)
        if collection == "subnetworks":
            net = str(body["network"]).split("/compute/v1/", 1)[-1]
            if self.compute[net if net.startswith("projects/") else f"projects/{self.project}/{net}"].get("autoCreateSubnetworks"):
                return 400, _invalid("Invalid resource usage: 'Cannot add subnetworks to an auto mode network.'", "invalidResourceUsage")
        if collection != "instances":
            return None
        zone = scope.split("/")[-1]
        machine = str(body.get("machineType", ""))
        problem = self._accelerator_problem(zone, machine, body.get("guestAccelerators") or [])
        if problem:
            return 400, _invalid(problem)
        has_gpu = bool(body.get("guestAccelerators")) or _series(machine) in BUILTIN_GPUS
        sched = body.get("scheduling") or {}
        # https://cloud.google.com/compute/docs/gpus/create-vm-with-gpus : GPU VMs cannot live-migrate.
        if has_gpu and sched.get("onHostMaintenance", "MIGRATE") != "TERMINATE":
            return 400, _invalid("Instances with guest accelerators do not support live migration.", "badRequest")
        # https://cloud.google.com/compute/docs/instances/preemptible : preemptible VMs cannot restart automatically.
        if sched.get("preemptible") and sched.get("automaticRestart", True):
            return 400, _invalid("Invalid value for field 'resource.scheduling.automaticRestart': 'true'. "
                                 "Preemptible instances cannot be automatically restarted.")
        for disk in body.get("disks") or []:
            image = str((disk.get("initializeParams") or {}).get("sourceImage", ""))
            m = re.match(r"^(?:.*/compute/v1/)?projects/([^/]+)/global/images/family/([^/]+)$", image)
            # https://cloud.google.com/compute/docs/images/os-details : public image families (a dated snapshot).
            if m and m.groups() not in PUBLIC_IMAGE_FAMILIES:
                return 404, _invalid(f"The resource '{image}' was not found", "notFound", 404)
        for nic in body.get("networkInterfaces") or []:
            for field in ("network", "subnetwork"):
                link = str(nic.get(field) or "").split("/compute/v1/", 1)[-1]
                if link and (link if link.startswith("projects/") else f"projects/{self.project}/{link}") not in self.compute:
                    return 404, _invalid(f"The resource '{link}' was not found", "notFound", 404)
        return None

    def refuse_delete(self, key: str) -> tuple[int, Any] | None:
        res = self.compute[key]
        # https://cloud.google.com/compute/docs/instances/preventing-accidental-vm-deletion
        if "/instances/" in key and res.get("deletionProtection"):
            return 400, _invalid("Invalid resource usage: 'Resource cannot be deleted if it's protected against deletion.'",
                                 "resourceIsProtected")
        # https://cloud.google.com/vpc/docs/create-modify-vpc-networks#deleting_a_network : subnets and rules go first.
        link = f"{WWW}/{key}"
        users = [k for k, r in self.compute.items() if r.get("network") == link or
                 any(n.get("network") == link or n.get("subnetwork") == link for n in r.get("networkInterfaces") or [])]
        if ("/networks/" in key or "/subnetworks/" in key) and users:
            return 400, _invalid(f"The {'network' if '/networks/' in key else 'subnetwork'} resource '{key}' is already being used by "
                                 f"'{users[0]}'", "resourceInUseByAnotherResource")
        return None

    def refuse_action(self, scope: str, vm: dict[str, Any], verb: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        zone = scope.split("/")[-1]
        # instances.setMachineType / setMachineResources / setServiceAccount: "for a stopped instance"
        # (https://cloud.google.com/compute/docs/reference/rest/v1/instances/setMachineType, .../setMachineResources,
        # .../setServiceAccount).
        if verb in ("setMachineType", "setMachineResources", "setServiceAccount") and vm["status"] != "TERMINATED":
            return 400, _invalid(f"Invalid resource usage: 'The instance must be stopped to call {verb}.'", "invalidResourceUsage")
        if verb == "setMachineResources":
            problem = self._accelerator_problem(zone, vm["machineType"], body.get("guestAccelerators") or [])
            if not problem and _series(vm["machineType"]) in BUILTIN_GPUS:
                problem = f"Machine type {vm['machineType'].rsplit('/', 1)[-1]} has built-in accelerators that cannot be changed."
            if problem:
                return 400, _invalid(problem)
        if verb == "setMachineType":
            old, new = _series(vm["machineType"]), _series(body.get("machineType", ""))
            # https://cloud.google.com/compute/docs/instances/changing-machine-type-of-stopped-instance : another
            # machine series only for first/second generation series, "excluding T2A and A2".
            if old != new and "a2" in (old, new):
                return 400, _invalid(f"Invalid value for field 'machineType': changing the machine series from {old.upper()} to "
                                     f"{new.upper()} is not supported. Create a new instance instead.")
            attached = [] if old in BUILTIN_GPUS else vm.get("guestAccelerators") or []
            problem = self._accelerator_problem(zone, body.get("machineType", ""), attached)
            if problem:  # G2/A2 refuse added accelerators: detach the T4 first (setMachineResources []).
                return 400, _invalid(problem)
        if verb == "setScheduling":
            gpu = bool(vm.get("guestAccelerators")) or _series(vm["machineType"]) in BUILTIN_GPUS
            if gpu and body.get("onHostMaintenance", "MIGRATE") != "TERMINATE":
                return 400, _invalid("Instances with guest accelerators do not support live migration.", "badRequest")
        fingerprints = {"setLabels": ("labelFingerprint", vm.get("labelFingerprint")),
                        "setTags": ("fingerprint", (vm.get("tags") or {}).get("fingerprint")),
                        "setMetadata": ("fingerprint", (vm.get("metadata") or {}).get("fingerprint"))}
        if verb in fingerprints:  # optimistic locking: the fingerprint of the last read must be sent back
            field, current = fingerprints[verb]
            if body.get(field) != current:
                return 412, _invalid(f"Supplied fingerprint does not match current {verb[3:].lower()} fingerprint.", "conditionNotMet", 412)
        return None

    def create_boot_disk(self, scope: str, name: str, disk: dict[str, Any]) -> dict[str, Any]:
        """The boot disk is a zonal disk resource of its own, named after the VM."""
        params = disk["initializeParams"]
        key = f"{scope}/disks/{name}"
        self.compute[key] = {"kind": "compute#disk", "name": name, "sizeGb": str(params.get("diskSizeGb") or 10),
                             "type": f"{WWW}/{scope}/diskTypes/{str(params.get('diskType') or 'pd-standard').rsplit('/', 1)[-1]}",
                             "sourceImage": params.get("sourceImage"), "selfLink": f"{WWW}/{key}", "status": "READY"}
        return {"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE", "boot": True, "deviceName": name,
                "autoDelete": bool(disk.get("autoDelete")), "source": f"{WWW}/{key}", "diskSizeGb": self.compute[key]["sizeGb"]}

    def resize_disk(self, scope: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
        """disks.resize: only to a larger size (https://cloud.google.com/compute/docs/reference/rest/v1/disks/resize)."""
        disk = self.compute.get(key)
        if disk is None:
            return 404, _error(404, f"The resource '{key}' was not found")
        if int(body.get("sizeGb", 0)) <= int(disk["sizeGb"]):
            return 400, _invalid(f"Invalid value for field 'sizeGb': '{body.get('sizeGb')}'. Disk size cannot be smaller than "
                                 f"or equal to the current size {disk['sizeGb']}GB.")
        disk["sizeGb"] = str(body["sizeGb"])
        for vm in self.compute.values():
            for attached in vm.get("disks") or []:
                if attached.get("source") == disk["selfLink"]:
                    attached["diskSizeGb"] = disk["sizeGb"]
        return 200, self._op(key, "resizeDisk", scope)

    def handle_cloudbilling(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """projects.getBillingInfo and billingAccounts.testIamPermissions (Cloud Billing API v1)."""
        if method == "GET" and path == f"/v1/projects/{self.project}/billingInfo":
            return 200, {"name": f"projects/{self.project}/billingInfo", "projectId": self.project,
                         "billingAccountName": f"billingAccounts/{self.billing_account}" if self.billing_account else "",
                         "billingEnabled": bool(self.billing_account)}
        m = re.match(r"^/v1/billingAccounts/([^/:]+):testIamPermissions$", path)
        if method == "POST" and m:
            if m.group(1) != self.billing_account:
                return 403, _error(403, f"The caller does not have permission on billingAccounts/{m.group(1)}", "PERMISSION_DENIED")
            return 200, {"permissions": sorted(p for p in body.get("permissions", []) if p in self.billing_permissions)}
        return 404, _error(404, f"fake cloudbilling: no route for {method} {path}")

    def handle_budgets(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        """budgets.create/list/get/patch/delete of the Cloud Billing Budget API v1
        (https://cloud.google.com/billing/docs/reference/budget/rest/v1/billingAccounts.budgets)."""
        m = re.match(r"^/v1/billingAccounts/([^/]+)/budgets(?:/([^/]+))?$", path)
        if not m:
            return 404, _error(404, f"fake billingbudgets: no route for {path}")
        account, budget_id = m.groups()
        verb = {"POST": "create", "GET": "get" if budget_id else "list", "PATCH": "update", "DELETE": "delete"}.get(method, "?")
        if account != self.billing_account or f"billing.budgets.{verb}" not in self.billing_permissions:
            return 403, _error(403, f"The caller does not have permission billing.budgets.{verb} on billingAccounts/{account}.",
                               "PERMISSION_DENIED")
        prefix = f"billingAccounts/{account}/budgets/"
        if method == "GET" and budget_id is None:
            return 200, {"budgets": [b for k, b in self.budgets.items() if k.startswith(prefix)]}
        if method == "POST" and budget_id is None:
            problem = _budget_problem(body or {}, self.billing_currency, self.project_number)
            if problem:
                return 400, _error(400, problem, "INVALID_ARGUMENT")
            name = f"{prefix}{next(self.ids):08x}-0000-4000-8000-000000000000"
            budget = dict(json.loads(json.dumps(body)), name=name, etag=f"e{next(self.ids)}")
            budget.setdefault("notificationsRule", {})  # default: e-mails to the billing account's IAM recipients
            self.budgets[name] = budget
            return 200, budget
        name = f"{prefix}{budget_id}"
        if name not in self.budgets:
            return 404, _error(404, f"Budget {name} not found.", "NOT_FOUND")
        if method == "GET":
            return 200, self.budgets[name]
        if method == "DELETE":
            del self.budgets[name]
            return 200, {}
        if method == "PATCH":
            if body.get("etag") and body["etag"] != self.budgets[name]["etag"]:
                return 409, _error(409, "The budget was changed concurrently (etag mismatch).", "ABORTED")
            mask = [f for f in query.get("updateMask", [""])[0].split(",") if f]
            merged = dict(self.budgets[name], **{k: v for k, v in body.items() if k in mask})
            problem = _budget_problem({k: v for k, v in merged.items() if k != "name"}, self.billing_currency, self.project_number)
            if problem:
                return 400, _error(400, problem, "INVALID_ARGUMENT")
            merged["etag"] = f"e{next(self.ids)}"
            self.budgets[name] = merged
            return 200, merged
        return 404, _error(404, f"fake billingbudgets: no route for {method} {path}")

    def handle_serviceusage(self, method: str, path: str) -> tuple[int, Any]:
        m = re.match(r"^/v1/projects/([^/]+)/services/([^/:]+)(:enable)?$", path)
        if not m:
            return 404, _error(404, f"fake serviceusage: no route for {path}")
        name = m.group(2)
        if method == "POST" and m.group(3):
            self.services[name] = "ENABLED"
            return 200, {"name": "operations/acf.fake", "done": True, "response": {
                "@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
                "service": {"name": f"projects/123/services/{name}", "state": "ENABLED"}}}
        return 200, {"name": f"projects/123/services/{name}", "parent": "projects/123", "state": self.services.get(name, "DISABLED")}

    def handle_iam(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        m = re.match(r"^/v1/projects/([^/]+)/serviceAccounts(?:/([^/]+))?$", path)
        if not m:
            return 404, _error(404, f"fake iam: no route for {path}")
        project, email = m.groups()
        if method == "POST" and email is None:
            email = f"{body['accountId']}@{project}.iam.gserviceaccount.com"
            self.service_accounts[email] = {"name": f"projects/{project}/serviceAccounts/{email}", "projectId": project,
                                            "uniqueId": str(next(self.ids)), "email": email,
                                            "displayName": body.get("serviceAccount", {}).get("displayName", ""), "etag": "MDEwMjE5MjA="}
            return 200, self.service_accounts[email]
        if email not in self.service_accounts:
            return 404, _error(404, f"Unknown service account {email}", "NOT_FOUND")
        if method == "DELETE":
            del self.service_accounts[email]
            return 200, {}
        if method == "PUT":
            self.service_accounts[email].update(displayName=body.get("displayName", ""))
        return 200, self.service_accounts[email]

    def handle_crm(self, path: str, body: Any) -> tuple[int, Any]:
        if path == f"/v1/projects/{self.project}":  # projects.get (v1): the budget filter needs the number
            return 200, {"projectNumber": self.project_number, "projectId": self.project, "lifecycleState": "ACTIVE", "name": self.project}
        if path.endswith(":getIamPolicy"):
            return 200, self.project_policy
        if path.endswith(":setIamPolicy"):
            policy = body["policy"]
            if policy.get("etag") != self.project_policy["etag"]:
                return 409, _error(409, "There were concurrent policy changes.", "ABORTED")
            for b in policy["bindings"]:
                for member in b["members"]:
                    sa = member.removeprefix("serviceAccount:")
                    if member.startswith("serviceAccount:") and sa.endswith(".iam.gserviceaccount.com") and sa not in self.service_accounts:
                        return 400, _error(400, f"Service account {sa} does not exist.", "INVALID_ARGUMENT")
            self.project_policy = dict(policy, etag=f"BwAAAA{next(self.ids)}")
            return 200, self.project_policy
        return 404, _error(404, "fake crm: no route")

    def handle_storage(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if path == "/storage/v1/b":
            if method == "GET":
                return 200, {"kind": "storage#buckets", "items": list(self.buckets.values())}
            name = body["name"]
            if name in self.buckets:
                return 409, _error(409, "Your previous request to create the named bucket succeeded and you already own it.", "conflict")
            bucket = json.loads(json.dumps(body))
            bucket.pop("project", None)
            bucket.update(kind="storage#bucket", id=name, selfLink=f"https://www.googleapis.com/storage/v1/b/{name}",
                          projectNumber="123", metageneration="1", timeCreated="2026-11-27T15:00:00.000Z")
            self.buckets[name] = bucket
            self.bucket_policies[name] = {"kind": "storage#policy", "resourceId": f"projects/_/buckets/{name}", "version": 1, "etag": "CAE=",
                                          "bindings": [{"role": "roles/storage.legacyBucketOwner", "members": ["projectOwner:p"]}]}
            return 200, bucket
        m = re.match(r"^/storage/v1/b/([^/]+)(/iam|/o)?$", path)
        if not m:
            return 404, _error(404, f"fake storage: no route for {path}")
        name, sub = m.groups()
        if name not in self.buckets:
            return 404, _error(404, "The specified bucket does not exist.", "notFound")
        if sub == "/iam":
            if method == "PUT":
                if body.get("etag") != self.bucket_policies[name]["etag"]:
                    return 412, _error(412, "Precondition Failed", "conditionNotMet")
                self.bucket_policies[name] = dict(body, etag=f"CA{next(self.ids)}=")
            return 200, self.bucket_policies[name]
        if sub == "/o":
            return 200, {"kind": "storage#objects", "items": []}
        if method == "DELETE":
            del self.buckets[name]
            self.bucket_policies.pop(name, None)  # the policy goes with the bucket
            return 204, None
        if method == "PUT":
            self.buckets[name].update(body)
        return 200, self.buckets[name]

    def handle_oslogin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        m = re.match(r"^/v1/users/([^/:]+)(/loginProfile|:importSshPublicKey)$", path)
        if not m:
            return 404, _error(404, "fake oslogin: no route")
        user, what = m.groups()
        if what == ":importSshPublicKey":
            self.oslogin_keys.setdefault(user, []).append(body["key"])
        keys = {f"fp{i}": {"key": k, "fingerprint": f"fp{i}"} for i, k in enumerate(self.oslogin_keys.get(user, []))}
        profile: dict[str, Any] = {"name": user, "sshPublicKeys": keys}
        if keys:
            profile["posixAccounts"] = [{"primary": True, "username": "sa_1234567890", "accountId": self.project}]
        return 200, {"loginProfile": profile} if what == ":importSshPublicKey" else profile


# Machine series whose GPUs come with the machine type (https://cloud.google.com/compute/docs/accelerator-optimized-machines).
BUILTIN_GPUS = {"g2": "nvidia-l4", "a2": "nvidia-tesla-a100"}
# GPUs attached to N1 (https://cloud.google.com/compute/docs/gpus#gpus-list).
N1_GPUS = {"nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-v100", "nvidia-tesla-p100"}
# Public image families the roles may name (dated snapshot of `gcloud compute images list`).
PUBLIC_IMAGE_FAMILIES = {("debian-cloud", "debian-12"), ("ubuntu-os-cloud", "ubuntu-2204-lts"), ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
                         ("deeplearning-platform-release", "common-cu128-ubuntu-2204-nvidia-570")}


def api_disabled(service: str, title: str) -> dict[str, Any]:
    """A call to an API the project has not enabled: 403 with reason accessNotConfigured and ErrorInfo SERVICE_DISABLED.

    https://cloud.google.com/service-usage/docs/enable-disable and https://google.aip.dev/193 (ErrorInfo).
    """
    message = (f"{title} has not been used in project 123 before or it is disabled. Enable it by visiting "
               f"https://console.developers.google.com/apis/api/{service}/overview?project=123 then retry.")
    return {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED",
                      "errors": [{"message": message, "domain": "usageLimits", "reason": "accessNotConfigured"}],
                      "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                                   "domain": "googleapis.com", "metadata": {"service": service, "consumer": "projects/123"}}]}}


def _series(machine_type: str) -> str:
    return str(machine_type).rsplit("/", 1)[-1].split("-", 1)[0]


def _invalid(message: str, reason: str = "invalid", code: int = 400) -> dict[str, Any]:
    """Compute Engine's error body (https://cloud.google.com/compute/docs/reference/rest/v1/instances, errors[] with reason)."""
    status = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 412: "FAILED_PRECONDITION"}.get(code, "FAILED_PRECONDITION")
    return {"error": {"code": code, "message": message, "status": status,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}

BUDGET_FIELDS = ("displayName", "budgetFilter", "amount", "thresholdRules", "notificationsRule", "etag")


def _budget_problem(budget: dict[str, Any], currency: str, project_number: str) -> str:
    """What budgets.create/patch refuse (Budget API v1 reference, Budget, ThresholdRule, Filter):
    an amount is required and its currency must be the billing account's; thresholdPercent must be
    positive; displayName at most 60 characters; projects are named projects/{number}."""
    unknown = [k for k in budget if k not in BUDGET_FIELDS]
    if unknown:
        return f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'budget'."
    if len(str(budget.get("displayName", ""))) > 60:
        return "budget.display_name must be at most 60 characters."
    amount = (budget.get("amount") or {}).get("specifiedAmount")
    if amount is None and "lastPeriodAmount" not in (budget.get("amount") or {}):
        return "budget.amount is required."
    if amount is not None and amount.get("currencyCode", currency) != currency:
        return f"The currency code {amount.get('currencyCode')} does not match the billing account's currency {currency}."
    for rule in budget.get("thresholdRules") or []:
        if not float(rule.get("thresholdPercent", 0)) > 0:
            return "budget.threshold_rules.threshold_percent must be positive."
        if rule.get("spendBasis", "CURRENT_SPEND") not in ("CURRENT_SPEND", "FORECASTED_SPEND"):
            return "budget.threshold_rules.spend_basis is invalid."
    for project in (budget.get("budgetFilter") or {}).get("projects") or []:
        if project != f"projects/{project_number}":
            return f"budget.budget_filter.projects: {project} is not a project of this billing account (projects/{{number}})."
    return ""


def check_scheduling(sched: dict[str, Any]) -> str:
    """What instances.insert refuses in `scheduling` (Compute API reference, Scheduling, and "Create and
    use Spot VMs": a Spot VM cannot restart automatically nor live-migrate; instanceTerminationAction
    applies to Spot VMs; provisioningModel takes STANDARD or SPOT here). Empty when accepted."""
    model = sched.get("provisioningModel", "STANDARD")
    if model not in ("STANDARD", "SPOT"):
        return f"Invalid value for field 'resource.scheduling.provisioningModel': '{model}'."
    if model == "SPOT":
        if sched.get("automaticRestart") is True:
            return "Invalid value for field 'resource.scheduling.automaticRestart': 'true'. Spot VMs cannot be restarted automatically."
        if sched.get("onHostMaintenance", "TERMINATE") != "TERMINATE":
            return "Invalid value for field 'resource.scheduling.onHostMaintenance': Spot VMs must use TERMINATE."
    if sched.get("instanceTerminationAction") and model != "SPOT":
        return "Invalid value for field 'resource.scheduling.instanceTerminationAction': only Spot VMs take a termination action."
    if sched.get("instanceTerminationAction") not in (None, "STOP", "DELETE"):
        return f"Invalid value for field 'resource.scheduling.instanceTerminationAction': '{sched['instanceTerminationAction']}'."
    if sched.get("preemptible") and sched.get("automaticRestart") is True:
        return "Invalid value for field 'resource.scheduling.automaticRestart': preemptible VMs cannot be restarted automatically."
    return ""


def _error(code: int, message: str, status: str = "") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status or {404: "NOT_FOUND"}.get(code, "FAILED_PRECONDITION"),
                      "errors": [{"message": message, "domain": "global", "reason": (status or "notFound").lower()}]}}


def serve(fake: FakeGcp) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            parts = urlsplit(self.path)
            host, _, rest = parts.path.lstrip("/").partition("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            status, payload = fake.handle(self.command, host, "/" + rest, parse_qs(parts.query), body, dict(self.headers.items()))
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
