"""Scale to zero: what the first caller gets while no fleet instance is ready.

Google's load balancer answers 502/503 itself when no backend is healthy. The fleet's URL map
carries a custom error response policy (UrlMap.defaultCustomErrorResponsePolicy) that replaces
that answer with the page of a backend bucket, as HTTP 503, and the backend bucket adds
Retry-After (https://cloud.google.com/load-balancing/docs/https/custom-error-response).
Here: the plan builds it, the fake refuses what the documented API refuses, and a small model
of the documented matching rules, fed with what the fake holds, answers an HTTP caller. That
Google's own load balancer answers the same (and adds the header on an error response) is for
tests/integration/real_cloud/test_real_cloud_fleet_zero.yml.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ansible.module_utils.gcp_fleet import STATUS_OBJECT, build_fleet, status_bucket_name, status_page
from fleet_examples import CERT, PLAN, P, by_kind, fleet_settings, profile
from standins.fake_gcp import FakeGcp
from standins.fake_gcp_fleet import rel

C = f"/compute/v1/projects/{P}"
BUCKET = f"{P}-personaplex-fleet-status"


def post(fake: FakeGcp, collection: str, body: dict[str, Any]) -> tuple[int, Any]:
    return fake.handle("POST", "compute.googleapis.com", f"{C}/{collection}", {}, body)


def message(answer: tuple[int, Any]) -> str:
    return str(answer[1]["error"]["message"])


# --- the plan ---------------------------------------------------------------------------------
def test_url_map_sends_no_backend_errors_to_the_starting_page_as_503() -> None:
    fleet = build_fleet(PLAN, profile(), fleet_settings(min_instances=0, boot_s=600))
    url_map = by_kind(fleet, "urlMap")["body"]
    policy = url_map["defaultCustomErrorResponsePolicy"]
    assert policy["errorService"].endswith(f"/projects/{P}/global/backendBuckets/personaplex-fleet-status")
    # Only the load balancer's "no backend" codes: Cloud Armor's 403 and the app's own answers pass.
    assert policy["errorResponseRules"] == [{"matchResponseCodes": ["502", "503"], "path": f"/{STATUS_OBJECT}",
                                             "overrideResponseCode": 503}]
    bucket = by_kind(fleet, "backendBucket")
    assert bucket["body"]["bucketName"] == BUCKET
    assert bucket["body"]["customResponseHeaders"] == ["Retry-After: 600", "Cache-Control: no-store"]
    kinds = [r["kind"] for r in fleet["resources"]]
    assert kinds.index("backendBucket") < kinds.index("urlMap")  # created before its user
    page = fleet["status_page"]
    assert page["bucket"] == BUCKET and page["location"] == "US-CENTRAL1" and page["retry_after_s"] == 600
    assert page["labels"]["deployment"] == "personaplex"
    assert "retry in 10 minutes" in page["html"] and "Retry-After: 600" in page["html"]


def test_the_page_says_minutes_rounded_up_and_follows_boot_s() -> None:
    assert "retry in 2 minutes" in status_page(61)
    assert "retry in 1 minutes" in status_page(60)
    short = build_fleet(PLAN, profile(), fleet_settings(boot_s=300))
    assert "Retry-After: 300" in by_kind(short, "backendBucket")["body"]["customResponseHeaders"]
    assert "retry in 5 minutes" in short["status_page"]["html"]


def test_bucket_name_fits_the_global_namespace() -> None:
    assert status_bucket_name("p", "d") == "p-d-fleet-status"
    long = status_bucket_name("a-very-long-project-id-123456", "a-rather-long-deployment-name")
    assert len(long) <= 63 and long.startswith("a-rather-long-deployment-name-fleet-status-")
    assert long != status_bucket_name("a-very-long-project-id-654321", "a-rather-long-deployment-name")


# --- the fake: documented refusals ------------------------------------------------------------
@pytest.fixture
def fake() -> FakeGcp:
    f = FakeGcp(P)
    f.handle("POST", "storage.googleapis.com", "/storage/v1/b", {"project": [P]},
             {"name": BUCKET, "location": "US-CENTRAL1", "labels": {"app": "personaplex", "deployment": "personaplex"}})
    fleet = build_fleet(PLAN, profile(), fleet_settings(certificate_pem=CERT))
    group = f"projects/{P}/regions/us-central1/instanceGroups/personaplex-fleet"
    f.compute[group] = {"name": "personaplex-fleet", "selfLink": f"https://www.googleapis.com/compute/v1/{group}"}
    assert post(f, "global/healthChecks", by_kind(fleet, "healthCheck")["body"])[0] == 200
    be = dict(by_kind(fleet, "backendService")["body"])
    assert post(f, "global/backendServices", be)[0] == 200
    return f


def test_fake_refuses_what_the_custom_error_policy_refuses(fake: FakeGcp) -> None:
    fleet = build_fleet(PLAN, profile(), fleet_settings())
    bucket_body = by_kind(fleet, "backendBucket")["body"]
    assert "bucket" in message(post(fake, "global/backendBuckets", dict(bucket_body, bucketName="nobody-s-bucket")))
    assert "customResponseHeaders" in message(post(fake, "global/backendBuckets",
                                                   dict(bucket_body, name="hdr", customResponseHeaders=["Retry-After 600"])))
    assert post(fake, "global/backendBuckets", bucket_body)[0] == 200
    url_map = by_kind(fleet, "urlMap")["body"]
    policy = url_map["defaultCustomErrorResponsePolicy"]
    rules = policy["errorResponseRules"]
    # Each documented refusal, one at a time (the URL map is never created by these).
    assert "must specify errorService" in message(post(fake, "global/urlMaps", dict(
        url_map, defaultCustomErrorResponsePolicy={"errorResponseRules": rules})))
    not_bucket = dict(policy, errorService=f"projects/{P}/global/backendServices/personaplex-fleet-be")
    assert "not an existing backend bucket" in message(post(fake, "global/urlMaps", dict(url_map, defaultCustomErrorResponsePolicy=not_bucket)))
    for codes in (["600"], ["5xx", "5xx"], ["50x"]):
        bad = dict(policy, errorResponseRules=[dict(rules[0], matchResponseCodes=codes)])
        assert "matchResponseCodes" in message(post(fake, "global/urlMaps", dict(url_map, defaultCustomErrorResponsePolicy=bad))), codes
    relative = dict(policy, errorResponseRules=[dict(rules[0], path=STATUS_OBJECT)])
    assert "full path" in message(post(fake, "global/urlMaps", dict(url_map, defaultCustomErrorResponsePolicy=relative)))
    # Classic (EXTERNAL) load balancers have no custom error responses.
    classic = fake.compute[f"projects/{P}/global/backendServices/personaplex-fleet-be"]
    classic["loadBalancingScheme"] = "EXTERNAL"
    assert "only for global external Application Load Balancers" in message(post(fake, "global/urlMaps", url_map))
    classic["loadBalancingScheme"] = "EXTERNAL_MANAGED"
    assert post(fake, "global/urlMaps", url_map)[0] == 200
    # The URL map uses the backend bucket: deleting it first is refused, as Compute refuses it.
    in_use = fake.handle("DELETE", "compute.googleapis.com", f"{C}/global/backendBuckets/personaplex-fleet-status", {}, None)
    assert in_use[0] == 400 and in_use[1]["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"


def test_fake_refuses_a_failover_backend_on_the_https_load_balancer(fake: FakeGcp) -> None:
    be = dict(by_kind(build_fleet(PLAN, profile(), fleet_settings()), "backendService")["body"], name="be-failover",
              failoverPolicy={"failoverRatio": 0.1})
    assert "only supported by passthrough Network Load Balancers" in message(post(fake, "global/backendServices", be))


def test_fake_storage_keeps_the_page_and_refuses_public_access_when_prevented(fake: FakeGcp) -> None:
    up = fake.handle("POST", "storage.googleapis.com", f"/upload/storage/v1/b/{BUCKET}/o", {"uploadType": ["media"], "name": [STATUS_OBJECT]},
                     "<h1>starting</h1>", {"Content-Type": "text/html; charset=utf-8"})
    assert up[0] == 200 and up[1]["md5Hash"] and up[1]["contentType"] == "text/html; charset=utf-8"
    missing_type = fake.handle("POST", "storage.googleapis.com", f"/upload/storage/v1/b/{BUCKET}/o", {"name": ["x"]}, "x")
    assert missing_type[0] == 400
    assert fake.handle("DELETE", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}", {}, None)[0] == 409  # not empty
    policy = fake.handle("GET", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}/iam", {}, None)[1]
    public = dict(policy, bindings=policy["bindings"] + [{"role": "roles/storage.objectViewer", "members": ["allUsers"]}])
    fake.fleet.enforce_public_access_prevention = True
    assert fake.handle("PUT", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}/iam", {}, public)[0] == 412
    fake.fleet.enforce_public_access_prevention = False
    assert fake.handle("PUT", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}/iam", {}, public)[0] == 200
    assert fake.handle("DELETE", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}/o/{STATUS_OBJECT}", {}, None)[0] == 204
    assert fake.handle("DELETE", "storage.googleapis.com", f"/storage/v1/b/{BUCKET}", {}, None)[0] == 204


# --- a model of the documented matching, fed with the fake's resources ------------------------
class LoadBalancerModel:
    """What the custom error response overview documents, and nothing more: when no backend is
    healthy the load balancer generates an error (502 or 503); a rule of the URL map's policy
    whose matchResponseCodes holds that code (an exact code before 4xx/5xx) sends the request to
    errorService's bucket at `path`, answered with overrideResponseCode; the backend bucket's
    customResponseHeaders are added to what it serves."""

    def __init__(self, fake: FakeGcp, url_map: str, lb_code: int) -> None:
        self.fake, self.url_map, self.lb_code = fake, url_map, lb_code

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        policy = self.fake.compute[self.url_map].get("defaultCustomErrorResponsePolicy") or {}
        rules = policy.get("errorResponseRules") or []
        exact = [r for r in rules if str(self.lb_code) in r.get("matchResponseCodes", [])]
        ranged = [r for r in rules if f"{str(self.lb_code)[0]}xx" in r.get("matchResponseCodes", [])]
        rule = (exact or ranged or [None])[0]
        if rule is None:
            return self.lb_code, {}, b"no healthy upstream"
        backend = self.fake.compute[rel(P, policy["errorService"])]
        obj = self.fake.fleet.objects.get((backend["bucketName"], rule["path"].lstrip("/")))
        if obj is None:  # "If load balancer cannot reach the backendBucket, a simple Not Found Error will be returned"
            return int(rule.get("overrideResponseCode", self.lb_code)), {}, b"Not Found"
        headers = dict(h.split(":", 1) for h in backend.get("customResponseHeaders") or [])
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        headers["Content-Type"] = obj["contentType"]
        return int(rule.get("overrideResponseCode", self.lb_code)), headers, obj["data"]


def serve_model(model: LoadBalancerModel) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            status, headers, body = model.answer()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("lb_code", [502, 503])
def test_first_caller_at_zero_instances_gets_503_retry_after_and_the_message(fake: FakeGcp, lb_code: int) -> None:
    fleet = build_fleet(PLAN, profile(), fleet_settings(min_instances=0))
    page = fleet["status_page"]
    fake.handle("POST", "storage.googleapis.com", f"/upload/storage/v1/b/{BUCKET}/o", {"uploadType": ["media"], "name": [page["object"]]},
                page["html"], {"Content-Type": "text/html; charset=utf-8"})
    assert post(fake, "global/backendBuckets", by_kind(fleet, "backendBucket")["body"])[0] == 200
    assert post(fake, "global/urlMaps", by_kind(fleet, "urlMap")["body"])[0] == 200
    server = serve_model(LoadBalancerModel(fake, f"projects/{P}/global/urlMaps/personaplex-fleet-lb", lb_code))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        # A browser opening the page, then the voice client's WebSocket handshake: both answered
        # before any instance exists, by the load balancer.
        for headers in ({}, {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}):
            conn.request("GET", "/ws", headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 503
            assert resp.getheader("Retry-After") == "600"
            assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
            assert "The voice fleet is starting" in body and "retry in 10 minutes" in body
    finally:
        server.shutdown()

    # Without the policy (the fleet before this change) the caller got the bare load balancer error.
    fake.compute[f"projects/{P}/global/urlMaps/personaplex-fleet-lb"].pop("defaultCustomErrorResponsePolicy")
    status, headers, body = LoadBalancerModel(fake, f"projects/{P}/global/urlMaps/personaplex-fleet-lb", lb_code).answer()
    assert (status, "Retry-After" in headers) == (lb_code, False)
