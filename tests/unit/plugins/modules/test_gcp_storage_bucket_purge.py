"""gcp_storage_bucket_purge: every object generation, then the bucket (HTTP mocked)."""

from __future__ import annotations

import gcp_storage_bucket_purge
from standins.google_http import AUTH, google_error


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
