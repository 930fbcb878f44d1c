# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small Google Cloud REST client for the project's own modules (google-auth + requests).

Errors are turned into GcpApiError with a hint that says what to do. The transport is a
requests adapter made by `transport_adapter()`, so tests swap it for a fake one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

COMPUTE = "https://compute.googleapis.com/compute/v1"
STORAGE = "https://storage.googleapis.com/storage/v1"
CRM = "https://cloudresourcemanager.googleapis.com/v1"
IAM = "https://iam.googleapis.com/v1"
SERVICEUSAGE = "https://serviceusage.googleapis.com/v1"
OSLOGIN = "https://oslogin.googleapis.com/v1"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

RETRY_STATUSES = (429, 500, 502, 503, 504)

# Shared argument spec for every module of this project that talks to Google Cloud.
AUTH_ARGUMENT_SPEC: dict[str, Any] = {
    "project": {"type": "str", "required": True},
    "auth_kind": {"type": "str", "default": "application", "choices": ["application", "serviceaccount", "machineaccount", "accesstoken"]},
    "service_account_file": {"type": "path"},
    "access_token": {"type": "str", "no_log": True},
    "scopes": {"type": "list", "elements": "str", "default": [CLOUD_PLATFORM_SCOPE]},
    "request_timeout": {"type": "int", "default": 60},
}


class GcpApiError(Exception):
    """An HTTP error from a Google API, with the parsed error body and a hint."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if not isinstance(err, dict):
            err = {"message": str(err)}
        self.message = str(err.get("message") or (body if isinstance(body, str) else "")).strip()
        self.grpc_status = str(err.get("status") or "")
        reasons = [str(e.get("reason")) for e in err.get("errors") or [] if isinstance(e, dict) and e.get("reason")]
        for detail in err.get("details") or []:
            if isinstance(detail, dict) and detail.get("reason"):
                reasons.append(str(detail["reason"]))
        self.reasons = reasons
        self.service = ""
        for detail in err.get("details") or []:
            if isinstance(detail, dict):
                self.service = str((detail.get("metadata") or {}).get("service") or self.service)
        super().__init__(self.describe())

    @property
    def is_quota(self) -> bool:
        text = " ".join([*self.reasons, self.grpc_status]).lower()
        return self.status == 429 or "quota" in text or "ratelimitexceeded" in text or "resource_exhausted" in text

    def hint(self) -> str:
        reasons = {r.lower() for r in self.reasons}
        if self.status == 401:
            return ("The credentials were refused. Run 'gcloud auth application-default login', or point "
                    "GCP_SERVICE_ACCOUNT_FILE at a valid service-account key file, then rerun.")
        if "requires a quota project" in self.message:
            return ("User credentials need a quota project: run 'gcloud auth application-default set-quota-project "
                    "YOUR_PROJECT_ID' (the gcp_project value), then rerun.")
        if "service_disabled" in reasons or "accessnotconfigured" in reasons:
            api = self.service or "the API named above"
            return (f"{api} is off in this project. With gcp_manage_apis: true (the default) preflight enables it; "
                    "if it is still off, link a billing account to the project (console: Billing) and check that you may "
                    f"enable services, or run 'gcloud services enable {api}' yourself, then rerun.")
        if self.is_quota:
            return ("A quota or rate limit was hit. For GPU quota see docs/gcp-quota.md (IAM & Admin > Quotas, "
                    "request an increase); for rate limits wait a minute and rerun.")
        if self.status == 403:
            return ("The identity lacks a permission on this resource. Use an account with Owner, or Editor plus "
                    "Project IAM Admin and Service Account Admin, on the project (docs/security.md).")
        if self.status == 404:
            return "Not found: check gcp_project, gcp_zone and the resource name."
        if self.status == 409:
            return "Conflict: the resource exists or was changed concurrently; rerun."
        if self.status == 412:
            return "Precondition failed: the resource changed while we updated it; rerun."
        return "See the message above."

    def describe(self) -> str:
        why = f" ({', '.join(self.reasons)})" if self.reasons else ""
        return f"{self.method} {self.url} -> HTTP {self.status}{why}: {self.message} {self.hint()}".strip()


class GcpOperationError(Exception):
    """A long-running Compute Engine operation finished with errors."""

    def __init__(self, operation: dict[str, Any]) -> None:
        self.operation = operation
        errors = ((operation.get("error") or {}).get("errors")) or []
        self.codes = [str(e.get("code")) for e in errors]
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        hint = ""
        if any("QUOTA" in c for c in self.codes):
            hint = " Request more quota: see docs/gcp-quota.md, or run playbooks/preflight.yml for the exact steps."
        elif any("RESOURCE_POOL_EXHAUSTED" in c or "STOCKOUT" in c for c in self.codes):
            hint = " The zone has no free GPU of this type right now: retry later or choose another gcp_zone."
        super().__init__(f"Operation {operation.get('operationType')} on {operation.get('targetLink')} failed: {text}.{hint}")


def _transport_error(method: str, url: str, exc: Exception) -> Exception:
    """Turn google-auth and connection errors into RuntimeError with what to do."""
    module = type(exc).__module__
    if module.startswith("google.auth") or module.startswith("google.oauth2"):
        return RuntimeError(
            f"{method} {url}: the credentials could not be used ({exc}). Run 'gcloud auth application-default login' "
            "again, or point GCP_SERVICE_ACCOUNT_FILE at a valid service-account key file, then rerun."
        )
    if module.startswith("requests") or isinstance(exc, OSError):
        return RuntimeError(f"{method} {url}: cannot reach Google Cloud ({exc}). Check the network/proxy of the control node and rerun.")
    return exc


def transport_adapter() -> Any:
    """The requests transport adapter mounted for https:// (tests replace this function)."""
    import requests.adapters

    return requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=4)


def load_credentials(auth_kind: str, service_account_file: str | None, access_token: str | None, scopes: list[str]) -> Any:
    """google-auth credentials for the chosen kind; errors say how to fix them."""
    try:
        import google.auth
        import google.auth.exceptions
        import google.oauth2.credentials
        import google.oauth2.service_account
    except ImportError as exc:  # pragma: no cover - depends on the control node
        raise RuntimeError("google-auth is missing on the control node: run 'make setup' (pip install google-auth requests).") from exc
    if auth_kind == "accesstoken":
        if not access_token:
            raise RuntimeError("gcp_auth_kind is accesstoken but no access token was given (GCP_ACCESS_TOKEN).")
        return google.oauth2.credentials.Credentials(access_token)
    if auth_kind == "serviceaccount":
        if not service_account_file:
            raise RuntimeError("gcp_auth_kind is serviceaccount but gcp_service_account_file is empty: export GCP_SERVICE_ACCOUNT_FILE=/path/key.json.")
        try:
            return google.oauth2.service_account.Credentials.from_service_account_file(service_account_file, scopes=scopes)
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"Cannot read the service-account key file {service_account_file}: {exc}. "
                "Download a JSON key for the account and point GCP_SERVICE_ACCOUNT_FILE at it."
            ) from exc
    if auth_kind == "machineaccount":
        import google.auth.compute_engine

        return google.auth.compute_engine.Credentials()
    try:
        creds, _ = google.auth.default(scopes=scopes)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise RuntimeError(
            "No Application Default Credentials found. Run 'gcloud auth application-default login' "
            "(or export GCP_SERVICE_ACCOUNT_FILE and set gcp_auth_kind: serviceaccount), then rerun."
        ) from exc
    return creds


class GcpClient:
    """JSON over HTTPS with retries on 429/5xx and Compute operation polling."""

    def __init__(self, session: Any, timeout: int = 60, max_retries: int = 4,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None) -> None:
        self.session = session
        self.timeout = timeout
        self.max_retries = max_retries
        self.sleep = sleep or (lambda seconds: time.sleep(seconds))
        self.clock = clock or (lambda: time.monotonic())
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, body: Any = None, params: dict[str, Any] | None = None,
                allow_404: bool = False) -> Any:
        attempt = 0
        while True:
            self.calls.append((method, url))
            try:
                resp = self.session.request(method, url, json=body, params=params, timeout=self.timeout)
            except Exception as exc:
                raise _transport_error(method, url, exc) from exc
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                attempt += 1
                self.sleep(min(2 ** attempt, 30))
                continue
            if allow_404 and resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                try:
                    payload: Any = resp.json()
                except ValueError:
                    payload = resp.text
                raise GcpApiError(method, url, resp.status_code, payload)
            if resp.status_code == 204 or not resp.content:
                return {}
            try:
                return resp.json()
            except ValueError:
                return {"raw": resp.text}

    def get(self, url: str, allow_404: bool = False, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", url, params=params, allow_404=allow_404)

    def post(self, url: str, body: Any = None) -> Any:
        return self.request("POST", url, body=body if body is not None else {})

    def wait_operation(self, operation: dict[str, Any], timeout: float = 900.0, interval: float = 3.0) -> dict[str, Any]:
        """Poll a Compute Engine operation until DONE; raise GcpOperationError on failure."""
        deadline = self.clock() + timeout
        op = operation
        while op.get("status") != "DONE":
            if self.clock() > deadline:
                raise TimeoutError(f"Operation {op.get('name')} still {op.get('status')} after {timeout:.0f} s; check the console and rerun.")
            self.sleep(interval)
            op = self.get(op["selfLink"])
        if op.get("error"):
            raise GcpOperationError(op)
        return op


def client_from_params(params: dict[str, Any]) -> GcpClient:
    """Build a client from a module's parameters (AUTH_ARGUMENT_SPEC)."""
    import requests
    from google.auth.transport.requests import AuthorizedSession, Request

    scopes = params.get("scopes") or [CLOUD_PLATFORM_SCOPE]
    creds = load_credentials(params["auth_kind"], params.get("service_account_file"), params.get("access_token"), scopes)
    token_session = requests.Session()
    token_session.mount("https://", transport_adapter())
    session = AuthorizedSession(creds, auth_request=Request(session=token_session))
    session.mount("https://", transport_adapter())
    session.headers["User-Agent"] = "personaplex-ansible"
    return GcpClient(session, timeout=int(params.get("request_timeout") or 60))


def error_result(exc: BaseException) -> dict[str, Any]:
    """A fail_json payload for any error raised by this client."""
    result: dict[str, Any] = {"msg": str(exc)}
    if isinstance(exc, GcpApiError):
        result.update(status=exc.status, reasons=exc.reasons, hint=exc.hint(), url=exc.url)
    if isinstance(exc, GcpOperationError):
        result.update(codes=exc.codes)
    return result


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
