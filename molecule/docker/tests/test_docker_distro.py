"""Docker role, distribution source: the engine the role installed really runs containers.

Runs inside the molecule container via testinfra. Every test checks something the
role is responsible for; each would fail if the role stopped doing it.
"""

import json

import pytest

testinfra_hosts = ["podman://molecule-docker-distro"]

DAEMON_JSON = "/etc/docker/daemon.json"
TEST_IMAGE = "molecule-local/busybox:test"


def test_distro_engine_installed(host):
    assert host.package("docker.io").is_installed


def test_upstream_source_absent(host):
    # docker_source=distro: Docker's own repository must not be configured.
    assert not host.file("/etc/apt/sources.list.d/docker.sources").exists
    assert not host.file("/etc/apt/keyrings/docker.asc").exists


def test_daemon_json_content(host):
    f = host.file(DAEMON_JSON)
    assert f.is_file
    assert f.user == "root"
    assert f.mode == 0o644
    expected = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "storage-driver": "vfs",
        "default-cgroupns-mode": "private",
    }
    # Role defaults (log caps) merged with the scenario's extra options, rendered
    # by the role (sorted keys, 2-space indent, final newline).
    assert json.loads(f.content_string) == expected
    assert f.content.decode() == json.dumps(expected, indent=2, sort_keys=True) + "\n"


def test_service_enabled_and_active(host):
    svc = host.service("docker")
    assert svc.is_enabled
    assert svc.is_running


def test_daemon_uses_the_options(host):
    # dockerd read daemon.json: vfs storage and json-file logging are in effect.
    # (Plain `docker info`: testinfra's ansible backend would template a Go "{{ }}" format.)
    info = host.check_output("docker info")
    assert "Storage Driver: vfs" in info
    assert "Logging Driver: json-file" in info


def test_user_in_docker_group(host):
    assert "docker" in host.user("molecule-docker-user").groups


@pytest.fixture(scope="module")
def local_image(host):
    """Import a one-binary image (static busybox) without any registry."""
    host.run_test(
        "set -e; rm -rf /tmp/bbroot; mkdir -p /tmp/bbroot/bin;"
        " cp /bin/busybox /tmp/bbroot/bin/busybox; ln -s busybox /tmp/bbroot/bin/sh"
    )
    host.check_output(f"tar -C /tmp/bbroot -c . | docker import - {TEST_IMAGE}")
    yield TEST_IMAGE
    host.run(f"docker rmi -f {TEST_IMAGE}")


def test_runs_a_container(host, local_image):
    out = host.check_output(
        f"docker run --rm {local_image} /bin/busybox echo hello-from-container"
    )
    assert out.strip() == "hello-from-container"


def test_container_logs_are_capped(host, local_image):
    name = "molecule-logcap"
    host.run(f"docker rm -f {name}")
    host.check_output(f"docker run --name {name} {local_image} /bin/busybox true")
    try:
        log_config = json.loads(host.check_output(f"docker inspect {name}"))[0][
            "HostConfig"
        ]["LogConfig"]
    finally:
        host.run(f"docker rm -f {name}")
    assert log_config == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
