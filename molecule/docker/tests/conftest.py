"""Pytest settings for the docker scenario's testinfra tests.

The verifier passes both instances with --hosts, and testinfra then ignores a
module's `testinfra_hosts`. Honour it here: a test module that names its instances
runs against those only (deselected, not skipped, elsewhere).
"""

import pytest


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        wanted = getattr(getattr(item, "module", None), "testinfra_hosts", None)
        callspec = getattr(item, "callspec", None)
        host = callspec.params.get("_testinfra_host") if callspec else None
        if wanted and host is not None and host.backend.get_pytest_id() not in wanted:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
