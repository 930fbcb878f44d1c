"""The REST client's credentials path (real google-auth, token endpoint mocked), error parsing, and cost math."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import gcp_deployment_resources
import gcp_storage_bucket_purge
import pytest
from ansible.module_utils import gcp_rest
from ansible.module_utils.gcp_cost import estimate
from conftest import AUTH, google_error
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@pytest.fixture
def service_account_file(tmp_path):
    """A service-account key file with a real RSA key (Google's JSON key format)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "my-voice-project", "private_key_id": "abc123", "private_key": pem,
        "client_email": "deployer@my-voice-project.iam.gserviceaccount.com", "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    path.chmod(0o600)
    return str(path)


def test_service_account_key_is_exchanged_for_a_token_then_used(transport, service_account_file):
    def token(request):
        form = parse_qs(request.body if isinstance(request.body, str) else request.body.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        return 200, {"access_token": "ya29.from-jwt", "expires_in": 3600, "token_type": "Bearer"}

    transport.add("POST", r"^https://oauth2.googleapis.com/token$", handler=token)
    transport.add("GET", r"/compute/v1/projects/my-voice-project$", body={"name": "my-voice-project"})
    client = gcp_rest.client_from_params({"auth_kind": "serviceaccount", "service_account_file": service_account_file,
                                          "access_token": None, "scopes": [gcp_rest.CLOUD_PLATFORM_SCOPE]})
    assert client.get(f"{gcp_rest.COMPUTE}/projects/my-voice-project")["name"] == "my-voice-project"
    assert transport.calls[-1]["auth"] == "Bearer ya29.from-jwt"


def test_missing_key_file_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="GCP_SERVICE_ACCOUNT_FILE"):
        gcp_rest.load_credentials("serviceaccount", str(tmp_path / "nope.json"), None, [gcp_rest.CLOUD_PLATFORM_SCOPE])


def test_no_adc_says_how_to_log_in(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    # Not on a Compute Engine VM either (skips google-auth's metadata-server probe).
    monkeypatch.setattr("google.auth._default._get_gce_credentials", lambda *_a, **_k: (None, None))
    with pytest.raises(RuntimeError, match="application-default login"):
        gcp_rest.load_credentials("application", None, None, [gcp_rest.CLOUD_PLATFORM_SCOPE])


def test_quota_exceeded_error_is_recognised():
    err = gcp_rest.GcpApiError("POST", "u", 403, google_error(
        403, "PERMISSION_DENIED", "Quota exceeded for quota metric 'Queries' of service 'compute.googleapis.com'", reason="rateLimitExceeded",
        info_reason="RATE_LIMIT_EXCEEDED", service="compute.googleapis.com"))
    assert err.is_quota and "quota" in err.hint().lower()
    assert "rateLimitExceeded" in str(err)


def test_non_json_error_body(transport):
    transport.add("GET", r".*", status=502, body=None)
    client = gcp_rest.GcpClient(_session(transport), max_retries=1, sleep=lambda _s: None)
    with pytest.raises(gcp_rest.GcpApiError) as info:
        client.get("https://compute.googleapis.com/x")
    assert info.value.status == 502 and len(transport.calls) == 2


def test_operation_wait_polls_until_done(transport):
    op_url = "https://compute.googleapis.com/compute/v1/projects/p/zones/z/operations/op-1"
    transport.add("GET", r"op-1$", body={"status": "RUNNING", "selfLink": op_url}, times=1)
    transport.add("GET", r"op-1$", body={"status": "DONE", "selfLink": op_url})
    client = gcp_rest.GcpClient(_session(transport), sleep=lambda _s: None)
    assert client.wait_operation({"status": "PENDING", "selfLink": op_url})["status"] == "DONE"


def _session(transport):
    import requests

    session = requests.Session()
    session.mount("https://", transport)
    return session


def test_finder_matches_labels_and_markers_only(transport, run_module):
    marker = "managed-by=personaplex-ansible deployment=personaplex"
    transport.add("GET", r"/aggregated/instances\?filter=", body={"items": {
        "zones/us-central1-a": {"instances": [
            {"name": "personaplex-vm", "zone": "projects/p/zones/us-central1-a", "status": "RUNNING",
             "labels": {"app": "personaplex", "deployment": "personaplex"}, "deletionProtection": True},
            # an API filter that matched loosely must not hand us another deployment's VM
            {"name": "personaplex-dev-vm", "zone": "projects/p/zones/us-central1-a", "status": "RUNNING",
             "labels": {"app": "personaplex", "deployment": "personaplex-dev"}}]},
        "zones/us-east1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE"}}}})
    transport.add("GET", r"/regions/us-central1/addresses", body={"items": [
        {"name": "personaplex-ip", "address": "34.1.2.3", "description": marker},
        {"name": "other-ip", "address": "34.9.9.9", "description": "someone else's"},
        {"name": "personaplex-dev-ip", "address": "34.9.9.8", "description": marker + "-dev"}]})
    transport.add("GET", r"/regions/us-central1/subnetworks", body={"items": [
        {"name": "personaplex-subnet", "description": "Subnet. " + marker}, {"name": "personaplex-dev-subnet", "description": marker + "-dev"}]})
    transport.add("GET", r"/global/networks", body={"items": [
        {"name": "default", "description": "Default network for the project"}, {"name": "personaplex-net", "description": marker},
        {"name": "personaplex-dev-net", "description": "PersonaPlex VPC. " + marker + "-dev"}]})
    transport.add("GET", r"/global/firewalls", body={"items": [
        {"name": "personaplex-allow-ssh", "description": "SSH. " + marker}, {"name": "default-allow-ssh", "description": "Allow SSH"}],
        "nextPageToken": "p2"}, times=1)
    transport.add("GET", r"/global/firewalls\?pageToken=p2", body={"items": [{"name": "personaplex-allow-voice", "description": marker},
        {"name": "personaplex-dev-allow-voice", "description": "PersonaPlex voice port. " + marker + "-dev"}]})
    transport.add("GET", r"storage/v1/b\?project=", body={"items": [
        {"name": "w1", "labels": {"app": "personaplex", "deployment": "personaplex"}},
        {"name": "w2", "labels": {"app": "personaplex", "deployment": "staging"}}, {"name": "w3"}]})
    transport.add("GET", r"/serviceAccounts/", status=404, body=google_error(404, "NOT_FOUND", "gone"))
    result = run_module(gcp_deployment_resources, dict(AUTH, deployment="personaplex", marker=marker, region="us-central1",
                                                        service_account_email="personaplex-vm@my-voice-project.iam.gserviceaccount.com"))
    assert [i["name"] for i in result["instances"]] == ["personaplex-vm"] and result["instances"][0]["zone"] == "us-central1-a"
    assert result["instances"][0]["deletion_protection"] is True
    assert result["subnetworks"] == [{"name": "personaplex-subnet", "region": "us-central1"}]
    assert result["networks"] == ["personaplex-net"]
    assert [a["name"] for a in result["addresses"]] == ["personaplex-ip"]
    assert result["firewalls"] == ["personaplex-allow-ssh", "personaplex-allow-voice"]
    assert result["buckets"] == ["w1"] and result["service_accounts"] == []
    assert "labels.deployment+%3D+%22personaplex%22" in transport.calls[0]["url"]
    assert transport.writes() == []


def test_bucket_purge_deletes_every_generation_then_the_bucket(transport, run_module):
    transport.add("GET", r"/b/my-weights$", body={"name": "my-weights"})
    transport.add("GET", r"/b/my-weights/o\?", body={"items": [{"name": "model.safetensors", "generation": "1"},
                                                              {"name": "voices/NATF2.pt", "generation": "7"}]})
    transport.add("DELETE", r".*", status=204, body=None)
    result = run_module(gcp_storage_bucket_purge, dict(AUTH, name="my-weights"))
    assert result["changed"] is True and result["deleted_objects"] == 2
    urls = [c["url"] for c in transport.writes()]
    assert urls[1].endswith("/o/voices%2FNATF2.pt?generation=7") and urls[-1].endswith("/b/my-weights")


def test_bucket_purge_of_missing_bucket_is_no_change(transport, run_module):
    transport.add("GET", r"/b/my-weights$", status=404, body=google_error(404, "NOT_FOUND", "No such bucket"))
    assert run_module(gcp_storage_bucket_purge, dict(AUTH, name="my-weights"))["changed"] is False


def test_cost_adds_up_and_credit_days(tables):
    prices = tables["prices"]
    cost = estimate(prices, "t4", False, "pd-balanced", 100, 17, 300)
    vm = 0.189999 + 0.35
    running = vm + 0.005 + (100 * 0.10 + 17 * 0.02) / 730
    stopped = 0.010 + (100 * 0.10 + 17 * 0.02) / 730
    assert cost["running_per_hour"] == pytest.approx(running, abs=1e-4)
    assert cost["stopped_per_hour"] == pytest.approx(stopped, abs=1e-4)
    assert cost["credit_days_24h"] == pytest.approx(300 / (24 * running), abs=0.05)
    assert cost["credit_days_8h_per_day"] == pytest.approx(300 / (8 * running + 16 * stopped), abs=0.05)
    assert set(cost["profiles"]) == {"t4", "l4", "a100"}
    assert all(p["spot_per_hour"] < p["on_demand_per_hour"] for p in cost["profiles"].values())
    assert cost["price_table_date"] == str(prices["date"]) and "cloud.google.com" in cost["price_table_source"]
    spot = estimate(prices, "t4", True, "pd-balanced", 100, 17, 300)
    assert spot["running_per_hour"] < cost["running_per_hour"]


def test_docs_quote_the_price_table(tables):
    """docs/instances-and-costs.md must show the table's date and hourly figures (one source of prices)."""
    from conftest import REPO

    doc = (REPO / "docs" / "instances-and-costs.md").read_text()
    prices = tables["prices"]
    assert str(prices["date"]) in doc
    for name, row in prices["profiles"].items():
        on_demand = float(row["machine_on_demand"]) + float(row["gpu_on_demand"])
        spot = float(row["machine_spot"]) + float(row["gpu_spot"])
        line = next(ln for ln in doc.splitlines() if ln.startswith(f"| {name} | {on_demand:.3f} |"))
        assert f"| {spot:.3f} |" in line, line
