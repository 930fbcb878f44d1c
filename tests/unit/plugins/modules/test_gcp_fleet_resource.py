"""gcp_fleet_resource and gcp_fleet_secret run for real (main(), google-auth, requests) with the
transport answering from the stateful fake (fake_gcp.py + fake_gcp_fleet.py): check mode writes
nothing and says what would change, updates use the documented verb, immutable ones refuse with
what to do."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import gcp_fleet_resource
import gcp_fleet_secret
import pytest
from standins.fake_gcp import FakeGcp
from standins.google_http import AUTH

P = "my-voice-project"
HC = {"name": "hc", "type": "HTTPS", "checkIntervalSec": 10, "timeoutSec": 5, "httpsHealthCheck": {"port": 8998, "requestPath": "/readyz"}}
RULES = [{"priority": 1000, "action": "allow", "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["198.51.100.0/24"]}}},
         {"priority": 2147483647, "action": "deny(403)", "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}}}]


@pytest.fixture
def fake(transport):
    f = FakeGcp(P)

    def answer(request):
        parts = urlsplit(str(request.url))
        body = json.loads(request.body) if request.body else None
        return f.handle(request.method, parts.hostname, parts.path, parse_qs(parts.query), body)

    for method in ("GET", "POST", "PATCH", "DELETE"):
        transport.add(method, r"googleapis\.com", handler=answer)
    return f


def args(**over):
    return {**AUTH, "collection": f"projects/{P}/global/healthChecks", "name": "hc", "body": HC, **over}


def test_check_mode_writes_nothing_then_create_then_unchanged(fake, run_module):
    result = run_module(gcp_fleet_resource, args(), check_mode=True)
    assert result["changed"] and result["action"] == "created" and fake.writes() == []
    result = run_module(gcp_fleet_resource, args())
    assert result["action"] == "created" and f"projects/{P}/global/healthChecks/hc" in fake.compute
    before = len(fake.writes())
    result = run_module(gcp_fleet_resource, args())
    assert result == {**result, "changed": False, "action": "unchanged"} and len(fake.writes()) == before


def test_update_patches_only_what_differs_and_check_mode_names_it(fake, run_module):
    run_module(gcp_fleet_resource, args())
    changed = dict(HC, httpsHealthCheck={"port": 8998, "requestPath": "/healthz"})
    result = run_module(gcp_fleet_resource, args(body=changed), check_mode=True)
    assert result["differences"] == ["httpsHealthCheck.requestPath"] and fake.compute[f"projects/{P}/global/healthChecks/hc"][
        "httpsHealthCheck"]["requestPath"] == "/readyz"
    result = run_module(gcp_fleet_resource, args(body=changed))
    assert result["action"] == "updated" and fake.compute[f"projects/{P}/global/healthChecks/hc"]["httpsHealthCheck"]["requestPath"] == "/healthz"
    assert fake.writes()[-1][0] == "PATCH"


def test_immutable_resource_that_differs_is_refused_with_what_to_do(fake, run_module):
    run_module(gcp_fleet_resource, args(update="immutable"))
    result = run_module(gcp_fleet_resource, args(update="immutable", body=dict(HC, checkIntervalSec=20)))
    assert result.failed and "cannot be changed in place" in result["msg"] and "make teardown" in result["msg"]


def test_cloud_armor_rules_change_with_add_patch_remove_rule(fake, run_module):
    policy = {"name": "armor", "type": "CLOUD_ARMOR", "rules": RULES}
    base = {**AUTH, "collection": f"projects/{P}/global/securityPolicies", "name": "armor", "update": "rules"}
    run_module(gcp_fleet_resource, {**base, "body": policy})
    wider = [dict(RULES[0], match={"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["198.51.100.0/24", "192.0.2.0/24"]}}),
             dict(RULES[0], priority=1001, match={"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["203.0.113.0/24"]}}), RULES[1]]
    result = run_module(gcp_fleet_resource, {**base, "body": dict(policy, rules=wider)})
    assert result["action"] == "updated", result
    verbs = [urlsplit(c[1]).path.rsplit("/", 1)[-1] for c in fake.writes()[-2:]]
    assert verbs == ["patchRule", "addRule"]
    stored = fake.compute[f"projects/{P}/global/securityPolicies/armor"]["rules"]
    assert sorted(r["priority"] for r in stored) == [1000, 1001, 2147483647]
    result = run_module(gcp_fleet_resource, {**base, "body": dict(policy, rules=[wider[0], RULES[1]])})
    assert fake.writes()[-1][1].endswith("/removeRule") and len(fake.compute[f"projects/{P}/global/securityPolicies/armor"]["rules"]) == 2


def test_secret_one_reader_new_version_only_when_the_value_changes(fake, run_module):
    fake.service_accounts[f"fleet@{P}.iam.gserviceaccount.com"] = {"email": f"fleet@{P}.iam.gserviceaccount.com"}
    sec = {**AUTH, "secret_id": "tok", "value": "v1-token", "reader": f"serviceAccount:fleet@{P}.iam.gserviceaccount.com",
           "labels": {"app": "personaplex"}}
    assert run_module(gcp_fleet_secret, sec, check_mode=True)["actions"] == ["created", "new version", "policy"]
    assert fake.writes() == []
    assert run_module(gcp_fleet_secret, sec)["actions"] == ["created", "new version", "policy"]
    again = run_module(gcp_fleet_secret, sec)
    assert again["changed"] is False and "v1-token" not in json.dumps(again)
    assert run_module(gcp_fleet_secret, dict(sec, value="v2-token"))["actions"] == ["new version"]
    assert len(fake.fleet.secret_versions[f"projects/{P}/secrets/tok"]) == 2
    assert run_module(gcp_fleet_secret, {**AUTH, "secret_id": "tok", "state": "absent"})["actions"] == ["deleted"]
