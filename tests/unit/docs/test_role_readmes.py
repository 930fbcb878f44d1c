"""Every role is self-contained and documented in one shape, and the project has one licence.

- each role's README has the five sections, in order, and names every variable of its
  defaults/main.yml; every default carries a comment; the Molecule scenarios it names exist;
- molecule/README.md's role table lists every role;
- LICENSE is the GPL v3 text, and every role meta, module header and app/pyproject.toml
  says GPL-3.0-or-later.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())
SECTIONS = ["What it does", "Variables", "Example playbook", "Tested by", "Only real hardware can confirm"]
SPDX = "GPL-3.0-or-later"


def defaults_names(role: str) -> list[str]:
    return list((yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}))


def test_every_role_found() -> None:
    assert len(ROLES) >= 11 and "gcp_infra" in ROLES and "gcp_fleet" in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_readme_has_the_five_sections_in_order(role: str) -> None:
    text = (REPO / "roles" / role / "README.md").read_text()
    assert re.findall(r"^## (.+)$", text, re.M) == SECTIONS


@pytest.mark.parametrize("role", ROLES)
def test_readme_names_every_default(role: str) -> None:
    text = (REPO / "roles" / role / "README.md").read_text()
    missing = [n for n in defaults_names(role) if f"`{n}`" not in text]
    assert not missing, f"roles/{role}/README.md does not name {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role: str) -> None:
    lines = (REPO / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    bare = [m.group(1) for i, line in enumerate(lines) if (m := re.match(r"^([a-z_0-9]+):", line))
            and " # " not in line and not (i and lines[i - 1].startswith("#") and not lines[i - 1].startswith("# ---"))]
    assert not bare, f"roles/{role}/defaults/main.yml: no comment for {bare}"


@pytest.mark.parametrize("role", ROLES)
def test_named_scenarios_exist(role: str) -> None:
    tested_by = (REPO / "roles" / role / "README.md").read_text().split("## Tested by", 1)[1].split("\n## ", 1)[0]
    for scenario in re.findall(r"\*\*`([a-z_]+)`\*\*", tested_by):
        assert (REPO / "molecule" / scenario / "molecule.yml").is_file(), f"{role}: no scenario {scenario}"


def test_molecule_readme_maps_every_role() -> None:
    text = (REPO / "molecule" / "README.md").read_text()
    table = text.split("| Role | Molecule scenarios", 1)[1].split("\n\n", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    assert rows == set(ROLES)


def test_license_file_is_the_gpl3() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("role", ROLES)
def test_role_meta_licence(role: str) -> None:
    meta = yaml.safe_load((REPO / "roles" / role / "meta" / "main.yml").read_text())
    assert meta["galaxy_info"]["license"] == SPDX


def test_module_headers_and_app_agree() -> None:
    files = sorted((REPO / "plugins").glob("*/*.py"))
    assert files
    for f in files:
        head = f.read_text().splitlines()[:4]
        assert f"# SPDX-License-Identifier: {SPDX}" in head, f
        assert any(line.startswith("# GNU General Public License v3.0+") for line in head), f
    pyproject = (REPO / "app" / "pyproject.toml").read_text()
    assert re.search(rf'^license = (\{{ text = )?"{re.escape(SPDX)}"', pyproject, re.M)
