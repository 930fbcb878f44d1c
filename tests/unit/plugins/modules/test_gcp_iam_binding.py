"""gcp_iam_binding: read-modify-write with the etag, conflicts, errors, check mode (HTTP mocked)."""

from __future__ import annotations

import json

import gcp_iam_binding
from standins.google_http import AUTH, google_error

SA = "serviceAccount:personaplex-vm@my-voice-project.iam.gserviceaccount.com"
OWNER = "user:alice@example.com"
GET_PROJECT = r"cloudresourcemanager.googleapis.com/v1/projects/my-voice-project:getIamPolicy$"
SET_PROJECT = r"cloudresourcemanager.googleapis.com/v1/projects/my-voice-project:setIamPolicy$"
BUCKET_IAM = r"storage.googleapis.com/storage/v1/b/my-weights/iam"


def project_args(**extra):
    return dict(AUTH, resource_type="project", resource="my-voice-project", role="roles/logging.logWriter", members=[SA], **extra)


def policy(etag="BwWWja0YfJA=", extra_members=()):
    bindings = [{"role": "roles/owner", "members": [OWNER]}]
    if extra_members:
        bindings.append({"role": "roles/logging.logWriter", "members": list(extra_members)})
    return {"version": 1, "etag": etag, "bindings": bindings}


def echo_policy(request):
    sent = json.loads(request.body)["policy"]
    return 200, dict(sent, etag="BwWWja0YfJB=")


def test_adds_member_with_the_etag_it_read(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy())
    transport.add("POST", SET_PROJECT, handler=echo_policy)
    result = run_module(gcp_iam_binding, project_args(), diff=True)
    assert result["changed"] is True and result["members"] == [SA]
    sent = transport.writes()[0]["body"]
    assert sent["policy"]["etag"] == "BwWWja0YfJA="
    assert {"role": "roles/owner", "members": [OWNER]} in sent["policy"]["bindings"]
    assert {"role": "roles/logging.logWriter", "members": [SA]} in sent["policy"]["bindings"]
    assert result["diff"] == {"before": {"roles/logging.logWriter": []}, "after": {"roles/logging.logWriter": [SA]}}
    assert transport.calls[0]["auth"] == "Bearer ya29.test-token"


def test_present_member_is_unchanged_and_nothing_is_written(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy(extra_members=[SA]))
    result = run_module(gcp_iam_binding, project_args())
    assert result["changed"] is False
    assert transport.writes() == []


def test_check_mode_reports_the_change_without_writing(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy())
    result = run_module(gcp_iam_binding, project_args(), check_mode=True)
    assert result["changed"] is True
    assert transport.writes() == []


def test_concurrent_change_409_restarts_read_modify_write(transport, run_module):
    # Someone else added a member between our read and our write: Resource Manager answers
    # 409 ABORTED; we must re-read (new etag, their member kept) and write again.
    transport.add("POST", GET_PROJECT, body=policy(etag="etag-1"), times=1)
    transport.add("POST", GET_PROJECT, body=policy(etag="etag-2", extra_members=["user:bob@example.com"]))
    transport.add("POST", SET_PROJECT, status=409, times=1,
                  body=google_error(409, "ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."))
    transport.add("POST", SET_PROJECT, handler=echo_policy)
    result = run_module(gcp_iam_binding, project_args())
    assert result["changed"] is True and result["attempts"] == 2
    final = transport.writes()[-1]["body"]["policy"]
    assert final["etag"] == "etag-2"
    assert {"role": "roles/logging.logWriter", "members": sorted(["user:bob@example.com", SA])} in final["bindings"]


def test_gives_up_after_max_retries_conflicts(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy())
    transport.add("POST", SET_PROJECT, status=409, body=google_error(409, "ABORTED", "There were concurrent policy changes."))
    result = run_module(gcp_iam_binding, project_args(max_retries=2))
    assert result.failed
    assert "Gave up after 3 concurrent-modification conflicts" in result["msg"]
    assert len(transport.writes()) == 3


def test_bucket_policy_uses_put_and_retries_on_412(transport, run_module):
    bucket_policy = {"kind": "storage#policy", "resourceId": "projects/_/buckets/my-weights", "version": 1, "etag": "CAE=",
                     "bindings": [{"role": "roles/storage.legacyBucketOwner", "members": ["projectOwner:my-voice-project"]}]}
    transport.add("GET", BUCKET_IAM, body=bucket_policy)
    transport.add("PUT", BUCKET_IAM, status=412, times=1,
                  body=google_error(412, "FAILED_PRECONDITION", "Precondition Failed", reason="conditionNotMet"))
    transport.add("PUT", BUCKET_IAM, handler=lambda req: (200, json.loads(req.body)))
    args = dict(AUTH, resource_type="bucket", resource="my-weights", role="roles/storage.objectUser", members=[SA])
    result = run_module(gcp_iam_binding, args)
    assert result["changed"] is True and result["attempts"] == 2
    gets = [c for c in transport.calls if c["method"] == "GET"]
    assert len(gets) == 2 and "optionsRequestedPolicyVersion=3" in gets[0]["url"]
    assert transport.writes()[-1]["body"]["etag"] == "CAE="


def test_absent_removes_only_that_member(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy(extra_members=[SA, "user:bob@example.com"]))
    transport.add("POST", SET_PROJECT, handler=echo_policy)
    result = run_module(gcp_iam_binding, project_args(state="absent"))
    assert result["changed"] is True and result["members"] == ["user:bob@example.com"]


def test_absent_drops_an_emptied_binding(transport, run_module):
    transport.add("POST", GET_PROJECT, body=policy(extra_members=[SA]))
    transport.add("POST", SET_PROJECT, handler=echo_policy)
    run_module(gcp_iam_binding, project_args(state="absent"))
    roles = [b["role"] for b in transport.writes()[0]["body"]["policy"]["bindings"]]
    assert roles == ["roles/owner"]


def test_conditional_binding_of_the_same_role_is_left_alone(transport, run_module):
    conditional = {"role": "roles/logging.logWriter", "members": ["user:carol@example.com"],
                   "condition": {"title": "expires", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}
    transport.add("POST", GET_PROJECT, body={"version": 3, "etag": "e", "bindings": [conditional]})
    transport.add("POST", SET_PROJECT, handler=echo_policy)
    run_module(gcp_iam_binding, project_args())
    bindings = transport.writes()[0]["body"]["policy"]["bindings"]
    assert conditional in bindings and {"role": "roles/logging.logWriter", "members": [SA]} in bindings
    assert transport.writes()[0]["body"]["policy"]["version"] == 3


def test_permission_denied_403_says_what_to_do(transport, run_module):
    transport.add("POST", GET_PROJECT, status=403, body=google_error(
        403, "PERMISSION_DENIED", "The caller does not have permission", reason="forbidden"))
    result = run_module(gcp_iam_binding, project_args())
    assert result.failed and result["status"] == 403
    assert "Project IAM Admin" in result["msg"]
    assert transport.writes() == []


def test_missing_bucket_404(transport, run_module):
    transport.add("GET", BUCKET_IAM, status=404, body=google_error(404, "NOT_FOUND", "The specified bucket does not exist.", reason="notFound"))
    result = run_module(gcp_iam_binding, dict(AUTH, resource_type="bucket", resource="my-weights", role="roles/storage.objectUser", members=[SA]))
    assert result.failed and result["status"] == 404
    assert "The specified bucket does not exist." in result["msg"]


def test_api_disabled_403_names_the_api(transport, run_module):
    transport.add("POST", GET_PROJECT, status=403, body=google_error(
        403, "PERMISSION_DENIED", "Cloud Resource Manager API has not been used in project 123 before or it is disabled.",
        reason="accessNotConfigured", info_reason="SERVICE_DISABLED", service="cloudresourcemanager.googleapis.com"))
    result = run_module(gcp_iam_binding, project_args())
    assert "gcloud services enable cloudresourcemanager.googleapis.com" in result["msg"]


def test_bad_role_fails_before_any_call(transport, run_module):
    result = run_module(gcp_iam_binding, dict(project_args(), role="logWriter"))
    assert result.failed and "roles/NAME" in result["msg"]
    assert transport.calls == []
