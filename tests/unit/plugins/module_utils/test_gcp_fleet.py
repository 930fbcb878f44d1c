"""Fleet mode, piece by piece (fast): the fleet plan's validation, the fake's documented refusals,
the boot script against a local stand-in of the metadata server and Secret Manager, and the
image's generalise tasks run for real on a folder laid out like the builder's disk."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.gcp_fleet import FleetSettingsError, build_fleet, fleet_cost
from conftest import REPO, role_vars
from fake_gcp import FakeGcp

P = "my-voice-project"
C = f"/compute/v1/projects/{P}"
W = "https://www.googleapis.com/compute/v1"
PLAN = {"project": P, "region": "us-central1", "deployment": "personaplex", "spot": False, "profile": "t4",
        "labels": {"app": "personaplex", "deployment": "personaplex", "managed-by": "ansible"},
        "marker": "managed-by=personaplex-ansible deployment=personaplex"}
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def fleet_settings(**over: Any) -> dict[str, Any]:
    base = {"min_instances": 1, "max_instances": 3, "sessions_per_instance": 2, "target_utilization": 0.6,
            "conversation_max_s": 3600, "boot_s": 600, "zones": [], "domain": "", "network": "default", "subnetwork": "",
            "image": "", "disk_size_gb": 100, "disk_type": "pd-balanced", "voice_port": 8998,
            "client_cidrs": ["198.51.100.0/24"], "certificate_pem": CERT, "startup_script": "#!/usr/bin/python3\n"}
    base.update(over)
    return base


def profile(name: str = "t4") -> dict[str, Any]:
    return dict(role_vars("main.yml")["gcp_infra_profiles"][name])


def by_kind(fleet: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(r for r in fleet["resources"] if r["kind"] == kind)


# --- the fleet plan -------------------------------------------------------------------------
def test_plan_orders_resources_and_sizes_scaling() -> None:
    fleet = build_fleet(PLAN, profile(), fleet_settings())
    assert [r["kind"] for r in fleet["resources"]] == [
        "firewall", "healthCheck", "instanceTemplate", "instanceGroupManager", "autoscaler", "securityPolicy",
        "backendService", "urlMap", "sslCertificate", "targetHttpsProxy", "globalAddress", "forwardingRule"]
    assert fleet["zones"] == ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
    mig = by_kind(fleet, "instanceGroupManager")["body"]
    assert mig["updatePolicy"]["maxSurge"] == {"fixed": 4} and mig["updatePolicy"]["maxUnavailable"] == {"fixed": 0}
    metric = by_kind(fleet, "autoscaler")["body"]["autoscalingPolicy"]["customMetricUtilizations"]
    assert metric == [{"metric": "prometheus.googleapis.com/personaplex_sessions_active/gauge", "utilizationTarget": 1.2,
                       "utilizationTargetType": "GAUGE"}]
    assert fleet["sessions_at_max"] == 6
    # The template's name follows its content: same settings, same name; a change, a new one.
    again = build_fleet(PLAN, profile(), fleet_settings())
    bigger = build_fleet(PLAN, profile(), fleet_settings(disk_size_gb=200))
    assert again["names"]["template"] == fleet["names"]["template"] != bigger["names"]["template"]


def test_scale_to_zero_adds_a_per_group_metric_and_spot_sets_the_provisioning_model() -> None:
    fleet = build_fleet(dict(PLAN, spot=True), profile("l4"), fleet_settings(min_instances=0))
    metrics = by_kind(fleet, "autoscaler")["body"]["autoscalingPolicy"]["customMetricUtilizations"]
    assert [m.get("singleInstanceAssignment") for m in metrics] == [None, 2.0]
    props = by_kind(fleet, "instanceTemplate")["body"]["properties"]
    assert props["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                                   "provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    assert "guestAccelerators" not in props  # the L4 comes with g2-standard-4


def test_managed_certificate_with_a_domain_and_cloud_armor_chunks() -> None:
    cidrs = [f"203.0.113.{i}/32" for i in range(12)]
    fleet = build_fleet(PLAN, profile(), fleet_settings(domain="voice.example.org", certificate_pem="", client_cidrs=cidrs))
    assert by_kind(fleet, "sslCertificate")["body"]["managed"] == {"domains": ["voice.example.org"]}
    rules = by_kind(fleet, "securityPolicy")["body"]["rules"]
    assert [len(r["match"]["config"]["srcIpRanges"]) for r in rules] == [10, 2, 1]
    assert rules[-1]["priority"] == 2147483647 and rules[-1]["action"] == "deny(403)"


@pytest.mark.parametrize(("over", "message"), [
    ({"min_instances": 4}, "gcp_fleet_min_instances (4) is above gcp_fleet_max_instances (3)"),
    ({"max_instances": 0}, "gcp_fleet_max_instances: 0 is not accepted"),
    ({"target_utilization": 1.0}, "gcp_fleet_target_utilization: 1.0 is not accepted"),
    ({"zones": ["europe-west4-a"]}, "gcp_fleet_zones: europe-west4-a not in region us-central1"),
    ({"domain": "Not A Domain"}, "gcp_fleet_domain: 'Not A Domain' is not a domain name"),
    ({"certificate_pem": ""}, "a self-managed certificate is needed"),
    ({"sessions_per_instance": "two"}, "gcp_fleet_sessions_per_instance: 'two' is not accepted"),
])
def test_bad_fleet_settings_are_named_with_what_is_accepted(over: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetSettingsError, match="Accepted|needed") as err:
        build_fleet(PLAN, profile(), fleet_settings(**over))
    assert message in str(err.value)


def test_cost_at_min_and_max() -> None:
    prices = role_vars("prices.yml")["gcp_infra_prices"]
    fleet_prices = role_vars_fleet()["gcp_fleet_prices"]
    cost = fleet_cost(prices, fleet_prices, "t4", False, "pd-balanced", 100, 1, 3, 40)
    per_instance = 0.189999 + 0.35 + 0.100 * 100 / 730
    assert cost["per_instance_per_hour"] == round(per_instance, 4)
    assert cost["at_max"]["per_hour"] - cost["at_min"]["per_hour"] == pytest.approx(2 * per_instance, abs=1e-3)
    assert cost["fixed_per_month"] == round(0.025 * 730 + 5 + 2 + 0.05 * 40, 2)


def role_vars_fleet() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "roles" / "gcp_fleet" / "vars" / "main.yml").read_text())


# --- the fake's documented refusals ---------------------------------------------------------
@pytest.fixture
def fake() -> FakeGcp:
    f = FakeGcp(P)
    hc = {"name": "hc", "type": "HTTPS", "httpsHealthCheck": {"port": 8998, "requestPath": "/readyz"}}
    assert f.handle("POST", "compute.googleapis.com", f"{C}/global/healthChecks", {}, hc)[0] == 200
    return f


def post(f: FakeGcp, path: str, body: dict[str, Any], query: dict[str, list[str]] | None = None) -> tuple[int, Any]:
    return f.handle("POST", "compute.googleapis.com", f"{C}/{path}", query or {}, body)


def test_fake_refuses_what_compute_refuses(fake: FakeGcp) -> None:
    assert post(fake, "global/healthChecks", {"name": "Bad_Name", "type": "HTTPS", "httpsHealthCheck": {}})[0] == 400
    assert "checkIntervalSec" in post(fake, "global/healthChecks", {"name": "slow", "type": "HTTP", "httpHealthCheck": {},
                                                                      "timeoutSec": 10, "checkIntervalSec": 5})[1]["error"]["message"]
    tpl = {"name": "t", "properties": {"machineType": "n1-standard-4", "guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4"}],
                                       "scheduling": {"onHostMaintenance": "MIGRATE"}}}
    assert "live migration" in post(fake, "global/instanceTemplates", tpl)[1]["error"]["message"]
    tpl["properties"]["scheduling"]["onHostMaintenance"] = "TERMINATE"
    tpl["properties"]["disks"] = [{"initializeParams": {"sourceImage": "projects/my-voice-project/global/images/family/nope"}}]
    assert "make image first" in post(fake, "global/instanceTemplates", tpl)[1]["error"]["message"]
    del tpl["properties"]["disks"]
    assert post(fake, "global/instanceTemplates", tpl)[0] == 200
    assert fake.handle("PATCH", "compute.googleapis.com", f"{C}/global/instanceTemplates/t", {}, {"description": "x"})[0] == 405
    mig = {"name": "g", "instanceTemplate": f"{W}/projects/{P}/global/instanceTemplates/t", "targetSize": 1,
           "distributionPolicy": {"zones": [{"zone": f"zones/us-central1-{z}"} for z in "abc"]},
           "updatePolicy": {"type": "PROACTIVE", "maxSurge": {"fixed": 1}}}
    assert "at least the number of zones (3)" in post(fake, "regions/us-central1/instanceGroupManagers", mig)[1]["error"]["message"]
    mig["updatePolicy"]["maxSurge"] = {"fixed": 3}
    assert post(fake, "regions/us-central1/instanceGroupManagers", mig)[0] == 200
    scaler = {"name": "a", "target": f"projects/{P}/regions/us-central1/instanceGroupManagers/g",
              "autoscalingPolicy": {"minNumReplicas": 0, "maxNumReplicas": 2, "customMetricUtilizations": [
                  {"metric": "m", "utilizationTarget": 1.0, "utilizationTargetType": "GAUGE"}]}}
    assert "per-group metric" in post(fake, "regions/us-central1/autoscalers", scaler)[1]["error"]["message"]
    be = {"name": "be", "protocol": "HTTPS", "loadBalancingScheme": "EXTERNAL_MANAGED", "portName": "voice",
          "healthChecks": [f"projects/{P}/global/healthChecks/hc"],
          "backends": [{"group": f"projects/{P}/regions/us-central1/instanceGroups/g", "balancingMode": "CONNECTION",
                        "maxConnectionsPerInstance": 2}]}
    assert "CONNECTION is not supported for protocol HTTPS" in post(fake, "global/backendServices", be)[1]["error"]["message"]
    be["backends"][0] = {"group": be["backends"][0]["group"], "balancingMode": "RATE"}
    assert "exactly one of maxRate" in post(fake, "global/backendServices", be)[1]["error"]["message"]
    be["backends"][0].update(balancingMode="UTILIZATION", maxConnectionsPerInstance=2)
    assert "only valid with balancing mode CONNECTION" in post(fake, "global/backendServices", be)[1]["error"]["message"]
    del be["backends"][0]["maxConnectionsPerInstance"]
    assert post(fake, "global/backendServices", dict(be, securityPolicy="x"))[0] == 200
    created = fake.compute[f"projects/{P}/global/backendServices/be"]
    assert "securityPolicy" not in created  # output only: set with setSecurityPolicy
    stale = fake.handle("PATCH", "compute.googleapis.com", f"{C}/global/backendServices/be", {}, {"timeoutSec": 60})
    assert stale[0] == 412  # no fingerprint
    ok = fake.handle("PATCH", "compute.googleapis.com", f"{C}/global/backendServices/be", {},
                     {"timeoutSec": 60, "fingerprint": created["fingerprint"]})
    assert ok[0] == 200
    gone = fake.handle("DELETE", "compute.googleapis.com", f"{C}/global/healthChecks/hc", {}, None)
    assert gone[0] == 400 and gone[1]["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"
    assert post(fake, "global/sslCertificates", {"name": "c", "type": "MANAGED", "managed": {"domains": ["*.example.org"]}})[0] == 400
    armor = {"name": "p", "rules": [{"priority": 1, "action": "allow",
                                     "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["1.2.3.4/32"]}}}]}
    assert "default rule" in post(fake, "global/securityPolicies", armor)[1]["error"]["message"]


def test_fake_image_needs_a_stopped_disk(fake: FakeGcp) -> None:
    vm = {"name": "b", "machineType": "zones/us-central1-a/machineTypes/n1-standard-4"}
    assert fake.handle("POST", "compute.googleapis.com", f"{C}/zones/us-central1-a/instances", {}, vm)[0] == 200
    image = {"name": "img", "family": "personaplex-x", "sourceDisk": "zones/us-central1-a/disks/b"}
    assert "already being used" in post(fake, "global/images", image)[1]["error"]["message"]
    fake.handle("POST", "compute.googleapis.com", f"{C}/zones/us-central1-a/instances/b/stop", {}, {})
    assert post(fake, "global/images", image)[0] == 200
    family = fake.handle("GET", "compute.googleapis.com", f"{C}/global/images/family/personaplex-x", {}, None)
    assert family[0] == 200 and family[1]["name"] == "img"


def test_fake_secret_manager(fake: FakeGcp) -> None:
    sm = "secretmanager.googleapis.com"
    base = f"/v1/projects/{P}/secrets"
    assert fake.handle("POST", sm, base, {"secretId": ["bad id"]}, {"replication": {"automatic": {}}})[0] == 400
    assert fake.handle("POST", sm, base, {"secretId": ["tok"]}, {})[0] == 400  # replication required
    assert fake.handle("POST", sm, base, {"secretId": ["tok"]}, {"replication": {"automatic": {}}})[0] == 200
    assert fake.handle("POST", sm, base, {"secretId": ["tok"]}, {"replication": {"automatic": {}}})[0] == 409
    assert fake.handle("GET", sm, f"{base}/tok/versions/latest:access", {}, None)[0] == 404
    assert fake.handle("POST", sm, f"{base}/tok:addVersion", {}, {"payload": {"data": "not base64!"}})[0] == 400
    data = base64.b64encode(b"s3cret").decode()
    assert fake.handle("POST", sm, f"{base}/tok:addVersion", {}, {"payload": {"data": data}})[0] == 200
    assert fake.handle("GET", sm, f"{base}/tok/versions/latest:access", {}, None)[1]["payload"]["data"] == data
    policy = {"bindings": [{"role": "roles/secretmanager.secretAccessor", "members": [f"serviceAccount:ghost@{P}.iam.gserviceaccount.com"]}]}
    assert fake.handle("POST", sm, f"{base}/tok:setIamPolicy", {}, {"policy": policy})[0] == 400  # unknown account
    assert fake.handle("POST", sm, f"{base}/tok:setIamPolicy", {}, {"policy": dict(policy, etag="stale")})[0] == 409


# --- the boot script --------------------------------------------------------------------------
def test_boot_script_fetches_the_token_with_the_instance_identity(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Metadata-Flavor", ""), self.headers.get("Authorization", "")))
            if self.path.endswith("/attributes/personaplex-secret"):
                body = f"projects/{P}/secrets/personaplex-access-token".encode()
            elif self.path.endswith("/service-accounts/default/token"):
                body = json.dumps({"access_token": "ya29.instance", "expires_in": 3599}).encode()
            elif self.path == f"/sm/projects/{P}/secrets/personaplex-access-token/versions/latest:access":
                body = json.dumps({"payload": {"data": base64.b64encode(b"client-token-123").decode()}}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    import pwd

    env = dict(os.environ, PERSONAPLEX_BOOT_METADATA_URL=f"{url}/md", PERSONAPLEX_BOOT_SECRETMANAGER_URL=f"{url}/sm",
               PERSONAPLEX_BOOT_CONFIG_DIR=str(tmp_path / "etc"), PERSONAPLEX_BOOT_USER=pwd.getpwuid(os.getuid()).pw_name,
               PERSONAPLEX_BOOT_RESTART="")
    script = REPO / "roles" / "gcp_fleet" / "files" / "fleet-boot.py"
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    server.shutdown()
    assert proc.returncode == 0, proc.stderr
    token = tmp_path / "etc" / "access-token"
    assert token.read_text() == "client-token-123" and token.stat().st_mode & 0o777 == 0o600
    key = tmp_path / "etc" / "tls" / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600 and "PRIVATE KEY" in key.read_text()
    assert (seen[0][1], seen[1][1]) == ("Google", "Google")  # metadata calls carry the flavor header
    assert seen[2][2] == "Bearer ya29.instance"  # Secret Manager is read as the instance's service account
    assert "client-token-123" not in proc.stdout + proc.stderr


# --- generalise -------------------------------------------------------------------------------
def test_generalise_removes_what_belongs_to_one_machine(tmp_path: Path, inventory: Path) -> None:
    root = tmp_path / "disk"
    files = {
        "etc/personaplex/access-token": "secret", "etc/personaplex/tls/server.key": "key", "etc/personaplex/server.env": "keep",
        "etc/ssh/ssh_host_ed25519_key": "k", "etc/ssh/ssh_host_ed25519_key.pub": "k", "etc/ssh/sshd_config": "keep",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n", "var/lib/dbus/machine-id": "x",
        "var/log/journal/abc/system.journal": "j", "var/log/syslog": "lines", "var/log/syslog.1": "old", "var/log/dpkg.log": "d",
        "root/.bash_history": "h", "root/.cache/huggingface/token": "hf_x",
        "var/lib/personaplex/model/model.safetensors": "weights", "opt/personaplex/venv/bin/personaplex-server": "app",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    play = tmp_path / "generalise.yml"
    play.write_text(f"""- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: {REPO}/roles/gcp_fleet
        tasks_from: generalise.yml
      vars:
        gcp_fleet_generalise_root: {root}
""")
    env = {"ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(play)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, **env,
                               "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    gone = ["etc/personaplex/access-token", "etc/personaplex/tls", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
            "var/lib/dbus/machine-id", "var/log/journal/abc/system.journal", "var/log/syslog.1", "root/.bash_history",
            "root/.cache/huggingface/token"]
    assert [p for p in gone if (root / p).exists()] == []
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "var/log/syslog").read_text() == "" and (root / "var/log/dpkg.log").read_text() == ""
    kept = ["etc/personaplex/server.env", "etc/ssh/sshd_config", "var/lib/personaplex/model/model.safetensors",
            "opt/personaplex/venv/bin/personaplex-server"]
    assert all((root / p).read_text() == files[p] for p in kept)
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=300, check=False, env={
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, **env,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path)})
    assert again.returncode == 0 and "changed=0" in again.stdout.rsplit("PLAY RECAP", 1)[-1], again.stdout[-2000:]


def test_docs_quote_the_cost_the_plan_computes() -> None:
    """docs/fleet.md's table must follow the price tables (one source of prices)."""
    prices = role_vars("prices.yml")["gcp_infra_prices"]
    fleet_prices = role_vars_fleet()["gcp_fleet_prices"]
    doc = (REPO / "docs" / "fleet.md").read_text()
    for name, spot in (("t4", False), ("t4", True), ("l4", False), ("l4", True), ("a100", False)):
        cost = fleet_cost(prices, fleet_prices, name, spot, "pd-balanced", 100, 1, 3, fleet_prices["image_gb"])
        row = (f"| {name} | {'spot' if spot else 'on-demand'} | {cost['per_instance_per_hour']:.3f} | "
               f"{cost['at_min']['per_month_24h']:.0f} | {cost['at_max']['per_month_24h']:.0f} |")
        assert row in doc, row
    assert f"about **{fleet_cost(prices, fleet_prices, 't4', False, 'pd-balanced', 100, 0, 3, 40)['fixed_per_month']:.0f} USD/month**" in doc


def test_power_stopped_turns_the_autoscaler_off_and_sizes_the_group_to_zero() -> None:
    running = build_fleet(PLAN, profile(), fleet_settings())
    stopped = build_fleet(PLAN, profile(), fleet_settings(power="stopped"))
    assert by_kind(running, "autoscaler")["body"]["autoscalingPolicy"]["mode"] == "ON"
    assert by_kind(running, "instanceGroupManager")["ignore"] == ["targetSize"]  # the autoscaler owns the size
    assert by_kind(stopped, "autoscaler")["body"]["autoscalingPolicy"]["mode"] == "OFF"
    mig = by_kind(stopped, "instanceGroupManager")
    assert mig["body"]["targetSize"] == 0 and mig["ignore"] == []
    assert stopped["names"]["template"] == running["names"]["template"]  # no rolling update for a stop
    with pytest.raises(FleetSettingsError, match="gcp_fleet_power: 'paused' is not accepted. Accepted: running, stopped"):
        build_fleet(PLAN, profile(), fleet_settings(power="paused"))
