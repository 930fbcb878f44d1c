"""The stand-in of Google's APIs refuses what Google documents as refused (each rule cites its
page in standins/fake_gcp.py and fake_gcp_fleet.py); checked in-process, no server."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from standins.fake_gcp import FakeGcp, check_scheduling

P = "my-voice-project"
C = f"/compute/v1/projects/{P}"
W = "https://www.googleapis.com/compute/v1"
SPOT_SCHEDULING = {"onHostMaintenance": "TERMINATE", "automaticRestart": False, "preemptible": True,
                   "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"}


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


def test_fake_refuses_what_compute_refuses_for_spot():
    assert check_scheduling(SPOT_SCHEDULING) == ""
    assert "automaticRestart" in check_scheduling(dict(SPOT_SCHEDULING, automaticRestart=True))
    assert "onHostMaintenance" in check_scheduling(dict(SPOT_SCHEDULING, onHostMaintenance="MIGRATE"))
    assert "instanceTerminationAction" in check_scheduling({"onHostMaintenance": "TERMINATE", "instanceTerminationAction": "STOP"})
