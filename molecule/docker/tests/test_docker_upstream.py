"""Docker role, upstream source, against the stand-in of Docker's apt repository.

Real: the deb822 source and Signed-By key fetched over HTTP, apt's signature check,
the version pin (the repository also holds a newer release), removal of conflicting
packages, daemon.json, the service unit enabled and started, the docker group.
Stand-in: the packages (Docker's names and versions; the stand-in dockerd only
sleeps, so no container is run here; the distro instance runs real containers).
"""

import json

import pytest

testinfra_hosts = ["podman://molecule-docker-upstream"]

SOURCES = "/etc/apt/sources.list.d/docker.sources"
KEYRING = "/etc/apt/keyrings/docker.asc"
REPO = "http://127.0.0.1:8766/linux/debian"
PINNED = "5:28.5.1-1~debian.12~bookworm"
NEWEST = "5:28.5.2-1~debian.12~bookworm"


def test_deb822_source(host):
    f = host.file(SOURCES)
    assert f.is_file
    assert f.mode == 0o644
    fields = dict(
        line.split(": ", 1) for line in f.content_string.splitlines() if ": " in line
    )
    assert fields["Types"] == "deb"
    assert fields["URIs"] == REPO
    assert fields["Suites"] == "bookworm"
    assert fields["Components"] == "stable"
    assert fields["Architectures"] == "amd64"
    assert fields["Signed-By"] == KEYRING


def test_keyring_is_the_repository_key(host):
    served = host.check_output(
        'python3 -c "import urllib.request,sys; sys.stdout.write('
        f"urllib.request.urlopen('{REPO}/gpg').read().decode())\""
    )
    assert "BEGIN PGP PUBLIC KEY BLOCK" in served
    assert host.file(KEYRING).content_string.strip() == served.strip()


def test_apt_verified_the_signed_index(host):
    # apt only lists packages from a source whose InRelease signature it accepted.
    policy = host.check_output("apt-cache policy docker-ce")
    assert "127.0.0.1:8766/linux/debian bookworm/stable amd64 Packages" in policy
    assert NEWEST in policy


@pytest.mark.parametrize("name", ["docker-ce", "docker-ce-cli"])
def test_engine_pinned(host, name):
    pkg = host.package(name)
    assert pkg.is_installed
    assert pkg.version == PINNED


@pytest.mark.parametrize(
    "name", ["containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
)
def test_companions_installed(host, name):
    assert host.package(name).is_installed


def test_distro_engine_absent(host):
    assert not host.package("docker.io").is_installed


def test_daemon_json_defaults(host):
    expected = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }
    content = host.file("/etc/docker/daemon.json").content.decode()
    assert content == json.dumps(expected, indent=2, sort_keys=True) + "\n"


def test_service_enabled_and_active(host):
    svc = host.service("docker")
    assert svc.is_enabled
    assert svc.is_running


def test_user_in_docker_group(host):
    assert "docker" in host.user("molecule-docker-user").groups


def test_preexisting_docker_list_replaced(host):
    # prepare.yml seeds docker.list with another Signed-By for the same repository.
    assert not host.file("/etc/apt/sources.list.d/docker.list").exists
    cmd = host.run("apt-get update")
    assert cmd.rc == 0, cmd.stderr
    assert "Conflicting values" not in cmd.stdout + cmd.stderr
