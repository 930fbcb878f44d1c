"""The README's commands on a stock Debian 12, from the converge's logs.

converge.yml ran, as root: scripts/setup-venv.sh alone while python3-venv was missing,
the README's apt-get line, `make setup`, and `make plan` with the settings in environment
variables and no Google credentials. A step that failed has already failed the converge;
these tests check that each step did what the README and the script say.
"""

from __future__ import annotations

LOGS = "/root/readme-run"
REPO = "/root/personaplex"


def log(host, name: str) -> str:
    """A step's output, whitespace collapsed (messages wrap)."""
    return " ".join(host.file(f"{LOGS}/{name}.log").content_string.split())


def test_the_image_is_stock(host):
    # The premise: no make, no python3-venv, and `python3 -m venv` fails (Debian's ensurepip is in python3-venv).
    before = log(host, "before")
    assert "make ii" not in before
    assert "python3-venv ii" not in before
    assert "venv rc=0" not in before
    assert "ensurepip is not available" in before


def test_setup_venv_installs_python3_venv_as_root(host):
    out = log(host, "setup-venv")
    assert "installing python3-venv (apt-get)" in out
    assert host.run("/tmp/venv-selfcheck/bin/python -m pip --version").rc == 0


def test_readme_apt_line_installs_what_the_commands_need(host):
    for package in ("make", "python3-venv", "git", "curl", "openssh-client"):
        assert host.package(package).is_installed, package
    # preflight tells the user to run ssh-keygen; make deploy connects over ssh.
    for tool in ("make", "git", "curl", "ssh", "ssh-keygen"):
        assert host.exists(tool), tool


def test_make_setup_builds_the_toolchain(host):
    # With .venv/bin first on PATH, as the Makefile runs them (molecule calls ansible-config).
    for tool in ("ansible-playbook", "molecule", "ansible-lint", "pytest"):
        result = host.run(
            f"PATH={REPO}/.venv/bin:$PATH {REPO}/.venv/bin/{tool} --version"
        )
        assert result.rc == 0, f"{tool}: {result.stdout[-500:]} {result.stderr[-500:]}"
    # google.cloud comes with the pinned ansible package.
    cols = host.check_output(
        f"{REPO}/.venv/bin/ansible-galaxy collection list google.cloud"
    )
    assert "google.cloud" in cols


def test_make_plan_prints_the_plan_offline(host):
    out = log(host, "plan")
    assert "n1-standard-4 + 1 x nvidia-tesla-t4" in out
    assert "Voice (8998) from 198.51.100.0/24" in out
    assert "State: not read: No Application Default Credentials" in out
    assert "write API calls: 0" in out
    assert "failed=0" in out
