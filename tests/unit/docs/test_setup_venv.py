"""The README's first command, `make setup`, never leaves a half-built venv behind
(scripts/setup-venv.sh, which every venv target of the Makefile uses).

Offline: pip is told --no-index, so the failing install fails for want of the package,
as it would without network; the venvs are made in a temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from project import REPO

SCRIPT = REPO / "scripts" / "setup-venv.sh"


def setup_venv(venv: Path, *pip_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), sys.executable, str(venv), *pip_args],
                          capture_output=True, text=True, check=False, timeout=300)


def test_a_failed_first_build_leaves_no_venv(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    proc = setup_venv(venv, "--no-index", "no-such-package-for-tests==1.0")
    assert proc.returncode != 0
    assert "removing the half-built" in proc.stderr
    assert not venv.exists()


def test_a_half_built_venv_is_rebuilt(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    # What `python3 -m venv` leaves when ensurepip is missing (Debian without python3-venv).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = setup_venv(venv, "--no-index", "--upgrade", "pip")  # satisfied by the bundled pip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "half-built" in proc.stdout
    assert subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], check=False).returncode == 0


def test_a_failed_update_keeps_a_working_venv(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = setup_venv(venv, "--no-index", "no-such-package-for-tests==1.0")
    assert proc.returncode != 0
    assert (venv / "bin" / "pip").exists()  # still usable; a rerun with network finishes it
