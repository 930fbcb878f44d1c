"""gcp_rest: the REST client's credentials path (real google-auth, token endpoint mocked), error parsing, operation polling."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from ansible.module_utils import gcp_rest
from project import write_service_account_key
from standins.google_http import google_error


@pytest.fixture
def service_account_file(tmp_path):
    """A service-account key file with a real RSA key made now (Google's JSON key format)."""
    return str(write_service_account_key(tmp_path / "key.json", "my-voice-project"))


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


