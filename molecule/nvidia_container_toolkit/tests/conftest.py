"""Shared pytest settings for this scenario's testinfra tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs an NVIDIA GPU; skips itself where none exists"
    )
